"""The trio UDP adapter of the DHT: drives the sans-IO core of ``protocol/`` over a real socket.

Theory of operation. ``DHT.run`` binds one UDP socket (the node gives it the host and port number of
its TCP listener) and owns a nursery with two tasks: the receive loop and the maintenance loop.

- Receiving: every datagram goes through ``dht_wire.decode_datagram``; anything malformed is counted and
  dropped. A request is answered from the ``RecordStore`` and the ``RoutingTable`` (after a per-source
  token bucket: a flood from one host costs us little); the sender is ``observe``d into the table, and
  when its bucket is full the least recently seen contact is pinged in the background (Kademlia §2.2).
  A response is matched to its request by the random 20-byte message id *and* the source address, so a
  third party cannot answer for the node we asked.
- Asking: ``request(address, request, timeout)`` sends one request and waits for its response (None on
  timeout); ``lookup`` runs a ``protocol.lookup.Lookup``: it sends what ``next_queries`` returns, feeds
  replies and failures back, and sleeps until the earlier of a reply and ``get_timer()``, then calls
  ``handle_timer``. Contacts that time out count as failed in the routing table, and one that left two
  queries in a row unanswered within a minute is failed at once by later lookups (after churn, other
  nodes keep naming dead contacts; waiting out their timeouts again in every lookup is what made
  lookups slow).
- Extensions (``announce``/``get_members``) degrade: a node that does not answer ``get_members`` within
  half the query time is asked ``find_value`` instead, and an ``announce`` that gets no reply becomes a
  plain ``store`` (a stock ``kademlia`` node then holds one member record per key, ARCHITECTURE.md).
- Replies are bounded: at most k contacts, member lists cut to ``MEMBERS_BYTES``, values of at most
  ``MAX_RECORD_SIZE``, and no reply datagram larger than ``dht_wire.reply_limit`` of its request
  (member records sampled to fit, then contacts cut); nothing is ever sent to an address that did not
  ask (no unsolicited traffic except our own requests), so a spoofed request cannot turn the DHT into
  an amplifier.

Maintenance: records expire; buckets no lookup touched for ``refresh_interval`` are refreshed with a
``find_node`` lookup of a random id in them (``RoutingTable.refresh_targets``).
"""

from __future__ import annotations

import contextlib
import logging
import random
import secrets
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import trio
from tidings.node.discovery.dht_support import (
    MIN_QUERY_STALL,
    MIN_QUERY_TIMEOUT,
    RateLimiter,
    RoundTrip,
    member_record,
)
from tidings.protocol import RemoteProtocolError
from tidings.protocol.dht_wire import (
    MAX_DATAGRAM,
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
    Request,
    RequestDatagram,
    Store,
    StoreReply,
    Stun,
    StunReply,
    Value,
    ValueReply,
    decode_datagram,
    encode_reply,
    encode_reply_within,
    encode_request,
    parse_reply,
    reply_limit,
)
from tidings.protocol.errors import LocalProtocolError, ProtocolError
from tidings.protocol.lookup import Lookup, LookupKind, LookupResult
from tidings.protocol.records import (
    MemberRecord,
    NodeRecord,
    RecordStore,
    decode_record,
    newer,
    node_key,
    validator,
)
from tidings.protocol.routing import Observed, RoutingTable

__all__ = ["DHT"]

log = logging.getLogger("tidings.dht")

#: A contact that left this many queries in a row unanswered in the last SILENT_SECONDS is skipped.
SILENT_LIMIT = 2
SILENT_SECONDS = 60.0
#: Bytes of member records in one ``get_members`` reply (the whole reply stays under MAX_BODY).
MEMBERS_BYTES = 4000


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _Pending:
    address: tuple[str, int]
    event: trio.Event = field(default_factory=trio.Event)
    body: Any = None


