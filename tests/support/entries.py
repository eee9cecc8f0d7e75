"""Signed test logs built with the real protocol code (shared by the storage tests)."""

from __future__ import annotations

from tidings.protocol import Content, Entry, Post, SigningKey, create_entry, encode_content, skip_target
from tidings.storage.store import Store


def chain(
    key: SigningKey,
    contents: list[Content],
    ts0: int = 1_000_000,
    start: list[tuple[Entry, bytes]] | None = None,
) -> list[tuple[Entry, bytes]]:
    """Sign ``contents`` as the next entries of ``key``'s feed (seq 1.., or continuing ``start``).

    Returns ``(entry, payload)`` pairs for the new entries only; timestamps are ``ts0 + seq``.
    """
    out: list[tuple[Entry, bytes]] = list(start or [])
    for content in contents:
        seq = len(out) + 1
        payload = encode_content(content)
        target = skip_target(seq)
        entry = create_entry(
            key,
            seq=seq,
            backlink=out[-1][0].hash if out else None,
            skiplink=out[target - 1][0].hash if target else None,
            timestamp=ts0 + seq,
            payload=payload,
        )
        out.append((entry, payload))
    return out[len(start or []) :]


def posts(
    key: SigningKey, n: int, ts0: int = 1_000_000, text: str = "{feed} post {i}"
) -> list[tuple[Entry, bytes]]:
    """``n`` posts of ``key``'s feed; ``text`` may name ``{feed}`` (2 hex bytes) and ``{i}`` (1..n)."""
    feed = key.public_key[:2].hex()
    return chain(key, [Post(text=text.format(feed=feed, i=i)) for i in range(1, n + 1)], ts0)


def raw(pairs: list[tuple[Entry, bytes]]) -> list[tuple[bytes, bytes | None]]:
    """``(raw entry, payload)`` pairs, as ``Store.ingest`` takes them."""
    return [(e.raw, p) for e, p in pairs]


def chain_of(key: SigningKey, home_tmp, n: int) -> list[tuple[bytes, bytes]]:
    with Store(home_tmp / f"chain-{key.public_key.hex()[:8]}.db") as s:
        for i in range(n):
            s.append(key, Post(text=f"evil {i}"))
        return [(bytes(r), bytes(p)) for r, p in s.read("SELECT raw, payload FROM entries ORDER BY seq")]
