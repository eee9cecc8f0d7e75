"""Private messages in the store (spec/protocol.md §8.6): what this home's key opened, and reading it.

Theory of operation. A box is opened once, when it is stored, with the store's ``box_key`` (the home's
X25519 key, ``protocol.box.BoxKey``); the cryptography is ``protocol.box``, the SQL is here. Ingest
opens the boxes of a batch off the database thread, with its signature checks (``Store.prepare``; in
the verify worker processes for a bulk batch, storage/verifier.py), and the writer records the outcomes with the entries (``record``): an opened message becomes a row of
``messages``; a box that opened for us but not its message a row with its ``problem``; a box that is
not ours nothing at all. A box stored with no outcome — written by a process that had no key at hand,
a payload that came late, our own box just sealed — waits in ``box_pending`` until ``open_pending``
runs with a key (at the end of every write of a store that has one, and before the inbox is read).
Deleting a box (spec §8.2.9) drops its row with its payload (``projections.drop_payload``).

At rest, what was opened is sealed with a key of the home's own (``BoxKey.seal_local``, derived from
the identity, so behind its passphrase when the key file has one): a row holds the author (public:
the entry is signed), the time, the read flag and ``sealed`` — the recipients, the text and the reply,
bound to the entry's hash — and ``conversation`` is a name only the key computes (a plain hash of the
participants could be matched against every pair of known feeds). So the database alone shows which
boxes opened here and who wrote them, not what they say nor to whom; reading needs the key, and a row
whose seal does not open under it (another identity's, or changed) is shown as undecryptable. The
badge (``unread``) counts without the key.

Reading groups messages by conversation (the set of participants). A conversation is in the inbox
when this home wrote in it or one of its authors is a feed this home follows or that follows it;
otherwise it is a *request*, listed only by ``inbox(requests=True)``. Messages of blocked feeds are
not shown.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tidings.protocol import (
    Box,
    DecodeError,
    Entry,
    InvalidContent,
    Opened,
    Undecryptable,
    decode_content,
    entry_id_text,
    feed_id_text,
)
from tidings.protocol.box import open_box
from tidings.protocol.encoding import decode, encode

from .verifier import Outcome

if TYPE_CHECKING:
    from tidings.protocol import BoxKey

    from .reads import Reads

__all__ = [
    "Outcome",
    "conversation",
    "inbox",
    "known_feed",
    "message_of",
    "open_one",
    "open_pending",
    "pending_count",
    "record",
    "unread",
]

#: Pending boxes opened per statement batch by ``open_pending``.
_BATCH = 500


def open_one(entry: Entry, box: Box, key: BoxKey) -> Outcome:
    """Open ``box``, the payload of ``entry``, with ``key`` (spec §8.6)."""
    return open_box(box, author=entry.author, seq=entry.seq, backlink=entry.backlink, key=key)


def record(cur: sqlite3.Cursor, items: list[tuple[int, Entry, Outcome]], key: BoxKey) -> None:
    """Write what opening boxes with ``key`` gave: ``(row id, entry, outcome)``, sealed at rest; our
    own messages are read. A row kept from before (schema 12) keeps its read flag."""
    rows: list[tuple[Any, ...]] = []
    for rowid, entry, outcome in items:
        if isinstance(outcome, Opened):
            message = outcome.message
            inner = encode([b"".join(message.to), message.text, message.reply])
            sealed = key.seal_local(inner, ad=entry.hash, nonce=os.urandom(12))
            name = key.local_name(outcome.participants)
            rows.append(
                (rowid, name, entry.author, sealed, entry.timestamp, int(entry.author == key.feed), None)
            )
        elif isinstance(outcome, Undecryptable):
            rows.append((rowid, None, entry.author, None, entry.timestamp, 0, outcome.reason))
    if rows:
        cur.executemany(
            "INSERT INTO messages (entry, conversation, author, sealed, ts, read, problem) VALUES (?,?,?,?,?,?,?) "
            "ON CONFLICT (entry) DO UPDATE SET conversation = excluded.conversation, sealed = excluded.sealed, "
            "problem = excluded.problem, read = max(read, excluded.read)",
            rows,
        )


def pending_count(store: Reads) -> int:
    """How many stored boxes wait for the key (``open_pending``)."""
    return int(store.read("SELECT count(*) FROM box_pending")[0][0])


def open_pending(cur: sqlite3.Cursor, key: BoxKey) -> int:
    """Open every box waiting in ``box_pending`` with ``key`` and record what it gave; returns how
    many were tried. Runs inside the caller's transaction."""
    tried = 0
    while True:
        rows = cur.execute(
            "SELECT p.entry, e.raw, e.payload FROM box_pending p JOIN entries e ON e.id = p.entry "
            "ORDER BY p.entry LIMIT ?",
            (_BATCH,),
        ).fetchall()
        if not rows:
            return tried
        items: list[tuple[int, Entry, Outcome]] = []
        for rowid, raw, payload in rows:
            if payload is None:
                continue  # deleted meanwhile: nothing to open
            entry = Entry.decode(bytes(raw))
            try:
                box = decode_content(bytes(payload))
            except (DecodeError, InvalidContent):  # kept but not shown (spec §8.4): nothing to open
                continue
            if isinstance(box, Box):
                items.append((rowid, entry, open_one(entry, box, key)))
        record(cur, items, key)
        cur.executemany("DELETE FROM box_pending WHERE entry = ?", [(r[0],) for r in rows])
        tried += len(rows)


