"""Replication version 2 (spec/protocol.md §12.1, §12.2, §12.7, §12.8, §13.5): the sans-IO state machine,
the connection manager's choice of candidates, peer scores, and random samples of member records."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from tidings.node.addresses import address_range
from tidings.node.clock import FixedClock
from tidings.node.net.manager import MAX_CANDIDATES, Candidate, ConnectionManager
from tidings.node.net.node import DEFAULT_LIMITS, Node
from tidings.node.net.scoring import DELIVERED_CAP, MAX_SCORE, SCORE_EVENTS, Scores
from tidings.protocol import LocalProtocolError, RemoteProtocolError, SigningKey, encode
from tidings.protocol.handshake import MAX_PLAINTEXT
from tidings.protocol.record_store import RecordStore
from tidings.protocol.records import create_member_record, swarm_key
from tidings.protocol.replication import (
    MAX_ADDRESS_TEXT,
    MAX_HAVE_ITEMS,
    MAX_MEMBER_RECORD_SIZE,
    MAX_MEMBER_RECORDS,
    MAX_PEER_ADDRESSES,
    PROTOCOL_VERSIONS,
    Bye,
    ClockItem,
    Have,
    Hello,
    Members,
    Peers,
    Replication,
)
from tidings.protocol.replication import Clock as ClockMessage

F = b"\x00" * 32
G = b"\x11" * 32
H = b"\x22" * 32
HEX_F = "c4 20" + " 00" * 32


def hello(rep: Replication, agent: str) -> bytes:
    """``rep`` sends its ``hello``: the one frame."""
    (frame,) = rep.send(Hello(agent=agent))
    return frame


def pair() -> tuple[Replication, Replication]:
    """Two machines that exchanged hellos (both speak 1 and 2: version 2)."""
    a, b = Replication(), Replication()
    a.receive(hello(b, "b"))
    b.receive(hello(a, "a"))
    return a, b


def hello_sent() -> Replication:
    """A machine that sent its ``hello`` and has not received the peer's."""
    a = Replication()
    hello(a, "a")
    return a


def with_v1_peer() -> Replication:
    """A machine whose peer is a hand-made version-1 node (``hello`` with ``[1]``)."""
    a = hello_sent()
    a.receive(encode(["hello", [1], "tidings/0.0"]))
    return a


def remote_code(rep: Replication, message: list[Any]) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        rep.receive(encode(message))
    return info.value.code


def local_code(fn: Any) -> str:
    with pytest.raises(LocalProtocolError) as info:
        fn()
    return info.value.code


# -- §12.2 version negotiation ----------------------------------------------------------------------------


def test_reference_hello_bytes() -> None:
    assert PROTOCOL_VERSIONS == (1, 2, 3, 4, 5)
    frame = hello(Replication(), "tidings/0.1")
    assert frame.hex(" ") == "93 a5 68 65 6c 6c 6f 95 01 02 03 04 05 ab 74 69 64 69 6e 67 73 2f 30 2e 31"


def test_two_current_nodes_negotiate_version_5() -> None:
    a, b = Replication(), Replication()
    assert a.version == 0 and a.state == "HELLO"
    assert a.receive(hello(b, "b")) == Hello(agent="b", versions=(1, 2, 3, 4, 5)) and a.version == 5
    assert b.receive(hello(a, "a")) == Hello(agent="a", versions=(1, 2, 3, 4, 5)) and b.version == 5
    assert (a.version, b.version, a.state, b.state) == (5, 5, "ACTIVE", "ACTIVE")


def test_a_version_2_peer_gives_version_2() -> None:
    a = Replication()
    a.receive(encode(["hello", [1, 2], "tidings/0.1"]))
    assert (a.version, a.state) == (2, "HELLO")


def test_a_version_1_peer_gives_version_1() -> None:
    a = with_v1_peer()
    assert (a.version, a.state, a.peer_agent) == (1, "ACTIVE", "tidings/0.0")


@pytest.mark.parametrize(
    ("versions", "expected"),
    [
        ([2], 2),
        ([2, 1], 2),
        ([1, 2, 3], 3),
        ([1, 2, 3, 4], 4),
        ([1, 2, 3, 4, 5], 5),
        ([6, 1], 1),
        (["2", 1], 1),
        ([True, 1], 1),
        ([1, 1], 1),
    ],
)
def test_highest_common_version(versions: list[Any], expected: int) -> None:
    a = Replication()
    event = a.receive(encode(["hello", versions, "x"]))
    assert isinstance(event, Hello) and event.agent == "x"
    assert a.version == expected


