"""Private messages (spec/protocol.md §8.6): round trips over random messages and recipient sets, every
byte changed, slots moved between boxes, boxes replayed under other entries, forged commitments, and the
structure rules with their codes."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import nacl.bindings as sodium
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tidings.protocol import (
    Box,
    BoxKey,
    InvalidContent,
    LocalProtocolError,
    Message,
    Opened,
    ProtocolError,
    SigningKey,
    Undecryptable,
    decode_content,
    encode,
    encode_content,
    open_box,
    seal,
)
from tidings.protocol.box import (
    BODY_BUCKETS,
    MAX_BOX_TEXT,
    SLOT_BUCKETS,
    _kdf,
    box_context,
    x25519_public,
)

SOME = settings(max_examples=60, deadline=None)
KEYS = [SigningKey(hashlib.blake2b(b"box test %d" % i, digest_size=32).digest()) for i in range(40)]
OPENERS = {k.public_key: BoxKey(k) for k in KEYS}
ALICE, BOB, CAROL, DAVE = KEYS[:4]
BACK = bytes(range(32))


def rng(seed: int = 1) -> Any:
    return random.Random(seed).randbytes


def sealed(text: str = "hello", to: tuple[SigningKey, ...] = (BOB, CAROL), seq: int = 5, **kw: Any) -> Box:
    message = Message(text=text, to=tuple(k.public_key for k in to), **kw)
    return seal(message, author=ALICE.public_key, seq=seq, backlink=BACK, rng=rng())


def read(
    box: Box, reader: SigningKey, *, author: bytes = ALICE.public_key, seq: int = 5, back: Any = BACK
) -> Any:
    return open_box(box, author=author, seq=seq, backlink=back, key=OPENERS[reader.public_key])


# -- round trips --------------------------------------------------------------------------------------------
@SOME
@given(
    text=st.text(min_size=1, max_size=300).filter(lambda t: t.strip() and "\ud800" not in t),
    picks=st.sets(st.integers(1, 39), min_size=1, max_size=31),
    seq=st.integers(1, 2**53 - 1),
    seed=st.integers(0, 2**32),
    reply=st.none() | st.binary(min_size=32, max_size=32),
)
def test_random_messages_and_recipient_sets_round_trip(
    text: str, picks: set[int], seq: int, seed: int, reply: bytes | None
) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return
    author = KEYS[0]
    to = tuple(KEYS[i].public_key for i in sorted(picks))
    back = None if seq == 1 else hashlib.blake2b(b"%d" % seq, digest_size=32).digest()
    message = Message(text=text, to=to, reply=reply)
    box = seal(message, author=author.public_key, seq=seq, backlink=back, rng=random.Random(seed).randbytes)
    payload = encode_content(box)
    assert decode_content(payload) == box
    assert len(box.slots) == min(b for b in SLOT_BUCKETS if b > len(to))
    assert len(box.body) == min(b for b in BODY_BUCKETS if b >= len(encode(message.to_map())) + 17)
    participants = tuple(sorted({author.public_key, *to}))
    for key in (author.public_key, *to):
        opened = open_box(box, author=author.public_key, seq=seq, backlink=back, key=OPENERS[key])
        assert isinstance(opened, Opened)
        assert opened.message == message and opened.participants == participants
    outsiders = [k for k in KEYS[1:] if k.public_key not in to][:2]
    for other in outsiders:
        assert open_box(box, author=author.public_key, seq=seq, backlink=back, key=BoxKey(other)) is None


def test_boxes_of_one_bucket_have_one_size_whoever_they_go_to() -> None:
    """A replicator learns the buckets and nothing else: 1 or 3 recipients, 1 or 200 bytes, same size."""
    sizes = {
        len(encode_content(sealed(text, to)))
        for text in ("a", "b" * 100)
        for to in ((BOB,), (BOB, CAROL, DAVE))
    }
    assert sizes == {560}
    big = sealed("é" * (MAX_BOX_TEXT // 2), tuple(KEYS[1:32]))
    assert (len(big.slots), len(big.body), len(encode_content(big))) == (32, 8192, 9898)


def test_slots_do_not_say_whose_they_are() -> None:
    """The same message to the same people, sealed twice: no slot in common, and the order of the
    openers' slots differs (random order), while the dummy slots are as many as the bucket leaves."""
    one, two = (
        sealed(),
        seal(
            Message(text="hello", to=(BOB.public_key, CAROL.public_key)),
            author=ALICE.public_key,
            seq=5,
            backlink=BACK,
            rng=rng(2),
        ),
    )
    assert not set(one.slots) & set(two.slots)
    positions = []
    for box in (one, two):
        owners = []
        for slot in box.slots:
            alone = Box(eph=box.eph, commit=box.commit, slots=(slot,) * 4, body=box.body)
            owners.append(next((k for k in (ALICE, BOB, CAROL) if read(alone, k) is not None), None))
        assert owners.count(None) == 1
        positions.append(owners)
    seals = [
        seal(
            Message(text="x", to=(BOB.public_key,)),
            author=ALICE.public_key,
            seq=5,
            backlink=BACK,
            rng=rng(s),
        )
        for s in range(3, 13)
    ]
    bob_at = set()
    for box in seals:
        for i, slot in enumerate(box.slots):
            alone = Box(eph=box.eph, commit=box.commit, slots=(slot,) * 4, body=box.body)
            if read(alone, BOB) is not None:
                bob_at.add(i)
    assert len(bob_at) > 1  # bob's slot is not always in one place


