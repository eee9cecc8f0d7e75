"""Relays by peers (spec/protocol.md §12.10) with real nodes on loopback: a private node reserves on a
relay, another reaches it through the relay, and replication runs end to end over the circuit; and the
relay's budgets against hostile peers."""

from __future__ import annotations

import os

import trio
from tidings.node.addresses import parse_address
from tidings.node.net.node import Node, counters, describe
from tidings.node.net.transport import ChannelClosed, SecureChannel
from tidings.protocol import SigningKey, feed_id_text
from tidings.protocol.reach_events import (
    Connect,
    Connected,
    DialMe,
    Refused,
    Reserve,
    Reserved,
    WireMessage,
)
from tidings.protocol.replication import Hello, Replication
from tidings.storage.peers import list_peers
from tidings.storage.store import Store

from tests.support.nodes import (
    count,
    follow,
    has_entry,
    make_home,
    next_host,
    post,
    start_node,
    start_writer,
    wait_until,
)


async def open_raw(address: str, host: str) -> trio.SocketStream:
    h, p = parse_address(address)
    return await trio.open_tcp_stream(h, p, local_address=host)


async def raw_session(address: str, host: str, key: SigningKey | None = None) -> SecureChannel:
    """A scripted peer's handshake with the node at ``address``, nothing sent after it."""
    stream = await open_raw(address, host)
    return await SecureChannel.handshake(
        stream, initiator=True, identity=key or SigningKey(os.urandom(32)), transport_private=os.urandom(32)
    )


async def private_behind(nursery: trio.Nursery, tmp_path, relay: Node, **kwargs) -> tuple[Node, SigningKey]:
    """A private node B that dialled ``relay`` and holds a reservation on it."""
    hb, kb = make_home(tmp_path, "b")
    b = await start_node(nursery, hb, kb, peers=[relay.address], **kwargs)
    b.reach.pin("private")
    await wait_until(lambda: b.relays.relay_addresses() == [(relay.key.public_key, relay.address)])
    return b, kb


async def next_reach(channel: SecureChannel, rep: Replication):
    """The next version-3 message the node sends a scripted peer (its clocks and the like skipped, and
    its requests to be dialled back: it asks every version-3 peer, spec §12.9)."""
    while True:
        event = rep.receive(await channel.receive())
        if isinstance(event, WireMessage) and not isinstance(event, DialMe):
            return event


def peers_named(node: Node, key: SigningKey) -> list[dict]:
    with Store(node.home.store_path) as store:
        return [p for p in list_peers(store) if p["feed"] == feed_id_text(key.public_key)]


async def test_a_private_node_is_reached_through_a_relay(tmp_path):
    hr, kr = make_home(tmp_path, "r")
    ha, ka = make_home(tmp_path, "a")
    async with trio.open_nursery() as nursery:
        r = await start_node(nursery, hr, kr)
        b, kb = await private_behind(nursery, tmp_path, r)
        assert r.relays.statistics()["reservations"] == 1
        assert describe(b)["relays"] == [[feed_id_text(kr.public_key), r.address]]
        first = post(b.home, kb, "from behind a NAT")
        follow(ha, ka, kb)
        a = await start_node(nursery, ha, ka)
        conn = await a.relays.dial_via(kb.public_key, [(kr.public_key, r.address)])
        assert conn is not None and conn.feed == kb.public_key
        assert (conn.path, conn.relay) == ("relayed", kr.public_key)
        assert conn.host == f"relay:{kb.public_key.hex()}"  # its faults are its own, not the relay's
        await wait_until(lambda: has_entry(ha, first.hash))
        live = post(b.home, kb, "live, through the relay")
        await wait_until(lambda: has_entry(ha, live.hash))
        (back,) = [c for c in b.connections.values() if c.feed == ka.public_key]
        assert (back.path, back.relay, back.initiator) == ("relayed", kr.public_key, False)
        relayed = {
            "feed": feed_id_text(kb.public_key),
            "path": "relayed",
            "relay": feed_id_text(kr.public_key),
        }
        assert any(relayed.items() <= p.items() for p in describe(a)["peers"])
        # the relay carried ciphertext only: it stored nothing of B, and never took A for a peer
        assert count(hr, kb.public_key) == 0
        assert all(c.feed != ka.public_key for c in r.connections.values())
        assert peers_named(r, ka) == []
        stats = r.relays.statistics()
        assert stats["circuits"] == 1 and stats["circuits_total"] == 1 and stats["bytes_relayed"] > 0
        assert counters(r)["relay_bytes"] == stats["bytes_relayed"]
        # A noted B as met through a relay, with no address of B's (the relay's is not B's)
        (noted,) = peers_named(a, kb)
        assert noted["addresses"] == [] and noted["source"] == "relayed"
        nursery.cancel_scope.cancel()


