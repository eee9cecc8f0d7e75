"""The node's TCP listener: accepts inbound connections within the limits of spec §12.5.

Theory of operation. ``accept_loop`` takes every connection the listener accepts and first asks
``admit`` whether to keep it. A banned host is closed at once. Then every inbound connection holds an
**inbound slot** (node/net/eviction.py) from before its handshake until it ends, and each of these
limits is checked in turn, counting the slots not already leaving:

- ``max_per_host`` slots per host (an IPv4 address, an IPv6 /64: ``host_key``);
- ``max_per_range`` slots per address range (IPv4 /24, IPv6 /48: ``address_range``);
- ``max_connections − reserved_slots`` slots in all (the reserved slots are for the node's own dials:
  pinned, followed and chosen peers, which inbound peers cannot take), and ``max_connections``
  slots plus established outgoing connections.

A limit that is reached evicts, within its scope, the least useful slot that may go (``choose_victim``);
when none may, the new connection is closed at once. Evictions are only made once every limit is
satisfied by them. ``watch_idle`` cuts established connections that stayed never useful for
``idle_timeout`` seconds after their handshake. An evicted or cut connection that was never useful
costs its host a ``never_useful`` score event (spec §12.8.4), so a host that keeps opening useless
connections is banned.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import trio
from tidings.node.addresses import address_range, host_key
from tidings.node.clock import Clock
from tidings.node.net.eviction import (
    NEVER_USEFUL,
    InboundPeer,
    InboundSlot,
    choose_victim,
    idle_due,
    tier,
)
from tidings.node.net.scoring import Penalties

__all__ = ["InboundHost", "Listener", "close_stream"]

log = logging.getLogger("tidings.node")

_ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
#: Longest pause between two looks for idle connections (spec §12.5: cut within ``idle_timeout`` + 1 s).
_IDLE_STEP = 1.0


class _Connection(InboundPeer, Protocol):
    @property
    def initiator(self) -> bool: ...


class _Scores(Protocol):
    def get(self, host: str) -> float: ...


class InboundHost(Protocol):
    """What the listener needs from the node (``Node`` is one)."""

    @property
    def limits(self) -> Mapping[str, Any]: ...
    @property
    def penalties(self) -> Penalties: ...
    @property
    def scores(self) -> _Scores: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def wanted(self) -> set[bytes]: ...
    @property
    def connections(self) -> Mapping[int, _Connection]: ...

    def kept_feeds(self) -> set[bytes]:
        """Feeds whose connections are never evicted nor cut for idleness (followed, pinned)."""
        ...

    def penalize(self, host: str, event: str, count: float = 1.0) -> None: ...

    async def serve_connection(
        self, stream: trio.abc.Stream, address: str, *, initiator: bool
    ) -> object | None:
        """Handshake and replicate on ``stream`` until it ends."""
        ...


class Listener:
    """Inbound slots, limits, eviction and the idle cut (see the module docstring)."""

    def __init__(self, node: InboundHost) -> None:
        self.node = node
        self.slots: set[InboundSlot] = set()
        self.evicted = 0  # connections evicted for a newcomer
        self.idle_cut = 0  # connections cut for idleness
        self.refused: dict[str, int] = {}  # refusals by reason

    @property
    def inbound(self) -> int:
        """Inbound connections open now, those in their handshake and those leaving included."""
        return len(self.slots)

    async def accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno in _ACCEPT_CAPACITY_ERRNOS:
                    # out of file descriptors or memory: wait for connections to close (as trio's
                    # serve_listeners does) instead of dying
                    log.warning("cannot accept connections: %s; pausing 100 ms", os.strerror(exc.errno or 0))
                    await trio.sleep(0.1)
                    continue
                raise
            host = _peer_host(stream)
            if self.admit(host) is not None:
                await close_stream(stream)
                continue
            # counted at once, before the next accept
            slot = InboundSlot(host, host_key(host), address_range(host), stream, self.node.clock.monotonic())
            self.slots.add(slot)
            nursery.start_soon(self._serve, slot)

    def admit(self, host: str) -> str | None:
        """Make room for an inbound connection from ``host``, evicting as the limits say; the
        reason it is refused, or None (module docstring)."""
        reason, victims = self._plan(host)
        if reason is not None:
            self.refused[reason] = self.refused.get(reason, 0) + 1
            if reason == "banned":
                rec = self.node.penalties.by_host[host]
                if not rec.warned:  # once per ban: a refused peer shows in the log without flooding it
                    rec.warned = True
                    log.warning("refusing %s until its ban ends (%s)", host, rec.last_reason)
            else:
                log.info("refusing %s: %s", host, _REASONS[reason])
            return reason
        for victim, victim_tier in victims:
            self.evicted += 1
            log.info("evicting inbound %s (tier %d) to make room for %s", victim.host, victim_tier, host)
            self._drop(victim, victim_tier)
        return None

    def _plan(self, host: str) -> tuple[str | None, list[tuple[InboundSlot, int]]]:
        node = self.node
        if node.penalties.banned(host):
            return "banned", []
        limits = node.limits
        now = node.clock.monotonic()
        tiers = self._tiers()
        counted = [s for s in self.slots if not s.leaving]
        outbound = sum(1 for c in node.connections.values() if c.initiator)
        key, rng = host_key(host), address_range(host)
        inbound_cap = min(
            limits["max_connections"] - limits["reserved_slots"], limits["max_connections"] - outbound
        )
        scopes: list[tuple[str, Callable[[InboundSlot], bool], int]] = [
            ("per_host", lambda s: s.key == key, limits["max_per_host"]),
            ("per_range", lambda s: s.range == rng, limits["max_per_range"]),
            ("full", lambda s: True, inbound_cap),
        ]
        victims: list[tuple[InboundSlot, int]] = []
        for reason, within, limit in scopes:
            while sum(1 for s in counted if within(s)) >= limit:
                per_range: dict[str, int] = {}
                for s in counted:
                    per_range[s.range] = per_range.get(s.range, 0) + 1
                victim = choose_victim(
                    (s for s in counted if within(s)),
                    now=now,
                    tiers=tiers,
                    per_range=per_range,
                    score=node.scores.get,
                )
                if victim is None:
                    return reason, []
                counted.remove(victim)
                victims.append((victim, tiers[id(victim)]))
        return None, victims

    def _tiers(self) -> dict[int, int]:
        """Tier of every slot (node/net/eviction.py), its connection found by its stream."""
        node = self.node
        by_stream = {id(c.channel.stream): c for c in node.connections.values() if not c.initiator}
        kept, wanted = node.kept_feeds(), node.wanted
        tiers = {}
        for slot in self.slots:
            slot.peer = by_stream.get(id(slot.stream))
            tiers[id(slot)] = tier(slot.peer, kept=kept, wanted=wanted)
        return tiers

    def _drop(self, slot: InboundSlot, slot_tier: int) -> None:
        """Close a slot's connection; one that was never useful costs its host (spec §12.8.4)."""
        slot.leaving = True
        slot.scope.cancel()
        if slot_tier == NEVER_USEFUL and slot.peer is not None:
            self.node.penalize(slot.host, "never_useful")

    async def watch_idle(self) -> None:
        """Cut connections never useful for ``idle_timeout`` after their handshake (spec §12.5)."""
        while True:
            timeout = float(self.node.limits["idle_timeout"])
            await trio.sleep(max(0.01, min(_IDLE_STEP, timeout / 4)))  # never a busy loop
            now = self.node.clock.monotonic()
            tiers = self._tiers()
            for slot in list(self.slots):
                if idle_due(slot, tiers[id(slot)], now=now, idle_timeout=timeout):
                    self.idle_cut += 1
                    log.info("closing %s: nothing useful %.0f s after its handshake", slot.host, timeout)
                    self._drop(slot, NEVER_USEFUL)

    async def _serve(self, slot: InboundSlot) -> None:
        """Serve an inbound connection in its slot, which ``_drop`` may cancel."""
        try:
            with slot.scope:
                await self.node.serve_connection(slot.stream, slot.host, initiator=False)
        finally:
            self.slots.discard(slot)

    def counters(self) -> dict[str, int]:
        """For ``node.json`` (``tidings status``)."""
        return {"inbound": self.inbound, "evicted": self.evicted, "idle_cut": self.idle_cut}

    def statistics(self) -> dict[str, Any]:
        return {
            "inbound": self.inbound,
            "evicted": self.evicted,
            "idle_cut": self.idle_cut,
            "refused": dict(self.refused),
        }


_REASONS = {
    "per_host": "too many connections from its host",
    "per_range": "too many connections from its address range",
    "full": "connection limit reached",
}


def _peer_host(stream: trio.abc.Stream) -> str:
    try:
        return str(stream.socket.getpeername()[0])  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return "?"


async def close_stream(stream: trio.abc.Stream) -> None:
    """Close ``stream`` within a second, whatever state it is in."""
    with (
        trio.move_on_after(1),
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError),
    ):
        await stream.aclose()
