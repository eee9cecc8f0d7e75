"""Hole punching between real nodes on loopback (spec/protocol.md §12.11, node/net/upgrade.py).

No relay exists here: two nodes connect directly and their connection is marked ``relayed`` on both
sides, as a relayed connection would be; the punch then opens a second, direct connection between fresh
ports, which replaces it. Loopback has no NAT, so the simultaneous open comes up at once (see
tests/node/net/test_punch.py).
"""

from __future__ import annotations

import logging

import pytest
import trio
from tidings.node.net.node import Node, counters, describe
from tidings.node.net.peer import PeerConnection
from tidings.node.net.punch import PunchFailed
from tidings.node.net.upgrade import PUNCHES_PER_MINUTE, _target
from tidings.protocol.reach_events import Punch, PunchGo
from tidings.protocol.replication import State

from tests.support.nodes import follow, has_entry, make_home, post, start_node, wait_until


def _to(node: Node, feed: bytes) -> list[PeerConnection]:
    return [c for c in node.connections.values() if c.feed == feed]


async def _connected(
    nursery: trio.Nursery, tmp_path, **limits
) -> tuple[Node, Node, PeerConnection, PeerConnection]:
    """A dials B (pinned); both connections are ACTIVE with version 3 or later. A follows B."""
    ha, ka = make_home(tmp_path, "a")
    hb, kb = make_home(tmp_path, "b")
    follow(ha, ka, kb)
    b = await start_node(nursery, hb, kb, limits=dict(limits), dht=False)
    a = await start_node(nursery, ha, ka, peers=[b.address], limits=dict(limits), dht=False)

    def ready() -> bool:
        return all(
            len(_to(x, y.key.public_key)) == 1 and _to(x, y.key.public_key)[0].rep.version >= 3
            for x, y in ((a, b), (b, a))
        )

    await wait_until(ready)
    return a, b, _to(a, kb.public_key)[0], _to(b, ka.public_key)[0]


def _relayed(*conns: PeerConnection) -> None:
    for conn in conns:
        conn.path = "relayed"


