"""Discovery publishes the relays of a node (node record version 2) and hands those it finds to the
dialler (spec §13.4, §13.6). Real nodes in one process, each on its own 127.x address."""

from __future__ import annotations

import pytest
import trio
from tidings.node.net.node import Node
from tidings.protocol import FeedId
from tidings.protocol.records import NodeRecord, decode_record, node_key
from tidings.storage.clock import wall_ms

from tests.support.nodes import follow, make_home, next_host, start_node, wait_until

FAST = {"record_ttl": 600.0, "swarm_interval": 2.0, "dht_timeout": 0.5}
RELAY_A = (b"\x0a" * 32, "127.0.9.1:7433")
RELAY_B = (b"\x0b" * 32, "[::1]:7434")


def _held(nodes, feed: bytes) -> list[NodeRecord]:
    """The node records of ``feed`` that ``nodes`` hold for the DHT."""
    key, now_ms = node_key(FeedId(feed)), wall_ms()
    found = []
    for node in nodes:
        value = node.discovery.dht.records.get(key, now_ms)
        if value is not None:
            record = decode_record(value)
            assert isinstance(record, NodeRecord)
            found.append(record)
    return found


def _published_with(nodes, feed: bytes, relays: tuple[tuple[bytes, str], ...]) -> bool:
    return any(r.relays == relays for r in _held(nodes, feed))


@pytest.mark.slow
async def test_relays_are_published_republished_and_handed_to_the_dialler(tmp_path) -> None:
    async with trio.open_nursery() as nursery:
        homes = [make_home(tmp_path, f"n{i}") for i in range(5)]
        first = await start_node(nursery, *homes[0], limits=FAST)
        nodes = [first] + [
            await start_node(nursery, home, key, limits=FAST, bootstrap=[first.address])
            for home, key in homes[1:]
        ]
        private, seeker = nodes[1], nodes[4]
        me = private.key.public_key
        relays: list[tuple[bytes, str]] = []
        private.relay_addresses = lambda: list(relays)  # the reservations the node holds
        await wait_until(lambda: any(r.version == 1 for r in _held(nodes, me)), timeout=15)

        relays.append(RELAY_A)
        private.discovery.relays_changed()  # told: published at once, as version 2
        await wait_until(lambda: _published_with(nodes, me, (RELAY_A,)), timeout=10)
        assert all(r.version == 2 for r in _held(nodes, me) if r.relays)

        relays.append(RELAY_B)  # not told: the discovery tick notices
        await wait_until(lambda: _published_with(nodes, me, (RELAY_A, RELAY_B)), timeout=10)

        calls: list[tuple[bytes, tuple[tuple[bytes, str], ...]]] = []
        dialled: list[tuple[str, bytes | None]] = []
        seeker.dial_via_relays = lambda feed, found: calls.append((feed, tuple(found)))
        dial = seeker.dial

        def record_dial(address: str, *, feed: bytes | None = None, **kw) -> None:
            dialled.append((address, feed))
            dial(address, feed=feed, **kw)

        seeker.dial = record_dial
        follow(homes[4][0], homes[4][1], homes[1][1])  # as `tidings follow FEED` in another process
        await wait_until(lambda: (me, (RELAY_A, RELAY_B)) in calls, timeout=20)
        assert (private.address, me) in dialled  # the direct address is still offered
        nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_client_mode_set_before_the_dht_starts_applies_to_it(tmp_path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_node(nursery, *make_home(tmp_path, "server"), limits=FAST)
        home, key = make_home(tmp_path, "client")
        client = Node(home, key, listen=f"{next_host()}:0", limits=FAST, bootstrap=[server.address])
        assert client.discovery is not None and client.relay_addresses() == []
        client.discovery.set_client_mode(True)
        await nursery.start(client.run)
        assert client.discovery.dht is not None and client.discovery.dht.client_mode
        await wait_until(lambda: len(client.discovery.dht.table) >= 1)
        await wait_until(lambda: client.discovery.dht.statistics().get("client_ignored", 0) >= 1)
        await wait_until(lambda: not server.discovery.dht.checks._senders)
        assert server.discovery.dht.table.get(client.discovery.dht.own_id) is None
        client.discovery.set_client_mode(False)
        assert not client.discovery.dht.client_mode
        assert client.discovery.statistics()["client_mode"] is False
        nursery.cancel_scope.cancel()
