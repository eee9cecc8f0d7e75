"""Property tests of the sans-IO protocol core (spec/protocol.md §2, §4–§6, §8), driven by Hypothesis."""

from __future__ import annotations

import itertools
import math
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tidings.protocol import (
    MAX_PAYLOAD_SIZE,
    Content,
    Entry,
    Follow,
    LocalProtocolError,
    Post,
    Profile,
    ProtocolError,
    Reaction,
    SigningKey,
    Unknown,
    create_entry,
    decode,
    decode_content,
    encode,
    encode_content,
    lipmaa,
    path_to_first,
    skip_target,
    verify_entry,
    verify_payload,
)
from tidings.protocol.encoding import MAX_DEPTH

FUZZ = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOME = settings(max_examples=200, deadline=None)

KEY = SigningKey(bytes(range(32)))


def _chain(length: int) -> list[tuple[Entry, bytes]]:
    log: list[tuple[Entry, bytes]] = []
    for seq in range(1, length + 1):
        payload = encode_content(Post(text=f"entry {seq}", tags=("t",)))
        target = skip_target(seq)
        entry = create_entry(
            KEY,
            seq=seq,
            backlink=log[-1][0].hash if log else None,
            skiplink=log[target - 1][0].hash if target is not None else None,
            timestamp=1_700_000_000_000 + seq,
            payload=payload,
        )
        log.append((entry, payload))
    return log


LOG = _chain(13)
SEQ13, PAYLOAD13 = LOG[12]  # seq 13 has a backlink (12) and a skip link (4)


def same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.binary(max_size=40)
    | st.text(max_size=40)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6),
    max_leaves=30,
)


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Apply (kind, position, byte) edits: 0 replace, 1 insert, 2 delete."""
    out = bytearray(data)
    for kind, pos, byte in edits:
        if not out:
            out.append(byte)
            continue
        i = pos % len(out)
        if kind == 0:
            out[i] = byte
        elif kind == 1:
            out.insert(i, byte)
        else:
            del out[i]
    return bytes(out)


edits = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4
)


def near(valid: list[bytes]) -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, and bytes a few edits away from valid encodings (where decoders branch most)."""
    return st.binary(max_size=300) | st.builds(mutate, st.sampled_from(valid), edits)


def only_protocol_errors(action: Any) -> None:
    try:
        action()
    except ProtocolError:
        pass


# -- §2 encoding --------------------------------------------------------------------------------------------


def _has_deep_item(value: Any, level: int = 0) -> bool:
    """True when some value sits inside more than MAX_DEPTH arrays or maps (spec §2.3)."""
    if level > MAX_DEPTH:
        return True
    if isinstance(value, list):
        return any(_has_deep_item(v, level + 1) for v in value)
    if isinstance(value, dict):
        return any(_has_deep_item(v, level + 1) for v in value.values())
    return False


@SOME
@given(values)
def test_encode_decode_round_trip(value: Any) -> None:
    if _has_deep_item(value):
        try:
            encode(value)
        except LocalProtocolError as exc:
            assert exc.code == "too_deep"
            return
        raise AssertionError("a value nested too deeply was encoded")
    data = encode(value)
    assert same(decode(data), value)
    assert encode(decode(data)) == data


def test_nesting_limit_is_exact() -> None:
    """16 arrays around a value encode and decode; 17 do not (spec §2.3)."""
    ok: Any = 1
    for _ in range(MAX_DEPTH):
        ok = [ok]
    assert not _has_deep_item(ok) and _has_deep_item([ok])
    assert decode(encode(ok)) == ok
    try:
        encode([ok])
    except LocalProtocolError as exc:
        assert exc.code == "too_deep"
    else:
        raise AssertionError("17 levels were encoded")


@SOME
@given(values)
def test_canonical_form_is_unique(value: Any) -> None:
    """Key order of the input never changes the encoding (spec §2.1)."""
    assume(not _has_deep_item(value))

    def reverse(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: reverse(v[k]) for k in reversed(list(v))}
        if isinstance(v, list):
            return [reverse(x) for x in v]
        return v

    assert encode(reverse(value)) == encode(value)


ENCODINGS = [
    encode(v) for v in (None, 1, -200, 2**40, b"ab", "héllo", [1, [2, {"a": b""}]], {"b": 1, "a": [True]})
]


@FUZZ
@given(near(ENCODINGS))
def test_decode_raises_only_protocol_errors_and_accepts_only_canonical_bytes(data: bytes) -> None:
    try:
        value = decode(data)
    except ProtocolError:
        return
    assert encode(value) == data  # spec §2.2: exactly the canonical encodings are accepted


# -- §4, §5 entries -----------------------------------------------------------------------------------------


@FUZZ
@given(near([e.raw for e, _ in LOG]))
def test_entry_decode_raises_only_protocol_errors(data: bytes) -> None:
    only_protocol_errors(lambda: Entry.decode(data))


