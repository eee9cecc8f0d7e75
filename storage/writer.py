"""Buffered writes of verified entries and their projections inside one transaction.

Appending and ingesting store many entries per transaction; one ``execute`` per row and per table
costs more than everything else the store does (see bench/RESULTS.md). The writer gives each entry
its row id itself (``max(id) + 1``, what SQLite would pick: the transaction holds the write lock, so
no one else inserts meanwhile), collects the rows of ``entries``, ``posts``,
``reactions`` and ``reposts``, and writes each table with multi-row ``INSERT ... VALUES (...), (...)``
statements of up to ``ROWS_PER_INSERT`` rows (the full-text index follows in batches, see
``projections``). Not ``executemany``: it runs one ``sqlite3_step`` per row, and the sqlite3 module
gives up and takes back the GIL around every step; with the signature threads of an ingest taking the
GIL between, each row then waits for it (a 100k-row insert took 2.5x as long beside two verifying
threads, multi-row statements 1.05x; bench/RESULTS.md). The feed heads are
updated once per author. Content whose projection reads or changes stored rows (a delete) flushes
the buffers first, so it sees every earlier entry of the batch; graph and profile upserts keep the
value of the highest seq (``projections``) and need no order.

Nothing is written until ``flush``; the caller's transaction makes all of it atomic.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from itertools import chain

from tidings.protocol import Box, BoxKey, Content, Entry, Post, Reaction, Repost, type_of

from .blob_refs import named_blobs, payload_blobs
from .clock import wall_ms
from .messages import Outcome, record
from .projections import FTS_BATCH, apply_content, fts_mark, index_posts

__all__ = ["ROWS_PER_INSERT", "RowWriter", "insert_rows"]

#: rows per multi-row INSERT (fewer when the columns would pass SQLite's limit on bound parameters)
ROWS_PER_INSERT = 250


def insert_rows(cur: sqlite3.Cursor, head: str, rows: list[tuple[object, ...]]) -> None:
    """``head`` (``INSERT INTO t (a, b)``) for every row, ``ROWS_PER_INSERT`` rows per statement.

    The rows left over are written in statements of power-of-two sizes (128, 64, ...): each distinct
    statement stays in the connection's statement cache, ~220 KB for 250 rows of ``entries``, and
    leftovers of every size up to 249 would fill it with 128 of them (measured: +26 MB of memory).
    """
    if not rows:
        return
    width = len(rows[0])
    group = "(" + ",".join("?" * width) + ")"
    limit = cur.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    step = max(1, min(ROWS_PER_INSERT, limit // width))
    start = 0
    while start < len(rows):
        left = len(rows) - start
        size = step if left >= step else 1 << (left.bit_length() - 1)
        chunk = rows[start : start + size]
        cur.execute(f"{head} VALUES {','.join([group] * size)}", list(chain.from_iterable(chunk)))
        start += size


class RowWriter:
    """Collects the rows of verified entries; ``flush()`` writes them (inside the caller's transaction).

    ``received`` is when the entries reached this store (ms, default the clock): for entries of other
    feeds the time they arrived, for our own the time we wrote them (``append``'s ``now``). Timelines
    rank by ``min(ts, received + skew)`` (spec/ranking.md §1.1).
    """

    def __init__(
        self,
        cur: sqlite3.Cursor,
        *,
        received: int | None = None,
        opened: Mapping[bytes, Outcome] | None = None,
        key: BoxKey | None = None,
    ) -> None:
        """``opened``: what opening the boxes of the batch gave, by entry hash (``Store.prepare``); a
        box without an outcome there (or without ``key``, the home's) waits in ``box_pending`` (storage/messages.py)."""
        self.cur = cur
        self.opened = opened or {}
        self.key = key
        self._boxes: list[tuple[int, Entry]] = []
        self.next_id: int = cur.execute("SELECT coalesce(max(id), 0) + 1 FROM entries").fetchone()[0]
        self.received = wall_ms() if received is None else received
        self._first_id = self.next_id
        self._entries: list[tuple[object, ...]] = []
        self._posts: list[tuple[object, ...]] = []
        self._reactions: list[tuple[object, ...]] = []
        self._reposts: list[tuple[object, ...]] = []
        # author -> [added, highest seq, its hash, its timestamp]
        self._heads: dict[bytes, list[object]] = {}
        #: blobs named by payloads dropped so far (deletes, entries whose tombstone is held): the
        #: caller marks those no other entry names (``blob_drops``, spec §8.2.9)
        self.dropped_blobs: set[bytes] = set()

    def insert(self, entry: Entry, payload: bytes | None, content: Content | None, *, deleted: bool) -> int:
        """Queue one verified entry (payload dropped when ``deleted``); returns its row id."""
        rowid = self.next_id
        self.next_id += 1
        if deleted:
            self.dropped_blobs |= named_blobs(content)
            payload, content = None, None
        author, seq = entry.author, entry.seq
        self._entries.append(
            (
                rowid,
                entry.hash,
                author,
                seq,
                entry.timestamp,
                None if content is None else type_of(content),
                entry.raw,
                payload,
                int(deleted),
                self.received,
            )
        )
        head = self._heads.get(author)
        if head is None:
            self._heads[author] = [1, seq, entry.hash, entry.timestamp]
        else:
            head[0] += 1  # type: ignore[operator]
            if seq > head[1]:  # type: ignore[operator]
                head[1:] = [seq, entry.hash, entry.timestamp]
        if content is not None:
            self._project(rowid, entry, content)
        return rowid

    def _project(self, rowid: int, entry: Entry, content: Content) -> None:
        if isinstance(content, Post):  # the full-text index follows in batches (projections)
            self._posts.append(
                (
                    rowid,
                    entry.author,
                    entry.timestamp,
                    content.text,
                    content.reply,
                    content.root,
                    content.lang,
                )
            )
        elif isinstance(content, Reaction):
            self._reactions.append((rowid, entry.author, content.target, content.emoji, entry.timestamp))
        elif isinstance(content, Repost):
            self._reposts.append((rowid, entry.author, content.target, entry.timestamp))
        elif isinstance(content, Box):  # spec §8.6: what the key opened, with the entry
            self._boxes.append((rowid, entry))
        else:
            # deletes look up (and change) stored rows, which must include this batch's: write them first
            self.flush()
            self.dropped_blobs |= payload_blobs(apply_content(self.cur, rowid, entry, content))

    def flush(self) -> None:
        """Write every queued row."""
        cur = self.cur
        insert_rows(
            cur,
            "INSERT INTO entries (id, hash, author, seq, ts, type, raw, payload, deleted, received)",
            self._entries,
        )
        insert_rows(cur, "INSERT INTO posts (entry, author, ts, text, reply, root, lang)", self._posts)
        insert_rows(cur, "INSERT INTO reactions (entry, author, target, emoji, ts)", self._reactions)
        insert_rows(cur, "INSERT INTO reposts (entry, author, target, ts)", self._reposts)
        self._entries, self._posts, self._reactions, self._reposts = [], [], [], []
        if self._boxes:
            key = self.key
            tried = [(r, e, self.opened[e.hash]) for r, e in self._boxes if key and e.hash in self.opened]
            if key is not None:
                record(cur, tried, key)
            waiting = [(r,) for r, e in self._boxes if not (key and e.hash in self.opened)]
            cur.executemany("INSERT OR IGNORE INTO box_pending (entry) VALUES (?)", waiting)
            self._boxes = []
        if self._heads:
            # head = highest stored seq (logs may have gaps after partial sync or a damaged import)
            cur.executemany(
                "UPDATE feeds SET count = count + ?1, "
                "head_hash = CASE WHEN head_seq < ?2 THEN ?3 ELSE head_hash END, "
                "head_ts = CASE WHEN head_seq < ?2 THEN ?4 ELSE head_ts END, "
                "head_seq = max(head_seq, ?2) WHERE author = ?5",
                [(n, seq, h, ts, author) for author, (n, seq, h, ts) in self._heads.items()],
            )
            self._heads = {}

    def finish(self) -> None:
        """Write every queued row, and bring the full-text index up to date every ``FTS_BATCH`` entries."""
        self.flush()
        if self.next_id > self._first_id and self.next_id - 1 - fts_mark(self.cur) >= FTS_BATCH:
            index_posts(self.cur)
