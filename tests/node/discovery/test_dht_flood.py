"""Floods against a DHT node over real loopback UDP (issue 15 item 6; spec/protocol.md §13.5, §13.6).

The attackers are raw sockets in 127.66.x.y, another /24 than the honest nodes' 127.0.x.y, sending as
fast as the victim's per-IP rate limit lets them. Honest nodes keep storing and finding their signed
records, and nothing they stored is lost.
"""

from __future__ import annotations

import os
import secrets
import socket
import time

import trio
from tidings.node.clock import FixedClock
from tidings.node.discovery.dht import DHT
from tidings.protocol import SigningKey
from tidings.protocol.dht_wire import (
    Announce,
    FindNode,
    ResponseDatagram,
    Store,
    decode_datagram,
    digest,
    encode_request,
)
from tidings.protocol.encoding import decode
from tidings.protocol.identity import FeedId
from tidings.protocol.record_admission import VerifyBudget
from tidings.protocol.record_store import RecordStore
from tidings.protocol.records import create_member_record, create_node_record, node_key, swarm_key

from tests.support.nodes import next_host, wait_until


async def _dht(nursery: trio.Nursery, **kwargs) -> DHT:
    node = DHT(secrets.token_bytes(20), host=next_host(), port=0, timeout=0.5, **kwargs)
    await nursery.start(node.run)
    return node


async def _raw(host: str) -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind((host, 0))
    return sock


def _charged(node: DHT) -> int:
    stats = node.statistics()
    return stats.get("requests_in", 0) + stats.get("rate_limited", 0)


async def _send_paced(sock, target: tuple[str, int], datagrams: list[bytes], seen, batch: int = 20) -> None:
    """Send ``datagrams`` in batches small enough for the kernel's receive buffer, each batch waited
    for (``seen()`` counts what the victim took in), so none is lost before the victim looks at it."""
    for start in range(0, len(datagrams), batch):
        chunk = datagrams[start : start + batch]
        expected = seen() + len(chunk)
        for data in chunk:
            await sock.sendto(data, target)
        await wait_until(lambda expected=expected: seen() >= expected, timeout=10, step=0.002)


async def _store_all(socks, target: tuple[str, int], requests: list[bytes]) -> int:
    """Send ``requests`` round-robin from ``socks``, as fast as replies come back; how many the
    victim took (a true reply), counting every reply until the victim falls silent."""
    stored = 0
    for i, data in enumerate(requests):
        await socks[i % len(socks)].sendto(data, target)
    for sock in socks:
        while True:
            with trio.move_on_after(0.3) as silent:
                reply, _ = await sock.recvfrom(9000)
            if silent.cancelled_caught:
                break
            datagram = decode_datagram(reply)  # the victim's pings (it checks who sent requests) aside
            stored += isinstance(datagram, ResponseDatagram) and datagram.body is True
    return stored


async def test_undecodable_and_oversized_datagrams_are_dropped_before_decoding() -> None:
    async with trio.open_nursery() as nursery:
        # the rate limiter's clock stands still: a source's bucket never refills after its burst
        victim = await _dht(nursery, clock=FixedClock())
        flooder = await _raw("127.66.0.2")
        junk = [
            b"\x00" + os.urandom(20) + b"\xc1" * 50,  # a request whose body is not msgpack
            b"\x00" + os.urandom(20) + b"\xdd\xff\xff\xff\xff",  # an array of 4 billion items
            b"\x00" + os.urandom(20) + os.urandom(8200),  # over the 8192-byte body
            b"\x07" + os.urandom(60),  # no such kind
        ]
        await _send_paced(
            flooder, victim.address, [junk[i % 4] for i in range(1200)], lambda: _charged(victim)
        )
        stats = victim.statistics()
        assert stats["rate_limited"] == 800 and stats["requests_in"] == 400
        # only the burst of 400 was looked at, and of those only the ones the cheap peek let through
        # (300: the oversized and kind-less ones never reach msgpack) were decoded
        assert stats["decoded"] == 200 and stats["ignored_malformed"] == 200
        assert stats["ignored_too_large"] == 100 and stats["ignored_bad_kind"] == 100
        # responses that answer nothing are dropped on their message id, never decoded
        fakes = [b"\x01" + os.urandom(20) + b"\xc1" * 30 for _ in range(500)]
        await _send_paced(
            flooder, victim.address, fakes, lambda: victim.statistics().get("unmatched_responses", 0)
        )
        assert victim.statistics()["decoded"] == 200
        # the flooder is not served any more; another host is
        request = encode_request(os.urandom(20), FindNode(node_id=os.urandom(20), key=os.urandom(20)))
        await flooder.sendto(request, victim.address)
        await wait_until(lambda: victim.statistics()["rate_limited"] == 801)
        other = await _dht(nursery)
        assert await other.ping(victim.address) == victim.own_id
        flooder.close()
        nursery.cancel_scope.cancel()


