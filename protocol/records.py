"""Signed DHT records, and the bounded in-memory store of a DHT node (sans-IO).

Theory of operation. Two kinds of record travel as the bytes ``value`` of ``store``/``announce`` and of
``find_value``/``get_members`` replies, each the canonical encoding (spec/protocol.md §2) of an array:

    node record    ["tidings-node/1",   feed, addresses, transport_key, seq, expiry_ms, signature]
                   stored under node_key(feed) = digest(text feed id "@..."): one record per key
    member record  ["tidings-member/1", swarm_key, member, addresses, seq, expiry_ms, signature]
                   stored under swarm_key = digest("swarm:" + name): one record per member, several
                   members per key

``addresses`` is ``[[host, port], ...]`` (1..8; host an IP literal or a DNS name), ``transport_key`` the
32-byte X25519 key of the node's Noise handshake, ``seq`` a sequence number the owner raises with every
new version, ``expiry_ms`` a wall-clock time (Unix milliseconds). The signature is Ed25519 by ``feed``
(``member``) over a domain string, a zero byte and the canonical encoding of the other fields, so a
signature for one kind can never pass for the other, or for anything else Tidings signs.

Keys are ``kademlia.utils.digest`` of text, so a stock ``kademlia`` client can fetch a node record with
``server.get("@...")``. A record is *valid* under a key when it decodes strictly, its signature verifies,
it belongs under that key, it is not expired at ``now_ms`` and does not claim to live longer than
``MAX_TTL_MS``. Between two valid records of the same slot (key, and member for swarms) the newer is
the one with the higher ``seq`` (ties: later expiry, then the larger encoding, so every node picks the
same one).

``RecordStore`` holds what a DHT node stores for others: only valid records that are newer than what it
holds, bounded in count and size, dropped at expiry. It also holds plain values from stock ``kademlia``
peers (last writer wins, as in the package), but a plain value never replaces a signed record, and
bytes that look like a record are never taken as a plain value.
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .dht_wire import ID_SIZE, Value, digest
from .encoding import decode, encode
from .errors import LocalProtocolError, RemoteProtocolError
from .identity import KEY_SIZE, SIGNATURE_SIZE, FeedId, SigningKey, verify_signature

__all__ = [
    "MAX_ADDRESSES",
    "MAX_RECORD_SIZE",
    "MAX_TTL_MS",
    "InvalidRecord",
    "MemberRecord",
    "NodeRecord",
    "PutOutcome",
    "Record",
    "RecordStore",
    "create_member_record",
    "create_node_record",
    "decode_record",
    "looks_like_record",
    "newer",
    "node_key",
    "swarm_key",
    "validate_record",
    "validator",
]

NODE_TAG = "tidings-node/1"
MEMBER_TAG = "tidings-member/1"
_NODE_DOMAIN = b"tidings/dht/node-record/v1\x00"
_MEMBER_DOMAIN = b"tidings/dht/member-record/v1\x00"
MAX_RECORD_SIZE = 1024
MAX_ADDRESSES = 8
#: Longest lifetime a record may claim: owners republish before expiry (48 hours).
MAX_TTL_MS = 48 * 3600 * 1000
MAX_SEQ = 2**53 - 1
_MAX_MS = 2**63 - 1
_HOSTNAME = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*")
_TAG_HEADS = tuple(encode(tag) for tag in (NODE_TAG, MEMBER_TAG))


class InvalidRecord(RemoteProtocolError):
    """A DHT record breaks a rule of this module."""

    code = "invalid_record"


def node_key(feed: FeedId) -> bytes:
    """DHT key of a feed's node record: the digest of its text id."""
    return digest(str(feed))


def swarm_key(name: str) -> bytes:
    """DHT key of a swarm's member records: the digest of ``"swarm:" + name``."""
    return digest("swarm:" + name)


def _local(message: str, code: str) -> LocalProtocolError:
    return LocalProtocolError(message, code=code)


def _check_addresses(addresses: object) -> None:
    if type(addresses) is not tuple or not 1 <= len(addresses) <= MAX_ADDRESSES:
        raise _local(f"addresses is a tuple of 1..{MAX_ADDRESSES}", "bad_address")
    for item in addresses:
        if type(item) is not tuple or len(item) != 2:
            raise _local("an address is (host, port)", "bad_address")
        host, port = item
        if type(port) is not int or not 1 <= port <= 65535:
            raise _local("port must be 1..65535", "bad_address")
        if type(host) is not str or not 1 <= len(host) <= 253:
            raise _local("host must be an IP literal or a DNS name", "bad_address")
        try:
            ok = str(ipaddress.ip_address(host)) == host
        except ValueError:
            ok = _HOSTNAME.fullmatch(host) is not None
        if not ok:
            raise _local("host must be an IP literal or a DNS name", "bad_address")
    if len(set(addresses)) != len(addresses):
        raise _local("addresses repeat", "bad_address")


