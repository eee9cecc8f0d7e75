"""The bounded in-memory store of a DHT node: signed records and plain values held for others (sans-IO).

Theory of operation. ``RecordStore`` holds what a DHT node stores for others: only valid records
(``records.validate_record``) that are newer than what it holds (``records.newer``), bounded in count
and size, dropped at expiry. Node records are one per key; member records one per (key, member), at
most ``max_members`` per key. It also holds plain values from stock ``kademlia`` peers (last writer
wins, as in the package), but a plain value never replaces a signed record, and bytes that look like a
record are never taken as a plain value.

No single source can fill it (spec/protocol.md §13.5). Every value is charged to the *source range*
that stored it (the storer's IPv4 /24 or IPv6 /48, given by the caller; ``LOCAL`` for the node's
own), kept in two ``record_quota.Holdings``, one for signed records and one for plain values:

- a range holds at most ``per_range`` signed records and ``plain_per_range`` plain values;
- plain values take at most ``max_plain`` of the ``max_records`` places, live ``plain_ttl_ms`` (shorter
  than records may), and are evicted first: a signed record is never refused while a plain value is
  held;
- when the store (or the plain share, or a swarm key's ``max_members``) is full, a newcomer evicts the
  least recently stored value of the range holding the most there, if that range holds at least two
  more than the newcomer's; else it is refused (``full``). So a flood from one range only ever evicts
  its own kind of excess, and never keeps a range holding less out;
- a reply sampling a big swarm takes the source ranges in turns, so one range's Sybils get no larger
  share of a reply than any honest range.

Time is passed in (``now_ms``, wall-clock milliseconds) and so is the generator that samples a swarm's
members when they do not all fit in a reply.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, MutableSequence
from dataclasses import dataclass
from typing import Any, Protocol

from .dht_wire import Value
from .errors import RemoteProtocolError
from .record_admission import RecordHead, VerifyBudget, peek_record
from .record_quota import LOCAL, Holdings, Slot, fair_victim
from .records import (
    MAX_RECORD_SIZE,
    MAX_TTL_MS,
    MemberRecord,
    NodeRecord,
    Record,
    looks_like_record,
    newer,
    validate_record,
)

__all__ = [
    "LOCAL",
    "MAX_PLAIN",
    "MAX_RECORDS",
    "PER_RANGE",
    "PLAIN_PER_RANGE",
    "PLAIN_TTL_MS",
    "PutOutcome",
    "RecordStore",
    "Shuffler",
]

#: spec/protocol.md §13.5, §13.7: the reference defaults of the store's limits.
MAX_RECORDS = 10_000
PER_RANGE = 1_000
MAX_PLAIN = 1_000
PLAIN_PER_RANGE = 100
#: Stock nodes republish what they hold once it is an hour old, checking hourly: under 2 h apart.
PLAIN_TTL_MS = 3 * 3600 * 1000
#: When the store is full, expired values are swept at most this often (a flood then costs no scans).
SWEEP_MS = 1000


class Shuffler(Protocol):
    """What ``RecordStore.members`` needs of a random generator (``random.Random`` fits)."""

    def shuffle(self, x: MutableSequence[Any], /) -> None: ...


@dataclass(frozen=True, slots=True)
class PutOutcome:
    """What ``RecordStore.put`` did: ``code`` is ``stored``/``replaced`` or why it refused."""

    accepted: bool
    code: str


class RecordStore:
    """Values a DHT node holds for others, bounded (see the module docstring). Pure and in memory."""

    def __init__(
        self,
        *,
        max_records: int = MAX_RECORDS,
        max_value_size: int = MAX_RECORD_SIZE,
        max_members: int = 64,
        per_range: int = PER_RANGE,
        max_plain: int = MAX_PLAIN,
        plain_per_range: int = PLAIN_PER_RANGE,
        accept_plain: bool = True,
        plain_ttl_ms: int = PLAIN_TTL_MS,
        max_ttl_ms: int = MAX_TTL_MS,
        budget: VerifyBudget | None = None,
        validate: Callable[..., Record] = validate_record,
    ) -> None:
        self.max_records = max_records
        self.max_value_size = max_value_size
        self.max_members = max_members
        self.per_range = per_range
        self.max_plain = max_plain
        self.plain_per_range = plain_per_range
        self.accept_plain = accept_plain
        self.plain_ttl_ms = plain_ttl_ms
        self.max_ttl_ms = max_ttl_ms
        self.budget = budget if budget is not None else VerifyBudget()
        self._validate = validate  # the signature check (a test counts its calls)
        self.checks = 0
        self._nodes: dict[bytes, NodeRecord] = {}
        self._members: dict[bytes, dict[bytes, MemberRecord]] = {}
        self._plain: dict[bytes, tuple[Value, int]] = {}  # key -> (value, expiry_ms)
        self._signed = Holdings()
        self._plain_by = Holdings()
        self._next_sweep = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._signed) + len(self._plain_by)

    def put(self, key: bytes, value: Value, now_ms: int, *, source: str = LOCAL) -> PutOutcome:
        """Store ``value`` under ``key`` if the rules allow (a ``store`` or ``announce`` arrived from a
        node in the range ``source``, spec/protocol.md §13.5)."""
        if isinstance(value, bytes | str) and len(value) > self.max_value_size:
            return PutOutcome(False, "too_large")
        if not looks_like_record(value):
            return self._put_plain(key, value, now_ms, source)
        try:
            head = peek_record(value, key=key, now_ms=now_ms, max_ttl_ms=self.max_ttl_ms)
        except RemoteProtocolError as exc:
            return PutOutcome(False, exc.code)
        # charged before the work: what the cheap fields decide costs no signature check, and the
        # checks a range may cause are capped (spec/protocol.md §13.5, protocol/record_admission.py)
        refused = self._refuse_unchecked(head, value, now_ms, source)
        if refused is None and not self.budget.take(source, now_ms):
            refused = "busy"
        if refused is not None:
            return PutOutcome(False, refused)
        self.checks += 1
        try:
            record = self._validate(value, key=key, now_ms=now_ms, max_ttl_ms=self.max_ttl_ms)
        except RemoteProtocolError as exc:
            return PutOutcome(False, exc.code)
        if isinstance(record, NodeRecord):
            return self._put_node(key, record, now_ms, source)
        return self._put_member(key, record, now_ms, source)

    def get(self, key: bytes, now_ms: int) -> Value | None:
        """The value ``find_value`` answers: the node record, a member record, or a plain value."""
        record = self._nodes.get(key)
        if record is not None and record.expiry_ms > now_ms:
            return record.encode()
        members = [r for r in self._members.get(key, {}).values() if r.expiry_ms > now_ms]
        if members:
            return max(members, key=lambda r: r.expiry_ms).encode()
        plain = self._plain.get(key)
        if plain is not None and plain[1] > now_ms:
            return plain[0]
        return None

    def members(self, key: bytes, now_ms: int, *, rng: Shuffler, max_bytes: int | None = None) -> list[bytes]:
        """Unexpired member records under ``key``, latest expiry first, within ``max_bytes`` in total.

        When they do not all fit, a random sample that fits is returned (still latest expiry first), so
        repeated lookups of a big swarm meet all of its members, not only the latest to announce. The
        sample takes the source ranges in turns (in a random order, each range's records in a random
        order), so a range full of Sybils gets no more of a reply than any other range (§13.5).
        ``rng`` draws the sample (the node's generator: ``protocol/`` never seeds one of its own).
        """
        held = self._members.get(key, {})
        records = [r for r in held.values() if r.expiry_ms > now_ms]
        if max_bytes is not None and sum(len(r.encode()) + 3 for r in records) > max_bytes:
            records = _sample(self._signed, key, records, max_bytes, rng)
        records.sort(key=lambda r: r.expiry_ms, reverse=True)
        out: list[bytes] = []
        size = 0
        for record in records:
            data = record.encode()
            if max_bytes is not None and size + len(data) + 3 > max_bytes:
                break
            out.append(data)
            size += len(data) + 3
        return out

    def items(self, now_ms: int) -> Iterator[tuple[bytes, Value]]:
        """Every unexpired (key, value) held, e.g. to hand on to nodes closer to a key."""
        for key, node in self._nodes.items():
            if node.expiry_ms > now_ms:
                yield key, node.encode()
        for key, slot in self._members.items():
            for member in slot.values():
                if member.expiry_ms > now_ms:
                    yield key, member.encode()
        for key, (value, expiry) in self._plain.items():
            if expiry > now_ms:
                yield key, value

    def expire(self, now_ms: int) -> int:
        """Drop what expired at ``now_ms``; returns how many values went."""
        before = len(self)
        for key in [k for k, r in self._nodes.items() if r.expiry_ms <= now_ms]:
            self._drop_signed((key, b""))
        for key, slot in list(self._members.items()):
            for member in [m for m, r in slot.items() if r.expiry_ms <= now_ms]:
                self._drop_signed((key, member))
        for key in [k for k, (_, expiry) in self._plain.items() if expiry <= now_ms]:
            self._drop_plain(key)
        return before - len(self)

    def held_by(self, source: str) -> tuple[int, int]:
        """How many (signed records, plain values) the range ``source`` stored that are held now."""
        return self._signed.count(source), self._plain_by.count(source)

    def statistics(self) -> dict[str, int]:
        return {
            "node_records": len(self._nodes),
            "member_records": sum(map(len, self._members.values())),
            "plain_values": len(self._plain),
            "store_ranges": self._signed.ranges(),
            "store_evicted": self.evicted,
            "store_checks": self.checks,
        }

    # -- quotas and room (§13.5) -----------------------------------------------------------------------
    def _at_quota(self, source: str) -> bool:
        return source != LOCAL and self._signed.count(source) >= self.per_range

    def _refuse_unchecked(self, head: RecordHead, value: Value, now_ms: int, source: str) -> str | None:
        """Why the record whose cheap fields are ``head`` is refused whatever its signature, or None:
        a version no newer than the one held, a range at its quota, a full swarm key whose member rule
        would refuse it (the same outcomes as after the check, found before it)."""
        slot = self._members.get(head.key, {})
        held = slot.get(head.owner) if head.member else self._nodes.get(head.key)
        if held is not None:
            if (head.seq, head.expiry_ms) < (held.seq, held.expiry_ms) or value == held.encode():
                return "not_newer"
            return None
        if self._at_quota(source):
            return "quota"
        if head.member and len(slot) >= self.max_members:
            for member in [m for m, r in slot.items() if r.expiry_ms <= now_ms]:
                self._drop_signed((head.key, member))
            if len(slot) >= self.max_members and _member_victim(self._signed, head.key, slot, source) is None:
                return "full"
        return None

    def _sweep(self, now_ms: int) -> None:
        """When full, drop what expired first, but scan at most once per ``SWEEP_MS``."""
        if now_ms >= self._next_sweep:
            self._next_sweep = now_ms + SWEEP_MS
            self.expire(now_ms)

    def _room(self, source: str, now_ms: int) -> bool:
        """Make room for one signed record from ``source``: expired values go first, then plain
        values (of the range holding the most), then a record of the range holding the most records
        if it holds at least two more than ``source``."""
        if len(self) >= self.max_records:
            self._sweep(now_ms)
        if len(self) < self.max_records:
            return True
        plain_range = self._plain_by.largest()
        if plain_range is not None:
            self._evict(self._plain_by, plain_range)
            return True
        top = self._signed.largest()
        if top is None or self._signed.count(top) < self._signed.count(source) + 2:
            return False
        self._evict(self._signed, top)
        return True

    def _plain_room(self, source: str, now_ms: int) -> bool:
        """Make room for one plain value from ``source`` within the plain share (§13.5)."""
        if len(self) >= self.max_records or len(self._plain_by) >= self.max_plain:
            self._sweep(now_ms)
        if len(self) < self.max_records and len(self._plain_by) < self.max_plain:
            return True
        top = self._plain_by.largest()
        if top is None or self._plain_by.count(top) < self._plain_by.count(source) + 2:
            return False
        self._evict(self._plain_by, top)
        return True

    def _evict(self, holdings: Holdings, source: str) -> None:
        slot = holdings.oldest(source)
        assert slot is not None
        self.evicted += 1
        if holdings is self._plain_by:
            self._drop_plain(slot[0])
        else:
            self._drop_signed(slot)

    def _drop_signed(self, slot: Slot) -> None:
        key, member = slot
        if member:
            held = self._members.get(key, {})
            held.pop(member, None)
            if not held:
                self._members.pop(key, None)
        else:
            self._nodes.pop(key, None)
        self._signed.discard(slot)

    def _drop_plain(self, key: bytes) -> None:
        self._plain.pop(key, None)
        self._plain_by.discard((key, b""))

    # -- putting -------------------------------------------------------------------------------------------
    def _put_node(self, key: bytes, record: NodeRecord, now_ms: int, source: str) -> PutOutcome:
        held = self._nodes.get(key)
        if held is not None:
            if not newer(record, held):
                return PutOutcome(False, "not_newer")
            self._nodes[key] = record
            self._signed.add((key, b""), source)  # charged to the range that stored it last
            return PutOutcome(True, "replaced")
        if key in self._plain:  # a signed record displaces a plain value
            self._drop_plain(key)
        if self._at_quota(source):
            return PutOutcome(False, "quota")
        if not self._room(source, now_ms):
            return PutOutcome(False, "full")
        self._nodes[key] = record
        self._signed.add((key, b""), source)
        return PutOutcome(True, "stored")

    def _put_member(self, key: bytes, record: MemberRecord, now_ms: int, source: str) -> PutOutcome:
        if key in self._plain:  # a signed record displaces a plain value
            self._drop_plain(key)
        slot = self._members.get(key, {})
        held = slot.get(record.member)
        if held is not None:
            if not newer(record, held):
                return PutOutcome(False, "not_newer")
            slot[record.member] = record
            self._signed.add((key, record.member), source)
            return PutOutcome(True, "replaced")
        if self._at_quota(source):
            return PutOutcome(False, "quota")
        # expired members were dropped before the signature check (``_refuse_unchecked``)
        if len(slot) >= self.max_members and not self._evict_member(key, slot, source):
            return PutOutcome(False, "full")
        if not self._room(source, now_ms):
            return PutOutcome(False, "full")
        self._members.setdefault(key, slot)[record.member] = record
        self._signed.add((key, record.member), source)
        return PutOutcome(True, "stored")

    def _evict_member(self, key: bytes, slot: dict[bytes, MemberRecord], source: str) -> bool:
        """A swarm key is full: evict the least recently stored member of the range holding the most
        members under it, if that range holds at least two more than ``source`` (§13.5)."""
        victim = _member_victim(self._signed, key, slot, source)
        if victim is None:
            return False
        self._drop_signed((key, victim))
        self.evicted += 1
        return True

    def _put_plain(self, key: bytes, value: Value, now_ms: int, source: str) -> PutOutcome:
        if not self.accept_plain:
            return PutOutcome(False, "plain_refused")
        if key in self._nodes or key in self._members:
            return PutOutcome(False, "signed_key")
        slot = (key, b"")
        if (
            source != LOCAL
            and self._plain_by.source(slot) != source
            and self._plain_by.count(source) >= self.plain_per_range
        ):
            return PutOutcome(False, "quota")
        if key in self._plain:  # last writer wins, as in the package; charged to the last writer
            self._plain[key] = (value, now_ms + self.plain_ttl_ms)
            self._plain_by.add(slot, source)
            return PutOutcome(True, "replaced")
        if not self._plain_room(source, now_ms):
            return PutOutcome(False, "full")
        self._plain[key] = (value, now_ms + self.plain_ttl_ms)
        self._plain_by.add(slot, source)
        return PutOutcome(True, "stored")


def _member_victim(
    signed: Holdings, key: bytes, slot: dict[bytes, MemberRecord], source: str
) -> bytes | None:
    """The member the member rule evicts from the full ``slot`` for a new member from ``source``
    (§13.5), or None when the new member is refused."""
    ranges = {member: signed.source((key, member)) or LOCAL for member in slot}
    top = fair_victim(Counter(ranges.values()), source)
    if top is None:
        return None
    return min((m for m, r in ranges.items() if r == top), key=lambda m: signed.stamp((key, m)))


def _sample(
    signed: Holdings, key: bytes, records: list[MemberRecord], max_bytes: int, rng: Shuffler
) -> list[MemberRecord]:
    """A random sample of ``records`` within ``max_bytes``, the source ranges taking turns (§13.5)."""
    groups: dict[str, list[MemberRecord]] = {}
    for record in records:
        groups.setdefault(signed.source((key, record.member)) or LOCAL, []).append(record)
    ranges = list(groups.values())
    rng.shuffle(ranges)
    for group in ranges:
        rng.shuffle(group)
    fitting: list[MemberRecord] = []
    size = 0
    for turn in range(max(map(len, ranges))):
        for group in ranges:
            if turn < len(group) and size + len(group[turn].encode()) + 3 <= max_bytes:
                fitting.append(group[turn])
                size += len(group[turn].encode()) + 3
    return fitting
