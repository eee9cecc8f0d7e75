"""Projections: the tables reading commands use, derived from entries and their payloads.

Every function here runs inside the caller's transaction, so an entry and its projections are written
together or not at all. Graph and profile state keep the value of the highest seq seen, so entries
that arrive out of order (partial sync, imports) give the same state as in-order ones.

The full-text index of posts is the one projection written late, in batches: adding one post to FTS5 in its own
transaction writes a new index segment and its structure record, which doubled the cost of a single
append (bench/RESULTS.md). ``meta.fts_indexed`` is a watermark: every post whose entry row id is at
most the mark is in ``posts_fts``, none above it is. New posts always get higher row ids, so they wait
above the mark until ``index_posts`` adds them all at once: when ``FTS_BATCH`` entries have been
written, or before a search (``Reads.search`` catches up first, so searches never miss a post).
Profiles are few and change seldom: their index, ``profiles_fts``, is kept up to date at once.
"""

from __future__ import annotations

import sqlite3

from tidings.protocol import (
    Block,
    Box,
    Content,
    Delete,
    Entry,
    Follow,
    Post,
    Profile,
    Reaction,
    Repost,
    Unblock,
    Unfollow,
)

__all__ = ["FTS_BATCH", "apply_content", "drop_payload", "fts_mark", "index_posts"]

#: Posts are added to the full-text index in batches of about this many (see ``index_posts``).
FTS_BATCH = 2000

_GRAPH = {Follow: ("follow", 1), Unfollow: ("follow", 0), Block: ("block", 1), Unblock: ("block", 0)}


def apply_content(cur: sqlite3.Cursor, rowid: int, entry: Entry, content: Content) -> bytes | None:
    """Write the projection rows of one entry's content; returns the payload it dropped (a delete's
    target, ``drop_payload``), if any."""
    author, ts = entry.author, entry.timestamp
    if isinstance(content, Post):
        cur.execute(
            "INSERT INTO posts (entry, author, ts, text, reply, root, lang) VALUES (?,?,?,?,?,?,?)",
            (rowid, author, ts, content.text, content.reply, content.root, content.lang),
        )
        if rowid <= fts_mark(cur):  # an old entry whose payload came late: below the mark, index now
            cur.execute("INSERT INTO posts_fts (rowid, text) VALUES (?, ?)", (rowid, content.text))
    elif isinstance(content, Reaction):
        cur.execute(
            "INSERT INTO reactions (entry, author, target, emoji, ts) VALUES (?,?,?,?,?)",
            (rowid, author, content.target, content.emoji, ts),
        )
    elif isinstance(content, Repost):
        cur.execute(
            "INSERT INTO reposts (entry, author, target, ts) VALUES (?,?,?,?)",
            (rowid, author, content.target, ts),
        )
    elif isinstance(content, Follow | Unfollow | Block | Unblock):
        kind, active = _GRAPH[type(content)]
        cur.execute(
            "INSERT INTO graph (author, kind, target, active, seq) VALUES (?,?,?,?,?) "
            "ON CONFLICT (author, kind, target) DO UPDATE SET active = excluded.active, seq = excluded.seq "
            "WHERE excluded.seq > graph.seq",
            (author, kind, content.feed, active, entry.seq),
        )
    elif isinstance(content, Profile):
        # Each field keeps the value of the highest seq that set it (schema migration 2).
        seq = entry.seq
        cur.execute(
            "INSERT INTO profiles (feed, name, bio, seq, name_seq, bio_seq, fts_row) "
            "VALUES (?1,?2,?3,?4,?5,?6,?7) "
            "ON CONFLICT (feed) DO UPDATE SET fts_row = coalesce(profiles.fts_row, ?7), "
            "name = CASE WHEN ?2 IS NOT NULL AND ?4 > profiles.name_seq THEN ?2 ELSE profiles.name END, "
            "name_seq = CASE WHEN ?2 IS NOT NULL AND ?4 > profiles.name_seq THEN ?4 ELSE profiles.name_seq END, "
            "bio = CASE WHEN ?3 IS NOT NULL AND ?4 > profiles.bio_seq THEN ?3 ELSE profiles.bio END, "
            "bio_seq = CASE WHEN ?3 IS NOT NULL AND ?4 > profiles.bio_seq THEN ?4 ELSE profiles.bio_seq END, "
            "seq = max(profiles.seq, ?4)",
            (
                author,
                content.name,
                content.bio,
                seq,
                seq if content.name is not None else 0,
                seq if content.bio is not None else 0,
                rowid,
            ),
        )
        _index_profile(cur, author)
    elif isinstance(content, Box):  # opened with the key, once (storage/messages.py)
        cur.execute("INSERT OR IGNORE INTO box_pending (entry) VALUES (?)", (rowid,))
    elif isinstance(content, Delete):
        # keyed by (target, author): only the author's own tombstone ever hides a payload
        cur.execute(
            "INSERT OR IGNORE INTO tombstones (target, author, entry) VALUES (?,?,?)",
            (content.target, author, entry.hash),
        )
        row = cur.execute(
            "SELECT id FROM entries WHERE hash = ? AND author = ?", (content.target, author)
        ).fetchone()
        if row is not None:
            return drop_payload(cur, row[0])
    return None


