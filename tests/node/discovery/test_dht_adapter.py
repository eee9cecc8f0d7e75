"""The trio UDP adapter (node/discovery/dht.py) against hostile peers on real loopback sockets."""

from __future__ import annotations

import os
import secrets
import socket
import time

import msgpack
import trio
from tidings.node.clock import FixedClock
from tidings.node.discovery.dht import DHT
from tidings.protocol import FeedId, SigningKey
from tidings.protocol.dht_wire import FindNode, Ping, decode_datagram, digest, encode_request
from tidings.protocol.lookup import LookupKind
from tidings.protocol.records import create_node_record, node_key

from tests.support.nodes import next_host, wait_until


async def _dht(nursery: trio.Nursery, **kwargs) -> DHT:
    node = DHT(secrets.token_bytes(20), host=next_host(), port=0, timeout=0.3, **kwargs)
    await nursery.start(node.run)
    return node


async def _raw() -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind((next_host(), 0))
    return sock


async def test_malformed_replies_and_spoofed_responses_do_not_break_lookups() -> None:
    async with trio.open_nursery() as nursery:
        honest = [await _dht(nursery) for _ in range(4)]
        for node in honest[1:]:
            await node.bootstrap([honest[0].address])
        liar = await _raw()
        liar_id = secrets.token_bytes(20)
        seeker = honest[-1]

        async def lie() -> None:
            while True:
                data, source = await liar.recvfrom(9000)
                request = decode_datagram(data)
                if getattr(request.request, "NAME", "") == "ping":
                    body = msgpack.packb(liar_id, use_bin_type=True)
                else:
                    body = msgpack.packb([[b"short", "not an ip", -1]] * 3, use_bin_type=True)
                await liar.sendto(b"\x01" + request.msg_id + body, source)

        nursery.start_soon(lie)
        assert await seeker.ping(liar.getsockname()) == liar_id
        assert await honest[0].put(digest("k"), b"v") >= 2
        result = await seeker.lookup(digest("k"), LookupKind.FIND_VALUE)
        assert result.found and result.values[0].value == b"v"
        # a lookup of the liar's own id must ask the liar: its garbage is refused, the lookup goes on
        closest = await seeker.lookup(liar_id, LookupKind.FIND_NODE)
        assert closest.found and liar_id not in {c.node_id for c in closest.contacts}
        assert seeker.statistics()["malformed_replies"] >= 1

        # a response with the right message id from the wrong address is ignored
        spoofer = await _raw()
        msg = secrets.token_bytes(20)

        async def spoof() -> None:
            await wait_until(lambda: len(seeker.requester) == 1)  # while the request waits for its reply
            await spoofer.sendto(b"\x01" + msg + msgpack.packb(b"x" * 20, use_bin_type=True), seeker.address)

        nursery.start_soon(spoof)
        before = seeker.statistics().get("unmatched_responses", 0)
        # a request to an address that never answers, with a known id: only the spoof arrives
        silent = await _raw()
        pending_task_result = []

        async def ask() -> None:
            pending_task_result.append(
                await seeker.request(silent.getsockname(), Ping(node_id=seeker.own_id), 0.3)
            )

        import tidings.node.discovery.dht_requests as dht_module  # use the message id the spoofer sends

        real = dht_module.secrets.token_bytes
        dht_module.secrets.token_bytes = lambda n: msg if n == 20 else real(n)  # type: ignore[assignment]
        try:
            await ask()
        finally:
            dht_module.secrets.token_bytes = real  # type: ignore[assignment]
        assert pending_task_result == [None]
        assert seeker.statistics()["unmatched_responses"] == before + 1
        nursery.cancel_scope.cancel()
    for sock in (liar, spoofer, silent):
        sock.close()


async def test_requests_are_rate_limited_per_source() -> None:
    async with trio.open_nursery() as nursery:
        # the rate limiter's clock stands still: the bucket never refills, so exactly the burst is served
        node = await _dht(nursery, rate=10.0, burst=20.0, clock=FixedClock())
        flooder = await _raw()
        for _ in range(200):
            request = encode_request(
                secrets.token_bytes(20), FindNode(node_id=secrets.token_bytes(20), key=b"k" * 20)
            )
            await flooder.sendto(request, node.address)
        # datagrams the kernel dropped (a full receive buffer) are neither answered nor counted
        await wait_until(lambda: node.statistics().get("rate_limited", 0) >= 100)
        stats = node.statistics()
        assert stats["requests_in"] == 20
        with trio.fail_after(5):
            for _ in range(20):
                data = await flooder.recv(9000)
                assert len(data) <= 8192 + 21
        # another host is still served
        other = await _dht(nursery)
        assert await other.ping(node.address) == node.own_id
        flooder.close()
        nursery.cancel_scope.cancel()


async def test_a_request_whose_reply_cannot_be_built_is_dropped_not_fatal() -> None:
    from tidings.protocol.dht_wire import RequestDatagram, Stun

    async with trio.open_nursery() as nursery:
        node = await _dht(nursery)
        # a stun from an IPv4-mapped IPv6 source: its spelling is refused by the wire format
        await node._on_request(RequestDatagram(msg_id=b"m" * 20, request=Stun()), ("::ffff:1.2.3.4", 5), 1280)
        assert any(k.startswith("unanswerable_") for k in node.statistics())
        other = await _dht(nursery)
        assert await other.ping(node.address) == node.own_id  # still serving
        nursery.cancel_scope.cancel()


async def test_find_node_record_keeps_the_newest_of_the_records_found() -> None:
    """Nodes that missed an update still serve an older valid record; the newest one found wins,
    wherever it sits among the nodes around the key (spec §13.6)."""
    owner = SigningKey(os.urandom(32))
    key = node_key(FeedId(owner.public_key))
    now_ms = int(time.time() * 1000)

    def record(seq: int, host: str) -> bytes:
        return create_node_record(
            owner, addresses=[(host, 7433)], transport_key=bytes(32), seq=seq, expiry_ms=now_ms + 600_000
        ).encode()

    old, new = record(100, "127.0.8.1"), record(200, "127.0.8.2")
    async with trio.open_nursery() as nursery:
        nodes = [await _dht(nursery) for _ in range(12)]
        for node in nodes[1:]:
            await node.bootstrap([nodes[0].address])
        base = int.from_bytes(key, "big")
        by_distance = sorted(nodes[1:], key=lambda n: int.from_bytes(n.own_id, "big") ^ base)
        # the older record on the nodes nearest the key (asked first), the newer one on two farther ones
        for node in by_distance[:6]:
            assert node.records.put(key, old, now_ms).accepted
        for node in by_distance[8:10]:
            assert node.records.put(key, new, now_ms).accepted
        first = await nodes[0].lookup(key, LookupKind.FIND_VALUE)  # what a first-value lookup sees
        found = await nodes[0].find_node_record(owner.public_key)
        assert found is not None and found.seq == 200 and found.encode() == new
        assert first.values[0].value in (old, new)
        # the asking node's own older copy does not win either
        assert by_distance[0].records.get(key, now_ms) == old
        found = await by_distance[0].find_node_record(owner.public_key)
        assert found is not None and found.seq == 200
        nursery.cancel_scope.cancel()
