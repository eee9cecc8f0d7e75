"""The replication protocol spoken over an encrypted connection (spec/protocol.md §12).

Theory of operation. Every plaintext frame is one canonical msgpack array whose first item names the
message (``replication_wire``); each message is an event (``replication_events``), the same class in
both directions, as in h11. ``Replication`` is one connection seen from one node: ``send(event)``
returns the frames to encrypt and send, ``receive(frame)`` turns one decrypted frame into an event.
It never touches storage or the clock; the node answers the events.

There are two sides, ours and theirs, each with its own state, and one table for both (§12.2)::

    HELLO --hello--> ACTIVE --clock, entries, caught_up, forks--> ACTIVE
                            --have, peers, members (version 2)--> ACTIVE
                            --dial_me, dialed, reserve, reserved, incoming, refused,
                              punch, punch_go (version 3)--> ACTIVE
                            --blob_want, blob_have, blob_get, blob_data,
                              blob_none (version 4)--> ACTIVE
                            --connected--> SPLICED
                            --bye--> CLOSED
    HELLO --connect, accept--> RELAY

A relay connection (§12.10) starts with ``connect`` or ``accept`` instead of ``hello``: that side waits
in RELAY for the relay's ``connected`` (allowed only in answer to a side in RELAY), after which both
machines are done: the connection carries the two ends' own handshake, not replication messages.

The table does not know which side is which, so we are held to the rules we hold the peer to: a side
starts with ``hello`` and ends with ``bye``. The states meet in three rules the table does not hold:

1. **Version.** The version of the connection is the highest one in both sides' ``hello``; until the
   peer's has arrived there is none, so ``have``, ``peers``, ``members`` and lazy clock items cannot
   be sent (``version``), and under version 1 they are refused when received (``bad_message``); the
   same holds for the version-3 messages under versions 1 and 2, and for the version-4 ones (blob
   transfer, ``blob_transfer``) under versions 1 to 3.
   Version-1 messages may be sent as soon as our ``hello`` is out (both sides send theirs at once).
2. **Closing.** Once either side is CLOSED, nothing but our ``bye`` may be sent, and nothing is read
   (``closed``).
3. **Errors.** A ``LocalProtocolError`` from ``send`` or ``receive`` (a call the states do not allow)
   puts our side in ERROR, a ``RemoteProtocolError`` from ``receive`` (a frame that breaks §12.1 or
   the table) theirs. ERROR is final: every later ``send`` and ``receive`` raises
   ``LocalProtocolError`` (``replication_state``); the node drops the connection without a ``bye``
   (§12.5). An event whose constructor refuses its fields never reaches the machine.

Beside the states, the machine remembers what the peer holds of each feed it wants (``peer_wants``,
raised by its clocks, its ``have`` notes and the entries we send it) and which feeds it asked us to
push lazily (``peer_lazy``), so the node can push new entries to exactly the peers that lack them.
"""

from __future__ import annotations

import enum
from typing import NoReturn

