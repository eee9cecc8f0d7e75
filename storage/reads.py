"""Read queries over the store, returning plain JSON-ready dicts (the CLI's ``--json`` shapes).

Text ids follow spec/cli.md: ``@base32`` feeds, ``%base32`` entries, ``&base32`` blobs. Queries are written so the
planner walks an index in the requested order (timelines walk the ranked-time index ``entries_rank``:
``min(ts, received + skew)``, spec/ranking.md §1.1; see the README).
"""

from __future__ import annotations

import base64
import sqlite3
from typing import Any

from tidings.protocol import (
    DecodeError,
    Entry,
    EntryId,
    FeedId,
    InvalidContent,
    RemoteProtocolError,
    blob_id_text,
    decode,
    entry_id_text,
    feed_id_text,
)

from .database import Database, translate
from .errors import AmbiguousId, NotFound, StoreError
from .schema import rank_ts
from .search import profile_fields, search_rows

__all__ = ["MIN_PREFIX", "Reads", "content_json", "entry_written"]

#: The fewest base32 characters of an entry id accepted as a prefix of one (``resolve_entry``).
MIN_PREFIX = 4

_FEED_KEYS = {"feed", "mentions"}
_ENTRY_KEYS = {"target", "reply", "root"}
_BLOB_KEYS = {"blob", "preview"}  # of a blob reference (spec/protocol.md §8.5)
_ENTRY_COLS = "e.hash, e.author, e.seq, e.ts, e.type, e.payload, e.deleted"
_RANK = rank_ts("e")  # spec/ranking.md §1.1: timelines and threads order by it, never by ts alone


def _ref_json(key: str, value: Any) -> Any:
    if isinstance(value, bytes):
        if key in _FEED_KEYS and len(value) == 32:
            return feed_id_text(value)
        if key in _ENTRY_KEYS and len(value) == 32:
            return entry_id_text(value)
        if key in _BLOB_KEYS and len(value) == 32:
            return blob_id_text(value)
        return value.hex()
    if isinstance(value, list):
        return [_ref_json(key, v) for v in value]
    if isinstance(value, dict):
        return {k: _ref_json(k, v) for k, v in value.items()}
    return value


def content_json(payload: bytes | None) -> dict[str, Any] | None:
    """A payload as JSON-ready data (references as text ids); None when absent or undecodable."""
    if payload is None:
        return None
    try:
        value = decode(payload)
    except (DecodeError, InvalidContent):
        return None
    return _ref_json("", value) if isinstance(value, dict) else None


def entry_row(row: sqlite3.Row | tuple[Any, ...]) -> dict[str, Any]:
    """One entry as the CLI prints it: id, feed, seq, ts, type, content (+ deleted)."""
    hash_, author, seq, ts, kind, payload, deleted = row[:7]
    out: dict[str, Any] = {
        "id": entry_id_text(hash_),
        "feed": feed_id_text(author),
        "seq": seq,
        "ts": ts,
        "type": kind,
        "content": content_json(payload),
    }
    if deleted:
        out["deleted"] = True
    return out


def entry_written(entry: Entry, kind: str) -> dict[str, Any]:
    """An entry just appended as ``tidings ... --json`` and the web API show it: id, feed, seq, ts, type."""
    return {
        "id": entry_id_text(entry.hash),
        "feed": feed_id_text(entry.author),
        "seq": entry.seq,
        "ts": entry.timestamp,
        "type": kind,
    }


