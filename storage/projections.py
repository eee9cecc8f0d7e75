"""Projections: the tables reading commands use, derived from entries and their payloads.

Every function here runs inside the caller's transaction, so an entry and its projections are written
together or not at all. Graph and profile state keep the value of the highest seq seen, so entries
that arrive out of order (partial sync, imports) give the same state as in-order ones.
"""

from __future__ import annotations

import sqlite3

from tidings.protocol import (
    Block,
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

__all__ = ["apply_content", "drop_payload"]

_GRAPH = {Follow: ("follow", 1), Unfollow: ("follow", 0), Block: ("block", 1), Unblock: ("block", 0)}


def apply_content(cur: sqlite3.Cursor, rowid: int, entry: Entry, content: Content) -> None:
    """Write the projection rows of one entry's content."""
    author, ts = entry.author, entry.timestamp
    if isinstance(content, Post):
        cur.execute(
            "INSERT INTO posts (entry, author, ts, text, reply, root, lang) VALUES (?,?,?,?,?,?,?)",
            (rowid, author, ts, content.text, content.reply, content.root, content.lang),
        )
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
        cur.execute(
            "INSERT INTO profiles (feed, name, bio, seq) VALUES (?,?,?,?) "
            "ON CONFLICT (feed) DO UPDATE SET "
            "name = coalesce(excluded.name, profiles.name), bio = coalesce(excluded.bio, profiles.bio), "
            "seq = excluded.seq WHERE excluded.seq > profiles.seq",
            (author, content.name, content.bio, entry.seq),
        )
    elif isinstance(content, Delete):
        cur.execute(
            "INSERT OR IGNORE INTO tombstones (target, author, entry) VALUES (?,?,?)",
            (content.target, author, entry.hash),
        )
        row = cur.execute(
            "SELECT id FROM entries WHERE hash = ? AND author = ?", (content.target, author)
        ).fetchone()
        if row is not None:
            drop_payload(cur, row[0])


def drop_payload(cur: sqlite3.Cursor, rowid: int) -> None:
    """Forget an entry's payload and everything derived from it; the entry itself stays."""
    text = cur.execute("SELECT text FROM posts WHERE entry = ?", (rowid,)).fetchone()
    if text is not None:
        cur.execute(
            "INSERT INTO posts_fts (posts_fts, rowid, text) VALUES ('delete', ?, ?)", (rowid, text[0])
        )
        cur.execute("DELETE FROM posts WHERE entry = ?", (rowid,))
    cur.execute("DELETE FROM reactions WHERE entry = ?", (rowid,))
    cur.execute("DELETE FROM reposts WHERE entry = ?", (rowid,))
    cur.execute("UPDATE entries SET payload = NULL, deleted = 1 WHERE id = ?", (rowid,))
