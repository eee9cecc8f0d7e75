"""Blob ids and blob references in content (spec/protocol.md §3.1, §8.5): round trips, refusals with
their codes, and Hypothesis over references and over arbitrary maps where one belongs."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tidings.protocol import (
    MAX_BLOB,
    BlobHasher,
    BlobId,
    BlobRef,
    InvalidContent,
    LocalProtocolError,
    Post,
    Profile,
    ProtocolError,
    RemoteProtocolError,
    blob_id,
    blob_refs,
    decode_content,
    encode,
    encode_content,
    hash_bytes,
)
from tidings.protocol.blobs import MAX_ATTACHMENTS, MAX_DIMENSION
from tidings.protocol.content import from_map

SOME = settings(max_examples=200, deadline=None)
A = blob_id(b"a").hash
B = blob_id(b"b").hash


def ref(**fields: Any) -> dict[str, Any]:
    return {"blob": A, "size": 1, "mime": "image/png", **fields}


def fails(code: str, payload_map: dict[str, Any]) -> InvalidContent:
    with pytest.raises(InvalidContent) as info:
        decode_content(encode(payload_map))
    assert info.value.code == code, info.value
    return info.value


# -- ids ----------------------------------------------------------------------------------------------------


def test_a_blob_id_is_the_hash_of_its_bytes_with_the_blob_sigil() -> None:
    made = blob_id(b"hello")
    assert made.hash == hash_bytes(b"hello") and made.hex == hash_bytes(b"hello").hex()
    assert str(made).startswith("&") and len(str(made)) == 53
    assert BlobId.parse(str(made)) == made


def test_a_blob_id_text_names_what_is_wrong() -> None:
    text = str(blob_id(b"x"))
    with pytest.raises(RemoteProtocolError, match="a blob id starts with '&'") as info:
        BlobId.parse("%" + text[1:])
    assert info.value.code == "bad_id"
    with pytest.raises(RemoteProtocolError, match=r"blob id: character \d+ is an uppercase"):
        BlobId.parse("&" + text[1:].upper())
    with pytest.raises(LocalProtocolError, match="32 bytes"):
        BlobId(b"\x00" * 31)


@given(st.binary(max_size=5000), st.integers(min_value=1, max_value=700))
@SOME
def test_hashing_in_chunks_gives_the_id_of_the_whole(data: bytes, chunk: int) -> None:
    hasher = BlobHasher()
    for start in range(0, len(data), chunk):
        hasher.update(data[start : start + chunk])
    assert hasher.blob_id() == blob_id(data) and hasher.size == len(data)


# -- references in content ----------------------------------------------------------------------------------


def test_a_post_with_attachments_round_trips() -> None:
    picture = BlobRef(blob=A, size=10, mime="image/jpeg", width=4, height=3, alt="a cat", preview=B)
    post = Post(text="look", attachments=(picture, BlobRef(blob=B, size=MAX_BLOB, mime="application/pdf")))
    again = decode_content(encode_content(post))
    assert again == post and blob_refs(again) == post.attachments
    assert picture.is_image and not post.attachments[1].is_image
    assert picture.id == BlobId(A) and picture.preview_id == BlobId(B)
    assert encode_content(post) == encode(
        {
            "type": "post",
            "text": "look",
            "attachments": [
                {
                    "blob": A,
                    "size": 10,
                    "mime": "image/jpeg",
                    "width": 4,
                    "height": 3,
                    "alt": "a cat",
                    "preview": B,
                },
                {"blob": B, "size": MAX_BLOB, "mime": "application/pdf"},
            ],
        }
    )


def test_a_profile_may_set_only_an_avatar_and_keeps_a_banner() -> None:
    profile = Profile(
        avatar=BlobRef(blob=A, size=1, mime="image/webp"), banner=BlobRef(blob=B, size=2, mime="image/gif")
    )
    assert decode_content(encode_content(profile)) == profile
    assert [r.blob for r in blob_refs(profile)] == [A, B]
    assert blob_refs(Profile(name="x")) == () and blob_refs(Post(text="x")) == ()
    with pytest.raises(InvalidContent, match="a name, a bio, an avatar or a banner"):
        Profile()


def test_unknown_keys_of_a_reference_are_kept_and_take_the_slow_path() -> None:
    payload = encode({"type": "post", "text": "x", "attachments": [ref(duration=12)]})
    (kept,) = blob_refs(decode_content(payload))
    assert kept.extra == {"duration": 12} and kept.to_map() == ref(duration=12)
    # a float there is not canonical (spec §2.1), whichever path reads it
    with_float = msgpack.packb(
        {"attachments": [{"blob": A, "f": 0.5, "mime": "image/png", "size": 1}], "text": "x", "type": "post"},
        use_bin_type=True,
    )
    with pytest.raises(ProtocolError) as info:
        decode_content(with_float)
    assert info.value.code == "bad_type"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"blob": A[:31]}, "attachment 1: blob must be a 32-byte blob id"),
        ({"size": 0}, "attachment 1: size must be an integer from 1 to 8388608"),
        ({"size": MAX_BLOB + 1}, "size must be an integer"),
        ({"mime": "image"}, "is not a lowercase type/subtype"),
        ({"mime": "Image/png"}, "is not a lowercase type/subtype"),
        ({"mime": "image/" + "x" * 95}, "mime longer than 100 bytes"),
        ({"width": 3}, "width and height are given together"),
        ({"width": 3, "height": MAX_DIMENSION + 1}, "height must be an integer from 1 to 65535"),
        ({"alt": "x" * 1001}, "alt longer than 1000 bytes"),
        ({"alt": "\u3000"}, "alt must not be blank"),
        ({"preview": "&abc"}, "preview must be a 32-byte blob id"),
    ],
)
def test_each_rule_of_a_reference_is_refused_with_bad_attachment(
    fields: dict[str, Any], message: str
) -> None:
    error = fails("bad_attachment", {"type": "post", "text": "x", "attachments": [ref(**fields)]})
    assert message in error.message, error.message


def test_bounds_of_the_list_and_of_the_profile_fields() -> None:
    fails("bad_attachment", {"type": "post", "text": "x", "attachments": [ref()] * (MAX_ATTACHMENTS + 1)})
    fails("bad_attachment", {"type": "post", "text": "x", "attachments": ref()})
    error = fails("bad_attachment", {"type": "profile", "banner": {"blob": A, "size": 1}})
    assert error.message == "banner has no mime"
    assert decode_content(encode({"type": "post", "text": "x", "attachments": [ref()] * 4}))
    # constructing one wrongly is refused as well
    with pytest.raises(InvalidContent):
        Post(text="x", attachments=[BlobRef(blob=A, size=1, mime="image/png")])  # type: ignore[arg-type]
    with pytest.raises(InvalidContent):
        Profile(avatar=ref())  # type: ignore[arg-type]
    with pytest.raises(InvalidContent, match="extra key 'blob'"):
        BlobRef(blob=A, size=1, mime="a/b", extra={"blob": B})


def test_nodes_that_do_not_know_the_fields_keep_the_post() -> None:
    """An older reader sees ``attachments`` as an extra key: the text still shows (spec §8.5)."""
    payload = encode({"type": "post", "text": "hi", "attachments": [ref()]})
    content = decode_content(payload)
    assert isinstance(content, Post) and content.text == "hi"
    old_schema = {k: v for k, v in decode_content(payload).to_map().items() if k != "attachments"}
    assert from_map(old_schema) == Post(text="hi")


# -- Hypothesis ---------------------------------------------------------------------------------------------

hashes = st.binary(min_size=32, max_size=32)
dims = st.integers(min_value=1, max_value=MAX_DIMENSION)
mimes = st.from_regex(r"[a-z0-9][a-z0-9.+-]{0,20}/[a-z0-9][a-z0-9.+-]{0,20}", fullmatch=True)
refs = st.builds(
    lambda blob, size, mime, wh, alt, preview: BlobRef(
        blob=blob,
        size=size,
        mime=mime,
        width=wh[0] if wh else None,
        height=wh[1] if wh else None,
        alt=alt,
        preview=preview,
    ),
    hashes,
    st.integers(min_value=1, max_value=MAX_BLOB),
    mimes,
    st.none() | st.tuples(dims, dims),
    st.none() | st.text(min_size=1, max_size=50).filter(lambda t: t.strip() != "" and "\ud800" not in t),
    st.none() | hashes,
)


@given(st.lists(refs, min_size=1, max_size=MAX_ATTACHMENTS), st.none() | refs)
@SOME
def test_any_valid_reference_round_trips(attachments: list[BlobRef], avatar: BlobRef | None) -> None:
    post = Post(text="x", attachments=tuple(attachments))
    assert decode_content(encode_content(post)) == post
    if avatar is not None:
        profile = Profile(avatar=avatar, banner=attachments[0])
        assert decode_content(encode_content(profile)) == profile


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.binary(max_size=40)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20,
)
maybe_refs = st.dictionaries(
    st.sampled_from(["blob", "size", "mime", "width", "height", "alt", "preview", "x"]), values, max_size=8
) | st.fixed_dictionaries(
    {},
    optional={"blob": hashes, "size": values, "mime": mimes | values, "width": dims | values, "height": dims},
)


@given(st.lists(maybe_refs, max_size=6) | values, st.sampled_from(["attachments", "avatar", "banner"]))
@settings(max_examples=500, deadline=None)
def test_whatever_a_reference_holds_only_protocol_errors_come_out(value: Any, key: str) -> None:
    kind = "post" if key == "attachments" else "profile"
    try:
        payload = encode({"type": kind, "text": "x", "name": "x", key: value})
    except LocalProtocolError:  # nested deeper than the encoding allows (spec §2.3): not a payload
        return
    try:
        content = decode_content(payload)
    except ProtocolError as exc:
        assert exc.code in {"bad_attachment", "invalid_content", "too_large"}, exc
        return
    # what is accepted encodes back to a payload that decodes to the same thing (fast or slow path)
    assert decode_content(encode_content(content)) == content
