"""``tidings blob add | ls | get | gc`` (spec/cli.md *Blobs*): in process through click, plus one real
process for the raw bytes on standard output."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from tidings.cli.main import cli
from tidings.node.home import Home
from tidings.protocol import BlobId, BlobRef, Follow, Post, SigningKey, blob_id

from tests.support.entries import chain, raw
from tests.support.processes import TIDINGS


@pytest.fixture
def home(tmp_path: Path) -> Path:
    Home(tmp_path / "home").init(name="alice")
    return tmp_path / "home"


def tidings(home: Path, *args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(cli, ["--home", str(home), *args])
    assert result.exit_code == code, (args, result.output, result.stderr)
    if code:
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return result


def objects(home: Path, *args: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in tidings(home, *args, "--json").stdout.splitlines()]


def test_add_ls_get_round_trip(home: Path, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    source = tmp_path / "photo.jpg"
    source.write_bytes(data)
    (added,) = objects(home, "blob", "add", str(source))
    assert added == {"id": str(blob_id(data)), "size": len(data)}
    assert tidings(home, "blob", "add", str(source)).stdout == f"{added['id']}\n"  # the same blob again
    (row,) = objects(home, "blob", "ls")
    assert row["id"] == added["id"] and row["size"] == len(data) and row["pinned"] is True
    assert {"added", "last_used"} <= set(row)
    text = tidings(home, "blob", "ls").stdout
    assert added["id"] in text and "1 blob, 100.0 KB (1 pinned)" in text
    copy = tmp_path / "copy.jpg"
    (got,) = objects(home, "blob", "get", added["id"], "-o", str(copy))
    assert got == {"id": added["id"], "size": len(data), "file": str(copy)}
    assert copy.read_bytes() == data
    assert tidings(home, "blob", "get", added["id"]).stdout_bytes == data


def test_get_refuses_what_it_must_not_do(home: Path, tmp_path: Path) -> None:
    source = tmp_path / "f.bin"
    source.write_bytes(b"some bytes")
    blob = tidings(home, "blob", "add", str(source)).stdout.strip()
    taken = tmp_path / "taken"
    taken.write_bytes(b"mine")
    out = tidings(home, "blob", "get", blob, "-o", str(taken), code=1)
    assert out.stderr == f"error: {taken} exists; choose another file\n" and taken.read_bytes() == b"mine"
    out = tidings(home, "blob", "get", blob, "-o", str(home / "inside"), code=1)
    assert "is inside the home" in out.stderr and not (home / "inside").exists()
    missing = str(blob_id(b"not here"))
    out = tidings(home, "blob", "get", missing, "-o", str(tmp_path / "x"), code=1)
    assert out.stderr == (
        f"error: no blob {missing} here; it is wanted now, and the node fetches it from peers once it runs "
        "(tidings run)\n"
    )
    assert not (tmp_path / "x").exists()
    wanted = [
        json.loads(line) for line in tidings(home, "blob", "ls", "--wanted", "--json").stdout.splitlines()
    ]
    assert [w["id"] for w in wanted] == [missing] and wanted[0]["feed"] is None
    out = tidings(home, "blob", "get", "&abc", code=2)
    assert "is not a blob id (& + 52 base32 characters): 3 characters after the sigil" in out.stderr
    out = tidings(home, "blob", "get", "%" + blob[1:], code=2)
    assert "a blob id starts with '&'" in out.stderr
    out = tidings(home, "blob", "get", blob, "--json", code=2)
    assert "--json needs -o FILE" in out.stderr


def test_a_damaged_blob_is_not_copied(home: Path, tmp_path: Path) -> None:
    source = tmp_path / "f.bin"
    source.write_bytes(b"original")
    blob = BlobId.parse(tidings(home, "blob", "add", str(source)).stdout.strip())
    name = blob.hash.hex()
    (home / "blobs" / name[:2] / name).write_bytes(b"damaged!")
    out = tidings(home, "blob", "get", str(blob), "-o", str(tmp_path / "copy"), code=1)
    assert "is damaged; it was removed" in out.stderr and not (tmp_path / "copy").exists()
    assert objects(home, "blob", "ls") == []


def test_add_refuses_empty_missing_and_too_large_files(home: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert tidings(home, "blob", "add", str(empty), code=1).stderr == (
        f"error: {empty} is empty; a blob has at least one byte\n"
    )
    out = tidings(home, "blob", "add", str(tmp_path / "nowhere"), code=1)
    assert out.stderr.startswith(f"error: cannot read {tmp_path / 'nowhere'}: No such file")
    (home / "config.toml").write_text("[limits]\nmax_blob = 65536\n")
    big = tmp_path / "big"
    big.write_bytes(b"x" * 65537)
    out = tidings(home, "blob", "add", str(big), code=1)
    assert out.stderr == f"error: {big} is 65537 bytes; a blob is at most 65536 (max_blob)\n"
    assert objects(home, "blob", "ls") == []
    assert tidings(home, "blob", "ls").stdout == "0 blobs, 0 B (0 pinned)\n"


def test_gc_keeps_pinned_own_and_followed_blobs(home: Path) -> None:
    friend, stranger = SigningKey(b"\x02" * 32), SigningKey(b"\x03" * 32)
    h = Home(home)
    with h.open_store() as store:
        blobs = h.open_blobs(store)
        ids = {
            name: blobs.put_bytes(name.encode() * 1000) for name in ("mine", "friend", "stranger", "loose")
        }
        pinned = blobs.put_bytes(b"pinned" * 1000, pinned=True)

        def post(name: str) -> Post:
            return Post(text=name, attachments=(BlobRef(blob=ids[name].hash, size=1, mime="image/png"),))

        key = h.load_key()
        store.append(key, post("mine"))
        store.append(key, Follow(feed=friend.public_key))
        store.ingest(raw(chain(friend, [post("friend")])))
        store.ingest(raw(chain(stranger, [post("stranger")])))
    (home / "config.toml").write_text("[limits]\nblob_quota = 0\n")
    (result,) = objects(home, "blob", "gc")
    assert sorted(result["removed"]) == sorted([str(ids["stranger"]), str(ids["loose"])])
    assert result["quota"] == 0 and result["blobs"] == 3 and result["freed"] > 0
    kept = {row["id"] for row in objects(home, "blob", "ls")}
    assert kept == {str(ids["mine"]), str(ids["friend"]), str(pinned)}
    assert tidings(home, "blob", "gc").stdout.startswith("removed 0 blobs (0 B); 3 blobs take ")


def test_raw_bytes_go_to_standard_output_of_a_real_process(home: Path, tmp_path: Path) -> None:
    data = bytes(range(256)) * 300
    source = tmp_path / "f.bin"
    source.write_bytes(data)
    blob = tidings(home, "blob", "add", str(source)).stdout.strip()
    done = subprocess.run(
        [*TIDINGS, "--home", str(home), "blob", "get", blob], capture_output=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout == data and done.stderr == b""