async def test_a_plain_value_flood_from_one_range_leaves_room_for_signed_records() -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            # the victim's store is small, so the flood fills it as 190/s for 55 s filled 10,000 places
            victim = await _dht(nursery, records=RecordStore(max_records=100))
            honest = [await _dht(nursery) for _ in range(3)]
            for node in honest:
                await node.bootstrap([victim.address])
            now = int(time.time() * 1000)
            keys = [SigningKey(os.urandom(32)) for _ in range(4)]
            records = [
                create_node_record(
                    k,
                    addresses=[("127.0.0.9", 7433)],
                    transport_key=bytes(32),
                    seq=now,
                    expiry_ms=now + 600_000,
                )
                for k in keys
            ]
            # honest nodes store a signed record and a stock-style plain value before the attack
            assert await honest[0].put(records[0].key, records[0].encode()) >= 1
            assert await honest[1].put(digest("stock value"), "kept") >= 1
            # four addresses of one /24 store plain values as fast as the rate limit lets them
            flood = [await _raw(f"127.66.1.{i}") for i in range(2, 6)]
            requests = [
                encode_request(
                    os.urandom(20), Store(node_id=os.urandom(20), key=digest(f"junk {i}"), value=b"x" * 900)
                )
                for i in range(1600)
            ]
            taken = await _store_all(flood, victim.address, requests)
            assert taken == 98  # the room that was left: the store is full
            assert len(victim.records) == 100
            # signed records are still taken, during and after the flood, and found by others
            for i, record in enumerate(records[1:], 1):
                assert await honest[i % 3].put(record.key, record.encode()) >= 1
                assert victim.records.get(record.key, victim.clock.wall_ms()) == record.encode()
                assert await honest[(i + 1) % 3].find_node_record(keys[i].public_key) == record
            # nothing honest was lost
            assert victim.records.get(records[0].key, victim.clock.wall_ms()) == records[0].encode()
            assert victim.records.get(digest("stock value"), victim.clock.wall_ms()) == "kept"
            assert victim.records.held_by("127.66.1.0/24") == (0, 95)  # evicted first: plain values
            for sock in flood:
                sock.close()
            nursery.cancel_scope.cancel()


async def test_sybil_members_from_one_range_do_not_keep_an_honest_member_out() -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            victim = await _dht(nursery)
            honest = [await _dht(nursery) for _ in range(3)]
            for node in honest:
                await node.bootstrap([victim.address])
            now = int(time.time() * 1000)
            key = swarm_key("gardening")

            def record(signer: SigningKey, host: str) -> bytes:
                return create_member_record(
                    signer, swarm="gardening", addresses=[(host, 7433)], seq=now, expiry_ms=now + 600_000
                ).encode()

            sybil = await _raw("127.66.2.2")
            announces = [
                encode_request(
                    os.urandom(20),
                    Announce(
                        node_id=os.urandom(20),
                        key=key,
                        record=record(SigningKey(os.urandom(32)), "127.66.2.2"),
                    ),
                )
                for _ in range(80)
            ]
            assert await _store_all([sybil], victim.address, announces) == 64  # the key is full
            assert victim.statistics()["refused_full"] == 16
            # the 16 refused by the member rule were refused on their cheap fields: no signature check
            assert victim.statistics()["store_checks"] == 64
            members = [SigningKey(os.urandom(32)) for _ in honest]
            for node, signer in zip(honest, members, strict=True):
                assert await node.announce(key, record(signer, node.address[0])) >= 1
            held = victim.records.members(key, victim.clock.wall_ms(), rng=victim.rng)
            assert all(record(s, n.address[0]) in held for n, s in zip(honest, members, strict=True))
            found = {m.member for m in await honest[0].members(key)}
            assert {m.public_key for m in members} <= found
            assert victim.records.held_by("127.66.2.0/24")[0] == 61  # one slot given up per newcomer
            sybil.close()
            nursery.cancel_scope.cancel()


