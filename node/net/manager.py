"""The connection manager (spec §12.8): which peers the node dials, and when.

Theory of operation. Addresses reach the manager as **candidates** (``offer``): from ``--peer`` (pinned:
always kept connected), the DHT bootstrap nodes, peers remembered in the store, node records found in the DHT, swarm member
records, and peer exchange (``peers`` messages, unverified until the handshake proves who answers).
Every ``manage_interval`` seconds, or when woken (a connection ended, a candidate arrived), the manager:

1. dials every pinned candidate that is not connected (by address, or by its feed once a handshake
   proved it), not being dialled, due and not banned;
2. while the node has fewer than ``target_connections`` outgoing gossip connections (counting dials in
   progress), and fewer than ``max_connections`` connections in all, dials the best due candidate whose
   feed is not connected already. "Best" is, in order: an IP range (IPv4 /24, IPv6 /48) with the fewest
   of our outgoing connections (diversity: an attacker with one range cannot take every slot while
   other ranges are offered); a candidate whose feed we want and no connection covers; the higher peer
   score (``scoring.Scores``); the source (swarm and DHT before remembered before peer exchange); then
   at random.

A dial that fails, or a connection that ends within 30 s, counts a failure: the candidate is not
dialled again for ``min(2^failures, 300)`` seconds (pinned ones: at most 60 s); a connection that lasted
longer clears the count. A candidate whose address answers with another identity than the one offered
is corrected (DHT, swarm) or dropped (peer exchange). At most ``MAX_CANDIDATES`` are kept: the least
useful are forgotten first.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import trio
from tidings.node.addresses import address_range, parse_address
from tidings.node.clock import SYSTEM_CLOCK, Clock, make_rng
from tidings.protocol import feed_id_text

__all__ = ["MAX_CANDIDATES", "Candidate", "ConnectionManager", "ManagedNode"]

log = logging.getLogger("tidings.manager")

MAX_CANDIDATES = 2000
#: Lower is dialled first.
_SOURCE_RANK = {"peer": 0, "swarm": 1, "dht": 1, "remembered": 2, "bootstrap": 2, "pex": 3}


@dataclass
class Candidate:
    address: str
    host: str
    feed: bytes | None
    source: str
    pinned: bool = False
    failures: int = 0
    next_try: float = 0.0
    dialing: bool = False


class _Connection(Protocol):
    @property
    def feed(self) -> bytes: ...
    @property
    def address(self) -> str: ...
    @property
    def initiator(self) -> bool: ...
    @property
    def once(self) -> bool: ...


class _Bans(Protocol):
    def banned(self, host: str) -> bool: ...


class _Scores(Protocol):
    def get(self, host: str) -> float: ...


class ManagedNode(Protocol):
    """What the connection manager needs from the node (``Node`` is one)."""

    @property
    def limits(self) -> Mapping[str, Any]: ...
    @property
    def address(self) -> str | None: ...
    @property
    def connections(self) -> Mapping[int, _Connection]: ...
    @property
    def penalties(self) -> _Bans: ...
    @property
    def scores(self) -> _Scores: ...
    @property
    def wanted(self) -> set[bytes]: ...

    def local_host(self) -> str | None:
        """The address to dial from (None: any)."""
        ...

    async def serve_connection(
        self, stream: trio.abc.Stream, address: str, *, initiator: bool, expected: Candidate | None = None
    ) -> object | None:
        """Handshake and replicate on ``stream`` until it ends; the connection if one was made."""
        ...


class ConnectionManager:
    def __init__(
        self, node: ManagedNode, *, clock: Clock = SYSTEM_CLOCK, rng: random.Random | None = None
    ) -> None:
        self.node = node
        self.clock = clock
        self.rng = rng if rng is not None else make_rng()
        self.candidates: dict[str, Candidate] = {}
        self._wake = trio.Event()
        self.dials = 0

    # -- candidates ------------------------------------------------------------------------------------
    def offer(self, address: str, *, feed: bytes | None = None, source: str, pinned: bool = False) -> None:
        """Add or refresh a candidate address (see the module docstring)."""

        try:
            host, _ = parse_address(address)
        except ValueError:
            return
        if address == self.node.address or host in ("0.0.0.0", "::", ""):
            return
        cand = self.candidates.get(address)
        if cand is None:
            if len(self.candidates) >= MAX_CANDIDATES:
                self._forget_some()
            cand = self.candidates[address] = Candidate(address, host, feed, source, pinned)
        else:
            cand.pinned |= pinned
            if feed is not None and source != "pex":
                cand.feed = feed
            if _SOURCE_RANK.get(source, 9) < _SOURCE_RANK.get(cand.source, 9):
                cand.source = source
        self.wake()

    def _forget_some(self) -> None:
        removable = [c for c in self.candidates.values() if not c.pinned and not c.dialing]
        removable.sort(key=lambda c: (-_SOURCE_RANK.get(c.source, 9), -c.failures))
        for c in removable[: max(1, len(removable) // 10)]:
            del self.candidates[c.address]

    def wake(self) -> None:
        self._wake.set()

    def pinned_feeds(self) -> set[bytes]:
        """The feeds of pinned candidates, once a handshake proved them."""
        return {c.feed for c in self.candidates.values() if c.pinned and c.feed is not None}

    # -- choosing --------------------------------------------------------------------------------------
    def choose(self, now: float) -> list[Candidate]:
        """The candidates to dial now (pinned ones first), per the module docstring."""
        node = self.node
        limits = node.limits
        connections = [c for c in node.connections.values() if not c.once]
        outbound = [c for c in connections if c.initiator]
        connected_feeds = {c.feed for c in connections}
        busy = {c.address for c in outbound} | {c.address for c in self.candidates.values() if c.dialing}
        dialing = sum(1 for c in self.candidates.values() if c.dialing)
        total_room = limits["max_connections"] - len(connections) - dialing

        def due(c: Candidate) -> bool:
            return (
                not c.dialing
                and c.address not in busy
                and c.next_try <= now
                and not node.penalties.banned(c.host)
            )

        chosen = [
            c
            for c in self.candidates.values()
            if c.pinned and due(c) and (c.feed is None or c.feed not in connected_feeds)
        ][: max(total_room, 0)]
        room = min(
            limits["target_connections"] - len(outbound) - dialing - len(chosen), total_room - len(chosen)
        )
        if room <= 0:
            return chosen
        pool = [
            c
            for c in self.candidates.values()
            if not c.pinned and due(c) and (c.feed is None or c.feed not in connected_feeds)
        ]
        ranges: dict[str, int] = {}
        for c in outbound:
            r = address_range(c.address.rpartition(":")[0])
            ranges[r] = ranges.get(r, 0) + 1
        uncovered = node.wanted - connected_feeds
        # everything but the range count is fixed for this round: compute it once per candidate
        fixed = {
            c.address: (
                c.feed not in uncovered,
                -node.scores.get(c.host),
                _SOURCE_RANK.get(c.source, 9),
                self.rng.random(),
            )
            for c in pool
        }
        range_of = {c.address: address_range(c.host) for c in pool}
        picked_feeds: set[bytes] = set()
        while room > 0 and pool:
            best = min(pool, key=lambda c: (ranges.get(range_of[c.address], 0), *fixed[c.address]))
            pool.remove(best)
            if best.feed is not None and best.feed in picked_feeds:
                continue
            if best.feed is not None:
                picked_feeds.add(best.feed)
            r = range_of[best.address]
            ranges[r] = ranges.get(r, 0) + 1
            chosen.append(best)
            room -= 1
        return chosen

    # -- running ---------------------------------------------------------------------------------------
    async def run(self, nursery: trio.Nursery) -> None:
        interval = float(self.node.limits["manage_interval"])
        while True:
            for cand in self.choose(self.clock.monotonic()):
                cand.dialing = True
                nursery.start_soon(self._dial, cand)
            with trio.move_on_after(interval):
                await self._wake.wait()
            self._wake = trio.Event()

    async def _dial(self, cand: Candidate) -> None:
        node = self.node
        started = self.clock.monotonic()
        conn = None
        self.dials += 1
        try:
            host, port = parse_address(cand.address)
            try:
                stream = await trio.open_tcp_stream(host, port, local_address=node.local_host())
            except OSError as exc:
                log.info("cannot reach %s: %s", cand.address, exc.strerror or exc)
            else:
                conn = await node.serve_connection(stream, cand.address, initiator=True, expected=cand)
        finally:
            cand.dialing = False
            now = self.clock.monotonic()
            if conn is not None and now - started > 30:
                cand.failures = 0
                cand.next_try = now + 1.0
            else:
                cand.failures += 1
                cap = 60.0 if cand.pinned else 300.0
                cand.next_try = now + min(2.0**cand.failures, cap)
            self.wake()

    def wrong_identity(self, cand: Candidate, actual: bytes) -> None:
        """The handshake at ``cand.address`` proved another feed than offered (module docstring)."""
        log.info(
            "%s is %s, not %s as %s said",
            cand.address,
            feed_id_text(actual),
            feed_id_text(cand.feed) if cand.feed else "?",
            cand.source,
        )
        if cand.source == "pex" and not cand.pinned:
            self.candidates.pop(cand.address, None)
        else:
            cand.feed = actual

    def statistics(self) -> dict[str, Any]:
        return {
            "candidates": len(self.candidates),
            "dialing": sum(1 for c in self.candidates.values() if c.dialing),
            "dials": self.dials,
        }