def _index_profile(cur: sqlite3.Cursor, feed: bytes) -> None:
    """Put a feed's profile as it now stands into the full-text index of profiles (schema migration
    8): profiles change seldom, so unlike posts they are indexed at once."""
    fts_row, name, bio = cur.execute(
        "SELECT fts_row, name, bio FROM profiles WHERE feed = ?", (feed,)
    ).fetchone()
    cur.execute("DELETE FROM profiles_fts WHERE rowid = ?", (fts_row,))
    cur.execute("INSERT INTO profiles_fts (rowid, name, bio) VALUES (?, ?, ?)", (fts_row, name, bio))


def drop_payload(cur: sqlite3.Cursor, rowid: int) -> bytes | None:
    """Forget an entry's payload and everything derived from it; the entry itself stays. Returns the
    payload dropped: the blobs it names go too unless another entry names them (``blob_drops``)."""
    held = cur.execute("SELECT payload FROM entries WHERE id = ?", (rowid,)).fetchone()
    text = cur.execute("SELECT text FROM posts WHERE entry = ?", (rowid,)).fetchone()
    if text is not None:
        if rowid <= fts_mark(cur):  # indexed already (see the module docstring)
            cur.execute(
                "INSERT INTO posts_fts (posts_fts, rowid, text) VALUES ('delete', ?, ?)", (rowid, text[0])
            )
        cur.execute("DELETE FROM posts WHERE entry = ?", (rowid,))
    cur.execute("DELETE FROM reactions WHERE entry = ?", (rowid,))
    cur.execute("DELETE FROM reposts WHERE entry = ?", (rowid,))
    # a private message goes with its box (spec §8.6), opened or not
    cur.execute("DELETE FROM messages WHERE entry = ?", (rowid,))
    cur.execute("DELETE FROM box_pending WHERE entry = ?", (rowid,))
    # the type came from the payload too: forget it, as when the delete arrives first
    cur.execute("UPDATE entries SET payload = NULL, type = NULL, deleted = 1 WHERE id = ?", (rowid,))
    return None if held is None or held[0] is None else bytes(held[0])


def fts_mark(cur: sqlite3.Cursor) -> int:
    """The full-text watermark: posts with an entry row id up to it are indexed, none above."""
    row = cur.execute("SELECT value FROM meta WHERE key = 'fts_indexed'").fetchone()
    return int(row[0]) if row else 0


def index_posts(cur: sqlite3.Cursor) -> int:
    """Add every post above the watermark to the full-text index and raise the mark; returns how many."""
    mark = fts_mark(cur)
    top = cur.execute("SELECT coalesce(max(entry), 0) FROM posts").fetchone()[0]
    if top <= mark:
        return 0
    cur.execute(
        "INSERT INTO posts_fts (rowid, text) SELECT entry, text FROM posts WHERE entry > ? ORDER BY entry",
        (mark,),
    )
    added = cur.rowcount
    cur.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('fts_indexed', ?)", (top,))
    return int(added)