class _Wake:
    """The lookup driver sleeps on ``event``; query tasks set it when they fed the lookup something."""

    def __init__(self) -> None:
        self.event = trio.Event()
        #: the contacts that answered a query of this lookup (a resend's twin then is not silence)
        self.answered: set[bytes] = set()


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
        rng: random.Random | None = None,
    ) -> None:
        self.own_id = own_id
        self.host = host
        self.port = port
        self.k = k
        self.alpha = alpha
        self.timeout = timeout
        self.paths = paths
        self.table = RoutingTable(own_id, k=k)
        self.records = records if records is not None else RecordStore()
        self.limiter = RateLimiter(rate, burst)
        self.refresh_interval = refresh_interval
        self.rng = rng or random.Random(secrets.randbits(64))
        self.address: tuple[str, int] | None = None
        self._sock: trio.socket.SocketType | None = None
        self._nursery: trio.Nursery | None = None
        self._pending: dict[bytes, _Pending] = {}
        self._checking: set[bytes] = set()
        #: node id -> (consecutive unanswered queries, when the last went unanswered)
        self._silent: dict[bytes, tuple[int, float]] = {}
        self._stats: Counter[str] = Counter()
        self._hops: list[int] = []
        self._rtt = RoundTrip()

    # -- running ---------------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind the socket and serve until cancelled; reports the bound ``(host, port)``."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = trio.socket.socket(family, socket.SOCK_DGRAM)
        try:
            await sock.bind((self.host, self.port))
            bound = sock.getsockname()
            self.address = (str(bound[0]), int(bound[1]))
            self._sock = sock
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._maintain)
                task_status.started(self.address)
                await self._receive_loop(sock)
        finally:
            self._sock = None
            sock.close()

    async def _receive_loop(self, sock: trio.socket.SocketType) -> None:
        while True:
            try:
                data, source = await sock.recvfrom(MAX_DATAGRAM + 1)
            except ConnectionError:  # ICMP port unreachable surfaces here on some systems
                continue
            address = (str(source[0]), int(source[1]))
            try:
                datagram = decode_datagram(data)
            except RemoteProtocolError as exc:
                self._stats["ignored_" + ("unknown_rpc" if exc.code == "unknown_rpc" else "malformed")] += 1
                continue
            if isinstance(datagram, RequestDatagram):
                await self._on_request(datagram, address, reply_limit(len(data)))
            else:
                pending = self._pending.get(datagram.msg_id)
                if pending is None or pending.address != address:
                    self._stats["unmatched_responses"] += 1
                    continue
                del self._pending[datagram.msg_id]
                pending.body = datagram.body
                pending.event.set()

    async def _maintain(self) -> None:
        while True:
            await trio.sleep(min(60.0, self.refresh_interval))
            self.records.expire(_now_ms())
            for target in self.table.refresh_targets(trio.current_time(), self.refresh_interval, self.rng):
                await self.lookup(target, LookupKind.FIND_NODE)

    # -- answering -------------------------------------------------------------------------------------
    async def _on_request(self, datagram: RequestDatagram, source: tuple[str, int], limit: int) -> None:
        now = trio.current_time()
        if not self.limiter.allow(source[0], now):
            self._stats["rate_limited"] += 1
            return
        request = datagram.request
        self._stats["requests_in"] += 1
        sender_id = getattr(request, "node_id", None)
        if sender_id is not None:
            with contextlib.suppress(LocalProtocolError):  # e.g. an IPv6 source in an odd spelling
                self._heard(Contact(node_id=sender_id, host=source[0], port=source[1]))
        try:
            reply = self.answer(request, source, limit)
            data = encode_reply_within(datagram.msg_id, reply, limit)
            if data is None and isinstance(reply, ValueReply):  # a value bigger than was invited
                data = encode_reply_within(datagram.msg_id, self.answer_nodes(request), limit)
            if data is None:
                raise LocalProtocolError("no reply fits the amplification limit", code="too_large")
        except ProtocolError as exc:
            # a reply we cannot build (e.g. a stun answer for a source address in a spelling the
            # wire format refuses, or one over the size bound) is not sent; the node goes on
            self._stats["unanswerable_" + exc.code] += 1
            return
        await self._send(data, source)

    def answer_nodes(self, request: Request) -> NodesReply:
        """The ``find_node`` reply to ``request``: the k closest contacts, leaving out the requester."""
        key, requester = getattr(request, "key", self.own_id), getattr(request, "node_id", b"")
        return NodesReply(contacts=tuple(self.table.find_neighbors(key, self.k, exclude={requester})))

    def answer(self, request: Request, source: tuple[str, int], limit: int = MAX_DATAGRAM) -> Reply:
        """The reply to ``request`` from ``source`` (pure apart from the record store); member records
        are sampled to fit a reply datagram of ``limit`` bytes (§13.1 anti-amplification)."""
        now_ms = _now_ms()
        if isinstance(request, Ping):
            return PingReply(node_id=self.own_id)
        if isinstance(request, Stun):
            return StunReply(host=source[0], port=source[1])
        if isinstance(request, Store | Announce):
            value = request.value if isinstance(request, Store) else request.record
            outcome = self.records.put(request.key, value, now_ms)
            self._stats["stored" if outcome.accepted else "refused_" + outcome.code] += 1
            return StoreReply(stored=outcome.accepted)
        neighbors = tuple(self.table.find_neighbors(request.key, self.k, exclude={request.node_id}))
        if isinstance(request, FindValue):
            value = self.records.get(request.key, now_ms)
            if value is not None:
                return ValueReply(value=value)
            return NodesReply(contacts=neighbors)
        if isinstance(request, GetMembers):
            # the contacts may take half of the reply's bound, the member records the rest (§13.6)
            def size(contacts: tuple[Contact, ...]) -> int:
                return len(encode_reply(bytes(20), MembersReply(records=(), contacts=contacts)))

            while neighbors and size(neighbors) > limit // 2:
                neighbors = neighbors[:-1]
            budget = min(MEMBERS_BYTES, limit - size(neighbors) - 2)  # 2: a longer array header
            members = self.records.members(request.key, now_ms, max_bytes=budget, rng=self.rng)
            return MembersReply(records=tuple(members), contacts=neighbors)
        return NodesReply(contacts=neighbors)

    def _heard(self, contact: Contact) -> None:
        outcome = self.table.observe(contact, trio.current_time())
        ping = outcome.ping
        if outcome.status is not Observed.PENDING or ping is None or self._nursery is None:
            return
        if ping.node_id not in self._checking and len(self._checking) < 16:
            self._checking.add(ping.node_id)
            self._nursery.start_soon(self._check, ping)

    async def _check(self, contact: Contact) -> None:
        """Ping the head of a full bucket; if it stays silent its replacement moves in."""
        try:
            if await self.ping(contact.address) != contact.node_id:
                self.table.failed(contact.node_id)
        finally:
            self._checking.discard(contact.node_id)

    async def _send(self, data: bytes, address: tuple[str, int]) -> bool:
        if self._sock is None:
            return False
        try:
            await self._sock.sendto(data, address)
        except OSError:
            self._stats["send_errors"] += 1
            return False
        return True

    def query_timeout(self) -> float:
        """How long a lookup waits for one reply: adaptive, from the round trips seen (as TCP's RTO),
        between ``MIN_QUERY_TIMEOUT`` and the configured ``timeout``. A dead node then costs a lookup
        a few round trips' worth of waiting, not a whole fixed timeout (spec §13.7)."""
        return self._rtt.timeout(MIN_QUERY_TIMEOUT, self.timeout)

    def query_stall(self, timeout: float) -> float:
        """After how long a silent query counts as stalled in a lookup (§13.3): the same estimator as
        ``query_timeout`` but with the lower floor ``MIN_QUERY_STALL``, and at most half of ``timeout``
        (when the query is resent). The lookup then asks the next contact while the silent one's
        deadline runs, so dead contacts after churn cost it about one timeout in all."""
        return self._rtt.timeout(MIN_QUERY_STALL, timeout / 2)

    # -- asking ----------------------------------------------------------------------------------------
    async def request(self, address: tuple[str, int], request: Request, timeout: float) -> Reply | None:
        """Send ``request`` to ``address``; its reply, or None on timeout.

        Raises ``RemoteProtocolError`` when the reply has the wrong shape for the request.
        """
        msg_id = secrets.token_bytes(20)
        pending = _Pending(address)
        self._pending[msg_id] = pending
        self._stats["requests_out"] += 1
        try:
            if not await self._send(encode_request(msg_id, request), address):
                return None
            sent = trio.current_time()
            with trio.move_on_after(timeout):
                await pending.event.wait()
        finally:
            self._pending.pop(msg_id, None)
        if not pending.event.is_set():
            self._stats["timeouts"] += 1
            return None
        self._rtt.sample(trio.current_time() - sent)
        try:
            return parse_reply(request.NAME, pending.body)
        except RemoteProtocolError:
            self._stats["malformed_replies"] += 1
            raise

    async def ping(self, address: tuple[str, int]) -> bytes | None:
        """The node id answering at ``address`` (and it joins the routing table), or None."""
        try:
            reply = await self.request(address, Ping(node_id=self.own_id), self.timeout)
        except RemoteProtocolError:
            return None
        if not isinstance(reply, PingReply):
            return None
        with contextlib.suppress(LocalProtocolError):
            self._heard(Contact(node_id=reply.node_id, host=address[0], port=address[1]))
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
        """Run one iterative lookup to its end (see ``protocol.lookup``)."""
        started = trio.current_time()
        seeds = self.table.find_neighbors(target, self.k)
        timeout = self.query_timeout()
        lookup = Lookup(
            own_id=self.own_id,
            target=target,
            kind=kind,
            seeds=seeds,
            k=self.k,
            alpha=self.alpha,
            paths=paths or self.paths,
            timeout=timeout,
            stall=self.query_stall(timeout),
            validate=validate,
            quorum=quorum,
        )
        self.table.touch(target, started)
        wake = _Wake()
        async with trio.open_nursery() as nursery:
            while True:
                for query in lookup.next_queries(trio.current_time()):
                    nursery.start_soon(
                        self._query, lookup, query.contact, query.request, query.deadline, wake
                    )
                deadline = lookup.get_timer()
                if lookup.done or deadline is None:
                    break
                with trio.move_on_at(deadline):
                    await wake.event.wait()
                wake.event = trio.Event()
                now = trio.current_time()
                if now >= deadline:
                    for contact in lookup.handle_timer(now):
                        self.table.failed(contact.node_id)
            nursery.cancel_scope.cancel()
        result = lookup.result()
        self._stats["lookups"] += 1
        self._stats["lookups_found"] += int(result.found)
        self._hops.append(result.hops)
        del self._hops[:-1000]
        return result

    async def _query(
        self,
        lookup: Lookup,
        contact: Contact,
        request: FindNode | FindValue | GetMembers,
        deadline: float,
        wake: _Wake,
    ) -> None:
        silent, since = self._silent.get(contact.node_id, (0, 0.0))
        if silent >= SILENT_LIMIT and trio.current_time() - since < SILENT_SECONDS:
            # it let two queries in a row go unanswered just now: count it as failed at once instead
            # of waiting out two more timeouts (lookups after churn stay fast)
            lookup.handle_failure(contact.node_id)
            wake.event.set()
            return
        try:
            remaining = max(deadline - trio.current_time(), 0.01)
            if isinstance(request, GetMembers):
                # a stock node ignores get_members: ask find_value in the second half of the time
                reply = await self.request(contact.address, request, remaining / 2)
                if reply is None and not lookup.done:
                    fallback = FindValue(node_id=self.own_id, key=request.key)
                    reply = await self.request(contact.address, fallback, remaining / 2)
            else:
                reply = await self.request(contact.address, request, remaining)
        except RemoteProtocolError:
            lookup.handle_failure(contact.node_id)
            self.table.failed(contact.node_id)
        else:
            if reply is None:
                if contact.node_id in wake.answered:
                    return  # it answered a resend of this query (§13.3): not silent
                self._silent[contact.node_id] = (silent + 1, trio.current_time())
                if len(self._silent) > 10_000:
                    self._silent.clear()
                return  # the lookup's own timer deals with it
            self._silent.pop(contact.node_id, None)
            wake.answered.add(contact.node_id)
            self._heard(contact)
            lookup.handle_reply(contact.node_id, reply)
        wake.event.set()

    # -- storing and finding -------------------------------------------------------------------------
    async def _closest(self, key: bytes) -> list[Contact]:
        result = await self.lookup(key, LookupKind.FIND_NODE)
        return list(result.contacts)

    async def put(self, key: bytes, value: Value) -> int:
        """Store ``value`` on the k nodes closest to ``key`` (and here); how many accepted it."""
        self.records.put(key, value, _now_ms())
        contacts = await self._closest(key)
        return await self._store_all(contacts, lambda: Store(node_id=self.own_id, key=key, value=value))

    async def announce(self, key: bytes, record: bytes) -> int:
        """Announce a swarm member record on the k nodes closest to ``key``; falls back to ``store``."""
        self.records.put(key, record, _now_ms())
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
        local = self.records.get(key, _now_ms())
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
        now_ms = _now_ms()
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
        now = _now_ms()

        def accepts(value: Any) -> bool:
            return member_record(value, key, now) is not None

        found: dict[bytes, MemberRecord] = {}
        values = [v for v in self.records.members(key, now)]
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
        hops = self._hops
        return {
            "address": None if self.address is None else f"{self.address[0]}:{self.address[1]}",
            "node_id": self.own_id.hex(),
            **self.table.statistics(),
            **self.records.statistics(),
            **dict(self._stats),
            "pending": len(self._pending),
            "mean_hops": (sum(hops) / len(hops)) if hops else 0.0,
        }
