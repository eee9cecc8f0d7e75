"""Buffered writes of verified entries and their projections inside one transaction.

Appending and ingesting store many entries per transaction; one ``execute`` per row and per table
costs more than everything else the store does (see bench/RESULTS.md). The writer gives each entry
its row id itself (``max(id) + 1``, what SQLite would pick: the transaction holds the write lock, so
no one else inserts meanwhile), collects the rows of ``entries``, ``posts``,
``reactions`` and ``reposts``, and writes each table with one ``executemany`` (the full-text index
follows in batches, see ``projections``). The feed heads are
updated once per author. Content whose projection reads or changes stored rows (a delete) flushes
the buffers first, so it sees every earlier entry of the batch; graph and profile upserts keep the
value of the highest seq (``projections``) and need no order.

Nothing is written until ``flush``; the caller's transaction makes all of it atomic.
"""

from __future__ import annotations

import sqlite3
import time

from tidings.protocol import Content, Entry, Post, Reaction, Repost, type_of

from .projections import FTS_BATCH, apply_content, fts_mark, index_posts

__all__ = ["RowWriter", "now_ms"]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class RowWriter:
    """Collects the rows of verified entries; ``flush()`` writes them (inside the caller's transaction)."""

    def __init__(self, cur: sqlite3.Cursor) -> None:
        self.cur = cur
        self.next_id: int = cur.execute("SELECT coalesce(max(id), 0) + 1 FROM entries").fetchone()[0]
        self.received = now_ms()
        self._first_id = self.next_id
        self._entries: list[tuple[object, ...]] = []
        self._posts: list[tuple[object, ...]] = []
        self._reactions: list[tuple[object, ...]] = []
        self._reposts: list[tuple[object, ...]] = []
        # author -> [added, highest seq, its hash, its timestamp]
        self._heads: dict[bytes, list[object]] = {}

    def insert(self, entry: Entry, payload: bytes | None, content: Content | None, *, deleted: bool) -> int:
        """Queue one verified entry (payload dropped when ``deleted``); returns its row id."""
        rowid = self.next_id
        self.next_id += 1
        if deleted:
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
        else:
            # deletes look up (and change) stored rows, which must include this batch's: write them first
            self.flush()
            apply_content(self.cur, rowid, entry, content)

    def flush(self) -> None:
        """Write every queued row."""
        cur = self.cur
        if self._entries:
            cur.executemany(
                "INSERT INTO entries (id, hash, author, seq, ts, type, raw, payload, deleted, received) "
                "VALUES (?,?,?,?,?,?,?,?,?,?)",
                self._entries,
            )
            self._entries = []
        if self._posts:
            cur.executemany(
                "INSERT INTO posts (entry, author, ts, text, reply, root, lang) VALUES (?,?,?,?,?,?,?)",
                self._posts,
            )
            self._posts = []
        if self._reactions:
            cur.executemany(
                "INSERT INTO reactions (entry, author, target, emoji, ts) VALUES (?,?,?,?,?)", self._reactions
            )
            self._reactions = []
        if self._reposts:
            cur.executemany("INSERT INTO reposts (entry, author, target, ts) VALUES (?,?,?,?)", self._reposts)
            self._reposts = []
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
