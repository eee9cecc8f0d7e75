"""The DHT record vectors of spec/protocol.md §13.4 (``records.json``), for ``make_vectors.py``.

Node records of version 1 and 2 and a member record, and invalid records that each break one rule of
§13.4. The invalid ones are signed over exactly the fields they carry (``sign_node``), so the only rule
they break is the one named, never the signature by accident.
"""

from __future__ import annotations

import hashlib
from typing import Any

from tidings.protocol import SigningKey, encode
from tidings.protocol.records import (
    MemberRecord,
    NodeRecord,
    create_member_record,
    create_node_record,
    decode_record,
    node_key,
)

BASE_TS = 1_700_000_000_000  # as in make_vectors.py (spec §1.2)
#: The time the vectors are judged at: an hour before ``BASE_TS``, so records expiring then are valid.
NOW_MS = BASE_TS - 3_600_000
V1_DOMAIN = b"tidings/dht/node-record/v1\x00"
V2_DOMAIN = b"tidings/dht/node-record/v2\x00"
MEMBER_DOMAIN = b"tidings/dht/member-record/v1\x00"
TRANSPORT = bytes(32)


def _seed(label: str) -> bytes:
    return hashlib.blake2b(b"tidings/vectors/" + label.encode(), digest_size=32).digest()


def sign_node(key: SigningKey, tag: str, fields: list[Any], domain: bytes | None = None) -> bytes:
    """The canonical bytes ``[tag, *fields, signature]``, the signature by ``key`` over ``domain`` (by
    default the one of ``tag``) and the fields, whatever they hold."""
    if domain is None:
        domain = V2_DOMAIN if tag == "tidings-node/2" else V1_DOMAIN
    return encode([tag, *fields, key.sign(domain + encode(fields))])


def _node_vector(name: str, record: NodeRecord) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "node",
        "record": record.encode().hex(),
        "key": record.key.hex(),
        "now_ms": NOW_MS,
        "version": record.version,
        "feed": record.feed.hex(),
        "addresses": [[host, port] for host, port in record.addresses],
        "transport_key": record.transport_key.hex(),
        "relays": [[feed.hex(), address] for feed, address in record.relays],
        "seq": record.seq,
        "expiry_ms": record.expiry_ms,
        "signing_bytes": record.signing_bytes().hex(),
    }


def _member_vector(name: str, record: MemberRecord) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "member",
        "record": record.encode().hex(),
        "key": record.key.hex(),
        "now_ms": NOW_MS,
        "member": record.member.hex(),
        "addresses": [[host, port] for host, port in record.addresses],
        "seq": record.seq,
        "expiry_ms": record.expiry_ms,
        "signing_bytes": record.signing_bytes().hex(),
    }