def _feeds(blob: bytes | None) -> list[bytes]:
    data = bytes(blob or b"")
    return [data[i : i + 32] for i in range(0, len(data), 32)]


def _relations(store: Reads, me: bytes) -> tuple[set[bytes], set[bytes]]:
    """(feeds we follow or that follow us, feeds we block)."""
    known = {
        bytes(r[0])
        for r in store.read(
            "SELECT target FROM graph WHERE author = ?1 AND kind = 'follow' AND active = 1 "
            "UNION SELECT author FROM graph WHERE target = ?1 AND kind = 'follow' AND active = 1",
            (me,),
        )
    }
    blocked = {
        bytes(r[0])
        for r in store.read(
            "SELECT target FROM graph WHERE author = ? AND kind = 'block' AND active = 1", (me,)
        )
    }
    return known, blocked


_COLS = "e.hash, m.author, m.sealed, m.ts, m.read, m.conversation, m.problem, m.entry"
_SHOWN = "e.deleted = 0 AND (m.sealed IS NOT NULL OR m.problem IS NOT NULL)"  # not waiting to be opened again


@dataclass(slots=True)
class _Row:
    """A row of ``messages`` as its key reads it."""

    hash: bytes
    author: bytes
    ts: int
    read: bool
    conversation: bytes | None
    problem: str | None
    rowid: int
    to: list[bytes] = field(default_factory=list)
    text: str = ""
    reply: bytes | None = None


def _rows(
    store: Reads, key: BoxKey, where: str = "", args: tuple[Any, ...] = (), order: str = "DESC"
) -> list[_Row]:
    """The shown rows (``where`` narrows them), newest first or (``order`` ASC) oldest first, unsealed
    with ``key``; a seal that does not open under it is a row with its ``problem``."""
    out = []
    for hash_, author, sealed, ts, read, conversation, problem, rowid in store.read(
        f"SELECT {_COLS} FROM messages m JOIN entries e ON e.id = m.entry WHERE {_SHOWN} {where} "
        f"ORDER BY m.ts {order}, m.entry {order}",
        args,
    ):
        row = _Row(
            bytes(hash_), bytes(author), ts, bool(read), conversation and bytes(conversation), problem, rowid
        )
        if problem is None:
            inner = key.open_local(bytes(sealed), ad=row.hash)
            try:
                to, row.text, reply = decode(inner, max_size=len(inner))  # type: ignore[arg-type, misc]
                row.to, row.reply = _feeds(to), reply
            except (DecodeError, TypeError, ValueError):
                row.conversation, row.problem = None, "kept sealed under another key, or changed at rest"
        out.append(row)
    return out


def _message(row: _Row) -> dict[str, Any]:
    out: dict[str, Any] = {"id": entry_id_text(row.hash), "feed": feed_id_text(row.author), "ts": row.ts}
    if row.problem is not None:
        out.update(undecryptable=True, reason=row.problem)
        return out
    out.update(text=row.text, read=row.read)
    if row.reply is not None:
        out["reply"] = entry_id_text(row.reply)
    return out


