"""The trio UDP adapter of the DHT: drives the sans-IO core of ``protocol/`` over a real socket.

Theory of operation. ``DHT.run`` binds one UDP socket (the node gives it the host and port number of
its TCP listener) and owns a nursery with two tasks: the receive loop and the maintenance loop.

- Receiving: a datagram is decoded (``dht_wire.decode_datagram``) only after a cheap look let it
  through (``Responder.decode``): a response must answer a request pending to its source, anything
  else first takes a token from its source's bucket; anything malformed is counted and dropped. A
  request is answered by the ``dht_server.Responder`` (the ``RecordStore`` and the ``RoutingTable``); its sender goes to ``dht_checks.ContactChecks``:
  observed into the table when the table knows it there, else pinged first, so throwaway ids that never
  answer stay out; a full bucket's least recently seen contact is pinged (Kademlia §2.2).
  A response is matched to its request by the random 20-byte message id *and* the source address, so a
  third party cannot answer for the node we asked.
- Asking: ``request(address, request, timeout)`` sends one request and waits for its response (None on
  timeout); ``lookup`` runs a ``protocol.lookup.Lookup`` through the ``dht_lookup.LookupDriver``
  (queries, timers, contacts that keep silent, the ``get_members`` fallback to ``find_value``).
- Client mode (``set_client_mode``, for a node others cannot dial, spec §13.6): requests are dropped
  unread, before the rate limit and the decoder, so the node answers no one (not even ``ping``) and
  observes no requester. It still asks and takes answers. Tidings servers add a requester only once it
  answers their ping (``dht_checks``), so a client never enters their routing tables, and is never
  handed to others as a contact; switched back to server mode it answers, and is added again.
- Extensions degrade: an ``announce`` that gets no reply becomes a plain ``store`` (a stock
  ``kademlia`` node then holds one member record per key, ARCHITECTURE.md).
- Replies are bounded (``dht_server``), and nothing is ever sent to an address that did not ask (no
  unsolicited traffic except our own requests), so a spoofed request cannot turn the DHT into an
  amplifier.

Time comes from the node's clock seam (``clock``: deadlines and rate limits on ``monotonic()``, record
expiry on ``wall_ms()``) and randomness from the node's ``rng``; message ids come from ``secrets``,
since a guessable id would let a third party answer for the node we asked.

Maintenance: records expire; buckets no lookup touched for ``refresh_interval`` are refreshed with a
``find_node`` lookup of a random id in them (``RoutingTable.refresh_targets``).
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import trio
from tidings.node.clock import SYSTEM_CLOCK, Clock, make_rng
from tidings.node.discovery.dht_checks import ContactChecks
from tidings.node.discovery.dht_lookup import LookupDriver
from tidings.node.discovery.dht_requests import Requester
from tidings.node.discovery.dht_server import MEMBERS_BYTES, Responder
from tidings.node.discovery.dht_support import RateLimiter, member_record
from tidings.protocol import RemoteProtocolError
from tidings.protocol.dht_wire import (
    MAX_DATAGRAM,
    Announce,
    Contact,
    NodesReply,
    Ping,
    PingReply,
    Reply,
    Request,
    RequestDatagram,
    Store,
    StoreReply,
    Value,
    reply_limit,
)
from tidings.protocol.errors import LocalProtocolError
from tidings.protocol.lookup import LookupKind, LookupResult
from tidings.protocol.record_store import RecordStore
from tidings.protocol.records import MemberRecord, NodeRecord, decode_record, newer, node_key, validator
from tidings.protocol.routing import RoutingTable

if TYPE_CHECKING:
    import random

__all__ = ["DHT", "MEMBERS_BYTES"]

log = logging.getLogger("tidings.dht")

#: Bytes of the UDP socket's receive buffer asked of the kernel (which may grant less), §13.6.
RECEIVE_BUFFER = 1 << 20


class DHT:
    """One DHT node on a UDP socket (see the module docstring)."""

    def __init__(
        self,
        own_id: bytes,
        *,
        host: str,
        port: int,
        k: int = 20,
        alpha: int = 3,
        timeout: float = 1.0,
        paths: int = 1,
        records: RecordStore | None = None,
        rate: float = 200.0,
        burst: float = 400.0,
        refresh_interval: float = 900.0,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        client_mode: bool = False,
    ) -> None:
        """``clock`` and ``rng``: the node's (``node/clock.py``); by default the system clock and a
        generator seeded from the OS. ``client_mode``: start as a client (``set_client_mode``)."""
        self.own_id = own_id
        self.host = host
        self.port = port
        self.k = k
        self.timeout = timeout
        self.clock = clock
        self.table = RoutingTable(own_id, k=k)
        self.refresh_interval = refresh_interval
        self.rng = rng if rng is not None else make_rng()
        self.address: tuple[str, int] | None = None
        self.client_mode = client_mode
        self.checks = ContactChecks(self.table, self.ping, clock)
        self._stats: Counter[str] = Counter()
        self.requester = Requester(timeout=timeout, clock=clock, stats=self._stats)
        self.responder = Responder(
            own_id,
            self.table,
            k=k,
            records=records if records is not None else RecordStore(),
            limiter=RateLimiter(rate, burst),
            clock=clock,
            rng=self.rng,
            stats=self._stats,
        )
        self.lookups = LookupDriver(
            own_id, self.table, self.requester, heard=self.heard, k=k, alpha=alpha, paths=paths,
            clock=clock, stats=self._stats,
        )  # fmt: skip

    @property
    def records(self) -> RecordStore:
        """What this node holds for others (the responder's store)."""
        return self.responder.records

    @records.setter
    def records(self, records: RecordStore) -> None:
        self.responder.records = records

    def answer(self, request: Request, source: tuple[str, int], limit: int = MAX_DATAGRAM) -> Reply:
        """The reply to ``request`` from ``source`` (``Responder.answer``)."""
        return self.responder.answer(request, source, limit)

    def answer_nodes(self, request: Request) -> NodesReply:
        """The ``find_node`` reply to ``request`` (``Responder.answer_nodes``)."""
        return self.responder.answer_nodes(request)

    # -- running ---------------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind the socket and serve until cancelled; reports the bound ``(host, port)``."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = trio.socket.socket(family, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):  # room for bursts, so a flood drops less of the honest traffic
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        try:
            await sock.bind((self.host, self.port))
            bound = sock.getsockname()
            self.address = (str(bound[0]), int(bound[1]))
            self.requester.sock = sock
            async with trio.open_nursery() as nursery:
                self.checks.nursery = nursery
                nursery.start_soon(self._maintain)
                task_status.started(self.address)
                await self._receive_loop(sock)
        finally:
            self.requester.sock = None
            sock.close()

    async def _receive_loop(self, sock: trio.socket.SocketType) -> None:
        while True:
            try:
                data, source = await sock.recvfrom(MAX_DATAGRAM + 1)
            except ConnectionError:  # ICMP port unreachable surfaces here on some systems
                continue
            address = (str(source[0]), int(source[1]))
            self._stats["datagrams_in"] += 1
            self._stats["bytes_in"] += len(data)
            if self.client_mode and data[:1] != b"\x01":  # not a response: a client answers no one
                self._stats["client_ignored"] += 1
                continue
            datagram = self.responder.decode(data, address, self.requester.expects)
            if isinstance(datagram, RequestDatagram):
                await self._on_request(datagram, address, reply_limit(len(data)))
            elif datagram is not None:
                self.requester.deliver(datagram, address)

    async def _maintain(self) -> None:
        while True:
            await trio.sleep(min(60.0, self.refresh_interval))
            self.responder.expire()
            for target in self.table.refresh_targets(self.clock.monotonic(), self.refresh_interval, self.rng):
                await self.lookup(target, LookupKind.FIND_NODE)

    # -- answering -------------------------------------------------------------------------------------
    async def _on_request(self, datagram: RequestDatagram, source: tuple[str, int], limit: int) -> None:
        # admitted by the source's token bucket before it was decoded (``Responder.decode``)
        sender_id = getattr(datagram.request, "node_id", None)
        if sender_id is not None:
            with contextlib.suppress(LocalProtocolError):  # e.g. an IPv6 source in an odd spelling
                self.checks.heard_request(Contact(node_id=sender_id, host=source[0], port=source[1]))
        data = self.responder.respond(datagram, source, limit)
        if data is not None:
            await self.requester.send(data, source)

    def set_client_mode(self, on: bool) -> None:
        """Be a DHT client (``on``: ask and take answers, answer no request, so no server adds us) or a
        server (answer as usual); takes effect with the next datagram (spec §13.6)."""
        if on != self.client_mode:
            log.info("DHT %s mode", "client" if on else "server")
        self.client_mode = on

    def heard(self, contact: Contact) -> None:
        """``contact`` answered us: observe it (``ContactChecks.heard``)."""
        self.checks.heard(contact)

    # -- asking ----------------------------------------------------------------------------------------
    async def request(self, address: tuple[str, int], request: Request, timeout: float) -> Reply | None:
        """Send ``request`` to ``address``; its reply, or None on timeout (``Requester.request``)."""
        return await self.requester.request(address, request, timeout)

    async def ping(self, address: tuple[str, int]) -> bytes | None:
        """The node id answering at ``address`` (and it joins the routing table), or None."""
        try:
            reply = await self.request(address, Ping(node_id=self.own_id), self.timeout)
        except RemoteProtocolError:
            return None
        if not isinstance(reply, PingReply):
            return None
        with contextlib.suppress(LocalProtocolError):
            self.heard(Contact(node_id=reply.node_id, host=address[0], port=address[1]))
        return reply.node_id

    async def bootstrap(self, addresses: Iterable[tuple[str, int]], contacts: Iterable[Contact] = ()) -> int:
        """Join through ``addresses`` (pinged) and remembered ``contacts``; returns the table size.

        Remembered contacts are pinged too, so a restarted node rejoins without its bootstrap node.
        """
        known = {c.address: c for c in contacts}
        targets = [a for a in dict.fromkeys([*addresses, *known]) if a != self.address]
        async with trio.open_nursery() as nursery:
            for address in targets:
                nursery.start_soon(self.ping, address)
        if len(self.table):
            await self.lookup(self.own_id, LookupKind.FIND_NODE)
        return len(self.table)

    async def lookup(
        self,
        target: bytes,
        kind: LookupKind,
        *,
        validate: Callable[[Value], bool] | None = None,
        paths: int | None = None,
        quorum: int | None = None,
    ) -> LookupResult:
        """Run one iterative lookup to its end (``dht_lookup.LookupDriver``, ``protocol.lookup``)."""
        return await self.lookups.lookup(target, kind, validate=validate, paths=paths, quorum=quorum)

    # -- storing and finding -------------------------------------------------------------------------
    async def _closest(self, key: bytes) -> list[Contact]:
        result = await self.lookup(key, LookupKind.FIND_NODE)
        return list(result.contacts)

    async def put(self, key: bytes, value: Value) -> int:
        """Store ``value`` on the k nodes closest to ``key`` (and here); how many accepted it."""
        self.records.put(key, value, self.clock.wall_ms())
        contacts = await self._closest(key)
        return await self._store_all(contacts, lambda: Store(node_id=self.own_id, key=key, value=value))

    async def announce(self, key: bytes, record: bytes) -> int:
        """Announce a swarm member record on the k nodes closest to ``key``; falls back to ``store``."""
        self.records.put(key, record, self.clock.wall_ms())
        contacts = await self._closest(key)
        return await self._store_all(
            contacts,
            lambda: Announce(node_id=self.own_id, key=key, record=record),
            lambda: Store(node_id=self.own_id, key=key, value=record),
        )

    async def _store_all(
        self,
        contacts: list[Contact],
        make: Callable[[], Request],
        fallback: Callable[[], Request] | None = None,
    ) -> int:
        stored = 0

        async def one(contact: Contact) -> None:
            nonlocal stored
            try:
                reply = await self.request(contact.address, make(), self.timeout)
                if reply is None and fallback is not None:
                    reply = await self.request(contact.address, fallback(), self.timeout)
            except RemoteProtocolError:
                return
            if isinstance(reply, StoreReply) and reply.stored:
                stored += 1

        async with trio.open_nursery() as nursery:
            for contact in contacts:
                nursery.start_soon(one, contact)
        return stored

    async def get(self, key: bytes, *, validate: Callable[[Value], bool] | None = None) -> Value | None:
        """The first value under ``key`` that ``validate`` accepts (local store first), or None."""
        local = self.records.get(key, self.clock.wall_ms())
        if local is not None and (validate is None or validate(local)):
            return local
        result = await self.lookup(key, LookupKind.FIND_VALUE, validate=validate)
        return result.values[0].value if result.values else None

    async def find_node_record(self, feed: bytes) -> NodeRecord | None:
        """The newest valid node record of ``feed`` here and on the nodes around its key, or None.

        The lookup runs to its end (no quorum) rather than stopping at the first record: a node that
        missed an update, or one replaying an old record, must not hide the owner's newest (§13.6).
        """
        from tidings.protocol import FeedId

        key = node_key(FeedId(feed))
        now_ms = self.clock.wall_ms()
        accepts = validator(key, now_ms=now_ms, kind=NodeRecord)
        values = [self.records.get(key, now_ms)]
        result = await self.lookup(key, LookupKind.FIND_VALUE, validate=accepts, quorum=0)
        values.extend(found.value for found in result.values)
        best: NodeRecord | None = None
        for value in values:
            if value is None or not accepts(value):
                continue
            record = decode_record(value)
            if isinstance(record, NodeRecord) and (best is None or newer(record, best)):
                best = record
        return best

    async def members(self, key: bytes) -> list[MemberRecord]:
        """Valid member records of the swarm under ``key`` (from here and the nodes around it)."""
        now = self.clock.wall_ms()

        def accepts(value: Any) -> bool:
            return member_record(value, key, now) is not None

        found: dict[bytes, MemberRecord] = {}
        values = [v for v in self.records.members(key, now, rng=self.rng)]
        result = await self.lookup(key, LookupKind.MEMBERS, validate=accepts)
        values.extend(f.value for f in result.values if isinstance(f.value, bytes))
        for value in values:
            record = member_record(value, key, now)
            if record is not None:
                held = found.get(record.member)
                if held is None or record.seq > held.seq:
                    found[record.member] = record
        return list(found.values())

    # -- introspection ---------------------------------------------------------------------------------
    def statistics(self) -> dict[str, Any]:
        hops = self.lookups.hops
        return {
            "address": None if self.address is None else f"{self.address[0]}:{self.address[1]}",
            "node_id": self.own_id.hex(),
            **self.table.statistics(),
            **self.records.statistics(),
            **dict(self._stats),
            "pending": len(self.requester),
            "client_mode": self.client_mode,
            "mean_hops": (sum(hops) / len(hops)) if hops else 0.0,
        }
