"""Check tidings.protocol against every vector in spec/vectors (spec/protocol.md §1.4).

Every valid vector must pass and every invalid one must fail with exactly its labelled code. The vectors
are also regenerated into a temporary directory and compared byte for byte with the committed ones.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tidings.protocol import (
    BlobHasher,
    BlobId,
    Entry,
    EntryId,
    FeedId,
    ForkProof,
    ProtocolError,
    RemoteProtocolError,
    SigningKey,
    blob_id,
    blob_id_text,
    blob_refs,
    check_fork,
    create_entry,
    decode,
    decode_content,
    encode,
    encode_content,
    entry_id_text,
    feed_id_text,
    hash_bytes,
    lipmaa,
    path_to_first,
    skip_target,
    type_of,
    verify_entry,
)
from tidings.protocol.box import Box, BoxKey, Message, Opened, Undecryptable, box_context, open_box, seal
from tidings.protocol.entry import SIGNING_DOMAIN
from tidings.protocol.record_admission import peek_record
from tidings.protocol.records import (
    MemberRecord,
    NodeRecord,
    decode_record,
    looks_like_record,
    validate_record,
)

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "spec" / "vectors"
SPEC = ROOT / "spec" / "protocol.md"
FILES = (
    "blobs.json",
    "box.json",
    "content.json",
    "encoding.json",
    "entries.json",
    "forks.json",
    "ids.json",
    "lipmaa.json",
    "records.json",
)


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return data


def untag(value: Any) -> Any:
    """Inverse of the tagged JSON form described in encoding.json's "format"."""
    if value is None or isinstance(value, bool):
        return value
    (tag, inner), *rest = value.items()
    assert not rest, value
    if tag == "int":
        return int(inner)
    if tag == "bytes":
        return bytes.fromhex(inner)
    if tag == "text":
        return inner
    if tag == "array":
        return [untag(v) for v in inner]
    if tag == "map":
        return {k: untag(v) for k, v in inner}
    raise AssertionError(f"unknown tag {tag}")


