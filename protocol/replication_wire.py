"""The replication messages on the wire: events to plaintext frames and back (spec/protocol.md §12.1).

Pure codec, no state: ``frames_for`` applies the sender's rules (splitting, leaving out what the
receiver would refuse), ``split_message`` and ``event_from`` the receiver's argument rules, and
``fast_entries`` is the hot path for ``entries`` frames. Which message is allowed when, the version
rules and the bookkeeping of what the peer holds belong to ``replication.Replication``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgpack

from .encoding import decode, encode
from .errors import DecodeError, LocalProtocolError, RemoteProtocolError
from .handshake import MAX_PLAINTEXT
from .reach_events import WireMessage
from .replication_events import (
    MAX_ADDRESS_TEXT,
    MAX_CLOCK_ITEMS,
    MAX_FOLLOWER_NOTES,
    MAX_HAVE_ITEMS,
    MAX_MEMBER_RECORD_SIZE,
    MAX_MEMBER_RECORDS,
    MAX_PEER_ADDRESSES,
    Bye,
    CaughtUp,
    Clock,
    ClockItem,
    Entries,
    Event,
    Followers,
    Forks,
    Have,
    Hello,
    Members,
    Peers,
)

__all__ = ["event_from", "fast_entries", "frames_for", "pack_entries", "split_message"]

#: fixarray(2) + fixstr(7) "entries": how every entries frame starts.
_ENTRIES_HEAD = b"\x92\xa7entries"


def _bad(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, code="bad_message")


# -- sending ------------------------------------------------------------------------------------------


def _pack_entries_message(batch: list[list[Any]]) -> bytes:
    # Only bytes and nil inside: msgpack's packing is the canonical form (spec §2.1), no walk needed.
    data: bytes = msgpack.packb(["entries", batch], use_bin_type=True)
    return data


def pack_entries(items: Iterable[tuple[bytes, bytes | None]], limit: int = MAX_PLAINTEXT) -> list[bytes]:
    """Encode ``entries`` messages, as many items per frame as fit in ``limit`` bytes."""
    frames: list[bytes] = []
    batch: list[list[Any]] = []
    size = 16
    for raw, payload in items:
        item_size = len(raw) + (len(payload) if payload else 0) + 12
        if batch and size + item_size > limit:
            frames.append(_pack_entries_message(batch))
            batch, size = [], 16
        batch.append([raw, payload])
        size += item_size
    if batch:
        frames.append(_pack_entries_message(batch))
    return frames


def _chunks(name: str, rows: list[Any], size: int) -> list[bytes]:
    return [encode([name, rows[i : i + size]]) for i in range(0, len(rows), size)]


def _clock_frames(event: Clock) -> list[bytes]:
    # an eager item has three elements, never a false fourth (§12.1); none at all: one empty clock
    rows = [[i.feed, i.seq, i.newest, True] if i.lazy else [i.feed, i.seq, i.newest] for i in event.items]
    return _chunks("clock", rows, MAX_CLOCK_ITEMS) or [encode(["clock", []])]


def _peers_frames(event: Peers) -> list[bytes]:
    rows = [[feed, address] for feed, address in event.items if 0 < len(address) <= MAX_ADDRESS_TEXT]
    return [encode(["peers", rows[:MAX_PEER_ADDRESSES]])]


def _members_frames(event: Members) -> list[bytes]:
    # spec §12.1: a new message when the next record would pass the frame limit (3 bytes of framing
    # per record) or the record limit; oversized records are left out
    frames: list[bytes] = []
    batch: list[bytes] = []
    size = 16
    for record in event.records:
        if len(record) > MAX_MEMBER_RECORD_SIZE:
            continue
        if batch and (len(batch) >= MAX_MEMBER_RECORDS or size + len(record) + 3 > MAX_PLAINTEXT):
            frames.append(encode(["members", batch]))
            batch, size = [], 16
        batch.append(record)
        size += len(record) + 3
    if batch:
        frames.append(encode(["members", batch]))
    return frames


def _followers_frames(event: Followers) -> list[bytes]:
    # a new message when the next note would pass the frame limit (16 bytes of framing per note)
    frames: list[bytes] = []
    batch: list[list[bytes]] = []
    size = 16
    for raw, payload in event.items:
        if batch and size + len(raw) + len(payload) + 16 > MAX_PLAINTEXT:
            frames.append(encode(["followers", batch]))
            batch, size = [], 16
        batch.append([raw, payload])
        size += len(raw) + len(payload) + 16
    if batch:
        frames.append(encode(["followers", batch]))
    return frames


_ENCODERS: dict[type[Event], Callable[[Any], list[bytes]]] = {
    Hello: lambda e: [encode(["hello", list(e.versions), e.agent])],
    Clock: _clock_frames,
    Entries: lambda e: pack_entries(e.items),
    Followers: _followers_frames,
    Have: lambda e: _chunks("have", [[feed, seq] for feed, seq in e.items], MAX_HAVE_ITEMS),
    Peers: _peers_frames,
    Members: _members_frames,
    CaughtUp: lambda e: [encode(["caught_up"])],
    Forks: lambda e: [encode(["forks", list(e.proofs)])],
    Bye: lambda e: [encode(["bye", e.code, e.reason[:200]])],
}


def frames_for(event: Event) -> list[bytes]:
    """The plaintext frames that carry ``event``, by the sender's rules of §12.1 (possibly none)."""
    if isinstance(event, WireMessage):  # version 3 (§12.9-§12.11): one frame, its fields in order
        return [encode([event.NAME, *event.args()])]
    return _ENCODERS[type(event)](event)


