"""The blob vectors of spec/protocol.md §8.5 (``blobs.json``), for ``make_vectors.py``.

Blob ids of sample bytes, invalid blob id texts, and payloads that carry blob references: valid ones
(a post with attachments, a profile with an avatar and a banner) and invalid ones, each breaking one
rule of §8.5 (code ``bad_attachment``) or of §3.1 (``bad_id``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tidings.protocol import BlobRef, Post, Profile, blob_id, decode_content, encode, encode_content
from tidings.protocol.blobs import MAX_BLOB

#: Sample blobs: (name, bytes). The last is 1 MiB, given in the file by its rule, not its bytes.
SAMPLES: list[tuple[str, bytes]] = [
    ("one byte", b"a"),
    ("text", b"hello, tidings"),
    ("every byte value", bytes(range(256))),
]
PATTERN = "byte i is i mod 251, for i from 0 to 1048575"
BIG = bytes(i % 251 for i in range(1 << 20))


def _ids() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {
            "name": name,
            "input": data.hex(),
            "size": len(data),
            "hash": blob_id(data).hex,
            "id": str(blob_id(data)),
        }
        for name, data in SAMPLES
    ]
    big = blob_id(BIG)
    out.append({"name": "1 MiB", "pattern": PATTERN, "size": len(BIG), "hash": big.hex, "id": str(big)})
    return out


def _invalid_ids() -> list[dict[str, Any]]:
    good = str(blob_id(b"a"))
    cases = [
        ("an entry sigil", "%" + good[1:]),
        ("a feed sigil", "@" + good[1:]),
        ("no sigil", good[1:]),
        ("uppercase", "&" + good[1:].upper()),
        ("one character short", good[:-1]),
        ("padding", good + "===="),
        ("trailing bits set", good[:-1] + "b"),
    ]
    return [{"name": n, "text": t, "rule": "§3.1", "code": "bad_id"} for n, t in cases]


def blobs_doc(tagged: Callable[[Any], Any]) -> dict[str, Any]:
    """The document of ``blobs.json``; ``tagged`` is make_vectors.py's tagged JSON form of a value."""
    a, b, c = (blob_id(data).hash for _, data in SAMPLES)
    big = blob_id(BIG).hash
    picture = BlobRef(blob=b, size=14, mime="image/png", width=640, height=480, alt="a garden")
    valid: list[tuple[str, Any]] = [
        ("post with one picture (the example of §8.5)", Post(text="the garden", attachments=(picture,))),
        (
            "post with four attachments",
            Post(
                text="four",
                attachments=(
                    picture,
                    BlobRef(blob=big, size=1 << 20, mime="image/jpeg", width=1, height=65535, preview=a),
                    BlobRef(blob=c, size=256, mime="application/octet-stream"),
                    BlobRef(blob=a, size=1, mime="image/svg+xml", alt="é" * 500),
                ),
            ),
        ),
        (
            "attachment with an extra key, kept",
            Post(text="x", attachments=(BlobRef(blob=a, size=1, mime="image/gif", extra={"loop": True}),)),
        ),
        ("profile with an avatar only", Profile(avatar=BlobRef(blob=b, size=14, mime="image/webp"))),
        (
            "profile with every field",
            Profile(
                name="Alice",
                bio="",
                avatar=BlobRef(blob=b, size=14, mime="image/png", width=64, height=64),
                banner=BlobRef(blob=big, size=MAX_BLOB, mime="image/jpeg", width=1500, height=500, preview=c),
            ),
        ),
    ]
    valid_out = []
    for name, content in valid:
        payload = encode_content(content)
        assert decode_content(payload) == content
        valid_out.append(
            {
                "name": name,
                "rule": "§8.5",
                "payload": payload.hex(),
                "type": content.type,
                "map": tagged(content.to_map()),
            }
        )
    # Accepted, not as a writer writes it (§8.1): nil fields and an empty array count as absent.
    for name, raw_map, canonical in (
        (
            "attachment with nil width, height, alt and preview",
            {"type": "post", "text": "x", "attachments": [
                {"blob": a, "size": 1, "mime": "image/png", "width": None, "height": None, "alt": None, "preview": None}
            ]},
            {"type": "post", "text": "x", "attachments": [{"blob": a, "size": 1, "mime": "image/png"}]},
        ),
        ("empty attachments", {"type": "post", "text": "x", "attachments": []}, {"type": "post", "text": "x"}),
    ):  # fmt: skip
        payload = encode(raw_map)
        assert decode_content(payload).to_map() == canonical
        valid_out.append(
            {"name": name, "rule": "§8.1", "payload": payload.hex(), "type": "post", "map": tagged(canonical)}
        )

    ref = {"blob": a, "size": 1, "mime": "image/png"}

    def post(*refs: Any) -> bytes:
        return encode({"type": "post", "text": "x", "attachments": list(refs)})

    def changed(**fields: Any) -> bytes:
        return post({k: v for k, v in {**ref, **fields}.items() if v is not ...})

    cases: list[tuple[str, bytes]] = [
        ("five attachments", post(*[ref] * 5)),
        ("attachments not an array", encode({"type": "post", "text": "x", "attachments": ref})),
        ("attachment not a map", post(a)),
        ("attachment without blob", changed(blob=...)),
        ("attachment without size", changed(size=...)),
        ("attachment without mime", changed(mime=...)),
        ("blob of 31 bytes", changed(blob=a[:31])),
        ("blob as a blob id text", changed(blob=str(blob_id(b"a")))),
        ("size 0", changed(size=0)),
        ("size over 8 MiB", changed(size=MAX_BLOB + 1)),
        ("size as text", changed(size="1")),
        ("size true", changed(size=True)),
        ("mime without a subtype", changed(mime="png")),
        ("mime in uppercase", changed(mime="image/PNG")),
        ("mime with a parameter", changed(mime="text/plain; charset=utf-8")),
        ("mime of 101 bytes", changed(mime="image/" + "x" * 95)),
        ("width without height", changed(width=10)),
        ("width 0", changed(width=0, height=10)),
        ("height 65536", changed(width=10, height=65536)),
        ("alt of 1001 bytes", changed(alt="x" * 1001)),
        ("blank alt", changed(alt=" ")),
        ("alt as bytes", changed(alt=b"x")),
        ("preview of 33 bytes", changed(preview=a + b"\x00")),
        ("avatar not a map", encode({"type": "profile", "avatar": a})),
        ("banner without mime", encode({"type": "profile", "name": "x", "banner": {"blob": a, "size": 1}})),
    ]
    return {
        "spec": "spec/protocol.md §3.1, §8.5",
        "generator": "spec/make_vectors.py",
        "format": (
            "ids: the blob id of input (hex; or of the bytes pattern describes) is hash (hex) and id (text). "
            "invalid_ids: parsing text as a blob id fails with code. valid and invalid: as in content.json; "
            "every invalid payload breaks one rule of §8.5 and fails with code bad_attachment."
        ),
        "ids": _ids(),
        "invalid_ids": _invalid_ids(),
        "valid": valid_out,
        "invalid": [
            {"name": n, "payload": raw.hex(), "rule": "§8.5", "code": "bad_attachment"} for n, raw in cases
        ],
    }