@pytest.mark.parametrize("versions", [[], [6], [True], ["1"], [0, 6]])
def test_no_common_version_is_refused(versions: list[Any]) -> None:
    assert remote_code(Replication(), ["hello", versions, "x"]) == "version"


# -- sending under version 1 (and before hello) ---------------------------------------------------------


@pytest.mark.parametrize(
    "send",
    [
        lambda r: r.send(Have(items=[(F, 1)])),
        lambda r: r.send(Peers(items=[(F, "192.0.2.1:7433")])),
        lambda r: r.send(Members(records=[b"record"])),
        lambda r: r.send(ClockMessage(items=[ClockItem(F, 1, 0, True)])),
    ],
    ids=["have", "peers", "members", "lazy_clock"],
)
def test_version_2_messages_cannot_be_sent_under_version_1(send: Any) -> None:
    assert local_code(lambda: send(with_v1_peer())) == "version"
    assert local_code(lambda: send(hello_sent())) == "version"  # no peer hello: no version negotiated yet
    a, _ = pair()
    assert send(a)  # version 2: fine


def test_eager_clock_is_fine_under_version_1() -> None:
    a = with_v1_peer()
    assert a.send(ClockMessage(items=[ClockItem(F, 3, 0)])) == [encode(["clock", [[F, 3, 0]]])]


def test_version_2_messages_after_bye_are_closed() -> None:
    a, _ = pair()
    a.send(Bye(code="done", reason=""))
    assert local_code(lambda: a.send(Have(items=[(F, 1)]))) == "closed"


# -- receiving under version 1 --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        ["have", [[F, 1]]],
        ["have", "anything"],
        ["peers", [[F, "192.0.2.1:7433"]]],
        ["peers"],
        ["members", [b"x"]],
        ["members", 1, 2],
        ["clock", [[F, 1, 0, True]]],
        ["clock", [[F, 1, 0, False]]],
    ],
)
def test_version_2_messages_are_bad_under_version_1(message: list[Any]) -> None:
    assert remote_code(with_v1_peer(), message) == "bad_message"


# -- §12.1 encodings ------------------------------------------------------------------------------------


def test_lazy_clock_item_encoding_and_flags() -> None:
    a, b = pair()
    frames = a.send(ClockMessage(items=[ClockItem(F, 5, 0, True), ClockItem(G, 2, 7)]))
    assert frames == [encode(["clock", [[F, 5, 0, True], [G, 2, 7]]])]
    one = a.send(ClockMessage(items=[ClockItem(F, 5, 0, True)]))
    assert one[0].hex(" ") == f"92 a5 63 6c 6f 63 6b 91 94 {HEX_F} 05 00 c3"
    event = b.receive(frames[0])
    assert event == ClockMessage(items=(ClockItem(F, 5, 0, True), ClockItem(G, 2, 7, False)))
    assert b.peer_lazy == {F}
    assert b.peer_wants == {F: 5, G: 2}
    assert b.peer_newest == {}


def test_eager_item_clears_lazy_and_lazy_item_sets_it_again() -> None:
    a, b = pair()
    b.receive(a.send(ClockMessage(items=[ClockItem(F, 5, 0, True), ClockItem(G, 1, 0, True)]))[0])
    assert b.peer_lazy == {F, G}
    b.receive(a.send(ClockMessage(items=[ClockItem(F, 9)]))[0])  # graft: a one-item eager clock
    assert b.peer_lazy == {G}
    assert b.peer_wants == {F: 9, G: 1}
    b.receive(a.send(ClockMessage(items=[ClockItem(F, 9, 0, True)]))[0])  # prune
    assert b.peer_lazy == {F, G}


def test_have_encoding_and_event() -> None:
    a, b = pair()
    frames = a.send(Have(items=[(F, 7)]))
    assert [f.hex(" ") for f in frames] == [f"92 a4 68 61 76 65 91 92 {HEX_F} 07"]
    assert b.receive(frames[0]) == Have(items=((F, 7),))


def test_have_splits_and_sends_nothing_for_no_items() -> None:
    a, b = pair()
    assert a.send(Have(items=[])) == []
    items = [(i.to_bytes(32, "big"), i) for i in range(2 * MAX_HAVE_ITEMS + 5)]
    frames = a.send(Have(items=items))
    assert len(frames) == 3
    sizes = [len(b.receive(f).items) for f in frames]  # type: ignore[union-attr]
    assert sizes == [1000, 1000, 5]


