"""Blob files under the home (storage/blobs.py, spec/protocol.md §8.5): streaming writes, never half a
blob under its real name, leftovers of crashed writers, reading back, and gc by least recent use."""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tidings.protocol import (
    BlobId,
    BlobRef,
    Delete,
    Follow,
    Post,
    Profile,
    SigningKey,
    blob_id,
    encode_content,
)
from tidings.storage.blob_refs import PREVIEW_MIME, blob_mimes, kept_blobs, profile_refs, referenced_blobs
from tidings.storage.blobs import BlobError, BlobStore
from tidings.storage.errors import NotFound
from tidings.storage.reads import content_json
from tidings.storage.store import Store

from tests.support.clocks import TickingMs
from tests.support.entries import chain, raw


@pytest.fixture
def blobs(store: Store, tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs", store, now=TickingMs())


def files(folder: Path) -> list[str]:
    """Every file under ``folder`` but the lock, relative to it."""
    return sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != "tmp.lock"
    )


def test_a_blob_is_written_in_chunks_and_named_by_its_hash(blobs: BlobStore) -> None:
    data = os.urandom(300_000)
    with blobs.writer() as w:
        for start in range(0, len(data), 4096):
            w.write(data[start : start + 4096])
        assert w.size == len(data)
        assert files(blobs.folder) == [
            f"tmp/{p.name}" for p in blobs.tmp_folder.iterdir()
        ]  # not yet in place
        made = w.commit(blob_id(data))
    assert made == blob_id(data) and w.state == "DONE"
    name = made.hash.hex()
    assert files(blobs.folder) == [f"{name[:2]}/{name}"]
    path = blobs.path_of(made)
    assert path.read_bytes() == data and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert blobs.has(made) and blobs.size(made) == len(data)
    assert b"".join(blobs.read(made, chunk_size=1000)) == data
    with blobs.open_blob(made) as fh:
        assert fh.read() == data
    assert blobs.usage() == {"blobs": 1, "bytes": len(data), "pinned": 0, "pinned_bytes": 0}
    (row,) = blobs.listing()
    assert row["id"] == str(made) and row["size"] == len(data) and row["pinned"] is False


def test_a_mismatch_leaves_nothing_behind(blobs: BlobStore) -> None:
    with pytest.raises(BlobError) as info, blobs.writer() as w:
        w.write(b"not what was asked for")
        w.commit(blob_id(b"what was asked for"))
    assert info.value.code == "blob_mismatch"
    assert str(blob_id(b"what was asked for")) in info.value.message
    assert w.state == "FAILED" and files(blobs.folder) == [] and blobs.usage()["blobs"] == 0
    assert not blobs.has(blob_id(b"not what was asked for"))
    with pytest.raises(BlobError) as again:
        w.write(b"more")
    assert again.value.code == "blob_state"


def test_too_large_and_empty_blobs_are_refused(store: Store, tmp_path: Path) -> None:
    small = BlobStore(tmp_path / "blobs", store, max_blob=10)
    with pytest.raises(BlobError) as info, small.writer() as w:
        w.write(b"12345")
        w.write(b"678901")
    assert info.value.code == "blob_too_large" and files(small.folder) == []
    assert small.put_bytes(b"1234567890") == blob_id(b"1234567890")  # exactly the limit
    with pytest.raises(BlobError) as empty:
        small.put_bytes(b"")
    assert empty.value.code == "blob_empty" and len(files(small.folder)) == 1
    with pytest.raises(BlobError) as bad:
        BlobStore(tmp_path / "b2", store, max_blob=9 * 1024 * 1024)
    assert bad.value.code == "bad_argument"


def test_leaving_a_writer_without_commit_aborts(blobs: BlobStore) -> None:
    with blobs.writer() as w:
        w.write(b"half")
    assert w.state == "FAILED" and files(blobs.folder) == []


def test_the_same_blob_twice_is_one_file_and_one_row(blobs: BlobStore) -> None:
    first = blobs.put_bytes(b"same")
    assert blobs.put_bytes(b"same", pinned=True) == first
    assert blobs.usage() == {"blobs": 1, "bytes": 4, "pinned": 1, "pinned_bytes": 4}
    assert len(files(blobs.folder)) == 1