async def test_a_reserve_flood_is_cut_off_and_other_circuits_go_on(tmp_path):
    hr, kr = make_home(tmp_path, "r")
    ha, ka = make_home(tmp_path, "a")
    async with trio.open_nursery() as nursery:
        r = await start_node(nursery, hr, kr)
        b, kb = await private_behind(nursery, tmp_path, r)
        follow(ha, ka, kb)
        a = await start_node(nursery, ha, ka)
        conn = await a.relays.dial_via(kb.public_key, [(kr.public_key, r.address)])
        assert conn is not None
        host = next_host()
        channel = await raw_session(r.address, host)
        await start_writer(nursery, channel)
        rep = Replication()
        await channel.send(rep.send(Hello(agent="flood")))
        rep.receive(await channel.receive())  # the relay's hello
        await channel.send(rep.send(Reserve()))
        assert isinstance(await next_reach(channel, rep), Reserved)
        await channel.send(rep.send(Reserve()))  # again within the minute: flood
        answer = await next_reach(channel, rep)
        assert isinstance(answer, Refused) and (answer.what, answer.code) == ("reserve", "busy")
        try:
            with trio.fail_after(5):
                while True:
                    await channel.receive()
        except ChannelClosed:
            pass
        await channel.aclose()
        assert r.penalties.banned(host)
        # B keeps its reservation and its circuit: a new post still reaches A through the relay
        assert kb.public_key in r.relays._live()
        entry = post(b.home, kb, "still relayed")
        await wait_until(lambda: has_entry(ha, entry.hash))
        assert conn in a.connections.values() and r.relays.statistics()["circuits"] == 1
        nursery.cancel_scope.cancel()


async def test_connect_without_reservation_is_refused_and_costs_score(tmp_path):
    hr, kr = make_home(tmp_path, "r")
    async with trio.open_nursery() as nursery:
        r = await start_node(nursery, hr, kr)
        host = next_host()
        key = SigningKey(os.urandom(32))
        channel = await raw_session(r.address, host, key)
        rep = Replication()
        await channel.write_now(rep.send(Connect(target=os.urandom(32))))
        assert isinstance(rep.receive(await channel.receive()), Hello)  # sent before it knew
        answer = rep.receive(await channel.receive())
        assert isinstance(answer, Refused) and (answer.what, answer.code) == ("connect", "no_reservation")
        await wait_until(lambda: r.penalties.banned(host))  # below the threshold: cut off
        assert r.scores.get(host) < r.scores.threshold
        again = await open_raw(r.address, host)
        with trio.fail_after(5):
            assert await again.receive_some(100) == b""  # refused before any handshake
        await again.aclose()
        await channel.aclose()
        # a relay connection is never a peer: not registered, not noted
        assert all(c.feed != key.public_key for c in r.connections.values())
        assert peers_named(r, key) == []
        nursery.cancel_scope.cancel()


