"""Swarms of real nodes in one process (node/lab/swarmlab.py): real TCP and UDP sockets on 127.1.x.y, real
SQLite stores, the real DHT. Every post must reach every node that wants it, through losses,
partitions and a malicious peer."""

from __future__ import annotations

import os
import random

import pytest
import trio
from tidings.node.addresses import parse_address
from tidings.node.lab.swarmlab import SwarmLab
from tidings.node.net.transport import SecureChannel
from tidings.protocol import Post, SigningKey
from tidings.protocol.entry import peek_position
from tidings.protocol.replication import Clock, Entries, Hello, Replication
from tidings.storage.integrity import verify_store
from tidings.storage.store import Store

from tests.support.entries import chain_of
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


async def knows_whole_swarm(lab: SwarmLab, among: list[int], timeout: float) -> None:
    """Every node of ``among`` wants every member's feed (it has met the whole swarm)."""
    n = lab.n
    with trio.fail_after(timeout):
        while not all(
            lab.members[i].node is not None and len(lab.members[i].node.wanted) >= n for i in among
        ):
            await trio.sleep(0.2)


async def delivered(lab: SwarmLab, among: list[int], timeout: float) -> None:
    if not await lab.wait_delivered(among, timeout):
        arrivals = await lab.arrivals(among)
        missing = {
            h.hex()[:8]: sorted(set(among) - set(where) - {lab.posts[h][0]})
            for h, where in arrivals.items()
            if len(where) < len(among)
        }
        pytest.fail(f"not delivered within {timeout} s: {missing}")


@pytest.mark.slow
async def test_thirty_nodes_deliver_everything_and_survive_losing_the_bootstrap_and_30_percent(tmp_path):
    n = 30
    lab = SwarmLab(tmp_path, n, swarm="test", follows=5, seed=7)
    await trio.to_thread.run_sync(lab.make_homes)
    everyone = list(range(n))
    async with trio.open_nursery() as nursery, lab.running(nursery):
        await knows_whole_swarm(lab, everyone, 120)
        for i in everyone:
            await lab.post(i, f"first round from {i}")
        await delivered(lab, everyone, 60)
        # every node dials a bounded number of peers (target 8), not one per member
        nodes = [m.node for m in lab.members if m.node is not None]
        assert max(sum(1 for c in node.connections.values() if c.initiator) for node in nodes) <= 8
        assert sum(len(node.connections) for node in nodes) / n <= 18

        rng = random.Random(3)
        dead = [0, *rng.sample(range(1, n), 9)]  # the bootstrap node and 30% of the others
        for i in dead:
            await lab.kill(i)
        survivors = [i for i in everyone if i not in dead]
        for i in survivors:
            await lab.post(i, f"second round from {i}")
        # posts of the dead nodes are held by the survivors already; new ones must reach all survivors
        await delivered(lab, survivors, 90)
        nursery.cancel_scope.cancel()


async def test_a_partitioned_node_catches_up_when_it_returns(tmp_path):
    n = 8
    lab = SwarmLab(tmp_path, n, swarm="test", follows=3, seed=11)
    await trio.to_thread.run_sync(lab.make_homes)
    everyone = list(range(n))
    away = 5
    others = [i for i in everyone if i != away]
    async with trio.open_nursery() as nursery, lab.running(nursery):
        await knows_whole_swarm(lab, everyone, 60)
        await lab.kill(away)
        for k in range(30):
            await lab.post(others[k % len(others)], f"while 5 is away: {k}")
        await delivered(lab, others, 30)
        # node 5 writes while cut off (as `tidings post` does without a running node)
        m = lab.members[away]
        with Store(m.home.store_path) as store:
            assert int(store.read("SELECT count(*) FROM posts")[0][0]) == 0
            for k in range(5):
                entry = store.append(m.key, Post(text=f"offline post {k}"))
                lab.posts[entry.hash] = (away, entry.timestamp / 1000)
        await lab.start(away)
        await delivered(lab, everyone, 60)
        nursery.cancel_scope.cancel()


async def _attack(address: str, evil_host: str, send) -> None:
    """Connect from ``evil_host`` with a fresh identity and run ``send(channel, rep)`` until cut off."""
    host, port = parse_address(address)
    stream = await trio.open_tcp_stream(host, port, local_address=evil_host)
    channel = await SecureChannel.handshake(
        stream, initiator=True, identity=SigningKey(os.urandom(32)), transport_private=os.urandom(32)
    )
    rep = Replication()
    try:
        async with channel.writing():
            await channel.send(rep.send(Hello(agent="tidings")))
            rep.receive(await channel.receive())
            with trio.move_on_after(5):
                await send(channel, rep)
                while True:
                    await channel.receive()
    except Exception:
        pass  # the node cut us off
    finally:
        await channel.aclose()


