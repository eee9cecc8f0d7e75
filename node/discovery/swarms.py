"""Swarms in discovery: our member records, the members we find, and member gossip (spec §13.6).

Theory of operation. ``Swarms`` belongs to ``Discovery`` and runs in its nursery. Every discovery tick
``sync`` reads the joined swarms from the ``swarms`` table (so ``tidings swarm join`` in another process
takes effect within a tick) and starts or cancels one task per swarm. That task announces our member
record under the swarm key (again on the node record's schedule) and looks up the members (every 1, 2, 4
... ``swarm_interval`` s). Member records found in the DHT or gossiped by a peer (``receive_members``) are
*taken* (``take``): the newest per member is kept (``member_records``, at most ``MAX_SWARM_MEMBERS`` per
swarm), and a record that is new or moved the member is fresh: its member is stored (its feed becomes
wanted), its address offered to the connection manager (source ``swarm``), and the fresh records are
passed on to our other peers. A new connection is offered every record we hold (``offer_members``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import trio
from tidings.node.clock import Clock
from tidings.node.discovery.dht import DHT
from tidings.node.discovery.dht_support import address_text, backoff, member_record
from tidings.protocol import SigningKey
from tidings.protocol.records import MemberRecord, create_member_record, swarm_key
from tidings.storage import dht as dht_store
from tidings.storage import peers
from tidings.storage.thread import DatabaseThread

__all__ = ["MAX_SWARM_MEMBERS", "MemberPeer", "SwarmHost", "Swarms"]

log = logging.getLogger("tidings.discovery")

#: Most members of one swarm a node keeps track of (a Sybil flood of members stops there).
MAX_SWARM_MEMBERS = 1000


class MemberPeer(Protocol):
    """A gossip connection, as far as swarm member records go (spec §13.6)."""

    @property
    def feed(self) -> bytes: ...

    async def send_members(self, records: list[bytes]) -> None: ...


class SwarmHost(Protocol):
    """What the swarms need from the node (``Node`` is one)."""

    @property
    def key(self) -> SigningKey: ...
    @property
    def limits(self) -> Mapping[str, Any]: ...
    @property
    def db(self) -> DatabaseThread: ...
    @property
    def blocked(self) -> set[bytes]: ...
    @property
    def connections(self) -> Mapping[int, MemberPeer]: ...

    def dial(
        self, address: str, *, feed: bytes | None = None, source: str = "dht", pinned: bool = False
    ) -> None: ...
    async def refresh_wants(self) -> None: ...


class Swarms:
    """The swarms of a running node (see the module docstring)."""

    def __init__(
        self,
        node: SwarmHost,
        *,
        dht: Callable[[], DHT],
        public_address: Callable[[], Awaitable[tuple[str, int] | None]],
        record_ttl: float,
        clock: Clock,
    ) -> None:
        self.node = node
        self._dht = dht
        self._public_address = public_address
        self.record_ttl = record_ttl
        self.clock = clock
        self.scopes: dict[str, trio.CancelScope] = {}
        #: swarm name -> member -> newest valid member record seen (DHT or gossip)
        self.member_records: dict[str, dict[bytes, MemberRecord]] = {}
        self.own_records: dict[str, MemberRecord] = {}

    async def sync(self, nursery: trio.Nursery) -> None:
        """Start the task of each swarm joined since the last call; stop those of swarms left."""
        names = set(await self.node.db.call(dht_store.swarm_names))
        for name in set(self.scopes) - names:
            self.scopes.pop(name).cancel()
            self.own_records.pop(name, None)  # no longer offered to peers (it expires in the DHT)
            log.info("left swarm %s", name)
            await self.node.refresh_wants()
        for name in names - set(self.scopes):
            scope = self.scopes[name] = trio.CancelScope()
            nursery.start_soon(self._swarm, name, scope)
            log.info("joined swarm %s", name)

    async def _swarm(self, name: str, scope: trio.CancelScope) -> None:
        with scope:
            key = swarm_key(name)
            interval = 1.0
            next_announce = 0.0
            announces = 0
            while True:
                if self.clock.monotonic() >= next_announce:
                    stored = await self._announce(name)
                    announces = announces + 1 if stored else 0
                    delay = backoff(announces, self.record_ttl / 2) if stored else 2.0
                    next_announce = self.clock.monotonic() + delay
                await self._meet(name, key)
                await trio.sleep(interval)
                interval = min(interval * 2, float(self.node.limits.get("swarm_interval", 30.0)))

    async def _announce(self, name: str) -> int:
        address = await self._public_address()
        if address is None:
            return 0
        stamp = self.clock.wall_ms()
        record = create_member_record(
            self.node.key,
            swarm=name,
            addresses=[address],
            seq=stamp,
            expiry_ms=stamp + int(self.record_ttl * 1000),
        )
        self.own_records[name] = record
        return await self._dht().announce(record.key, record.encode())

    async def _meet(self, name: str, key: bytes) -> None:
        members = await self._dht().members(key)
        await self.take(name, members, via=None)

    async def take(self, name: str, records: list[MemberRecord], via: MemberPeer | None) -> None:
        """Remember new member records of swarm ``name`` (found in the DHT or gossiped), offer their
        addresses to the connection manager, and pass the new ones on to our other peers (§13.6)."""
        node = self.node
        me = node.key.public_key
        known = self.member_records.setdefault(name, {})
        fresh: list[MemberRecord] = []
        for record in records:
            if record.member == me or record.member in node.blocked:
                continue
            held = known.get(record.member)
            if held is not None and held.seq >= record.seq:
                continue
            if held is None and len(known) >= MAX_SWARM_MEMBERS:
                continue
            known[record.member] = record
            if held is None or held.addresses != record.addresses:
                fresh.append(record)  # a mere refresh (same addresses, later expiry) is kept, not spread
        if not fresh:
            return
        stamp = self.clock.wall_ms()
        new = False
        for record in fresh:
            address = address_text(record.addresses[0])
            new |= await node.db.call(dht_store.add_swarm_member, name, record.member, [address], stamp)
            await node.db.call(peers.note_peer, record.member, address, "swarm", False, stamp)
            node.dial(address, feed=record.member, source="swarm")
        if new:
            await node.refresh_wants()
        data = [r.encode() for r in fresh]
        for conn in list(node.connections.values()):
            if conn is not via:
                with contextlib.suppress(Exception):  # a broken peer ends on its own
                    await conn.send_members(data)

    async def offer_members(self, conn: MemberPeer) -> None:
        """Send a new connection every member record we hold of the swarms we are in."""
        now = self.clock.wall_ms()
        data = [
            r.encode()
            for name in list(self.scopes)
            for r in self.member_records.get(name, {}).values()
            if r.expiry_ms > now
        ]
        data += [
            r.encode() for name, r in self.own_records.items() if name in self.scopes and r.expiry_ms > now
        ]
        if data:
            await conn.send_members(data)

    async def receive_members(self, data: tuple[bytes, ...], conn: MemberPeer) -> None:
        """Member records gossiped by a peer: only valid ones of swarms we are in count (§13.6)."""
        now = self.clock.wall_ms()
        by_key = {swarm_key(name): name for name in self.scopes}
        taken: dict[str, list[MemberRecord]] = {}
        for value in data:
            record = member_record(value, None, now)  # any swarm: the key is checked below
            if record is not None and record.swarm_key in by_key:
                taken.setdefault(by_key[record.swarm_key], []).append(record)
        for name, records in taken.items():
            await self.take(name, records, via=conn)
