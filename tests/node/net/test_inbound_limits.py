"""Inbound slots rule by rule (spec/protocol.md §12.5): the per-host unit, tiers, the choice of the
connection that gives way, the limits the listener checks, and the frame-progress deadline of the
reader (§11.4) under trio's MockClock."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing
from tidings.node.addresses import address_range, host_key
from tidings.node.clock import FixedClock
from tidings.node.net.eviction import (
    DELIVERED,
    INTERESTED,
    KEPT,
    NEVER_USEFUL,
    SERVED,
    InboundSlot,
    choose_victim,
    idle_due,
    tier,
)
from tidings.node.net.listener import Listener
from tidings.node.net.node import DEFAULT_LIMITS
from tidings.node.net.scoring import Penalties, Scores
from tidings.node.net.transport import SecureChannel
from tidings.protocol import RemoteProtocolError, SigningKey

ME, F1, F2 = b"m" * 32, b"1" * 32, b"2" * 32


def test_host_key_is_the_address_or_the_ipv6_64() -> None:
    assert host_key("192.0.2.7") == "192.0.2.7"
    assert host_key("2001:db8:1:2::5") == host_key("[2001:db8:1:2:ffff::9]") == "2001:db8:1:2::/64"
    assert host_key("2001:db8:1:3::5") == "2001:db8:1:3::/64"
    assert host_key("::ffff:192.0.2.7") == "192.0.2.7"  # IPv4-mapped: its IPv4 address
    assert address_range("::ffff:192.0.2.7") == "192.0.2.0/24"
    assert host_key("node.example") == "node.example"


@dataclass
class FakeRep:
    peer_wants: dict[bytes, int] = field(default_factory=dict)


@dataclass
class FakeChannel:
    stream: Any


@dataclass
class FakePeer:
    feed: bytes
    stream: Any = None
    received: int = 0
    sent: int = 0
    connected_at: float = 0.0
    initiator: bool = False
    rep: FakeRep = field(default_factory=FakeRep)

    @property
    def channel(self) -> FakeChannel:
        return FakeChannel(self.stream)


def test_tiers() -> None:
    kept, wanted = {F1}, {ME, F2}
    assert tier(None, kept=kept, wanted=wanted) == NEVER_USEFUL  # still in its handshake
    assert tier(FakePeer(b"x" * 32), kept=kept, wanted=wanted) == NEVER_USEFUL
    names_unknown = FakePeer(b"x" * 32, rep=FakeRep({b"y" * 32: 0}))
    assert tier(names_unknown, kept=kept, wanted=wanted) == NEVER_USEFUL
    assert tier(FakePeer(b"x" * 32, rep=FakeRep({ME: 3})), kept=kept, wanted=wanted) == INTERESTED
    assert tier(FakePeer(F2), kept=kept, wanted=wanted) == INTERESTED  # a wanted feed, quiet
    assert tier(FakePeer(b"x" * 32, sent=1), kept=kept, wanted=wanted) == SERVED
    assert tier(FakePeer(b"x" * 32, sent=1, received=1), kept=kept, wanted=wanted) == DELIVERED
    assert tier(FakePeer(F1), kept=kept, wanted=wanted) == KEPT  # followed or pinned


def slot(host: str, accepted: float, peer: FakePeer | None = None) -> InboundSlot:
    s = InboundSlot(host, host_key(host), address_range(host), object(), accepted)  # type: ignore[arg-type]
    s.peer = peer
    return s


def victim_of(slots: list[InboundSlot], tiers: list[int], *, now: float = 100.0, scores=None):
    per_range: dict[str, int] = {}
    for s in slots:
        per_range[s.range] = per_range.get(s.range, 0) + 1
    return choose_victim(
        slots,
        now=now,
        tiers={id(s): t for s, t in zip(slots, tiers, strict=True)},
        per_range=per_range,
        score=lambda h: (scores or {}).get(h, 0.0),
    )


def test_the_least_useful_goes_first() -> None:
    a, b, c = slot("10.0.0.1", 1), slot("10.0.1.1", 2), slot("10.0.2.1", 3)
    assert victim_of([a, b, c], [DELIVERED, NEVER_USEFUL, SERVED]) is b
    assert victim_of([a, b, c], [DELIVERED, INTERESTED, SERVED]) is b
    assert victim_of([a, b, c], [KEPT, KEPT, KEPT]) is None  # followed and pinned peers never go


def test_in_a_tier_the_most_crowded_range_then_the_lowest_score_then_age() -> None:
    crowded = [slot("10.0.0.1", 1), slot("10.0.0.2", 2), slot("10.0.0.3", 3)]
    alone = slot("10.9.0.1", 0)
    assert victim_of([alone, *crowded], [NEVER_USEFUL] * 4) is crowded[0]  # never useful: the oldest
    assert victim_of([alone, *crowded], [SERVED] * 4) is crowded[2]  # useful once: the youngest
    scores = {"10.0.0.2": -10.0}
    assert victim_of([alone, *crowded], [SERVED] * 4, scores=scores) is crowded[1]
    assert victim_of([alone, *crowded], [NEVER_USEFUL, SERVED, SERVED, SERVED]) is alone  # tier first


def test_no_slot_goes_within_its_grace_or_twice() -> None:
    young, old = slot("10.0.0.1", 99.5), slot("10.0.1.1", 90.0)
    assert victim_of([young, old], [NEVER_USEFUL, SERVED]) is old
    old.leaving = True
    assert victim_of([young, old], [NEVER_USEFUL, SERVED]) is None


def test_idle_due_only_for_never_useful_established_connections() -> None:
    peer = FakePeer(b"x" * 32, connected_at=10.0)
    s = slot("10.0.0.1", 9.0, peer)
    assert not idle_due(s, NEVER_USEFUL, now=24.9, idle_timeout=15.0)
    assert idle_due(s, NEVER_USEFUL, now=25.0, idle_timeout=15.0)
    assert not idle_due(s, INTERESTED, now=1000.0, idle_timeout=15.0)  # a quiet follower stays
    assert not idle_due(slot("10.0.0.2", 0.0), NEVER_USEFUL, now=1000.0, idle_timeout=15.0)  # handshake


class FakeNode:
    def __init__(self, **limits: Any) -> None:
        self.limits = {**DEFAULT_LIMITS, **limits}
        self.clock = FixedClock(100.0)
        self.penalties = Penalties(self.clock)
        self.scores = Scores(clock=self.clock)
        self.wanted: set[bytes] = {ME}
        self.connections: dict[int, FakePeer] = {}
        self.penalized: list[tuple[str, str]] = []

    def kept_feeds(self) -> set[bytes]:
        return set()

    def penalize(self, host: str, event: str, count: float = 1.0) -> None:
        self.penalized.append((host, event))
        self.scores.add(host, event, count)

    async def serve_connection(self, stream: Any, address: str, *, initiator: bool) -> None:
        raise AssertionError("not served in these tests")


def fill(
    listener: Listener, node: FakeNode, hosts: list[str], *, established: bool = True
) -> list[InboundSlot]:
    """Admit a connection from each host, with an established never-useful connection in its slot."""
    out = []
    for host in hosts:
        assert listener.admit(host) is None
        s = slot(host, node.clock.monotonic())
        if established:
            peer = FakePeer(os.urandom(32), stream=s.stream, connected_at=node.clock.monotonic())
            node.connections[id(peer)] = peer
        listener.slots.add(s)
        out.append(s)
        node.clock.advance(0.01)
    return out


def test_one_ipv6_64_is_one_host() -> None:
    node = FakeNode()
    listener = Listener(node)
    fill(listener, node, [f"2001:db8:0:1::{i + 1:x}" for i in range(8)])  # 8 addresses of one /64
    assert listener.admit("2001:db8:0:1::99") == "per_host"  # within the grace: nobody goes
    assert listener.admit("2001:db8:0:2::1") is None  # the next /64 is another host
    node.clock.advance(2.0)
    assert listener.admit("2001:db8:0:1::99") is None  # past the grace: the oldest idle one went
    assert listener.evicted == 1 and sum(s.leaving for s in listener.slots) == 1
    assert node.penalized == [("2001:db8:0:1::1", "never_useful")]


def test_reserved_slots_and_ranges() -> None:
    node = FakeNode(max_connections=10, reserved_slots=4, max_per_range=3, max_per_host=2)
    listener = Listener(node)
    fill(listener, node, ["10.0.0.1", "10.0.0.1", "10.0.0.2"])
    assert listener.admit("10.0.0.3") == "per_range"
    fill(listener, node, ["10.0.1.1", "10.0.2.1", "10.0.3.1"])  # 6 = max_connections − reserved_slots
    assert listener.admit("10.0.4.1") == "full"
    node.clock.advance(2.0)
    assert listener.admit("10.0.4.1") is None
    gone = [s for s in listener.slots if s.leaving]
    assert [s.range for s in gone] == ["10.0.0.0/24"]  # from the most crowded range
    assert listener.refused == {"per_range": 1, "full": 1}


def test_established_outgoing_connections_count_in_max_connections() -> None:
    node = FakeNode(max_connections=4, reserved_slots=1)
    listener = Listener(node)
    for _ in range(2):
        out = FakePeer(os.urandom(32), initiator=True)
        node.connections[id(out)] = out
    fill(listener, node, ["10.0.0.1", "10.0.1.1"])
    assert listener.admit("10.0.2.1") == "full"  # 2 in + 2 out = 4


def test_a_banned_host_is_refused_first() -> None:
    node = FakeNode()
    listener = Listener(node)
    node.penalties.strike("10.0.0.1", "invalid", "test", 60)
    assert listener.admit("10.0.0.1") == "banned"


# -- the frame-progress deadline (§11.4), under MockClock ---------------------------------------------


async def pair(left: trio.abc.Stream, right: trio.abc.Stream) -> tuple[SecureChannel, SecureChannel]:
    out: dict[bool, SecureChannel] = {}

    async def side(stream: trio.abc.Stream, initiator: bool) -> None:
        out[initiator] = await SecureChannel.handshake(
            stream,
            initiator=initiator,
            identity=SigningKey(os.urandom(32)),
            transport_private=os.urandom(32),
            frame_timeout=DEFAULT_LIMITS["frame_timeout"],
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(side, left, True)
        nursery.start_soon(side, right, False)
    return out[True], out[False]


async def drip(stream: trio.abc.Stream, data: bytes, every: float) -> None:
    for i in range(len(data)):
        await stream.send_all(data[i : i + 1])
        await trio.sleep(every)


async def test_a_frame_sent_a_byte_a_second_is_cut_10_s_after_its_first_byte(autojump_clock) -> None:
    left, right = trio.testing.memory_stream_pair()
    a, b = await pair(left, right)
    frame = a.session.encrypt(b"x")  # 4 + 17 bytes: 21 s at a byte a second
    assert len(frame) == 21
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_later, 30.0, drip, left, frame, 1.0)  # 30 s idle first: not bounded here
        with pytest.raises(RemoteProtocolError, match="within 10 s") as info:
            await b.receive()
        assert info.value.code == "frame_timeout"
        # the deadline runs from the frame's first byte: the default frame_timeout after it
        assert trio.current_time() - (start + 30.0) == pytest.approx(DEFAULT_LIMITS["frame_timeout"])
        nursery.cancel_scope.cancel()


async def test_a_slow_frame_within_its_deadline_is_taken(autojump_clock) -> None:
    left, right = trio.testing.memory_stream_pair()
    a, b = await pair(left, right)
    frame = a.session.encrypt(b"x")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(drip, left, frame, 0.45)  # 21 bytes in 9.45 s
        assert await b.receive() == b"x"
        second = a.session.encrypt(b"y")
        nursery.start_soon(_later, 60.0, drip, left, second, 0.45)  # a long pause between frames
        assert await b.receive() == b"y"


async def _later(delay: float, fn: Any, *args: Any) -> None:
    await trio.sleep(delay)
    await fn(*args)


def test_the_new_limits_and_their_defaults_are_those_of_the_spec() -> None:
    """spec/protocol.md §12.5 states each limit with its default; the node uses the same."""
    from pathlib import Path

    spec = (Path(__file__).parents[3] / "spec" / "protocol.md").read_text()
    rows = {
        line.split("|")[1].strip(" `"): line.split("|")[2].strip()
        for line in spec.splitlines()
        if line.startswith("| `")
    }
    expected = {"reserved_slots": 16, "max_per_range": 16, "idle_timeout": 15.0, "frame_timeout": 10.0}
    for key, value in expected.items():
        assert DEFAULT_LIMITS[key] == value
        assert rows[key].split()[0] == f"{value:g}", key
    assert DEFAULT_LIMITS["max_connections"] - DEFAULT_LIMITS["reserved_slots"] >= 32