# -- what fails ---------------------------------------------------------------------------------------------
def _outcomes(payload: bytes, readers: tuple[SigningKey, ...]) -> list[Any]:
    try:
        box = decode_content(payload)
    except ProtocolError:
        return ["refused"]
    if not isinstance(box, Box):
        return ["another type"]
    return [read(box, r) for r in readers]


def test_every_byte_changed_fails_for_every_reader() -> None:
    box = sealed("the plan is on", (BOB, CAROL))
    payload = encode_content(box)
    assert all(isinstance(o, Opened) for o in _outcomes(payload, (ALICE, BOB, CAROL)))
    for i in range(len(payload)):
        for mask in (0x01, 0x80):
            changed = payload[:i] + bytes([payload[i] ^ mask]) + payload[i + 1 :]
            for outcome in _outcomes(changed, (ALICE, BOB, CAROL)):
                assert not isinstance(outcome, Opened), (i, mask)


def test_a_replayed_box_opens_under_no_other_entry() -> None:
    box = sealed()
    assert isinstance(read(box, BOB), Opened)
    assert read(box, BOB, author=DAVE.public_key) is None  # dave posts alice's box as his own
    assert read(box, BOB, seq=6) is None  # alice's box again later in her log
    assert read(box, BOB, back=bytes(32)) is None  # at the same seq of a fork
    assert read(box, BOB, seq=1, back=None) is None


def test_slots_swapped_between_boxes_fail() -> None:
    to_bob = sealed("for bob", (BOB,))
    to_carol = sealed("for carol", (CAROL,), seq=6)
    bob_slot = next(
        s
        for s in to_bob.slots
        if read(Box(eph=to_bob.eph, commit=to_bob.commit, slots=(s,) * 4, body=to_bob.body), BOB)
    )
    for i in range(4):
        mixed = Box(
            eph=to_carol.eph,
            commit=to_carol.commit,
            slots=(*to_carol.slots[:i], bob_slot, *to_carol.slots[i + 1 :]),
            body=to_carol.body,
        )
        assert read(mixed, BOB, seq=6) is None
        assert not isinstance(read(mixed, CAROL, seq=6), Opened)
    # the header of one box with the slots and body of the other
    hybrid = Box(eph=to_bob.eph, commit=to_bob.commit, slots=to_carol.slots, body=to_carol.body)
    assert read(hybrid, CAROL) is None and read(hybrid, BOB) is None


def _forge(
    *, commit_key: bytes | None = None, plain: bytes | None = None, to: tuple[SigningKey, ...] = (BOB,)
) -> Box:
    """What a malicious author can make by hand: a slot for each of ``to`` wrapping a key, but a
    commitment to another key, or a body that is not a valid message."""
    eph_secret, key = bytes([7]) * 32, bytes([9]) * 32
    eph = sodium.crypto_scalarmult_base(eph_secret)
    commit = _kdf(commit_key or key, b"tidings-box-cmt")
    context = box_context(ALICE.public_key, 5, BACK, eph, commit)
    slots = []
    for reader in to:
        public = x25519_public(reader.public_key)
        wrap = _kdf(sodium.crypto_scalarmult(eph_secret, public), b"tidings-box-wrap", eph + public)
        slots.append(sodium.crypto_aead_chacha20poly1305_ietf_encrypt(key, context, bytes(12), wrap))
    slots += [bytes([i]) * 48 for i in range(4 - len(slots))]
    if plain is None:
        plain = encode({"text": "hi", "to": [BOB.public_key]})
    padded = plain + b"\x80" + bytes(240 - len(plain) - 1)
    body = sodium.crypto_aead_chacha20poly1305_ietf_encrypt(
        padded, context + b"".join(slots), bytes(12), _kdf(key, b"tidings-box-body")
    )
    return Box(eph=eph, commit=commit, slots=tuple(slots), body=body)


