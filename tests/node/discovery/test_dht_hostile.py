"""Honest storing nodes refuse forged records sent over real UDP (issue: hostile DHT)."""

from __future__ import annotations

import os
import random
import secrets
import socket
import time

import trio
from tidings.node.discovery.dht import DHT
from tidings.protocol import FeedId, SigningKey
from tidings.protocol.dht_wire import (
    REPLY_FLOOR,
    Announce,
    Contact,
    FindNode,
    FindValue,
    GetMembers,
    MembersReply,
    NodesReply,
    Ping,
    PingReply,
    Reply,
    RequestDatagram,
    ResponseDatagram,
    Store,
    StoreReply,
    ValueReply,
    decode_datagram,
    encode_reply,
    encode_request,
    parse_reply,
    reply_limit,
)
from tidings.protocol.lookup import LookupKind
from tidings.protocol.records import create_member_record, create_node_record, node_key, swarm_key

from tests.support.nodes import next_host


async def _store_raw(sock, address, key: bytes, value: bytes) -> object:
    """Send a stock ``store`` request from a raw socket; return the decoded reply body."""
    msg = secrets.token_bytes(20)
    await sock.sendto(
        encode_request(msg, Store(node_id=secrets.token_bytes(20), key=key, value=value)), address
    )
    with trio.fail_after(3):
        while True:
            data, _ = await sock.recvfrom(9000)
            datagram = decode_datagram(data)
            if datagram.msg_id == msg:
                return datagram.body  # the decoded reply: True when stored, False when refused


async def test_forged_older_and_foreign_records_are_refused() -> None:
    owner, mallory = SigningKey(os.urandom(32)), SigningKey(os.urandom(32))
    key = node_key(FeedId(owner.public_key))
    expiry = int(time.time() * 1000) + 600_000
    good = create_node_record(
        owner, addresses=[("127.0.9.9", 7433)], transport_key=bytes(32), seq=100, expiry_ms=expiry
    ).encode()
    older = create_node_record(
        owner, addresses=[("127.0.6.6", 6666)], transport_key=bytes(32), seq=50, expiry_ms=expiry
    ).encode()
    foreign = create_node_record(  # mallory's own valid record, offered under the owner's key
        mallory, addresses=[("127.0.6.6", 6666)], transport_key=bytes(32), seq=200, expiry_ms=expiry
    ).encode()
    flipped = bytearray(
        create_node_record(
            owner, addresses=[("127.0.6.6", 6666)], transport_key=bytes(32), seq=300, expiry_ms=expiry
        ).encode()
    )
    flipped[-1] ^= 1  # last byte of the signature
    async with trio.open_nursery() as nursery:
        nodes = []
        for _ in range(4):
            node = DHT(secrets.token_bytes(20), host=next_host(), port=0, timeout=0.3)
            await nursery.start(node.run)
            nodes.append(node)
        for node in nodes[1:]:
            await node.bootstrap([nodes[0].address])
        assert await nodes[0].put(key, good) >= 3
        attacker = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await attacker.bind((next_host(), 0))
        for node in nodes:
            for forged in (older, foreign, bytes(flipped)):
                assert await _store_raw(attacker, node.address, key, forged) is False
        for node in nodes:
            record = await node.find_node_record(owner.public_key)
            assert record is not None and record.seq == 100 and record.addresses == (("127.0.9.9", 7433),)
        # the same path does take a valid, newer record (so the refusals above are real refusals)
        newer = create_node_record(
            owner, addresses=[("127.0.9.10", 7433)], transport_key=bytes(32), seq=400, expiry_ms=expiry
        ).encode()
        assert await _store_raw(attacker, nodes[1].address, key, newer) is True
        record = await nodes[1].find_node_record(owner.public_key)
        assert record is not None and record.seq == 400
        attacker.close()
        nursery.cancel_scope.cancel()


