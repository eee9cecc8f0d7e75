"""Example-based tests of the sans-IO protocol core (spec/protocol.md §2–§8)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pytest
from tidings.protocol import (
    MAX_ENTRY_SIZE,
    MAX_PAYLOAD_SIZE,
    Block,
    Content,
    DecodeError,
    Delete,
    Entry,
    EntryId,
    FeedId,
    Follow,
    ForkProof,
    InvalidContent,
    InvalidEntry,
    LocalProtocolError,
    Post,
    Profile,
    ProtocolError,
    Reaction,
    RemoteProtocolError,
    Repost,
    SigningKey,
    Unblock,
    Unfollow,
    Unknown,
    check_fork,
    create_entry,
    decode,
    decode_content,
    encode,
    encode_content,
    lipmaa,
    path_to_first,
    signature_ok,
    skip_target,
    type_of,
    verify_entry,
    verify_links,
    verify_payload,
    verify_signature,
)
from tidings.protocol.lipmaa import certificate_pool

ALICE = SigningKey(b"\x01" * 32)
BOB = SigningKey(b"\x02" * 32)
TS = 1_700_000_000_000
REF = bytes(range(32))


def code_of(action: Any) -> str:
    with pytest.raises(ProtocolError) as info:
        action()
    return info.value.code


def make_log(key: SigningKey, length: int, *, start_ts: int = TS) -> list[tuple[Entry, bytes]]:
    log: list[tuple[Entry, bytes]] = []
    for seq in range(1, length + 1):
        payload = encode_content(Post(text=f"{key.feed} #{seq}"))
        target = skip_target(seq)
        log.append(
            (
                create_entry(
                    key,
                    seq=seq,
                    backlink=log[-1][0].hash if log else None,
                    skiplink=log[target - 1][0].hash if target is not None else None,
                    timestamp=start_ts + 1000 * seq,
                    payload=payload,
                ),
                payload,
            )
        )
    return log


LOG = make_log(ALICE, 130)


def at(seq: int) -> Entry:
    return LOG[seq - 1][0]


# -- §2 encoding --------------------------------------------------------------------------------------------


def test_encode_examples_from_the_spec() -> None:
    assert encode(1).hex() == "01"
    assert encode(-33).hex() == "d0df"
    assert encode(128).hex() == "cc80"
    assert encode(b"").hex() == "c400"
    assert encode({"b": 1, "a": None}).hex() == "82a161c0a16201"
    assert encode([1, "x"]).hex() == "9201a178"
    assert encode((1, "x")) == encode([1, "x"])


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (1.5, "bad_type"),
        (bytearray(b"x"), "bad_type"),
        ({1, 2}, "bad_type"),
        (2**64, "int_range"),
        (-(2**63) - 1, "int_range"),
        ({1: "x"}, "bad_key"),
        ({b"k": "x"}, "bad_key"),
        ("\ud800", "bad_utf8"),
        ({"\udfff": 1}, "bad_utf8"),
        ([[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]], "too_deep"),
    ],
)
def test_encode_refuses_values_outside_the_data_model(value: Any, code: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        encode(value)
    assert info.value.code == code


def test_decode_accepts_bytes_like_and_refuses_other_types() -> None:
    assert decode(bytearray(b"\x01")) == 1
    assert decode(memoryview(b"\x91\x01")) == [1]
    assert code_of(lambda: decode("01")) == "bad_type"  # type: ignore[arg-type]


def test_decode_size_limit() -> None:
    data = encode("x" * 100)
    assert decode(data, max_size=len(data)) == "x" * 100
    assert code_of(lambda: decode(data, max_size=len(data) - 1)) == "too_large"


def test_error_classes_and_str() -> None:
    with pytest.raises(DecodeError) as info:
        decode(b"\x01\x02")
    assert isinstance(info.value, RemoteProtocolError)
    assert str(info.value).endswith("[trailing_bytes]")
    assert not issubclass(LocalProtocolError, RemoteProtocolError)


# -- §3 ids -------------------------------------------------------------------------------------------------


def test_feed_id_text_form() -> None:
    text = str(ALICE.feed)
    assert text.startswith("@") and len(text) == 53
    assert text == text.lower() and "=" not in text
    assert text[-1] in "aq"  # the 4 unused bits of the last character are zero (spec §3.1)
    assert FeedId.parse(text) == ALICE.feed
    assert FeedId.parse(text).key == ALICE.public_key


def test_entry_id_text_form() -> None:
    entry = at(1)
    text = str(entry.id)
    assert text.startswith("%") and len(text) == 53
    assert EntryId.parse(text).hash == entry.hash


@pytest.mark.parametrize(
    "text",
    [
        "",
        "@",
        str(ALICE.feed)[1:],
        "%" + str(ALICE.feed)[1:],
        str(ALICE.feed).upper(),
        str(ALICE.feed) + " ",
        str(ALICE.feed)[:-1],
        str(ALICE.feed) + "a",
        str(ALICE.feed)[:-1] + "b",
        str(ALICE.feed)[:-4] + "====",
        str(ALICE.feed)[:10] + "0" + str(ALICE.feed)[11:],
        "@" + "ß" * 8 + str(ALICE.feed)[17:],
    ],
)
def test_feed_id_parse_errors(text: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        FeedId.parse(text)
    assert info.value.code == "bad_id"


def test_id_parse_refuses_non_text_and_constructors_check_length() -> None:
    assert code_of(lambda: FeedId.parse(None)) == "bad_id"  # type: ignore[arg-type]
    assert code_of(lambda: EntryId.parse("@" + str(at(1).id)[1:])) == "bad_id"
    with pytest.raises(LocalProtocolError):
        FeedId(b"short")
    with pytest.raises(LocalProtocolError):
        EntryId(bytes(33))


def test_signing_key() -> None:
    assert SigningKey(b"\x01" * 32).public_key == ALICE.public_key
    assert ALICE.seed == b"\x01" * 32
    assert "\\x01" not in repr(ALICE) and str(ALICE.feed) in repr(ALICE)
    assert code_of(lambda: SigningKey(b"\x01" * 31)) == "bad_seed"


# -- §4, §5 entries -----------------------------------------------------------------------------------------


def test_a_chain_with_lipmaa_links_verifies() -> None:
    for entry, payload in LOG:
        previous = at(entry.seq - 1) if entry.seq > 1 else None
        target = skip_target(entry.seq)
        skip = at(target) if target is not None else None
        assert (entry.skiplink is None) == (target is None)
        verify_entry(Entry.decode(entry.raw), previous=previous, skip=skip, payload=payload)
        assert signature_ok(entry)
        assert len(entry.raw) <= MAX_ENTRY_SIZE


def test_certificate_path_ties_an_entry_to_seq_1() -> None:
    """Only the entries of path_to_first(n) are needed to tie n to the first entry (spec §6.3)."""
    n = 121
    pool = {seq: at(seq) for seq in certificate_pool(n)}
    assert len(pool) == 5
    for seq in path_to_first(n)[:-1]:
        target = lipmaa(seq)
        entry = pool[seq]
        verify_signature(entry)
        if skip_target(seq) is None:
            verify_links(entry, previous=pool[target])
        else:
            verify_links(entry, skip=pool[target])
    assert pool[1].backlink is None


def test_fields_and_forms_of_an_entry() -> None:
    entry = at(13)
    assert entry.backlink == at(12).hash
    assert entry.skiplink == at(4).hash
    assert entry.feed == ALICE.feed
    assert entry.signing_bytes().startswith(b"tidings/entry/v1\x00")
    assert Entry.decode(entry.raw) == entry


def test_create_entry_refuses_misuse() -> None:
    too_big = bytes(MAX_PAYLOAD_SIZE + 1)
    with pytest.raises(LocalProtocolError) as info:
        create_entry(ALICE, seq=1, backlink=None, skiplink=None, timestamp=TS, payload=too_big)
    assert info.value.code == "payload_too_large"
    for seq, backlink, skiplink, code in [
        (0, None, None, "bad_seq"),
        (1, REF, None, "bad_backlink"),
        (2, None, None, "bad_backlink"),
        (5, REF, REF, "bad_skiplink"),
        (4, REF, None, "bad_skiplink"),
    ]:
        with pytest.raises(LocalProtocolError) as info:
            create_entry(ALICE, seq=seq, backlink=backlink, skiplink=skiplink, timestamp=TS, payload=b"")
        assert info.value.code == code
    assert create_entry(
        ALICE, seq=1, backlink=None, skiplink=None, timestamp=TS, payload=bytes(MAX_PAYLOAD_SIZE)
    )


def test_entry_constructor_checks_structure() -> None:
    fields: dict[str, Any] = {
        "version": 1,
        "author": ALICE.public_key,
        "seq": 1,
        "backlink": None,
        "skiplink": None,
        "timestamp": TS,
        "payload_hash": REF,
        "payload_size": 0,
        "signature": bytes(64),
    }
    Entry(**fields)  # structurally fine (the signature is checked by §5, not here)
    for change, code in [
        ({"version": True}, "unknown_version"),
        ({"version": 2}, "unknown_version"),
        ({"author": bytes(31)}, "bad_author"),
        ({"seq": 2**53}, "bad_seq"),
        ({"timestamp": -1}, "bad_timestamp"),
        ({"payload_hash": "x"}, "bad_payload_hash"),
        ({"payload_size": MAX_PAYLOAD_SIZE + 1}, "bad_payload_size"),
        ({"signature": bytes(65)}, "bad_signature_field"),
    ]:
        with pytest.raises(InvalidEntry) as info:
            Entry(**{**fields, **change})
        assert info.value.code == code


def test_link_checks() -> None:
    entry = at(13)
    assert code_of(lambda: verify_links(entry, previous=at(11))) == "bad_backlink"
    assert code_of(lambda: verify_links(entry, skip=at(5))) == "bad_skiplink"
    verify_links(at(5), skip=at(1))  # seq 5 has no skip link, so a given skip entry is not checked
    bob_log = make_log(BOB, 2)
    assert code_of(lambda: verify_links(entry, previous=bob_log[1][0])) == "author_mismatch"
    verify_links(entry)  # nothing known: nothing to check


def test_timestamps_must_not_go_backwards() -> None:
    previous = at(LOG[-1][0].seq)
    same_time = create_entry(
        ALICE,
        seq=previous.seq + 1,
        backlink=previous.hash,
        skiplink=None,
        timestamp=previous.timestamp,
        payload=b"",
    )
    assert skip_target(same_time.seq) is None
    verify_entry(same_time, previous=previous)  # equal timestamps are allowed (spec §5.3)
    earlier = create_entry(
        ALICE,
        seq=previous.seq + 1,
        backlink=previous.hash,
        skiplink=None,
        timestamp=previous.timestamp - 1,
        payload=b"",
    )
    assert code_of(lambda: verify_entry(earlier, previous=previous)) == "timestamp_order"


def test_payload_checks() -> None:
    entry, payload = LOG[6]
    verify_payload(entry, payload)
    assert code_of(lambda: verify_payload(entry, payload + b"\x00")) == "payload_size"
    assert code_of(lambda: verify_payload(entry, payload[:-1] + b"\x00")) == "payload_hash"


def test_signature_of_a_tampered_entry_fails() -> None:
    entry = at(3)
    forged = Entry(
        version=1,
        author=entry.author,
        seq=entry.seq,
        backlink=entry.backlink,
        skiplink=entry.skiplink,
        timestamp=entry.timestamp + 1,
        payload_hash=entry.payload_hash,
        payload_size=entry.payload_size,
        signature=entry.signature,
    )
    assert not signature_ok(forged)
    assert code_of(lambda: verify_signature(forged)) == "bad_signature"


def test_entry_size_limit_is_checked_before_parsing() -> None:
    assert code_of(lambda: Entry.decode(b"\xc0" * (MAX_ENTRY_SIZE + 1))) == "too_large"


# -- §6 lipmaa ----------------------------------------------------------------------------------------------


def test_lipmaa_first_values() -> None:
    expected = [0, 1, 2, 1, 4, 5, 6, 4, 8, 9, 10, 8, 4, 13, 14, 15, 13, 17, 18, 19, 17, 21, 22, 23, 21, 13]
    assert [lipmaa(n) for n in range(1, 27)] == expected
    assert [lipmaa(n) for n in (4, 13, 40, 121, 364, 1093)] == [1, 4, 13, 40, 121, 364]
    assert skip_target(1) is None and skip_target(2) is None and skip_target(4) == 1


def test_lipmaa_refuses_seq_below_1() -> None:
    assert code_of(lambda: lipmaa(0)) == "bad_seq"
    assert code_of(lambda: lipmaa(-5)) == "bad_seq"


def test_path_to_first_is_a_shortest_path() -> None:
    """No path through backlinks and skip links is shorter (spec §6.3)."""
    limit = 2000
    hops = [0, 0] + [0] * (limit - 1)
    for n in range(2, limit + 1):
        hops[n] = 1 + min(hops[n - 1], hops[lipmaa(n)])
        assert len(path_to_first(n)) - 1 == hops[n], n


# -- §7 forks -----------------------------------------------------------------------------------------------


def _fork_of(entry: Entry) -> Entry:
    return create_entry(
        ALICE,
        seq=entry.seq,
        backlink=entry.backlink,
        skiplink=entry.skiplink,
        timestamp=entry.timestamp,
        payload=encode_content(Post(text="another branch")),
    )


def test_fork_detection_and_proof_round_trip() -> None:
    stored, incoming = at(8), _fork_of(at(8))
    assert check_fork(stored, stored) is None
    assert check_fork(stored, at(9)) is None
    assert check_fork(stored, make_log(BOB, 8)[7][0]) is None
    proof = check_fork(stored, incoming)
    assert proof is not None
    assert proof.author == ALICE.public_key and proof.seq == 8
    assert proof.first.hash < proof.second.hash
    assert proof == ForkProof(first=incoming, second=stored) == check_fork(incoming, stored)
    data = proof.encode()
    assert ForkProof.decode(data) == proof
    assert decode(data) == [proof.first.raw, proof.second.raw]


def test_fork_proof_needs_two_valid_different_entries() -> None:
    entry = at(8)
    assert code_of(lambda: ForkProof(first=entry, second=entry)) == "not_a_fork"
    assert code_of(lambda: ForkProof(first=entry, second=at(9))) == "not_a_fork"
    bad = Entry.decode(entry.raw[:-1] + bytes([entry.raw[-1] ^ 1]))
    assert code_of(lambda: check_fork(entry, bad)) == "bad_signature"
    low, high = sorted([entry, _fork_of(entry)], key=lambda e: e.hash)
    assert code_of(lambda: ForkProof.decode(encode([high.raw, low.raw]))) == "non_canonical"


# -- §8 content ---------------------------------------------------------------------------------------------

VALID: list[Content] = [
    Post(text="hello"),
    Post(text="re", reply=REF, root=REF, mentions=(REF,), tags=("x",), lang="en"),
    Reaction(target=REF, emoji="🎉"),
    Repost(target=REF),
    Delete(target=REF),
    Follow(feed=REF),
    Unfollow(feed=REF),
    Block(feed=REF),
    Unblock(feed=REF),
    Profile(name="Alice"),
    Profile(bio=""),
    Unknown(kind="event", extra={"when": 5}),
]


@pytest.mark.parametrize("content", VALID, ids=lambda c: type_of(c))
def test_each_content_type_round_trips(content: Content) -> None:
    payload = encode_content(content)
    again = decode_content(payload)
    assert again == content and type(again) is type(content)
    assert decode(payload)["type"] == type_of(content)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Post(text=""),
        lambda: Post(text=" \t"),
        lambda: Post(text="x", reply=REF),
        lambda: Post(text="x", root=REF),
        lambda: Post(text="x", mentions=(REF[:31],)),
        lambda: Post(text="x", mentions=[REF]),  # not a tuple
        lambda: Post(text="x", tags=("",)),
        lambda: Post(text="\ud800"),
        lambda: Post(text="x", extra={"reply": REF}),
        lambda: Post(text="x", extra={"type": "reaction"}),
        lambda: Reaction(target=REF, emoji=""),
        lambda: Repost(target=b"short"),
        lambda: Follow(feed="@feed"),
        lambda: Profile(),
        lambda: Profile(name=""),
        lambda: Unknown(kind="post"),
        lambda: Unknown(kind=""),
        lambda: Unknown(kind="x" * 65),
        lambda: Unknown(kind="event", extra={"type": "post"}),
    ],
)
def test_invalid_content_cannot_be_built(make: Any) -> None:
    with pytest.raises(InvalidContent) as info:
        make()
    assert info.value.code == "invalid_content"


@pytest.mark.parametrize(
    ("build", "limit"),
    [
        (lambda n: Post(text="x" * n), 8192),
        (lambda n: Post(text="é" * (n // 2)) if n % 2 == 0 else Post(text="é" * (n // 2) + "x"), 8192),
        (lambda n: Post(text="x", tags=("t" * n,)), 64),
        (lambda n: Post(text="x", lang="l" * n), 16),
        (lambda n: Post(text="x", tags=("t",) * n), 16),
        (lambda n: Post(text="x", mentions=(REF,) * n), 32),
        (lambda n: Reaction(target=REF, emoji="e" * n), 32),
        (lambda n: Profile(name="n" * n), 64),
        (lambda n: Profile(bio="b" * n), 1024),
        (lambda n: Unknown(kind="k" * n), 64),
    ],
)
def test_content_limits_are_exact(build: Any, limit: int) -> None:
    build(limit)
    with pytest.raises(InvalidContent):
        build(limit + 1)


def test_content_extra_keys_are_kept_and_compared() -> None:
    a = Post(text="x", extra={"mood": "ok"})
    assert decode_content(encode_content(a)).extra == {"mood": "ok"}
    assert a != Post(text="x", extra={"mood": "meh"})
    assert a != Post(text="x")
    assert hash(a) == hash(Post(text="x", extra={"mood": "meh"}))  # extra is compared, not hashed


def test_encode_content_refuses_a_payload_over_the_limit() -> None:
    big = Unknown(kind="blob", extra={"data": bytes(MAX_PAYLOAD_SIZE)})
    assert code_of(lambda: encode_content(big)) == "payload_too_large"
    assert code_of(lambda: decode_content(encode({"type": "x", "d": bytes(MAX_PAYLOAD_SIZE)}))) == "too_large"


def test_decode_content_errors() -> None:
    assert code_of(lambda: decode_content(encode([1]))) == "invalid_content"
    assert code_of(lambda: decode_content(encode({"type": "post"}))) == "invalid_content"
    assert (
        code_of(lambda: decode_content(encode({"type": "post", "text": "x", "tags": "x"})))
        == "invalid_content"
    )
    assert code_of(lambda: decode_content(b"\x81")) == "truncated"
    nil_fields = decode_content(encode({"type": "post", "text": "x", "reply": None, "root": None}))
    assert nil_fields == Post(text="x")


# -- §1 sans-IO ---------------------------------------------------------------------------------------------


def test_importing_the_protocol_loads_no_io_modules() -> None:
    """STYLE.md 1 and 8: protocol/ never imports trio, socket, sqlite3 or asyncio.

    ``tidings.protocol`` loads its names lazily, so every public name and every module is loaded here."""
    script = textwrap.dedent(
        """
        import importlib, inspect, pkgutil, sys
        import tidings.protocol
        for name in tidings.protocol.__all__:
            getattr(tidings.protocol, name)
        for info in pkgutil.walk_packages(tidings.protocol.__path__, "tidings.protocol."):
            importlib.import_module(info.name)
        shadowed = [n for n in tidings.protocol.__all__ if inspect.ismodule(getattr(tidings.protocol, n))]
        assert not shadowed, f"submodules shadow public names: {shadowed}"
        loaded = [name for name in ("trio", "socket", "sqlite3", "asyncio") if name in sys.modules]
        print(",".join(loaded))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