async def test_a_malicious_swarm_member_is_cut_off_and_delivery_stays_complete(tmp_path):
    n = 6
    lab = SwarmLab(tmp_path, n, swarm="test", follows=2, seed=5, limits={"ban_seconds": 60})
    await trio.to_thread.run_sync(lab.make_homes)
    everyone = list(range(n))
    sybil = chain_of(SigningKey(os.urandom(32)), tmp_path, 3)  # a feed nobody asked for
    sybil_author = peek_position(sybil[0][0])[0]
    forger, flooder = "127.1.9.9", "127.1.9.10"
    async with trio.open_nursery() as nursery, lab.running(nursery):
        await knows_whole_swarm(lab, everyone, 60)
        victims = [m for m in lab.members if m.node is not None][:3]

        async with trio.open_nursery() as attacks:
            for m in victims:
                raw, payload = (
                    await m.node.db.call(
                        Store.read,
                        "SELECT raw, payload FROM entries WHERE author = ? LIMIT 1",
                        (m.key.public_key,),
                    )
                )[0]
                forged = bytearray(raw)
                forged[-1] ^= 1  # the signature is the last field: the victim's own entry, altered

                async def invalid(channel, rep, forged=bytes(forged), payload=bytes(payload)):
                    await channel.send(rep.send(Entries(items=[(forged, payload)])))

                async def flood(channel, rep):
                    for _ in range(200):
                        await channel.send(rep.send(Entries(items=sybil)))

                attacks.start_soon(_attack, m.node.address, forger, invalid)
                attacks.start_soon(_attack, m.node.address, flooder, flood)
        for m in victims:
            for host in (forger, flooder):
                assert m.node.penalties.banned(host), (m.index, host)
                assert m.node.scores.get(host) < m.node.scores.threshold, (m.index, host)
                assert not any(c.host == host for c in m.node.connections.values())
        for i in everyone:
            await lab.post(i, f"after the attack from {i}")
        await delivered(lab, everyone, 30)
        for m in lab.members:
            held = await m.node.db.call(
                Store.read, "SELECT count(*) FROM entries WHERE author = ?", (sybil_author,)
            )
            assert held[0][0] == 0
            report = await m.node.db.call(verify_store)
            assert report["ok"], report
        nursery.cancel_scope.cancel()


async def test_a_lazy_peer_sends_have_notes_and_is_grafted_when_nothing_else_delivers(tmp_path):
    """S (author) - P - R in a line; R asks P to push S's feed lazily, so it learns of new entries from
    ``have`` notes and grafts P after ``graft_delay`` (spec §12.7)."""
    hs, ks = make_home(tmp_path, "s")
    hp, kp = make_home(tmp_path, "p")
    hr, kr = make_home(tmp_path, "r")
    follow(hp, kp, ks)
    follow(hr, kr, ks)
    lazy = {"eager_peers": 0, "min_eager_peers": 0, "graft_delay": 0.05, "target_connections": 0}
    async with trio.open_nursery() as nursery:
        s = await start_node(nursery, hs, ks)
        p = await start_node(nursery, hp, kp, peers=[s.address], limits={"target_connections": 0})
        r = await start_node(nursery, hr, kr, peers=[p.address], limits=lazy)
        await wait_until(lambda: len(r.connections) == 1 and len(p.connections) == 2)
        conn = next(iter(r.connections.values()))
        p_to_r = next(c for c in p.connections.values() if c.feed == kr.public_key)
        await wait_until(
            lambda: ks.public_key in conn.gossip.lazy_in and ks.public_key in p_to_r.rep.peer_lazy
        )
        entry = post(hs, ks, "travels as a note first")
        await wait_until(lambda: has_entry(hr, entry.hash), timeout=5)
        assert ks.public_key not in conn.gossip.lazy_in  # grafted: P pushes S's feed eagerly now
        assert p_to_r.haves_sent >= 1
        later = post(hs, ks, "pushed directly")
        await wait_until(lambda: has_entry(hr, later.hash), timeout=3)
        nursery.cancel_scope.cancel()


async def test_duplicates_prune_extra_eager_peers(tmp_path):
    """Four nodes all connected, all wanting A's feed: after some posts, each receiver gets A's entries
    from fewer peers than it is connected to (the duplicates made it ask the others to be lazy)."""
    homes = [make_home(tmp_path, name) for name in "abcd"]
    (ha, ka), rest = homes[0], homes[1:]
    for h, k in rest:
        follow(h, k, ka)
    limits = {"eager_peers": 3, "min_eager_peers": 1}
    async with trio.open_nursery() as nursery:
        nodes = []
        for h, k in homes:
            nodes.append(await start_node(nursery, h, k, peers=[n.address for n in nodes], limits=limits))
        await wait_until(lambda: all(len(n.connections) == 3 for n in nodes))
        for i in range(20):
            entry = post(ha, ka, f"post {i}")
            await wait_until(lambda e=entry: all(has_entry(h, e.hash) for h, _ in rest), timeout=5)
        for node in nodes[1:]:
            eager = node.gossip.eager_set(ka.public_key) & set(node.connections)
            assert len(eager) < 3, node.statistics()
        sent = sum(n.sent_entries for n in nodes)
        assert sent < 20 * 3 * 2  # far fewer than every connection pushing every entry
        nursery.cancel_scope.cancel()