from .blob_transfer import BLOB_EVENTS
from .entry import peek_position
from .errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from .reach_events import (
    Accept,
    Connect,
    Connected,
    Dialed,
    DialMe,
    Incoming,
    Punch,
    PunchGo,
    Refused,
    Reserve,
    Reserved,
)
from .replication_events import (
    EVENT_TYPES,
    MAX_ADDRESS_TEXT,
    MAX_CLOCK_ITEMS,
    MAX_HAVE_ITEMS,
    MAX_MEMBER_RECORD_SIZE,
    MAX_MEMBER_RECORDS,
    MAX_PEER_ADDRESSES,
    MAX_SEQ,
    PROTOCOL_VERSIONS,
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
from .replication_wire import event_from, fast_entries, frames_for, pack_entries, split_message

__all__ = [
    "MAX_ADDRESS_TEXT",
    "MAX_CLOCK_ITEMS",
    "MAX_HAVE_ITEMS",
    "MAX_MEMBER_RECORDS",
    "MAX_MEMBER_RECORD_SIZE",
    "MAX_PEER_ADDRESSES",
    "MAX_SEQ",
    "PROTOCOL_VERSIONS",
    "TRANSITIONS",
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
    "Replication",
    "State",
    "pack_entries",
]


class State(enum.StrEnum):
    """The state of one side of a connection (a ``str``, so it logs and compares as its name)."""

    HELLO = "HELLO"
    ACTIVE = "ACTIVE"
    CLOSED = "CLOSED"
    ERROR = "ERROR"
    RELAY = "RELAY"
    SPLICED = "SPLICED"


#: Messages that exist only in version 3 (spec §12.9-§12.11) and keep a side ACTIVE.
_VERSION_3: frozenset[type[Event]] = frozenset(
    {DialMe, Dialed, Reserve, Reserved, Incoming, Refused, Punch, PunchGo}
)
#: Messages that exist only in version 4 (spec §12.12): blob transfer.
_VERSION_4: frozenset[type[Event]] = frozenset(BLOB_EVENTS.values())
#: Messages that exist only in version 5 (spec §12.3): follower notes.
_VERSION_5: frozenset[type[Event]] = frozenset({Followers})
_ACTIVE_MESSAGES: tuple[type[Event], ...] = (
    Clock,
    Entries,
    CaughtUp,
    Forks,
    Have,
    Peers,
    Members,
    *sorted(_VERSION_3, key=lambda cls: cls.NAME),
    *sorted(_VERSION_4, key=lambda cls: cls.NAME),
    Followers,
)

#: spec/protocol.md §12.2: (state of a side, event it sends) -> its next state; the same for both sides.
#: A pair that is missing is a protocol error (ERROR is not listed: nothing leaves it).
TRANSITIONS: dict[State, dict[type[Event], State]] = {
    State.HELLO: {Hello: State.ACTIVE, Connect: State.RELAY, Accept: State.RELAY},
    State.ACTIVE: {
        **dict.fromkeys(_ACTIVE_MESSAGES, State.ACTIVE),
        Connected: State.SPLICED,
        Bye: State.CLOSED,
    },
    State.CLOSED: {},
    State.RELAY: {},
    State.SPLICED: {},
}

#: Messages that exist only in version 2 (spec §12.1); a lazy clock item is checked apart.
_VERSION_2: frozenset[type[Event]] = frozenset({Have, Peers, Members})


class Replication:
    """One connection's replication state (sans-IO): ``send(event) -> frames``, ``receive(frame) -> event``."""

    def __init__(self) -> None:
        self.our_state = State.HELLO
        self.their_state = State.HELLO
        #: the version of the connection: 0 until the peer's ``hello`` has arrived
        self.version = 0
        self._versions: tuple[int, ...] = PROTOCOL_VERSIONS  # what our hello says (or will say)
        self.peer_agent: str | None = None
        #: feeds the peer asked us to be lazy for: new entries go as ``have`` notes, not entries
        self.peer_lazy: set[bytes] = set()
        #: feed -> highest seq the peer holds (as far as we know), for feeds the peer wants
        self.peer_wants: dict[bytes, int] = {}
        self.peer_newest: dict[bytes, int] = {}
        self.received_entries = 0
        self.sent_entries = 0

    @property
    def state(self) -> State:
        """The connection's state: ERROR or CLOSED when either side is, ACTIVE when both are, else HELLO."""
        states = (self.our_state, self.their_state)
        for state in (State.ERROR, State.CLOSED, State.SPLICED, State.RELAY):
            if state in states:
                return state
        return State.ACTIVE if states == (State.ACTIVE, State.ACTIVE) else State.HELLO

    def peer_lacks(self, author: bytes, seq: int) -> bool:
        """True when the peer wants ``author``'s feed and (as far as we know) lacks ``seq``."""
        held = self.peer_wants.get(author)
        return held is not None and seq > held

    # -- sending ---------------------------------------------------------------------------------------
    def send(self, event: Event) -> list[bytes]:
        """The plaintext frames that carry ``event``, in order; always a list, which is empty when there
        is nothing to send (``Entries``, ``Have`` and ``Members`` with no items) and holds several
        frames when a message does not fit in one (§12.1). Raises ``LocalProtocolError`` (and our side
        goes to ERROR) when the event is not allowed now (module docstring)."""
        self._check_not_failed()
        try:
            next_state = self._check_send(event)
            frames = frames_for(event)
            if isinstance(event, Entries):
                self._sent_entries(event)
        except ProtocolError:
            self.our_state = State.ERROR
            raise
        self.our_state = next_state
        return frames

    def _check_send(self, event: Event) -> State:
        cls = type(event)
        if State.CLOSED in (self.our_state, self.their_state) and cls is not Bye:
            raise LocalProtocolError("connection is closed", code="closed")
        next_state = TRANSITIONS[self.our_state].get(cls)
        if next_state is None:
            raise LocalProtocolError(
                f"cannot send {cls.NAME} in state {self.our_state}", code="replication_state"
            )
        lazy = isinstance(event, Clock) and any(i.lazy for i in event.items)
        if (cls in _VERSION_2 or lazy) and self.version < 2:
            what = "lazy clock items need" if lazy else f"{cls.NAME} needs"
            raise LocalProtocolError(f"{what} protocol version 2", code="version")
        relay_answer = cls is Refused and self.their_state is State.RELAY  # no hello came: no version
        if cls in _VERSION_3 and self.version < 3 and not relay_answer:
            raise LocalProtocolError(f"{cls.NAME} needs protocol version 3", code="version")
        if cls in _VERSION_4 and self.version < 4:
            raise LocalProtocolError(f"{cls.NAME} needs protocol version 4", code="version")
        if cls in _VERSION_5 and self.version < 5:
            raise LocalProtocolError(f"{cls.NAME} needs protocol version 5", code="version")
        if cls is Connected and self.their_state is not State.RELAY:
            raise LocalProtocolError("connected answers connect or accept only", code="replication_state")
        if isinstance(event, Hello):
            if not event.versions or not set(event.versions) <= set(PROTOCOL_VERSIONS):
                raise LocalProtocolError(f"we speak versions {PROTOCOL_VERSIONS}", code="version")
            if self.version and self.version not in event.versions:
                raise LocalProtocolError(f"version {self.version} is already agreed", code="version")
            self._versions = event.versions
        return next_state

    def _sent_entries(self, event: Entries) -> None:
        # what we send the peer, it holds: never push it again (§12.4)
        for raw, _ in event.items:
            try:
                author, seq = peek_position(raw)
            except ProtocolError as exc:  # our caller's bytes, not the peer's
                raise LocalProtocolError(f"cannot send {exc.args[0]}", code=exc.code) from None
            held = self.peer_wants.get(author)
            if held is not None and seq > held:
                self.peer_wants[author] = seq
        self.sent_entries += len(event.items)

    # -- receiving -------------------------------------------------------------------------------------
    def receive(self, frame: bytes) -> Event:
        """Decode one plaintext frame into an event; raise ``RemoteProtocolError`` (and their side goes
        to ERROR) if it breaks §12, ``LocalProtocolError`` (and our side goes to ERROR) if nothing may
        be read now."""
        self._check_not_failed()
        if State.CLOSED in (self.our_state, self.their_state):
            self.our_state = State.ERROR
            raise LocalProtocolError("connection is closed", code="closed")
        try:
            event = self._next_event(frame)
        except RemoteProtocolError:
            self.their_state = State.ERROR
            raise
        self.their_state = TRANSITIONS[self.their_state][type(event)]
        return event

    def _next_event(self, frame: bytes) -> Event:
        if self.their_state is State.ACTIVE:
            fast = fast_entries(frame)
            if fast is not None:
                self.received_entries += len(fast.items)
                return fast
        name, args = split_message(frame)
        cls = EVENT_TYPES.get(name)
        if cls is None or cls not in TRANSITIONS[self.their_state]:
            if self.their_state is State.HELLO:
                raise RemoteProtocolError(f"expected hello, got {name!r}", code="bad_message")
            raise RemoteProtocolError(f"unexpected message {name!r}", code="bad_message")
        if (
            (cls in _VERSION_2 and self.version < 2)
            or (cls in _VERSION_3 and self.version < 3)
            or (cls in _VERSION_4 and self.version < 4)
            or (cls in _VERSION_5 and self.version < 5)
        ):
            # the version first, whatever the arguments (§12.1)
            raise RemoteProtocolError(f"unexpected message {name!r}", code="bad_message")
        if cls is Connected and self.our_state is not State.RELAY:
            raise RemoteProtocolError("connected without connect or accept", code="bad_message")
        event = event_from(cls, args, self.version)
        if isinstance(event, Hello):
            self._negotiate(event)
        elif isinstance(event, Clock):
            self._peer_clock(event)
        elif isinstance(event, Have):
            self._peer_has(event)
        elif isinstance(event, Entries):
            self.received_entries += len(event.items)
        return event

    def _negotiate(self, hello: Hello) -> None:
        common = [v for v in hello.versions if v in self._versions]
        if not common:
            raise RemoteProtocolError(
                f"no common protocol version (peer has {list(hello.versions)!r})", code="version"
            )
        self.version = max(common)
        self.peer_agent = hello.agent

    def _peer_clock(self, clock: Clock) -> None:
        for item in clock.items:  # a later clock adds to or updates earlier ones (§12.3)
            self.peer_wants[item.feed] = item.seq
            if item.lazy:
                self.peer_lazy.add(item.feed)
            else:
                self.peer_lazy.discard(item.feed)

    def _peer_has(self, have: Have) -> None:
        for feed, seq in have.items:
            held = self.peer_wants.get(feed)
            if held is not None and seq > held:
                self.peer_wants[feed] = seq  # it holds them: never push them to it (§12.7)

    def _check_not_failed(self) -> None:
        if State.ERROR in (self.our_state, self.their_state):
            _failed()


def _failed() -> NoReturn:
    raise LocalProtocolError("the connection failed: drop it", code="replication_state")
