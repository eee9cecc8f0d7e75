"""The replication messages as events (spec/protocol.md §12.1).

One frozen, slotted, keyword-only dataclass per message, used in both directions as h11 does: the node
builds one and gives it to ``Replication.send``; ``Replication.receive`` returns one built from the
peer's frame. Each checks its fields in its constructor, so an event that cannot be encoded cannot
exist: a bad field is a ``LocalProtocolError`` (``bad_message``), which ``receive`` reports as the
peer's ``RemoteProtocolError`` with the same code. Sequences given as lists are kept as tuples.

The constructors check types and the bounds that hold whoever sends; what a sender leaves out or
splits (long ``peers`` lists, oversized member records, more than one frame of items) and what a
receiver refuses (more than a frame allows, §12.1 "Argument rules") is the machine's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .blob_transfer import BLOB_EVENTS, BlobEvent
from .entry import MAX_ENTRY_SIZE, MAX_PAYLOAD_SIZE
from .errors import LocalProtocolError
from .identity import KEY_SIZE
from .reach_events import REACH_EVENTS, ReachEvent

__all__ = [
    "MAX_ADDRESS_TEXT",
    "MAX_CLOCK_ITEMS",
    "MAX_FOLLOWER_NOTES",
    "MAX_HAVE_ITEMS",
    "MAX_MEMBER_RECORDS",
    "MAX_MEMBER_RECORD_SIZE",
    "MAX_PEER_ADDRESSES",
    "MAX_SEQ",
    "PROTOCOL_VERSIONS",
    "Bye",
    "CaughtUp",
    "Clock",
    "ClockItem",
    "Entries",
    "Event",
    "Followers",
    "Forks",
    "Have",
    "Hello",
    "Members",
    "Peers",
]

PROTOCOL_VERSIONS = (1, 2, 3, 4, 5)
#: Most follow entries a node sends as follower notes on one connection, and looks at (version 5, §12.3).
MAX_FOLLOWER_NOTES = 8
#: Most items in one ``have`` message, and addresses in one ``peers`` message (version 2).
MAX_HAVE_ITEMS = 1000
MAX_PEER_ADDRESSES = 32
MAX_ADDRESS_TEXT = 100
#: Most swarm member records in one ``members`` message, and the size of each (spec §13.4).
MAX_MEMBER_RECORDS = 200
MAX_MEMBER_RECORD_SIZE = 1024
#: Most clock items in one frame (each ~40 bytes).
MAX_CLOCK_ITEMS = 1000
MAX_SEQ = 2**53 - 1


def _bad(message: str) -> LocalProtocolError:
    return LocalProtocolError(message, code="bad_message")


def _is_count(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_SEQ


def _is_feed(value: object) -> bool:
    return type(value) is bytes and len(value) == KEY_SIZE


def _as_tuple(owner: object, name: str, value: object) -> tuple[Any, ...]:
    """Keep a sequence field as a tuple (frozen: set once, from ``__post_init__``)."""
    if type(value) is not tuple:
        if not isinstance(value, list | tuple):
            raise _bad(f"{type(owner).__name__}.{name} is a sequence")
        value = tuple(value)
        object.__setattr__(owner, name, value)
    return value


@dataclass(frozen=True, slots=True)
class ClockItem:
    """``[feed, seq, newest]``, and in version 2 ``[feed, seq, newest, lazy]`` (spec §12.7)."""

    feed: bytes
    seq: int
    newest: int = 0
    lazy: bool = False

    def __post_init__(self) -> None:
        if not _is_feed(self.feed):
            raise _bad("clock feed must be a 32-byte key")
        if not (_is_count(self.seq) and _is_count(self.newest)):
            raise _bad("clock numbers must be 0..2^53-1")
        if type(self.lazy) is not bool:
            raise _bad("a clock item is lazy or not")


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    """``hello``: the versions the sender speaks and its agent. Received: the peer's integer versions
    (others are ignored, §12.1) and its agent cut to 100 characters; the version of the connection is
    ``Replication.version``."""

    NAME: ClassVar[str] = "hello"
    agent: str
    versions: tuple[int, ...] = PROTOCOL_VERSIONS

    def __post_init__(self) -> None:
        if type(self.agent) is not str:
            raise _bad("hello agent is text")
        versions = _as_tuple(self, "versions", self.versions)
        if not all(type(v) is int for v in versions):
            raise _bad("hello versions are integers")


@dataclass(frozen=True, slots=True, kw_only=True)
class Clock:
    """``clock``: the feeds the sender wants and how far it holds each (§12.3); sent in frames of at
    most ``MAX_CLOCK_ITEMS`` items, and as one empty clock when there are none."""

    NAME: ClassVar[str] = "clock"
    items: tuple[ClockItem, ...]

    def __post_init__(self) -> None:
        items = _as_tuple(self, "items", self.items)
        if not all(type(i) is ClockItem for i in items):
            raise _bad("clock items are ClockItem")


@dataclass(frozen=True, slots=True, kw_only=True)
class Entries:
    """``entries``: ``(raw, payload or None)`` of feeds the receiver wants, oldest first per feed;
    sent in as many frames as they need (``pack_entries``)."""

    NAME: ClassVar[str] = "entries"
    items: tuple[tuple[bytes, bytes | None], ...]

    def __post_init__(self) -> None:
        for row in _as_tuple(self, "items", self.items):
            if (
                type(row) is not tuple
                or len(row) != 2
                or type(row[0]) is not bytes
                or len(row[0]) > MAX_ENTRY_SIZE
                or not (row[1] is None or (type(row[1]) is bytes and len(row[1]) <= MAX_PAYLOAD_SIZE))
            ):
                raise _bad("entry item is [raw, payload or nil] within size limits")


@dataclass(frozen=True, slots=True, kw_only=True)
class Followers:
    """``followers`` (version 5): follower notes (§12.3): follow entries, with their payloads, that
    name the receiver's feed; at most ``MAX_FOLLOWER_NOTES``. Never stored as they come: the receiver
    checks each and fetches the whole log of its author."""

    NAME: ClassVar[str] = "followers"
    items: tuple[tuple[bytes, bytes], ...]

    def __post_init__(self) -> None:
        rows = _as_tuple(self, "items", self.items)
        if len(rows) > MAX_FOLLOWER_NOTES or not all(
            type(row) is tuple
            and len(row) == 2
            and type(row[0]) is bytes
            and len(row[0]) <= MAX_ENTRY_SIZE
            and type(row[1]) is bytes
            and len(row[1]) <= MAX_PAYLOAD_SIZE
            for row in rows
        ):
            raise _bad(f"followers is at most {MAX_FOLLOWER_NOTES} [raw, payload] within size limits")


@dataclass(frozen=True, slots=True, kw_only=True)
class Have:
    """``have`` (version 2): the sender holds these feeds up to these seqs (lazy notes, §12.7); sent in
    frames of at most ``MAX_HAVE_ITEMS`` items, and not at all when there are none."""

    NAME: ClassVar[str] = "have"
    items: tuple[tuple[bytes, int], ...]

    def __post_init__(self) -> None:
        for row in _as_tuple(self, "items", self.items):
            if type(row) is not tuple or len(row) != 2 or not _is_feed(row[0]) or not _is_count(row[1]):
                raise _bad("have item is [feed (32 bytes), seq 0..2^53-1]")


@dataclass(frozen=True, slots=True, kw_only=True)
class Peers:
    """``peers`` (version 2): ``(feed, "HOST:PORT")`` of other nodes (peer exchange, §12.8), unchecked.
    A sender leaves out addresses the receiver would refuse and sends the first ``MAX_PEER_ADDRESSES``."""

    NAME: ClassVar[str] = "peers"
    items: tuple[tuple[bytes, str], ...]

    def __post_init__(self) -> None:
        for row in _as_tuple(self, "items", self.items):
            if type(row) is not tuple or len(row) != 2 or not _is_feed(row[0]) or type(row[1]) is not str:
                raise _bad("peers item is [feed (32 bytes), address text]")


@dataclass(frozen=True, slots=True, kw_only=True)
class Members:
    """``members`` (version 2): signed swarm member records (§13.6), checked by the receiver. A sender
    leaves out records over ``MAX_MEMBER_RECORD_SIZE`` and splits the rest into frames that fit."""

    NAME: ClassVar[str] = "members"
    records: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not all(type(r) is bytes for r in _as_tuple(self, "records", self.records)):
            raise _bad("member records are bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class CaughtUp:
    """``caught_up``: the sender has sent everything the receiver's clocks asked for so far."""

    NAME: ClassVar[str] = "caught_up"


