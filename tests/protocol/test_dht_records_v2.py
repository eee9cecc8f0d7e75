"""Node records of version 2 (relays): round trip, refusals, domains, and the newer rule across versions
(spec/protocol.md §13.4)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tidings.protocol import LocalProtocolError, RemoteProtocolError, SigningKey, encode
from tidings.protocol.record_admission import peek_record
from tidings.protocol.record_store import RecordStore
from tidings.protocol.records import (
    MAX_RELAYS,
    NodeRecord,
    create_node_record,
    decode_record,
    looks_like_record,
    newer,
    node_key,
    validate_record,
    validator,
)

ALICE = SigningKey(b"\x01" * 32)
MALLORY = SigningKey(b"\x02" * 32)
NOW = 1_700_000_000_000
HOUR = 3_600_000
TRANSPORT = b"\x09" * 32
RELAY = b"\x07" * 32
ADDRESSES = [["192.0.2.1", 7433]]
V1 = b"tidings/dht/node-record/v1\x00"
V2 = b"tidings/dht/node-record/v2\x00"
MEMBER = b"tidings/dht/member-record/v1\x00"
KEY = node_key(ALICE.feed)


def record(relays: Any = (), seq: int = 1, signer: SigningKey = ALICE) -> NodeRecord:
    return create_node_record(
        signer,
        addresses=[("192.0.2.1", 7433)],
        transport_key=TRANSPORT,
        seq=seq,
        expiry_ms=NOW + HOUR,
        relays=relays,
    )


def signed_v2(
    relays: Any, *, domain: bytes = V2, signer: SigningKey = ALICE, tag: str = "tidings-node/2", seq: int = 1
) -> bytes:
    """A version-2 record of Alice's carrying ``relays`` as given, signed over exactly those fields."""
    fields = [ALICE.public_key, ADDRESSES, TRANSPORT, relays, seq, NOW + HOUR]
    return encode([tag, *fields, signer.sign(domain + encode(fields))])


def code_of(data: bytes) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        validate_record(data, key=KEY, now_ms=NOW)
    return info.value.code


# -- round trip -------------------------------------------------------------------------------------------

