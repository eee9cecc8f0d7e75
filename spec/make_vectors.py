"""Regenerate the test vectors of spec/protocol.md into spec/vectors/*.json.

    python spec/make_vectors.py [--out DIR]

Deterministic: keys come from fixed seeds, timestamps are fixed and Ed25519 signatures are deterministic, so
running it again gives byte-identical files (tests/test_vectors.py checks this). Bytes are lowercase hex.
Every file names the section it tests in ``"spec"``; every invalid vector names the rule it breaks
(``"rule": "§5.3"``) and the error ``code`` a conforming implementation reports (spec §1.3, §1.4).
Each invalid vector breaks exactly one rule (spec §1.3), except where its ``note`` says why not.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from blob_vectors import blobs_doc  # spec/blob_vectors.py, beside this script
from box_vectors import boxes_doc  # spec/box_vectors.py, beside this script
from record_vectors import records_doc  # spec/record_vectors.py, beside this script
from tidings.protocol import (
    Block,
    Content,
    Delete,
    Entry,
    Follow,
    ForkProof,
    Post,
    Profile,
    Reaction,
    Repost,
    SigningKey,
    Unblock,
    Unfollow,
    Unknown,
    create_entry,
    decode_content,
    encode,
    encode_content,
    hash_bytes,
    lipmaa,
    path_to_first,
    skip_target,
)
from tidings.protocol.entry import SIGNING_DOMAIN

HERE = Path(__file__).resolve().parent
BASE_TS = 1_700_000_000_000  # 2023-11-14T22:13:20Z, in ms (spec §1.2)
#: The order of the Ed25519 group (spec §5.2).
ED25519_L = 2**252 + 27742317777372353535851937790883648493
ENTRY_FIELDS = (
    "version",
    "author",
    "seq",
    "backlink",
    "skiplink",
    "timestamp",
    "payload_hash",
    "payload_size",
)


# -- helpers ------------------------------------------------------------------------------------------------


def seed(label: str) -> bytes:
    """A fixed 32-byte seed derived from a label (no OS randomness)."""
    return hashlib.blake2b(b"tidings/vectors/" + label.encode(), digest_size=32).digest()


def hx(data: bytes | None) -> str | None:
    return None if data is None else data.hex()


def tagged(value: Any) -> Any:
    """A JSON description of a value of the data model (spec §2.1) that keeps bytes, text and ints apart.

    nil, true, false -> null, true, false; integer -> {"int": "decimal"}; bytes -> {"bytes": "hex"};
    text -> {"text": "..."}; array -> {"array": [...]}; map -> {"map": [[key, value], ...]} in
    canonical key order.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return {"int": str(value)}
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    if isinstance(value, str):
        return {"text": value}
    if isinstance(value, list | tuple):
        return {"array": [tagged(v) for v in value]}
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k.encode("utf-8"))
        return {"map": [[k, tagged(value[k])] for k in keys]}
    raise TypeError(type(value).__name__)


def field_bytes(fields: dict[str, Any]) -> list[bytes]:
    return [encode(fields[name]) for name in ENTRY_FIELDS]


def sign_fields(key: SigningKey, fields: dict[str, Any]) -> bytes:
    """Sign arbitrary field values the way spec §5.1 says, and return the canonical entry encoding.

    Unlike ``create_entry`` this does not check §4.2, so it can make validly signed invalid entries.
    """
    body = [fields[name] for name in ENTRY_FIELDS]
    signature = key.sign(SIGNING_DOMAIN + encode(body))
    return encode([*body, signature])


def fields_of(entry: Entry) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in ENTRY_FIELDS}


def write(out: Path, name: str, doc: dict[str, Any]) -> None:
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    (out / name).write_text(text, encoding="utf-8")


# -- §2 encoding --------------------------------------------------------------------------------------------


def valid_values() -> list[tuple[str, Any]]:
    ints = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1]
    ints += [-1, -32, -33, -128, -129, -(2**15), -(2**15) - 1, -(2**31), -(2**31) - 1, -(2**63)]
    out: list[tuple[str, Any]] = [("nil", None), ("false", False), ("true", True)]
    out += [(f"int {n}", n) for n in ints]
    out += [(f"bytes of length {n}", bytes(i % 256 for i in range(n))) for n in (0, 1, 32, 255, 256)]
    out += [
        ("empty text", ""),
        ("text a", "a"),
        ("text of 31 bytes (fixstr)", "x" * 31),
        ("text of 32 bytes (str8)", "x" * 32),
        ("text of 256 bytes (str16)", "y" * 256),
        ("non-ASCII text", "héllo ✓ 🎉"),
        ("empty array", []),
        ("array", [1, "x", None, b"\x00"]),
        ("array of 15 (fixarray)", list(range(15))),
        ("array of 16 (array16)", list(range(16))),
        ("empty map", {}),
        ("map with keys in byte order", {"b": 1, "a": None, "ab": True}),
        ("map keys sorted by UTF-8 bytes", {"é": 1, "z": 2, "Z": 3, "": 4}),
        ("map of 16 pairs (map16)", {f"k{i:02d}": i for i in range(16)}),
        ("nested", {"list": [{"x": [b"\xff"]}], "n": -5}),
        ("value inside 16 arrays (the maximum depth)", _nest(1, 16)),
        ("empty array inside 16 arrays", _nest([], 16)),
    ]
    return out


