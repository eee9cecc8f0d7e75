"""The blobs the node wants from its peers (spec/protocol.md §12.12): the ``blob_wants`` table.

A want is recorded for each blob (and preview) that an entry of a feed the node replicates names and
that is not held (``author`` is that feed), and for each blob the user asked for (``tidings blob get``
of a blob not here, the web page: ``author`` NULL). The node's fetcher (node/net/blob_fetch.py) reads
the wants that are due, asks its peers, and ends each want one way or the other::

    (none) --add_wants--> WANTED --fetched (the blob is stored)---------------> (none)
                          WANTED --failed(code, retry_at)---------------------> WANTED, due at retry_at
                          WANTED --the entry that named it is deleted, or
                                   the user drops it (drop_wants)-------------> (none)

A want knows the most bytes it may take: the size its reference gave, or ``MAX_PREVIEW`` for a preview
(whose size no reference gives), or the node's ``max_blob`` for a blob asked for by id alone; and its
mime: the reference's, ``image/*`` for a preview (a picture of any of the four kinds, §8.5), None when
unknown (an opaque file). Several
processes may add wants (a CLI command while the node runs); SQLite serializes them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from tidings.protocol.blobs import MAX_PREVIEW

from .blob_refs import stored_refs
from .reads import Reads
from .store import Store

__all__ = ["Want", "add_wants", "drop_wants", "due_wants", "failed", "fetched", "missing_refs", "wants"]


@dataclass(frozen=True, slots=True)
class Want:
    """One wanted blob: its id, the size its reference gave (None: unknown), the most bytes it may
    take, its mime (None: unknown), the feed that named it (None: the user asked), tries so far,
    when it is due (wall ms) and why the last try failed."""

    blob: bytes
    size: int | None
    most: int
    mime: str | None
    author: bytes | None
    tries: int = 0
    next_try: int = 0
    failed: str | None = None


_COLUMNS = "id, size, most, mime, author, tries, next_try, failed"


def _want(row: tuple[object, ...]) -> Want:
    blob, size, most, mime, author, tries, next_try, failure = row
    return Want(
        blob=bytes(blob),  # type: ignore[call-overload]
        size=None if size is None else int(size),  # type: ignore[call-overload]
        most=int(most),  # type: ignore[call-overload]
        mime=None if mime is None else str(mime),
        author=None if author is None else bytes(author),  # type: ignore[call-overload]
        tries=int(tries),  # type: ignore[call-overload]
        next_try=int(next_try),  # type: ignore[call-overload]
        failed=None if failure is None else str(failure),
    )


def add_wants(store: Store, wants: Iterable[Want], now: int) -> list[Want]:
    """Record ``wants`` that are neither held nor wanted already; return those recorded."""
    added: list[Want] = []
    with store.transaction() as cur:
        for want in wants:
            if cur.execute("SELECT 1 FROM blobs WHERE id = ?", (want.blob,)).fetchone():
                continue
            cur.execute(
                f"INSERT OR IGNORE INTO blob_wants ({_COLUMNS}, added) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    want.blob,
                    want.size,
                    want.most,
                    want.mime,
                    want.author,
                    want.tries,
                    want.next_try,
                    want.failed,
                    now,
                ),
            )
            if cur.rowcount:
                added.append(want)
    return added


def due_wants(store: Reads, now: int, *, limit: int = 64, skip: Collection[bytes] = ()) -> list[Want]:
    """Wants due by ``now`` (wall ms), the longest waiting first, leaving out ``skip`` (those in hand)."""
    rows = store.read(
        f"SELECT {_COLUMNS} FROM blob_wants WHERE next_try <= ? ORDER BY next_try, added LIMIT ?",
        (now, limit + len(skip)),
    )
    found = [_want(r) for r in rows if bytes(r[0]) not in skip]
    return found[:limit]


def wants(store: Reads) -> list[Want]:
    """Every want, the soonest due first (``tidings blob ls --wanted``, ``tidings status``)."""
    return [_want(r) for r in store.read(f"SELECT {_COLUMNS} FROM blob_wants ORDER BY next_try, added")]


def failed(store: Store, blob: bytes, code: str, retry_at: int) -> None:
    """A try of ``blob`` failed with ``code``: count it and make it due again at ``retry_at``."""
    with store.transaction() as cur:
        cur.execute(
            "UPDATE blob_wants SET tries = tries + 1, failed = ?, next_try = ? WHERE id = ?",
            (code, retry_at, blob),
        )


def fetched(store: Store, blob: bytes) -> None:
    """``blob`` is stored: the want ends."""
    drop_wants(store, [blob])


def drop_wants(store: Store, blobs: Iterable[bytes]) -> int:
    """End the wants of ``blobs``; return how many there were."""
    dropped = 0
    with store.transaction() as cur:
        for blob in blobs:
            cur.execute("DELETE FROM blob_wants WHERE id = ?", (blob,))
            dropped += cur.rowcount
    return dropped


def missing_refs(store: Reads, authors: Collection[bytes], *, max_blob: int) -> list[Want]:
    """Wants for the blobs and previews that stored entries of ``authors`` name and that are neither
    held nor wanted (a node that starts, or starts to replicate a feed, catches up with these); blobs
    over ``max_blob`` are left out: this node would not keep them."""
    held = {bytes(r[0]) for r in store.read("SELECT id FROM blobs")}
    held |= {bytes(r[0]) for r in store.read("SELECT id FROM blob_wants")}
    found: dict[bytes, Want] = {}
    for author, ref in stored_refs(store, authors):
        if ref.blob not in held and ref.size <= max_blob:
            found.setdefault(ref.blob, Want(ref.blob, ref.size, ref.size, ref.mime, author))
        if ref.preview is not None and ref.preview not in held:
            found.setdefault(ref.preview, Want(ref.preview, None, MAX_PREVIEW, "image/*", author))
    return list(found.values())
