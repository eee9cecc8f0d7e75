"""Bridge state (spec §14): settings, sources with their polling state, and items already carried.

A *source* is one thing a bridge follows or publishes to, named by the bridge (a feed URL, a Nostr
public key, a relay URL) under a ``kind`` (``in`` for followed sources, ``relay`` for relays, ...).
``cursor`` is the bridge's own progress mark for a source (the last own seq published to a relay, the
newest ``created_at`` pulled). *Items* are what was imported from or published to a source, so each is
carried once: an RSS guid, a Nostr event id, with the Tidings entry it became.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from tidings.protocol import Content

if TYPE_CHECKING:
    from tidings.protocol import Entry, SigningKey

    from .store import Store

__all__ = [
    "add_source",
    "append_bridged",
    "entry_for_item",
    "get_settings",
    "item_for_entry",
    "mark_items",
    "note_poll",
    "own_posts_after",
    "remove_source",
    "seen_items",
    "set_setting",
    "sources",
    "thread_of_item",
]

_SOURCE_COLS = (
    "bridge, kind, source, feed, title, added, enabled, etag, last_modified, last_poll, last_ok, "
    "last_error, failures, next_poll, cursor"
)


def _source_row(row: Any) -> dict[str, Any]:
    names = [n.strip() for n in _SOURCE_COLS.split(",")]
    out = dict(zip(names, row, strict=True))
    out["feed"] = bytes(out["feed"]) if out["feed"] is not None else None
    out["enabled"] = bool(out["enabled"])
    return out


# -- settings -------------------------------------------------------------------------------------------
def get_settings(store: Store, bridge: str) -> dict[str, str]:
    """The settings stored for ``bridge`` (defaults are the bridge's business)."""
    rows = store.read("SELECT key, value FROM bridge_settings WHERE bridge = ?", (bridge,))
    return {str(k): str(v) for k, v in rows}


def set_setting(store: Store, bridge: str, key: str, value: str | None) -> None:
    """Set (or with None, reset) one setting."""
    with store.transaction() as cur:
        if value is None:
            cur.execute("DELETE FROM bridge_settings WHERE bridge = ? AND key = ?", (bridge, key))
        else:
            cur.execute(
                "INSERT OR REPLACE INTO bridge_settings (bridge, key, value) VALUES (?, ?, ?)",
                (bridge, key, value),
            )


# -- sources --------------------------------------------------------------------------------------------
def add_source(store: Store, bridge: str, kind: str, source: str, *, feed: bytes | None, now: int) -> bool:
    """Enable a source (a new one, or one disabled before); False if it was enabled already."""
    with store.transaction() as cur:
        row = cur.execute(
            "SELECT enabled FROM bridge_sources WHERE bridge = ? AND kind = ? AND source = ?",
            (bridge, kind, source),
        ).fetchone()
        if row is None:
            cur.execute(
                "INSERT INTO bridge_sources (bridge, kind, source, feed, added) VALUES (?, ?, ?, ?, ?)",
                (bridge, kind, source, feed, now),
            )
            return True
        cur.execute(
            "UPDATE bridge_sources SET enabled = 1, next_poll = 0, failures = 0 "
            "WHERE bridge = ? AND kind = ? AND source = ?",
            (bridge, kind, source),
        )
        return not row[0]


def remove_source(store: Store, bridge: str, kind: str, source: str) -> dict[str, Any] | None:
    """Disable a source (its items stay known, so following it again imports nothing twice)."""
    with store.transaction() as cur:
        row = cur.execute(
            f"SELECT {_SOURCE_COLS} FROM bridge_sources WHERE bridge = ? AND kind = ? AND source = ? "
            "AND enabled = 1",
            (bridge, kind, source),
        ).fetchone()
        if row is None:
            return None
        cur.execute(
            "UPDATE bridge_sources SET enabled = 0 WHERE bridge = ? AND kind = ? AND source = ?",
            (bridge, kind, source),
        )
        return _source_row(row)


def sources(
    store: Store, bridge: str, kind: str | None = None, *, enabled: bool = True, due: int | None = None
) -> list[dict[str, Any]]:
    """A bridge's sources (of one ``kind``), oldest first; ``due``: only those due to poll at that time."""
    sql = f"SELECT {_SOURCE_COLS} FROM bridge_sources WHERE bridge = ?"
    params: list[Any] = [bridge]
    if kind is not None:
        sql += " AND kind = ?"
        params.append(kind)
    if enabled:
        sql += " AND enabled = 1"
    if due is not None:
        sql += " AND next_poll <= ?"
        params.append(due)
    return [_source_row(r) for r in store.read(sql + " ORDER BY added, source", params)]


def note_poll(store: Store, bridge: str, kind: str, source: str, **fields: Any) -> None:
    """Record the outcome of a poll: any of ``last_poll, last_ok, last_error, failures, next_poll,
    etag, last_modified, title, cursor``."""
    allowed = {
        "last_poll",
        "last_ok",
        "last_error",
        "failures",
        "next_poll",
        "etag",
        "last_modified",
        "title",
        "cursor",
    }
    unknown = set(fields) - allowed
    if unknown:
        raise ValueError(f"unknown source fields: {sorted(unknown)}")
    if not fields:
        return
    names = sorted(fields)
    sets = ", ".join(f"{n} = ?" for n in names)
    with store.transaction() as cur:
        cur.execute(
            f"UPDATE bridge_sources SET {sets} WHERE bridge = ? AND kind = ? AND source = ?",
            (*(fields[n] for n in names), bridge, kind, source),
        )


# -- items ----------------------------------------------------------------------------------------------
def seen_items(store: Store, bridge: str, source: str, items: Iterable[str]) -> set[str]:
    """Which of ``items`` were carried already."""
    wanted = list(dict.fromkeys(items))
    found: set[str] = set()
    for i in range(0, len(wanted), 500):
        part = wanted[i : i + 500]
        marks = ",".join("?" * len(part))
        rows = store.read(
            f"SELECT item FROM bridge_items WHERE bridge = ? AND source = ? AND item IN ({marks})",
            (bridge, source, *part),
        )
        found.update(str(r[0]) for r in rows)
    return found


def mark_items(
    store: Store, bridge: str, source: str, items: list[tuple[str, bytes | None]], now: int
) -> None:
    """Remember items as carried, with the entry each became (or None)."""
    with store.transaction() as cur:
        cur.executemany(
            "INSERT OR IGNORE INTO bridge_items (bridge, source, item, entry, done) VALUES (?, ?, ?, ?, ?)",
            [(bridge, source, item, entry, now) for item, entry in items],
        )


def entry_for_item(store: Store, bridge: str, source: str, item: str) -> bytes | None:
    rows = store.read(
        "SELECT entry FROM bridge_items WHERE bridge = ? AND source = ? AND item = ?", (bridge, source, item)
    )
    return bytes(rows[0][0]) if rows and rows[0][0] is not None else None


def thread_of_item(store: Store, bridge: str, root: str, reply: str) -> tuple[bytes, bytes] | None:
    """``(root, reply)`` entry hashes for a reply to bridged item ``reply`` in the thread of ``root``
    (e.g. Nostr event ids), when ``reply`` was carried as a post by any source of ``bridge`` (an import,
    or an own post published by it); None otherwise. The root is ``root``'s entry when that was carried
    too, else the root of the post answered (or that post itself when it starts its thread)."""
    found = store.read(
        "SELECT e.hash, p.root FROM bridge_items b JOIN entries e ON e.hash = b.entry "
        "JOIN posts p ON p.entry = e.id WHERE b.bridge = ? AND b.item = ? LIMIT 1",
        (bridge, reply),
    )
    if not found:
        return None
    reply_hash, its_root = found[0]
    rows = store.read(
        "SELECT entry FROM bridge_items WHERE bridge = ? AND item = ? AND entry IS NOT NULL LIMIT 1",
        (bridge, root),
    )
    root_hash = rows[0][0] if rows else its_root if its_root is not None else reply_hash
    return bytes(root_hash), bytes(reply_hash)


def item_for_entry(store: Store, bridge: str, entry: bytes) -> str | None:
    """The item (e.g. Nostr event id) an entry was carried as, by any source of ``bridge``."""
    rows = store.read("SELECT item FROM bridge_items WHERE bridge = ? AND entry = ? LIMIT 1", (bridge, entry))
    return str(rows[0][0]) if rows else None


def append_bridged(
    store: Store,
    key: SigningKey,
    bridge: str,
    source: str,
    items: list[tuple[str, Content]],
    now: int,
) -> list[tuple[str, Entry]]:
    """Append imported items to a bridge feed signed by ``key``, skipping those already carried.

    Each entry is written first and its item marked after: a crash in between may import that item
    twice, never lose one. The feed is marked ``kind = 'bridge'`` (it is not the user's own).
    Returns the new ``(item, entry)`` pairs.
    """
    seen = seen_items(store, bridge, source, [i for i, _ in items])
    todo: dict[str, Content] = {}
    for item, content in items:
        if item not in seen and item not in todo:
            todo[item] = content
    if not todo:
        return []
    made: list[tuple[str, Entry]] = []
    for i, (item, content) in enumerate(todo.items()):
        # one millisecond apart, so the timeline keeps the source's order (spec §14.1)
        entry = store.append(key, content, now=now + i)
        mark_items(store, bridge, source, [(item, entry.hash)], now)
        made.append((item, entry))
    with store.transaction() as cur:
        cur.execute("UPDATE feeds SET kind = 'bridge' WHERE author = ?", (key.public_key,))
    return made


# -- reading posts to publish ---------------------------------------------------------------------------
def own_posts_after(store: Store, author: bytes, after_seq: int, limit: int = 100) -> list[dict[str, Any]]:
    """Posts of ``author`` after ``after_seq``, oldest first: ``{"seq", "hash", "ts", "payload"}``.

    Deleted posts are left out; ``last_seq`` of the batch is the highest seq looked at (posts or not).
    """
    rows = store.read(
        "SELECT seq, hash, ts, type, payload, deleted FROM entries WHERE author = ? AND seq > ? "
        "ORDER BY seq LIMIT ?",
        (author, after_seq, limit),
    )
    return [
        {
            "seq": int(seq),
            "hash": bytes(h),
            "ts": int(ts),
            "type": kind,
            "payload": payload,
            "deleted": bool(d),
        }
        for seq, h, ts, kind, payload, d in rows
    ]
