"""Reachability (node/net/reach.py, spec/protocol.md §12.9): the verdict rules, then real nodes on loopback.

Every node has its own 127.x address, but nearly all of them are in one /24, so one address range: the
nodes here use ``reach_quorum`` 1 (a verdict from one range). Distinct ranges are tested in the NAT lab
(tests/node/natlab/test_reach_lab.py).
"""

from __future__ import annotations

import logging
import os
import socket

import pytest
import trio
from tidings.node.addresses import address_range
from tidings.node.net.node import Node
from tidings.node.net.reach import MARGIN, verdict
from tidings.node.net.transport import SecureChannel
from tidings.protocol import SigningKey
from tidings.protocol.reach_events import Dialed, DialMe
from tidings.protocol.replication import Hello, Replication

from tests.support.nodes import make_home, next_host, start_node, start_writer, wait_until

ONE_RANGE = {"reach_quorum": 1}


# -- the verdict (spec §12.9) ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("answers", "quorum", "expected"),
    [
        ({}, 2, "unknown"),  # nobody asked
        ({"a": None}, 1, "unknown"),  # asked, no answer yet
        ({"a": True}, 2, "public"),  # one helper in all: min(quorum, ranges asked) = 1
        ({"a": True, "b": None}, 2, "unknown"),  # two asked, one ok: below min(2, 2)
        ({"a": True, "b": True}, 2, "public"),
        ({"a": True, "b": True, "c": False}, 2, "public"),  # the quorum of ok wins over a failure
        ({"a": True}, 1, "public"),
        ({"a": False}, 2, "private"),  # one helper in all: min(quorum, ranges asked) = 1
        ({"a": False}, 1, "private"),
        ({"a": False, "b": None}, 2, "unknown"),  # two asked, one failure: below min(2, 2)
        ({"a": False, "b": False}, 2, "private"),
        ({"a": False, "b": False, "c": None}, 2, "private"),
        ({"a": False, "b": False, "c": None, "d": None}, 3, "unknown"),
        ({"a": True, "b": False, "c": False}, 2, "unknown"),  # mixed, below the quorum
        ({"a": True, "b": False}, 1, "public"),
        ({"a": None, "b": None}, 1, "unknown"),
    ],
)
def test_verdict_follows_the_rules_of_the_spec(answers, quorum, expected) -> None:
    assert verdict(answers, quorum) == expected


# -- real nodes ---------------------------------------------------------------------------------------
def _homes(tmp_path, asker_key_larger: bool):
    """Two homes, the asker's (the one that dials) with the larger or the smaller feed key (spec §12.8:
    the larger key's own dial gives way to the other's, which a dial-back must not trigger)."""
    one, two = make_home(tmp_path, "one"), make_home(tmp_path, "two")
    small, large = sorted([one, two], key=lambda hk: hk[1].public_key)
    return (large, small) if asker_key_larger else (small, large)


@pytest.mark.parametrize("asker_key_larger", [True, False])
async def test_a_reachable_node_becomes_public_and_keeps_its_connection(tmp_path, asker_key_larger) -> None:
    (ha, ka), (hh, kh) = _homes(tmp_path, asker_key_larger)
    async with trio.open_nursery() as nursery:
        helper = await start_node(nursery, hh, kh, limits=ONE_RANGE, dht=False)
        asker = await start_node(nursery, ha, ka, limits=ONE_RANGE, peers=[helper.address], dht=False)
        await wait_until(lambda: len(asker.connections) == 1 and len(helper.connections) == 1)
        (mine,) = asker.connections.values()
        (theirs,) = helper.connections.values()
        # Each asks the other: each becomes public, so each took the other's dial-back (its handshake).
        await wait_until(lambda: asker.reach.state == helper.reach.state == "public")
        assert asker.reach.counts["helped"] == helper.reach.counts["helped"] == 1
        # answers are kept by the helper's address range
        assert asker.reach.answers == {address_range(helper.local_host()): True}
        assert helper.reach.answers == {address_range(asker.local_host()): True}
        # The helper saw the asker's connection come from the asker's own address and port.
        assert asker.reach.observed == mine.channel.stream.socket.getsockname()[0] + (
            f":{mine.channel.stream.socket.getsockname()[1]}"
        )
        assert helper.reach.observed == f"{helper.local_host()}:{helper.address.rsplit(':', 1)[1]}"
        # The dial-backs neither replaced nor joined the one connection between them.
        assert list(asker.connections.values()) == [mine] and list(helper.connections.values()) == [theirs]
        assert not mine.done.is_set() and not theirs.done.is_set()
        assert asker.scores.get(helper.local_host()) >= 0 and helper.scores.get(asker.local_host()) >= 0
        info = asker.node_file.path.read_text()
        assert '"reachability": "public"' in info
        nursery.cancel_scope.cancel()