async def test_a_circuit_over_its_byte_bound_is_cut_and_its_initiator_pays(tmp_path):
    hr, kr = make_home(tmp_path, "r")
    ha, ka = make_home(tmp_path, "a")
    async with trio.open_nursery() as nursery:
        r = await start_node(nursery, hr, kr, limits={"relay_circuit_bytes": 65_536})
        b, kb = await private_behind(nursery, tmp_path, r)
        for i in range(400):
            post(b.home, kb, f"{i} " + "x" * 400)  # about 200 KB: more than the circuit may carry
        follow(ha, ka, kb)
        a = await start_node(nursery, ha, ka)
        conn = await a.relays.dial_via(kb.public_key, [(kr.public_key, r.address)])
        assert conn is not None
        await wait_until(lambda: r.relays.circuits_cut == 1)
        await conn.done.wait()  # A's relayed connection ended with the circuit
        assert r.relays.bytes_relayed <= 65_536
        a_host = a.local_host()
        assert a_host is not None and r.scores.get(a_host) < 0
        assert count(ha, kb.public_key) < 401  # the circuit did not carry everything
        nursery.cancel_scope.cancel()


async def test_a_circuit_that_outlives_its_time_is_cut_and_costs_a_little(tmp_path):
    """An endless stream: at ``relay_circuit_seconds`` the relay closes the circuit (spec §12.10) and the
    initiator loses a little score (``idle``), far from being cut off: a long honest sync may end so."""
    hr, kr = make_home(tmp_path, "r")
    ha, ka = make_home(tmp_path, "a")
    async with trio.open_nursery() as nursery:
        r = await start_node(nursery, hr, kr, limits={"relay_circuit_seconds": 1.0})
        _b, kb = await private_behind(nursery, tmp_path, r)
        follow(ha, ka, kb)
        a = await start_node(nursery, ha, ka)
        conn = await a.relays.dial_via(kb.public_key, [(kr.public_key, r.address)])
        assert conn is not None
        started = trio.current_time()
        await conn.done.wait()
        assert 0.9 <= trio.current_time() - started < 10
        await wait_until(lambda: r.relays.circuits_cut == 1)
        a_host = a.local_host()
        assert a_host is not None and -5 < r.scores.get(a_host) < 0 and not r.penalties.banned(a_host)
        nursery.cancel_scope.cancel()


async def test_a_node_with_relay_off_refuses_reservations(tmp_path):
    hr, kr = make_home(tmp_path, "r")
    hb, kb = make_home(tmp_path, "b")
    async with trio.open_nursery() as nursery:
        r = await start_node(nursery, hr, kr, relay=False)
        b = await start_node(nursery, hb, kb, peers=[r.address])
        b.reach.pin("private")
        await wait_until(lambda: r.relays.refused.get("relay_off", 0) == 1)
        assert b.relays.relay_addresses() == [] and r.relays.statistics()["reservations"] == 0
        assert kr.public_key in b.relays.client._refused  # not asked again for a while
        nursery.cancel_scope.cancel()


async def test_the_inbound_opening_keeps_version_2_peers_and_hides_relay_connections(tmp_path):
    hr, kr = make_home(tmp_path, "r")
    async with trio.open_nursery() as nursery:
        r = await start_node(nursery, hr, kr)
        # a version-2 peer
        old = SigningKey(os.urandom(32))
        channel = await raw_session(r.address, next_host(), old)
        await start_writer(nursery, channel)
        rep = Replication()
        await channel.send(rep.send(Hello(agent="old", versions=(1, 2))))
        assert rep.receive(await channel.receive()) == Hello(agent=r.agent)
        await wait_until(lambda: any(c.feed == old.public_key for c in r.connections.values()))
        (conn,) = [c for c in r.connections.values() if c.feed == old.public_key]
        assert conn.rep.version == 2 and rep.version == 2 and not conn.initiator
        await channel.aclose()
        # a relay connection whose target accepts never shows up while it waits, nor after
        b, kb = await private_behind(nursery, tmp_path, r)
        key = SigningKey(os.urandom(32))
        relay_conn = await raw_session(r.address, next_host(), key)
        outer = Replication()
        await relay_conn.write_now(outer.send(Connect(target=kb.public_key)))
        outer.receive(await relay_conn.receive())  # hello
        connected = outer.receive(await relay_conn.receive())
        assert isinstance(connected, Connected) and connected.peer == kb.public_key
        assert all(c.feed != key.public_key for c in r.connections.values())
        assert peers_named(r, key) == []
        # B answered the incoming and waits for our end-to-end handshake (we never send one)
        await wait_until(lambda: b.relays.client.accepted == 1)
        await relay_conn.aclose()
        await wait_until(lambda: r.relays.statistics()["circuits"] == 0)
        nursery.cancel_scope.cancel()


