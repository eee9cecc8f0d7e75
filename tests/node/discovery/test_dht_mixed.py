"""A mixed network with the real ``kademlia`` package (2.2.3) on loopback (issue 4, ARCHITECTURE.md).

Stock nodes run in a thread with their own asyncio loop; Tidings DHT adapters (node/discovery/dht.py) run in
trio. Every node has its own 127.x address. Stock and Tidings nodes bootstrap from each other, a value
stored by one kind is found by the other, and a Tidings node record is found through stock nodes only.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Coroutine
from typing import Any

import pytest
import trio
from kademlia.network import Server
from tidings.node.discovery.dht import DHT
from tidings.protocol import SigningKey
from tidings.protocol.dht_wire import digest
from tidings.protocol.lookup import LookupKind
from tidings.protocol.record_store import RecordStore
from tidings.protocol.records import NodeRecord, create_node_record, validator

from tests.support.nodes import next_host


class StockNodes:
    """Stock ``kademlia`` servers on an asyncio loop in a thread; ``call`` runs a coroutine there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="stock-kademlia", daemon=True)
        self.servers: list[Server] = []

    def __enter__(self) -> StockNodes:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop_all() -> None:
            for server in self.servers:
                server.stop()
            await asyncio.sleep(0.05)
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop_all(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 20.0) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return await trio.to_thread.run_sync(future.result, timeout)

    async def start(self, bootstrap: list[tuple[str, int]]) -> tuple[Server, tuple[str, int]]:
        host = next_host()
        server = Server()

        async def go() -> int:
            await server.listen(0, interface=host)
            if bootstrap:
                await server.bootstrap(bootstrap)
            return int(server.transport.get_extra_info("sockname")[1])

        port = await self.call(go())
        self.servers.append(server)
        return server, (host, port)


async def _tidings(nursery: trio.Nursery) -> DHT:
    node = DHT(secrets.token_bytes(20), host=next_host(), port=0, timeout=0.5)
    await nursery.start(node.run)
    return node


@pytest.mark.slow
async def test_stock_and_tidings_nodes_bootstrap_and_store_for_each_other() -> None:
    with StockNodes() as stock:
        async with trio.open_nursery() as nursery:
            t0 = await _tidings(nursery)
            assert t0.address is not None
            # stock nodes bootstrap from a Tidings node ...
            s0, a0 = await stock.start([t0.address])
            s1, a1 = await stock.start([t0.address])
            assert len(t0.table) == 2
            # ... and Tidings nodes from a stock node
            t1 = await _tidings(nursery)
            assert await t1.bootstrap([a0]) >= 2
            t2 = await _tidings(nursery)
            assert await t2.bootstrap([a1]) >= 3

            # stored by a stock node, found by a Tidings node
            assert await stock.call(s0.set("greeting", "hello from stock"))
            assert await t2.get(digest("greeting")) == "hello from stock"
            # stored by a Tidings node, found by a stock node
            assert await t1.put(digest("answer"), b"from tidings") >= 2
            assert await stock.call(s1.get("answer")) == b"from tidings"
            assert await stock.call(s0.get("answer")) == b"from tidings"
            nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_node_record_found_through_stock_nodes_only() -> None:
    with StockNodes() as stock:
        async with trio.open_nursery() as nursery:
            first, address = await stock.start([])
            addresses = [address]
            for _ in range(5):
                _, address = await stock.start([addresses[-1]])  # a chain: each knows the previous
                addresses.append(address)
            publisher = await _tidings(nursery)
            seeker = await _tidings(nursery)
            await publisher.bootstrap([addresses[0]])
            await seeker.bootstrap([addresses[-1]])

            key = SigningKey(secrets.token_bytes(32))
            now = int(time.time() * 1000)
            record = create_node_record(
                key,
                addresses=[("127.0.0.9", 7433)],
                transport_key=b"\x01" * 32,
                seq=now,
                expiry_ms=now + 600_000,
            )
            stored = await publisher.put(record.key, record.encode())
            assert stored >= 3  # on stock nodes (and the seeker, if it is among the closest)
            # only stock nodes may serve it: neither Tidings node answers from its own store
            seeker.records = RecordStore()
            publisher.records = RecordStore()
            accepts = validator(record.key, now_ms=now, kind=NodeRecord)
            result = await seeker.lookup(record.key, LookupKind.FIND_VALUE, validate=accepts)
            assert result.found and result.values[0].value == record.encode()
            assert result.values[0].contact.address in addresses
            assert await seeker.find_node_record(key.public_key) == record
            # the stock nodes hold the record as a plain value, and a stock client can read it
            assert await stock.call(first.get(str(key.feed))) == record.encode()

            # a forged value under the same key (someone else's signature) is never taken
            forger = SigningKey(secrets.token_bytes(32))
            forged = create_node_record(
                forger,
                addresses=[("127.0.0.66", 1)],
                transport_key=b"\x02" * 32,
                seq=now + 1,
                expiry_ms=now + 600_000,
            )
            await stock.call(first.set(str(key.feed), forged.encode()))
            # stock nodes let the forger overwrite the record; the seeker refuses the forgery
            assert await seeker.find_node_record(key.public_key) in (None, record)
            nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_a_client_publishes_a_version_2_record_through_stock_nodes() -> None:
    """A Tidings node in client mode (spec §13.6) joins and stores through stock nodes; its node record
    of version 2 (relays, §13.4) is held by stock nodes as any value and found by a Tidings node."""
    with StockNodes() as stock:
        async with trio.open_nursery() as nursery:
            _, a0 = await stock.start([])
            _, a1 = await stock.start([a0])
            _, a2 = await stock.start([a1])
            client = DHT(secrets.token_bytes(20), host=next_host(), port=0, timeout=0.5, client_mode=True)
            await nursery.start(client.run)
            assert await client.bootstrap([a0]) >= 2
            seeker = await _tidings(nursery)
            assert await seeker.bootstrap([a2]) >= 2
            key = SigningKey(secrets.token_bytes(32))
            now = int(time.time() * 1000)
            record = create_node_record(
                key,
                addresses=[("127.0.0.9", 7433)],
                transport_key=b"\x01" * 32,
                seq=now,
                expiry_ms=now + 600_000,
                relays=[(b"\x03" * 32, "127.0.0.10:7433")],
            )
            assert record.version == 2
            assert await client.put(record.key, record.encode()) >= 2
            seeker.records = RecordStore()  # only the stock nodes may serve it
            assert await seeker.find_node_record(key.public_key) == record
            nursery.cancel_scope.cancel()