def test_peers_encoding_event_and_cut_to_32() -> None:
    a, b = pair()
    (frame,) = a.send(Peers(items=[(F, "192.0.2.7:7433")]))
    assert frame.hex(" ") == (
        f"92 a5 70 65 65 72 73 91 92 {HEX_F} ae 31 39 32 2e 30 2e 32 2e 37 3a 37 34 33 33"
    )
    assert b.receive(frame) == Peers(items=((F, "192.0.2.7:7433"),))
    many = [(i.to_bytes(32, "big"), f"192.0.2.{i}:7433") for i in range(40)]
    (frame,) = a.send(Peers(items=many))
    event = b.receive(frame)
    assert isinstance(event, Peers)
    assert event.items == tuple(many[:MAX_PEER_ADDRESSES])
    assert len(event.items) == 32


def test_members_encoding_split_and_event() -> None:
    a, b = pair()
    assert a.send(Members(records=[])) == []
    records = [bytes([i % 256]) * 10 for i in range(450)]
    frames = a.send(Members(records=records))
    assert len(frames) == 3
    events = [b.receive(f) for f in frames]
    assert all(isinstance(e, Members) for e in events)
    assert [len(e.records) for e in events] == [200, 200, 50]  # type: ignore[union-attr]
    assert sum((e.records for e in events), ()) == tuple(records)  # type: ignore[union-attr]


def test_boundaries_are_accepted() -> None:
    _, b = pair()
    top = 2**53 - 1
    assert b.receive(encode(["have", [[F, top]] * MAX_HAVE_ITEMS])) == Have(items=((F, top),) * 1000)
    long_text = "é" * (MAX_ADDRESS_TEXT - 5) + ":7433"  # 100 characters, 195 UTF-8 bytes
    assert len(long_text) == 100
    event = b.receive(encode(["peers", [[F, long_text]] * MAX_PEER_ADDRESSES]))
    assert event == Peers(items=((F, long_text),) * 32)
    big = b"\x01" * MAX_MEMBER_RECORD_SIZE
    assert b.receive(encode(["members", [big] * 60])) == Members(records=(big,) * 60)
    small = b"\x02" * 300
    assert b.receive(encode(["members", [small] * MAX_MEMBER_RECORDS])) == Members(records=(small,) * 200)
    assert b.receive(encode(["clock", [[F, top, top, True]]])) == ClockMessage(
        items=(ClockItem(F, top, top, True),)
    )


# -- §12.1 argument rules (version 2) ----------------------------------------------------------------------

BAD_V2 = [
    # clock: the fourth element is true or absent; five elements never
    ["clock", [[F, 1, 0, False]]],
    ["clock", [[F, 1, 0, 1]]],
    ["clock", [[F, 1, 0, None]]],
    ["clock", [[F, 1, 0, True, True]]],
    ["clock", [[F[:31], 1, 0, True]]],
    ["clock", [[F, True, 0, True]]],
    ["clock", [[F, 1, -1, True]]],
    # have
    ["have"],
    ["have", [], []],
    ["have", {"a": 1}],
    ["have", [[F, 1]] * (MAX_HAVE_ITEMS + 1)],
    ["have", [F]],
    ["have", [[F]]],
    ["have", [[F, 1, 2]]],
    ["have", [[F[:31], 1]]],
    ["have", [["feed", 1]]],
    ["have", [[F, -1]]],
    ["have", [[F, 2**53]]],
    ["have", [[F, True]]],
    ["have", [[F, "1"]]],
    # peers
    ["peers"],
    ["peers", [], 1],
    ["peers", "192.0.2.1:7433"],
    ["peers", [[F, "192.0.2.1:7433"]] * (MAX_PEER_ADDRESSES + 1)],
    ["peers", [[F]]],
    ["peers", [[F, "192.0.2.1:7433", 1]]],
    ["peers", [[F[:31], "192.0.2.1:7433"]]],
    ["peers", [["feed", "192.0.2.1:7433"]]],
    ["peers", [[F, ""]]],
    ["peers", [[F, "a" * (MAX_ADDRESS_TEXT + 1)]]],
    ["peers", [[F, b"192.0.2.1:7433"]]],
    ["peers", [[F, 7433]]],
    # members
    ["members"],
    ["members", [], []],
    ["members", b"record"],
    ["members", [b"r"] * (MAX_MEMBER_RECORDS + 1)],
    ["members", [b"\x00" * (MAX_MEMBER_RECORD_SIZE + 1)]],
    ["members", ["record"]],
    ["members", [[b"record"]]],
]


