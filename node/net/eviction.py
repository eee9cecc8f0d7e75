"""Which inbound connection gives way when the node is full, and which ones are cut for idleness
(spec/protocol.md §12.5, "Inbound slots").

Theory of operation. Every inbound connection — from the moment it is accepted, handshake included —
holds an **inbound slot** (``InboundSlot``). Each slot has a **tier**, how useful the connection has
been, from the least useful:

=================  ==========================================================================
``NEVER_USEFUL``   still in its handshake, or nothing delivered either way and no clock of the
                   peer names a feed the node replicates, and the peer's feed is not wanted
``INTERESTED``     nothing delivered yet, but the peer's feed is wanted (§12.3) or its clocks
                   name a feed the node replicates: a quiet follower waiting for live push; or
                   it asked for a dial-back or a reservation (§12.9, §12.10)
``SERVED``         the node sent it entries
``DELIVERED``      it delivered entries new to the node
``KEPT``           its proven feed is one the node follows, a pinned peer's or one holding a
                   relay reservation on the node: never evicted
=================  ==========================================================================

When a new connection finds a limit reached, the listener evicts, per limit, the slot with the least
``eviction_key`` among those in the limit's scope that are not ``KEPT`` and older than
``EVICT_GRACE`` (so newcomers cannot evict each other before they had a chance to be useful): the
lowest tier first; in a tier, the slot whose address range (IPv4 /24, IPv6 /48) holds the most
inbound slots (one range cannot push out the others); then the lowest peer score; then, among never
useful slots the oldest (useless the longest), among the others the youngest (a peer that has served
long is kept). A ``NEVER_USEFUL`` connection is also cut on its own ``idle_timeout`` after its
handshake (``idle_due``). Nothing here does IO: the listener (node/net/listener.py) acts on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

__all__ = [
    "DELIVERED",
    "EVICT_GRACE",
    "INTERESTED",
    "KEPT",
    "NEVER_USEFUL",
    "SERVED",
    "InboundSlot",
    "choose_victim",
    "idle_due",
    "tier",
]

NEVER_USEFUL, INTERESTED, SERVED, DELIVERED, KEPT = 0, 1, 2, 3, 4
#: Seconds after its accept during which a slot is never evicted (spec §12.5).
EVICT_GRACE = 1.0


class _Replication(Protocol):
    @property
    def peer_wants(self) -> Mapping[bytes, int]: ...


class _Channel(Protocol):
    @property
    def stream(self) -> trio.abc.Stream: ...


class InboundPeer(Protocol):
    """What eviction looks at in an established connection (``PeerConnection`` is one)."""

    @property
    def feed(self) -> bytes: ...
    @property
    def received(self) -> int: ...
    @property
    def sent(self) -> int: ...
    @property
    def connected_at(self) -> float: ...
    @property
    def rep(self) -> _Replication: ...
    @property
    def channel(self) -> _Channel: ...


@dataclass(eq=False)
class InboundSlot:
    """One inbound connection as the listener counts it (handshake included)."""

    host: str  # the peer's IP address
    key: str  # its per-host unit (``host_key``: the address, or the IPv6 /64)
    range: str  # its address range (``address_range``: IPv4 /24, IPv6 /48)
    stream: trio.abc.Stream
    accepted: float  # clock.monotonic() at accept
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    leaving: bool = False  # evicted or cut: no longer counted for the limits
    peer: Any = None  # the established connection (``InboundPeer``), once its handshake is done


def tier(peer: InboundPeer | None, *, kept: set[bytes], wanted: set[bytes]) -> int:
    """The usefulness tier of a slot's connection (module docstring); ``peer`` None: in handshake."""
    if peer is None:
        return NEVER_USEFUL
    if peer.feed in kept:
        return KEPT
    if peer.received:
        return DELIVERED
    if peer.sent:
        return SERVED
    if peer.feed in wanted or not wanted.isdisjoint(peer.rep.peer_wants) or getattr(peer, "helped", False):
        return INTERESTED
    return NEVER_USEFUL


def choose_victim(
    candidates: Iterable[InboundSlot],
    *,
    now: float,
    tiers: Mapping[int, int],
    per_range: Mapping[str, int],
    score: Callable[[str], float],
) -> InboundSlot | None:
    """The slot to evict among ``candidates`` (module docstring), or None when none may go.
    ``tiers`` maps ``id(slot)`` to its tier; ``per_range`` counts the counted slots per range."""

    def key(slot: InboundSlot) -> tuple[int, int, float, float]:
        t = tiers[id(slot)]
        age_order = slot.accepted if t == NEVER_USEFUL else -slot.accepted
        return (t, -per_range.get(slot.range, 0), score(slot.host), age_order)

    eligible = [
        s for s in candidates if not s.leaving and tiers[id(s)] != KEPT and now - s.accepted >= EVICT_GRACE
    ]
    return min(eligible, key=key, default=None)


def idle_due(slot: InboundSlot, slot_tier: int, *, now: float, idle_timeout: float) -> bool:
    """Whether an established ``NEVER_USEFUL`` connection has been so for ``idle_timeout`` seconds
    since its handshake (spec §12.5): it is cut."""
    return (
        not slot.leaving
        and slot.peer is not None
        and slot_tier == NEVER_USEFUL
        and now - slot.peer.connected_at >= idle_timeout
    )
