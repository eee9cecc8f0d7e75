"""Real nodes in one process: real TCP sockets on 127.x, real SQLite stores, the real node code."""

from __future__ import annotations

import pytest
import trio
from tidings.node.node import Node
from tidings.node.transport import ChannelClosed
from tidings.protocol import RemoteProtocolError

from .nodes import count, follow, has_entry, make_home, next_host, post, start_node, wait_until


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
        c = await start_node(nursery, hc, kc, peers=[a.address])
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
        await trio.sleep(0.2)
        assert count(ha, kb.public_key) == 0
        assert any(
            "handshake failed" in r.getMessage() and "wrong network key" in r.getMessage()
            for r in caplog.records
        )
        nursery.cancel_scope.cancel()
