"""The serving side of the DHT's UDP adapter: who is answered, and what (spec/protocol.md §13).

Theory of operation. ``Responder`` turns one request datagram into the bytes of its reply, or into
nothing. First, before the datagram is decoded (``decode``: a look at its kind byte, message id and
source), a per-source token bucket (``RateLimiter``) decides whether the source is answered at all, so
a flood from one host, decodable or not, costs us little. Then the reply comes from the ``RecordStore``
(values and member records held for others; ``store``/``announce`` put into it, charged to the
storer's address range) and the ``RoutingTable``
(the k closest contacts). Replies are bounded: at most k contacts, member lists cut to
``MEMBERS_BYTES``, and no reply datagram larger than ``dht_wire.reply_limit`` of its request (member
records sampled to fit, then contacts cut; §13.1 anti-amplification). A reply that cannot be built
within those bounds is not sent. No socket here: ``dht.DHT`` receives, observes the sender and sends.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from tidings.node.addresses import address_range
from tidings.node.clock import SYSTEM_CLOCK, Clock
from tidings.node.discovery.dht_support import RateLimiter
from tidings.protocol.dht_wire import (
    MAX_DATAGRAM,
    MSG_ID_SIZE,
    Announce,
    Contact,
    FindValue,
    GetMembers,
    MembersReply,
    NodesReply,
    Ping,
    PingReply,
    Reply,
    Request,
    RequestDatagram,
    ResponseDatagram,
    Store,
    StoreReply,
    Stun,
    StunReply,
    ValueReply,
    decode_datagram,
    encode_reply,
    encode_reply_within,
    peek_datagram,
)
from tidings.protocol.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from tidings.protocol.record_store import RecordStore

if TYPE_CHECKING:
    import random

    from tidings.protocol.routing import RoutingTable

__all__ = ["MEMBERS_BYTES", "Responder"]

#: Codes counted as themselves when a datagram is dropped (``ignored_CODE``); any other is ``malformed``.
_PEEK_CODES = frozenset({"unknown_rpc", "too_large", "truncated", "bad_kind"})

#: Bytes of member records in one ``get_members`` reply (the whole reply stays under MAX_BODY).
MEMBERS_BYTES = 4000


class Responder:
    """Answers DHT requests from ``table`` and ``records`` (see the module docstring); counts what it
    did in ``stats`` (shared with the adapter, shown by ``DHT.statistics``)."""

    def __init__(
        self,
        own_id: bytes,
        table: RoutingTable,
        *,
        k: int,
        records: RecordStore,
        limiter: RateLimiter,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random,
        stats: Counter[str],
    ) -> None:
        self.own_id = own_id
        self.table = table
        self.k = k
        self.records = records
        self.limiter = limiter
        self.clock = clock
        self.rng = rng
        self.stats = stats

    def admit(self, host: str) -> bool:
        """Whether a request from ``host`` is served now (its token bucket has a token)."""
        if not self.limiter.allow(host, self.clock.monotonic()):
            self.stats["rate_limited"] += 1
            return False
        self.stats["requests_in"] += 1
        return True

    def decode(
        self, data: bytes, source: tuple[str, int], expects: Callable[[bytes, tuple[str, int]], bool]
    ) -> RequestDatagram | ResponseDatagram | None:
        """The datagram ``data`` from ``source``, decoded only once a cheap look let it through
        (spec/protocol.md §13.6), else None: a response must answer a request pending to its source
        (``expects``, by message id); anything else is charged to the token bucket of its source IP
        first. Then its size and kind, and only then its msgpack body (counted as ``decoded``)."""
        if data[:1] == b"\x01" and len(data) > 1 + MSG_ID_SIZE:
            if not expects(data[1 : 1 + MSG_ID_SIZE], source):
                self.stats["unmatched_responses"] += 1
                return None
        elif not self.admit(source[0]):
            return None
        try:
            peek_datagram(data)
            self.stats["decoded"] += 1
            return decode_datagram(data)
        except RemoteProtocolError as exc:
            code = exc.code if exc.code in _PEEK_CODES else "malformed"
            self.stats["ignored_" + code] += 1
            return None

    def respond(self, datagram: RequestDatagram, source: tuple[str, int], limit: int) -> bytes | None:
        """The reply datagram to ``datagram`` from ``source``, at most ``limit`` bytes; None when no
        reply can be built within the bounds (counted as ``unanswerable_CODE``)."""
        request = datagram.request
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
            self.stats["unanswerable_" + exc.code] += 1
            return None
        return data

    def answer_nodes(self, request: Request) -> NodesReply:
        """The ``find_node`` reply to ``request``: the k closest contacts, leaving out the requester."""
        key, requester = getattr(request, "key", self.own_id), getattr(request, "node_id", b"")
        return NodesReply(contacts=tuple(self.table.find_neighbors(key, self.k, exclude={requester})))

    def answer(self, request: Request, source: tuple[str, int], limit: int = MAX_DATAGRAM) -> Reply:
        """The reply to ``request`` from ``source`` (pure apart from the record store); member records
        are sampled to fit a reply datagram of ``limit`` bytes (§13.1 anti-amplification)."""
        now_ms = self.clock.wall_ms()
        if isinstance(request, Ping):
            return PingReply(node_id=self.own_id)
        if isinstance(request, Stun):
            return StunReply(host=source[0], port=source[1])
        if isinstance(request, Store | Announce):
            value = request.value if isinstance(request, Store) else request.record
            # charged to the storer's range, IPv4 /24 or IPv6 /48, not its address (§13.5 quotas)
            outcome = self.records.put(request.key, value, now_ms, source=address_range(source[0]))
            self.stats["stored" if outcome.accepted else "refused_" + outcome.code] += 1
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

    def expire(self) -> int:
        """Drop the held values that expired; how many went."""
        return self.records.expire(self.clock.wall_ms())