async def test_reservations_are_renewed_and_end_with_their_connection(tmp_path):
    hr, kr = make_home(tmp_path, "r")
    async with trio.open_nursery() as nursery:
        r = await start_node(nursery, hr, kr, limits={"relay_reservation_seconds": 2.0})
        b, kb = await private_behind(nursery, tmp_path, r)
        await wait_until(lambda: r.relays.granted >= 3)  # renewed at three quarters: never a flood
        assert r.scores.get(b.local_host() or "") >= 0 and kb.public_key in r.relays._live()
        assert b.relays.relay_addresses() == [(kr.public_key, r.address)]
        b.reach.pin("public")  # no longer private: the reservation is given up
        await wait_until(lambda: b.relays.relay_addresses() == [])
        await wait_until(lambda: kb.public_key not in r.relays._live())  # it expired unrenewed
        nursery.cancel_scope.cancel()


async def test_circuits_per_initiator_are_bounded(tmp_path):
    hr, kr = make_home(tmp_path, "r")
    async with trio.open_nursery() as nursery:
        r = await start_node(nursery, hr, kr, limits={"relay_circuits_per_peer": 1})
        _b, kb = await private_behind(nursery, tmp_path, r)
        key, host = SigningKey(os.urandom(32)), next_host()
        answers = []
        channels = []
        for _ in range(2):
            channel = await raw_session(r.address, host, key)
            channels.append(channel)
            rep = Replication()
            await channel.write_now(rep.send(Connect(target=kb.public_key)))
            rep.receive(await channel.receive())  # hello
            answers.append(rep.receive(await channel.receive()))
        assert isinstance(answers[0], Connected)
        assert isinstance(answers[1], Refused) and answers[1].code == "relay_full"
        assert r.scores.get(host) == 0  # room running out is nobody's fault
        for channel in channels:
            await channel.aclose()
        nursery.cancel_scope.cancel()


async def test_a_feed_reached_through_relays_is_reached_again_when_its_connection_ends(tmp_path):
    """``dial_soon`` (a node record listed relays) keeps the feed connected: when the connection ends
    (a relay's budget, a dropped punched one), it dials through the relay again (spec §12.10)."""
    hr, kr = make_home(tmp_path, "r")
    ha, ka = make_home(tmp_path, "a")
    async with trio.open_nursery() as nursery:
        r = await start_node(nursery, hr, kr)
        b, kb = await private_behind(nursery, tmp_path, r)
        follow(ha, ka, kb)
        a = await start_node(nursery, ha, ka)
        await wait_until(lambda: kb.public_key in a.wanted)
        a.dial_via_relays(kb.public_key, [(kr.public_key, r.address)])
        await wait_until(lambda: any(c.feed == kb.public_key for c in a.connections.values()))
        first = next(c for c in a.connections.values() if c.feed == kb.public_key)
        first.cancel()  # the connection ends, whatever its path by now
        await wait_until(
            lambda: any(c.feed == kb.public_key and c is not first for c in a.connections.values()), 20
        )
        entry = post(b.home, kb, "after the reconnect")
        await wait_until(lambda: has_entry(ha, entry.hash))
        assert a.relays.client.dialled >= 2
        nursery.cancel_scope.cancel()