def test_leftovers_of_a_crashed_writer_are_removed_on_open(store: Store, tmp_path: Path) -> None:
    folder = tmp_path / "blobs"
    BlobStore(folder, store)
    # a writer process dies half way: its temporary file stays, its lock goes with it
    script = (
        "import os, sys\n"
        "from tidings.storage.blobs import BlobStore\n"
        "from tidings.storage.store import Store\n"
        "w = BlobStore(sys.argv[1], Store(sys.argv[2])).writer()\n"
        "w.write(b'x' * 100_000)\n"
        "w._file.flush()\n"
        "os._exit(9)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder), str(store.path)], timeout=60, check=False
    )
    assert done.returncode == 9
    (leftover,) = (folder / "tmp").iterdir()
    assert leftover.stat().st_size == 100_000
    again = BlobStore(folder, store)
    assert files(again.folder) == [] and again.usage()["blobs"] == 0


def test_a_live_writers_file_is_not_a_leftover(blobs: BlobStore, store: Store) -> None:
    with blobs.writer() as w:
        w.write(b"in progress")
        other = BlobStore(blobs.folder, store)  # another command opens the blobs meanwhile
        assert other.clean() == 0 and len(list(blobs.tmp_folder.iterdir())) == 1
        made = w.commit()
    assert blobs.has(made) and b"".join(blobs.read(made)) == b"in progress"


def test_reading_what_is_not_here_or_damaged(blobs: BlobStore) -> None:
    missing = blob_id(b"nowhere")
    with pytest.raises(NotFound, match="no blob &"):
        blobs.open_blob(missing)
    assert not blobs.has(missing) and blobs.size(missing) is None
    made = blobs.put_bytes(b"original bytes")
    path = blobs.path_of(made)
    os.chmod(path, 0o600)
    path.write_bytes(b"changed bytes!")
    with pytest.raises(BlobError) as info:
        b"".join(blobs.read(made))
    assert info.value.code == "blob_corrupt" and not blobs.has(made) and blobs.usage()["blobs"] == 0


def test_gc_evicts_the_least_recently_used_beyond_the_quota(blobs: BlobStore) -> None:
    ids = [blobs.put_bytes(bytes([n]) * 100) for n in range(6)]  # used in this order
    pinned = blobs.put_bytes(b"p" * 100, pinned=True)
    kept = ids[0]
    b"".join(blobs.read(ids[1]))  # read: now the most recently used
    result = blobs.gc(quota=400, keep={kept})
    # 700 bytes over a quota of 400: evict 300, oldest first, skipping the kept and the pinned
    assert result["removed"] == [str(ids[2]), str(ids[3]), str(ids[4])]
    assert result["freed"] == 300 and result["bytes"] == 400 and result["blobs"] == 4
    for blob in (kept, ids[1], ids[5], pinned):
        assert blobs.has(blob)
    for blob in ids[2:5]:
        assert not blobs.has(blob)
    # kept and pinned blobs stay even when they alone are over the quota
    result = blobs.gc(quota=0, keep=[kept.hash])
    assert result["removed"] == [str(ids[5]), str(ids[1])] and result["bytes"] == 200  # ids[1] read last
    assert blobs.has(kept) and blobs.has(pinned)
    assert blobs.gc(quota=0, keep={kept})["removed"] == []


def test_gc_makes_rows_and_files_agree(blobs: BlobStore) -> None:
    gone = blobs.put_bytes(b"its file is lost")
    blobs.path_of(gone).unlink()
    # a file placed without its row (a crash between the rename and the row)
    orphan = blob_id(b"orphan")
    path = blobs.path_of(orphan)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_bytes(b"orphan")
    result = blobs.gc(quota=10**9)
    assert result["removed"] == [] and result["blobs"] == 1 and result["bytes"] == 6
    assert [row["id"] for row in blobs.listing()] == [str(orphan)]


