"""The replication protocol spoken over an encrypted connection (spec/protocol.md §12).

Theory of operation. Every plaintext frame is one canonical msgpack array whose first item names the
message. Both sides start by sending ``hello`` (supported versions, agent); the first frame each side
receives must be a ``hello`` with a version in common, else the connection ends (state HELLO -> ACTIVE,
or CLOSED). In ACTIVE either side may send, in any order:

- ``clock`` [[feed, seq, newest], ...]: feeds the sender wants and the highest seq it holds of each
  (0: none). ``newest > 0`` asks for at most the newest ``newest`` entries (partial sync). A later clock
  adds to or updates earlier ones.
- ``entries`` [[raw, payload or nil], ...]: entries of feeds the receiver wants, oldest first per feed.
- ``caught_up``: the sender has sent everything the receiver's clocks asked for so far.
- ``forks`` [proof, ...]: fork proofs (spec §7).
- ``bye`` code, reason: the sender closes the connection (state CLOSED).

The machine never touches storage: it turns frames into events (``PeerWants``, ``EntriesReceived``,
...) and the node answers them; it remembers what the peer holds of each feed it wants, so the node
can push new entries live to exactly the peers that lack them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from .encoding import decode, encode
from .entry import MAX_ENTRY_SIZE, MAX_PAYLOAD_SIZE, peek_position
from .errors import DecodeError, LocalProtocolError, RemoteProtocolError
from .handshake import MAX_PLAINTEXT
from .identity import KEY_SIZE

__all__ = [
    "PROTOCOL_VERSIONS",
    "ClockItem",
    "Closed",
    "EntriesReceived",
    "ForksReceived",
    "MembersOffered",
    "PeerCaughtUp",
    "PeerHas",
    "PeerHello",
    "PeerWants",
    "PeersOffered",
    "Replication",
    "pack_entries",
]

PROTOCOL_VERSIONS = (1, 2)
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
#: fixarray(2) + fixstr(7) "entries": how every entries frame starts.
_ENTRIES_HEAD = b"\x92\xa7entries"


@dataclass(frozen=True, slots=True)
class ClockItem:
    """``[feed, seq, newest]``, and in version 2 ``[feed, seq, newest, lazy]`` (spec §12.7)."""

    feed: bytes
    seq: int
    newest: int = 0
    lazy: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.feed, bytes) or len(self.feed) != KEY_SIZE:
            raise RemoteProtocolError("clock feed must be a 32-byte key", code="bad_message")
        for value in (self.seq, self.newest):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SEQ:
                raise RemoteProtocolError("clock numbers must be 0..2^53-1", code="bad_message")


@dataclass(frozen=True, slots=True)
class PeerHello:
    version: int
    agent: str


@dataclass(frozen=True, slots=True)
class PeerWants:
    items: tuple[ClockItem, ...]


@dataclass(frozen=True, slots=True)
class PeerHas:
    """``have``: the peer holds these feeds up to these seqs (lazy notes, version 2)."""

    items: tuple[tuple[bytes, int], ...]


@dataclass(frozen=True, slots=True)
class PeersOffered:
    """``peers``: addresses of other nodes the peer knows (peer exchange, version 2); unchecked."""

    items: tuple[tuple[bytes, str], ...]


@dataclass(frozen=True, slots=True)
class MembersOffered:
    """``members``: signed swarm member records (version 2); checked by the receiver."""

    records: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class EntriesReceived:
    items: tuple[tuple[bytes, bytes | None], ...]


@dataclass(frozen=True, slots=True)
class PeerCaughtUp:
    pass


@dataclass(frozen=True, slots=True)
class ForksReceived:
    proofs: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Closed:
    code: str
    reason: str


Event = (
    PeerHello
    | PeerWants
    | PeerHas
    | PeersOffered
    | MembersOffered
    | EntriesReceived
    | PeerCaughtUp
    | ForksReceived
    | Closed
)


def _bad(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, code="bad_message")


def _pack_entries_message(batch: list[list[Any]]) -> bytes:
    # Only bytes and nil inside: msgpack's packing is the canonical form (spec §2.1), no walk needed.
    data: bytes = msgpack.packb(["entries", batch], use_bin_type=True)
    return data


def _fast_entries(frame: bytes) -> list[Any] | None:
    """Hot path for ``entries`` frames: unpack once; the caller checks item types, then canonical form.

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
    return message


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


