"""The blobs a delete leaves unnamed (spec/protocol.md §8.2.9, §8.5): marked in the delete's
transaction, removed right after it.

Theory of operation. When a stored payload is dropped (a delete takes effect on its target, or an entry
arrives whose tombstone is held), the blobs and previews it named are candidates. In the same
transaction, every candidate this home holds (a row in ``blobs``) that no other stored, not deleted
post or profile names is **marked**: unpinned, its ``last_used`` set to ``DROPPED`` (-1, a time no
clock gives; no new column is needed). Once the transaction has committed, ``drop_marked`` removes the
marked blobs with ``BlobStore.remove`` (the file, then the row). Pinned or not, such a blob goes:
pinning keeps a blob from ``gc``, not from its author's delete. The steps are not atomic, and every
state between them is safe::

    MARKED   committed, not yet removed: the next ``drop_marked`` removes it (after the next delete,
             in ``tidings blob gc``, in the running node's blob keeper); until then ``gc`` evicts it
             before any other blob (oldest use first, pinned no longer)
    NAMED    marked, then named again by an entry stored since: ``drop_marked`` looks again and
             unmarks it (a blob stored again is unmarked by ``BlobStore`` recording its new use)
    ROWLESS  the file removed, the row not (a crash inside ``remove``): ``gc`` drops rows whose file
             is gone

Wants of candidates nobody names any more end in the same transaction (storage/blob_wants.py): a
deleted post's blobs are not fetched. Looking for other references reads only the post and profile payloads that contain one of the
candidates' 32 hash bytes (``instr``: a blob reference holds the hash verbatim) and decodes those; it
runs only when a dropped payload named a blob held here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from typing import Any

from tidings.protocol.identity import BlobId

from .blob_refs import payload_blobs
from .blobs import BlobStore

__all__ = ["DROPPED", "drop_marked", "mark_unnamed"]

#: ``blobs.last_used`` of a blob marked for removal.
DROPPED = -1

#: Candidates looked for per query (each is one ``instr`` term).
_PER_QUERY = 100


def _named(cur: sqlite3.Cursor, candidates: Collection[bytes]) -> set[bytes]:
    """Which of ``candidates`` a stored, not deleted post or profile names."""
    found: set[bytes] = set()
    todo = sorted(candidates)
    for start in range(0, len(todo), _PER_QUERY):
        part = todo[start : start + _PER_QUERY]
        terms = " OR ".join(["instr(payload, ?) > 0"] * len(part))
        rows = cur.execute(
            "SELECT payload FROM entries WHERE type IN ('post', 'profile') AND deleted = 0 "
            f"AND payload IS NOT NULL AND ({terms})",
            part,
        ).fetchall()
        for (payload,) in rows:
            found |= payload_blobs(payload)
    return found & set(candidates)


def mark_unnamed(cur: sqlite3.Cursor, candidates: Collection[bytes]) -> int:
    """Inside the transaction that dropped payloads naming ``candidates``: mark the held ones no live
    entry names any more (see the module docstring); returns how many were marked."""
    if not candidates:
        return 0
    todo = sorted(candidates)
    held: set[bytes] = set()
    for start in range(0, len(todo), _PER_QUERY):
        part = todo[start : start + _PER_QUERY]
        marks = ",".join("?" * len(part))
        held.update(bytes(r[0]) for r in cur.execute(f"SELECT id FROM blobs WHERE id IN ({marks})", part))
    named = _named(cur, todo)
    unnamed = held - named
    cur.executemany(
        "UPDATE blobs SET pinned = 0, last_used = ? WHERE id = ?", [(DROPPED, h) for h in sorted(unnamed)]
    )
    # what nobody names any more is not fetched either (spec §12.12)
    cur.executemany("DELETE FROM blob_wants WHERE id = ?", [(h,) for h in sorted(set(todo) - named)])
    return len(unnamed)


def drop_marked(blobs: BlobStore) -> dict[str, Any]:
    """Remove the marked blobs that no live entry names (those named again are unmarked, as used now).
    Returns ``{"removed": [blob ids], "freed": bytes}``."""
    marked = {
        bytes(r[0]): r[1]
        for r in blobs.db.read("SELECT id, size FROM blobs WHERE pinned = 0 AND last_used = ?", (DROPPED,))
    }
    if not marked:
        return {"removed": [], "freed": 0}
    with blobs.db.transaction() as cur:
        named = _named(cur, marked)
        now = blobs.now()
        cur.executemany(
            "UPDATE blobs SET last_used = ? WHERE id = ? AND last_used = ?",
            [(now, h, DROPPED) for h in sorted(named)],
        )
    removed: list[str] = []
    freed = 0
    for hash_ in sorted(marked.keys() - named):
        blob = BlobId(hash_)
        if blobs.remove(blob):
            removed.append(str(blob))
            freed += marked[hash_]
    return {"removed": removed, "freed": freed}