def _nest(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = [value]
    return value


def invalid_encodings() -> list[dict[str, Any]]:
    cases: list[tuple[str, str, str, str]] = [
        # (name, hex, rule, code)
        ("empty input", "", "§2.2", "truncated"),
        ("array of 2 with one element", "92 01", "§2.2", "truncated"),
        ("text cut short", "a3 61 62", "§2.2", "truncated"),
        ("uint16 cut short", "cd 01", "§2.2", "truncated"),
        ("bin8 length larger than the input", "c4 05 00", "§2.2", "truncated"),
        ("array32 count larger than the input", "dd ff ff ff ff", "§2.2", "truncated"),
        ("map32 count larger than the input", "df 00 01 00 00 a1 61", "§2.2", "truncated"),
        ("reserved byte c1", "c1", "§2.2", "malformed"),
        ("reserved byte c1 inside an array", "91 c1", "§2.2", "malformed"),
        ("trailing byte after a value", "01 02", "§2.2", "trailing_bytes"),
        ("trailing nil after an array", "91 01 c0", "§2.2", "trailing_bytes"),
        ("float32", "ca 3f 80 00 00", "§2.2", "bad_type"),
        ("float64", "cb 3f f0 00 00 00 00 00 00", "§2.2", "bad_type"),
        ("float64 inside a map", "81 a1 78 cb 00 00 00 00 00 00 00 00", "§2.2", "bad_type"),
        ("fixext1", "d4 01 00", "§2.2", "bad_type"),
        ("ext8", "c7 02 05 00 00", "§2.2", "bad_type"),
        ("timestamp32 (ext -1)", "d6 ff 00 00 00 01", "§2.2", "bad_type"),
        ("ext -1 of an invalid length", "c7 05 ff 00 00 00 00 01", "§2.2", "bad_type"),
        ("integer map key", "81 01 01", "§2.2", "bad_key"),
        ("bytes map key", "81 c4 01 61 01", "§2.2", "bad_key"),
        ("nil map key", "81 c0 01", "§2.2", "bad_key"),
        ("array map key", "81 91 01 01", "§2.2", "bad_key"),
        ("map map key", "81 80 01", "§2.2", "bad_key"),
        ("invalid UTF-8 byte", "a1 ff", "§2.2", "bad_utf8"),
        ("overlong UTF-8", "a2 c0 af", "§2.2", "bad_utf8"),
        ("UTF-8 surrogate", "a3 ed a0 80", "§2.2", "bad_utf8"),
        ("code point above U+10FFFF", "a4 f4 90 80 80", "§2.2", "bad_utf8"),
        ("UTF-8 sequence cut short", "a1 c3", "§2.2", "bad_utf8"),
        ("invalid UTF-8 in a map key", "81 a1 ff 01", "§2.2", "bad_utf8"),
        ("value inside 17 arrays", "91" * 17 + "01", "§2.3", "too_deep"),
        ("empty array inside 17 arrays", "91" * 17 + "90", "§2.3", "too_deep"),
        ("value inside 17 maps", "81 a1 6b" * 17 + "01", "§2.3", "too_deep"),
        ("value inside 2000 arrays", "91" * 2000 + "01", "§2.3", "too_deep"),
        ("5 as int8", "d0 05", "§2.2", "non_canonical"),
        ("5 as uint8", "cc 05", "§2.2", "non_canonical"),
        ("5 as uint16", "cd 00 05", "§2.2", "non_canonical"),
        ("5 as uint32", "ce 00 00 00 05", "§2.2", "non_canonical"),
        ("5 as uint64", "cf 00 00 00 00 00 00 00 05", "§2.2", "non_canonical"),
        ("200 as uint16", "cd 00 c8", "§2.2", "non_canonical"),
        ("200 as int16 (signed form of a non-negative integer)", "d1 00 c8", "§2.2", "non_canonical"),
        ("-1 as int8", "d0 ff", "§2.2", "non_canonical"),
        ("-33 as int16", "d1 ff df", "§2.2", "non_canonical"),
        ("2^32 as int64", "d3 00 00 00 01 00 00 00 00", "§2.2", "non_canonical"),
        ("short text as str8", "d9 01 61", "§2.2", "non_canonical"),
        ("short text as str16", "da 00 01 61", "§2.2", "non_canonical"),
        ("short bytes as bin16", "c5 00 01 61", "§2.2", "non_canonical"),
        ("short array as array16", "dc 00 01 01", "§2.2", "non_canonical"),
        ("short map as map16", "de 00 01 a1 61 01", "§2.2", "non_canonical"),
        ("map keys out of order", "82 a1 62 01 a1 61 01", "§2.2", "non_canonical"),
        ("longer key before its prefix", "82 a2 61 62 01 a1 61 01", "§2.2", "non_canonical"),
        ("duplicate map keys, same value", "82 a1 61 01 a1 61 01", "§2.2", "non_canonical"),
        ("duplicate map keys, different values", "82 a1 61 01 a1 61 02", "§2.2", "non_canonical"),
    ]
    out = [
        {"name": name, "hex": bytes.fromhex(h).hex(), "rule": rule, "code": code}
        for name, h, rule, code in cases
    ]
    out.append(
        {
            "name": "longer than the context's limit",
            "hex": encode("abc").hex(),
            "max_size": 3,
            "rule": "§2.3",
            "code": "too_large",
        }
    )
    return out


def encoding_doc() -> dict[str, Any]:
    return {
        "spec": "spec/protocol.md §2",
        "generator": "spec/make_vectors.py",
        "format": (
            "valid: hex is the canonical encoding of value; value is tagged: null/true/false, "
            '{"int": decimal}, {"bytes": hex}, {"text": str}, {"array": [...]}, {"map": [[key, value], ...]}. '
            "invalid: decoding hex (with max_size when given, else the default limit) fails with code."
        ),
        "valid": [{"name": name, "hex": encode(v).hex(), "value": tagged(v)} for name, v in valid_values()],
        "invalid": invalid_encodings(),
    }


# -- §3 ids -------------------------------------------------------------------------------------------------


def ids_doc() -> dict[str, Any]:
    keys = [SigningKey(seed(label)) for label in ("author-a", "author-b", "author-c")]
    feeds = [bytes(32), b"\xff" * 32, *[k.public_key for k in keys]]
    hashes = [hash_bytes(b""), hash_bytes(b"tidings"), b"\x00" * 31 + b"\x01"]
    feed = str(keys[0].feed)
    body = feed[1:]
    invalid_feed = [
        ("empty", ""),
        ("sigil only", "@"),
        ("no sigil", body),
        ("entry sigil on a feed id", "%" + body),
        ("uppercase", "@" + body.upper()),
        ("one uppercase letter", "@" + body[:10] + body[10].upper() + body[11:]),
        ("trailing newline", feed + "\n"),
        ("leading space", " " + feed),
        ("padded", feed + "===="),
        ("one character short", feed[:-1]),
        ("one character long", feed + "a"),
        ("character outside the alphabet (1)", "@" + body[:5] + "1" + body[6:]),
        ("character outside the alphabet (8)", "@" + body[:5] + "8" + body[6:]),
        ("non-zero trailing bits", "@" + body[:-1] + ("b" if body[-1] == "a" else "r")),
        ("non-ASCII", "@" + body[:5] + "é" + body[6:]),
        ("31 bytes", "@" + _id_body(keys[0].public_key[:31])),
        ("33 bytes", "@" + _id_body(keys[0].public_key + b"\x00")),
    ]
    entry = "%" + str(keys[1].feed)[1:]
    invalid_entry = [
        ("feed sigil on an entry id", "@" + entry[1:]),
        ("uppercase", entry.upper()),
        ("padded", entry + "===="),
    ]
    return {
        "spec": "spec/protocol.md §3.1",
        "generator": "spec/make_vectors.py",
        "format": (
            "keys: Ed25519 seed -> public key -> feed id. hashes: BLAKE2b-256 of input. feeds/entries: "
            "32 bytes <-> text id, both ways. invalid: parsing text as kind fails with code."
        ),
        "keys": [
            {"seed": seed(label).hex(), "public_key": k.public_key.hex(), "feed_id": str(k.feed)}
            for label, k in zip(("author-a", "author-b", "author-c"), keys, strict=True)
        ],
        "hashes": [
            {"input": data.hex(), "hash": hash_bytes(data).hex()}
            for data in (b"", b"tidings", bytes(range(256)))
        ],
        "feeds": [{"hex": k.hex(), "text": "@" + _id_body(k)} for k in feeds],
        "entries": [{"hex": h.hex(), "text": "%" + _id_body(h)} for h in hashes],
        "invalid": [
            *[
                {"name": n, "kind": "feed", "text": t, "rule": "§3.1", "code": "bad_id"}
                for n, t in invalid_feed
            ],
            *[
                {"name": n, "kind": "entry", "text": t, "rule": "§3.1", "code": "bad_id"}
                for n, t in invalid_entry
            ],
        ],
    }


def _id_body(raw: bytes) -> str:
    import base64

    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


# -- §6 lipmaa ----------------------------------------------------------------------------------------------


def lipmaa_doc() -> dict[str, Any]:
    large = [242, 243, 364, 365, 1000, 1093, 3280, 9841, 29524, 10**6, 10**9, 2**31, 2**53 - 1]
    return {
        "spec": "spec/protocol.md §6",
        "generator": "spec/make_vectors.py",
        "format": (
            "values: lipmaa(n), and skip_target(n) = the seq the skip link names, or null when the entry "
            "carries none (§6.2). paths: path_to_first(n) (§6.3)."
        ),
        "values": [
            {"n": n, "lipmaa": lipmaa(n), "skip_target": skip_target(n)} for n in [*range(1, 201), *large]
        ],
        "paths": [{"n": n, "path": path_to_first(n)} for n in (1, 2, 4, 13, 40, 100, 121, 1000, 2**53 - 1)],
    }


# -- §4, §5 entries -----------------------------------------------------------------------------------------


def build_log(key: SigningKey, other: SigningKey, count: int = 30) -> list[tuple[Entry, bytes]]:
    """The valid log of spec vectors: ``count`` entries of one feed with varied content."""
    log: list[tuple[Entry, bytes]] = []

    def append(make: Callable[[list[tuple[Entry, bytes]]], Content | bytes], ts: int) -> None:
        made = make(log)
        payload = made if isinstance(made, bytes) else encode_content(made)
        seq = len(log) + 1
        target = skip_target(seq)
        entry = create_entry(
            key,
            seq=seq,
            backlink=log[-1][0].hash if log else None,
            skiplink=log[target - 1][0].hash if target is not None else None,
            timestamp=ts,
            payload=payload,
        )
        log.append((entry, payload))

    def h(seq: int) -> Callable[[list[tuple[Entry, bytes]]], bytes]:
        return lambda lg: lg[seq - 1][0].hash

    b = other.public_key
    makers: list[Callable[[list[tuple[Entry, bytes]]], Content | bytes]] = [
        lambda lg: Profile(name="Alice", bio="Testing Tidings."),
        lambda lg: Post(text="hello, world"),
        lambda lg: Post(text="Tags and a language", tags=("intro", "tidings"), lang="en"),
        lambda lg: Follow(feed=b),
        lambda lg: Reaction(target=h(2)(lg), emoji="👍"),
        lambda lg: Post(text="a reply to myself", reply=h(2)(lg), root=h(2)(lg)),
        lambda lg: Repost(target=h(3)(lg)),
        lambda lg: Post(text="hi @bob", mentions=(b,)),
        lambda lg: Block(feed=bytes(32)),
        lambda lg: Unblock(feed=bytes(32)),
        lambda lg: Unfollow(feed=b),
        lambda lg: Follow(feed=b),
        lambda lg: Unknown(kind="poll", extra={"question": "tea or coffee?", "options": ["tea", "coffee"]}),
        lambda lg: Post(text="a post with a field from the future", extra={"mood": "curious"}),
        lambda lg: Delete(target=h(7)(lg)),
        lambda lg: Profile(bio=""),
        lambda lg: b"",  # an empty payload: the entry is valid even though the content is not (§5.4, §8.4)
    ]
    for seq in range(1, count + 1):
        make = makers[seq - 1] if seq <= len(makers) else _numbered_post(seq)
        # seq 10 has the timestamp of seq 9: equal timestamps are allowed (§5.3).
        ts = BASE_TS + 60_000 * (seq if seq != 10 else 9)
        append(make, ts)
    return log


def _numbered_post(seq: int) -> Callable[[list[tuple[Entry, bytes]]], Content]:
    return lambda lg: Post(text=f"post number {seq}")


def entry_vector(entry: Entry, payload: bytes | None) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "timestamp": entry.timestamp,
        "backlink": hx(entry.backlink),
        "skiplink": hx(entry.skiplink),
        "payload": hx(payload),
        "payload_hash": entry.payload_hash.hex(),
        "payload_size": entry.payload_size,
        "signing_bytes": entry.signing_bytes().hex(),
        "signature": entry.signature.hex(),
        "entry": entry.raw.hex(),
        "hash": entry.hash.hex(),
        "id": str(entry.id),
    }


