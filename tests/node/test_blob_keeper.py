"""The running node keeps its blobs within ``blob_quota`` (node/blob_keeper.py, spec/protocol.md §8.5):
blobs stored while it runs past the quota are evicted, others' least recently used first, its own and
its followed feeds' never; blobs a crash left marked after a delete are removed."""

from __future__ import annotations

import trio
from tidings.node.blob_keeper import BlobKeeper
from tidings.node.home import Home
from tidings.protocol import BlobRef, Delete, Follow, Post, SigningKey, blob_id
from tidings.storage.blob_drops import DROPPED
from tidings.storage.blobs import BlobStore
from tidings.storage.store import Store

from tests.support.entries import chain, raw
from tests.support.nodes import make_home, start_node, wait_until

FRIEND, STRANGER = SigningKey(b"\x07" * 32), SigningKey(b"\x08" * 32)


def ref(data: bytes) -> BlobRef:
    return BlobRef(blob=blob_id(data).hash, size=len(data), mime="image/png")


def held(home: Home) -> set[bytes]:
    with Store(home.store_path) as store:
        return {bytes(r[0]) for r in store.read("SELECT id FROM blobs")}


async def test_the_running_node_evicts_others_blobs_past_the_quota(tmp_path) -> None:
    home, key = make_home(tmp_path, "me")
    mine, friends = b"m" * 400, b"f" * 400
    theirs = [bytes([65 + n]) * 300 for n in range(4)]
    with Store(home.store_path) as store:
        store.append(key, Post(text="mine", attachments=(ref(mine),)))
        store.append(key, Follow(feed=FRIEND.public_key))
        store.ingest(raw(chain(FRIEND, [Post(text="f", attachments=(ref(friends),))])))
        store.ingest(
            raw(chain(STRANGER, [Post(text=str(n), attachments=(ref(t),)) for n, t in enumerate(theirs)]))
        )
    keeper = BlobKeeper(home, interval=0.05, quota=1500)
    async with trio.open_nursery() as nursery:
        node = await start_node(nursery, home, key, dht=False, services=[keeper])
        with Store(home.store_path) as store:  # blobs arriving while the node runs (another connection)
            blobs = BlobStore(home.blobs_path, store)
            for data in (mine, friends, *theirs):
                blobs.put_bytes(data)
        # 400 + 400 kept; of the others' 1200 only two fit: the two used first go
        gone = {blob_id(theirs[0]).hash, blob_id(theirs[1]).hash}
        await wait_until(lambda: not held(home) & gone and keeper.state()["removed"] == 2)
        assert held(home) == {blob_id(d).hash for d in (mine, friends, theirs[2], theirs[3])}
        assert keeper.state()["bytes"] == 1400 and keeper.state()["quota"] == 1500
        assert node.statistics()["services"]["blobs"]["state"] == "running"
        nursery.cancel_scope.cancel()


async def test_the_running_node_removes_blobs_a_crash_left_marked(tmp_path) -> None:
    home, key = make_home(tmp_path, "me")
    with Store(home.store_path) as store:  # no blobs folder: marks, and stops there (as a crash would)
        BlobStore(home.blobs_path, store).put_bytes(b"regretted", pinned=True)
        post = store.append(key, Post(text="oops", attachments=(ref(b"regretted"),)))
        store.append(key, Delete(target=post.hash))
        assert store.read("SELECT last_used FROM blobs")[0][0] == DROPPED
    async with trio.open_nursery() as nursery:
        await start_node(nursery, home, key, dht=False, services=[BlobKeeper(home, interval=0.05)])
        await wait_until(lambda: not held(home))
        name = blob_id(b"regretted").hash.hex()
        assert not (home.blobs_path / name[:2] / name).exists()
        nursery.cancel_scope.cancel()