@pytest.mark.parametrize("message", BAD_V2, ids=[f"{m[0]}-{i}" for i, m in enumerate(BAD_V2)])
def test_broken_argument_rules_are_bad_message(message: list[Any]) -> None:
    _, b = pair()
    assert remote_code(b, message) == "bad_message"


def test_a_members_message_over_the_frame_limit_is_bad_message() -> None:
    _, b = pair()  # 200 records of 1024 bytes do not fit in one 65519-byte plaintext
    big = b"\x01" * MAX_MEMBER_RECORD_SIZE
    assert remote_code(b, ["members", [big] * MAX_MEMBER_RECORDS]) == "bad_message"


def test_new_messages_before_hello_are_bad_message() -> None:
    assert remote_code(Replication(), ["have", [[F, 1]]]) == "bad_message"
    assert remote_code(Replication(), ["members", []]) == "bad_message"


# -- have raises what the peer holds (§12.7) -----------------------------------------------------------


def test_have_raises_peer_wants_and_never_lowers_or_creates() -> None:
    a, b = pair()
    a.receive(b.send(ClockMessage(items=[ClockItem(F, 3), ClockItem(G, 10, 0, True)]))[0])
    assert a.peer_wants == {F: 3, G: 10}
    assert a.peer_lacks(F, 4)
    event = a.receive(b.send(Have(items=[(F, 9), (G, 4), (H, 50)]))[0])
    assert event == Have(items=((F, 9), (G, 4), (H, 50)))
    assert a.peer_wants == {F: 9, G: 10}  # F raised, G not lowered, H (never named) not recorded
    assert not a.peer_lacks(F, 9)
    assert a.peer_lacks(F, 10)
    assert not a.peer_lacks(H, 51)
    a.receive(b.send(Have(items=[(F, 2)]))[0])
    assert a.peer_wants[F] == 9


def test_sending_have_does_not_change_what_we_know_the_peer_holds() -> None:
    a, b = pair()
    a.receive(b.send(ClockMessage(items=[ClockItem(F, 3, 0, True)]))[0])
    a.send(Have(items=[(F, 8)]))
    assert a.peer_wants == {F: 3}
    assert a.peer_lazy == {F}


# -- connection manager (§12.8.1, §12.8.2) ------------------------------------------------------------


class FakeScores:
    def __init__(self, values: dict[str, float] | None = None) -> None:
        self.values = values or {}

    def get(self, host: str) -> float:
        return self.values.get(host, 0.0)


class FakePenalties:
    def __init__(self, banned: set[str] | None = None) -> None:
        self.hosts = banned or set()

    def banned(self, host: str) -> bool:
        return host in self.hosts


@dataclass
class FakeConn:
    feed: bytes
    address: str
    initiator: bool = True
    once: bool = False


@dataclass
class FakeNode:
    limits: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    connections: dict[int, FakeConn] = field(default_factory=dict)
    penalties: FakePenalties = field(default_factory=FakePenalties)
    scores: FakeScores = field(default_factory=FakeScores)
    wanted: set[bytes] = field(default_factory=set)
    address: str | None = "198.51.100.1:7433"

    def connect(self, *conns: FakeConn) -> None:
        for conn in conns:
            self.connections[id(conn)] = conn


def feed(n: int) -> bytes:
    return n.to_bytes(32, "big")


def manager(node: FakeNode) -> ConnectionManager:
    m = ConnectionManager(node)  # type: ignore[arg-type]
    m.rng = random.Random(1)
    return m


def chosen(m: ConnectionManager, now: float = 0.0) -> list[str]:
    return [c.address for c in m.choose(now)]


def test_address_range() -> None:
    assert address_range("192.0.2.77") == "192.0.2.0/24"
    assert address_range("192.0.3.1") == "192.0.3.0/24"
    assert address_range("2001:db8:1:2::5") == "2001:db8:1::/48"
    assert address_range("[2001:db8:1:ffff::1]") == "2001:db8:1::/48"
    assert address_range("2001:db8:2::1") == "2001:db8:2::/48"
    assert address_range("node.example.org") == "node.example.org"