async def test_a_node_whose_port_is_closed_becomes_private(tmp_path) -> None:
    (ha, ka), (hh, kh) = make_home(tmp_path, "asker"), make_home(tmp_path, "helper")
    host = next_host()
    closed = socket.socket()  # bound, never listening: a dial to it is refused
    closed.bind((host, 0))
    try:
        async with trio.open_nursery() as nursery:
            helper = await start_node(nursery, hh, kh, limits=ONE_RANGE, dht=False)
            asker = Node(ha, ka, listen=f"{host}:0", limits=ONE_RANGE, peers=[helper.address], dht=False)
            asker.reach.port = closed.getsockname()[1]
            await nursery.start(asker.run)
            await wait_until(lambda: asker.reach.state == "private")
            assert asker.reach.answers == {address_range(helper.local_host()): False}
            assert asker.reach.observed is not None and asker.reach.observed.startswith(f"{host}:")
            assert len(asker.connections) == 1  # the failure costs nothing
            assert '"reachability": "private"' in asker.node_file.path.read_text()
            nursery.cancel_scope.cancel()
    finally:
        closed.close()


async def test_a_peer_asking_twice_within_the_interval_is_refused_and_pays(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="tidings.reach")
    (ha, ka), (hh, kh) = make_home(tmp_path, "asker"), make_home(tmp_path, "helper")
    async with trio.open_nursery() as nursery:
        helper = await start_node(nursery, hh, kh, limits=ONE_RANGE, dht=False)
        asker = await start_node(nursery, ha, ka, limits=ONE_RANGE, peers=[helper.address], dht=False)
        await wait_until(lambda: asker.reach.state == "public")  # the helper dialled it back once
        assert helper.reach.counts["helped"] == 1 and helper.scores.get(asker.local_host()) >= 0
        (conn,) = asker.connections.values()
        await conn.send_event(DialMe(nonce=os.urandom(16), port=1))
        await wait_until(lambda: helper.reach.counts["refused"] == 1)
        assert helper.reach.counts["helped"] == 1  # no second dial
        # a flood (spec §12.8.4, -50): below the threshold, so the helper cuts the asker off
        assert helper.scores.get(asker.local_host()) < -45
        assert helper.penalties.banned(asker.local_host())
        await wait_until(
            lambda: any("refused to dial us back: busy" in r.getMessage() for r in caplog.records)
        )
        nursery.cancel_scope.cancel()


async def test_nodes_sharing_one_address_are_each_dialled_back_and_none_pays(tmp_path) -> None:
    """Two nodes behind one home router's address (here: one 127.x host, two ports) each get their
    dial-back within the interval; only the same connection asking again is a flood (spec §12.9)."""
    (h1, k1), (h2, k2), (hh, kh) = (make_home(tmp_path, n) for n in ("one", "two", "helper"))
    shared = next_host()
    async with trio.open_nursery() as nursery:
        helper = await start_node(nursery, hh, kh, limits=ONE_RANGE, dht=False)
        for home, key in ((h1, k1), (h2, k2)):
            node = Node(home, key, listen=f"{shared}:0", limits=ONE_RANGE, peers=[helper.address], dht=False)
            await nursery.start(node.run)
            await wait_until(lambda n=node: n.reach.state == "public")
        assert helper.reach.counts["helped"] == 2 and helper.reach.counts["refused"] == 0
        assert helper.scores.get(shared) >= 0 and not helper.penalties.banned(shared)
        nursery.cancel_scope.cancel()


async def _scripted_peer(address: str, key: SigningKey, nursery: trio.Nursery):
    """A hand-driven version-3 peer from its own address: (its host, its channel, its machine)."""
    host, port = address.rsplit(":", 1)
    mine = next_host()
    stream = await trio.open_tcp_stream(host, int(port), local_address=mine)
    channel = await SecureChannel.handshake(
        stream, initiator=True, identity=key, transport_private=os.urandom(32)
    )
    rep = Replication()
    await start_writer(nursery, channel)
    await channel.send(rep.send(Hello(agent="script")))
    rep.receive(await channel.receive())
    return mine, channel, rep


