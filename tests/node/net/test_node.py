"""Real nodes in one process: real TCP sockets on 127.x, real SQLite stores, the real node code."""

from __future__ import annotations

import pytest
import trio
from tidings.node.net.node import Node
from tidings.node.net.transport import ChannelClosed
from tidings.protocol import RemoteProtocolError

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


async def test_follow_by_peer_then_live_push(tmp_path):
    ha, ka = make_home(tmp_path, "a")
    hb, kb = make_home(tmp_path, "b")
    for i in range(1200):  # more than one batch
        post(hb, kb, f"old {i}")
    follow(ha, ka, kb)
    async with trio.open_nursery() as nursery:
        b = await start_node(nursery, hb, kb)
        await start_node(nursery, ha, ka, peers=[b.address])
        await wait_until(lambda: count(ha, kb.public_key) == 1201)
        # written by "another process" (a separate connection) while both run
        entry = post(hb, kb, "live")
        took = await wait_until(lambda: has_entry(ha, entry.hash), timeout=2.0)
        assert took < 2.0
        nursery.cancel_scope.cancel()
    assert not ha.node_file.exists() and not hb.node_file.exists()


async def test_restart_resumes_with_only_missing_entries(tmp_path):
    ha, ka = make_home(tmp_path, "a")
    hb, kb = make_home(tmp_path, "b")
    follow(ha, ka, kb)
    for i in range(50):
        post(hb, kb, f"first {i}")
    async with trio.open_nursery() as nursery:
        b = await start_node(nursery, hb, kb)
        address = b.address
        a = Node(ha, ka, listen=f"{next_host()}:0")
        conn = await a_sync(a, address)
        assert conn.received == 51
        for i in range(7):
            post(hb, kb, f"second {i}")
        conn = await a_sync(Node(ha, ka, listen=f"{next_host()}:0"), address)
        assert conn.received == 7  # only what was missing moved
        nursery.cancel_scope.cancel()


async def a_sync(node: Node, address: str):
    with trio.fail_after(10):
        return await node.sync_once(address)


async def test_follows_of_follows_arrive_through_a_middle_node(tmp_path):
    ha, ka = make_home(tmp_path, "a")
    hb, kb = make_home(tmp_path, "b")
    hc, kc = make_home(tmp_path, "c")
    follow(ha, ka, kb)  # A follows B; C follows A; C never connects to B
    follow(hc, kc, ka)
    entry = post(hb, kb, "from b")
    async with trio.open_nursery() as nursery:
        b = await start_node(nursery, hb, kb)
        a = await start_node(nursery, ha, ka, peers=[b.address])
        # target 0: C keeps only its pinned peer A, whatever addresses A offers it
        c = await start_node(nursery, hc, kc, peers=[a.address], limits={"target_connections": 0})
        await wait_until(lambda: has_entry(hc, entry.hash))
        later = post(hb, kb, "later from b")
        await wait_until(lambda: has_entry(hc, later.hash), timeout=3)
        assert all(conn.feed != kb.public_key for conn in c.connections.values())
        nursery.cancel_scope.cancel()


async def test_network_key_mismatch_exchanges_nothing(tmp_path, caplog):
    ha, ka = make_home(tmp_path, "a")
    hb, kb = make_home(tmp_path, "b")
    follow(ha, ka, kb)
    post(hb, kb, "private")
    async with trio.open_nursery() as nursery:
        b = await start_node(nursery, hb, kb, network_key=b"k" * 32)
        a = Node(ha, ka, listen=f"{next_host()}:0", network_key=b"j" * 32)
        # psk3 mixes the key into message 3: B refuses it, A sees the connection end.
        with pytest.raises((RemoteProtocolError, ChannelClosed)):
            await a_sync(a, b.address)
        # B gave up on the handshake: no connection was made, so nothing can arrive later
        await wait_until(
            lambda: any(
                "handshake failed" in r.getMessage() and "wrong network key" in r.getMessage()
                for r in caplog.records
            )
        )
        assert not b.connections and count(ha, kb.public_key) == 0
        nursery.cancel_scope.cancel()


async def test_partial_sync_takes_only_the_newest_entries(tmp_path):
    from tidings.storage.integrity import verify_store
    from tidings.storage.store import Store

    ha, ka = make_home(tmp_path, "a")
    hb, kb = make_home(tmp_path, "b")
    for i in range(100):
        post(hb, kb, f"post {i}")
    follow(ha, ka, kb)
    async with trio.open_nursery() as nursery:
        b = await start_node(nursery, hb, kb)
        a = Node(ha, ka, listen=f"{next_host()}:0", limits={"newest": 10})
        conn = await a_sync(a, b.address)
        assert conn.received == 10
        with Store(ha.store_path) as s:
            seqs = [
                r[0]
                for r in s.read("SELECT seq FROM entries WHERE author = ? ORDER BY seq", (kb.public_key,))
            ]
            assert seqs == list(range(92, 102))
            report = verify_store(s)
            assert report["ok"] and report["gaps"]  # links checked as far as they reach; the rest is a gap
        nursery.cancel_scope.cancel()


