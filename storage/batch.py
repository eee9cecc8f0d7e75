"""What one ingest batch needs to know about the store, fetched with a few queries per batch.

Checking an entry's links needs its stored neighbours (seq - 1, its lipmaa skip target, seq + 1 and
whatever is stored at its own seq, for forks), the feed's forked flag and whether its author deleted
it already. Asking for these one row at a time costs four to six queries per entry; here they are
read per author with ``seq IN (...)`` over the ``(author, seq)`` index, once per batch. Entries the
batch itself stores are looked up first (``accepted``), so a batch may carry a whole log segment.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from functools import lru_cache
from itertools import groupby

from tidings.protocol import Entry
from tidings.protocol import skip_target as _skip_target

__all__ = ["BatchView", "Stored", "signing_message", "skip_target"]

#: ``lipmaa`` is a loop in Python (~1.5 µs); ingest asks it twice per entry, mostly for nearby seqs.
skip_target = lru_cache(maxsize=1 << 16)(_skip_target)

#: SQLite allows 999 host parameters in older builds; stay below with room for the author.
_IN_MAX = 900

#: spec/protocol.md §5.1: the signature covers the domain followed by the canonical encoding of the
#: first eight fields. In the canonical encoding of the whole entry (a 9-element fixarray, header
#: 0x99, ending in the 64-byte signature as bin 8: c4 40 + 64 bytes) those eight fields are
#: ``raw[1:-66]``; under an 8-element fixarray header (0x98) they are exactly what is signed.
_SIG_TAIL = 66


def signing_message(entry: Entry, domain: bytes) -> bytes:
    """The bytes the signature covers, cut from the entry's canonical encoding (no re-encoding)."""
    raw = entry.raw
    if raw[0] == 0x99 and raw[-_SIG_TAIL] == 0xC4 and raw[-_SIG_TAIL + 1] == 0x40:
        return domain + b"\x98" + raw[1:-_SIG_TAIL]
    return entry.signing_bytes()  # pragma: no cover - every valid entry has the shape above


@dataclass(frozen=True, slots=True)
class Stored:
    """The link-relevant fields of a stored entry, read without decoding it (hot path of ingest)."""

    author: bytes
    seq: int
    hash: bytes
    timestamp: int
    raw: bytes

    @property
    def backlink(self) -> bytes | None:
        return Entry.decode(self.raw).backlink


def _needed(seqs: list[int]) -> set[int]:
    want: set[int] = set()
    for seq in seqs:
        want.add(seq)
        want.add(seq + 1)
        if seq > 1:
            want.add(seq - 1)
        target = skip_target(seq)
        if target is not None:
            want.add(target)
    return want


class BatchView:
    """Stored neighbours, feed flags and tombstones for a batch of entries sorted by (author, seq)."""

    def __init__(self, cur: sqlite3.Cursor, entries: list[Entry]) -> None:
        self.accepted: dict[tuple[bytes, int], Entry] = {}
        self.stored: dict[tuple[bytes, int], Stored] = {}
        #: author -> forked flag, for feeds that have a row
        self.feeds: dict[bytes, int] = {}
        self.tombstones: set[tuple[bytes, bytes]] = set()
        authors = []
        for author, group in groupby(entries, key=lambda e: e.author):
            authors.append(author)
            want = sorted(_needed([e.seq for e in group]))
            for i in range(0, len(want), _IN_MAX):
                part = want[i : i + _IN_MAX]
                marks = ",".join("?" * len(part))
                for seq, hash_, ts, raw in cur.execute(
                    f"SELECT seq, hash, ts, raw FROM entries WHERE author = ? AND seq IN ({marks})",
                    (author, *part),
                ):
                    self.stored[(author, seq)] = Stored(author, seq, hash_, ts, raw)
        for i in range(0, len(authors), _IN_MAX):
            part = authors[i : i + _IN_MAX]
            marks = ",".join("?" * len(part))
            self.feeds.update(
                cur.execute(f"SELECT author, forked FROM feeds WHERE author IN ({marks})", part)
            )
        hashes = [e.hash for e in entries]
        for i in range(0, len(hashes), _IN_MAX):
            part = hashes[i : i + _IN_MAX]
            marks = ",".join("?" * len(part))
            self.tombstones.update(
                cur.execute(f"SELECT target, author FROM tombstones WHERE target IN ({marks})", part)
            )

    def at(self, author: bytes, seq: int) -> Entry | Stored | None:
        """The entry at (author, seq): accepted in this batch, or stored before it."""
        got = self.accepted.get((author, seq))
        return got if got is not None else self.stored.get((author, seq))