class Sybil:
    """A hostile DHT endpoint on its own 127.x address, speaking the wire format (§13.1).

    It answers ``ping`` truthfully (so honest tables keep it), lies that it stored every value, and
    answers ``find_value``/``get_members`` with ``value`` when set, else with its fellow Sybils only
    (withholding); ``find_node`` names only its fellow Sybils.
    """

    def __init__(self, node_id: bytes, value: bytes | None) -> None:
        self.node_id = node_id
        self.value = value
        self.fellows: tuple[Contact, ...] = ()
        self.sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.asked = 0

    async def bind(self) -> Contact:
        await self.sock.bind((next_host(), 0))
        host, port = self.sock.getsockname()
        return Contact(node_id=self.node_id, host=host, port=port)

    def reply(self, request: object) -> Reply:
        if isinstance(request, Ping):
            return PingReply(node_id=self.node_id)
        if isinstance(request, Store | Announce):
            return StoreReply(stored=True)  # and drops it
        self.asked += 1
        if isinstance(request, FindValue) and self.value is not None:
            return ValueReply(value=self.value)
        if isinstance(request, GetMembers):
            return MembersReply(records=(), contacts=self.fellows)
        return NodesReply(contacts=self.fellows)

    async def serve(self) -> None:
        while True:
            data, source = await self.sock.recvfrom(9000)
            datagram = decode_datagram(data)
            if isinstance(datagram, RequestDatagram):
                await self.sock.sendto(encode_reply(datagram.msg_id, self.reply(datagram.request)), source)

    async def introduce(self, address: tuple[str, int]) -> None:
        """A ping from the Sybil: the honest node observes it into its routing table (§13.2)."""
        await self.sock.sendto(encode_request(secrets.token_bytes(20), Ping(node_id=self.node_id)), address)


def _near(key: bytes, rng: random.Random) -> bytes:
    """An id sharing 150 leading bits with ``key``: closer to it than any honest random id."""
    base = int.from_bytes(key, "big")
    return ((base >> 10 << 10) | rng.getrandbits(10)).to_bytes(20, "big")


async def test_eight_sybils_around_a_key_do_not_stop_an_honest_lookup_over_udp() -> None:
    """30 honest DHT nodes and 8 Sybils whose ids sit next to a feed's node key: the Sybils forge the
    record (a newer seq with a broken signature), serve another feed's valid record, replay the owner's
    older record, or withhold it and name only each other; honest lookups from the nodes nearest the key
    still get the genuine newest record."""
    rng = random.Random(4)
    owner, mallory = SigningKey(os.urandom(32)), SigningKey(os.urandom(32))
    key = node_key(FeedId(owner.public_key))
    expiry = int(time.time() * 1000) + 600_000
    genuine = create_node_record(
        owner, addresses=[("127.0.9.9", 7433)], transport_key=bytes(32), seq=100, expiry_ms=expiry
    ).encode()
    forged = bytearray(
        create_node_record(
            owner, addresses=[("127.0.6.6", 6666)], transport_key=bytes(32), seq=900, expiry_ms=expiry
        ).encode()
    )
    forged[-1] ^= 1
    foreign = create_node_record(
        mallory, addresses=[("127.0.6.6", 6666)], transport_key=bytes(32), seq=900, expiry_ms=expiry
    ).encode()
    older = create_node_record(  # the owner's own earlier record, replayed
        owner, addresses=[("127.0.6.6", 6666)], transport_key=bytes(32), seq=50, expiry_ms=expiry
    ).encode()
    ids: set[bytes] = set()
    while len(ids) < 8:
        ids.add(_near(key, rng))
    values = [bytes(forged)] * 2 + [foreign] * 2 + [older] * 2 + [None] * 2
    sybils = [Sybil(node_id, value) for node_id, value in zip(sorted(ids), values, strict=True)]
    async with trio.open_nursery() as nursery:
        contacts = tuple([await sybil.bind() for sybil in sybils])
        for sybil in sybils:
            sybil.fellows = contacts
            nursery.start_soon(sybil.serve)
        honest = []
        for _ in range(30):
            node = DHT(secrets.token_bytes(20), host=next_host(), port=0, timeout=0.3)
            await nursery.start(node.run)
            honest.append(node)
        for node in honest[1:]:
            await node.bootstrap([honest[0].address])
        for sybil in sybils:  # the Sybils join like anyone else: every honest table hears of them
            for node in honest:
                await sybil.introduce(node.address)

        def held() -> list[int]:
            return [sum(s.node_id in {c.node_id for c in n.table.contacts()} for s in sybils) for n in honest]

        with trio.move_on_after(5):  # the introductions' pings are answered
            while sum(held()) < 6 * len(honest):
                await trio.sleep(0.05)
        assert sum(held()) >= 6 * len(honest), held()  # (a full bucket keeps fewer)

        assert await honest[5].put(key, genuine) >= 10  # the Sybils say they stored it and drop it
        now_ms = int(time.time() * 1000)
        holders = [n for n in honest if n.records.get(key, now_ms) == genuine]
        assert len(holders) >= 8
        base = int.from_bytes(key, "big")
        origins = sorted(
            (n for n in honest if n not in holders), key=lambda n: int.from_bytes(n.own_id, "big") ^ base
        )[:10]
        found: list[object] = [None] * len(origins)

        async def find(i: int) -> None:
            found[i] = await origins[i].find_node_record(owner.public_key)

        async with trio.open_nursery() as lookups:
            for i in range(len(origins)):
                lookups.start_soon(find, i)
        assert all(r is not None and r.encode() == genuine for r in found), found
        assert sum(s.asked for s in sybils if s.value is not None) >= len(origins)  # asked, did not win
        # without validation the first value wins, and the Sybils are the first asked
        plain = [await o.lookup(key, LookupKind.FIND_VALUE) for o in origins]
        assert sum(r.values[0].value != genuine for r in plain if r.values) >= len(origins) // 2
        nursery.cancel_scope.cancel()
    for sybil in sybils:
        sybil.sock.close()