def records_doc() -> dict[str, Any]:
    """The document of ``records.json``."""
    owner = SigningKey(bytes(range(32)))  # the feed of the example in §13.4
    other = SigningKey(_seed("records-other"))
    relay_a, relay_b = SigningKey(_seed("relay-a")).public_key, SigningKey(_seed("relay-b")).public_key
    addresses = [["192.0.2.1", 7433]]
    expiry = BASE_TS
    v1 = create_node_record(
        owner, addresses=[("192.0.2.1", 7433)], transport_key=TRANSPORT, seq=1, expiry_ms=expiry
    )
    relays = [(relay_a, "198.51.100.7:7433"), (relay_b, "[2001:db8::7]:443")]
    v2 = create_node_record(
        owner,
        addresses=[("192.0.2.1", 7433)],
        transport_key=TRANSPORT,
        seq=2,
        expiry_ms=expiry,
        relays=relays,
    )
    v2_dns = create_node_record(
        owner,
        addresses=[("192.0.2.1", 7433), ("node.example.org", 7433)],
        transport_key=TRANSPORT,
        seq=3,
        expiry_ms=expiry,
        relays=[(relay_a, "relay.example.org:7433")],
    )
    empty_v2 = decode_record(
        sign_node(owner, "tidings-node/2", [owner.public_key, addresses, TRANSPORT, [], 4, expiry])
    )
    assert isinstance(empty_v2, NodeRecord)
    member = create_member_record(
        owner, swarm="gardening", addresses=[("192.0.2.1", 7433)], seq=1, expiry_ms=expiry
    )

    def v2_with(relay_list: Any, key: SigningKey = owner, **kw: Any) -> bytes:
        fields = [key.public_key, addresses, TRANSPORT, relay_list, 2, kw.get("expiry", expiry)]
        return sign_node(key, "tidings-node/2", fields, kw.get("domain"))

    v1_fields = [owner.public_key, addresses, TRANSPORT, 1, expiry]
    v2_fields = [owner.public_key, addresses, TRANSPORT, [], 2, expiry]
    v1_sig_on_v2 = encode(["tidings-node/2", *v2_fields, v1.signature])
    key = node_key(owner.feed)
    cases: list[tuple[str, bytes, bytes, str, str]] = [
        ("relay feed of 31 bytes", v2_with([[relay_a[:31], "198.51.100.7:7433"]]), key, "§13.4", "bad_relay"),
        (
            "relay feed of 33 bytes",
            v2_with([[relay_a + b"\x00", "198.51.100.7:7433"]]),
            key,
            "§13.4",
            "bad_relay",
        ),
        ("relay feed as text", v2_with([[relay_a.hex(), "198.51.100.7:7433"]]), key, "§13.4", "bad_relay"),
        (
            "five relays",
            v2_with(
                [[SigningKey(_seed(f"relay-{i}")).public_key, f"198.51.100.{i + 1}:7433"] for i in range(5)]
            ),
            key,
            "§13.4",
            "bad_relay",
        ),
        ("relays as a map", v2_with({"198.51.100.7:7433": relay_a}), key, "§13.4", "bad_relay"),
        ("a relay of three elements", v2_with([[relay_a, "198.51.100.7", 7433]]), key, "§13.4", "bad_relay"),
        ("a relay address as bytes", v2_with([[relay_a, b"198.51.100.7:7433"]]), key, "§13.4", "bad_relay"),
        (
            "a relay address of 101 characters",
            v2_with([[relay_a, "a" * 63 + "." + "b" * 32 + ":7433"]]),
            key,
            "§13.4",
            "bad_relay",
        ),
        ("a relay address without a port", v2_with([[relay_a, "198.51.100.7"]]), key, "§13.4", "bad_relay"),
        ("a relay port 0", v2_with([[relay_a, "198.51.100.7:0"]]), key, "§13.4", "bad_relay"),
        ("a relay port 65536", v2_with([[relay_a, "198.51.100.7:65536"]]), key, "§13.4", "bad_relay"),
        (
            "a relay port with a leading zero",
            v2_with([[relay_a, "198.51.100.7:07433"]]),
            key,
            "§13.4",
            "bad_relay",
        ),
        (
            "a relay IPv6 host without brackets",
            v2_with([[relay_a, "2001:db8::7:443"]]),
            key,
            "§13.4",
            "bad_relay",
        ),
        (
            "a relay IP not in canonical form",
            v2_with([[relay_a, "[2001:DB8::7]:443"]]),
            key,
            "§13.4",
            "bad_relay",
        ),
        (
            "a relay host in capitals",
            v2_with([[relay_a, "Relay.example.org:7433"]]),
            key,
            "§13.4",
            "bad_relay",
        ),
        (
            "the same relay twice",
            v2_with([[relay_a, "198.51.100.7:7433"], [relay_a, "198.51.100.8:7433"]]),
            key,
            "§13.4",
            "bad_relay",
        ),
        (
            "version 2 tag with the 7 fields of version 1",
            sign_node(owner, "tidings-node/2", v1_fields),
            key,
            "§13.4",
            "not_a_record",
        ),
        (
            "version 1 tag with the 8 fields of version 2",
            sign_node(owner, "tidings-node/1", v2_fields),
            key,
            "§13.4",
            "not_a_record",
        ),
        (
            "version 2 signed with the version 1 domain",
            v2_with([[relay_a, "198.51.100.7:7433"]], domain=V1_DOMAIN),
            key,
            "§13.4",
            "bad_signature",
        ),
        ("version 2 carrying a version 1 signature", v1_sig_on_v2, key, "§13.4", "bad_signature"),
        (
            "version 1 signed with the version 2 domain",
            sign_node(owner, "tidings-node/1", v1_fields, V2_DOMAIN),
            key,
            "§13.4",
            "bad_signature",
        ),
        (
            "version 2 signed with the member domain",
            v2_with([], domain=MEMBER_DOMAIN),
            key,
            "§13.4",
            "bad_signature",
        ),
        (
            "version 2 of one feed signed by another",
            encode(["tidings-node/2", *v2_fields, other.sign(V2_DOMAIN + encode(v2_fields))]),
            key,
            "§13.4",
            "bad_signature",
        ),
        ("version 2 under another feed's key", v2.encode(), node_key(other.feed), "§13.4", "wrong_key"),
        ("version 2 expired", v2_with([], expiry=NOW_MS), key, "§13.4", "expired"),
        (
            "version 2 living too long",
            v2_with([], expiry=NOW_MS + 48 * 3_600_000 + 1),
            key,
            "§13.4",
            "ttl_too_long",
        ),
        (
            "version 1 address not canonical",
            sign_node(
                owner, "tidings-node/1", [owner.public_key, [["2001:DB8::1", 7433]], TRANSPORT, 1, expiry]
            ),
            key,
            "§13.4",
            "bad_address",
        ),
    ]
    return {
        "spec": "spec/protocol.md §13.4",
        "generator": "spec/make_vectors.py",
        "format": (
            "valid: validate_record(record, key, now_ms) succeeds; kind is node or member; the fields are "
            "those listed (bytes as hex; relays as [relay feed, HOST:PORT]); signing_bytes are the bytes "
            "the signature covers; encoding the record gives record again. invalid: validate_record(record, "
            "key, now_ms) fails with code. Every invalid record is signed by its feed over the fields it "
            "carries, except where the name says otherwise."
        ),
        "valid": [
            _node_vector("version 1, the example of §13.4", v1),
            _node_vector("version 2 with two relays (IPv4 and IPv6)", v2),
            _node_vector("version 2 with a relay named by DNS, two addresses", v2_dns),
            _node_vector("version 2 with no relays", empty_v2),
            _member_vector("member record of the swarm gardening", member),
        ],
        "invalid": [
            {"name": n, "record": raw.hex(), "key": k.hex(), "now_ms": NOW_MS, "rule": r, "code": c}
            for n, raw, k, r, c in cases
        ],
    }