@settings(max_examples=1500, deadline=None)
@given(st.integers(0, len(SEQ13.raw) - 1), st.integers(1, 255))
def test_any_single_byte_change_of_an_entry_fails(index: int, delta: int) -> None:
    raw = bytearray(SEQ13.raw)
    raw[index] = (raw[index] + delta) % 256
    previous, skip = LOG[11][0], LOG[3][0]
    try:
        entry = Entry.decode(bytes(raw))
        verify_entry(entry, previous=previous, skip=skip, payload=PAYLOAD13)
    except ProtocolError:
        return
    raise AssertionError(f"changing byte {index} left a valid entry")


@SOME
@given(st.integers(0, len(PAYLOAD13) - 1), st.integers(1, 255))
def test_any_single_byte_change_of_a_payload_fails(index: int, delta: int) -> None:
    payload = bytearray(PAYLOAD13)
    payload[index] = (payload[index] + delta) % 256
    try:
        verify_payload(SEQ13, bytes(payload))
    except ProtocolError as exc:
        assert exc.code == "payload_hash"
        return
    raise AssertionError("a changed payload verified")


@SOME
@given(st.binary(max_size=600))
def test_other_payloads_fail(payload: bytes) -> None:
    assume(payload != PAYLOAD13)
    try:
        verify_payload(SEQ13, payload)
    except ProtocolError as exc:
        assert exc.code in {"payload_size", "payload_hash"}
        return
    raise AssertionError("another payload verified")


@SOME
@given(
    seed=st.binary(min_size=32, max_size=32),
    seq=st.integers(1, 2**53 - 1),
    timestamp=st.integers(0, 2**53 - 1),
    payload=st.binary(max_size=200),
    link=st.binary(min_size=32, max_size=32),
)
def test_created_entries_decode_and_verify(
    seed: bytes, seq: int, timestamp: int, payload: bytes, link: bytes
) -> None:
    key = SigningKey(seed)
    entry = create_entry(
        key,
        seq=seq,
        backlink=None if seq == 1 else link,
        skiplink=None if skip_target(seq) is None else link,
        timestamp=timestamp,
        payload=payload,
    )
    again = Entry.decode(entry.raw)
    assert again == entry and again.hash == entry.hash
    assert len(entry.raw) <= 225  # spec §4.3
    verify_entry(again, payload=payload)


# -- §6 lipmaa ----------------------------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(st.integers(2, 2**53 - 1))
def test_lipmaa_properties(n: int) -> None:
    target = lipmaa(n)
    assert 1 <= target < n
    assert skip_target(n) == (None if target == n - 1 else target)
    path = path_to_first(n)
    assert path[0] == n and path[-1] == 1
    assert all(b == lipmaa(a) for a, b in itertools.pairwise(path))
    assert len(path) <= 3 * math.log(n, 3) + 3


# -- §8 content ---------------------------------------------------------------------------------------------


refs = st.binary(min_size=32, max_size=32)


def words(max_chars: int = 10) -> st.SearchStrategy[str]:
    """Non-blank text; a character is at most 4 UTF-8 bytes, so ``max_chars`` bounds the size."""
    return st.text(min_size=1, max_size=max_chars).filter(lambda s: s.strip() != "")


KNOWN_TYPES = {"post", "reaction", "repost", "delete", "profile", "follow", "unfollow", "block", "unblock"}
contents: st.SearchStrategy[Content] = st.one_of(
    st.builds(
        Post,
        text=words(),
        mentions=st.lists(refs, max_size=3).map(tuple),
        tags=st.lists(words(), max_size=3).map(tuple),
        lang=st.none() | words(4),
    ),
    st.builds(lambda r, root, t: Post(text=t, reply=r, root=root), refs, refs, words()),
    st.builds(Reaction, target=refs, emoji=words(8)),
    st.builds(Follow, feed=refs),
    st.builds(Profile, name=words(), bio=st.none() | st.text(max_size=30)),
    st.builds(
        Unknown,
        kind=words().filter(lambda k: k not in KNOWN_TYPES),
        extra=st.dictionaries(st.text(max_size=5).filter(lambda k: k != "type"), scalars, max_size=3),
    ),
)


@SOME
@given(contents)
def test_content_round_trip(content: Content) -> None:
    payload = encode_content(content)
    assert len(payload) <= MAX_PAYLOAD_SIZE
    again = decode_content(payload)
    assert again == content
    assert encode_content(again) == payload


PAYLOADS = [
    encode_content(c)
    for c in (
        Post(text="hi", reply=bytes(32), root=bytes(32), tags=("a",), mentions=(bytes(32),), lang="en"),
        Reaction(target=bytes(32), emoji="x"),
        Profile(name="n", bio="b"),
        Follow(feed=bytes(32)),
        Unknown(kind="poll", extra={"q": [1, "a"]}),
    )
]


@FUZZ
@given(near(PAYLOADS))
def test_decode_content_raises_only_protocol_errors(data: bytes) -> None:
    only_protocol_errors(lambda: decode_content(data))


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["type", "text", "reply", "root", "mentions", "tags", "lang", "x"]), values
    )
)
def test_decode_content_on_arbitrary_maps(value: dict[str, Any]) -> None:
    try:
        data = encode(value)
    except LocalProtocolError:
        return
    only_protocol_errors(lambda: decode_content(data))