async def test_forged_records_from_one_range_buy_at_most_its_burst_of_signature_checks() -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            # the clock stands still: the range's verification bucket never refills after its burst
            clock = FixedClock(wall_ms=int(time.time() * 1000))
            victim = await _dht(
                nursery, clock=clock, records=RecordStore(budget=VerifyBudget(rate=50, burst=20))
            )
            now = clock.wall_ms()
            flooder = await _raw("127.66.3.2")

            def forged() -> bytes:
                data = create_node_record(
                    SigningKey(os.urandom(32)),
                    addresses=[("127.66.3.2", 7433)],
                    transport_key=bytes(32),
                    seq=now,
                    expiry_ms=now + 600_000,
                ).encode()
                return data[:-1] + bytes([data[-1] ^ 1])  # a bad signature: only the check finds it

            stores = []
            for _ in range(100):
                value = forged()
                key = node_key(FeedId(decode(value)[1]))
                stores.append(
                    encode_request(os.urandom(20), Store(node_id=os.urandom(20), key=key, value=value))
                )
            await _send_paced(flooder, victim.address, stores, lambda: _charged(victim))
            await wait_until(lambda: victim.statistics().get("refused_busy", 0) == 80, timeout=10)
            assert victim.statistics()["store_checks"] == 20
            assert victim.statistics()["refused_bad_signature"] == 20
            # an honest node from another range is still checked and stored
            honest = await _dht(nursery)
            await honest.bootstrap([victim.address])
            signer = SigningKey(os.urandom(32))
            record = create_node_record(
                signer,
                addresses=[(honest.address[0], 7433)],
                transport_key=bytes(32),
                seq=now,
                expiry_ms=now + 600_000,
            )
            assert await honest.put(record.key, record.encode()) >= 1
            assert victim.records.get(record.key, now) == record.encode()
            flooder.close()
            nursery.cancel_scope.cancel()


async def test_throwaway_ids_of_a_silent_host_never_join_the_table() -> None:
    async with trio.open_nursery() as nursery:
        victim = await _dht(nursery)
        silent = await _raw("127.66.3.2")
        for _ in range(50):
            request = encode_request(os.urandom(20), FindNode(node_id=os.urandom(20), key=os.urandom(20)))
            await silent.sendto(request, victim.address)
        # it is answered, and pinged (once: one ping per address at a time), but never let in
        await wait_until(lambda: victim.statistics().get("requests_in", 0) == 50)
        await wait_until(lambda: victim.statistics().get("timeouts", 0) >= 1)
        assert all(c.host != "127.66.3.2" for c in victim.table.contacts())
        # an honest node that sends a request answers the ping and joins
        honest = await _dht(nursery)
        assert await honest.ping(victim.address) == victim.own_id
        await wait_until(lambda: honest.own_id in victim.table)
        silent.close()
        nursery.cancel_scope.cancel()


def test_the_record_store_limits_come_from_the_config() -> None:
    from tidings.node.discovery.dht_support import record_store

    store = record_store(
        {
            "dht_records": 50,
            "dht_records_per_range": 5,
            "dht_plain_values": 7,
            "dht_plain_per_range": 3,
            "dht_plain_ttl": 60,
        }
    )
    assert (store.max_records, store.per_range, store.max_plain, store.plain_per_range) == (50, 5, 7, 3)
    assert store.plain_ttl_ms == 60_000
    assert record_store({}).max_records == 10_000
