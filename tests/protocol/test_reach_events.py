"""Protocol version 3 messages (spec §12.1, §12.9-§12.11): wire form, argument rules, version rules and
the relay connection's states."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tidings.protocol.encoding import encode
from tidings.protocol.errors import LocalProtocolError, RemoteProtocolError
from tidings.protocol.reach_events import (
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
from tidings.protocol.replication import Clock, Hello, Replication, State

from tests.support.machines import assert_round_trip, pair

F = bytes(range(32))
N = bytes(range(16))

EXAMPLES = [
    (DialMe(nonce=N, port=7433), ["dial_me", N, 7433]),
    (Dialed(nonce=N, ok=True, observed="198.18.1.2:7433"), ["dialed", N, True, "198.18.1.2:7433"]),
    (Reserve(), ["reserve"]),
    (Reserved(seconds=3600, observed="198.18.1.2:40000"), ["reserved", 3600, "198.18.1.2:40000"]),
    (Incoming(circuit=N, initiator=F), ["incoming", N, F]),
    (
        Refused(what="reserve", code="relay_full", reason="no room"),
        ["refused", "reserve", "relay_full", "no room"],
    ),
    (Punch(addresses=("198.18.1.2:5000",)), ["punch", ["198.18.1.2:5000"]]),
    (PunchGo(), ["punch_go"]),
]


@pytest.mark.parametrize(("event", "message"), EXAMPLES)
def test_each_message_has_its_wire_form_and_comes_back(event: Any, message: list[Any]) -> None:
    assert_round_trip(event, message)


def test_the_reference_bytes_of_two_messages() -> None:
    a, _ = pair()
    assert a.send(Reserve())[0].hex(" ") == "91 a7 72 65 73 65 72 76 65"
    assert a.send(PunchGo())[0].hex(" ") == "91 a8 70 75 6e 63 68 5f 67 6f"


@pytest.mark.parametrize(("event", "message"), EXAMPLES)
def test_version_3_messages_need_version_3(event: Any, message: list[Any]) -> None:
    a, b = pair(version_b=(1, 2))
    assert a.version == 2
    with pytest.raises(LocalProtocolError) as info:
        a.send(event)
    assert info.value.code == "version"
    with pytest.raises(RemoteProtocolError) as remote:
        b.receive(encode(message))
    assert remote.value.code == "bad_message" and b.their_state is State.ERROR


@pytest.mark.parametrize(
    "message",
    [
        ["dial_me", N, 0],
        ["dial_me", N, 65536],
        ["dial_me", N[:15], 7433],
        ["dial_me", N, True],
        ["dial_me", N],
        ["dialed", N, 1, "x:1"],
        ["dialed", N, True, ""],
        ["dialed", N, True, "x" * 101],
        ["reserve", 1],
        ["reserved", 0, "x:1"],
        ["reserved", 2**32, "x:1"],
        ["incoming", N, F[:31]],
        ["refused", "reserve", "", "why"],
        ["refused", "r" * 21, "code", "why"],
        ["punch", []],
        ["punch", ["a:1"] * 5],
        ["punch", [1]],
        ["punch", "a:1"],
        ["punch_go", None],
    ],
)
def test_broken_arguments_are_bad_messages(message: list[Any]) -> None:
    _, b = pair()
    with pytest.raises(RemoteProtocolError) as info:
        b.receive(encode(message))
    assert info.value.code == "bad_message"


@given(
    st.lists(st.text(min_size=1, max_size=100), min_size=1, max_size=4),
    st.binary(min_size=16, max_size=16),
    st.integers(1, 65535),
)
def test_random_fields_round_trip(addresses: list[str], nonce: bytes, port: int) -> None:
    a, b = pair()
    for event in (
        Punch(addresses=addresses),
        DialMe(nonce=nonce, port=port),
        Incoming(circuit=nonce, initiator=F),
    ):
        assert b.receive(a.send(event)[0]) == event


# -- relay connections (§12.10) -------------------------------------------------------------------------


@pytest.mark.parametrize("first", [Connect(target=F), Accept(circuit=N)])
def test_a_relay_connection_is_connect_or_accept_then_connected(first: Any) -> None:
    dialer, relay = Replication(), Replication()
    relay_hello = relay.send(Hello(agent="relay"))
    assert relay.receive(dialer.send(first)[0]) == first
    assert (dialer.our_state, relay.their_state) == (State.RELAY, State.RELAY)
    dialer.receive(relay_hello[0])  # read and ignored by the node
    frame = relay.send(Connected(peer=F, observed="198.18.1.2:40000"))[0]
    assert dialer.receive(frame) == Connected(peer=F, observed="198.18.1.2:40000")
    assert dialer.state is State.SPLICED and relay.state is State.SPLICED
    with pytest.raises(LocalProtocolError):
        dialer.send(Clock(items=[]))


def test_a_relay_may_refuse_a_connect_before_any_hello_came() -> None:
    dialer, relay = Replication(), Replication()
    relay_hello = relay.send(Hello(agent="relay"))
    relay.receive(dialer.send(Connect(target=F))[0])
    frame = relay.send(Refused(what="connect", code="no_reservation", reason="unknown target"))[0]
    dialer.receive(relay_hello[0])
    assert dialer.receive(frame) == Refused(what="connect", code="no_reservation", reason="unknown target")


def test_connected_only_answers_a_relay_request() -> None:
    a, b = pair()
    with pytest.raises(LocalProtocolError) as info:
        a.send(Connected(peer=F, observed="x:1"))
    assert info.value.code == "replication_state"
    with pytest.raises(RemoteProtocolError) as remote:
        b.receive(encode(["connected", F, "x:1"]))
    assert remote.value.code == "bad_message"


def test_connect_after_hello_is_out_of_turn() -> None:
    a, b = pair()
    with pytest.raises(LocalProtocolError):
        a.send(Connect(target=F))
    with pytest.raises(RemoteProtocolError) as remote:
        b.receive(encode(["connect", F]))
    assert remote.value.code == "bad_message"
