"""The replication machine's states (spec/protocol.md §12.2): per-side states, the transition table,
sticky ERROR, two machines paired in memory, and arbitrary event and frame sequences (Hypothesis)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from tidings.protocol import (
    LocalProtocolError,
    Post,
    ProtocolError,
    RemoteProtocolError,
    SigningKey,
    create_entry,
    encode,
    encode_content,
    skip_target,
)
from tidings.protocol.replication import (
    TRANSITIONS,
    Bye,
    CaughtUp,
    Clock,
    ClockItem,
    Entries,
    Event,
    Forks,
    Have,
    Hello,
    Members,
    Peers,
    Replication,
    State,
)

F = b"\x00" * 32
G = b"\x11" * 32
KEY = SigningKey(bytes([7]) * 32)


def chain(n: int, size: int = 10) -> list[tuple[bytes, bytes | None]]:
    """``n`` entries of one feed; every third without its payload."""
    out: list[tuple[bytes, bytes | None]] = []
    by_seq: dict[int, Any] = {}
    for seq in range(1, n + 1):
        payload = encode_content(Post(text=("x" * size) + str(seq)))
        target = skip_target(seq)
        entry = create_entry(
            KEY,
            seq=seq,
            backlink=by_seq[seq - 1].hash if seq > 1 else None,
            skiplink=by_seq[target].hash if target else None,
            timestamp=1000 + seq,
            payload=payload,
        )
        by_seq[seq] = entry
        out.append((entry.raw, payload if seq % 3 else None))
    return out


ENTRY = chain(1)[0]


# -- wire bytes ------------------------------------------------------------------------------------------


def test_frames_are_those_of_the_per_message_methods() -> None:
    """Every sender rule of §12.1 at once (splitting, leaving out, cutting); the digest was taken from
    the per-message methods (``hello()``, ``clock()``, ...) that ``send`` replaced."""
    a, b = Replication(), Replication()
    # the hello of a version-2 node: the digest was taken before version 3 (§12.9) was added
    frames = a.send(Hello(agent="tidings/0.1", versions=(1, 2)))
    a.receive(b.send(Hello(agent="b"))[0])
    frames += a.send(
        Clock(items=[ClockItem(i.to_bytes(32, "big"), i, i % 3, i % 2 == 0) for i in range(2500)])
    )
    frames += a.send(Clock(items=[]))
    frames += a.send(Entries(items=chain(40, 8000)))
    frames += a.send(Have(items=[(i.to_bytes(32, "big"), i * 7) for i in range(2005)]))
    frames += a.send(Peers(items=[(i.to_bytes(32, "big"), ("h" * (i * 3)) + ":1") for i in range(60)]))
    frames += a.send(Members(records=[bytes([i % 256]) * (i * 5 % 1100) for i in range(1, 700)]))
    frames += a.send(CaughtUp())
    frames += a.send(Forks(proofs=[b"p" * 300, b"q" * 10]))
    frames += a.send(Bye(code="done", reason="r" * 300))
    digest = hashlib.sha256(b"".join(len(f).to_bytes(4, "big") + f for f in frames)).hexdigest()
    assert [len(f) for f in frames[:5]] == [22, 39126, 39510, 19760, 8]
    assert len(frames) == 21
    assert digest == "c2df6a34f0b7feedff78c99748aec74969c224f9867377f453a83145c409bf3b"


# -- the transition table, sending -------------------------------------------------------------------------


def machine(config: str) -> Replication:
    """A machine in a named configuration (our state / their state)."""
    rep = Replication()
    if config == "fresh":  # HELLO / HELLO
        return rep
    rep.send(Hello(agent="us"))
    if config == "sent_hello":  # ACTIVE / HELLO: no version yet
        return rep
    if config == "v1":  # ACTIVE / ACTIVE under version 1
        rep.receive(encode(["hello", [1], "old"]))
        return rep
    rep.receive(encode(["hello", [1, 2], "peer"]))
    if config == "v2":  # ACTIVE / ACTIVE under version 2
        return rep
    if config == "they_closed":  # ACTIVE / CLOSED
        rep.receive(encode(["bye", "done", ""]))
        return rep
    assert config == "we_closed"  # CLOSED / ACTIVE
    rep.send(Bye(code="done"))
    return rep


STATES = {
    "fresh": (State.HELLO, State.HELLO, State.HELLO),
    "sent_hello": (State.ACTIVE, State.HELLO, State.HELLO),
    "v1": (State.ACTIVE, State.ACTIVE, State.ACTIVE),
    "v2": (State.ACTIVE, State.ACTIVE, State.ACTIVE),
    "they_closed": (State.ACTIVE, State.CLOSED, State.CLOSED),
    "we_closed": (State.CLOSED, State.ACTIVE, State.CLOSED),
}

EVENTS: dict[str, Event] = {
    "hello": Hello(agent="x"),
    "clock": Clock(items=(ClockItem(F, 1),)),
    "lazy_clock": Clock(items=(ClockItem(F, 1, 0, True),)),
    "entries": Entries(items=(ENTRY,)),
    "have": Have(items=((F, 1),)),
    "peers": Peers(items=((F, "192.0.2.1:7433"),)),
    "members": Members(records=(b"record",)),
    "caught_up": CaughtUp(),
    "forks": Forks(proofs=(b"proof",)),
    "bye": Bye(code="done"),
}

_V1_OK = {"clock": None, "entries": None, "caught_up": None, "forks": None, "bye": None}
_NEEDS_V2 = {"lazy_clock": "version", "have": "version", "peers": "version", "members": "version"}
_OUT_OF_ORDER = "replication_state"

#: config -> event -> None (sent) or the code of the LocalProtocolError (spec §12.2)
SEND_EXPECTED: dict[str, dict[str, str | None]] = {
    "fresh": {name: (None if name == "hello" else _OUT_OF_ORDER) for name in EVENTS},
    "sent_hello": {"hello": _OUT_OF_ORDER, **_V1_OK, **_NEEDS_V2},
    "v1": {"hello": _OUT_OF_ORDER, **_V1_OK, **_NEEDS_V2},
    "v2": {name: (_OUT_OF_ORDER if name == "hello" else None) for name in EVENTS},
    "they_closed": {name: (None if name == "bye" else "closed") for name in EVENTS},
    "we_closed": {name: (_OUT_OF_ORDER if name == "bye" else "closed") for name in EVENTS},
}


def test_configurations_are_in_their_states() -> None:
    for config, (ours, theirs, combined) in STATES.items():
        rep = machine(config)
        assert (rep.our_state, rep.their_state, rep.state) == (ours, theirs, combined), config
    assert machine("v1").version == 1 and machine("v2").version == 2 and machine("sent_hello").version == 0


def assert_failed(rep: Replication) -> None:
    """ERROR is sticky: every later call raises ``LocalProtocolError`` (``replication_state``)."""
    assert rep.state is State.ERROR
    for call in (lambda: rep.send(CaughtUp()), lambda: rep.send(Bye(code="x")), lambda: rep.receive(b"")):
        with pytest.raises(LocalProtocolError) as info:
            call()
        assert info.value.code == "replication_state"
    assert rep.state is State.ERROR


@pytest.mark.parametrize("config", list(SEND_EXPECTED))
@pytest.mark.parametrize("name", list(EVENTS))
def test_sending_follows_the_table(config: str, name: str) -> None:
    rep = machine(config)
    before = rep.our_state
    expected = SEND_EXPECTED[config][name]
    if expected is None:
        frames = rep.send(EVENTS[name])
        assert frames and all(isinstance(f, bytes) for f in frames)
        assert rep.our_state is TRANSITIONS[before][type(EVENTS[name])]
        return
    with pytest.raises(LocalProtocolError) as info:
        rep.send(EVENTS[name])
    assert info.value.code == expected
    assert rep.our_state is State.ERROR
    assert_failed(rep)


def test_a_hello_we_cannot_keep_is_refused() -> None:
    with pytest.raises(LocalProtocolError) as info:
        Replication().send(Hello(agent="x", versions=(6,)))
    assert info.value.code == "version"
    rep = Replication()
    rep.receive(encode(["hello", [1, 2], "peer"]))  # version 2 agreed before our hello
    with pytest.raises(LocalProtocolError) as info:
        rep.send(Hello(agent="x", versions=(1,)))
    assert info.value.code == "version"
    assert_failed(rep)


# -- the transition table, receiving -----------------------------------------------------------------------

F1 = [[F, 1]]
FRAMES: dict[str, bytes] = {
    "hello": encode(["hello", [1, 2], "peer"]),
    "hello_v9": encode(["hello", [9], "future"]),
    "clock": encode(["clock", [[F, 1, 0]]]),
    "lazy_clock": encode(["clock", [[F, 1, 0, True]]]),
    "entries": encode(["entries", [[ENTRY[0], ENTRY[1]]]]),
    "have": encode(["have", F1]),
    "peers": encode(["peers", [[F, "192.0.2.1:7433"]]]),
    "members": encode(["members", [b"record"]]),
    "caught_up": encode(["caught_up"]),
    "forks": encode(["forks", [b"proof"]]),
    "bye": encode(["bye", "done", "x"]),
    "unknown": encode(["whatever"]),
    "garbage": b"\xc1",
}

_BAD = ("remote", "bad_message")
_CLOSED = ("local", "closed")
_THEIR_HELLO = {name: _BAD for name in FRAMES} | {"hello": None, "hello_v9": ("remote", "version")}
_V2 = {name: None for name in FRAMES} | {"hello": _BAD, "hello_v9": _BAD, "unknown": _BAD, "garbage": _BAD}
_V1 = _V2 | {"lazy_clock": _BAD, "have": _BAD, "peers": _BAD, "members": _BAD}

#: config -> frame -> None (an event) or (who is at fault, code) (spec §12.2)
RECEIVE_EXPECTED: dict[str, dict[str, tuple[str, str] | None]] = {
    "fresh": _THEIR_HELLO,
    "sent_hello": _THEIR_HELLO,
    "v1": _V1,
    "v2": _V2,
    "they_closed": {name: _CLOSED for name in FRAMES},
    "we_closed": {name: _CLOSED for name in FRAMES},
}


@pytest.mark.parametrize("config", list(RECEIVE_EXPECTED))
@pytest.mark.parametrize("name", list(FRAMES))
def test_receiving_follows_the_table(config: str, name: str) -> None:
    rep = machine(config)
    ours, theirs = rep.our_state, rep.their_state
    expected = RECEIVE_EXPECTED[config][name]
    if expected is None:
        got = rep.receive(FRAMES[name])
        assert type(got) is type(EVENTS[name])
        assert rep.their_state is TRANSITIONS[theirs][type(got)]
        assert rep.our_state is ours
        return
    who, code = expected
    with pytest.raises(RemoteProtocolError if who == "remote" else LocalProtocolError) as info:
        rep.receive(FRAMES[name])
    assert info.value.code == code
    assert isinstance(info.value, RemoteProtocolError) == (who == "remote")
    if who == "remote":
        assert (rep.our_state, rep.their_state) == (ours, State.ERROR)
    else:
        assert (rep.our_state, rep.their_state) == (State.ERROR, theirs)
    assert_failed(rep)


def test_bye_closes_their_side_and_then_only_our_bye_goes_out() -> None:
    rep = machine("v2")
    assert rep.receive(encode(["bye", "x" * 60, 7])) == Bye(code="x" * 50, reason="")
    assert (rep.our_state, rep.their_state, rep.state) == (State.ACTIVE, State.CLOSED, State.CLOSED)
    assert rep.send(Bye(code="done", reason="r" * 250)) == [encode(["bye", "done", "r" * 200])]
    assert (rep.our_state, rep.their_state) == (State.CLOSED, State.CLOSED)


# -- two machines paired in memory ------------------------------------------------------------------------


class Link:
    """Two machines and the frames in flight between them (in order, as over one connection)."""

    def __init__(self, a: Replication, b: Replication) -> None:
        self.ends = {"a": a, "b": b}
        self.flight: dict[str, list[bytes]] = {"a": [], "b": []}  # frames on their way to a / b

    def send(self, side: str, event: Event) -> list[bytes]:
        frames = self.ends[side].send(event)
        self.flight["b" if side == "a" else "a"].extend(frames)
        return frames

    def deliver(self, side: str) -> list[Event]:
        frames, self.flight[side] = self.flight[side], []
        return [self.ends[side].receive(f) for f in frames]


def test_a_whole_exchange_between_two_machines() -> None:
    a, b = Replication(), Replication()
    link = Link(a, b)
    link.send("a", Hello(agent="a"))
    link.send("b", Hello(agent="b"))
    # a's first clock is out before b's hello has arrived: version-1 messages may go after our hello
    link.send("a", Clock(items=[ClockItem(KEY.public_key, 0), ClockItem(G, 4, 0)]))
    assert (a.our_state, a.their_state) == (State.ACTIVE, State.HELLO)
    assert link.deliver("b") == [
        Hello(agent="a"),
        Clock(items=(ClockItem(KEY.public_key, 0), ClockItem(G, 4, 0))),
    ]
    assert link.deliver("a") == [Hello(agent="b")]
    assert (a.version, b.version, a.state, b.state) == (5, 5, State.ACTIVE, State.ACTIVE)
    assert (a.peer_agent, b.peer_agent) == ("b", "a")
    assert b.peer_wants == {KEY.public_key: 0, G: 4} and b.peer_lazy == set()

    # b serves a's clock, then names G lazily and announces what it holds
    entries = chain(30, 3000)
    frames = link.send("b", Entries(items=entries))
    assert len(frames) > 1
    link.send("b", CaughtUp())
    link.send("b", Clock(items=[ClockItem(G, 9, 0, True)]))
    link.send("b", Have(items=[(G, 12)]))
    got = link.deliver("a")
    assert sum((e.items for e in got if isinstance(e, Entries)), ()) == tuple(entries)
    assert [type(e) for e in got[-3:]] == [CaughtUp, Clock, Have]
    assert a.peer_lazy == {G} and a.peer_wants == {G: 12}  # the clock said 9, the note 12
    assert b.peer_wants[KEY.public_key] == 30 and not b.peer_lacks(KEY.public_key, 30)
    assert (a.received_entries, b.sent_entries) == (30, 30)

    # a answers with its own news, peer exchange and member records, then leaves
    link.send("a", Have(items=[(G, 13)]))
    link.send("a", Peers(items=[(F, "192.0.2.7:7433"), (G, "x" * 101)]))  # too long: left out
    link.send("a", Members(records=[b"m" * 10, b"n" * 2000]))  # over 1024 bytes: left out
    link.send("a", Forks(proofs=[b"proof"]))
    link.send("a", Bye(code="done", reason="sync complete"))
    assert a.state is State.CLOSED
    assert link.deliver("b") == [
        Have(items=((G, 13),)),
        Peers(items=((F, "192.0.2.7:7433"),)),
        Members(records=(b"m" * 10,)),
        Forks(proofs=(b"proof",)),
        Bye(code="done", reason="sync complete"),
    ]
    assert b.peer_wants == {KEY.public_key: 30, G: 13}  # have raises what b knows a holds
    assert (b.our_state, b.their_state) == (State.ACTIVE, State.CLOSED)
    link.send("b", Bye(code="done", reason=""))
    assert (b.state, a.state) == (State.CLOSED, State.CLOSED)
    with pytest.raises(LocalProtocolError) as info:
        link.deliver("a")  # a has closed: it reads nothing more
    assert info.value.code == "closed"


def test_a_version_1_node_and_a_current_one_agree_on_version_1() -> None:
    old, new = Replication(), Replication()
    link = Link(old, new)
    link.send("a", Hello(agent="old", versions=(1,)))
    link.send("b", Hello(agent="new"))
    link.deliver("a")
    link.deliver("b")
    assert (old.version, new.version) == (1, 1)
    for rep in (old, new):
        with pytest.raises(LocalProtocolError) as info:
            rep.send(Have(items=[(F, 1)]))
        assert info.value.code == "version"


# -- event constructors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: Hello(agent=b"x"),  # type: ignore[arg-type]
        lambda: Hello(agent="x", versions=(1, True)),
        lambda: Hello(agent="x", versions=2),  # type: ignore[arg-type]
        lambda: ClockItem(F[:31], 1),
        lambda: ClockItem(F, -1),
        lambda: ClockItem(F, 1, 2**53),
        lambda: ClockItem(F, 1, 0, 1),  # type: ignore[arg-type]
        lambda: Clock(items=[(F, 1, 0)]),  # type: ignore[list-item]
        lambda: Entries(items=[(b"x" * 257, None)]),
        lambda: Entries(items=[(b"x", b"y" * 16385)]),
        lambda: Entries(items=[("x", None)]),  # type: ignore[list-item]
        lambda: Have(items=[(F, True)]),
        lambda: Peers(items=[(F, b"192.0.2.1:1")]),  # type: ignore[list-item]
        lambda: Members(records=["r"]),  # type: ignore[list-item]
        lambda: Forks(proofs=[1]),  # type: ignore[list-item]
        lambda: Bye(code=None),  # type: ignore[arg-type]
    ],
)
def test_invalid_events_cannot_be_made(make: Any) -> None:
    with pytest.raises(LocalProtocolError) as info:
        make()
    assert info.value.code == "bad_message"


def test_events_are_frozen_keyword_only_and_keep_lists_as_tuples() -> None:
    event = Clock(items=[ClockItem(F, 1)])
    assert event.items == (ClockItem(F, 1),) and event == Clock(items=(ClockItem(F, 1),))
    with pytest.raises(AttributeError):
        event.items = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        Bye("done")  # type: ignore[misc]


# -- arbitrary sequences (Hypothesis) ----------------------------------------------------------------------

_FRAME_CHOICES = [*FRAMES.values(), encode(["clock", "nope"]), encode(["entries", [[b"x", 1]]])]
_EVENT_CHOICES = list(EVENTS.values())
_send = st.tuples(st.just("send"), st.sampled_from("ab"), st.sampled_from(_EVENT_CHOICES))
_deliver = st.tuples(st.just("deliver"), st.sampled_from("ab"), st.none())
actions = st.lists(
    st.one_of(
        _send,
        _deliver,
        _send,
        _deliver,  # listed twice: most steps follow the protocol, so runs get far into it
        st.tuples(st.just("inject"), st.sampled_from("ab"), st.sampled_from(_FRAME_CHOICES)),
        st.tuples(st.just("garbage"), st.sampled_from("ab"), st.binary(max_size=40)),
    ),
    max_size=30,
)


def check_step(rep: Replication, before: tuple[State, State], exc: ProtocolError | None, kind: str) -> None:
    """The machine is always in a defined state, moves only along the table, and errors are sticky."""
    ours, theirs = rep.our_state, rep.their_state
    assert ours in State and theirs in State
    if State.ERROR in before:
        assert (ours, theirs) == before
        assert isinstance(exc, LocalProtocolError) and exc.code == "replication_state"
        return
    if exc is None:
        changed_ours, changed_theirs = ours is not before[0], theirs is not before[1]
        assert not (changed_ours and changed_theirs)
        assert ours in TRANSITIONS[before[0]].values() or not changed_ours
        assert theirs in TRANSITIONS[before[1]].values() or not changed_theirs
        assert State.ERROR not in (ours, theirs)
        return
    if isinstance(exc, RemoteProtocolError):
        assert kind != "send"
        assert (ours, theirs) == (before[0], State.ERROR)
    else:
        assert isinstance(exc, LocalProtocolError)
        assert (ours, theirs) == (State.ERROR, before[1])
    assert rep.state is State.ERROR


@settings(max_examples=400, deadline=None)
@given(st.booleans(), actions)
def test_arbitrary_sequences_never_leave_a_machine_undefined(
    greet: bool, steps: list[tuple[str, str, Any]]
) -> None:
    link = Link(Replication(), Replication())
    if greet:  # start from ACTIVE / ACTIVE
        link.send("a", Hello(agent="a"))
        link.send("b", Hello(agent="b"))
        link.deliver("a")
        link.deliver("b")
    for kind, side, arg in steps:
        rep = link.ends[side]
        before = (rep.our_state, rep.their_state)
        exc: ProtocolError | None = None
        try:
            if kind == "send":
                link.send(side, arg)
            elif kind == "deliver":  # the next frame the other machine sent
                if not link.flight[side]:
                    continue
                rep.receive(link.flight[side].pop(0))
            else:
                rep.receive(arg)
        except ProtocolError as error:
            exc = error
        check_step(rep, before, exc, kind)
        event(f"reached {rep.our_state}/{rep.their_state}")
