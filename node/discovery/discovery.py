"""Finding peers through the DHT: the node record, feeds we want, and swarms.

Theory of operation. ``Discovery.run`` (started by ``Node.run`` with ``nursery.start``) starts the UDP
``DHT`` on the host and port number of the TCP listener, then:

1. joins: pings the ``--bootstrap`` addresses (and the ``bootstrap`` list of config.toml) and the
   contacts saved in the store, then looks up its own id; while the table is empty it tries again
   every few seconds (a bootstrap node may start after us);
2. publishes our signed node record (listen address, transport key, seq = ms timestamp, ``record_ttl``)
   on the k closest nodes, again after 2, 4, 8 ... seconds while the network grows, then every half TTL;
3. every second: for each wanted feed (``Node.wanted``: follows, follows of follows, swarm members) that
   has no connection, looks up its node record (at first right away, then with a per-feed backoff),
   records the address (``peers.note_peer`` source ``dht``) and dials it;
4. for each joined swarm (the ``swarms`` table, so ``tidings swarm join`` in another process takes
   effect within a second): announces our member record under the swarm key, looks up the members
   (every 1, 2, 4 ... 30 s), stores them (``storage.dht.add_swarm_member``; their feeds become wanted),
   and dials those not connected (source ``swarm``);
5. saves the routing table contacts every minute and at exit.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Mapping
from typing import Any, Protocol

import trio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from tidings.node.clock import SYSTEM_CLOCK, Clock, make_rng
from tidings.node.discovery.dht import DHT
from tidings.node.discovery.dht_support import member_record, record_store, resolve_address
from tidings.protocol import SigningKey, feed_id_text
from tidings.protocol.dht_wire import Contact, Stun, StunReply, digest
from tidings.protocol.records import (
    MemberRecord,
    create_member_record,
    create_node_record,
    swarm_key,
)
from tidings.storage import dht as dht_store
from tidings.storage import peers
from tidings.storage.thread import DatabaseThread

__all__ = ["Discovery", "DiscoveryHost", "MemberPeer", "dht_node_id"]

log = logging.getLogger("tidings.discovery")

_WILDCARDS = ("", "0.0.0.0", "::")


def dht_node_id(feed: bytes) -> bytes:
    """Our DHT id: a digest of the feed key (stable across restarts, as the saved contacts assume)."""
    return digest(b"tidings-dht-node/1\x00" + feed)


#: Most members of one swarm a node keeps track of (a Sybil flood of members stops there).
MAX_SWARM_MEMBERS = 1000


def _backoff(attempt: int, cap: float) -> float:
    return float(min(cap, 2.0 ** min(attempt + 1, 30)))


class MemberPeer(Protocol):
    """A gossip connection, as far as swarm member records go (spec §13.6)."""

    @property
    def feed(self) -> bytes: ...

    async def send_members(self, records: list[bytes]) -> None: ...


class DiscoveryHost(Protocol):
    """What discovery needs from the node (``Node`` is one)."""

    @property
    def key(self) -> SigningKey: ...
    @property
    def limits(self) -> Mapping[str, Any]: ...
    @property
    def listen(self) -> str: ...
    @property
    def address(self) -> str | None: ...
    @property
    def transport_private(self) -> bytes: ...
    @property
    def db(self) -> DatabaseThread: ...
    @property
    def wanted(self) -> set[bytes]: ...
    @property
    def blocked(self) -> set[bytes]: ...
    @property
    def connections(self) -> Mapping[int, MemberPeer]: ...

    def offered_feeds(self) -> set[bytes]:
        """Feeds whose address the connection manager holds already."""
        ...

    def dial(
        self, address: str, *, feed: bytes | None = None, source: str = "dht", pinned: bool = False
    ) -> None: ...
    async def refresh_wants(self) -> None: ...


class Discovery:
    """The node's DHT service (see the module docstring)."""

    def __init__(
        self,
        node: DiscoveryHost,
        *,
        bootstrap: list[str],
        swarms: list[str],
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
    ) -> None:
        self.node = node
        self.clock = clock
        self.rng = rng if rng is not None else make_rng()
        self.bootstrap = list(bootstrap)
        self.swarms = list(swarms)
        limits = node.limits
        self.record_ttl: float = float(limits.get("record_ttl", 3600.0))
        self.dht: DHT | None = None
        self._transport_public = (
            X25519PrivateKey.from_private_bytes(node.transport_private).public_key().public_bytes_raw()
        )
        self._lookups: set[bytes] = set()
        self._next_try: dict[bytes, tuple[float, int]] = {}  # feed -> (next lookup time, attempts)
        self._swarm_scopes: dict[str, trio.CancelScope] = {}
        self._public: tuple[str, int] | None = None
        #: swarm name -> member -> newest valid member record seen (DHT or gossip)
        self.member_records: dict[str, dict[bytes, MemberRecord]] = {}
        self.own_records: dict[str, MemberRecord] = {}

    # -- running ---------------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
        node = self.node
        assert node.address is not None
        listen_host = node.listen.rpartition(":")[0].strip("[]")
        port = int(node.address.rpartition(":")[2])
        self.dht = dht = DHT(
            dht_node_id(node.key.public_key),
            host=listen_host or "0.0.0.0",
            port=port,
            timeout=float(node.limits.get("dht_timeout", 1.0)),
            records=record_store(node.limits),
            clock=self.clock,
            rng=self.rng,
        )
        for name in self.swarms:
            await node.db.call(dht_store.join_swarm, name, self.clock.wall_ms())
        try:
            async with trio.open_nursery() as nursery:
                address = await nursery.start(dht.run)
                task_status.started(address)
                nursery.start_soon(self._main, nursery)
        finally:
            with trio.CancelScope(shield=True):
                await self._save_contacts()

    async def _main(self, nursery: trio.Nursery) -> None:
        await self._join()
        nursery.start_soon(self._publish_loop)
        next_save = self.clock.monotonic() + 60.0
        while True:
            dht = self._dht()
            if not len(dht.table):
                await self._join()
            await self._sync_swarms(nursery)
            await self._find_wanted(nursery)
            if self.clock.monotonic() >= next_save:
                await self._save_contacts()
                next_save = self.clock.monotonic() + 60.0
            await trio.sleep(float(self.node.limits.get("discovery_interval", 1.0)))

    def _dht(self) -> DHT:
        assert self.dht is not None
        return self.dht

    async def _join(self) -> None:
        dht = self._dht()
        addresses: list[tuple[str, int]] = []
        for text in self.bootstrap:
            host, _, port = text.rpartition(":")
            try:
                addresses.append(await resolve_address(host.strip("[]"), int(port)))
            except (OSError, ValueError) as exc:
                log.warning("cannot resolve bootstrap address %s: %s", text, exc)
        saved = await self.node.db.call(dht_store.load_contacts)
        contacts = []
        for node_id, host, port in saved:
            with contextlib.suppress(Exception):
                contacts.append(Contact(node_id=node_id, host=host, port=port))
        size = await dht.bootstrap(addresses, contacts)
        if size:
            log.info("DHT joined: %d contacts", size)
            await self._save_contacts()

    async def _save_contacts(self) -> None:
        if self.dht is None or not len(self.dht.table):
            return
        rows = [(c.node_id, c.host, c.port) for c in self.dht.table.find_neighbors(self.dht.own_id, 500)]
        with contextlib.suppress(Exception):  # the store may be closing; the next start re-bootstraps
            await self.node.db.call(dht_store.save_contacts, rows, self.clock.wall_ms())

    async def _public_address(self) -> tuple[str, int] | None:
        """The address others can dial us at: the listen address, or what a peer sees (stun)."""
        if self._public is not None:
            return self._public
        address = self.node.address
        assert address is not None
        host, _, port = address.rpartition(":")
        if host not in _WILDCARDS:
            self._public = (host, int(port))
            return self._public
        dht = self._dht()
        for contact in dht.table.find_neighbors(dht.own_id, 3):
            with contextlib.suppress(Exception):
                reply = await dht.request(contact.address, Stun(), dht.timeout)
                if isinstance(reply, StunReply):
                    self._public = (reply.host, int(port))
                    return self._public
        return None

    # -- our node record -------------------------------------------------------------------------------
    async def _publish_loop(self) -> None:
        attempt = 0
        while True:
            stored = await self.publish()
            attempt = attempt + 1 if stored else 0
            await trio.sleep(_backoff(attempt, self.record_ttl / 2) if stored else 2.0)

    async def publish(self) -> int:
        """Store our signed node record on the k closest nodes; how many accepted it."""
        address = await self._public_address()
        if address is None:
            return 0
        stamp = self.clock.wall_ms()
        record = create_node_record(
            self.node.key,
            addresses=[address],
            transport_key=self._transport_public,
            seq=stamp,
            expiry_ms=stamp + int(self.record_ttl * 1000),
        )
        stored = await self._dht().put(record.key, record.encode())
        log.debug("node record published on %d nodes", stored)
        return stored

    # -- feeds we want ---------------------------------------------------------------------------------
    async def _find_wanted(self, nursery: trio.Nursery) -> None:
        node = self.node
        connected = {c.feed for c in node.connections.values()}
        known = node.offered_feeds()  # addresses already offered
        missing = node.wanted - connected - known - {node.key.public_key} - node.blocked
        if not missing:
            return
        with_address = await node.db.call(dht_store.feeds_with_address)
        now = self.clock.monotonic()
        for feed in missing:
            if feed in self._lookups or len(self._lookups) >= 4:
                continue
            due, attempts = self._next_try.get(feed, (0.0 if feed not in with_address else now + 60.0, 0))
            self._next_try.setdefault(feed, (due, attempts))
            if now < due:
                continue
            self._next_try[feed] = (now + _backoff(attempts + 2, 600.0), attempts + 1)
            self._lookups.add(feed)
            nursery.start_soon(self._locate, feed)

    async def _locate(self, feed: bytes) -> None:
        try:
            record = await self._dht().find_node_record(feed)
            if record is None:
                log.debug("no node record found for %s", feed_id_text(feed))
                return
            address = _address_text(record.addresses[0])
            log.info("found %s at %s in the DHT", feed_id_text(feed), address)
            await self.node.db.call(peers.note_peer, feed, address, "dht", False, self.clock.wall_ms())
            self.node.dial(address, feed=feed, source="dht")
        finally:
            self._lookups.discard(feed)

    # -- swarms ----------------------------------------------------------------------------------------
    async def _sync_swarms(self, nursery: trio.Nursery) -> None:
        names = set(await self.node.db.call(dht_store.swarm_names))
        for name in set(self._swarm_scopes) - names:
            self._swarm_scopes.pop(name).cancel()
            self.own_records.pop(name, None)  # no longer offered to peers (it expires in the DHT)
            log.info("left swarm %s", name)
            await self.node.refresh_wants()
        for name in names - set(self._swarm_scopes):
            scope = self._swarm_scopes[name] = trio.CancelScope()
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
                    delay = _backoff(announces, self.record_ttl / 2) if stored else 2.0
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
        await self._take_members(name, members, via=None)

    async def _take_members(self, name: str, records: list[MemberRecord], via: MemberPeer | None) -> None:
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
            address = _address_text(record.addresses[0])
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
            for name in list(self._swarm_scopes)
            for r in self.member_records.get(name, {}).values()
            if r.expiry_ms > now
        ]
        data += [
            r.encode()
            for name, r in self.own_records.items()
            if name in self._swarm_scopes and r.expiry_ms > now
        ]
        if data:
            await conn.send_members(data)

    async def receive_members(self, data: tuple[bytes, ...], conn: MemberPeer) -> None:
        """Member records gossiped by a peer: only valid ones of swarms we are in count (§13.6)."""
        now = self.clock.wall_ms()
        by_key = {swarm_key(name): name for name in self._swarm_scopes}
        taken: dict[str, list[MemberRecord]] = {}
        for value in data:
            record = member_record(value, None, now)  # any swarm: the key is checked below
            if record is not None and record.swarm_key in by_key:
                taken.setdefault(by_key[record.swarm_key], []).append(record)
        for name, records in taken.items():
            await self._take_members(name, records, via=conn)

    def statistics(self) -> dict[str, Any]:
        return {
            "dht": None if self.dht is None else self.dht.statistics(),
            "swarms": sorted(self._swarm_scopes),
            "lookups": len(self._lookups),
            "next_lookup": min((t for t, _ in self._next_try.values()), default=math.inf),
        }


def _address_text(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
