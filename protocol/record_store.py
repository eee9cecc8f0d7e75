"""The bounded in-memory store of a DHT node: signed records and plain values held for others (sans-IO).

Theory of operation. ``RecordStore`` holds what a DHT node stores for others: only valid records
(``records.validate_record``) that are newer than what it holds (``records.newer``), bounded in count
and size, dropped at expiry. Node records are one per key; member records one per (key, member), at
most ``max_members`` per key. It also holds plain values from stock ``kademlia`` peers (last writer
wins, as in the package), but a plain value never replaces a signed record, and bytes that look like a
record are never taken as a plain value. Time is passed in (``now_ms``, wall-clock milliseconds) and so
is the generator that samples a swarm's members when they do not all fit in a reply.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableSequence
from dataclasses import dataclass
from typing import Any, Protocol

from .dht_wire import Value
from .errors import RemoteProtocolError
from .records import (
    MAX_RECORD_SIZE,
    MAX_TTL_MS,
    MemberRecord,
    NodeRecord,
    looks_like_record,
    newer,
    validate_record,
)

__all__ = ["PutOutcome", "RecordStore", "Shuffler"]


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
        max_records: int = 10_000,
        max_value_size: int = MAX_RECORD_SIZE,
        max_members: int = 64,
        accept_plain: bool = True,
        plain_ttl_ms: int = 24 * 3600 * 1000,
        max_ttl_ms: int = MAX_TTL_MS,
    ) -> None:
        self.max_records = max_records
        self.max_value_size = max_value_size
        self.max_members = max_members
        self.accept_plain = accept_plain
        self.plain_ttl_ms = plain_ttl_ms
        self.max_ttl_ms = max_ttl_ms
        self._nodes: dict[bytes, NodeRecord] = {}
        self._members: dict[bytes, dict[bytes, MemberRecord]] = {}
        self._plain: dict[bytes, tuple[Value, int]] = {}  # key -> (value, expiry_ms)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def put(self, key: bytes, value: Value, now_ms: int) -> PutOutcome:
        """Store ``value`` under ``key`` if the rules allow (a ``store`` or ``announce`` arrived)."""
        if isinstance(value, bytes | str) and len(value) > self.max_value_size:
            return PutOutcome(False, "too_large")
        if not looks_like_record(value):
            return self._put_plain(key, value, now_ms)
        try:
            record = validate_record(value, key=key, now_ms=now_ms, max_ttl_ms=self.max_ttl_ms)
        except RemoteProtocolError as exc:
            return PutOutcome(False, exc.code)
        if isinstance(record, NodeRecord):
            return self._put_node(key, record, now_ms)
        return self._put_member(key, record, now_ms)

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
        repeated lookups of a big swarm meet all of its members, not only the latest to announce.
        ``rng`` draws the sample (the node's generator: ``protocol/`` never seeds one of its own).
        """
        records = [r for r in self._members.get(key, {}).values() if r.expiry_ms > now_ms]
        if max_bytes is not None and sum(len(r.encode()) + 3 for r in records) > max_bytes:
            rng.shuffle(records)
            fitting, size = [], 0
            for record in records:
                if size + len(record.encode()) + 3 <= max_bytes:
                    fitting.append(record)
                    size += len(record.encode()) + 3
            records = fitting
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
        before = self._count
        for key in [k for k, r in self._nodes.items() if r.expiry_ms <= now_ms]:
            del self._nodes[key]
        for key, slot in list(self._members.items()):
            for member in [m for m, r in slot.items() if r.expiry_ms <= now_ms]:
                del slot[member]
            if not slot:
                del self._members[key]
        for key in [k for k, (_, expiry) in self._plain.items() if expiry <= now_ms]:
            del self._plain[key]
        self._count = len(self._nodes) + len(self._plain) + sum(map(len, self._members.values()))
        return before - self._count

    def statistics(self) -> dict[str, int]:
        return {
            "node_records": len(self._nodes),
            "member_records": sum(map(len, self._members.values())),
            "plain_values": len(self._plain),
        }

    # -- internals ----------------------------------------------------------------------------------------
    def _room(self, now_ms: int) -> bool:
        if self._count >= self.max_records:
            self.expire(now_ms)
        return self._count < self.max_records

    def _put_node(self, key: bytes, record: NodeRecord, now_ms: int) -> PutOutcome:
        held = self._nodes.get(key)
        if held is None and key in self._plain:  # a signed record displaces a plain value
            del self._plain[key]
            self._count -= 1
        if held is not None:
            if not newer(record, held):
                return PutOutcome(False, "not_newer")
            self._nodes[key] = record
            return PutOutcome(True, "replaced")
        if not self._room(now_ms):
            return PutOutcome(False, "full")
        self._nodes[key] = record
        self._count += 1
        return PutOutcome(True, "stored")

    def _put_member(self, key: bytes, record: MemberRecord, now_ms: int) -> PutOutcome:
        if key in self._plain:  # a signed record displaces a plain value
            del self._plain[key]
            self._count -= 1
        slot = self._members.get(key, {})
        held = slot.get(record.member)
        if held is not None:
            if not newer(record, held):
                return PutOutcome(False, "not_newer")
            slot[record.member] = record
            return PutOutcome(True, "replaced")
        if len(slot) >= self.max_members:
            for member in [m for m, r in slot.items() if r.expiry_ms <= now_ms]:
                del slot[member]
                self._count -= 1
            if len(slot) >= self.max_members:
                return PutOutcome(False, "full")
        if not self._room(now_ms):
            return PutOutcome(False, "full")
        slot = self._members.setdefault(key, slot)
        slot[record.member] = record
        self._count += 1
        return PutOutcome(True, "stored")

    def _put_plain(self, key: bytes, value: Value, now_ms: int) -> PutOutcome:
        if not self.accept_plain:
            return PutOutcome(False, "plain_refused")
        if key in self._nodes or key in self._members:
            return PutOutcome(False, "signed_key")
        if key in self._plain:
            self._plain[key] = (value, now_ms + self.plain_ttl_ms)
            return PutOutcome(True, "replaced")
        if not self._room(now_ms):
            return PutOutcome(False, "full")
        self._plain[key] = (value, now_ms + self.plain_ttl_ms)
        self._count += 1
        return PutOutcome(True, "stored")
