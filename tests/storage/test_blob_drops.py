"""Deleting a post drops its blobs unless another live entry names them (spec/protocol.md §8.2.9,
§8.5; storage/blob_drops.py): written here, received from a peer, in any order, and after a crash
between marking a blob and removing it."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tidings.protocol import BlobRef, Delete, Post, Profile, SigningKey, blob_id
from tidings.storage.blob_drops import DROPPED, drop_marked
from tidings.storage.blobs import BlobStore
from tidings.storage.store import Store

from tests.support.clocks import TickingMs
from tests.support.entries import chain, raw

ME, ALICE, BOB = (SigningKey(bytes([n]) * 32) for n in (1, 2, 3))


@pytest.fixture
def home(tmp_path: Path) -> Iterator[tuple[Store, BlobStore]]:
    """A store that removes deleted posts' blobs from ``blobs``, as a home's store does."""
    with Store(tmp_path / "store.db", blobs_folder=tmp_path / "blobs") as store:
        yield store, BlobStore(tmp_path / "blobs", store, now=TickingMs())


def ref(data: bytes, **fields: Any) -> BlobRef:
    return BlobRef(blob=blob_id(data).hash, size=len(data), mime="image/png", **fields)


def held(blobs: BlobStore, data: bytes) -> bool:
    """The blob of ``data`` is here: its file and its row, or neither (anything else fails the test)."""
    blob = blob_id(data)
    row = bool(blobs.db.read("SELECT 1 FROM blobs WHERE id = ?", (blob.hash,)))
    assert row == blobs.has(blob), f"file and row of {blob} disagree"
    return row


def test_deleting_my_post_drops_its_blobs_and_previews_pinned_or_not(home) -> None:
    store, blobs = home
    for data in (b"photo", b"photo-small"):
        blobs.put_bytes(data, pinned=True)  # as tidings post --attach stores them
    blobs.put_bytes(b"other")
    post = store.append(
        ME, Post(text="garden", attachments=(ref(b"photo", preview=blob_id(b"photo-small").hash),))
    )
    store.append(ME, Post(text="no pictures"))
    assert held(blobs, b"photo") and held(blobs, b"photo-small")
    store.append(ME, Delete(target=post.hash))
    assert not held(blobs, b"photo") and not held(blobs, b"photo-small")
    assert held(blobs, b"other")  # named by nothing, but no delete named it either
    assert [p.name for p in blobs.folder.rglob("*") if p.is_file()] == [
        "tmp.lock",
        blob_id(b"other").hash.hex(),
    ]


def test_a_blob_another_live_entry_names_stays(home) -> None:
    store, blobs = home
    for data in (b"shared", b"face"):
        blobs.put_bytes(data, pinned=True)
    first = store.append(ME, Post(text="one", attachments=(ref(b"shared"),)))
    # the same picture in a post of another feed, and my avatar in a post of mine
    alice = chain(ALICE, [Post(text="mine too", attachments=(ref(b"shared"),))])
    store.ingest(raw(alice))
    store.append(ME, Profile(avatar=ref(b"face")))
    second = store.append(ME, Post(text="two", attachments=(ref(b"face"), ref(b"shared"))))
    store.append(ME, Delete(target=first.hash))
    assert held(blobs, b"shared")  # alice's post and my second name it
    store.append(ME, Delete(target=second.hash))
    assert held(blobs, b"shared") and held(blobs, b"face")  # alice's post; my profile
    store.ingest(raw(chain(ALICE, [Delete(target=alice[0][0].hash)], start=alice)))
    assert not held(blobs, b"shared") and held(blobs, b"face")
    assert blobs.listing()[0]["pinned"] is True  # the avatar stays as it was


def test_a_delete_received_from_a_peer_drops_the_blob(home) -> None:
    store, blobs = home
    blobs.put_bytes(b"theirs")  # fetched: not pinned
    blobs.put_bytes(b"batch")
    posted = chain(ALICE, [Post(text="p", attachments=(ref(b"theirs"),))])
    store.ingest(raw(posted))
    store.ingest(raw(chain(ALICE, [Delete(target=posted[0][0].hash)], start=posted)))
    assert not held(blobs, b"theirs")
    # a post and its delete in one batch
    both = chain(BOB, [Post(text="q", attachments=(ref(b"batch"),))])
    both += chain(BOB, [Delete(target=both[0][0].hash)], start=both)
    result = store.ingest(raw(both))
    assert len(result.added) == 2 and not held(blobs, b"batch")


def test_a_post_that_arrives_after_its_delete_drops_the_blob(home) -> None:
    store, blobs = home
    blobs.put_bytes(b"late")
    posted = chain(ALICE, [Post(text="p", attachments=(ref(b"late"),))])
    deleted = chain(ALICE, [Delete(target=posted[0][0].hash)], start=posted)
    store.ingest(raw(deleted))  # the tombstone first (partial sync)
    assert held(blobs, b"late")
    store.ingest(raw(posted))
    assert not held(blobs, b"late")


def test_a_delete_whose_payload_comes_late_drops_the_blob(home) -> None:
    store, blobs = home
    blobs.put_bytes(b"pic")
    posted = chain(ALICE, [Post(text="p", attachments=(ref(b"pic"),))])
    deleted = chain(ALICE, [Delete(target=posted[0][0].hash)], start=posted)
    store.ingest([*raw(posted), (deleted[0][0].raw, None)])  # the delete without its payload
    assert held(blobs, b"pic")
    store.ingest(raw(deleted))
    assert not held(blobs, b"pic")


def test_a_crash_between_marking_and_removing_leaves_the_blob_marked(tmp_path: Path) -> None:
    # a store that knows no blobs folder marks but cannot remove: what a crash right after the
    # delete's commit leaves
    with Store(tmp_path / "store.db") as store:
        blobs = BlobStore(tmp_path / "blobs", store, now=TickingMs())
        for data in (b"gone", b"named-again", b"old", b"new"):
            blobs.put_bytes(data, pinned=data in (b"gone", b"named-again"))
        a = store.append(ME, Post(text="a", attachments=(ref(b"gone"),)))
        b = store.append(ME, Post(text="b", attachments=(ref(b"named-again"),)))
        store.append_many(ME, [Delete(target=a.hash), Delete(target=b.hash)])
        rows = {r["id"]: r for r in blobs.listing()}
        for data in (b"gone", b"named-again"):
            assert rows[str(blob_id(data))]["last_used"] == DROPPED and not rows[str(blob_id(data))]["pinned"]
            assert blobs.has(blob_id(data))
        # gc evicts a marked blob before any other: 21 bytes, one over a quota of 20
        assert blobs.gc(quota=21)["removed"] == []
        (evicted,) = blobs.gc(quota=20)["removed"]
        assert evicted in {str(blob_id(b"gone")), str(blob_id(b"named-again"))}
        assert blobs.has(blob_id(b"old")) and blobs.has(blob_id(b"new"))
        # stored again, a blob is in use again (unmarked); mark both once more, as the crash left them
        for data in (b"gone", b"named-again"):
            blobs.put_bytes(data)
            assert blobs.listing()[0]["last_used"] > 0
            store.conn.execute("UPDATE blobs SET last_used = ? WHERE id = ?", (DROPPED, blob_id(data).hash))
        # a marked blob that an entry names again is unmarked, the others removed
        store.ingest(raw(chain(ALICE, [Post(text="again", attachments=(ref(b"named-again"),))])))
        result = drop_marked(blobs)
        assert result == {"removed": [str(blob_id(b"gone"))], "freed": len(b"gone")}
        assert not blobs.has(blob_id(b"gone")) and blobs.has(blob_id(b"named-again"))
        assert {r["id"]: r["last_used"] for r in blobs.listing()}[str(blob_id(b"named-again"))] > 0
        assert drop_marked(blobs) == {"removed": [], "freed": 0}


def test_remove_goes_on_beside_writers_and_waits_for_gc(home, tmp_path: Path) -> None:
    _, blobs = home
    blob = blobs.put_bytes(b"here", pinned=True)
    with blobs.writer() as w:  # writers hold tmp.lock shared, as remove does: neither waits
        w.write(b"being written")
        assert blobs.remove(blob) is True
        written = w.commit()
    assert not blobs.has(blob) and [r["id"] for r in blobs.listing()] == [str(written)]
    assert blobs.remove(blob) is False
    # gc holds the lock exclusively (it must not record a file remove is taking away): remove waits
    lock = os.open(blobs.folder / "tmp.lock", os.O_RDWR)
    fcntl.flock(lock, fcntl.LOCK_EX)
    removed: list[bool] = []

    def remove() -> None:  # on its own connection: a sqlite3 connection stays on its thread
        with Store(tmp_path / "store.db") as other:
            removed.append(BlobStore(blobs.folder, other).remove(written))

    worker = threading.Thread(target=remove)
    worker.start()
    try:
        worker.join(0.3)
        assert worker.is_alive() and blobs.has(written)
    finally:
        os.close(lock)
    worker.join(10)
    assert removed == [True] and not blobs.has(written)