class Reads(Database):
    """The read queries of the store, over its database (``store.Store`` adds the writes)."""

    def own_feed(self) -> bytes | None:
        value = self.get_meta("self")
        return bytes(value) if value is not None else None

    # -- ids -------------------------------------------------------------------------------------------
    def reaction_counts(self, hashes: list[bytes]) -> dict[bytes, dict[str, int]]:
        """``{entry hash: {emoji: people}}``: distinct authors reacting with each emoji (not deleted)."""
        out: dict[bytes, dict[str, int]] = {}
        for i in range(0, len(hashes), 500):
            part = hashes[i : i + 500]
            marks = ",".join("?" * len(part))
            rows = self.read(
                "SELECT r.target, r.emoji, count(DISTINCT r.author) FROM reactions r "
                f"JOIN entries e ON e.id = r.entry WHERE e.deleted = 0 AND r.target IN ({marks}) "
                "GROUP BY r.target, r.emoji ORDER BY r.target, count(DISTINCT r.author) DESC, r.emoji",
                part,
            )
            for target, emoji, people in rows:
                out.setdefault(bytes(target), {})[str(emoji)] = int(people)
        return out

    def resolve_entry(self, text: str) -> bytes:
        """Entry hash for a full ``%id`` or a unique prefix of one (``MIN_PREFIX`` characters after ``%``
        at least), exactly as printed: lowercase (``node.actions.resolve`` reads what users type)."""
        text = text.strip()
        body = text[1:] if text.startswith("%") else text
        if len(body) >= 52:
            try:
                return EntryId.parse("%" + body).hash
            except RemoteProtocolError as exc:
                raise StoreError(f"not an entry id: {text}", code="bad_id") from exc
        if (
            len(body) < MIN_PREFIX
            or body.lower() != body
            or any(c not in "abcdefghijklmnopqrstuvwxyz234567" for c in body)
        ):
            raise StoreError(f"not an entry id or prefix: {text!r}", code="bad_id")
        usable = len(body) * 5 // 8
        padded = (body + "a" * 56)[:56].upper()
        low = base64.b32decode(padded)[:usable]
        high = _next_prefix(low)
        sql = "SELECT hash FROM entries WHERE hash >= ?" + (" AND hash < ?" if high else "") + " LIMIT 1000"
        rows = self.read(sql, (low, high) if high else (low,))
        matches = [r[0] for r in rows if entry_id_text(r[0])[1:].startswith(body)]
        if not matches:
            raise NotFound(f"no entry with id {text} in this store")
        if len(matches) > 1:
            raise AmbiguousId(f"{text} matches {len(matches)} entries; give more characters")
        return bytes(matches[0])

    def entry(self, hash_: bytes) -> dict[str, Any]:
        rows = self.read(f"SELECT {_ENTRY_COLS} FROM entries e WHERE e.hash = ?", (hash_,))
        if not rows:
            raise NotFound(f"no entry {entry_id_text(hash_)}")
        return entry_row(rows[0])

    def entry_author(self, hash_: bytes) -> bytes:
        rows = self.read("SELECT author FROM entries WHERE hash = ?", (hash_,))
        if not rows:
            raise NotFound(f"no entry {entry_id_text(hash_)}")
        return bytes(rows[0][0])

    def raw_entry(self, hash_: bytes) -> tuple[bytes, bytes | None]:
        rows = self.read("SELECT raw, payload FROM entries WHERE hash = ?", (hash_,))
        if not rows:
            raise NotFound(f"no entry {entry_id_text(hash_)}")
        return bytes(rows[0][0]), rows[0][1]

    # -- feeds -----------------------------------------------------------------------------------------
    def feed_info(self, author: bytes) -> dict[str, Any] | None:
        rows = self.read("SELECT head_seq, count, forked, kind FROM feeds WHERE author = ?", (author,))
        if not rows:
            return None
        head, count, forked, kind = rows[0]
        return {
            "feed": feed_id_text(author),
            "head": head,
            "entries": count,
            "forked": bool(forked),
            "kind": kind,
        }

    def feeds(self) -> list[bytes]:
        return [bytes(r[0]) for r in self.read("SELECT author FROM feeds ORDER BY author")]

    def log(self, author: bytes, *, limit: int | None = None) -> list[dict[str, Any]]:
        """A feed's entries, newest first."""
        sql = f"SELECT {_ENTRY_COLS} FROM entries e WHERE e.author = ? ORDER BY e.seq DESC"
        params: tuple[Any, ...] = (author,)
        if limit is not None:
            sql += " LIMIT ?"
            params += (limit,)
        return [entry_row(r) for r in self.read(sql, params)]

    def stats(self) -> dict[str, int]:
        feeds = self.read("SELECT count(*), coalesce(sum(count), 0) FROM feeds")[0]
        return {"feeds": int(feeds[0]), "entries": int(feeds[1])}

    # -- social graph ----------------------------------------------------------------------------------
    def graph_targets(self, author: bytes, kind: str) -> list[bytes]:
        rows = self.read(
            "SELECT target FROM graph WHERE author = ? AND kind = ? AND active = 1 ORDER BY target",
            (author, kind),
        )
        return [bytes(r[0]) for r in rows]

    def graph_entry(self, author: bytes, kind: str, target: bytes) -> dict[str, Any] | None:
        """The entry that decides whether ``author`` follows (``kind`` ``follow``) or blocks
        (``block``) ``target`` (spec/protocol.md §8.2.4), with ``active``; None when there is none."""
        rows = self.read(
            f"SELECT {_ENTRY_COLS}, g.active FROM graph g JOIN entries e ON e.author = g.author AND e.seq = g.seq "
            "WHERE g.author = ? AND g.kind = ? AND g.target = ?",
            (author, kind, target),
        )
        return {**entry_row(rows[0]), "active": bool(rows[0][7])} if rows else None

    def following(self, author: bytes) -> list[dict[str, Any]]:
        """The feeds ``author`` follows, ``{"feed", "name"}``, with ``"blocked": True`` on those it
        also blocks (blocked feeds are neither shown nor replicated, the follow notwithstanding)."""
        rows = self.read(
            "SELECT g.target, p.name, b.active FROM graph g LEFT JOIN profiles p ON p.feed = g.target "
            "LEFT JOIN graph b ON b.author = g.author AND b.kind = 'block' AND b.target = g.target "
            "WHERE g.author = ? AND g.kind = 'follow' AND g.active = 1 ORDER BY p.name, g.target",
            (author,),
        )
        return [
            {"feed": feed_id_text(r[0]), "name": r[1], **({"blocked": True} if r[2] else {})} for r in rows
        ]

    def profile(self, feed: bytes) -> dict[str, Any]:
        rows = self.read("SELECT name, bio FROM profiles WHERE feed = ?", (feed,))
        name, bio = rows[0] if rows else (None, None)
        return {"feed": feed_id_text(feed), "name": name, "bio": bio}

    def names(self, feeds: set[bytes]) -> dict[bytes, str]:
        out: dict[bytes, str] = {}
        items = list(feeds)
        for i in range(0, len(items), 500):
            part = items[i : i + 500]
            marks = ",".join("?" * len(part))
            for feed, name in self.read(f"SELECT feed, name FROM profiles WHERE feed IN ({marks})", part):
                if name:
                    out[bytes(feed)] = name
        return out

    # -- mutes (local only) ----------------------------------------------------------------------------
    def mute(self, kind: str, value: str) -> bool:
        with self.transaction() as cur:
            cur.execute("INSERT OR IGNORE INTO mutes (kind, value) VALUES (?, ?)", (kind, value))
            return cur.rowcount > 0

    def unmute(self, kind: str, value: str) -> bool:
        with self.transaction() as cur:
            cur.execute("DELETE FROM mutes WHERE kind = ? AND value = ?", (kind, value))
            return cur.rowcount > 0

    def mutes(self) -> list[dict[str, str]]:
        return [
            {"kind": k, "value": v}
            for k, v in self.read("SELECT kind, value FROM mutes ORDER BY kind, value")
        ]

    # -- reading ---------------------------------------------------------------------------------------
    def timeline(
        self, me: bytes, *, limit: int = 50, before: int | None = None, swarm: str | None = None
    ) -> list[dict[str, Any]]:
        """Chronological timeline: posts and reposts of you and those you follow, minus blocks and mutes.

        Newest ranked time first (spec/ranking.md §1.1); ``before`` is a ranked time.

        With ``swarm``: of you and the members found in that swarm (storage/dht.py) instead of follows.
        """
        muted_feeds = {FeedId.parse(m["value"]).key for m in self.mutes() if m["kind"] == "feed"}
        words = [m["value"].lower() for m in self.mutes() if m["kind"] == "word"]
        if swarm is None:
            sources = set(self.graph_targets(me, "follow"))
        else:
            sources = {
                bytes(r[0]) for r in self.read("SELECT member FROM swarm_members WHERE swarm = ?", (swarm,))
            }
        authors = ({me} | sources) - set(self.graph_targets(me, "block"))
        authors -= muted_feeds
        if not authors:
            return []
        out: list[dict[str, Any]] = []
        cursor = before
        while len(out) < limit:
            batch = self._timeline_page(authors, limit * 2, cursor)
            for row in batch:
                item = entry_row(row)
                text = (item["content"] or {}).get("text", "")
                if words and isinstance(text, str) and any(w in text.lower() for w in words):
                    continue
                out.append(item)
                if len(out) == limit:
                    break
            if len(batch) < limit * 2:
                break
            cursor = batch[-1][7]
        return out

    def _timeline_page(self, authors: set[bytes], n: int, before: int | None) -> list[Any]:
        self.conn.execute("CREATE TEMP TABLE IF NOT EXISTS tl_authors (author BLOB PRIMARY KEY)")
        self.conn.execute("DELETE FROM tl_authors")
        self.conn.executemany("INSERT INTO tl_authors (author) VALUES (?)", [(a,) for a in authors])
        where = "e.type IN ('post', 'repost') AND e.deleted = 0"
        params: list[Any] = []
        if before is not None:
            where += f" AND {_RANK} < ?"
            params.append(before)
        params.append(n)
        # Walk the ranked-time index newest first and keep wanted authors: ~0.1 ms over 1M rows (README).
        return self.read(
            f"SELECT {_ENTRY_COLS}, {_RANK} FROM entries e INDEXED BY entries_rank "
            f"WHERE {where} AND e.author IN (SELECT author FROM tl_authors) ORDER BY {_RANK} DESC LIMIT ?",
            params,
        )

    def thread(self, hash_: bytes) -> list[dict[str, Any]]:
        """The conversation an entry belongs to: its root, then replies in ranked-time order (ranking.md §1.1)."""
        self.entry(hash_)  # NotFound if absent
        rows = self.read(
            "SELECT p.root FROM posts p JOIN entries e ON e.id = p.entry WHERE e.hash = ?", (hash_,)
        )
        root = bytes(rows[0][0]) if rows and rows[0][0] is not None else hash_
        found = self.read(
            f"SELECT {_ENTRY_COLS}, {_RANK} FROM entries e WHERE e.hash = ? "
            f"UNION SELECT {_ENTRY_COLS}, {_RANK} FROM posts p JOIN entries e ON e.id = p.entry WHERE p.root = ? "
            "ORDER BY 8, 3",
            (root, root),
        )
        return [entry_row(r) for r in found]

    def search(self, query: str, *, limit: int = 50, fts: bool = False) -> list[dict[str, Any]]:
        """Full-text search over profiles and post texts (``storage.search``): plain words, or with
        ``fts`` the SQLite FTS5 query syntax. Matching profiles first, then posts, best match first."""
        if self.search_index_behind():  # posts are indexed in batches: catch up first
            self.update_search_index()
        try:
            profiles, posts = search_rows(self.conn, query, limit=limit, fts=fts)
        except sqlite3.Error as exc:
            raise translate(exc) from None
        out = []
        for row in profiles:
            item = entry_row(row[3:])
            out.append({**item, "type": "profile", "profile": profile_fields(row)})
        return out + [entry_row(r) for r in posts]


def _next_prefix(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string starting with ``prefix``."""
    data = bytearray(prefix)
    while data:
        if data[-1] < 0xFF:
            data[-1] += 1
            return bytes(data)
        data.pop()
    return None
