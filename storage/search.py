"""Full-text search over posts and profiles (SQLite FTS5).

Theory of operation: a query is plain words by default. Each word the user typed becomes one quoted
FTS5 string (``"don't"``, ``"e-mail"``, ``"c++"``, ``"#tag"``, ``"5:30"``), so punctuation is never
read as FTS5 syntax; FTS5's tokenizer then splits it as it split the stored text (``e-mail`` matches
the words ``e mail`` next to each other). Every word must appear; a word ending in ``*`` matches as a
prefix (``garden*``). With ``fts=True`` the query is passed to FTS5 unchanged (``OR``, ``NOT``,
``"phrases"``, ``NEAR``, column filters: ``text:`` for posts, ``name:`` and ``bio:`` for profiles).

Two indexes answer: ``profiles_fts`` (name and bio, schema migration 8) and ``posts_fts`` (post
texts, filled in batches behind a watermark, see ``projections``). Matching profiles come first,
then posts, each best match first, at most ``limit`` in all. A profile hit is a line with the
fields of every search result (``id``, ``feed``, ``seq``, ``ts``, ``type``, ``content``: those of the
feed's newest profile entry, ``type`` ``"profile"``) plus ``profile``: ``{"feed", "name", "bio"}``
as the profile stands now (its name and its bio may come from different entries).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from tidings.protocol import feed_id_text

from .errors import StoreError

__all__ = ["plain_query", "profile_fields", "search_rows"]

#: The columns ``reads.entry_row`` reads (as ``reads._ENTRY_COLS``; this module is below ``reads``).
_ENTRY_COLS = "e.hash, e.author, e.seq, e.ts, e.type, e.payload, e.deleted"


def plain_query(text: str) -> str:
    """The FTS5 query for plain words: each whitespace-separated word quoted (``"`` doubled inside),
    all of them required; a trailing ``*`` after a word keeps its prefix meaning."""
    terms = []
    for word in text.split():
        prefix = word.endswith("*") and len(word) > 1
        body = word[:-1] if prefix else word
        terms.append('"' + body.replace('"', '""') + '"' + ("*" if prefix else ""))
    return " ".join(terms)


def search_rows(
    conn: sqlite3.Connection, query: str, *, limit: int, fts: bool
) -> tuple[list[Any], list[Any]]:
    """``(profile rows, post rows)`` matching ``query``, best first, at most ``limit`` in all.

    Profile rows are ``(feed, name, bio, *entry columns of its newest profile entry)``; post rows are
    the entry columns. A query FTS5 refuses on both indexes is ``StoreError`` code ``bad_query``; with
    ``fts``, a query only one index accepts (a column filter of the other) searches that one.
    """
    match = query if fts else plain_query(query)
    errors: list[sqlite3.OperationalError] = []

    def run(sql: str, n: int) -> list[Any]:
        if n <= 0:
            return []
        try:
            return conn.execute(sql, (match, n)).fetchall()
        except sqlite3.OperationalError as exc:
            errors.append(exc)
            return []

    profiles = run(
        f"SELECT p.feed, p.name, p.bio, {_ENTRY_COLS} FROM profiles_fts f "
        "JOIN profiles p ON p.fts_row = f.rowid JOIN entries e ON e.author = p.feed AND e.seq = p.seq "
        "WHERE profiles_fts MATCH ? ORDER BY f.rank LIMIT ?",
        limit,
    )
    posts = run(
        f"SELECT {_ENTRY_COLS} FROM posts_fts f JOIN entries e ON e.id = f.rowid "
        "WHERE posts_fts MATCH ? ORDER BY f.rank LIMIT ?",
        limit - len(profiles),
    )
    if len(errors) == 2:  # one error alone: a column filter of the other index
        hint = "FTS5 syntax" if fts else "plain words"
        raise StoreError(f"bad search query ({hint}): {errors[-1]}", code="bad_query")
    return profiles, posts


def profile_fields(row: Any) -> dict[str, Any]:
    """The ``profile`` field of a profile hit: ``{"feed", "name", "bio"}`` as ``tidings profile`` shows it."""
    return {"feed": feed_id_text(row[0]), "name": row[1], "bio": row[2]}