def test_diversity_one_per_range_before_a_second() -> None:
    node = FakeNode()
    node.limits["target_connections"] = 3
    m = manager(node)
    for i in range(5):
        m.offer(f"10.0.0.{i + 1}:7433", source="swarm", feed=feed(i))
    m.offer("10.0.1.9:7433", source="pex", feed=feed(10))
    m.offer("[2001:db8:5::1]:7433", source="pex", feed=feed(11))
    picked = chosen(m)
    assert len(picked) == 3
    assert {address_range(a.rpartition(":")[0]) for a in picked} == {
        "10.0.0.0/24",
        "10.0.1.0/24",
        "2001:db8:5::/48",
    }


def test_diversity_counts_existing_outgoing_connections() -> None:
    node = FakeNode()
    node.limits["target_connections"] = 4
    node.connect(FakeConn(feed(100), "10.0.0.200:7433"), FakeConn(feed(101), "10.0.0.201:7433"))
    m = manager(node)
    for i in range(4):
        m.offer(f"10.0.0.{i + 1}:7433", source="dht", feed=feed(i))
    m.offer("10.9.9.9:7433", source="pex", feed=feed(20))
    picked = chosen(m)
    assert picked[0] == "10.9.9.9:7433"  # the empty range first, though its source ranks last
    assert len(picked) == 2


def test_pinned_first_and_even_when_target_is_met() -> None:
    node = FakeNode(wanted={feed(1)})
    node.limits["target_connections"] = 1
    m = manager(node)
    m.offer("10.0.0.1:7433", source="swarm", feed=feed(1))
    m.offer("10.0.1.1:7433", source="peer", pinned=True)
    assert chosen(m) == ["10.0.1.1:7433"]  # room = 1 − 1 pinned = 0
    node.connect(FakeConn(feed(50), "10.0.2.1:7433"))
    m.offer("10.0.3.1:7433", source="peer", pinned=True)
    assert chosen(m) == ["10.0.1.1:7433", "10.0.3.1:7433"]


def test_candidates_not_due_are_skipped() -> None:
    node = FakeNode(penalties=FakePenalties({"10.0.3.1"}))
    m = manager(node)
    for i in range(4):
        m.offer(f"10.0.{i}.1:7433", source="dht", feed=feed(i))
    m.candidates["10.0.0.1:7433"].next_try = 5.0  # backing off
    m.candidates["10.0.1.1:7433"].dialing = True
    node.connect(FakeConn(feed(99), "10.0.2.1:7433"))  # already connected at that address
    assert chosen(m, now=4.9) == []  # 10.0.3.1 is banned
    assert chosen(m, now=5.0) == ["10.0.0.1:7433"]


def test_connected_feed_is_skipped_and_one_candidate_per_feed() -> None:
    node = FakeNode()
    node.connect(FakeConn(feed(7), "203.0.113.5", initiator=False))  # inbound: its feed counts too
    m = manager(node)
    m.offer("10.0.0.1:7433", source="dht", feed=feed(7))
    m.offer("10.0.1.1:7433", source="remembered")  # unknown feed
    m.offer("10.0.2.1:7433", source="swarm", feed=feed(8))
    m.offer("10.0.3.1:7433", source="pex", feed=feed(8))
    picked = chosen(m)
    assert "10.0.0.1:7433" not in picked
    assert sorted(picked) == ["10.0.1.1:7433", "10.0.2.1:7433"]


def test_one_shot_connections_do_not_count() -> None:
    node = FakeNode()
    node.connect(FakeConn(feed(7), "10.0.0.9:7433", once=True))
    m = manager(node)
    m.offer("10.0.0.1:7433", source="dht", feed=feed(7))
    assert chosen(m) == ["10.0.0.1:7433"]


def test_max_connections_is_respected() -> None:
    node = FakeNode()
    node.limits["max_connections"] = 3
    node.connect(FakeConn(feed(90), "10.0.9.1:7433"), FakeConn(feed(91), "203.0.113.9", initiator=False))
    m = manager(node)
    for i in range(6):
        m.offer(f"10.0.{i}.1:7433", source="dht", feed=feed(i))
    assert len(chosen(m)) == 1  # min(8 − 1, 3 − 2)
    m.candidates["10.0.0.1:7433"].dialing = True
    assert chosen(m) == []  # a dial in progress takes the last place
    for i in range(3):
        m.offer(f"10.1.{i}.1:7433", source="peer", pinned=True)
    assert chosen(m) == []  # pinned ones too
    m.candidates["10.0.0.1:7433"].dialing = False
    assert chosen(m) == ["10.1.0.1:7433"]