class Replication:
    """Per-connection replication state (sans-IO)."""

    def __init__(self, *, agent: str = "tidings") -> None:
        self.agent = agent
        self.state = "HELLO"
        self.version = 0
        self.peer_agent: str | None = None
        #: feeds the peer asked us to be lazy for: new entries go as ``have`` notes, not entries
        self.peer_lazy: set[bytes] = set()
        #: feed -> highest seq the peer holds (as far as we know), for feeds the peer wants
        self.peer_wants: dict[bytes, int] = {}
        self.peer_newest: dict[bytes, int] = {}
        self.received_entries = 0
        self.sent_entries = 0

    # -- sending ---------------------------------------------------------------------------------------
    def hello(self) -> bytes:
        return encode(["hello", list(PROTOCOL_VERSIONS), self.agent])

    def clock(self, items: Sequence[ClockItem]) -> list[bytes]:
        """Frames announcing what we want and hold (split to fit)."""
        self._require_open()
        if any(i.lazy for i in items) and self.version < 2:
            raise LocalProtocolError("lazy clock items need protocol version 2", code="version")
        rows: list[list[Any]] = [
            [i.feed, i.seq, i.newest, True] if i.lazy else [i.feed, i.seq, i.newest] for i in items
        ]
        return [
            encode(["clock", rows[i : i + MAX_CLOCK_ITEMS]])
            for i in range(0, max(len(rows), 1), MAX_CLOCK_ITEMS)
        ]

    def entries(self, items: Sequence[tuple[bytes, bytes | None]]) -> list[bytes]:
        """Frames carrying entries; advances what we know the peer holds."""
        self._require_open()
        for raw, _ in items:
            author, seq = peek_position(raw)
            held = self.peer_wants.get(author)
            if held is not None and seq > held:
                self.peer_wants[author] = seq
        self.sent_entries += len(items)
        return pack_entries(items)

    def have(self, items: Sequence[tuple[bytes, int]]) -> list[bytes]:
        """Lazy notes (version 2): we hold these feeds up to these seqs."""
        self._require_v2("have")
        rows = [[feed, seq] for feed, seq in items]
        return [encode(["have", rows[i : i + MAX_HAVE_ITEMS]]) for i in range(0, len(rows), MAX_HAVE_ITEMS)]

    def peers(self, items: Sequence[tuple[bytes, str]]) -> bytes:
        """Peer exchange (version 2): at most ``MAX_PEER_ADDRESSES`` ``(feed, "HOST:PORT")``; addresses
        longer than ``MAX_ADDRESS_TEXT`` (the receiver would refuse the message) are left out."""
        self._require_v2("peers")
        rows = [[feed, address] for feed, address in items if 0 < len(address) <= MAX_ADDRESS_TEXT]
        return encode(["peers", rows[:MAX_PEER_ADDRESSES]])

    def members(self, records: Sequence[bytes]) -> list[bytes]:
        """Swarm member records (version 2): at most ``MAX_MEMBER_RECORDS`` a message, and as many as fit
        in a frame (``MAX_PLAINTEXT``); records over ``MAX_MEMBER_RECORD_SIZE`` are left out."""
        self._require_v2("members")
        frames: list[bytes] = []
        batch: list[bytes] = []
        size = 16
        for record in records:
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

    def _require_v2(self, name: str) -> None:
        self._require_open()
        if self.version < 2:
            raise LocalProtocolError(f"{name} needs protocol version 2", code="version")

    def caught_up(self) -> bytes:
        self._require_open()
        return encode(["caught_up"])

    def forks(self, proofs: Sequence[bytes]) -> bytes:
        self._require_open()
        return encode(["forks", list(proofs)])

    def bye(self, code: str, reason: str) -> bytes:
        self.state = "CLOSED"
        return encode(["bye", code, reason[:200]])

    def peer_lacks(self, author: bytes, seq: int) -> bool:
        """True when the peer wants ``author``'s feed and (as far as we know) lacks ``seq``."""
        held = self.peer_wants.get(author)
        return held is not None and seq > held

    def _require_open(self) -> None:
        if self.state != "ACTIVE" and self.state != "HELLO":
            raise LocalProtocolError("connection is closed", code="closed")

    # -- receiving -------------------------------------------------------------------------------------
    def receive(self, frame: bytes) -> Event:
        """Decode one plaintext frame into an event; raise ``RemoteProtocolError`` if it breaks §12."""
        if self.state == "CLOSED":
            raise LocalProtocolError("connection is closed", code="closed")
        fast = _fast_entries(frame) if self.state == "ACTIVE" else None
        if fast is not None:
            event = self._on_entries(fast[1:])  # checks every item is [bytes, bytes or nil]
            if _pack_entries_message(fast[1]) != frame:
                raise _bad("undecodable frame: not the canonical encoding")
            return event
        try:
            message = decode(frame, max_size=MAX_PLAINTEXT)
        except DecodeError as exc:
            raise _bad(f"undecodable frame: {exc.args[0]}") from None
        if not isinstance(message, list) or not message or not isinstance(message[0], str):
            raise _bad("a message is an array starting with its name")
        name, args = message[0], message[1:]
        if self.state == "HELLO":
            if name != "hello":
                raise _bad(f"expected hello, got {name!r}")
            return self._on_hello(args)
        handler = _HANDLERS.get(name)
        if handler is None or name == "hello":
            raise _bad(f"unexpected message {name!r}")
        return handler(self, args)

    def _on_hello(self, args: list[Any]) -> Event:
        if len(args) != 2 or not isinstance(args[0], list) or not isinstance(args[1], str):
            raise _bad("hello is [versions, agent]")
        common = [
            v for v in args[0] if isinstance(v, int) and not isinstance(v, bool) and v in PROTOCOL_VERSIONS
        ]
        if not common:
            raise RemoteProtocolError(f"no common protocol version (peer has {args[0]!r})", code="version")
        self.state = "ACTIVE"
        self.version = max(common)
        self.peer_agent = args[1][:100]
        return PeerHello(self.version, self.peer_agent)

    def _on_clock(self, args: list[Any]) -> Event:
        if len(args) != 1 or not isinstance(args[0], list) or len(args[0]) > MAX_CLOCK_ITEMS:
            raise _bad("clock is [[feed, seq, newest], ...]")
        items = []
        arity = (3, 4) if self.version >= 2 else (3,)
        for row in args[0]:
            if not isinstance(row, list) or len(row) not in arity:
                raise _bad(
                    "clock item is [feed, seq, newest]" + (" or [feed, seq, newest, lazy]" * (len(arity) - 1))
                )
            if len(row) == 4 and row[3] is not True:
                raise _bad("the fourth element of a clock item is true (lazy) or absent")
            item = ClockItem(row[0], row[1], row[2], len(row) == 4)
            self.peer_wants[item.feed] = item.seq
            if item.lazy:
                self.peer_lazy.add(item.feed)
            else:
                self.peer_lazy.discard(item.feed)
            items.append(item)
        return PeerWants(tuple(items))

    def _on_have(self, args: list[Any]) -> Event:
        if self.version < 2:
            raise _bad("unexpected message 'have'")
        if len(args) != 1 or not isinstance(args[0], list) or len(args[0]) > MAX_HAVE_ITEMS:
            raise _bad("have is [[feed, seq], ...]")
        items = []
        for row in args[0]:
            if not isinstance(row, list) or len(row) != 2:
                raise _bad("have item is [feed, seq]")
            item = ClockItem(row[0], row[1])  # the same checks as a clock item's feed and seq
            held = self.peer_wants.get(item.feed)
            if held is not None and item.seq > held:
                self.peer_wants[item.feed] = item.seq  # it holds them: never push them to it
            items.append((item.feed, item.seq))
        return PeerHas(tuple(items))

    def _on_peers(self, args: list[Any]) -> Event:
        if self.version < 2:
            raise _bad("unexpected message 'peers'")
        if len(args) != 1 or not isinstance(args[0], list) or len(args[0]) > MAX_PEER_ADDRESSES:
            raise _bad(f"peers is at most {MAX_PEER_ADDRESSES} [feed, address]")
        items = []
        for row in args[0]:
            if (
                not isinstance(row, list)
                or len(row) != 2
                or not isinstance(row[0], bytes)
                or len(row[0]) != KEY_SIZE
                or not isinstance(row[1], str)
                or not 0 < len(row[1]) <= MAX_ADDRESS_TEXT
            ):
                raise _bad("peers item is [feed (32 bytes), address text]")
            items.append((row[0], row[1]))
        return PeersOffered(tuple(items))

    def _on_members(self, args: list[Any]) -> Event:
        if self.version < 2:
            raise _bad("unexpected message 'members'")
        if (
            len(args) != 1
            or not isinstance(args[0], list)
            or len(args[0]) > MAX_MEMBER_RECORDS
            or not all(isinstance(r, bytes) and len(r) <= MAX_MEMBER_RECORD_SIZE for r in args[0])
        ):
            raise _bad(
                f"members is at most {MAX_MEMBER_RECORDS} records of at most {MAX_MEMBER_RECORD_SIZE} bytes"
            )
        return MembersOffered(tuple(args[0]))

    def _on_entries(self, args: list[Any]) -> Event:
        if len(args) != 1 or not isinstance(args[0], list):
            raise _bad("entries is [[raw, payload], ...]")
        items = []
        for row in args[0]:
            if (
                not isinstance(row, list)
                or len(row) != 2
                or not isinstance(row[0], bytes)
                or len(row[0]) > MAX_ENTRY_SIZE
                or not (row[1] is None or (isinstance(row[1], bytes) and len(row[1]) <= MAX_PAYLOAD_SIZE))
            ):
                raise _bad("entry item is [raw, payload or nil] within size limits")
            items.append((row[0], row[1]))
        self.received_entries += len(items)
        return EntriesReceived(tuple(items))

    def _on_caught_up(self, args: list[Any]) -> Event:
        if args:
            raise _bad("caught_up has no arguments")
        return PeerCaughtUp()

    def _on_forks(self, args: list[Any]) -> Event:
        if len(args) != 1 or not isinstance(args[0], list) or not all(isinstance(p, bytes) for p in args[0]):
            raise _bad("forks is [proof, ...]")
        return ForksReceived(tuple(args[0]))

    def _on_bye(self, args: list[Any]) -> Event:
        self.state = "CLOSED"
        code = args[0] if args and isinstance(args[0], str) else "bye"
        reason = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
        return Closed(code[:50], reason[:200])


_HANDLERS = {
    "members": Replication._on_members,
    "clock": Replication._on_clock,
    "have": Replication._on_have,
    "peers": Replication._on_peers,
    "entries": Replication._on_entries,
    "caught_up": Replication._on_caught_up,
    "forks": Replication._on_forks,
    "bye": Replication._on_bye,
}