# -- receiving ----------------------------------------------------------------------------------------


def fast_entries(frame: bytes) -> Entries | None:
    """Hot path for ``entries`` frames: unpack once, check the items, then the canonical form.

    Returns None for anything that is not plainly an entries message (the generic path decides).
    """
    if not frame.startswith(_ENTRIES_HEAD):
        return None
    try:
        message = msgpack.unpackb(frame, raw=False, use_list=True, strict_map_key=False)
    except Exception:
        return None
    if type(message) is not list or len(message) != 2 or message[0] != "entries":
        return None
    event = _entries(message[1:])
    if _pack_entries_message(message[1]) != frame:
        raise _bad("undecodable frame: not the canonical encoding")
    return event


def split_message(frame: bytes) -> tuple[str, list[Any]]:
    """``(name, arguments)`` of one plaintext frame (spec §12.1: a canonical array starting with text)."""
    try:
        message = decode(frame, max_size=MAX_PLAINTEXT)
    except DecodeError as exc:
        raise _bad(f"undecodable frame: {exc.args[0]}") from None
    if not isinstance(message, list) or not message or not isinstance(message[0], str):
        raise _bad("a message is an array starting with its name")
    return message[0], message[1:]


def event_from(cls: type[Event], args: list[Any], version: int) -> Event:
    """The event of message ``cls`` with arguments ``args`` under ``version``, by the receiver's rules."""
    try:
        if issubclass(cls, WireMessage):
            event: Event = cls.from_args(args)
            return event
        return _PARSERS[cls](args, version)
    except LocalProtocolError as exc:  # a field failed its constructor's checks: the peer's fault
        raise RemoteProtocolError(str(exc.args[0]), code=exc.code) from None


def _one_list(args: list[Any], most: int | None, shape: str) -> list[Any]:
    if len(args) != 1 or not isinstance(args[0], list) or (most is not None and len(args[0]) > most):
        raise _bad(shape)
    return args[0]


def _pairs(rows: list[Any], shape: str) -> tuple[tuple[Any, Any], ...]:
    if not all(type(row) is list and len(row) == 2 for row in rows):
        raise _bad(shape)
    return tuple((row[0], row[1]) for row in rows)


