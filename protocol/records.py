"""Signed DHT records (sans-IO); ``record_store`` keeps them for others.

Theory of operation. Two kinds of record travel as the bytes ``value`` of ``store``/``announce`` and of
``find_value``/``get_members`` replies, each the canonical encoding (spec/protocol.md §2) of an array:

    node record    ["tidings-node/1",   feed, addresses, transport_key, seq, expiry_ms, signature]
    node record v2 ["tidings-node/2",   feed, addresses, transport_key, relays, seq, expiry_ms, signature]
                   stored under node_key(feed) = digest(text feed id "@..."): one record per key
    member record  ["tidings-member/1", swarm_key, member, addresses, seq, expiry_ms, signature]
                   stored under swarm_key = digest("swarm:" + name): one record per member, several
                   members per key

``addresses`` is ``[[host, port], ...]`` (1..8; host an IP literal or a DNS name), ``transport_key`` the
32-byte X25519 key of the node's Noise handshake, ``relays`` (version 2 only) ``[[relay_feed,
"HOST:PORT"], ...]`` (0..4): relays the node holds a reservation on, through which a node that cannot be
dialled directly is reached; ``seq`` a sequence number the owner raises with every new version,
``expiry_ms`` a wall-clock time (Unix milliseconds). The signature is Ed25519 by ``feed`` (``member``)
over a domain string, a zero byte and the canonical encoding of the other fields; each kind and version
has its own domain, so a signature for one can never pass for another, or for anything else Tidings
signs. ``create_node_record`` writes version 1 when there are no relays (the same bytes as before
version 2 existed) and version 2 otherwise; both decode to ``NodeRecord`` (its ``version`` says which),
and the newer rule compares them alike (spec/protocol.md §13.4).

Keys are ``kademlia.utils.digest`` of text, so a stock ``kademlia`` client can fetch a node record with
``server.get("@...")``. A record is *valid* under a key when it decodes strictly, its signature verifies,
it belongs under that key, it is not expired at ``now_ms`` and does not claim to live longer than
``MAX_TTL_MS``. Between two valid records of the same slot (key, and member for swarms) the newer is
the one with the higher ``seq`` (ties: later expiry, then the larger encoding, so every node picks the
same one).

What a DHT node stores for others, and the rules it stores by, are ``record_store.RecordStore``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .dht_wire import ID_SIZE, Value, digest
from .encoding import decode, encode
from .errors import LocalProtocolError, RemoteProtocolError
from .identity import KEY_SIZE, SIGNATURE_SIZE, FeedId, SigningKey, verify_signature

__all__ = [
    "MAX_ADDRESSES",
    "MAX_RECORD_SIZE",
    "MAX_RELAYS",
    "MAX_RELAY_ADDRESS",
    "MAX_TTL_MS",
    "InvalidRecord",
    "MemberRecord",
    "NodeRecord",
    "Record",
    "create_member_record",
    "create_node_record",
    "decode_record",
    "looks_like_record",
    "newer",
    "node_key",
    "record_items",
    "swarm_key",
    "validate_record",
    "validator",
]

NODE_TAG = "tidings-node/1"
NODE_TAG_V2 = "tidings-node/2"
MEMBER_TAG = "tidings-member/1"
_NODE_DOMAIN = b"tidings/dht/node-record/v1\x00"
_NODE_DOMAIN_V2 = b"tidings/dht/node-record/v2\x00"
_MEMBER_DOMAIN = b"tidings/dht/member-record/v1\x00"
#: Elements of each record array, by tag (spec/protocol.md §13.4).
RECORD_LENGTHS = {NODE_TAG: 7, NODE_TAG_V2: 8, MEMBER_TAG: 7}
MAX_RECORD_SIZE = 1024
MAX_ADDRESSES = 8
#: Relays a version-2 node record lists, and the longest "HOST:PORT" text of one (spec §13.4).
MAX_RELAYS = 4
MAX_RELAY_ADDRESS = 100
#: Longest lifetime a record may claim: owners republish before expiry (48 hours).
MAX_TTL_MS = 48 * 3600 * 1000
MAX_SEQ = 2**53 - 1
_MAX_MS = 2**63 - 1
_HOSTNAME = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*")
_PORT = re.compile(r"[1-9][0-9]{0,4}")
_TAG_HEADS = tuple(encode(tag) for tag in RECORD_LENGTHS)


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


def _good_host(host: object) -> bool:
    """An IP literal in canonical form, or a lowercase DNS name (spec/protocol.md §13.4)."""
    if type(host) is not str or not 1 <= len(host) <= 253:
        return False
    try:
        return str(ipaddress.ip_address(host)) == host
    except ValueError:
        return _HOSTNAME.fullmatch(host) is not None


def _good_relay_address(text: str) -> bool:
    """``HOST:PORT`` with a host as in ``addresses`` (an IPv6 literal in brackets) and a port 1..65535
    written without leading zeros, at most ``MAX_RELAY_ADDRESS`` characters (§13.4)."""
    if not 1 <= len(text) <= MAX_RELAY_ADDRESS:
        return False
    host, sep, port = text.rpartition(":")
    if not sep or _PORT.fullmatch(port) is None or int(port) > 65535:
        return False
    if host.startswith("["):
        inner = host[1:-1] if host.endswith("]") else ""
        return ":" in inner and _good_host(inner)
    return ":" not in host and _good_host(host)


def _check_relays(relays: object) -> None:
    if type(relays) is not tuple or len(relays) > MAX_RELAYS:
        raise _local(f"relays is a tuple of 0..{MAX_RELAYS}", "bad_relay")
    for item in relays:
        if type(item) is not tuple or len(item) != 2:
            raise _local("a relay is (relay feed, address)", "bad_relay")
        feed, address = item
        if type(feed) is not bytes or len(feed) != KEY_SIZE:
            raise _local(f"a relay feed is {KEY_SIZE} bytes", "bad_relay")
        if type(address) is not str or not _good_relay_address(address):
            raise _local(
                f"a relay address is HOST:PORT of at most {MAX_RELAY_ADDRESS} characters", "bad_relay"
            )
    if len({feed for feed, _ in relays}) != len(relays):
        raise _local("relays repeat", "bad_relay")


def _check_addresses(addresses: object) -> None:
    if type(addresses) is not tuple or not 1 <= len(addresses) <= MAX_ADDRESSES:
        raise _local(f"addresses is a tuple of 1..{MAX_ADDRESSES}", "bad_address")
    for item in addresses:
        if type(item) is not tuple or len(item) != 2:
            raise _local("an address is (host, port)", "bad_address")
        host, port = item
        if type(port) is not int or not 1 <= port <= 65535:
            raise _local("port must be 1..65535", "bad_address")
        if not _good_host(host):
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


def _wire_relays(relays: tuple[tuple[bytes, str], ...]) -> list[list[Any]]:
    return [[feed, address] for feed, address in relays]


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeRecord:
    """Where a feed's node can be reached, signed by the feed. Validates its signature on creation.

    ``version`` is 1 (``tidings-node/1``, no relays) or 2 (``tidings-node/2``, 0..4 relays); left at 0
    it is chosen from ``relays``: 2 when there are any, else 1 (spec/protocol.md §13.4).
    """

    feed: bytes
    addresses: tuple[tuple[str, int], ...]
    transport_key: bytes
    seq: int
    expiry_ms: int
    signature: bytes
    relays: tuple[tuple[bytes, str], ...] = ()
    version: int = 0

    def __post_init__(self) -> None:
        _check_key(self.feed, KEY_SIZE, "feed")
        _check_addresses(self.addresses)
        _check_key(self.transport_key, KEY_SIZE, "transport key")
        if self.version == 0:
            object.__setattr__(self, "version", 2 if self.relays else 1)
        if type(self.version) is not int or self.version not in (1, 2):
            raise _local("a node record is version 1 or 2", "bad_version")
        _check_relays(self.relays)
        if self.version == 1 and self.relays:
            raise _local("a version-1 node record lists no relays", "bad_relay")
        _check_common(self.seq, self.expiry_ms, self.signature)
        if not verify_signature(self.feed, self.signature, self.signing_bytes()):
            raise _local("signature does not verify", "bad_signature")

    @property
    def key(self) -> bytes:
        return node_key(FeedId(self.feed))

    @property
    def owner(self) -> bytes:
        return self.feed

    def _fields(self) -> list[Any]:
        """The signed fields, in wire order (version 2 has ``relays`` after the transport key)."""
        fields: list[Any] = [self.feed, _wire_addresses(self.addresses), self.transport_key]
        if self.version == 2:
            fields.append(_wire_relays(self.relays))
        return [*fields, self.seq, self.expiry_ms]

    def signing_bytes(self) -> bytes:
        return (_NODE_DOMAIN_V2 if self.version == 2 else _NODE_DOMAIN) + encode(self._fields())

    def encode(self) -> bytes:
        """The record as a DHT value (canonical bytes)."""
        return encode([NODE_TAG_V2 if self.version == 2 else NODE_TAG, *self._fields(), self.signature])


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
    relays: Sequence[tuple[bytes, str]] = (),
) -> NodeRecord:
    """Sign a node record for ``signer``'s feed: version 1 without ``relays`` (``(relay feed,
    "HOST:PORT")`` pairs), version 2 with them (spec/protocol.md §13.4)."""
    wire_relays = tuple((feed, address) for feed, address in relays)
    fields: list[Any] = [signer.public_key, [[h, p] for h, p in addresses], transport_key]
    if wire_relays:
        fields.append([[feed, address] for feed, address in wire_relays])
    unsigned = encode([*fields, seq, expiry_ms])
    return NodeRecord(
        feed=signer.public_key,
        addresses=_tuple_addresses(addresses),
        transport_key=transport_key,
        seq=seq,
        expiry_ms=expiry_ms,
        signature=signer.sign((_NODE_DOMAIN_V2 if wire_relays else _NODE_DOMAIN) + unsigned),
        relays=wire_relays,
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


def _wire_to_relays(items: object) -> tuple[tuple[bytes, str], ...]:
    if type(items) is not list or len(items) > MAX_RELAYS:
        raise InvalidRecord(f"relays is an array of 0..{MAX_RELAYS}", code="bad_relay")
    pairs = []
    for item in items:
        if type(item) is not list or len(item) != 2:
            raise InvalidRecord("a relay is [relay feed, address]", code="bad_relay")
        pairs.append((item[0], item[1]))
    return tuple(pairs)


def record_items(data: Value) -> list[Any]:
    """The array of a record's encoding, with a known tag and as many elements as that tag has;
    ``InvalidRecord`` (``not_a_record``, ``too_large``) or ``DecodeError`` otherwise."""
    if type(data) is not bytes:
        raise InvalidRecord("a record is bytes", code="not_a_record")
    if len(data) > MAX_RECORD_SIZE:
        raise InvalidRecord(f"record larger than {MAX_RECORD_SIZE} bytes", code="too_large")
    items = decode(data, max_size=MAX_RECORD_SIZE)
    if type(items) is not list or not items or type(items[0]) is not str:
        raise InvalidRecord("not a Tidings record", code="not_a_record")
    if RECORD_LENGTHS.get(items[0]) != len(items):
        raise InvalidRecord("not a Tidings record", code="not_a_record")
    return items


def decode_record(data: Value) -> Record:
    """Decode and verify a record (not its key or expiry: see ``validate_record``).

    Raises ``RemoteProtocolError`` (``InvalidRecord`` or ``DecodeError``) on anything else.
    """
    items = record_items(data)
    try:
        if items[0] == NODE_TAG_V2:
            _, feed, addresses, transport_key, relays, seq, expiry_ms, signature = items
            return NodeRecord(
                feed=feed,
                addresses=_wire_to_addresses(addresses),
                transport_key=transport_key,
                relays=_wire_to_relays(relays),
                seq=seq,
                expiry_ms=expiry_ms,
                signature=signature,
                version=2,
            )
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
    """True when ``a`` supersedes ``b`` (same slot): higher seq, then later expiry, then larger bytes.

    Node records of versions 1 and 2 compare alike: the version is no part of the rule (§13.4)."""
    return (a.seq, a.expiry_ms, a.encode()) > (b.seq, b.expiry_ms, b.encode())