def test_the_forge_helper_makes_boxes_that_open() -> None:
    assert isinstance(read(_forge(), BOB), Opened)


@pytest.mark.parametrize(
    "forged",
    [
        pytest.param(lambda: _forge(commit_key=bytes(32)), id="commitment to another key"),
        pytest.param(
            lambda: _forge(plain=encode({"text": "hi", "to": [CAROL.public_key]})), id="bob not named"
        ),
        pytest.param(
            lambda: _forge(plain=encode({"text": "hi", "to": [ALICE.public_key]})), id="author in to"
        ),
        pytest.param(lambda: _forge(plain=encode({"text": " ", "to": [BOB.public_key]})), id="blank text"),
        pytest.param(lambda: _forge(plain=b"\x92\x01\x02"), id="not a map"),
        pytest.param(
            lambda: _forge(plain=encode({"text": "hi", "to": [BOB.public_key]}) + b"\x00"), id="bad padding"
        ),
        pytest.param(lambda: _forge(plain=b"\x81\xa4text\xa2hi\xc1"), id="not canonical"),
    ],
)
def test_a_box_whose_slot_opens_but_not_the_rest_is_undecryptable(forged: Any) -> None:
    assert isinstance(read(forged(), BOB), Undecryptable)


# -- refusals with their codes ------------------------------------------------------------------------------
def _code(action: Any) -> str:
    with pytest.raises(ProtocolError) as info:
        action()
    return info.value.code


def test_sealing_refusals() -> None:
    crowd = tuple(k.public_key for k in KEYS[1:33])
    assert _code(lambda: Message(text="x", to=crowd)) == "too_many_recipients"  # 32 + the author: 33 slots
    assert _code(lambda: Message(text="x" * (MAX_BOX_TEXT + 1), to=(BOB.public_key,))) == "message_too_long"
    assert _code(lambda: Message(text=" ", to=(BOB.public_key,))) == "bad_message"
    assert _code(lambda: Message(text="x", to=())) == "bad_message"
    assert _code(lambda: Message(text="x", to=(BOB.public_key, BOB.public_key))) == "bad_message"
    for bad_rng in (lambda n: b"", lambda n: bytes(n + 1)):
        with pytest.raises(LocalProtocolError) as info:
            seal(
                Message(text="x", to=(BOB.public_key,)),
                author=ALICE.public_key,
                seq=2,
                backlink=BACK,
                rng=bad_rng,
            )
        assert info.value.code == "bad_rng"
    message = Message(text="x", to=(BOB.public_key, ALICE.public_key))
    assert (
        _code(lambda: seal(message, author=ALICE.public_key, seq=2, backlink=BACK, rng=rng()))
        == "bad_recipient"
    )
    not_a_point = Message(text="x", to=(bytes(32),))
    assert (
        _code(lambda: seal(not_a_point, author=ALICE.public_key, seq=2, backlink=BACK, rng=rng()))
        == "bad_recipient"
    )


def test_structure_refusals_are_bad_box() -> None:
    box = sealed()
    good = box.to_map()
    slot = box.slots[0]
    for change in (
        {"slots": [slot] * 33},
        {"slots": [slot] * 3},
        {"slots": [b"garbage", *box.slots[1:]]},
        {"slots": [slot + b"!", *box.slots[1:]]},
        {"body": box.body + bytes(1)},
        {"body": bytes(16000)},
        {"eph": b"short"},
        {"commit": None},
        {"extra": 1},
    ):
        payload = encode({**good, **change})
        with pytest.raises(InvalidContent) as info:
            decode_content(payload)
        assert info.value.code == "bad_box", change
    assert (
        _code(lambda: Box(eph=box.eph, commit=box.commit, slots=box.slots, body=box.body, extra={"x": 1}))
        == "bad_box"
    )


def test_a_low_order_ephemeral_key_is_not_ours() -> None:
    box = sealed()
    for eph in (bytes(32), bytes([1]) + bytes(31)):
        assert read(Box(eph=eph, commit=box.commit, slots=box.slots, body=box.body), BOB) is None


@SOME
@given(
    value=st.dictionaries(
        st.sampled_from(["eph", "commit", "slots", "body", "type", "to"]),
        st.none()
        | st.binary(max_size=64)
        | st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what msgpack (and so a peer) can send
        | st.text(max_size=8)
        | st.lists(st.binary(min_size=47, max_size=49), max_size=34),
    )
)
def test_box_maps_of_any_shape_decode_or_fail_with_a_code(value: dict[str, Any]) -> None:
    value["type"] = "box"
    try:
        box = decode_content(encode(value))
    except InvalidContent as exc:
        assert exc.code == "bad_box"
        return
    assert isinstance(box, Box) and read(box, BOB) is None