async def test_a_punched_direct_connection_replaces_the_relayed_one(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tidings")
    async with trio.open_nursery() as nursery:
        a, b, ab, ba = await _connected(nursery, tmp_path)
        assert ab.initiator and not ba.initiator
        _relayed(ab, ba)
        assert a.punching.start(ab)
        assert not a.punching.start(ab)  # one attempt per connection at a time
        kb, ka = b.key.public_key, a.key.public_key

        def upgraded(node: Node, feed: bytes, old: PeerConnection) -> bool:
            conns = _to(node, feed)
            return len(conns) == 1 and conns[0] is not old and conns[0].path == "direct" and old.done.is_set()

        await wait_until(lambda: upgraded(a, kb, ab) and upgraded(b, ka, ba))
        new_ab, new_ba = _to(a, kb)[0], _to(b, ka)[0]
        assert ab.replaced_by is new_ab and new_ab.initiator and not new_ba.initiator
        # the direct connection runs between the punched ports, not the listening ones
        assert new_ab.address != b.address
        assert a.punching.statistics() | {"running": 0} == {
            "attempts": 1,
            "answered": 0,
            "successes": 1,
            "failures": 0,
            "ignored": 0,
            "running": 0,
        }
        await wait_until(lambda: b.punching.statistics()["successes"] == 1)
        assert b.punching.statistics()["answered"] == 1
        # each relayed connection ended with a bye: its own, or the peer's when that came first
        for old in (ab, ba):
            assert State.CLOSED in (old.rep.our_state, old.rep.their_state)
        assert any("upgraded" in r.getMessage() for r in caplog.records)
        assert counters(a)["punch_successes"] == 1 and a.statistics()["punching"]["attempts"] == 1

        # replication goes on over the direct connection
        entry = post(b.home, b.key, "after the upgrade")
        await wait_until(lambda: has_entry(a.home, entry.hash))
        assert new_ab.received >= 1 and not new_ab.done.is_set()
        assert [p["path"] for p in describe(a)["peers"]] == ["direct"]
        nursery.cancel_scope.cancel()


async def test_no_answer_keeps_the_relayed_connection_and_retries(tmp_path):
    async with trio.open_nursery() as nursery:
        a, b, ab, _ba = await _connected(nursery, tmp_path, punch_timeout=0.5, punch_retry=1.0)
        _relayed(ab)  # B sees a direct connection: it ignores the punch, so no answer comes
        started = trio.current_time()
        assert a.punching.start(ab)
        await wait_until(lambda: a.punching.statistics()["failures"] == 1)
        assert trio.current_time() - started >= 0.5  # it waited punch_timeout for the answer
        assert a.punching.statistics()["attempts"] == 1
        assert _to(a, b.key.public_key) == [ab] and ab.path == "relayed" and not ab.done.is_set()
        # the retry after punch_retry
        await wait_until(lambda: a.punching.statistics()["attempts"] == 2)
        assert trio.current_time() - started >= 1.5
        await wait_until(lambda: a.punching.statistics()["failures"] == 2)
        assert b.punching.statistics()["ignored"] == 2 and b.punching.statistics()["answered"] == 0
        assert _to(a, b.key.public_key) == [ab] and not ab.done.is_set()
        nursery.cancel_scope.cancel()


async def test_retries_end_with_the_relayed_connection(tmp_path):
    async with trio.open_nursery() as nursery:
        a, _b, ab, _ba = await _connected(nursery, tmp_path, punch_timeout=0.5, punch_retry=60.0)
        _relayed(ab)
        assert a.punching.start(ab)
        await wait_until(lambda: a.punching.statistics()["failures"] == 1)
        assert id(ab) in a.punching._retrying
        ab.cancel()
        await wait_until(lambda: id(ab) not in a.punching._retrying)
        assert a.punching.statistics()["attempts"] == 1
        nursery.cancel_scope.cancel()


async def test_punch_messages_on_a_direct_connection_are_ignored(tmp_path):
    async with trio.open_nursery() as nursery:
        a, b, ab, ba = await _connected(nursery, tmp_path)
        await ba.send_event(Punch(addresses=(f"{b.local_host()}:9",)))
        await ba.send_event(PunchGo())
        await wait_until(lambda: a.punching.statistics()["ignored"] == 2)
        assert a.punching.statistics()["answered"] == 0 and a.punching.statistics()["running"] == 0
        assert not a.punching.start(ab)  # a direct connection is not punched
        assert _to(a, b.key.public_key) == [ab] and not ab.done.is_set()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("relayed", [False, True])
async def test_a_punch_flood_is_penalized(tmp_path, relayed):
    async with trio.open_nursery() as nursery:
        a, b, ab, ba = await _connected(nursery, tmp_path)
        if relayed:  # the first punch starts an answer; the repeats are ignored, then a flood
            _relayed(ab, ba)
            ab.initiator, ba.initiator = False, True
        for _ in range(PUNCHES_PER_MINUTE + 2):
            await ba.send_event(Punch(addresses=(f"{b.local_host()}:9",)))
        await wait_until(lambda: a.penalties.banned(ab.host) and ab.done.is_set())
        assert a.scores.get(ab.host) < a.scores.threshold
        stats = a.punching.statistics()
        assert stats["answered"] == (1 if relayed else 0)
        assert stats["ignored"] == PUNCHES_PER_MINUTE - stats["answered"]
        nursery.cancel_scope.cancel()


async def test_a_punched_stream_of_another_feed_is_dropped(tmp_path):
    hc, kc = make_home(tmp_path, "c")
    async with trio.open_nursery() as nursery:
        a, b, ab, _ba = await _connected(nursery, tmp_path)
        c = await start_node(nursery, hc, kc, dht=False)
        _relayed(ab)
        host, _, port = c.address.rpartition(":")
        stream = await trio.open_tcp_stream(host, int(port), local_address=a.local_host())
        # the stream reaches C while it should have reached B: the handshake proves the wrong feed
        with trio.fail_after(10):
            assert await a.sessions.serve(stream, c.address, initiator=True, replaces=ab) is None
        assert _to(a, b.key.public_key) == [ab] and not ab.done.is_set() and ab.replaced_by is None
        assert not _to(a, kc.public_key)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("address", ["0.0.0.0:9", "127.0.0.1:0", "example.org:7433"])
async def test_a_punch_to_an_unusable_address_fails_before_binding(tmp_path, address):
    async with trio.open_nursery() as nursery:
        a, b, ab, ba = await _connected(nursery, tmp_path)
        _relayed(ab, ba)
        ab.initiator, ba.initiator = False, True  # A answers B's punch
        await ba.send_event(Punch(addresses=(address,)))
        await wait_until(lambda: a.punching.statistics()["failures"] == 1)
        assert a.punching.statistics()["answered"] == 1 and a.punching.statistics()["running"] == 0
        # no answer was sent: B, whose own attempt would wait for it, ignored nothing
        assert b.punching.statistics()["ignored"] == 0
        assert not ab.done.is_set()
        nursery.cancel_scope.cancel()


def test_a_public_node_opens_only_to_public_addresses():
    assert _target("8.8.8.8:7433", "1.1.1.1") == ("8.8.8.8", 7433)
    assert _target("[2606:4700::1]:7433", None) == ("2606:4700::1", 7433)
    assert _target("10.0.0.2:7433", "10.0.0.1") == ("10.0.0.2", 7433)  # two private peers
    assert _target("127.0.0.9:7433", "127.0.0.2") == ("127.0.0.9", 7433)
    for address in ("10.0.0.2:7433", "127.0.0.1:7433", "[::1]:7433", "224.0.0.1:7433", "8.8.8.8:0"):
        with pytest.raises(PunchFailed):
            _target(address, "1.1.1.1")