def test_gc_waits_for_writers_then_says_busy(blobs: BlobStore) -> None:
    with blobs.writer() as w:
        w.write(b"slow")
        with pytest.raises(BlobError) as info:
            blobs.gc(quota=0, timeout=0.2)
        assert info.value.code == "blob_busy"
    fd = os.open(blobs.folder / "tmp.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the writer let go of its lock
    finally:
        os.close(fd)


def test_put_file_streams_a_file(blobs: BlobStore, tmp_path: Path) -> None:
    source = tmp_path / "photo.bin"
    source.write_bytes(os.urandom(200_000))
    made = blobs.put_file(source, pinned=True)
    assert made == blob_id(source.read_bytes()) and blobs.listing()[0]["pinned"] is True
    with pytest.raises(BlobError) as info:
        blobs.put_file(tmp_path / "missing")
    assert info.value.code == "io"
    assert BlobId.parse(str(made)) == made


def test_the_blobs_of_my_feed_and_of_feeds_i_follow_are_kept(store: Store) -> None:
    me, friend, stranger = (SigningKey(bytes([n]) * 32) for n in (1, 2, 3))
    store.set_meta("self", me.public_key)

    def ref(data: bytes, **fields: Any) -> BlobRef:
        return BlobRef(blob=blob_id(data).hash, size=len(data), mime="image/png", **fields)

    store.append(me, Post(text="mine", attachments=(ref(b"mine", preview=blob_id(b"mine-small").hash),)))
    store.append(me, Follow(feed=friend.public_key))
    store.append(me, Post(text="no pictures"))
    friends = chain(
        friend,
        [
            Profile(name="f", avatar=ref(b"face"), banner=ref(b"wide")),
            Post(text="two", attachments=(ref(b"one"), ref(b"two"))),
            Post(text="gone", attachments=(ref(b"deleted"),)),
        ],
    )
    store.ingest(raw(friends))
    store.ingest(raw(chain(stranger, [Post(text="theirs", attachments=(ref(b"stranger"),))])))
    store.ingest(raw(chain(friend, [Delete(target=friends[2][0].hash)], start=friends)))
    expected = {blob_id(d).hash for d in (b"mine", b"mine-small", b"face", b"wide", b"one", b"two")}
    assert kept_blobs(store, me.public_key) == expected
    assert referenced_blobs(store, {stranger.public_key}) == {blob_id(b"stranger").hash}


def test_blob_references_read_as_blob_ids() -> None:
    a, b = blob_id(b"a"), blob_id(b"b")
    payload = encode_content(
        Post(text="x", attachments=(BlobRef(blob=a.hash, size=1, mime="image/png", preview=b.hash),))
    )
    shown = content_json(payload)
    assert shown is not None
    assert shown["attachments"] == [{"blob": str(a), "size": 1, "mime": "image/png", "preview": str(b)}]


def test_the_types_a_blob_is_named_with_and_the_profile_pictures_shown_now(store: Store) -> None:
    me = SigningKey(bytes([4]) * 32)

    def ref(data: bytes, mime: str = "image/png", **fields: Any) -> BlobRef:
        return BlobRef(blob=blob_id(data).hash, size=len(data), mime=mime, **fields)

    small = blob_id(b"small").hash
    store.append(me, Post(text="a", attachments=(ref(b"pic", preview=small),)))
    store.append(me, Post(text="b", attachments=(ref(b"pic", "image/jpeg"), ref(b"doc", "application/pdf"))))
    gone = store.append(me, Post(text="c", attachments=(ref(b"gone"),)))
    store.append(me, Delete(target=gone.hash))
    store.append(me, Profile(name="me", avatar=ref(b"old-face")))
    store.append(me, Profile(banner=ref(b"wide")))
    store.append(me, Profile(avatar=ref(b"face")))
    store.append(me, Profile(bio="only a bio"))
    assert blob_mimes(store, blob_id(b"pic").hash) == {"image/png", "image/jpeg"}
    assert blob_mimes(store, small) == {PREVIEW_MIME}
    assert blob_mimes(store, blob_id(b"doc").hash) == {"application/pdf"}
    assert blob_mimes(store, blob_id(b"gone").hash) == set()  # its post is deleted
    assert blob_mimes(store, blob_id(b"nowhere").hash) == set()
    shown = profile_refs(store, me.public_key)  # spec §8.2.8: the latest profile that sets each
    assert shown == {"avatar": ref(b"face"), "banner": ref(b"wide")}
    assert profile_refs(store, SigningKey(bytes([5]) * 32).public_key) == {}