async def _next_dialed(channel: SecureChannel, rep: Replication) -> Dialed:
    while True:
        event = rep.receive(await channel.receive())
        if isinstance(event, Dialed):
            return event


async def test_the_helper_dials_the_ip_the_request_came_from(tmp_path) -> None:
    hh, kh = make_home(tmp_path, "helper")
    key = SigningKey(os.urandom(32))
    async with trio.open_nursery() as nursery:
        helper = await start_node(nursery, hh, kh, dht=False)
        mine, channel, rep = await _scripted_peer(helper.address, key, nursery)
        listeners = await trio.open_tcp_listeners(0, host=mine)  # where the dial-back must arrive
        port = listeners[0].socket.getsockname()[1]
        dialled: list[str] = []

        async def answer() -> None:
            stream = await listeners[0].accept()
            dialled.append(stream.socket.getpeername()[0])
            back = await SecureChannel.handshake(
                stream, initiator=False, identity=key, transport_private=os.urandom(32)
            )
            assert back.remote_feed == kh.public_key
            await stream.aclose()

        nursery.start_soon(answer)
        nonce = os.urandom(16)
        await channel.send(rep.send(DialMe(nonce=nonce, port=port)))
        with trio.fail_after(10):
            event = await _next_dialed(channel, rep)
        assert event.nonce == nonce and event.ok is True
        assert dialled == [helper.local_host()]  # from the helper's own address
        assert event.observed == f"{mine}:{channel.stream.socket.getsockname()[1]}"
        await listeners[0].aclose()
        await channel.stream.aclose()
        nursery.cancel_scope.cancel()


async def test_a_helper_that_never_answers_counts_as_no_answer(tmp_path) -> None:
    ha, ka = make_home(tmp_path, "asker")
    key = SigningKey(os.urandom(32))
    limits = {**ONE_RANGE, "dial_back_timeout": 0.5}
    async with trio.open_nursery() as nursery:
        asker = await start_node(nursery, ha, ka, limits=limits, dht=False)
        mine, channel, rep = await _scripted_peer(asker.address, key, nursery)
        while not isinstance(event := rep.receive(await channel.receive()), DialMe):
            pass
        # A dialed with another nonce is ignored; the question stays open until its deadline.
        await channel.send(rep.send(Dialed(nonce=bytes(16), ok=True, observed="127.0.0.1:1")))
        started = trio.current_time()
        await wait_until(lambda: asker.reach.statistics()["open"] == 0, timeout=10)
        assert trio.current_time() - started >= 0.5 + MARGIN - 0.5
        assert asker.reach.state == "unknown" and asker.reach.answers == {address_range(mine): None}
        assert asker.reach.counts == {**asker.reach.counts, "asked": 1, "answered": 0}
        assert event.port == int(asker.address.rsplit(":", 1)[1])
        assert len(asker.connections) == 1  # the silent helper is still a peer
        await channel.stream.aclose()
        nursery.cancel_scope.cancel()


async def test_without_answers_the_asker_asks_again_after_the_interval(tmp_path) -> None:
    """Helpers that were busy or silent leave the verdict unknown: the node asks again once
    ``dial_back_interval`` has passed, not only at the next ``reach_recheck`` (spec §12.9)."""
    ha, ka = make_home(tmp_path, "asker")
    limits = {**ONE_RANGE, "dial_back_timeout": 0.5, "dial_back_interval": 1.0, "reach_recheck": 600.0}
    async with trio.open_nursery() as nursery:
        asker = await start_node(nursery, ha, ka, limits=limits, dht=False)
        _, channel, rep = await _scripted_peer(asker.address, SigningKey(os.urandom(32)), nursery)
        asked = []
        with trio.fail_after(15):
            while len(asked) < 2:  # the peer stays silent; the second dial_me comes within seconds
                event = rep.receive(await channel.receive())
                if isinstance(event, DialMe):
                    asked.append(trio.current_time())
        assert asked[1] - asked[0] >= 1.0
        assert asker.reach.state == "unknown" and asker.reach.counts["asked"] >= 2
        await channel.stream.aclose()
        nursery.cancel_scope.cancel()