def test_order_wanted_then_score_then_source() -> None:
    node = FakeNode(wanted={feed(1)}, scores=FakeScores({"10.0.2.1": 10.0}))
    node.limits["target_connections"] = 1
    m = manager(node)
    m.offer("10.0.0.1:7433", source="pex", feed=feed(1))  # wanted, uncovered
    m.offer("10.0.1.1:7433", source="swarm", feed=feed(2))
    m.offer("10.0.2.1:7433", source="pex", feed=feed(3))  # best score
    m.offer("10.0.3.1:7433", source="dht", feed=feed(4))
    m.offer("10.0.4.1:7433", source="remembered")
    assert chosen(m) == ["10.0.0.1:7433"]
    del m.candidates["10.0.0.1:7433"]
    assert chosen(m) == ["10.0.2.1:7433"]
    del m.candidates["10.0.2.1:7433"]
    assert chosen(m) in (["10.0.1.1:7433"], ["10.0.3.1:7433"])  # swarm and dht rank alike
    del m.candidates["10.0.1.1:7433"], m.candidates["10.0.3.1:7433"]
    assert chosen(m) == ["10.0.4.1:7433"]


def test_offer_rules() -> None:
    node = FakeNode()
    m = manager(node)
    for bad in ("nonsense", "10.0.0.1:port", "0.0.0.0:7433", "[::]:7433", node.address or ""):
        m.offer(bad, source="dht")
    assert m.candidates == {}
    m.offer("10.0.0.1:7433", source="pex", feed=feed(1))
    m.offer("10.0.0.1:7433", source="pex", feed=feed(2))  # peer exchange cannot change the feed
    assert m.candidates["10.0.0.1:7433"].feed == feed(1)
    m.offer("10.0.0.1:7433", source="dht", feed=feed(3))
    m.offer("10.0.0.1:7433", source="remembered")  # ranks worse than dht: the source stays
    cand = m.candidates["10.0.0.1:7433"]
    assert (cand.feed, cand.source, cand.pinned) == (feed(3), "dht", False)
    m.offer("10.0.0.1:7433", source="peer", pinned=True)
    m.offer("10.0.0.1:7433", source="dht")
    assert (cand.source, cand.pinned) == ("peer", True)


def test_wrong_identity_drops_pex_and_corrects_others() -> None:
    m = manager(FakeNode())
    m.offer("10.0.0.1:7433", source="pex", feed=feed(1))
    m.offer("10.0.0.2:7433", source="dht", feed=feed(2))
    m.wrong_identity(m.candidates["10.0.0.1:7433"], feed(9))
    m.wrong_identity(m.candidates["10.0.0.2:7433"], feed(9))
    assert list(m.candidates) == ["10.0.0.2:7433"]
    assert m.candidates["10.0.0.2:7433"].feed == feed(9)


def test_candidates_are_bounded_pex_forgotten_first() -> None:
    m = manager(FakeNode())
    m.offer("10.255.0.1:7433", source="peer", pinned=True)
    for i in range(MAX_CANDIDATES - 1):
        m.offer(f"10.{i // 250}.{i % 250}.1:7433", source="pex" if i % 2 else "dht")
    assert len(m.candidates) == MAX_CANDIDATES
    m.offer("10.254.0.1:7433", source="swarm")
    # a tenth of the 1999 forgettable candidates (the pinned one is kept), all of them pex
    assert len(m.candidates) == MAX_CANDIDATES - 199 + 1
    sources = [c.source for c in m.candidates.values()]
    assert sources.count("pex") == 999 - 199
    assert sources.count("dht") == 1000
    assert "10.255.0.1:7433" in m.candidates and "10.254.0.1:7433" in m.candidates


def test_candidate_defaults() -> None:
    c = Candidate("10.0.0.1:7433", "10.0.0.1", None, "dht")
    assert (c.pinned, c.failures, c.next_try, c.dialing) == (False, 0, 0.0, False)


# -- peer scores (§12.8.4) ------------------------------------------------------------------------------


def scores(**kw: Any) -> tuple[Scores, FixedClock]:
    clock = FixedClock(1000.0)
    return Scores(clock=clock, **kw), clock


