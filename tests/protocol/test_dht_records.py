"""Signed DHT records: creation, strict validation, the newer rule, and the bounded record store."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kademlia.utils import digest as stock_digest
from tidings.protocol import LocalProtocolError, RemoteProtocolError, SigningKey, encode
from tidings.protocol.record_store import RecordStore
from tidings.protocol.records import (
    MAX_TTL_MS,
    MemberRecord,
    NodeRecord,
    create_member_record,
    create_node_record,
    decode_record,
    looks_like_record,
    newer,
    node_key,
    swarm_key,
    validate_record,
    validator,
)

ALICE = SigningKey(b"\x01" * 32)
MALLORY = SigningKey(b"\x02" * 32)
NOW = 1_700_000_000_000
HOUR = 3_600_000
TRANSPORT = b"\x09" * 32


def node_record(signer: SigningKey = ALICE, seq: int = 1, expiry: int = NOW + HOUR, **kw: Any) -> NodeRecord:
    return create_node_record(
        signer,
        addresses=kw.get("addresses", [("127.0.0.2", 8468), ("node.example.org", 443)]),
        transport_key=TRANSPORT,
        seq=seq,
        expiry_ms=expiry,
    )


def member(
    signer: SigningKey = ALICE, seq: int = 1, swarm: str = "python", expiry: int = NOW + HOUR
) -> MemberRecord:
    return create_member_record(
        signer, swarm=swarm, addresses=[("127.0.0.2", 8468)], seq=seq, expiry_ms=expiry
    )


def code_of(fn: Any) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        fn()
    return info.value.code


def test_keys_are_the_stock_digest_of_text() -> None:
    assert node_key(ALICE.feed) == stock_digest(str(ALICE.feed))
    assert swarm_key("python") == stock_digest("swarm:python")


def test_records_round_trip_and_validate() -> None:
    record = node_record()
    data = record.encode()
    assert looks_like_record(data)
    assert decode_record(data) == record
    assert validate_record(data, key=node_key(ALICE.feed), now_ms=NOW) == record
    m = member()
    assert validate_record(m.encode(), key=swarm_key("python"), now_ms=NOW) == m
    assert len(data) < 400


def test_forged_signature_is_refused() -> None:
    record = node_record()
    items = [
        "tidings-node/1",
        record.feed,
        [["10.0.0.66", 1]],  # Mallory redirects Alice's address
        record.transport_key,
        record.seq + 1,
        record.expiry_ms,
        record.signature,
    ]
    assert code_of(lambda: validate_record(encode(items), key=record.key, now_ms=NOW)) == "bad_signature"
    # signed by Mallory but claiming Alice's feed
    signed = MALLORY.sign(b"tidings/dht/node-record/v1\x00" + encode([record.feed, *items[2:6]]))
    items[6] = signed
    assert code_of(lambda: validate_record(encode(items), key=record.key, now_ms=NOW)) == "bad_signature"


def test_a_signature_for_one_kind_does_not_pass_for_the_other() -> None:
    m = member()
    node_like = [
        "tidings-node/1",
        m.member,
        [["127.0.0.2", 8468]],
        m.swarm_key + b"\x00" * 12,
        1,
        m.expiry_ms,
        m.signature,
    ]
    assert code_of(lambda: decode_record(encode(node_like))) == "bad_signature"


def test_someone_elses_key_expired_and_too_long_lived_are_refused() -> None:
    data = node_record(MALLORY).encode()
    assert code_of(lambda: validate_record(data, key=node_key(ALICE.feed), now_ms=NOW)) == "wrong_key"
    other_swarm = member(swarm="rust").encode()
    assert code_of(lambda: validate_record(other_swarm, key=swarm_key("python"), now_ms=NOW)) == "wrong_key"
    old = node_record(expiry=NOW).encode()
    assert code_of(lambda: validate_record(old, key=node_key(ALICE.feed), now_ms=NOW)) == "expired"
    eternal = node_record(expiry=NOW + MAX_TTL_MS + 1).encode()
    assert code_of(lambda: validate_record(eternal, key=node_key(ALICE.feed), now_ms=NOW)) == "ttl_too_long"


def test_malformed_and_oversized_records_are_refused() -> None:
    key = node_key(ALICE.feed)
    assert code_of(lambda: validate_record("text", key=key, now_ms=NOW)) == "not_a_record"
    assert code_of(lambda: validate_record(b"\x00" * 2000, key=key, now_ms=NOW)) == "too_large"
    assert code_of(lambda: validate_record(encode(["tidings-node/1"]), key=key, now_ms=NOW)) == "not_a_record"
    non_canonical = b"\x97\xd9\x0etidings-node/1" + node_record().encode()[16:]
    with pytest.raises(RemoteProtocolError):
        validate_record(non_canonical, key=key, now_ms=NOW)
    with pytest.raises(LocalProtocolError):
        node_record(addresses=[("not a host!", 1)])
    with pytest.raises(LocalProtocolError):
        node_record(addresses=[])
    with pytest.raises(LocalProtocolError):
        node_record(seq=0)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_records_never_validate_and_raise_only_remote_errors(data: Any) -> None:
    raw = node_record().encode()
    position = data.draw(st.integers(0, len(raw) - 1))
    flip = data.draw(st.integers(1, 255))
    mutated = raw[:position] + bytes([raw[position] ^ flip]) + raw[position + 1 :]
    with pytest.raises(RemoteProtocolError):
        validate_record(mutated, key=node_key(ALICE.feed), now_ms=NOW)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(RemoteProtocolError):
        validate_record(raw[:cut], key=node_key(ALICE.feed), now_ms=NOW)


def test_newer_rule() -> None:
    a1, a2 = node_record(seq=1), node_record(seq=2)
    assert newer(a2, a1) and not newer(a1, a2) and not newer(a1, a1)
    later = node_record(seq=1, expiry=NOW + 2 * HOUR)
    assert newer(later, a1)


def test_validator_callback() -> None:
    accepts = validator(node_key(ALICE.feed), now_ms=NOW, kind=NodeRecord)
    assert accepts(node_record().encode())
    assert not accepts(node_record(MALLORY).encode())
    assert not accepts(b"junk") and not accepts(5)


# -- RecordStore --------------------------------------------------------------------------------------


def test_store_accepts_only_valid_newer_records() -> None:
    store = RecordStore()
    key = node_key(ALICE.feed)
    assert store.put(key, node_record(seq=2).encode(), NOW).code == "stored"
    assert store.put(key, node_record(seq=1).encode(), NOW).code == "not_newer"  # replayed old version
    assert store.put(key, node_record(seq=2).encode(), NOW).code == "not_newer"
    assert store.put(key, node_record(MALLORY, seq=9).encode(), NOW).code == "wrong_key"
    assert store.put(key, node_record(seq=3, expiry=NOW - 1).encode(), NOW).code == "expired"
    forged = bytearray(node_record(seq=5).encode())
    forged[-1] ^= 1
    assert store.put(key, bytes(forged), NOW).code == "bad_signature"
    assert store.get(key, NOW) == node_record(seq=2).encode()
    assert store.put(key, node_record(seq=3).encode(), NOW).code == "replaced"
    assert store.get(key, NOW) == node_record(seq=3).encode()
    assert len(store) == 1


def test_store_holds_several_members_per_swarm_and_caps_them() -> None:
    store = RecordStore(max_members=3)
    key = swarm_key("python")
    signers = [SigningKey(bytes([i]) * 32) for i in range(10, 15)]
    outcomes = [store.put(key, member(s).encode(), NOW).code for s in signers]
    assert outcomes == ["stored"] * 3 + ["full"] * 2
    assert store.put(key, member(signers[0], seq=2).encode(), NOW).code == "replaced"
    assert store.put(key, member(signers[1], seq=1).encode(), NOW).code == "not_newer"
    records = store.members(key, NOW, rng=random.Random(1))
    assert len(records) == 3 and member(signers[0], seq=2).encode() in records
    assert len(store.members(key, NOW, max_bytes=300, rng=random.Random(1))) == 1
    assert store.get(key, NOW) in records


def test_store_caps_records_and_sizes_and_expires() -> None:
    store = RecordStore(max_records=2, max_value_size=100)
    assert store.put(b"\x01" * 20, b"x" * 101, NOW).code == "too_large"
    signers = [SigningKey(bytes([i]) * 32) for i in range(20, 23)]
    store = RecordStore(max_records=2)
    codes = [
        store.put(node_key(s.feed), node_record(s, expiry=NOW + i + 1).encode(), NOW).code
        for i, s in enumerate(signers)
    ]
    assert codes == ["stored", "stored", "full"]
    assert store.expire(NOW + 1) == 1
    assert len(store) == 1
    assert store.put(node_key(signers[2].feed), node_record(signers[2]).encode(), NOW + 1).code == "stored"
    assert store.get(node_key(signers[1].feed), NOW + 5) is None  # expired on read too
    assert store.expire(NOW + HOUR) == 2 and len(store) == 0


def test_plain_values_from_stock_peers_never_displace_records() -> None:
    store = RecordStore()
    key = node_key(ALICE.feed)
    assert store.put(key, "plain", NOW).code == "stored"
    assert store.put(key, 42, NOW).code == "replaced"  # last writer wins, as in the package
    assert store.get(key, NOW) == 42
    assert store.put(key, node_record().encode(), NOW).code == "stored"
    assert store.get(key, NOW) == node_record().encode()
    assert store.put(key, b"overwrite attempt", NOW).code == "signed_key"
    forged = node_record(MALLORY).encode()
    assert store.put(key, forged, NOW).code == "wrong_key"  # record-shaped bytes are never plain values
    assert len(store) == 1
    assert RecordStore(accept_plain=False).put(key, "x", NOW).code == "plain_refused"
    assert dict(store.items(NOW)) == {key: node_record().encode()}
