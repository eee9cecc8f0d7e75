"""Kademlia routing table: k-buckets by XOR distance, replacement caches, a per-IP limit (sans-IO).

Theory of operation. Ids are 160-bit; the distance of two ids is their XOR read as an integer. Contacts
live in bucket ``i`` when they share exactly ``i`` leading bits with our own id (0 <= i < 160). This is
the tree that classic bucket splitting grows (only the bucket holding our own id ever splits), laid out
flat, so finding a contact's bucket is O(1).

Each bucket keeps at most ``k`` live contacts, least recently seen first, and a replacement cache of
contacts seen while it was full. Rules, applied by ``observe`` whenever we hear from a contact:

- our own id is never added; a known id moving to a new address, or a known address claiming a new id,
  is refused while the known contact answers (no takeover of a working entry);
- at most ``per_ip`` contacts with the same IP in a bucket (and in its replacement cache), so one host
  cannot fill a bucket with made-up ids;
- a full bucket evicts a contact that has failed; if none has, the newcomer waits in the replacement cache
  and ``observe`` asks the caller to ping the least recently seen contact (``ObserveResult.ping``);
- ``failed`` counts unanswered requests; after ``max_failures`` in a row the contact is dropped and the
  most recently seen replacement takes its place. Any message from a contact resets its count.

Nothing here reads the clock: every call that needs time takes ``now`` (seconds, monotonic, e.g.
``trio.current_time()``), and ``refresh_targets`` takes the caller's random generator.
"""

from __future__ import annotations

import enum
import heapq
from collections import OrderedDict
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Protocol

from .dht_wire import ID_SIZE, Contact
from .errors import LocalProtocolError

__all__ = [
    "ID_BITS",
    "ObserveResult",
    "Observed",
    "RandomBits",
    "RoutingTable",
    "bucket_index",
    "distance",
]

ID_BITS = ID_SIZE * 8


class RandomBits(Protocol):
    """What ``refresh_targets`` needs of a random generator (``random.Random`` fits)."""

    def getrandbits(self, k: int, /) -> int: ...


