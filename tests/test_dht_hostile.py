"""Honest storing nodes refuse forged records sent over real UDP (issue: hostile DHT)."""

from __future__ import annotations

import os
import secrets
import socket
import time

import trio
from tidings.node.dht import DHT
from tidings.protocol import FeedId, SigningKey
from tidings.protocol.dht_wire import Store, decode_datagram, encode_request
from tidings.protocol.records import create_node_record, node_key

from .nodes import next_host


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