async def test_no_reply_is_larger_than_its_request_invites() -> None:
    """Anti-amplification (§13.1): tiny requests, as a spoofer would send them, get replies of at most
    ``reply_limit(request)`` bytes, although the node holds a 4 KB value, 30 member records and a full
    table of long IPv6 contacts; the replies shrink (fewer records and contacts) but stay useful."""
    node = DHT(secrets.token_bytes(20), host=next_host(), port=0, timeout=0.3)
    now_ms = int(time.time() * 1000)
    for i in range(200):  # long contacts: IPv6 addresses with nothing to compress
        node.table.observe(
            Contact(node_id=os.urandom(20), host=f"2001:db8:{i + 1:x}:ffff:ffff:ffff:ffff:ffff", port=65535),
            0.0,
        )
    assert len(node.table) >= 60
    for i in range(30):
        record = create_member_record(
            SigningKey(os.urandom(32)),
            swarm="big",
            addresses=[(f"127.1.{i}.2", 7433)],
            seq=1,
            expiry_ms=now_ms + 600_000,
        )
        assert node.records.put(swarm_key("big"), record.encode(), now_ms).accepted
    big_key = secrets.token_bytes(20)
    assert node.records.put(big_key, "\U0001d11e" * 1000, now_ms).accepted  # 4000 bytes of UTF-8
    asker_id = secrets.token_bytes(20)
    requests = [
        FindNode(node_id=asker_id, key=secrets.token_bytes(20)),
        FindValue(node_id=asker_id, key=big_key),
        GetMembers(node_id=asker_id, key=swarm_key("big")),
    ]
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await sock.bind((next_host(), 0))
        for request in requests:
            unbounded = len(encode_reply(bytes(20), node.answer(request, sock.getsockname())))
            msg = secrets.token_bytes(20)
            data = encode_request(msg, request)
            await sock.sendto(data, node.address)
            with trio.fail_after(3):
                reply, _ = await sock.recvfrom(9000)
                # an unknown sender is pinged before it joins the table (§13.6): a small request
                while isinstance(decode_datagram(reply), RequestDatagram):
                    assert len(reply) <= len(data)
                    reply, _ = await sock.recvfrom(9000)
            datagram = decode_datagram(reply)
            assert isinstance(datagram, ResponseDatagram) and datagram.msg_id == msg
            assert len(reply) <= reply_limit(len(data)) == REPLY_FLOOR < unbounded, (request.NAME, len(reply))
            parsed = parse_reply(request.NAME, datagram.body)
            if isinstance(request, GetMembers):
                assert (
                    isinstance(parsed, MembersReply)
                    and len(parsed.records) >= 1
                    and len(parsed.contacts) >= 5
                )
            else:  # the value did not fit: the node list instead
                assert isinstance(parsed, NodesReply) and len(parsed.contacts) >= 10
        sock.close()
        nursery.cancel_scope.cancel()