def inbox(store: Reads, key: BoxKey, *, requests: bool = False) -> list[dict[str, Any]]:
    """Conversations newest first: ``{"with", "messages", "unread", "ts", "last"}`` (``with``: the
    other participants); with ``requests``, those of strangers instead. Undecryptable boxes from
    feeds of the same standing follow, one line each with ``"undecryptable": true``."""
    me = key.feed
    known, blocked = _relations(store, me)
    groups: dict[bytes, list[_Row]] = {}
    odd: list[_Row] = []
    for row in _rows(store, key):
        if row.author in blocked:
            continue
        if row.conversation is None:
            odd.append(row)
        else:
            groups.setdefault(row.conversation, []).append(row)
    out = []
    for rows in groups.values():
        authors = {r.author for r in rows}
        if (me in authors or bool(authors & known)) == requests:
            continue
        latest = rows[0]
        others = sorted({latest.author, *latest.to} - {me})
        out.append(
            {
                "with": [feed_id_text(f) for f in others],
                "messages": len(rows),
                "unread": sum(1 for r in rows if not r.read),
                "ts": latest.ts,
                "last": _message(latest),
            }
        )
    out += [_message(r) for r in odd if (r.author in known) != requests]
    return out


def conversation(
    store: Reads, key: BoxKey, others: set[bytes], *, mark_read: bool = True
) -> list[dict[str, Any]]:
    """The messages of the conversation of this key's feed with ``others``, oldest first; marks them read."""
    _, blocked = _relations(store, key.feed)
    name = key.local_name([key.feed, *others])
    rows = [
        r
        for r in _rows(store, key, "AND m.conversation = ?", (name,), order="ASC")
        if r.author not in blocked and r.problem is None
    ]
    unread = [(r.rowid,) for r in rows if not r.read]
    if mark_read and unread:
        with store.transaction() as cur:
            cur.executemany("UPDATE messages SET read = 1 WHERE entry = ?", unread)
    return [_message(r) for r in rows]


def unread(store: Reads, me: bytes) -> dict[str, Any]:
    """What the inbox badge shows, without reading the messages: ``{"unread", "requests", "newest"}``
    (unread messages of the inbox's conversations and of the requests, as ``inbox`` counts them, and
    the id of the newest shown message by arrival, or None): one row per author of a conversation."""
    known, blocked = _relations(store, me)
    rows = store.read(
        "SELECT m.conversation, m.author, sum(m.read = 0), max(m.entry) FROM messages m "
        "JOIN entries e ON e.id = m.entry WHERE e.deleted = 0 AND m.conversation IS NOT NULL "
        "GROUP BY m.conversation, m.author"
    )
    groups: dict[bytes, tuple[set[bytes], int]] = {}
    newest = 0
    for conversation, author, waiting, last in rows:
        if bytes(author) in blocked:
            continue
        authors, count = groups.get(bytes(conversation), (set(), 0))
        groups[bytes(conversation)] = ({*authors, bytes(author)}, count + int(waiting))
        newest = max(newest, int(last))
    counts = {False: 0, True: 0}  # requests? -> unread messages
    for authors, count in groups.values():
        counts[not (me in authors or bool(authors & known))] += count
    found = store.read("SELECT hash FROM entries WHERE id = ?", (newest,)) if newest else []
    return {
        "unread": counts[False],
        "requests": counts[True],
        "newest": entry_id_text(bytes(found[0][0])) if found else None,
    }


def message_of(store: Reads, key: BoxKey, entry_hash: bytes) -> tuple[bytes, list[bytes]] | None:
    """The author and the recipients of the opened message of entry ``entry_hash``; None when this
    home holds no opened message there."""
    found = [r for r in _rows(store, key, "AND e.hash = ?", (entry_hash,)) if r.problem is None]
    return (found[0].author, found[0].to) if found else None


def known_feed(store: Reads, feed: bytes) -> bool:
    """Whether this store knows ``feed`` at all: holds an entry of it, a follow or block naming it,
    or met it as a peer (a message to a mistyped id would reach nobody)."""
    rows = store.read(
        "SELECT EXISTS (SELECT 1 FROM feeds WHERE author = ?1) OR EXISTS (SELECT 1 FROM graph WHERE target = ?1) "
        "OR EXISTS (SELECT 1 FROM peers WHERE feed = ?1)",
        (feed,),
    )
    return bool(rows[0][0])
