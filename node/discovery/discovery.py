"""Finding peers through the DHT: the node record, feeds we want, and swarms.

Theory of operation. ``Discovery.run`` (started by ``Node.run`` with ``nursery.start``) starts the UDP
``DHT`` on the host and port number of the TCP listener, then:

1. joins: pings the ``--bootstrap`` addresses (and the ``bootstrap`` list of config.toml) and the
   contacts saved in the store, then looks up its own id; while the table is empty it tries again
   every few seconds (a bootstrap node may start after us);
2. publishes our signed node record (listen address, transport key, the relays the node holds a
   reservation on (``DiscoveryHost.relay_addresses``; version 2 when there are any), seq = ms
   timestamp, ``record_ttl``) on the k closest nodes, again after 2, 4, 8 ... seconds while the network
   grows, then every half TTL, and at once when the relays change (``relays_changed``, also noticed at
   every tick);
3. every second: for each wanted feed (``Node.wanted``: follows, follows of follows, swarm members) that
   has no connection, looks up its node record (at first right away, then with a per-feed backoff),
   records the address (``peers.note_peer`` source ``dht``) and dials it; a record that lists relays
   is also handed to ``DiscoveryHost.dial_via_relays``;
4. runs the joined swarms (``swarms.Swarms``: member records, member lookups and member gossip);
5. saves the routing table contacts every minute and at exit.

``set_client_mode`` puts the DHT in client mode (``DHT.set_client_mode``: it asks but answers no one,
so no server adds it to a routing table), for a node that others cannot dial (spec §13.6).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Sequence
from typing import Any, Protocol

import trio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from tidings.node.clock import SYSTEM_CLOCK, Clock, make_rng
from tidings.node.discovery.dht import DHT
from tidings.node.discovery.dht_support import address_text, backoff, record_store, resolve_address
from tidings.node.discovery.swarms import MAX_SWARM_MEMBERS, MemberPeer, SwarmHost, Swarms
from tidings.protocol import feed_id_text
from tidings.protocol.dht_wire import Contact, Stun, StunReply, digest
from tidings.protocol.errors import LocalProtocolError
from tidings.protocol.records import MAX_RELAYS, MemberRecord, NodeRecord, create_node_record
from tidings.storage import dht as dht_store
from tidings.storage import peers

__all__ = ["MAX_SWARM_MEMBERS", "Discovery", "DiscoveryHost", "MemberPeer", "dht_node_id"]

log = logging.getLogger("tidings.discovery")

_WILDCARDS = ("", "0.0.0.0", "::")


def dht_node_id(feed: bytes) -> bytes:
    """Our DHT id: a digest of the feed key (stable across restarts, as the saved contacts assume)."""
    return digest(b"tidings-dht-node/1\x00" + feed)


class DiscoveryHost(SwarmHost, Protocol):
    """What discovery needs from the node (``Node`` is one); the swarms' needs (``SwarmHost``) too."""

    @property
    def listen(self) -> str: ...
    @property
    def address(self) -> str | None: ...
    @property
    def transport_private(self) -> bytes: ...
    @property
    def wanted(self) -> set[bytes]: ...

    def offered_feeds(self) -> set[bytes]:
        """Feeds whose address the connection manager holds already."""
        ...

    def relay_addresses(self) -> list[tuple[bytes, str]]:
        """The relays we hold a reservation on, ``(relay feed, "HOST:PORT")``, at most ``MAX_RELAYS``
        used: our node record lists them (version 2, spec §13.4); empty when we are dialled directly."""
        ...

    def dial_via_relays(self, feed: bytes, relays: Sequence[tuple[bytes, str]]) -> None:
        """Reach ``feed`` through one of ``relays`` (``(relay feed, "HOST:PORT")``, as its node record
        lists them); called besides ``dial`` of the record's direct address."""
        ...


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
        self._public: tuple[str, int] | None = None
        self.client_mode = False  # applied to the DHT when it starts (``set_client_mode``)
        self._rejoin = False  # a client became a server: join again (``set_client_mode``)
        self._republish = trio.Event()  # set: publish our node record now (the relays changed)
        self._relays_seen: tuple[tuple[bytes, str], ...] = ()
        self._last_seq = 0
        self.swarm_state = Swarms(
            node, dht=self._dht, public_address=self._public_address, record_ttl=self.record_ttl, clock=clock
        )

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
            client_mode=self.client_mode,
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
            if not len(dht.table) or self._rejoin:
                self._rejoin = False
                await self._join()
            relays = self._relays()
            if relays != self._relays_seen:  # the host may change them without telling us
                self.relays_changed()
            await self.swarm_state.sync(nursery)
            await self._find_wanted(nursery)
            if self.clock.monotonic() >= next_save:
                await self._save_contacts()
                next_save = self.clock.monotonic() + 60.0
            await trio.sleep(float(self.node.limits.get("discovery_interval", 1.0)))

    def _dht(self) -> DHT:
        assert self.dht is not None
        return self.dht

    def set_client_mode(self, on: bool) -> None:
        """Run the DHT as a client (``on``: ask, answer no one; spec §13.6) or as a server again; kept
        for a DHT that has not started yet. A client that becomes a server joins again, so that the
        nodes it knows hear from it and take it into their routing tables."""
        self._rejoin = self.client_mode and not on
        self.client_mode = on
        if self.dht is not None:
            self.dht.set_client_mode(on)

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
    def relays_changed(self) -> None:
        """The relays of ``DiscoveryHost.relay_addresses`` changed: publish our node record now."""
        self._relays_seen = self._relays()
        self._republish.set()

    def _relays(self) -> tuple[tuple[bytes, str], ...]:
        return tuple(self.node.relay_addresses())[:MAX_RELAYS]

    async def _publish_loop(self) -> None:
        attempt = 0
        while True:
            if self._republish.is_set():
                self._republish = trio.Event()
                attempt = 0  # a new record: spread it as quickly as the first one
            stored = await self.publish()
            attempt = attempt + 1 if stored else 0
            with trio.move_on_after(backoff(attempt, self.record_ttl / 2) if stored else 2.0):
                await self._republish.wait()

    async def publish(self) -> int:
        """Store our signed node record on the k closest nodes; how many accepted it."""
        address = await self._public_address()
        if address is None:
            return 0
        stamp = self._last_seq = max(self.clock.wall_ms(), self._last_seq + 1)  # every version is newer
        relays = self._relays()

        def record(relays: tuple[tuple[bytes, str], ...]) -> NodeRecord:
            return create_node_record(
                self.node.key,
                addresses=[address],
                transport_key=self._transport_public,
                seq=stamp,
                expiry_ms=stamp + int(self.record_ttl * 1000),
                relays=relays,
            )

        try:
            own = record(relays)
        except LocalProtocolError as exc:  # a relay the record cannot carry: publish the direct address
            log.warning("node record without relays: %s", exc)
            own = record(())
        stored = await self._dht().put(own.key, own.encode())
        log.debug("node record (version %d) published on %d nodes", own.version, stored)
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
            self._next_try[feed] = (now + backoff(attempts + 2, 600.0), attempts + 1)
            self._lookups.add(feed)
            nursery.start_soon(self._locate, feed)

    async def _locate(self, feed: bytes) -> None:
        try:
            record = await self._dht().find_node_record(feed)
            if record is None:
                log.debug("no node record found for %s", feed_id_text(feed))
                return
            address = address_text(record.addresses[0])
            log.info("found %s at %s in the DHT", feed_id_text(feed), address)
            await self.node.db.call(peers.note_peer, feed, address, "dht", False, self.clock.wall_ms())
            self.node.dial(address, feed=feed, source="dht")
            if record.relays:  # a node others may not dial directly: reach it through a relay too
                self.node.dial_via_relays(feed, record.relays)
        finally:
            self._lookups.discard(feed)

    # -- swarms (``swarms.Swarms``) -----------------------------------------------------------------------
    @property
    def member_records(self) -> dict[str, dict[bytes, MemberRecord]]:
        """Swarm name -> member -> newest valid member record seen (``Swarms.member_records``)."""
        return self.swarm_state.member_records

    @property
    def own_records(self) -> dict[str, MemberRecord]:
        """Our own current member record of each swarm we announced in."""
        return self.swarm_state.own_records

    async def offer_members(self, conn: MemberPeer) -> None:
        """Send a new connection every member record we hold of the swarms we are in."""
        await self.swarm_state.offer_members(conn)

    async def receive_members(self, data: tuple[bytes, ...], conn: MemberPeer) -> None:
        """Member records gossiped by a peer: only valid ones of swarms we are in count (§13.6)."""
        await self.swarm_state.receive_members(data, conn)

    def counters(self) -> dict[str, int]:
        """For ``node.json``: the size of the DHT's routing table, and whether it runs as a client."""
        return {
            "dht_contacts": 0 if self.dht is None else len(self.dht.table),
            "dht_client": int(self.client_mode),
        }

    def statistics(self) -> dict[str, Any]:
        return {
            "dht": None if self.dht is None else self.dht.statistics(),
            "swarms": sorted(self.swarm_state.scopes),
            "client_mode": self.client_mode,
            "lookups": len(self._lookups),
            "next_lookup": min((t for t, _ in self._next_try.values()), default=math.inf),
        }