async def test_deletes_travel_and_deleted_payloads_are_not_sent(tmp_path):
    from tidings.protocol import Delete
    from tidings.storage.store import Store

    ha, ka = make_home(tmp_path, "a")
    hb, kb = make_home(tmp_path, "b")
    hc, kc = make_home(tmp_path, "c")
    follow(ha, ka, kb)
    follow(hc, kc, kb)
    target = post(hb, kb, "regrettable")
    async with trio.open_nursery() as nursery:
        b = await start_node(nursery, hb, kb)
        await a_sync(Node(ha, ka, listen=f"{next_host()}:0"), b.address)
        with Store(ha.store_path) as s:
            assert s.raw_entry(target.hash)[1] is not None
        with Store(hb.store_path) as s:
            s.append(kb, Delete(target=target.hash))
        await a_sync(Node(ha, ka, listen=f"{next_host()}:0"), b.address)
        await a_sync(Node(hc, kc, listen=f"{next_host()}:0"), b.address)
        for home in (ha, hc):
            with Store(home.store_path) as s:
                _raw, payload = s.raw_entry(target.hash)
                assert payload is None  # A dropped it on the delete; C never received it
                assert not s.search("regrettable")
        nursery.cancel_scope.cancel()


async def test_fork_proofs_spread_and_freeze_the_feed(tmp_path):
    import os

    from tidings.node.net.transport import SecureChannel
    from tidings.protocol import Post, SigningKey, create_entry, encode_content
    from tidings.protocol.replication import Entries, Hello, Replication
    from tidings.storage.store import Store

    ha, ka = make_home(tmp_path, "a")
    hb, kb = make_home(tmp_path, "b")
    hc, kc = make_home(tmp_path, "c")
    follow(ha, ka, kb)
    follow(hc, kc, ka)  # C wants B through A (hops 2)
    for i in range(4):
        post(hb, kb, f"b {i}")
    with Store(hb.store_path) as s:
        row = s.read("SELECT raw FROM entries WHERE author = ? AND seq = 2", (kb.public_key,))[0]
        second = __import__("tidings.protocol", fromlist=["Entry"]).Entry.decode(bytes(row[0]))
    payload = encode_content(Post(text="the other story"))
    fork = create_entry(
        kb, seq=3, backlink=second.hash, skiplink=None, timestamp=second.timestamp + 1, payload=payload
    )
    async with trio.open_nursery() as nursery:
        b = await start_node(nursery, hb, kb)
        a = await start_node(nursery, ha, ka, peers=[b.address])
        await start_node(nursery, hc, kc, peers=[a.address])
        await wait_until(lambda: count(hc, kb.public_key) == 5)
        # someone hands A the other seq 3 that B's key also signed
        host, port = a.address.rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port), local_address=next_host())
        channel = await SecureChannel.handshake(
            stream, initiator=True, identity=SigningKey(os.urandom(32)), transport_private=os.urandom(32)
        )
        rep = Replication()
        await start_writer(nursery, channel)
        await channel.send(rep.send(Hello(agent="tidings")))
        rep.receive(await channel.receive())
        await channel.send(rep.send(Entries(items=[(fork.raw, payload)])))

        def forked(home) -> bool:
            with Store(home.store_path) as s:
                info = s.feed_info(kb.public_key)
                return bool(info and info["forked"])

        await wait_until(lambda: forked(ha) and forked(hc), timeout=5)
        await channel.aclose()
        nursery.cancel_scope.cancel()


async def test_a_peer_that_goes_away_is_redialled(tmp_path):
    ha, ka = make_home(tmp_path, "a")
    hb, kb = make_home(tmp_path, "b")
    follow(ha, ka, kb)
    async with trio.open_nursery() as nursery:
        b_scope = trio.CancelScope()
        b = Node(hb, kb, listen=f"{next_host()}:0")
        await nursery.start(_run_in_scope, b, b_scope)
        address = b.address
        a = await start_node(nursery, ha, ka, peers=[address])
        await wait_until(lambda: any(c.feed == kb.public_key for c in a.connections.values()))
        b_scope.cancel()  # B goes away
        await wait_until(lambda: not a.connections)
        entry = post(hb, kb, "posted while A could not reach B")
        await nursery.start(_run_in_scope, Node(hb, kb, listen=address), trio.CancelScope())
        await wait_until(lambda: has_entry(ha, entry.hash), timeout=10)  # A redialled with backoff
        nursery.cancel_scope.cancel()


async def _run_in_scope(node: Node, scope: trio.CancelScope, *, task_status=trio.TASK_STATUS_IGNORED):
    """Run ``node`` under ``scope`` so the test can stop just this node."""
    with scope:
        await node.run(task_status=task_status)


async def test_one_shot_sync_knows_how_much_will_come(tmp_path):
    """The syncing side asks lazily first (version 2): the peer's notes give the total for the bar."""
    ha, ka = make_home(tmp_path, "a")
    hb, kb = make_home(tmp_path, "b")
    for i in range(700):
        post(hb, kb, f"old {i}")
    async with trio.open_nursery() as nursery:
        b = await start_node(nursery, hb, kb)
        node = Node(ha, ka, listen=f"{next_host()}:0")
        conn = await node.sync_once(b.address)
        assert conn.received == count(hb, kb.public_key) >= 700
        assert conn.expected_in == conn.received
        nursery.cancel_scope.cancel()
