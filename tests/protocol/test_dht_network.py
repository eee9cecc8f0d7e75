"""Lookups over a seeded in-memory network of simulated nodes: loss, churn, hop counts, Sybils.

A deterministic driver stands in for the trio UDP adapter of node/: every message goes through the real
datagram codec, is lost with a seeded probability, and arrives after a seeded latency on a virtual
clock; dead nodes never answer. Each simulated node is a routing table plus a record store, answering
requests as a Tidings node does.
"""

from __future__ import annotations

import heapq
import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from tidings.protocol import RemoteProtocolError, SigningKey, encode
from tidings.protocol.dht_wire import (
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
    ResponseDatagram,
    Store,
    StoreReply,
    Value,
    ValueReply,
    decode_datagram,
    encode_reply,
    encode_request,
    parse_reply,
)
from tidings.protocol.lookup import Lookup, LookupKind, LookupResult
from tidings.protocol.record_store import RecordStore
from tidings.protocol.records import (
    MemberRecord,
    NodeRecord,
    create_member_record,
    create_node_record,
    decode_record,
    node_key,
    swarm_key,
    validator,
)
from tidings.protocol.routing import RoutingTable

NOW_MS = 1_700_000_000_000
K = 20


@dataclass
class SimNode:
    contact: Contact
    table: RoutingTable
    store: RecordStore = field(default_factory=RecordStore)
    alive: bool = True
    #: a Sybil answers find_value with this forged value and find_node with its fellow Sybils only
    forged: bytes | None = None


class SimNet:
    def __init__(self, seed: int, loss: float) -> None:
        self.rng = random.Random(seed)
        self.loss = loss
        self.now = 0.0
        self.nodes: dict[bytes, SimNode] = {}
        self.sybils: list[Contact] = []
        self.count = 0

    def add(self, node_id: bytes) -> SimNode:
        self.count += 1
        n = self.count
        contact = Contact(node_id=node_id, host=f"127.{n // 62500}.{n // 250 % 250}.{n % 250 + 2}", port=8468)
        node = SimNode(contact=contact, table=RoutingTable(node_id, k=K))
        self.nodes[node_id] = node
        return node

    def now_ms(self) -> int:
        return NOW_MS + int(self.now * 1000)

    def lost(self) -> bool:
        return self.rng.random() < self.loss

    # -- the responding side --------------------------------------------------------------------------
    def answer(self, node: SimNode, source: tuple[str, int], request: Request) -> Reply | None:
        if isinstance(request, Ping | Store | FindNode | FindValue | Announce | GetMembers):
            sender = Contact(node_id=request.node_id, host=source[0], port=source[1])
            node.table.observe(sender, self.now)
        if isinstance(request, Ping):
            return PingReply(node_id=node.contact.node_id)
        if isinstance(request, Store):
            if node.forged is not None:
                return StoreReply(stored=True)  # and drop it
            return StoreReply(stored=node.store.put(request.key, request.value, self.now_ms()).accepted)
        if isinstance(request, FindNode | FindValue):
            if node.forged is not None:
                if isinstance(request, FindValue):
                    return ValueReply(value=node.forged)
                return NodesReply(contacts=tuple(self.sybils))
            if isinstance(request, FindValue):
                value = node.store.get(request.key, self.now_ms())
                if value is not None:
                    return ValueReply(value=value)
            neighbors = node.table.find_neighbors(request.key, K, exclude={request.node_id})
            return NodesReply(contacts=tuple(neighbors))
        if isinstance(request, Announce):
            return StoreReply(stored=node.store.put(request.key, request.record, self.now_ms()).accepted)
        if isinstance(request, GetMembers):
            records = node.store.members(request.key, self.now_ms(), max_bytes=4000, rng=self.rng)
            neighbors = node.table.find_neighbors(request.key, K, exclude={request.node_id})
            return MembersReply(records=tuple(records), contacts=tuple(neighbors))
        return None

    def deliver(self, target_id: bytes, source: tuple[str, int], datagram: bytes) -> bytes | None:
        target = self.nodes.get(target_id)
        if target is None or not target.alive or self.lost():
            return None
        decoded = decode_datagram(datagram)
        assert isinstance(decoded, RequestDatagram)
        reply = self.answer(target, source, decoded.request)
        if reply is None or self.lost():
            return None
        return encode_reply(decoded.msg_id, reply)

    # -- the asking side: a deterministic stand-in for the UDP adapter --------------------------------------
    def run(self, origin: SimNode, lookup: Lookup) -> LookupResult:
        arrivals: list[tuple[float, int, bytes, str, bytes]] = []
        seq = 0
        while not lookup.done:
            for query in lookup.next_queries(self.now):
                msg_id = self.rng.randbytes(20)
                datagram = encode_request(msg_id, query.request)
                reply = self.deliver(query.contact.node_id, origin.contact.address, datagram)
                if reply is not None:
                    seq += 1
                    fast = self.nodes[query.contact.node_id].forged is not None  # Sybils answer at once
                    at = self.now + (0.001 if fast else self.rng.uniform(0.01, 0.1))
                    heapq.heappush(arrivals, (at, seq, query.contact.node_id, query.request.NAME, reply))
            if lookup.done:
                break
            timer = lookup.get_timer()
            if arrivals and (timer is None or arrivals[0][0] <= timer):
                self.now, _, node_id, rpc, data = heapq.heappop(arrivals)
                self._receive(origin, lookup, node_id, rpc, data)
            elif timer is not None:
                self.now = timer
                for failed in lookup.handle_timer(self.now):
                    origin.table.failed(failed.node_id)
            else:
                break
        return lookup.result()

    def _receive(self, origin: SimNode, lookup: Lookup, node_id: bytes, rpc: str, data: bytes) -> None:
        try:
            decoded = decode_datagram(data)
            assert isinstance(decoded, ResponseDatagram)
            reply = parse_reply(rpc, decoded.body)
        except RemoteProtocolError:
            lookup.handle_failure(node_id)
            return
        contact = self.nodes[node_id].contact
        origin.table.observe(contact, self.now)
        lookup.handle_reply(node_id, reply)

    def lookup(
        self,
        origin: SimNode,
        target: bytes,
        kind: LookupKind,
        *,
        paths: int = 1,
        validate: Callable[[Value], bool] | None = None,
    ) -> LookupResult:
        seeds = origin.table.find_neighbors(target, K)
        lookup = Lookup(
            own_id=origin.contact.node_id,
            target=target,
            kind=kind,
            seeds=seeds,
            k=K,
            alpha=3,
            paths=paths,
            timeout=1.0,
            validate=validate,
        )
        result = self.run(origin, lookup)
        origin.table.touch(target, self.now)
        return result

    def join(self, node: SimNode, bootstraps: list[SimNode]) -> None:
        """Kademlia's join: a lookup of our own id through a bootstrap node (retried, as the adapter
        would, while the table stays nearly empty), then one lookup into the farthest bucket."""
        for _ in range(5):
            node.table.observe(self.rng.choice(bootstraps).contact, self.now)
            self.lookup(node, node.contact.node_id, LookupKind.FIND_NODE)
            if len(node.table) >= K // 2 or len(node.table) >= len(bootstraps):
                break
        far = node.table.refresh_targets(self.now, max_age=-1.0, rng=self.rng)  # every bucket is due
        if far:
            self.lookup(node, far[0], LookupKind.FIND_NODE)

    def publish(self, origin: SimNode, key: bytes, value: bytes, *, announce: bool = False) -> int:
        """Store (or announce) ``value`` on the k closest nodes an origin's find_node lookup returns."""
        closest = self.lookup(origin, key, LookupKind.FIND_NODE).contacts
        stored = 0
        me = origin.contact.node_id
        request = (
            Announce(node_id=me, key=key, record=value)
            if announce
            else Store(node_id=me, key=key, value=value)
        )
        for contact in closest:
            datagram = encode_request(self.rng.randbytes(20), request)
            if self.deliver(contact.node_id, origin.contact.address, datagram) is not None:
                stored += 1
        return stored