def same(a: Any, b: Any) -> bool:
    """Equality that also tells bool from int and bytes from text, all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def fails_with(code: str, action: Any) -> None:
    with pytest.raises(ProtocolError) as info:
        action()
    assert isinstance(info.value, RemoteProtocolError), repr(info.value)
    assert info.value.code == code, f"expected {code}, got {info.value.code}: {info.value}"


def cases(name: str, key: str) -> list[Any]:
    return [pytest.param(v, id=v.get("name", str(i))) for i, v in enumerate(load(name)[key])]


def opt_entry(hex_text: str | None) -> Entry | None:
    return None if hex_text is None else Entry.decode(bytes.fromhex(hex_text))


# -- every file ---------------------------------------------------------------------------------------------


def spec_sections() -> set[str]:
    found = set()
    for line in SPEC.read_text(encoding="utf-8").splitlines():
        m = re.match(r"#{2,4} (\d+(?:\.\d+)*)\.? ", line)
        if m:
            found.add("§" + m.group(1))
    # "#### 8.2.4 `follow`, 8.2.5 `unfollow`, ..." names several sections in one heading.
    found.update({"§8.2.5", "§8.2.6", "§8.2.7"})
    return found


def test_the_vector_files_are_the_expected_ones() -> None:
    assert sorted(p.name for p in VECTORS.glob("*.json")) == list(FILES)


@pytest.mark.parametrize("name", FILES)
def test_every_file_and_rule_cites_an_existing_section(name: str) -> None:
    sections = spec_sections()
    doc = load(name)
    cited = doc["spec"]
    assert cited.startswith("spec/protocol.md §")
    for part in re.findall(r"§[\d.]+", cited):
        assert part in sections, part
    for vector in doc.get("invalid", []):
        assert vector["rule"] in sections, vector
        assert re.fullmatch(r"[a-z0-9_]+", vector["code"]), vector


def test_codes_in_vectors_are_listed_in_section_9() -> None:
    table = SPEC.read_text(encoding="utf-8").split("## 9. Error codes", 1)[1]
    listed = set(re.findall(r"`([a-z0-9_]+)`", table))
    for name in FILES:
        for vector in load(name).get("invalid", []):
            assert vector["code"] in listed, vector


# -- §2 encoding --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", cases("encoding.json", "valid"))
def test_encoding_valid(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    value = untag(vector["value"])
    assert same(decode(data), value)
    assert encode(value) == data


@pytest.mark.parametrize("vector", cases("encoding.json", "invalid"))
def test_encoding_invalid(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    limit = vector.get("max_size")
    if limit is None:
        fails_with(vector["code"], lambda: decode(data))
    else:
        assert len(decode(data)) >= 0  # valid under the default limit: only the size rule is broken
        fails_with(vector["code"], lambda: decode(data, max_size=limit))


# -- §3 ids -------------------------------------------------------------------------------------------------


def test_ids_keys_and_hashes() -> None:
    doc = load("ids.json")
    for v in doc["keys"]:
        key = SigningKey(bytes.fromhex(v["seed"]))
        assert key.public_key.hex() == v["public_key"]
        assert str(key.feed) == v["feed_id"]
    for v in doc["hashes"]:
        assert hash_bytes(bytes.fromhex(v["input"])).hex() == v["hash"]


def test_ids_both_ways() -> None:
    doc = load("ids.json")
    for v in doc["feeds"]:
        raw = bytes.fromhex(v["hex"])
        assert str(FeedId(raw)) == feed_id_text(raw) == v["text"]
        assert FeedId.parse(v["text"]).key == raw
    for v in doc["entries"]:
        raw = bytes.fromhex(v["hex"])
        assert str(EntryId(raw)) == entry_id_text(raw) == v["text"]
        assert EntryId.parse(v["text"]).hash == raw


@pytest.mark.parametrize("vector", cases("ids.json", "invalid"))
def test_ids_invalid(vector: dict[str, Any]) -> None:
    parse = FeedId.parse if vector["kind"] == "feed" else EntryId.parse
    fails_with(vector["code"], lambda: parse(vector["text"]))


# -- §6 lipmaa ----------------------------------------------------------------------------------------------


def test_lipmaa_values_and_paths() -> None:
    doc = load("lipmaa.json")
    assert [v["n"] for v in doc["values"]][:200] == list(range(1, 201))
    for v in doc["values"]:
        assert lipmaa(v["n"]) == v["lipmaa"], v
        assert skip_target(v["n"]) == v["skip_target"], v
    for v in doc["paths"]:
        assert path_to_first(v["n"]) == v["path"], v


# -- §4, §5 entries -----------------------------------------------------------------------------------------


def test_entries_log_verifies() -> None:
    doc = load("entries.json")
    assert bytes.fromhex(doc["signing_domain"]) == SIGNING_DOMAIN == b"tidings/entry/v1\x00"
    key = SigningKey(bytes.fromhex(doc["author"]["seed"]))
    assert key.public_key.hex() == doc["author"]["public_key"]
    log: list[Entry] = []
    assert len(doc["log"]) >= 30
    for v in doc["log"]:
        raw = bytes.fromhex(v["entry"])
        payload = bytes.fromhex(v["payload"])
        entry = Entry.decode(raw)
        assert entry.raw == raw
        assert entry.author == key.public_key
        assert entry.seq == v["seq"] == len(log) + 1
        assert entry.timestamp == v["timestamp"]
        assert entry.hash.hex() == v["hash"] == hash_bytes(raw).hex()
        assert str(entry.id) == v["id"]
        assert entry.signing_bytes().hex() == v["signing_bytes"]
        assert entry.signing_bytes().startswith(SIGNING_DOMAIN)
        assert (entry.backlink or b"").hex() == (v["backlink"] or "")
        assert (entry.skiplink or b"").hex() == (v["skiplink"] or "")
        assert entry.payload_size == v["payload_size"] == len(payload)
        previous = log[-1] if log else None
        target = skip_target(entry.seq)
        skip = log[target - 1] if target is not None else None
        verify_entry(entry, previous=previous, skip=skip, payload=payload)
        again = create_entry(
            key,
            seq=entry.seq,
            backlink=previous.hash if previous else None,
            skiplink=skip.hash if skip else None,
            timestamp=entry.timestamp,
            payload=payload,
        )
        assert again.raw == raw
        log.append(entry)


@pytest.mark.parametrize("vector", cases("entries.json", "invalid"))
def test_entries_invalid(vector: dict[str, Any]) -> None:
    context = vector["context"]
    previous = opt_entry(context.get("previous"))
    skip = opt_entry(context.get("skip"))
    payload = bytes.fromhex(context["payload"]) if "payload" in context else None

    def check() -> None:
        entry = Entry.decode(bytes.fromhex(vector["entry"]))
        verify_entry(entry, previous=previous, skip=skip, payload=payload)

    fails_with(vector["code"], check)


# -- §7 forks -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", cases("forks.json", "valid"))
def test_forks_valid(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["proof"])
    proof = ForkProof.decode(data)
    assert proof.first.raw.hex() == vector["first"]
    assert proof.second.raw.hex() == vector["second"]
    assert str(proof.first.id) == vector["first_id"]
    assert str(proof.second.id) == vector["second_id"]
    assert proof.author.hex() == vector["author"]
    assert proof.seq == vector["seq"]
    assert proof.encode() == data
    found = check_fork(proof.second, proof.first)
    assert found == proof
    assert found is not None and found.encode() == data


@pytest.mark.parametrize("vector", cases("forks.json", "invalid"))
def test_forks_invalid(vector: dict[str, Any]) -> None:
    fails_with(vector["code"], lambda: ForkProof.decode(bytes.fromhex(vector["proof"])))


# -- §8 content ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", cases("content.json", "valid"))
def test_content_valid(vector: dict[str, Any]) -> None:
    payload = bytes.fromhex(vector["payload"])
    content = decode_content(payload)
    assert type_of(content) == vector["type"]
    expected = untag(vector["map"])
    assert same(content.to_map(), {k: expected[k] for k in content.to_map()})
    assert set(content.to_map()) == set(expected)
    assert encode_content(content) == encode(expected)
    assert decode_content(encode_content(content)) == content


@pytest.mark.parametrize("vector", cases("content.json", "invalid"))
def test_content_invalid(vector: dict[str, Any]) -> None:
    fails_with(vector["code"], lambda: decode_content(bytes.fromhex(vector["payload"])))


# -- §8.5 blobs --------------------------------------------------------------------------------------------


def _blob_bytes(vector: dict[str, Any]) -> bytes:
    if "input" in vector:
        return bytes.fromhex(vector["input"])
    assert vector["pattern"] == "byte i is i mod 251, for i from 0 to 1048575"
    return bytes(i % 251 for i in range(vector["size"]))


@pytest.mark.parametrize("vector", cases("blobs.json", "ids"))
def test_blob_ids(vector: dict[str, Any]) -> None:
    data = _blob_bytes(vector)
    assert len(data) == vector["size"]
    made = blob_id(data)
    assert made.hash.hex() == made.hex == vector["hash"] == hash_bytes(data).hex()
    assert str(made) == blob_id_text(made.hash) == vector["id"]
    assert BlobId.parse(vector["id"]) == made
    hasher = BlobHasher()  # the same id fed in uneven chunks
    for start in range(0, len(data), 7919):
        hasher.update(data[start : start + 7919])
    assert hasher.blob_id() == made and hasher.size == len(data)


@pytest.mark.parametrize("vector", cases("blobs.json", "invalid_ids"))
def test_blob_ids_invalid(vector: dict[str, Any]) -> None:
    fails_with(vector["code"], lambda: BlobId.parse(vector["text"]))


@pytest.mark.parametrize("vector", cases("blobs.json", "valid"))
def test_blob_refs_valid(vector: dict[str, Any]) -> None:
    content = decode_content(bytes.fromhex(vector["payload"]))
    assert type_of(content) == vector["type"]
    expected = untag(vector["map"])  # in canonical order (spec §2.1), nested maps too
    assert same(decode(encode(content.to_map())), expected)
    assert decode_content(encode_content(content)) == content
    refs = [*expected.get("attachments", []), *(expected[k] for k in ("avatar", "banner") if k in expected)]
    assert [encode(r.to_map()) for r in blob_refs(content)] == [encode(r) for r in refs]


@pytest.mark.parametrize("vector", cases("blobs.json", "invalid"))
def test_blob_refs_invalid(vector: dict[str, Any]) -> None:
    fails_with(vector["code"], lambda: decode_content(bytes.fromhex(vector["payload"])))


# -- §8.6 private messages ---------------------------------------------------------------------------------


def _hex_or_none(text: str | None) -> bytes | None:
    return None if text is None else bytes.fromhex(text)


@pytest.mark.parametrize("vector", cases("box.json", "valid"))
def test_boxes_seal_and_open(vector: dict[str, Any]) -> None:
    payload = bytes.fromhex(vector["payload"])
    box = decode_content(payload)
    assert isinstance(box, Box) and encode_content(box) == payload
    assert (len(box.slots), len(box.body)) == (vector["slots"], vector["body"])
    author, seq, backlink = bytes.fromhex(vector["author"]), vector["seq"], _hex_or_none(vector["backlink"])
    expected = untag(vector["message"])
    assert encode(expected).hex() == vector["plain"]
    assert box_context(author, seq, backlink, box.eph, box.commit).hex() == vector["context"]
    draws = [bytes.fromhex(d) for d in vector["draws"]]
    assert (draws[0].hex(), draws[1].hex()) == (vector["eph_secret"], vector["content_key"])

    def rng(n: int) -> bytes:
        data = draws.pop(0)
        assert len(data) == n
        return data

    message = Message.from_map(expected)
    assert encode_content(seal(message, author=author, seq=seq, backlink=backlink, rng=rng)) == payload
    assert not draws
    for opener in vector["openers"]:
        key = BoxKey(SigningKey(bytes.fromhex(opener["seed"])))
        assert (key.feed.hex(), key.public.hex()) == (opener["feed"], opener["x25519"])
        opened = open_box(box, author=author, seq=seq, backlink=backlink, key=key)
        assert isinstance(opened, Opened)
        assert same(decode(encode(opened.message.to_map())), expected)
        alone = Box(eph=box.eph, commit=box.commit, slots=(box.slots[opener["slot"]],) * 4, body=box.body)
        assert open_box(alone, author=author, seq=seq, backlink=backlink, key=key) is not None
    outsider = BoxKey(SigningKey(bytes.fromhex(vector["outsider"])))
    assert open_box(box, author=author, seq=seq, backlink=backlink, key=outsider) is None


@pytest.mark.parametrize("vector", cases("box.json", "unopenable"))
def test_boxes_unopenable(vector: dict[str, Any]) -> None:
    box = decode_content(bytes.fromhex(vector["payload"]))
    assert isinstance(box, Box)
    key = BoxKey(SigningKey(bytes.fromhex(vector["seed"])))
    got = open_box(
        box,
        author=bytes.fromhex(vector["author"]),
        seq=vector["seq"],
        backlink=_hex_or_none(vector["backlink"]),
        key=key,
    )
    if vector["result"] == "not_ours":
        assert got is None
    else:
        assert vector["result"] == "undecryptable" and isinstance(got, Undecryptable)


@pytest.mark.parametrize("vector", cases("box.json", "invalid"))
def test_boxes_invalid(vector: dict[str, Any]) -> None:
    fails_with(vector["code"], lambda: decode_content(bytes.fromhex(vector["payload"])))


# -- §13.4 DHT records -------------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", cases("records.json", "valid"))
def test_records_valid(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["record"])
    key = bytes.fromhex(vector["key"])
    record = validate_record(data, key=key, now_ms=vector["now_ms"])
    assert looks_like_record(data)
    assert decode_record(data) == record and record.encode() == data
    assert record.signing_bytes().hex() == vector["signing_bytes"]
    assert [list(a) for a in record.addresses] == vector["addresses"]
    assert (record.seq, record.expiry_ms) == (vector["seq"], vector["expiry_ms"])
    head = peek_record(data, key=key, now_ms=vector["now_ms"])
    assert (head.seq, head.expiry_ms, head.owner) == (record.seq, record.expiry_ms, record.owner)
    if vector["kind"] == "member":
        assert isinstance(record, MemberRecord) and record.member.hex() == vector["member"]
        return
    assert isinstance(record, NodeRecord)
    assert record.version == vector["version"]
    assert record.feed.hex() == vector["feed"]
    assert record.transport_key.hex() == vector["transport_key"]
    assert [[feed.hex(), address] for feed, address in record.relays] == vector["relays"]


def test_the_record_example_of_the_spec_is_the_first_vector() -> None:
    section = SPEC.read_text(encoding="utf-8").split("### 13.4 Records", 1)[1]
    block = section.split("is the 175\nbytes", 1)[1].split("```")[1]
    # each line: hex bytes, then (after a wide gap) a comment
    example = "".join(re.split(r"\s{3,}", line.strip())[0].replace(" ", "") for line in block.splitlines())
    assert example == load("records.json")["valid"][0]["record"]


@pytest.mark.parametrize("vector", cases("records.json", "invalid"))
def test_records_invalid(vector: dict[str, Any]) -> None:
    data, key = bytes.fromhex(vector["record"]), bytes.fromhex(vector["key"])
    fails_with(vector["code"], lambda: validate_record(data, key=key, now_ms=vector["now_ms"]))


# -- regeneration -------------------------------------------------------------------------------------------


def test_make_vectors_is_deterministic(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "spec" / "make_vectors.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == list(FILES)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (VECTORS / name).read_bytes(), name
