"""DHT client mode (spec §13.6): a node others cannot dial asks the DHT but answers no one, so no
server ever adds it to a routing table. Real DHT nodes on loopback sockets, each on its own 127.x."""

from __future__ import annotations

import os
import secrets
import time

import trio
from tidings.node.discovery.dht import DHT
from tidings.protocol import SigningKey
from tidings.protocol.dht_wire import FindNode, Ping
from tidings.protocol.lookup import LookupKind
from tidings.protocol.records import create_node_record

from tests.support.nodes import next_host, wait_until


async def _dht(nursery: trio.Nursery, **kwargs) -> DHT:
    node = DHT(secrets.token_bytes(20), host=next_host(), port=0, timeout=0.3, **kwargs)
    await nursery.start(node.run)
    return node


async def _servers(nursery: trio.Nursery, n: int) -> list[DHT]:
    servers = [await _dht(nursery) for _ in range(n)]
    for server in servers[1:]:
        await server.bootstrap([servers[0].address])
    for server in servers:  # everyone learns of everyone (the tables of a small network fill up)
        await server.lookup(server.own_id, LookupKind.FIND_NODE)
    return servers


def _held_by(servers: list[DHT], node_id: bytes) -> list[DHT]:
    return [s for s in servers if s.table.get(node_id) is not None]


def _checks_done(servers: list[DHT]) -> bool:
    """No server still waits for the answer to a ping of a requester (``dht_checks``)."""
    return all(not s.checks._senders for s in servers)


async def test_a_client_finds_values_and_joins_no_routing_table() -> None:
    owner = SigningKey(os.urandom(32))
    now_ms = int(time.time() * 1000)
    record = create_node_record(
        owner, addresses=[("127.0.8.1", 7433)], transport_key=bytes(32), seq=1, expiry_ms=now_ms + 600_000
    )
    async with trio.open_nursery() as nursery:
        servers = await _servers(nursery, 6)
        assert await servers[2].put(record.key, record.encode()) >= 3
        client = await _dht(nursery, client_mode=True)
        assert await client.bootstrap([servers[0].address]) >= 1  # it learns of servers from answers
        found = await client.find_node_record(owner.public_key)
        assert found == record
        await client.lookup(secrets.token_bytes(20), LookupKind.FIND_NODE)
        assert len(client.table) >= 5
        # the servers pinged the unknown requester; it never answers, so those checks fail
        await wait_until(lambda: client.statistics().get("client_ignored", 0) >= 1)
        await wait_until(lambda: _checks_done(servers))
        assert _held_by(servers, client.own_id) == []
        # nor does a server's lookup meet it: nobody hands it on as a contact
        for server in servers:
            result = await server.lookup(client.own_id, LookupKind.FIND_NODE)
            assert client.own_id not in {c.node_id for c in result.contacts}
        # and a direct request gets no answer at all
        assert await servers[0].request(client.address, Ping(node_id=servers[0].own_id), 0.3) is None
        find = FindNode(node_id=servers[0].own_id, key=servers[0].own_id)
        assert await servers[0].request(client.address, find, 0.3) is None
        assert client.statistics()["client_mode"] is True
        nursery.cancel_scope.cancel()


async def test_back_in_server_mode_the_node_is_added_again() -> None:
    async with trio.open_nursery() as nursery:
        servers = await _servers(nursery, 4)
        node = await _dht(nursery)
        node.set_client_mode(True)
        await node.bootstrap([servers[0].address])
        await wait_until(lambda: _checks_done(servers))
        assert _held_by(servers, node.own_id) == []
        node.set_client_mode(False)
        assert await servers[1].ping(node.address) == node.own_id  # it answers again
        await node.lookup(node.own_id, LookupKind.FIND_NODE)  # its requests now make servers ping it
        await wait_until(lambda: len(_held_by(servers, node.own_id)) >= 3)
        # and once more a client: it keeps asking, nothing it sends invites a new server to add it
        node.set_client_mode(True)
        newcomer = await _dht(nursery)
        await newcomer.bootstrap([servers[0].address])
        assert await newcomer.ping(node.address) is None
        nursery.cancel_scope.cancel()