def distance(a: bytes, b: bytes) -> int:
    """XOR distance of two ids."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def bucket_index(own_id: bytes, node_id: bytes) -> int:
    """Number of leading bits ``node_id`` shares with ``own_id`` (160 for the same id)."""
    return ID_BITS - distance(own_id, node_id).bit_length()


class Observed(enum.Enum):
    ADDED = "added"
    UPDATED = "updated"
    PENDING = "pending"  # in the replacement cache; ping ``ObserveResult.ping``
    REFUSED = "refused"


@dataclass(frozen=True, slots=True, kw_only=True)
class ObserveResult:
    status: Observed
    #: REFUSED: why (``self``, ``id_conflict``, ``address_conflict``, ``per_ip``)
    reason: str = ""
    #: PENDING: the least recently seen contact of the full bucket; ping it, and call ``failed`` if it
    #: does not answer (its replacement then moves in).
    ping: Contact | None = None


@dataclass(slots=True)
class _Entry:
    contact: Contact
    last_seen: float
    failures: int = 0


class _Bucket:
    __slots__ = ("entries", "last_touched", "replacements")

    def __init__(self, now: float) -> None:
        self.entries: OrderedDict[bytes, _Entry] = OrderedDict()  # least recently seen first
        self.replacements: OrderedDict[bytes, _Entry] = OrderedDict()  # oldest first
        self.last_touched = now

    def count_host(self, host: str) -> int:
        return sum(1 for e in self.entries.values() if e.contact.host == host)


class RoutingTable:
    """The contacts of one node, in 160 k-buckets (see the module docstring for the rules)."""

    def __init__(
        self,
        own_id: bytes,
        *,
        k: int = 20,
        per_ip: int = 2,
        replacements: int | None = None,
        max_failures: int = 3,
    ) -> None:
        if type(own_id) is not bytes or len(own_id) != ID_SIZE:
            raise LocalProtocolError(f"own id must be {ID_SIZE} bytes", code="bad_id")
        if k < 1 or per_ip < 1 or max_failures < 1:
            raise LocalProtocolError("k, per_ip and max_failures are positive", code="bad_argument")
        self.own_id = own_id
        self.k = k
        self.per_ip = per_ip
        self.max_replacements = k if replacements is None else replacements
        self.max_failures = max_failures
        self._buckets: dict[int, _Bucket] = {}
        self._by_address: dict[tuple[str, int], bytes] = {}
        self._where: dict[bytes, int] = {}  # node id -> bucket index, for live entries

    # -- reading ------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._where

    def get(self, node_id: bytes) -> Contact | None:
        index = self._where.get(node_id)
        return None if index is None else self._buckets[index].entries[node_id].contact

    def contacts(self) -> Iterator[Contact]:
        """Every live contact, bucket by bucket (closest buckets last)."""
        for index in sorted(self._buckets):
            for entry in self._buckets[index].entries.values():
                yield entry.contact

    def find_neighbors(
        self, key: bytes, k: int | None = None, exclude: Collection[bytes] = ()
    ) -> list[Contact]:
        """The ``k`` contacts closest to ``key`` (fewer only if the table holds fewer), closest first.

        Contacts in ``exclude`` (node ids) and contacts whose last request failed are left out. Unlike
        the stock package, this always looks at every bucket, so it never returns fewer than it could
        (bmuller/kademlia#28).
        """
        k = self.k if k is None else k
        target = int.from_bytes(key, "big")
        candidates = (
            (int.from_bytes(node_id, "big") ^ target, node_id)
            for node_id, index in self._where.items()
            if node_id not in exclude and self._buckets[index].entries[node_id].failures == 0
        )
        return [self._entry(node_id).contact for _, node_id in heapq.nsmallest(k, candidates)]

    def _entry(self, node_id: bytes) -> _Entry:
        return self._buckets[self._where[node_id]].entries[node_id]

    def stale(self, now: float, max_age: float) -> list[Contact]:
        """Contacts not heard from for ``max_age`` seconds: ping them (``failed`` if they stay silent)."""
        limit = now - max_age
        return [e.contact for b in self._buckets.values() for e in b.entries.values() if e.last_seen < limit]

    def refresh_targets(self, now: float, max_age: float, rng: RandomBits) -> list[bytes]:
        """One random id in each bucket no lookup has touched for ``max_age`` seconds (Kademlia §2.3).

        Buckets from 0 to the deepest one in use are covered. Run a ``find_node`` lookup for each id and
        ``touch`` it. Returns ids farthest bucket first.
        """
        if not self._buckets:
            return []
        limit = now - max_age
        own = int.from_bytes(self.own_id, "big")
        targets = []
        for index in range(max(self._buckets) + 1):
            bucket = self._buckets.get(index)
            if bucket is not None and bucket.last_touched >= limit:
                continue
            free_bits = ID_BITS - 1 - index
            flip = 1 << free_bits
            value = ((own ^ flip) & ~(flip - 1)) | (rng.getrandbits(free_bits) if free_bits else 0)
            targets.append(value.to_bytes(ID_SIZE, "big"))
        return targets

    def statistics(self) -> dict[str, int]:
        return {
            "contacts": len(self._where),
            "buckets": sum(1 for b in self._buckets.values() if b.entries),
            "replacements": sum(len(b.replacements) for b in self._buckets.values()),
            "failing": sum(1 for b in self._buckets.values() for e in b.entries.values() if e.failures > 0),
        }

    # -- writing ------------------------------------------------------------------------------------------
    def touch(self, key: bytes, now: float) -> None:
        """A lookup for ``key`` ran: its bucket needs no refresh for a while."""
        index = min(bucket_index(self.own_id, key), ID_BITS - 1)
        bucket = self._buckets.get(index)
        if bucket is not None:
            bucket.last_touched = now

    def observe(self, contact: Contact, now: float) -> ObserveResult:
        """We heard from ``contact`` (a request from it, or its reply): add or refresh it."""
        node_id = contact.node_id
        if node_id == self.own_id:
            return ObserveResult(status=Observed.REFUSED, reason="self")
        index = bucket_index(self.own_id, node_id)
        bucket = self._buckets.get(index)
        if bucket is None:
            bucket = self._buckets[index] = _Bucket(now)
        entry = bucket.entries.get(node_id)
        if entry is not None:
            return self._refresh(bucket, entry, contact, now)
        holder = self._by_address.get(contact.address)
        if holder is not None:
            held = self._entry(holder)
            if held.failures == 0:
                return ObserveResult(status=Observed.REFUSED, reason="address_conflict")
            self.remove(holder)
        if bucket.count_host(contact.host) >= self.per_ip:
            return ObserveResult(status=Observed.REFUSED, reason="per_ip")
        if len(bucket.entries) >= self.k:
            worst = max(bucket.entries.values(), key=lambda e: e.failures)
            if worst.failures == 0:
                return self._wait(bucket, contact, now)
            self._drop(bucket, worst.contact.node_id)
        self._insert(index, bucket, _Entry(contact, now))
        return ObserveResult(status=Observed.ADDED)

    def failed(self, node_id: bytes) -> bool:
        """A request to ``node_id`` went unanswered. Returns True if the contact was dropped."""
        index = self._where.get(node_id)
        if index is None:
            for bucket in self._buckets.values():
                bucket.replacements.pop(node_id, None)
            return False
        bucket = self._buckets[index]
        entry = bucket.entries[node_id]
        entry.failures += 1
        if entry.failures < self.max_failures:
            return False
        self._drop(bucket, node_id)
        self._promote(index, bucket)
        return True

    def remove(self, node_id: bytes) -> None:
        """Forget ``node_id`` (e.g. it sent invalid data); a replacement moves in."""
        index = self._where.get(node_id)
        if index is None:
            return
        bucket = self._buckets[index]
        self._drop(bucket, node_id)
        self._promote(index, bucket)

    # -- internals ----------------------------------------------------------------------------------------
    def _refresh(self, bucket: _Bucket, entry: _Entry, contact: Contact, now: float) -> ObserveResult:
        if entry.contact.address != contact.address:
            if entry.failures == 0:
                return ObserveResult(status=Observed.REFUSED, reason="id_conflict")
            if self._by_address.get(contact.address) not in (None, contact.node_id):
                return ObserveResult(status=Observed.REFUSED, reason="address_conflict")
            if entry.contact.host != contact.host and bucket.count_host(contact.host) >= self.per_ip:
                return ObserveResult(status=Observed.REFUSED, reason="per_ip")
            del self._by_address[entry.contact.address]
            self._by_address[contact.address] = contact.node_id
            entry.contact = contact
        entry.last_seen = now
        entry.failures = 0
        bucket.entries.move_to_end(contact.node_id)
        bucket.last_touched = max(bucket.last_touched, now)
        return ObserveResult(status=Observed.UPDATED)

    def _wait(self, bucket: _Bucket, contact: Contact, now: float) -> ObserveResult:
        cache = bucket.replacements
        cache.pop(contact.node_id, None)
        same_host = [nid for nid, e in cache.items() if e.contact.host == contact.host]
        if len(same_host) >= self.per_ip:
            del cache[same_host[0]]  # the newest sighting from a host wins, within its share
        cache[contact.node_id] = _Entry(contact, now)
        while len(cache) > self.max_replacements:
            cache.popitem(last=False)
        head = next(iter(bucket.entries.values()))
        return ObserveResult(status=Observed.PENDING, ping=head.contact)

    def _insert(self, index: int, bucket: _Bucket, entry: _Entry) -> None:
        node_id = entry.contact.node_id
        bucket.replacements.pop(node_id, None)
        bucket.entries[node_id] = entry
        bucket.last_touched = max(bucket.last_touched, entry.last_seen)
        self._by_address[entry.contact.address] = node_id
        self._where[node_id] = index

    def _drop(self, bucket: _Bucket, node_id: bytes) -> None:
        entry = bucket.entries.pop(node_id)
        del self._where[node_id]
        if self._by_address.get(entry.contact.address) == node_id:
            del self._by_address[entry.contact.address]

    def _promote(self, index: int, bucket: _Bucket) -> None:
        """Move the most recently seen usable replacement into the bucket, if there is room."""
        while bucket.replacements and len(bucket.entries) < self.k:
            _, entry = bucket.replacements.popitem(last=True)
            contact = entry.contact
            if contact.address in self._by_address or bucket.count_host(contact.host) >= self.per_ip:
                continue
            self._insert(index, bucket, entry)