def test_score_events_are_those_of_the_spec() -> None:
    assert SCORE_EVENTS == {
        "delivered": 0.05,
        "useless": -0.5,
        "idle": -2.0,
        "never_useful": -6.0,
        "invalid": -50.0,
        "flood": -50.0,
        "own_fork": -100.0,
        "overspent": -5.0,
        "slow_blob": -5.0,
        "bad_blob": -10.0,
    }
    assert (DELIVERED_CAP, MAX_SCORE) == (5.0, 100.0)
    assert (DEFAULT_LIMITS["score_half_life"], DEFAULT_LIMITS["score_threshold"]) == (600.0, -40.0)


def test_events_add_up_and_delivered_is_capped() -> None:
    s, _ = scores()
    assert s.get("a") == 0.0
    assert s.add("a", "delivered", 20) == pytest.approx(1.0)
    assert s.add("a", "delivered", 1000) == pytest.approx(6.0)  # +5, not +50
    assert s.add("a", "useless", 3) == pytest.approx(4.5)
    assert s.add("a", "idle") == pytest.approx(2.5)
    assert s.add("b", "own_fork") == -100.0
    for _ in range(25):
        s.add("c", "delivered", 100)
    assert s.get("c") == MAX_SCORE
    with pytest.raises(KeyError):
        s.add("a", "no_such_event")


def test_scores_decay_with_the_half_life() -> None:
    s, clock = scores(half_life=600.0)
    s.add("a", "invalid")
    clock.now += 600
    assert s.get("a") == pytest.approx(-25.0)
    clock.now += 1200
    assert s.get("a") == pytest.approx(-6.25)
    assert s.add("a", "useless", 2) == pytest.approx(-7.25)  # decayed first, then changed
    clock.now += 300
    assert s.snapshot() == {"a": pytest.approx(-7.25 * 0.5**0.5, abs=0.01)}


def test_threshold() -> None:
    s, clock = scores(half_life=100.0, threshold=-40.0)
    s.add("a", "useless", 79)
    assert s.get("a") == pytest.approx(-39.5)
    assert not s.below_threshold("a")
    s.add("a", "useless", 1.01)
    assert s.below_threshold("a")
    clock.now += 100
    assert s.get("a") == pytest.approx(-20.0025)
    assert not s.below_threshold("a")  # the offence fades


def test_below_threshold_exactly() -> None:
    s, _ = scores(threshold=-40.0)
    s.add("a", "useless", 80)
    assert s.get("a") == -40.0
    assert not s.below_threshold("a")
    s.add("a", "useless", 1)
    assert s.below_threshold("a")


def test_penalize_cuts_a_host_off(tmp_path: Any) -> None:
    from tidings.node.home import Home

    node = Node(Home(tmp_path), SigningKey(b"\x05" * 32), dht=False)
    cancelled: list[str] = []

    class Conn:
        def __init__(self, host: str) -> None:
            self.host = host

        def cancel(self) -> None:
            cancelled.append(self.host)

    for conn in (Conn("192.0.2.1"), Conn("192.0.2.2"), Conn("192.0.2.1")):
        node.connections[id(conn)] = conn  # type: ignore[assignment]
    node.penalize("192.0.2.1", "useless", 80)  # −40: not below the threshold yet
    assert not node.penalties.banned("192.0.2.1") and cancelled == []
    node.penalize("192.0.2.1", "useless")
    assert node.penalties.banned("192.0.2.1")
    assert cancelled == ["192.0.2.1", "192.0.2.1"]
    rec = node.penalties.by_host["192.0.2.1"]
    assert rec.strikes == 1 and rec.last_reason.startswith("low_score")
    assert not node.penalties.banned("192.0.2.2")


def test_feed_budgets_are_a_token_bucket_per_feed() -> None:
    from tidings.protocol.gossip import FeedBudgets

    budgets = FeedBudgets(0.001, 5)
    assert [budgets.take(F, now=0.0) for _ in range(6)] == [True] * 5 + [False]
    assert budgets.take(G, now=0.0)  # another feed has its own bucket


def test_new_default_limits() -> None:
    expected = {
        "target_connections": 8,
        "manage_interval": 0.5,
        "feed_entries_per_second": 20.0,
        "feed_burst": 2000,
        "eager_peers": 3,
        "min_eager_peers": 2,
        "graft_delay": 0.3,
        "have_interval": 0.5,
        "pex_interval": 60.0,
        "max_connections": 64,
    }
    assert {k: DEFAULT_LIMITS[k] for k in expected} == expected


