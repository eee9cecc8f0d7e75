"""Nodes find each other through the DHT: follow by feed id alone, swarms, rejoining (issue 4).

Real nodes in one process (real TCP and UDP sockets, each on its own 127.x address, real stores);
only the first node's address is ever given, as ``--bootstrap``.
"""

from __future__ import annotations

import pytest
import trio
from tidings.protocol import FeedId, feed_id_text
from tidings.protocol.records import node_key
from tidings.storage import dht as dht_store
from tidings.storage.clock import wall_ms
from tidings.storage.peers import list_peers
from tidings.storage.store import Store

from tests.support.nodes import follow, has_entry, make_home, post, start_node, wait_until

FAST = {"record_ttl": 600.0, "swarm_interval": 2.0, "dht_timeout": 0.5}


async def _network(nursery: trio.Nursery, tmp_path, n: int, **kwargs):
    homes = [make_home(tmp_path, f"n{i}") for i in range(n)]
    first = await start_node(nursery, *homes[0], limits=FAST, **kwargs)
    nodes = [first]
    for home, key in homes[1:]:
        nodes.append(await start_node(nursery, home, key, limits=FAST, bootstrap=[first.address], **kwargs))
    return homes, nodes


@pytest.mark.slow
async def test_follow_by_feed_id_alone(tmp_path) -> None:
    async with trio.open_nursery() as nursery:
        homes, nodes = await _network(nursery, tmp_path, 10)
        await wait_until(lambda: all(len(n.discovery.dht.table) >= 5 for n in nodes), timeout=10)
        (home_a, key_a), (home_b, key_b) = homes[3], homes[8]
        entry = post(home_a, key_a, "found me without an address")
        follow(home_b, key_b, key_a)  # as `tidings follow FEED` in another process
        await wait_until(lambda: has_entry(home_b, entry.hash), timeout=20)
        with Store(home_b.store_path) as s:
            rows = {r["feed"]: r for r in list_peers(s)}
        found = rows[feed_id_text(key_a.public_key)]
        assert found["source"] == "dht"
        assert found["addresses"] == [nodes[3].address]
        nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_five_nodes_in_a_swarm_see_each_others_posts(tmp_path) -> None:
    async with trio.open_nursery() as nursery:
        homes, nodes = await _network(nursery, tmp_path, 5, swarms=["python"])
        # a sixth node not in the swarm, and a swarm joined later by a CLI process (the table)
        outsider = await start_node(
            nursery, *make_home(tmp_path, "out"), limits=FAST, bootstrap=[nodes[0].address]
        )
        entries = [post(home, key, f"hello from {i}") for i, (home, key) in enumerate(homes)]

        def everyone_has_everything() -> bool:
            return all(has_entry(home, e.hash) for home, _ in homes for e in entries)

        await wait_until(everyone_has_everything, timeout=30)
        home, key = homes[2]
        with Store(home.store_path) as s:
            assert {r["name"] for r in dht_store.list_swarms(s)} == {"python"}
            assert len(dht_store.swarm_members(s, "python")) == 4
            texts = {i["content"]["text"] for i in s.timeline(key.public_key, swarm="python")}
            assert texts == {f"hello from {i}" for i in range(5)}
            sources = {r["source"] for r in list_peers(s)}
        assert "swarm" in sources
        outsider_home = outsider.home
        assert not any(has_entry(outsider_home, e.hash) for e in entries[1:])
        nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_swarm_join_by_another_process_takes_effect(tmp_path) -> None:
    async with trio.open_nursery() as nursery:
        homes, _nodes = await _network(nursery, tmp_path, 3)
        entries = [post(home, key, f"post {i}") for i, (home, key) in enumerate(homes)]
        for home, _ in homes[1:]:
            with Store(home.store_path) as s:
                dht_store.join_swarm(s, "trio", 0)
        await wait_until(
            lambda: has_entry(homes[1][0], entries[2].hash) and has_entry(homes[2][0], entries[1].hash),
            timeout=20,
        )
        assert not has_entry(homes[1][0], entries[0].hash)  # node 0 never joined
        nursery.cancel_scope.cancel()


class _Stoppable:
    """A node in its own cancel scope: ``cancel()`` stops it; ``stop()`` also waits until it closed."""

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.stopped = trio.Event()

    def cancel(self) -> None:
        self.scope.cancel()

    async def stop(self) -> None:
        self.scope.cancel()
        await self.stopped.wait()


async def _start_stoppable(nursery: trio.Nursery, home, key, **kwargs):
    stoppable = _Stoppable()

    async def run(task_status=trio.TASK_STATUS_IGNORED) -> None:
        try:
            with stoppable.scope:
                await start_node_inner(home, key, task_status, **kwargs)
        finally:
            stoppable.stopped.set()

    node = await nursery.start(run)
    return node, stoppable


def _record_held(nodes, feed: bytes) -> bool:
    """Whether one of ``nodes`` holds the node record of ``feed`` for the DHT."""
    key, now_ms = node_key(FeedId(feed)), wall_ms()
    return any(n.discovery.dht.records.get(key, now_ms) is not None for n in nodes)


async def start_node_inner(home, key, task_status, **kwargs) -> None:
    from tidings.node.net.node import Node

    from tests.support.nodes import next_host

    node = Node(home, key, listen=kwargs.pop("listen", f"{next_host()}:0"), **kwargs)
    async with trio.open_nursery() as inner:
        await inner.start(node.run)
        task_status.started(node)


@pytest.mark.slow
async def test_join_without_the_bootstrap_node(tmp_path) -> None:
    homes = [make_home(tmp_path, f"n{i}") for i in range(6)]
    async with trio.open_nursery() as nursery:
        first, first_scope = await _start_stoppable(nursery, *homes[0], limits=FAST)
        nodes = [first]
        scopes = [first_scope]
        for home, key in homes[1:5]:
            node, scope = await _start_stoppable(nursery, home, key, limits=FAST, bootstrap=[first.address])
            nodes.append(node)
            scopes.append(scope)
        await wait_until(lambda: all(len(n.discovery.dht.table) >= 3 for n in nodes[1:]), timeout=10)
        survivors = nodes[1:]  # node records stored where they outlive the bootstrap node
        await wait_until(
            lambda: all(_record_held(survivors, n.key.public_key) for n in survivors), timeout=10
        )
        first_scope.cancel()  # the bootstrap node goes away

        # a new node knows the dead bootstrap node and one other: it joins through the other
        new_home, new_key = homes[5]
        _new, _ = await _start_stoppable(
            nursery, new_home, new_key, limits=FAST, bootstrap=[first.address, nodes[2].address]
        )
        entry = post(*homes[3], "still here")
        follow(new_home, new_key, homes[3][1])
        await wait_until(lambda: has_entry(new_home, entry.hash), timeout=20)

        # a restarted node rejoins through its saved routing table, with no bootstrap address at all
        home4, key4 = homes[4]
        address4 = nodes[4].address
        await scopes[4].stop()  # its routing table is saved as it closes
        with Store(home4.store_path) as s:
            assert len(dht_store.load_contacts(s)) >= 3
        restarted, _ = await _start_stoppable(nursery, home4, key4, limits=FAST, listen=address4)
        await wait_until(lambda: len(restarted.discovery.dht.table) >= 3, timeout=10)
        entry2 = post(*homes[1], "for the restarted node")
        follow(home4, key4, homes[1][1])
        await wait_until(lambda: has_entry(home4, entry2.hash), timeout=20)
        nursery.cancel_scope.cancel()
