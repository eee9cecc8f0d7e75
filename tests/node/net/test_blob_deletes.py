"""A delete drops the deleted post's blobs at the peers that replicate it too (spec/protocol.md
§8.2.9, §8.5): two real nodes on loopback, the blob put into the follower's home directly (blob
transfer is not what this tests)."""

from __future__ import annotations

import trio
from tidings.node.home import Home
from tidings.protocol import BlobRef, Delete, Post, blob_id
from tidings.storage.blobs import BlobStore
from tidings.storage.store import Store

from tests.support.nodes import follow, has_entry, make_home, start_node, wait_until


def ref(data: bytes) -> BlobRef:
    return BlobRef(blob=blob_id(data).hash, size=len(data), mime="image/png")


def holds(home: Home, data: bytes) -> bool:
    """The home holds the blob: its file, or its row."""
    blob = blob_id(data)
    with Store(home.store_path) as store:
        row = bool(store.read("SELECT 1 FROM blobs WHERE id = ?", (blob.hash,)))
    name = blob.hash.hex()
    return row or (home.blobs_path / name[:2] / name).exists()


def put(home: Home, *blobs: bytes, pinned: bool = False) -> None:
    with Store(home.store_path) as store:
        for data in blobs:
            BlobStore(home.blobs_path, store).put_bytes(data, pinned=pinned)


async def test_a_delete_drops_the_blob_at_the_peer_unless_another_post_names_it(tmp_path) -> None:
    ha, ka = make_home(tmp_path, "alice")
    hb, kb = make_home(tmp_path, "bob")
    photo, shared = b"the photo alice regrets", b"a picture in two posts"
    put(ha, photo, shared, pinned=True)  # as tidings post --attach stores them
    with Store(ha.store_path) as store:
        regretted = store.append(ka, Post(text="oops", attachments=(ref(photo), ref(shared))))
        kept = store.append(ka, Post(text="fine", attachments=(ref(shared),)))
    follow(hb, kb, ka)
    async with trio.open_nursery() as nursery:
        alice = await start_node(nursery, ha, ka, dht=False)
        await start_node(nursery, hb, kb, peers=[alice.address], dht=False)
        await wait_until(lambda: has_entry(hb, kept.hash))
        put(hb, photo, shared)  # what bob fetched for the posts he replicates
        assert holds(hb, photo) and holds(hb, shared)
        # alice deletes the post with `tidings delete` (another process, its store opened by the home)
        with ha.open_store() as store:
            deleted = store.append(ka, Delete(target=regretted.hash))
        assert not holds(ha, photo) and holds(ha, shared)
        await wait_until(lambda: has_entry(hb, deleted.hash))
        await wait_until(lambda: not holds(hb, photo))
        assert holds(hb, shared)  # alice's other post still names it
        with Store(hb.store_path) as store:
            assert store.entry(regretted.hash).get("deleted") is True
        nursery.cancel_scope.cancel()