# -- random samples of member records (§13.5) ----------------------------------------------------------

NOW = 1_700_000_000_000
HOUR = 3_600_000
SWARM = swarm_key("python")


def member_store(count: int) -> tuple[RecordStore, dict[bytes, int]]:
    store = RecordStore()
    expiry: dict[bytes, int] = {}
    for i in range(count):
        record = create_member_record(
            SigningKey(bytes([i + 1]) * 32),
            swarm="python",
            addresses=[("192.0.2.1", 7433)],
            seq=1,
            expiry_ms=NOW + HOUR + i * 1000,
        )
        assert store.put(SWARM, record.encode(), NOW).code == "stored"
        expiry[record.encode()] = record.expiry_ms
    return store, expiry


def test_members_all_fit_latest_expiry_first() -> None:
    store, expiry = member_store(5)
    out = store.members(SWARM, NOW, max_bytes=4000, rng=random.Random(1))
    assert len(out) == 5
    assert out == sorted(expiry, key=lambda r: expiry[r], reverse=True)
    assert store.members(SWARM, NOW, rng=random.Random(1)) == out


def test_members_random_sample_fits_and_covers_every_record() -> None:
    rng = random.Random(12345)
    store, expiry = member_store(40)
    size = len(next(iter(expiry))) + 3
    assert all(len(r) + 3 == size for r in expiry)  # all the same size here
    max_bytes = 1000
    per_reply = max_bytes // size
    seen: set[bytes] = set()
    replies = []
    for _ in range(60):
        out = store.members(SWARM, NOW, max_bytes=max_bytes, rng=rng)
        assert len(out) == per_reply  # as many as fit
        assert sum(len(r) + 3 for r in out) <= max_bytes
        assert len(set(out)) == len(out) and set(out) <= set(expiry)
        assert [expiry[r] for r in out] == sorted((expiry[r] for r in out), reverse=True)
        replies.append(tuple(out))
        seen |= set(out)
    assert seen == set(expiry)
    assert len(set(replies)) > 1  # not always the same sample
    latest = sorted(expiry, key=lambda r: expiry[r], reverse=True)[:per_reply]
    assert any(set(r) != set(latest) for r in replies)


def test_members_sample_leaves_out_expired_records() -> None:
    store, expiry = member_store(10)
    later = NOW + HOUR + 4500  # the first five have expired
    out = store.members(SWARM, later, max_bytes=4000, rng=random.Random(1))
    assert sorted(expiry[r] for r in out) == [NOW + HOUR + i * 1000 for i in range(5, 10)]


# -- sizes and scopes ---------------------------------------------------------------------------------


def test_members_split_by_frame_size_not_only_by_count() -> None:
    a, b = pair()
    records = [bytes([i % 256]) * 1000 for i in range(200)]  # 200 x 1000 bytes: over one frame
    frames = a.send(Members(records=records))
    assert len(frames) >= 4
    assert all(len(f) <= MAX_PLAINTEXT for f in frames)
    got = [r for f in frames for r in b.receive(f).records]
    assert got == records
    assert a.send(Members(records=[b"x" * 2000])) == []  # over MAX_MEMBER_RECORD_SIZE: left out


def test_peers_leaves_out_addresses_the_receiver_would_refuse() -> None:
    a, b = pair()
    long_name = "h" * 200 + ".example:7433"
    (frame,) = a.send(Peers(items=[(F, long_name), (G, "10.0.0.1:7433")]))
    assert b.receive(frame).items == ((G, "10.0.0.1:7433"),)


@pytest.mark.parametrize(
    ("host", "scope"),
    [
        ("127.0.0.5", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.1.1", "private"),
        ("169.254.0.9", "private"),
        ("fd00::1", "private"),
        ("8.8.8.8", "public"),
        ("2001:4860::8888", "public"),
        ("0.0.0.0", "bad"),
        ("224.0.0.1", "bad"),
        ("240.0.0.1", "bad"),
    ],
)
def test_address_scopes_for_peer_exchange(host: str, scope: str) -> None:
    from tidings.node.addresses import address_scope

    assert address_scope(host) == scope


def test_scope_of_a_name_is_an_error() -> None:
    from tidings.node.addresses import address_scope

    with pytest.raises(ValueError):
        address_scope("example.org")