def _hello(args: list[Any], version: int) -> Hello:
    if len(args) != 2 or not isinstance(args[0], list) or not isinstance(args[1], str):
        raise _bad("hello is [versions, agent]")
    # elements that are not integers (booleans included) are ignored (§12.1)
    return Hello(agent=args[1][:100], versions=tuple(v for v in args[0] if type(v) is int))


def _clock(args: list[Any], version: int) -> Clock:
    rows = _one_list(args, MAX_CLOCK_ITEMS, "clock is [[feed, seq, newest], ...]")
    arity = (3, 4) if version >= 2 else (3,)
    items = []
    for row in rows:  # in order: shape, the fourth element, then the item's own checks (§12.1)
        if not isinstance(row, list) or len(row) not in arity:
            raise _bad(
                "clock item is [feed, seq, newest]" + (" or [feed, seq, newest, lazy]" * (len(arity) - 1))
            )
        if len(row) == 4 and row[3] is not True:
            raise _bad("the fourth element of a clock item is true (lazy) or absent")
        items.append(ClockItem(row[0], row[1], row[2], len(row) == 4))
    return Clock(items=tuple(items))


def _have(args: list[Any], version: int) -> Have:
    rows = _one_list(args, MAX_HAVE_ITEMS, "have is [[feed, seq], ...]")
    return Have(items=_pairs(rows, "have item is [feed, seq]"))


def _peers(args: list[Any], version: int) -> Peers:
    shape = f"peers is at most {MAX_PEER_ADDRESSES} [feed, address]"
    items = _pairs(_one_list(args, MAX_PEER_ADDRESSES, shape), "peers item is [feed, address]")
    if not all(isinstance(address, str) and 0 < len(address) <= MAX_ADDRESS_TEXT for _, address in items):
        raise _bad("peers item is [feed (32 bytes), address text of 1..100 characters]")
    return Peers(items=items)


def _members(args: list[Any], version: int) -> Members:
    shape = f"members is at most {MAX_MEMBER_RECORDS} records of at most {MAX_MEMBER_RECORD_SIZE} bytes"
    records = _one_list(args, MAX_MEMBER_RECORDS, shape)
    if not all(isinstance(r, bytes) and len(r) <= MAX_MEMBER_RECORD_SIZE for r in records):
        raise _bad(shape)
    return Members(records=tuple(records))


def _entries(args: list[Any], version: int = 0) -> Entries:
    rows = _one_list(args, None, "entries is [[raw, payload], ...]")
    try:
        return Entries(items=_pairs(rows, "entry item is [raw, payload or nil]"))
    except LocalProtocolError as exc:
        raise RemoteProtocolError(str(exc.args[0]), code=exc.code) from None


def _followers(args: list[Any], version: int) -> Followers:
    shape = f"followers is at most {MAX_FOLLOWER_NOTES} [raw, payload]"
    return Followers(items=_pairs(_one_list(args, MAX_FOLLOWER_NOTES, shape), shape))


def _caught_up(args: list[Any], version: int) -> CaughtUp:
    if args:
        raise _bad("caught_up has no arguments")
    return CaughtUp()


def _forks(args: list[Any], version: int) -> Forks:
    return Forks(proofs=tuple(_one_list(args, None, "forks is [proof, ...]")))


def _bye(args: list[Any], version: int) -> Bye:
    # the arguments of bye are not checked (§12.1)
    code = args[0] if args and isinstance(args[0], str) else "bye"
    reason = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
    return Bye(code=code[:50], reason=reason[:200])


_PARSERS: dict[type[Event], Callable[[list[Any], int], Event]] = {
    Hello: _hello,
    Clock: _clock,
    Entries: _entries,
    Followers: _followers,
    Have: _have,
    Peers: _peers,
    Members: _members,
    CaughtUp: _caught_up,
    Forks: _forks,
    Bye: _bye,
}