def _check_common(seq: object, expiry_ms: object, signature: object) -> None:
    if type(seq) is not int or not 1 <= seq <= MAX_SEQ:
        raise _local("seq must be 1..2^53-1", "bad_seq")
    if type(expiry_ms) is not int or not 0 <= expiry_ms <= _MAX_MS:
        raise _local("expiry_ms must be 0..2^63-1", "bad_expiry")
    if type(signature) is not bytes or len(signature) != SIGNATURE_SIZE:
        raise _local("a signature is 64 bytes", "bad_signature")


def _check_key(value: object, size: int, what: str) -> None:
    if type(value) is not bytes or len(value) != size:
        raise _local(f"{what} must be {size} bytes", "bad_key")


def _wire_addresses(addresses: tuple[tuple[str, int], ...]) -> list[list[Any]]:
    return [[host, port] for host, port in addresses]


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeRecord:
    """Where a feed's node can be reached, signed by the feed. Validates its signature on creation."""

    feed: bytes
    addresses: tuple[tuple[str, int], ...]
    transport_key: bytes
    seq: int
    expiry_ms: int
    signature: bytes

    def __post_init__(self) -> None:
        _check_key(self.feed, KEY_SIZE, "feed")
        _check_addresses(self.addresses)
        _check_key(self.transport_key, KEY_SIZE, "transport key")
        _check_common(self.seq, self.expiry_ms, self.signature)
        if not verify_signature(self.feed, self.signature, self.signing_bytes()):
            raise _local("signature does not verify", "bad_signature")

    @property
    def key(self) -> bytes:
        return node_key(FeedId(self.feed))

    @property
    def owner(self) -> bytes:
        return self.feed

    def signing_bytes(self) -> bytes:
        fields = [self.feed, _wire_addresses(self.addresses), self.transport_key, self.seq, self.expiry_ms]
        return _NODE_DOMAIN + encode(fields)

    def encode(self) -> bytes:
        """The record as a DHT value (canonical bytes)."""
        return encode(
            [
                NODE_TAG,
                self.feed,
                _wire_addresses(self.addresses),
                self.transport_key,
                self.seq,
                self.expiry_ms,
                self.signature,
            ]
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberRecord:
    """A feed announcing itself as a member of the swarm ``swarm_key``, signed by the member."""

    swarm_key: bytes
    member: bytes
    addresses: tuple[tuple[str, int], ...]
    seq: int
    expiry_ms: int
    signature: bytes

    def __post_init__(self) -> None:
        _check_key(self.swarm_key, ID_SIZE, "swarm key")
        _check_key(self.member, KEY_SIZE, "member")
        _check_addresses(self.addresses)
        _check_common(self.seq, self.expiry_ms, self.signature)
        if not verify_signature(self.member, self.signature, self.signing_bytes()):
            raise _local("signature does not verify", "bad_signature")

    @property
    def key(self) -> bytes:
        return self.swarm_key

    @property
    def owner(self) -> bytes:
        return self.member

    def signing_bytes(self) -> bytes:
        fields = [self.swarm_key, self.member, _wire_addresses(self.addresses), self.seq, self.expiry_ms]
        return _MEMBER_DOMAIN + encode(fields)

    def encode(self) -> bytes:
        """The record as a DHT value (canonical bytes)."""
        return encode(
            [
                MEMBER_TAG,
                self.swarm_key,
                self.member,
                _wire_addresses(self.addresses),
                self.seq,
                self.expiry_ms,
                self.signature,
            ]
        )


Record = NodeRecord | MemberRecord


def _tuple_addresses(addresses: Sequence[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    return tuple((host, port) for host, port in addresses)


def create_node_record(
    signer: SigningKey,
    *,
    addresses: Sequence[tuple[str, int]],
    transport_key: bytes,
    seq: int,
    expiry_ms: int,
) -> NodeRecord:
    """Sign a node record for ``signer``'s feed."""
    unsigned = [signer.public_key, [[h, p] for h, p in addresses], transport_key, seq, expiry_ms]
    return NodeRecord(
        feed=signer.public_key,
        addresses=_tuple_addresses(addresses),
        transport_key=transport_key,
        seq=seq,
        expiry_ms=expiry_ms,
        signature=signer.sign(_NODE_DOMAIN + encode(unsigned)),
    )


def create_member_record(
    signer: SigningKey, *, swarm: str, addresses: Sequence[tuple[str, int]], seq: int, expiry_ms: int
) -> MemberRecord:
    """Sign ``signer``'s membership of the swarm named ``swarm``."""
    key = swarm_key(swarm)
    unsigned = [key, signer.public_key, [[h, p] for h, p in addresses], seq, expiry_ms]
    return MemberRecord(
        swarm_key=key,
        member=signer.public_key,
        addresses=_tuple_addresses(addresses),
        seq=seq,
        expiry_ms=expiry_ms,
        signature=signer.sign(_MEMBER_DOMAIN + encode(unsigned)),
    )


def looks_like_record(value: object) -> bool:
    """True when ``value`` claims to be a record (bytes of an array starting with a record tag)."""
    return type(value) is bytes and len(value) > 1 and value[1:].startswith(_TAG_HEADS)


def _wire_to_addresses(items: object) -> tuple[tuple[str, int], ...]:
    if type(items) is not list or len(items) > MAX_ADDRESSES:
        raise InvalidRecord("addresses is a bounded array", code="bad_address")
    pairs = []
    for item in items:
        if type(item) is not list or len(item) != 2:
            raise InvalidRecord("an address is [host, port]", code="bad_address")
        pairs.append((item[0], item[1]))
    return tuple(pairs)


def decode_record(data: Value) -> Record:
    """Decode and verify a record (not its key or expiry: see ``validate_record``).

    Raises ``RemoteProtocolError`` (``InvalidRecord`` or ``DecodeError``) on anything else.
    """
    if type(data) is not bytes:
        raise InvalidRecord("a record is bytes", code="not_a_record")
    if len(data) > MAX_RECORD_SIZE:
        raise InvalidRecord(f"record larger than {MAX_RECORD_SIZE} bytes", code="too_large")
    items = decode(data, max_size=MAX_RECORD_SIZE)
    if type(items) is not list or len(items) != 7 or items[0] not in (NODE_TAG, MEMBER_TAG):
        raise InvalidRecord("not a Tidings record", code="not_a_record")
    try:
        if items[0] == NODE_TAG:
            _, feed, addresses, transport_key, seq, expiry_ms, signature = items
            return NodeRecord(
                feed=feed,
                addresses=_wire_to_addresses(addresses),
                transport_key=transport_key,
                seq=seq,
                expiry_ms=expiry_ms,
                signature=signature,
            )
        _, key, member, addresses, seq, expiry_ms, signature = items
        return MemberRecord(
            swarm_key=key,
            member=member,
            addresses=_wire_to_addresses(addresses),
            seq=seq,
            expiry_ms=expiry_ms,
            signature=signature,
        )
    except LocalProtocolError as exc:  # a field failed its checks: whoever sent the bytes broke the rules
        raise InvalidRecord(str(exc.args[0]), code=exc.code) from None


def validate_record(data: Value, *, key: bytes, now_ms: int, max_ttl_ms: int = MAX_TTL_MS) -> Record:
    """The record in ``data`` if it is valid under ``key`` at wall-clock time ``now_ms``.

    Raises ``RemoteProtocolError`` with codes ``not_a_record``, ``too_large``, ``bad_signature``,
    ``wrong_key``, ``expired``, ``ttl_too_long``, a field code, or a ``DecodeError`` code.
    """
    record = decode_record(data)
    if record.key != key:
        raise InvalidRecord("record stored under someone else's key", code="wrong_key")
    if record.expiry_ms <= now_ms:
        raise InvalidRecord("record expired", code="expired")
    if record.expiry_ms > now_ms + max_ttl_ms:
        raise InvalidRecord("record claims too long a lifetime", code="ttl_too_long")
    return record


def validator(
    key: bytes, *, now_ms: int, kind: type[NodeRecord] | type[MemberRecord] | None = None
) -> Callable[[Value], bool]:
    """A ``Lookup`` ``validate`` callback: accept only records valid under ``key`` (of ``kind``)."""

    def accepts(value: Value) -> bool:
        try:
            record = validate_record(value, key=key, now_ms=now_ms)
        except RemoteProtocolError:
            return False
        return kind is None or isinstance(record, kind)

    return accepts


def newer(a: Record, b: Record) -> bool:
    """True when ``a`` supersedes ``b`` (same slot): higher seq, then later expiry, then larger bytes."""
    return (a.seq, a.expiry_ms, a.encode()) > (b.seq, b.expiry_ms, b.encode())


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

    def members(
        self, key: bytes, now_ms: int, *, max_bytes: int | None = None, rng: random.Random | None = None
    ) -> list[bytes]:
        """Unexpired member records under ``key``, latest expiry first, within ``max_bytes`` in total.

        When they do not all fit, a random sample that fits is returned (still latest expiry first), so
        repeated lookups of a big swarm meet all of its members, not only the latest to announce.
        ``rng`` draws the sample (a new ``random.Random()`` when not given).
        """
        records = [r for r in self._members.get(key, {}).values() if r.expiry_ms > now_ms]
        if max_bytes is not None and sum(len(r.encode()) + 3 for r in records) > max_bytes:
            (rng or random.Random()).shuffle(records)
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