def invalid(
    name: str,
    raw: bytes,
    rule: str,
    code: str,
    *,
    previous: Entry | None = None,
    skip: Entry | None = None,
    payload: bytes | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    context: dict[str, str] = {}
    if previous is not None:
        context["previous"] = previous.raw.hex()
    if skip is not None:
        context["skip"] = skip.raw.hex()
    if payload is not None:
        context["payload"] = payload.hex()
    out: dict[str, Any] = {"name": name, "entry": raw.hex(), "context": context, "rule": rule, "code": code}
    if note:
        out["note"] = note
    return out


def flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    return data[:index] + bytes([data[index] ^ mask]) + data[index + 1 :]


def invalid_entries(
    key: SigningKey, other: SigningKey, log: list[tuple[Entry, bytes]]
) -> list[dict[str, Any]]:
    e = [entry for entry, _ in log]  # e[i] has seq i + 1
    p = [payload for _, payload in log]
    out: list[dict[str, Any]] = []
    add = out.append

    def at(seq: int, /, **changes: Any) -> dict[str, Any]:
        fields = fields_of(e[seq - 1])
        fields.update(changes)
        return fields

    # §2 / §4.3: encoding and size.
    e5 = e[4]
    add(invalid("trailing byte", e5.raw + b"\x00", "§2.2", "trailing_bytes", previous=e[3]))
    add(invalid("last byte missing", e5.raw[:-1], "§2.2", "truncated", previous=e[3]))
    add(invalid("empty input", b"", "§2.2", "truncated"))
    add(
        invalid(
            "257 bytes",
            e5.raw + b"\xc0" * (257 - len(e5.raw)),
            "§4.3",
            "too_large",
            note="the size limit is checked before parsing (§4.3), so the trailing bytes are never seen",
        )
    )
    parts = field_bytes(fields_of(e5))
    sig = encode(e5.signature)
    add(
        invalid(
            "seq in a longer integer form (cd 00 05)",
            b"\x99" + b"".join([*parts[:2], b"\xcd\x00\x05", *parts[3:]]) + sig,
            "§2.2",
            "non_canonical",
            previous=e[3],
        )
    )
    add(invalid("array16 header", b"\xdc\x00\x09" + b"".join(parts) + sig, "§2.2", "non_canonical"))
    add(
        invalid(
            "author as bin16",
            b"\x99" + parts[0] + b"\xc5\x00\x20" + e5.author + b"".join(parts[2:]) + sig,
            "§2.2",
            "non_canonical",
        )
    )
    add(
        invalid(
            "timestamp as float64",
            b"\x99" + b"".join(parts[:5]) + b"\xcb" + bytes(8) + b"".join(parts[6:]) + sig,
            "§2.2",
            "bad_type",
        )
    )

    # §4.2: structure. Each is signed properly, so only the one rule is broken.
    add(
        invalid(
            "array of 8 (no signature)", encode([fields_of(e5)[n] for n in ENTRY_FIELDS]), "§4.2", "bad_shape"
        )
    )
    add(
        invalid(
            "array of 10",
            encode([*[fields_of(e5)[n] for n in ENTRY_FIELDS], e5.signature, None]),
            "§4.2",
            "bad_shape",
        )
    )
    add(invalid("a map, not an array", encode({"seq": 5}), "§4.2", "bad_shape"))
    add(invalid("an integer, not an array", encode(5), "§4.2", "bad_shape"))
    add(invalid("version 2", sign_fields(key, at(5, version=2)), "§4.2", "unknown_version"))
    add(invalid("version 0", sign_fields(key, at(5, version=0)), "§4.2", "unknown_version"))
    add(invalid("version true", sign_fields(key, at(5, version=True)), "§4.2", "unknown_version"))
    add(invalid("version as text", sign_fields(key, at(5, version="1")), "§4.2", "unknown_version"))
    add(
        invalid(
            "author of 31 bytes", sign_fields(key, at(5, author=key.public_key[:31])), "§4.2", "bad_author"
        )
    )
    add(invalid("author as text", sign_fields(key, at(5, author=str(key.feed))), "§4.2", "bad_author"))
    add(invalid("seq 0", sign_fields(key, at(1, seq=0)), "§4.2", "bad_seq"))
    add(invalid("seq -1", sign_fields(key, at(1, seq=-1)), "§4.2", "bad_seq"))
    add(invalid("seq 2^53", sign_fields(key, at(2, seq=2**53)), "§4.2", "bad_seq"))
    add(invalid("timestamp -1", sign_fields(key, at(5, timestamp=-1)), "§4.2", "bad_timestamp"))
    add(invalid("timestamp 2^53", sign_fields(key, at(5, timestamp=2**53)), "§4.2", "bad_timestamp"))
    add(
        invalid(
            "payload hash of 31 bytes",
            sign_fields(key, at(5, payload_hash=bytes(31))),
            "§4.2",
            "bad_payload_hash",
        )
    )
    add(
        invalid("payload size 16385", sign_fields(key, at(5, payload_size=16385)), "§4.2", "bad_payload_size")
    )
    add(invalid("payload size -1", sign_fields(key, at(5, payload_size=-1)), "§4.2", "bad_payload_size"))
    add(
        invalid(
            "signature of 63 bytes",
            encode([*[fields_of(e5)[n] for n in ENTRY_FIELDS], e5.signature[:63]]),
            "§4.2",
            "bad_signature_field",
        )
    )
    add(invalid("backlink on seq 1", sign_fields(key, at(1, backlink=e[1].hash)), "§4.2", "bad_backlink"))
    add(invalid("no backlink on seq 2", sign_fields(key, at(2, backlink=None)), "§4.2", "bad_backlink"))
    add(
        invalid(
            "backlink of 31 bytes", sign_fields(key, at(2, backlink=e[0].hash[:31])), "§4.2", "bad_backlink"
        )
    )
    add(invalid("skip link on seq 1", sign_fields(key, at(1, skiplink=e[1].hash)), "§4.2", "bad_skiplink"))
    add(
        invalid(
            "skip link on seq 5, which has none (lipmaa(5) = 4)",
            sign_fields(key, at(5, skiplink=e[0].hash)),
            "§6.2",
            "bad_skiplink",
        )
    )
    add(invalid("missing skip link on seq 4", sign_fields(key, at(4, skiplink=None)), "§6.2", "bad_skiplink"))
    add(
        invalid(
            "missing skip link on seq 13", sign_fields(key, at(13, skiplink=None)), "§6.2", "bad_skiplink"
        )
    )
    add(
        invalid(
            "skip link of 31 bytes", sign_fields(key, at(4, skiplink=e[0].hash[:31])), "§4.2", "bad_skiplink"
        )
    )

    # §5.2: signatures.
    raw = e5.raw
    sig_at = len(raw) - 64
    add(invalid("flipped bit in the signature's R", flip(raw, sig_at), "§5.2", "bad_signature"))
    add(invalid("flipped bit in the signature's S", flip(raw, sig_at + 40), "§5.2", "bad_signature"))
    add(invalid("flipped bit in the author", flip(raw, raw.index(e5.author)), "§5.2", "bad_signature"))
    add(
        invalid(
            "flipped bit in the timestamp",
            flip(raw, raw.index(encode(e5.timestamp)) + 8),
            "§5.2",
            "bad_signature",
        )
    )
    add(
        invalid(
            "flipped bit in the payload hash",
            flip(raw, raw.index(e5.payload_hash) + 5),
            "§5.2",
            "bad_signature",
        )
    )
    s = int.from_bytes(e5.signature[32:], "little") + ED25519_L
    malleated = e5.signature[:32] + s.to_bytes(32, "little")
    add(
        invalid(
            "S + L (a malleated signature)",
            encode([*[fields_of(e5)[n] for n in ENTRY_FIELDS], malleated]),
            "§5.2",
            "bad_signature",
        )
    )
    foreign = other.sign(e5.signing_bytes())
    add(
        invalid(
            "signed by another key",
            encode([*[fields_of(e5)[n] for n in ENTRY_FIELDS], foreign]),
            "§5.2",
            "bad_signature",
        )
    )
    no_domain = key.sign(encode([fields_of(e5)[n] for n in ENTRY_FIELDS]))
    add(
        invalid(
            "signed without the domain",
            encode([*[fields_of(e5)[n] for n in ENTRY_FIELDS], no_domain]),
            "§5.1",
            "bad_signature",
        )
    )
    identity = b"\x01" + bytes(31)  # the neutral point: small order
    weak = fields_of(e[0])
    weak["author"] = identity
    add(
        invalid(
            "small-order key with R = identity and S = 0 (the equation holds; rules 2 and 3 refuse it)",
            encode([*[weak[n] for n in ENTRY_FIELDS], identity + bytes(32)]),
            "§5.2",
            "bad_signature",
        )
    )

    # §5.3: links and timestamps.
    add(
        invalid(
            "backlink names seq 3 instead of seq 4",
            sign_fields(key, at(5, backlink=e[2].hash)),
            "§5.3",
            "bad_backlink",
            previous=e[3],
        )
    )
    add(
        invalid(
            "the entry given as previous has seq 3, not 4",
            e5.raw,
            "§5.3",
            "bad_backlink",
            previous=e[2],
        )
    )
    add(
        invalid(
            "skip link of seq 4 names seq 2 instead of seq 1",
            sign_fields(key, at(4, skiplink=e[1].hash)),
            "§5.3",
            "bad_skiplink",
            previous=e[2],
            skip=e[0],
        )
    )
    add(
        invalid(
            "skip link of seq 13 names seq 5 instead of seq 4",
            sign_fields(key, at(13, skiplink=e[4].hash)),
            "§5.3",
            "bad_skiplink",
            previous=e[11],
            skip=e[3],
        )
    )
    stranger = create_entry(
        other, seq=2, backlink=e[0].hash, skiplink=None, timestamp=BASE_TS + 120_000, payload=p[1]
    )
    add(
        invalid(
            "previous written by another author",
            stranger.raw,
            "§5.3",
            "author_mismatch",
            previous=e[0],
        )
    )
    last = e[-1]
    backwards = create_entry(
        key, seq=last.seq + 1, backlink=last.hash, skiplink=None, timestamp=last.timestamp - 1, payload=p[1]
    )
    add(
        invalid(
            f"timestamp of seq {backwards.seq} before seq {last.seq}",
            backwards.raw,
            "§5.3",
            "timestamp_order",
            previous=last,
        )
    )
    early = sign_fields(key, at(4, timestamp=e[0].timestamp - 1))
    add(
        invalid(
            "timestamp of seq 4 before its skip target seq 1",
            early,
            "§5.3",
            "timestamp_order",
            skip=e[0],
            note="only the skip target is given",
        )
    )

    # §5.4: payload.
    add(invalid("payload one byte longer", e5.raw, "§5.4", "payload_size", payload=p[4] + b"\x00"))
    add(invalid("payload one byte changed", e5.raw, "§5.4", "payload_hash", payload=flip(p[4], 2)))
    add(invalid("payload of another entry", e[1].raw, "§5.4", "payload_size", payload=p[2]))
    return out


def entries_doc(key: SigningKey, other: SigningKey, log: list[tuple[Entry, bytes]]) -> dict[str, Any]:
    return {
        "spec": "spec/protocol.md §4, §5",
        "generator": "spec/make_vectors.py",
        "format": (
            "log: a valid feed; each entry decodes to the listed fields, its hash is hash(entry), its "
            "signing bytes are listed, and it verifies with the previous entry, its skip target and its "
            "payload. create_entry(seed, ...) reproduces entry exactly. invalid: Entry.decode(entry) or "
            "verify_entry(entry, previous=context.previous, skip=context.skip, payload=context.payload) "
            "fails with code."
        ),
        "signing_domain": SIGNING_DOMAIN.hex(),
        "author": {"seed": key.seed.hex(), "public_key": key.public_key.hex(), "feed_id": str(key.feed)},
        "other_author": {
            "seed": other.seed.hex(),
            "public_key": other.public_key.hex(),
            "feed_id": str(other.feed),
        },
        "log": [entry_vector(entry, payload) for entry, payload in log],
        "invalid": invalid_entries(key, other, log),
    }


# -- §7 forks -----------------------------------------------------------------------------------------------


def forks_doc(key: SigningKey, other: SigningKey, log: list[tuple[Entry, bytes]]) -> dict[str, Any]:
    e = [entry for entry, _ in log]
    alt_payload = encode_content(Post(text="the other branch"))
    alt = create_entry(
        key, seq=3, backlink=e[1].hash, skiplink=None, timestamp=e[2].timestamp, payload=alt_payload
    )
    proof = ForkProof(first=e[2], second=alt)
    low, high = proof.first, proof.second
    bad_sig = Entry.decode(alt.raw[:-1] + bytes([alt.raw[-1] ^ 1]))
    other_first = create_entry(other, seq=1, backlink=None, skiplink=None, timestamp=BASE_TS, payload=b"")

    def pair(a: Entry, b: Entry) -> bytes:
        x, y = sorted([a, b], key=lambda en: en.hash)
        return encode([x.raw, y.raw])

    cases: list[tuple[str, bytes, str, str]] = [
        ("entries out of order (higher id first)", encode([high.raw, low.raw]), "§7.2", "non_canonical"),
        ("the same entry twice", encode([e[2].raw, e[2].raw]), "§7.2", "not_a_fork"),
        ("different seqs", pair(e[2], e[3]), "§7.2", "not_a_fork"),
        ("different authors", pair(e[0], other_first), "§7.2", "not_a_fork"),
        ("one signature invalid", pair(e[2], bad_sig), "§7.2", "bad_signature"),
        ("one entry only", encode([low.raw]), "§7.2", "bad_shape"),
        ("three entries", encode([low.raw, high.raw, e[3].raw]), "§7.2", "bad_shape"),
        ("an entry as text", encode([low.raw, high.raw.hex()]), "§7.2", "bad_shape"),
        ("a map", encode({"first": low.raw, "second": high.raw}), "§7.2", "bad_shape"),
        ("an element is not an entry", encode([low.raw[:-1], high.raw]), "§7.2", "truncated"),
        ("trailing byte", proof.encode() + b"\x00", "§2.2", "trailing_bytes"),
        (
            "an entry as bin16",
            b"\x92" + b"\xc5" + len(low.raw).to_bytes(2, "big") + low.raw + encode(high.raw),
            "§2.2",
            "non_canonical",
        ),
        ("1027 bytes", encode([bytes(510), bytes(510)]), "§7.2", "too_large"),
    ]
    return {
        "spec": "spec/protocol.md §7",
        "generator": "spec/make_vectors.py",
        "format": (
            "valid: ForkProof.decode(proof) succeeds; first and second are the entries, lower id first; "
            "encoding the proof gives proof again. invalid: ForkProof.decode(proof) fails with code."
        ),
        "valid": [
            {
                "name": "two entries at seq 3 of one feed",
                "proof": proof.encode().hex(),
                "author": key.public_key.hex(),
                "seq": 3,
                "first": low.raw.hex(),
                "second": high.raw.hex(),
                "first_id": str(low.id),
                "second_id": str(high.id),
            }
        ],
        "invalid": [{"name": n, "proof": raw.hex(), "rule": r, "code": c} for n, raw, r, c in cases],
    }


# -- §8 content ---------------------------------------------------------------------------------------------


def content_doc(key: SigningKey, other: SigningKey) -> dict[str, Any]:
    ref = hash_bytes(b"an entry")
    ref2 = hash_bytes(b"another entry")
    feed = other.public_key
    valid: list[tuple[str, str, Content]] = [
        ("§8.2.1", "post", Post(text="hello")),
        (
            "§8.2.1",
            "post with every field",
            Post(
                text="re: hello",
                reply=ref,
                root=ref2,
                mentions=(feed, key.public_key),
                tags=("a", "b"),
                lang="en",
            ),
        ),
        ("§8.2.1", "post of 8192 bytes of text (2-byte characters)", Post(text="é" * 4096)),
        (
            "§8.2.1",
            "post with 32 mentions and 16 tags",
            Post(text="many", mentions=(feed,) * 32, tags=("t",) * 16),
        ),
        ("§8.1", "post with an extra key, kept", Post(text="new", extra={"mood": "curious", "n": [1, 2]})),
        ("§8.2.2", "reaction", Reaction(target=ref, emoji="👍")),
        ("§8.2.3", "repost", Repost(target=ref)),
        ("§8.2.4", "follow", Follow(feed=feed)),
        ("§8.2.5", "unfollow", Unfollow(feed=feed)),
        ("§8.2.6", "block", Block(feed=feed)),
        ("§8.2.7", "unblock", Unblock(feed=feed)),
        ("§8.2.8", "profile with name and bio", Profile(name="Alice", bio="Hi.")),
        ("§8.2.8", "profile with a name only", Profile(name="Alice")),
        ("§8.2.8", "profile with an empty bio only", Profile(bio="")),
        ("§8.2.9", "delete", Delete(target=ref)),
        ("§8.4", "unknown type, kept", Unknown(kind="poll", extra={"question": "?", "options": ["a", "b"]})),
        ("§8.4", "unknown type with a 64-byte name", Unknown(kind="x" * 64)),
    ]
    valid_out = []
    for rule, name, content in valid:
        payload = encode_content(content)
        valid_out.append(
            {
                "name": name,
                "rule": rule,
                "payload": payload.hex(),
                "type": _type(content),
                "map": tagged(content.to_map()),
            }
        )
    # Accepted but not in the form a writer produces (§8.1): nil fields and empty arrays count as absent.
    for name, raw_map, canonical in (
        (
            "post with nil reply and root",
            {"type": "post", "text": "x", "reply": None, "root": None},
            {"type": "post", "text": "x"},
        ),
        (
            "post with empty mentions and tags",
            {"type": "post", "text": "x", "mentions": [], "tags": []},
            {"type": "post", "text": "x"},
        ),
    ):
        payload = encode(raw_map)
        assert decode_content(payload).to_map() == canonical
        valid_out.append(
            {"name": name, "rule": "§8.1", "payload": payload.hex(), "type": "post", "map": tagged(canonical)}
        )

    # §14.2: a bridged post names its origin.
    bridged = Post(
        text="Story 1",
        origin={
            "network": "rss",
            "id": "news-1",
            "author": "Ed",
            "url": "https://news.example/1",
            "ts": 1704103200000,
        },
    )
    valid_out.append(
        {
            "name": "post with an origin (a bridged post)",
            "rule": "§8.2.1",
            "payload": encode_content(bridged).hex(),
            "type": "post",
            "map": tagged(bridged.to_map()),
        }
    )

    def post(**fields: Any) -> bytes:
        return encode({"type": "post", **fields})

    too_big = encode({"type": "x", "pad": "x" * 16370})
    assert len(too_big) == 16385
    # {"f": 0.0, "text": "x", "type": "post"}: keys in order, the float is the only fault.
    with_float = (
        b"\x83"
        + encode("f")
        + b"\xcb"
        + bytes(8)
        + encode("text")
        + encode("x")
        + encode("type")
        + encode("post")
    )
    cases: list[tuple[str, bytes, str, str]] = [
        ("an array, not a map", encode(["post", "x"]), "§8.1", "invalid_content"),
        ("no type", encode({"text": "x"}), "§8.1", "invalid_content"),
        ("type is an integer", encode({"type": 1}), "§8.1", "invalid_content"),
        ("type is bytes", encode({"type": b"post", "text": "x"}), "§8.1", "invalid_content"),
        ("empty type", encode({"type": ""}), "§8.1", "invalid_content"),
        ("type of 65 bytes", encode({"type": "x" * 65}), "§8.1", "invalid_content"),
        ("post without text", post(), "§8.2.1", "invalid_content"),
        ("post with empty text", post(text=""), "§8.2.1", "invalid_content"),
        ("post with blank text", post(text=" \n\t\u3000"), "§8.2.1", "invalid_content"),
        ("post text of 8193 bytes", post(text="x" * 8193), "§8.2.1", "invalid_content"),
        ("post text as bytes", post(text=b"hi"), "§8.2.1", "invalid_content"),
        ("reply without root", post(text="x", reply=ref), "§8.2.1", "invalid_content"),
        ("root without reply", post(text="x", root=ref), "§8.2.1", "invalid_content"),
        ("reply of 31 bytes", post(text="x", reply=ref[:31], root=ref), "§8.2.1", "invalid_content"),
        (
            "reply as an entry id text",
            post(text="x", reply="%" + "a" * 52, root=ref),
            "§8.2.1",
            "invalid_content",
        ),
        ("mentions not an array", post(text="x", mentions=feed), "§8.2.1", "invalid_content"),
        ("33 mentions", post(text="x", mentions=[feed] * 33), "§8.2.1", "invalid_content"),
        ("mention of 33 bytes", post(text="x", mentions=[feed + b"\x00"]), "§8.2.1", "invalid_content"),
        ("17 tags", post(text="x", tags=["t"] * 17), "§8.2.1", "invalid_content"),
        ("tag of 65 bytes", post(text="x", tags=["t" * 65]), "§8.2.1", "invalid_content"),
        ("blank tag", post(text="x", tags=[" "]), "§8.2.1", "invalid_content"),
        ("tag not text", post(text="x", tags=[1]), "§8.2.1", "invalid_content"),
        ("lang of 17 bytes", post(text="x", lang="x" * 17), "§8.2.1", "invalid_content"),
        ("empty lang", post(text="x", lang=""), "§8.2.1", "invalid_content"),
        ("reaction without emoji", encode({"type": "reaction", "target": ref}), "§8.2.2", "invalid_content"),
        (
            "reaction emoji of 33 bytes",
            encode({"type": "reaction", "target": ref, "emoji": "x" * 33}),
            "§8.2.2",
            "invalid_content",
        ),
        ("reaction without target", encode({"type": "reaction", "emoji": "x"}), "§8.2.2", "invalid_content"),
        (
            "repost target as text",
            encode({"type": "repost", "target": ref.hex()}),
            "§8.2.3",
            "invalid_content",
        ),
        ("repost with nil target", encode({"type": "repost", "target": None}), "§8.2.3", "invalid_content"),
        ("follow without feed", encode({"type": "follow"}), "§8.2.4", "invalid_content"),
        (
            "unfollow feed of 33 bytes",
            encode({"type": "unfollow", "feed": feed + b"\x00"}),
            "§8.2.5",
            "invalid_content",
        ),
        (
            "block feed as a feed id text",
            encode({"type": "block", "feed": str(other.feed)}),
            "§8.2.6",
            "invalid_content",
        ),
        (
            "unblock feed of 31 bytes",
            encode({"type": "unblock", "feed": feed[:31]}),
            "§8.2.7",
            "invalid_content",
        ),
        ("profile with neither name nor bio", encode({"type": "profile"}), "§8.2.8", "invalid_content"),
        ("profile with a blank name", encode({"type": "profile", "name": "  "}), "§8.2.8", "invalid_content"),
        (
            "profile name of 65 bytes",
            encode({"type": "profile", "name": "x" * 65}),
            "§8.2.8",
            "invalid_content",
        ),
        (
            "profile bio of 1025 bytes",
            encode({"type": "profile", "bio": "x" * 1025}),
            "§8.2.8",
            "invalid_content",
        ),
        ("delete without target", encode({"type": "delete"}), "§8.2.9", "invalid_content"),
        (
            "delete target of 31 bytes",
            encode({"type": "delete", "target": ref[:31]}),
            "§8.2.9",
            "invalid_content",
        ),
        ("payload of 16385 bytes", too_big, "§8.3", "too_large"),
        (
            "keys out of order",
            b"\x82" + encode("type") + encode("post") + encode("text") + encode("x"),
            "§2.2",
            "non_canonical",
        ),
        ("a float in an extra key", with_float, "§2.2", "bad_type"),
        ("trailing byte", encode({"type": "post", "text": "x"}) + b"\x00", "§2.2", "trailing_bytes"),
        ("empty payload", b"", "§2.2", "truncated"),
        ("origin without id", post(text="x", origin={"network": "rss"}), "§8.2.1", "invalid_content"),
        (
            "origin with an unknown key",
            post(text="x", origin={"network": "rss", "id": "1", "x": "y"}),
            "§8.2.1",
            "invalid_content",
        ),
        (
            "origin network of 33 bytes",
            post(text="x", origin={"network": "n" * 33, "id": "1"}),
            "§8.2.1",
            "invalid_content",
        ),
        (
            "origin ts as text",
            post(text="x", origin={"network": "rss", "id": "1", "ts": "1"}),
            "§8.2.1",
            "invalid_content",
        ),
        ("origin not a map", post(text="x", origin="rss"), "§8.2.1", "invalid_content"),
    ]
    return {
        "spec": "spec/protocol.md §8",
        "generator": "spec/make_vectors.py",
        "format": (
            "valid: decode_content(payload) succeeds with the given type, and its map (schema fields and "
            "extra keys, nil fields and empty arrays dropped; tagged as in encoding.json) is map. "
            "invalid: decode_content(payload) fails with code (invalid_content for every §8 rule; name "
            "says which)."
        ),
        "valid": valid_out,
        "invalid": [{"name": n, "payload": raw.hex(), "rule": r, "code": c} for n, raw, r, c in cases],
    }


def _type(content: Content) -> str:
    return content.kind if isinstance(content, Unknown) else content.type


# -- main ---------------------------------------------------------------------------------------------------


def generate(out: Path) -> list[Path]:
    """Write every vector file into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    key, other = SigningKey(seed("author-a")), SigningKey(seed("author-b"))
    log = build_log(key, other)
    docs = {
        "encoding.json": encoding_doc(),
        "ids.json": ids_doc(),
        "lipmaa.json": lipmaa_doc(),
        "entries.json": entries_doc(key, other, log),
        "forks.json": forks_doc(key, other, log),
        "content.json": content_doc(key, other),
        "records.json": records_doc(),
        "blobs.json": blobs_doc(tagged),
        "box.json": boxes_doc(tagged, seed),
    }
    for name, doc in docs.items():
        write(out, name, doc)
    return [out / name for name in docs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--out", type=Path, default=HERE / "vectors", help="output directory (default: spec/vectors)"
    )
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