async def test_a_feed_over_its_live_budget_is_paused_then_fetched_in_full(tmp_path):
    ha, ka = make_home(tmp_path, "a")
    hb, kb = make_home(tmp_path, "b")
    follow(hb, kb, ka)
    budget = {"feed_entries_per_second": 40.0, "feed_burst": 20}
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, ha, ka)
        b = await start_node(nursery, hb, kb, peers=[a.address], limits=budget)
        await wait_until(lambda: len(b.connections) == 1)
        conn = next(iter(b.connections.values()))
        await wait_until(lambda: conn._caught_up_in >= conn._clocks_out > 0)
        with Store(ha.store_path) as store:
            for i in range(150):
                store.append(ka, Post(text=f"burst {i}"))
        await wait_until(lambda: b.gossip.paused(id(conn), ka.public_key), timeout=5)
        total = count(ha, ka.public_key)
        assert total >= 150
        await wait_until(lambda: count(hb, ka.public_key) == total, timeout=20)
        nursery.cancel_scope.cancel()


async def test_peer_exchange_brings_a_wanted_feed_within_reach(tmp_path):
    """C follows B but only knows A; A tells C where B is (``peers``), and C connects to B itself."""
    ha, ka = make_home(tmp_path, "a")
    hb, kb = make_home(tmp_path, "b")
    hc, kc = make_home(tmp_path, "c")
    follow(hc, kc, kb)
    async with trio.open_nursery() as nursery:
        b = await start_node(nursery, hb, kb, dht=False)
        a = await start_node(nursery, ha, ka, peers=[b.address], dht=False)
        c = await start_node(nursery, hc, kc, peers=[a.address], dht=False, limits={"hops": 1})
        await wait_until(
            lambda: any(conn.feed == kb.public_key for conn in c.connections.values()), timeout=10
        )
        cand = c.manager.candidates[b.address]
        assert cand.source == "pex" and cand.feed == kb.public_key
        entry = post(hb, kb, "found through a friend")
        await wait_until(lambda: has_entry(hc, entry.hash), timeout=5)
        nursery.cancel_scope.cancel()


async def test_a_hole_left_by_out_of_order_delivery_is_asked_for_again(tmp_path):
    """Entries 1, 2 and 4 arrive, 3 does not: the node asks the peer again from seq 2 (spec §12.7)."""
    from tidings.protocol import decode

    hr, kr = make_home(tmp_path, "r")
    author = SigningKey(os.urandom(32))
    follow(hr, kr, author)
    chain = chain_of(author, tmp_path, 4)
    async with trio.open_nursery() as nursery:
        r = await start_node(nursery, hr, kr, limits={"graft_delay": 0.05})
        host, port = parse_address(r.address)
        stream = await trio.open_tcp_stream(host, port, local_address=next_host())
        channel = await SecureChannel.handshake(
            stream, initiator=True, identity=SigningKey(os.urandom(32)), transport_private=os.urandom(32)
        )
        rep = Replication()
        await start_writer(nursery, channel)
        await channel.send(rep.send(Hello(agent="tidings")))
        rep.receive(await channel.receive())
        await channel.send(rep.send(Clock(items=[])))
        await channel.send(rep.send(Entries(items=chain[:2])) + rep.send(Entries(items=chain[3:])))
        asked = None
        with trio.fail_after(5):
            while asked is None:
                frame = await channel.receive()
                if decode(frame)[0] in ("have", "peers", "members"):
                    continue
                event = rep.receive(frame)
                if isinstance(event, Clock):
                    asked = next((i for i in event.items if i.feed == author.public_key and i.seq == 2), None)
        assert not asked.lazy and r.gossip.repairs >= 1  # counted by the node's gossip machine
        await channel.send(rep.send(Entries(items=chain[2:])))
        await wait_until(lambda: count(hr, author.public_key) == 4, timeout=5)
        await channel.aclose()
        nursery.cancel_scope.cancel()


async def test_two_nodes_that_dial_each_other_keep_one_connection(tmp_path):
    ha, ka = make_home(tmp_path, "a")
    hb, kb = make_home(tmp_path, "b")
    follow(ha, ka, kb)
    follow(hb, kb, ka)
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, ha, ka, dht=False)
        b = await start_node(nursery, hb, kb, peers=[a.address], dht=False)
        a.dial(b.address, source="peer", pinned=True)  # both keep the other pinned: they dial at once

        def settled() -> bool:
            return len(a.connections) == 1 and len(b.connections) == 1

        await wait_until(settled, timeout=10)
        await trio.sleep(3)  # redials of the pinned address find the feed connected and give way again
        await wait_until(settled, timeout=5)
        (ca,), (cb,) = a.connections.values(), b.connections.values()
        smaller = min(ka.public_key, kb.public_key)
        assert ca.initiator == (ka.public_key == smaller) and cb.initiator == (kb.public_key == smaller)
        entry = post(ha, ka, "over the one connection")
        await wait_until(lambda: has_entry(hb, entry.hash), timeout=3)
        nursery.cancel_scope.cancel()
