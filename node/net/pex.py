"""Peer exchange (spec/protocol.md §12.8.3): offering the addresses of our outgoing peers, and taking
checked addresses from a peer's ``peers`` message to the connection manager."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any, Protocol

import trio
from tidings.node.addresses import SCOPE_RANK, address_scope, parse_address
from tidings.node.net.transport import SecureChannel
from tidings.protocol import SigningKey
from tidings.protocol.replication import Peers, Replication

__all__ = ["offer_peers", "take_peers"]


class PexConnection(Protocol):
    feed: bytes
    address: str
    initiator: bool
    once: bool


class PexNode(Protocol):
    key: SigningKey
    blocked: set[bytes]
    rng: random.Random
    limits: dict[str, Any]
    connections: dict[int, Any]

    def dial(self, address: str, *, feed: bytes | None = None, source: str = "dht") -> None: ...


def take_peers(node: PexNode, peer_host: str, items: Iterable[tuple[bytes, str]]) -> None:
    """Offer the checked addresses of a ``peers`` message from ``peer_host`` to the connection manager."""
    try:
        peer_scope = address_scope(peer_host)
    except ValueError:
        peer_scope = "public"
    for feed, address in items:
        if feed == node.key.public_key or feed in node.blocked:
            continue
        try:
            host, port = parse_address(address)
            scope = address_scope(host)
        except ValueError:
            continue  # names are not taken from peers: no lookups on their behalf
        # a peer may point us only at hosts as public as itself: a public peer cannot make us
        # dial into our own machine or local network
        if port == 0 or scope == "bad" or SCOPE_RANK[scope] < SCOPE_RANK.get(peer_scope, 2):
            continue
        node.dial(address, feed=feed, source="pex")


async def offer_peers(node: PexNode, conn: PexConnection, rep: Replication, channel: SecureChannel) -> None:
    """Every ``pex_interval`` (first at once): the addresses of our other outgoing peers."""
    while True:
        offers = [
            (c.feed, c.address)
            for c in list(node.connections.values())
            if c is not conn and c.initiator and not c.once
        ]
        if offers and rep.state == "ACTIVE":
            node.rng.shuffle(offers)
            await channel.send(rep.send(Peers(items=offers)))
        await trio.sleep(node.limits["pex_interval"])