_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_ipv4 = st.ip_addresses(v=4).map(str)
_ipv6 = st.ip_addresses(v=6).map(lambda ip: f"[{ip}]")
_dns = st.lists(_label, min_size=1, max_size=4).map(".".join)
_port = st.integers(1, 65535).map(str)
_relay_address = st.tuples(st.one_of(_ipv4, _ipv6, _dns), _port).map(":".join).filter(lambda t: len(t) <= 100)
_relays = st.lists(
    st.tuples(st.binary(min_size=32, max_size=32), _relay_address),
    max_size=MAX_RELAYS,
    unique_by=lambda pair: pair[0],
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(relays=_relays, seq=st.integers(1, 2**53 - 1))
def test_node_records_round_trip_in_both_versions(relays: list[tuple[bytes, str]], seq: int) -> None:
    made = record(relays, seq=seq)
    data = made.encode()
    assert made.version == (2 if relays else 1)
    assert made.relays == tuple(relays)
    assert looks_like_record(data)
    assert decode_record(data) == made
    assert validate_record(data, key=KEY, now_ms=NOW) == made
    assert validator(KEY, now_ms=NOW, kind=NodeRecord)(data)
    head = peek_record(data, key=KEY, now_ms=NOW)
    assert (head.seq, head.expiry_ms, head.owner, head.member) == (seq, NOW + HOUR, ALICE.public_key, False)


def test_without_relays_the_record_is_version_1_as_before() -> None:
    plain = record()
    assert plain.version == 1 and plain.relays == ()
    assert plain.encode()[1:16] == encode("tidings-node/1")
    assert plain.signing_bytes().startswith(V1)
    # the same fields as a version-1 record made without the relays argument at all
    before = create_node_record(
        ALICE, addresses=[("192.0.2.1", 7433)], transport_key=TRANSPORT, seq=1, expiry_ms=NOW + HOUR
    )
    assert before.encode() == plain.encode()


def test_a_version_2_record_may_list_no_relays() -> None:
    data = signed_v2([])
    made = decode_record(data)
    assert isinstance(made, NodeRecord) and made.version == 2 and made.relays == ()
    assert made.encode() == data
    assert made != decode_record(record().encode())  # not the version-1 record of the same fields


def test_mutated_version_2_records_never_validate() -> None:
    raw = record([(RELAY, "198.51.100.7:7433")]).encode()
    for position in range(len(raw)):
        mutated = raw[:position] + bytes([raw[position] ^ 0x01]) + raw[position + 1 :]
        with pytest.raises(RemoteProtocolError):
            validate_record(mutated, key=KEY, now_ms=NOW)
        with pytest.raises(RemoteProtocolError):
            validate_record(raw[:position], key=KEY, now_ms=NOW)


# -- refusals ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 31, 33, 64])
def test_a_relay_feed_of_another_size_is_refused(size: int) -> None:
    assert code_of(signed_v2([[b"\x07" * size, "198.51.100.7:7433"]])) == "bad_relay"
    with pytest.raises(LocalProtocolError) as info:
        record([(b"\x07" * size, "198.51.100.7:7433")])
    assert info.value.code == "bad_relay"


def test_five_relays_are_refused() -> None:
    five = [[bytes([i]) * 32, f"198.51.100.{i}:7433"] for i in range(1, 6)]
    assert code_of(signed_v2(five)) == "bad_relay"
    assert validate_record(signed_v2(five[:4]), key=KEY, now_ms=NOW).relays[3][1] == "198.51.100.4:7433"
    with pytest.raises(LocalProtocolError):
        record([(bytes([i]) * 32, f"198.51.100.{i}:7433") for i in range(1, 6)])


@pytest.mark.parametrize(
    "relays",
    [
        {"198.51.100.7:7433": RELAY},  # a map, not an array
        "198.51.100.7:7433",
        RELAY,
        [RELAY, "198.51.100.7:7433"],  # one relay, not wrapped in the array of relays
        [[RELAY]],
        [[RELAY, "198.51.100.7", 7433]],
        [(RELAY.hex(), "198.51.100.7:7433")],
        [[RELAY, b"198.51.100.7:7433"]],
        [[RELAY, 7433]],
        [[RELAY, None]],
        [[RELAY, ""]],
        [[RELAY, "198.51.100.7"]],
        [[RELAY, "198.51.100.7:"]],
        [[RELAY, ":7433"]],
        [[RELAY, "198.51.100.7:0"]],
        [[RELAY, "198.51.100.7:65536"]],
        [[RELAY, "198.51.100.7:07433"]],
        [[RELAY, "198.51.100.7:+7433"]],
        [[RELAY, "198.51.100.7:7433 "]],
        [[RELAY, "2001:db8::7:443"]],  # IPv6 without brackets
        [[RELAY, "[2001:DB8::7]:443"]],  # not canonical
        [[RELAY, "[198.51.100.7]:443"]],  # brackets are for IPv6
        [[RELAY, "[2001:db8::7:443"]],
        [[RELAY, "Relay.example.org:443"]],
        [[RELAY, "relay_1.example.org:443"]],
        [[RELAY, "a" * 63 + "." + "b" * 32 + ":7433"]],  # 101 characters
        [[RELAY, "198.51.100.7:7433"], [RELAY, "198.51.100.8:7433"]],  # one relay twice
    ],
)
def test_bad_relays_are_refused(relays: Any) -> None:
    assert code_of(signed_v2(relays)) == "bad_relay"


def test_a_relay_address_of_100_characters_is_fine() -> None:
    address = "a" * 63 + "." + "b" * 31 + ":7433"
    assert len(address) == 100
    assert validate_record(signed_v2([[RELAY, address]]), key=KEY, now_ms=NOW).relays == ((RELAY, address),)


def test_a_version_1_record_cannot_carry_relays() -> None:
    plain = record()
    with pytest.raises(LocalProtocolError) as info:
        NodeRecord(
            feed=plain.feed,
            addresses=plain.addresses,
            transport_key=plain.transport_key,
            seq=plain.seq,
            expiry_ms=plain.expiry_ms,
            signature=plain.signature,
            relays=((RELAY, "198.51.100.7:7433"),),
            version=1,
        )
    assert info.value.code == "bad_relay"
    with pytest.raises(LocalProtocolError) as info:
        NodeRecord(
            feed=plain.feed,
            addresses=plain.addresses,
            transport_key=plain.transport_key,
            seq=plain.seq,
            expiry_ms=plain.expiry_ms,
            signature=plain.signature,
            version=3,
        )
    assert info.value.code == "bad_version"


def test_the_array_must_be_as_long_as_its_tag_says() -> None:
    v1_fields = [ALICE.public_key, ADDRESSES, TRANSPORT, 1, NOW + HOUR]
    as_v2 = encode(["tidings-node/2", *v1_fields, ALICE.sign(V2 + encode(v1_fields))])
    assert code_of(as_v2) == "not_a_record"
    assert code_of(signed_v2([], domain=V1, tag="tidings-node/1")) == "not_a_record"
    assert code_of(encode(["tidings-node/3", *v1_fields, bytes(64)])) == "not_a_record"
    assert code_of(encode([["tidings-node/2"], 1, 2, 3, 4, 5, 6, 7])) == "not_a_record"
    assert code_of(encode([])) == "not_a_record"


# -- domains ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("domain", [V1, MEMBER, b"tidings/dht/node-record/v2", b"", b"tidings/entry/v1\x00"])
def test_a_signature_over_another_domain_does_not_pass(domain: bytes) -> None:
    assert code_of(signed_v2([[RELAY, "198.51.100.7:7433"]], domain=domain)) == "bad_signature"


def test_signatures_do_not_cross_versions() -> None:
    v1 = record()
    # the version-1 signature on the version-2 form of the same fields (no relays)
    fields = [ALICE.public_key, ADDRESSES, TRANSPORT, [], 1, NOW + HOUR]
    assert code_of(encode(["tidings-node/2", *fields, v1.signature])) == "bad_signature"
    # a version-2 signature (no relays) on the version-1 form
    v2 = decode_record(signed_v2([]))
    v1_form = [ALICE.public_key, ADDRESSES, TRANSPORT, 1, NOW + HOUR]
    assert code_of(encode(["tidings-node/1", *v1_form, v2.signature])) == "bad_signature"


def test_a_version_2_record_signed_by_another_feed_does_not_pass() -> None:
    assert code_of(signed_v2([[RELAY, "198.51.100.7:7433"]], signer=MALLORY)) == "bad_signature"
    with pytest.raises(RemoteProtocolError) as info:
        validate_record(record([(RELAY, "198.51.100.7:7433")], signer=MALLORY).encode(), key=KEY, now_ms=NOW)
    assert info.value.code == "wrong_key"


# -- newer and the store -----------------------------------------------------------------------------------


def test_newer_compares_versions_alike() -> None:
    v1_old, v2_new = record(seq=1), record([(RELAY, "198.51.100.7:7433")], seq=2)
    assert newer(v2_new, v1_old) and not newer(v1_old, v2_new)
    v1_newer = record(seq=3)
    assert newer(v1_newer, v2_new)  # dropping the relays is a newer version too


def test_the_store_moves_between_versions_by_seq() -> None:
    store = RecordStore()
    v1, v2, v1_again = record(seq=1), record([(RELAY, "198.51.100.7:7433")], seq=2), record(seq=3)
    assert store.put(KEY, v1.encode(), NOW).code == "stored"
    assert store.put(KEY, v2.encode(), NOW).code == "replaced"
    assert store.get(KEY, NOW) == v2.encode()
    assert store.put(KEY, v1.encode(), NOW).code == "not_newer"
    assert store.put(KEY, v1_again.encode(), NOW).code == "replaced"
    forged = signed_v2([[RELAY, "10.6.6.6:1"]], signer=MALLORY, seq=9)
    assert store.put(KEY, forged, NOW).code == "bad_signature"
    assert store.get(KEY, NOW) == v1_again.encode()
