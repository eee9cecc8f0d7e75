"""What a node keeps while it fetches blobs from peers (spec §12.12): resumable partial files
(storage/blob_partial.py) and the wants table (storage/blob_wants.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tidings.protocol import BlobRef, Delete, Follow, Post, SigningKey, blob_id
from tidings.protocol.blobs import MAX_PREVIEW
from tidings.storage import blob_wants
from tidings.storage.blob_partial import PartialBlob, remove_partials
from tidings.storage.blob_wants import Want
from tidings.storage.blobs import BlobError, BlobStore
from tidings.storage.store import Store

from tests.support.entries import chain, raw


@pytest.fixture
def blobs(store: Store, tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs", store)


def blob_files(blobs: BlobStore) -> list[str]:
    return sorted(p.name for p in blobs.folder.glob("??/*"))


def test_a_partial_blob_resumes_where_it_stopped_and_is_kept_only_whole(blobs: BlobStore) -> None:
    data = os.urandom(200_000)
    blob = blob_id(data)
    with PartialBlob(blobs, blob, len(data)) as part:
        assert part.offset == 0
        part.write(data[:70_000])
    assert blob_files(blobs) == [] and not blobs.has(blob)
    part = PartialBlob(blobs, blob, len(data))  # a new connection, or a restarted node
    assert part.offset == 70_000
    part.write(data[70_000:])
    assert part.finish() == blob
    assert blobs.path_of(blob).read_bytes() == data
    assert list((blobs.folder / "partial").iterdir()) == []


def test_bytes_that_do_not_hash_to_the_id_are_not_kept(blobs: BlobStore) -> None:
    data = b"the real bytes"
    part = PartialBlob(blobs, blob_id(data), len(data))
    part.write(b"the fake bytes")
    with pytest.raises(BlobError) as info:
        part.finish()
    assert info.value.code == "blob_mismatch"
    assert blob_files(blobs) == [] and list((blobs.folder / "partial").iterdir()) == []
    with PartialBlob(blobs, blob_id(data), len(data)) as again:
        assert again.offset == 0  # the next try starts over


def test_a_check_that_fails_keeps_nothing(blobs: BlobStore) -> None:
    data = b"<svg onload=alert(1)>"
    part = PartialBlob(blobs, blob_id(data), len(data))
    part.write(data)

    def not_a_picture(path: Path) -> None:
        assert path.read_bytes() == data  # the check sees the whole, checked file
        raise BlobError("not a picture", code="not_a_picture")

    with pytest.raises(BlobError) as info:
        part.finish(not_a_picture)
    assert info.value.code == "not_a_picture" and blob_files(blobs) == []


def test_more_bytes_than_the_size_discard_the_partial(blobs: BlobStore) -> None:
    part = PartialBlob(blobs, blob_id(b"abc"), 3)
    part.write(b"ab")
    with pytest.raises(BlobError) as info:
        part.write(b"cd")
    assert info.value.code == "blob_too_large" and part.state == "DISCARDED"
    with pytest.raises(BlobError):
        PartialBlob(blobs, blob_id(b"abc"), blobs.max_blob + 1)


def test_one_partial_has_one_fetcher_at_a_time(blobs: BlobStore) -> None:
    blob = blob_id(b"abc")
    with PartialBlob(blobs, blob, 3):
        with pytest.raises(BlobError) as info:
            PartialBlob(blobs, blob, 3)
        assert info.value.code == "blob_busy"
        assert remove_partials(blobs, keep=set()) == 0  # held: not removed
    with PartialBlob(blobs, blob_id(b"other"), 5) as other:
        other.write(b"ot")
    assert remove_partials(blobs, keep={blob.hash}) == 1  # "other" no longer wanted
    assert [p.name for p in (blobs.folder / "partial").iterdir()] == [blob.hash.hex()]


def test_wants_are_recorded_once_come_due_and_end(store: Store, blobs: BlobStore) -> None:
    a, b = blob_id(b"a").hash, blob_id(b"b").hash
    held = blobs.put_bytes(b"held").hash
    first = blob_wants.add_wants(store, [Want(a, 1, 1, "image/png", None), Want(held, 4, 4, None, None)], 100)
    assert [w.blob for w in first] == [a]  # a held blob is not wanted
    assert blob_wants.add_wants(store, [Want(a, 1, 1, "image/png", None)], 101) == []
    blob_wants.add_wants(store, [Want(b, None, MAX_PREVIEW, "image/*", None)], 102)
    assert [w.blob for w in blob_wants.due_wants(store, 1_000)] == [a, b]
    assert [w.blob for w in blob_wants.due_wants(store, 1_000, skip={a})] == [b]
    blob_wants.failed(store, a, "not_found", 5_000)
    assert [w.blob for w in blob_wants.due_wants(store, 1_000)] == [b]
    (later,) = [w for w in blob_wants.due_wants(store, 5_000) if w.blob == a]
    assert (later.tries, later.failed) == (1, "not_found")
    blob_wants.fetched(store, a)
    assert [w.blob for w in blob_wants.wants(store)] == [b]
    assert blob_wants.drop_wants(store, [b, a]) == 1


def test_missing_references_of_replicated_feeds_become_wants(store: Store, blobs: BlobStore) -> None:
    me, friend = SigningKey(bytes([1]) * 32), SigningKey(bytes([2]) * 32)
    store.set_meta("self", me.public_key)

    def ref(data: bytes, **fields: object) -> BlobRef:
        return BlobRef(blob=blob_id(data).hash, size=len(data), mime="image/png", **fields)  # type: ignore[arg-type]

    blobs.put_bytes(b"held")
    store.append(me, Follow(feed=friend.public_key))
    store.ingest(
        raw(
            chain(
                friend,
                [
                    Post(text="p", attachments=(ref(b"photo", preview=blob_id(b"small").hash), ref(b"held"))),
                    Post(text="big", attachments=(ref(b"x" * 100),)),
                ],
            )
        )
    )
    found = blob_wants.missing_refs(store, {friend.public_key}, max_blob=50)
    by_id = {w.blob: w for w in found}
    assert set(by_id) == {blob_id(b"photo").hash, blob_id(b"small").hash}  # held and too big are not
    photo, small = by_id[blob_id(b"photo").hash], by_id[blob_id(b"small").hash]
    assert (photo.size, photo.most, photo.mime, photo.author) == (5, 5, "image/png", friend.public_key)
    assert (small.size, small.most, small.mime) == (None, MAX_PREVIEW, "image/*")


def test_a_deleted_post_s_blobs_are_no_longer_wanted(store: Store, blobs: BlobStore) -> None:
    friend = SigningKey(bytes([2]) * 32)
    photo = BlobRef(blob=blob_id(b"photo").hash, size=5, mime="image/png")
    other = BlobRef(blob=blob_id(b"other").hash, size=5, mime="image/png")
    posts = chain(friend, [Post(text="p", attachments=(photo,)), Post(text="q", attachments=(other,))])
    store.ingest(raw(posts))
    blob_wants.add_wants(store, blob_wants.missing_refs(store, {friend.public_key}, max_blob=100), 0)
    assert {w.blob for w in blob_wants.wants(store)} == {photo.blob, other.blob}
    store.ingest(raw(chain(friend, [Delete(target=posts[0][0].hash)], start=posts)))
    assert {w.blob for w in blob_wants.wants(store)} == {other.blob}