def build(seed: int, size: int, loss: float) -> SimNet:
    net = SimNet(seed, loss)
    first = net.add(net.rng.randbytes(20))
    joined = [first]
    for _ in range(size - 1):
        node = net.add(net.rng.randbytes(20))
        net.join(node, joined)
        joined.append(node)
    return net


def signer(i: int) -> SigningKey:
    return SigningKey(i.to_bytes(32, "big"))


def record_for(key: SigningKey, *, addresses: list[tuple[str, int]] | None = None) -> NodeRecord:
    return create_node_record(
        key,
        addresses=addresses or [("127.0.0.2", 8468)],
        transport_key=b"\x07" * 32,
        seq=1,
        expiry_ms=NOW_MS + 3_600_000,
    )


def test_lookups_over_256_nodes_with_loss_and_20_percent_churn() -> None:
    size = 256
    net = build(seed=42, size=size, loss=0.05)
    nodes = list(net.nodes.values())
    # 60 feeds publish their signed node records, each on the k closest nodes
    owners = [signer(i + 1) for i in range(60)]
    for owner in owners:
        assert net.publish(net.rng.choice(nodes), node_key(owner.feed), record_for(owner).encode()) >= K * 0.6
    # churn: 20% of the nodes die
    for node in net.rng.sample(nodes, size // 5):
        node.alive = False
    alive = [n for n in nodes if n.alive]
    net.loss = 0.10
    results = []
    for _ in range(3):
        for owner in owners:
            key = node_key(owner.feed)
            origin = net.rng.choice(alive)
            accepts = validator(key, now_ms=net.now_ms(), kind=NodeRecord)
            result = net.lookup(origin, key, LookupKind.FIND_VALUE, validate=accepts)
            assert not result.found or result.values[0].value == record_for(owner).encode()
            results.append(result)
    found = [r for r in results if r.found]
    success = len(found) / len(results)
    hops = [r.hops for r in found]
    mean_hops = statistics.mean(hops)
    print(
        f"find_value: success {success:.3f}, hops mean {mean_hops:.2f} max {max(hops)}, "
        f"queries mean {statistics.mean(r.queries for r in results):.1f}, log2(N) = {math.log2(size):.1f}"
    )
    assert success >= 0.99
    assert mean_hops <= 8 and mean_hops <= math.log2(size)

    # find_node: the lookup reaches the live node closest to random targets
    reached = 0
    node_hops = []
    for _ in range(100):
        target = net.rng.randbytes(20)
        truth = min(
            alive, key=lambda n: int.from_bytes(n.contact.node_id, "big") ^ int.from_bytes(target, "big")
        )
        origin = net.rng.choice(alive)
        result = net.lookup(origin, target, LookupKind.FIND_NODE)
        node_hops.append(result.hops)
        if origin is truth or truth.contact in result.contacts:
            reached += 1
    print(f"find_node: closest live node reached {reached}/100, hops mean {statistics.mean(node_hops):.2f}")
    assert reached >= 95
    assert statistics.mean(node_hops) <= 8


def test_eight_sybils_closest_to_a_key_cannot_forge_or_hide_a_signed_record() -> None:
    alice = signer(1000)
    mallory = signer(1001)
    key = node_key(alice.feed)
    net = SimNet(seed=7, loss=0.0)
    # 8 Sybil ids sharing 150+ leading bits with the key: closer to it than any honest id
    base = int.from_bytes(key, "big")
    sybils = [
        net.add(((base >> 10 << 10) | net.rng.getrandbits(10) | 1 << i).to_bytes(20, "big")) for i in range(8)
    ]
    net.sybils = [s.contact for s in sybils]
    # a forged "record" for Alice's key: Mallory's addresses, a signature that cannot verify
    honest_record = record_for(alice)
    forged_items = [
        "tidings-node/1",
        alice.public_key,
        [["10.6.6.6", 6666]],
        b"\x66" * 32,
        99,
        NOW_MS + 3_600_000,
        mallory.sign(b"not alice"),
    ]
    forged = encode(forged_items)
    honest: list[SimNode] = []
    first = net.add(net.rng.randbytes(20))
    honest.append(first)
    for _ in range(119):
        node = net.add(net.rng.randbytes(20))
        net.join(node, honest)
        honest.append(node)
    for sybil in sybils:  # the Sybils join like anyone else, so honest tables hold them
        net.join(sybil, honest)
        sybil.forged = forged
    assert net.publish(honest[5], key, honest_record.encode()) == K  # 8 Sybils drop it, 12 honest keep it
    holders = [n for n in honest if n.store.get(key, net.now_ms()) is not None]
    assert len(holders) >= 10

    # asked from the honest nodes nearest the key: their tables hold the Sybils as their closest contacts
    by_distance = sorted(honest, key=lambda n: int.from_bytes(n.contact.node_id, "big") ^ base)
    origins = [n for n in by_distance if n not in holders][:30]
    accepts = validator(key, now_ms=net.now_ms(), kind=NodeRecord)

    # What the stock package does: one path, first value wins: the Sybils win.
    stock_like = [net.lookup(o, key, LookupKind.FIND_VALUE) for o in origins]
    forged_wins = sum(1 for r in stock_like if r.values and r.values[0].value == forged)
    one_path = [net.lookup(o, key, LookupKind.FIND_VALUE, validate=accepts) for o in origins]
    # Tidings: validated values over 4 disjoint paths.
    hardened = [net.lookup(o, key, LookupKind.FIND_VALUE, paths=4, validate=accepts) for o in origins]
    print(
        f"sybils: forged value returned to {forged_wins}/{len(origins)} unvalidated single-path lookups; "
        f"validated lookups found the honest record: one path {sum(r.found for r in one_path)}/{len(origins)}, "
        f"4 disjoint paths {sum(r.found for r in hardened)}/{len(origins)} "
        f"(forged replies rejected: {sum(r.rejected for r in hardened)})"
    )
    assert forged_wins >= 1
    assert all(r.found and r.values[0].value == honest_record.encode() for r in hardened)
    assert all(f.value != forged for r in hardened for f in r.values)


def test_swarm_members_are_found_by_members_lookups() -> None:
    net = build(seed=11, size=120, loss=0.05)
    nodes = list(net.nodes.values())
    key = swarm_key("python")
    members = [signer(500 + i) for i in range(10)]
    for i, member in enumerate(members):
        record = create_member_record(
            member,
            swarm="python",
            addresses=[(f"127.9.0.{i + 2}", 8468)],
            seq=1,
            expiry_ms=NOW_MS + 3_600_000,
        )
        assert net.publish(net.rng.choice(nodes), key, record.encode(), announce=True) >= K * 0.6
    complete = 0
    for _ in range(20):
        accepts = validator(key, now_ms=net.now_ms(), kind=MemberRecord)
        result = net.lookup(net.rng.choice(nodes), key, LookupKind.MEMBERS, validate=accepts)
        seen = {decode_record(f.value).owner for f in result.values}
        complete += seen == {m.public_key for m in members}
    print(f"members: all 10 members found by {complete}/20 lookups")
    assert complete >= 19