@dataclass(frozen=True, slots=True, kw_only=True)
class Forks:
    """``forks``: fork proofs (§7.2), checked when they are taken (§12.4)."""

    NAME: ClassVar[str] = "forks"
    proofs: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not all(type(p) is bytes for p in _as_tuple(self, "proofs", self.proofs)):
            raise _bad("fork proofs are bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class Bye:
    """``bye``: the sender closes the connection. A sender's ``reason`` is cut to 200 characters; a
    receiver keeps ``code`` (``"bye"`` when it is not text) to 50 and ``reason`` to 200."""

    NAME: ClassVar[str] = "bye"
    code: str
    reason: str = ""

    def __post_init__(self) -> None:
        if type(self.code) is not str or type(self.reason) is not str:
            raise _bad("bye code and reason are text")


Event = (
    Hello
    | Clock
    | Entries
    | Followers
    | Have
    | Peers
    | Members
    | CaughtUp
    | Forks
    | Bye
    | ReachEvent
    | BlobEvent
)

#: message name -> event class (spec §12.1; the version-3 messages are in ``reach_events``)
EVENT_TYPES: dict[str, type[Event]] = {
    **{
        cls.NAME: cls
        for cls in (Hello, Clock, Entries, Followers, Have, Peers, Members, CaughtUp, Forks, Bye)
    },
    **REACH_EVENTS,
    **BLOB_EVENTS,
}
