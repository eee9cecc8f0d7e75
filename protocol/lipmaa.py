"""Lipmaa skip links, as in the Bamboo log format (spec/protocol.md §6).

Every entry of seq ``n > 1`` links back to ``n - 1`` and, when it differs, to ``lipmaa(n)``. Following
these links from any entry reaches seq 1 in O(log n) steps, and any two entries of a log are joined by
a short certificate path, so the newest N entries of a feed can be checked without the whole log.
"""

from __future__ import annotations

from .errors import LocalProtocolError

__all__ = ["certificate_pool", "lipmaa", "path_to_first"]


def lipmaa(n: int) -> int:
    """The seq that entry ``n`` skips back to (``n >= 1``; ``lipmaa(1) == 0`` means none) (spec §6.1)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise LocalProtocolError("seq numbers are integers from 1", code="bad_seq")
    m, po3, u = 1, 3, n
    while m < n:
        po3 *= 3
        m = (po3 - 1) // 2
    po3 //= 3
    if m != n:
        while u != 0:
            m = (po3 - 1) // 2
            po3 //= 3
            u %= m
        if m != po3:
            po3 = m
    return n - po3


def skip_target(n: int) -> int | None:
    """The seq the skip link of entry ``n`` names, or None when the entry carries no skip link.

    Seq 1 has no links; when ``lipmaa(n) == n - 1`` the backlink already names it (spec §6.2).
    """
    if n <= 1:
        return None
    target = lipmaa(n)
    return None if target == n - 1 else target


def path_to_first(n: int) -> list[int]:
    """Shortest chain of seqs from ``n`` down to 1 using skip links where they help."""
    path = [n]
    while n > 1:
        n = lipmaa(n)
        path.append(n)
    return path


def certificate_pool(n: int) -> set[int]:
    """The seqs needed to tie entry ``n`` to seq 1 (the path of ``path_to_first``)."""
    return set(path_to_first(n))
