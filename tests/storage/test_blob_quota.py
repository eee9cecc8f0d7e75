"""Must hold (issue 18): filling a home past ``blob_quota`` evicts only others' blobs, oldest use first;
your own blobs and those of the feeds you follow stay (spec/protocol.md §8.5, storage/blob_upkeep.py).
Real files in a real home, its quota read from its config.toml, a fake clock for ``last_used``."""

from __future__ import annotations

from pathlib import Path

from tidings.node.home import Home
from tidings.protocol import BlobId, BlobRef, Delete, Follow, Post, SigningKey, blob_id
from tidings.storage.blob_upkeep import blob_usage, upkeep
from tidings.storage.blobs import BlobStore

from tests.support.clocks import TickingMs
from tests.support.entries import chain, raw

FRIEND, STRANGER, OTHER = (SigningKey(bytes([n]) * 32) for n in (7, 8, 9))
QUOTA = 1000


def blob(tag: str, size: int) -> bytes:
    return (tag.encode() * size)[:size]


def ref(data: bytes) -> BlobRef:
    return BlobRef(blob=blob_id(data).hash, size=len(data), mime="image/png")


def make_home(tmp_path: Path) -> tuple[Home, SigningKey]:
    home = Home(tmp_path / "home")
    key = home.init(name="me")
    home.config_path.write_text(f"[limits]\nblob_quota = {QUOTA}\n")
    assert home.limit("blob_quota") == QUOTA
    return home, key


def test_filling_past_the_quota_evicts_only_others_blobs_oldest_use_first(tmp_path: Path) -> None:
    home, me = make_home(tmp_path)
    with home.open_store() as store:
        blobs = BlobStore(home.blobs_path, store, now=TickingMs())
        mine, friends = blob("mine", 300), blob("friend", 250)
        theirs = {n: blob(f"stranger{n}", 150) for n in range(6)}
        asked = blob("asked for", 100)  # fetched on request: no entry here names it
        blobs.put_bytes(mine, pinned=True)  # as tidings post --attach stores it
        store.append(me, Post(text="my picture", attachments=(ref(mine),)))
        store.append(me, Follow(feed=FRIEND.public_key))
        store.ingest(raw(chain(FRIEND, [Post(text="theirs", attachments=(ref(friends),))])))
        store.ingest(
            raw(chain(STRANGER, [Post(text=str(n), attachments=(ref(theirs[n]),)) for n in range(6)]))
        )
        blobs.put_bytes(friends)  # fetched: not pinned, kept because I follow its feed
        evicted: list[str] = []
        # fill, one blob at a time, as transfers would; upkeep after each, as the node's keeper does
        for data in [theirs[0], theirs[1], asked, theirs[2], theirs[3], theirs[4], theirs[5]]:
            if data is theirs[2]:
                b"".join(blobs.read(blob_id(theirs[0])))  # shown again: used after theirs[1] and asked
            blobs.put_bytes(data)
            result = upkeep(blobs, store, me.public_key, int(home.limit("blob_quota")), only_over_quota=True)
            evicted += result["removed"]
            assert result["bytes"] <= QUOTA
            assert blobs.has(blob_id(mine)) and blobs.has(blob_id(friends))
        # 300 + 250 kept; each blob beyond 1000 evicts others' least recently used one
        order = [theirs[1], asked, theirs[0], theirs[2]]
        assert evicted == [str(blob_id(d)) for d in order]
        for data in order:
            assert not blobs.has(blob_id(data))
            assert not blobs.path_of(blob_id(data)).exists()
        for data in (mine, friends, theirs[3], theirs[4], theirs[5]):
            assert blobs.has(blob_id(data))
        left = sorted(p.name for p in home.blobs_path.rglob("*") if p.is_file() and p.parent.name != "tmp")
        assert left == sorted(
            ["tmp.lock", *(blob_id(d).hash.hex() for d in (mine, friends, theirs[3], theirs[4], theirs[5]))]
        )
        usage = blob_usage(blobs, store, me.public_key, QUOTA)
        assert usage == {
            "count": 5,
            "bytes": 300 + 250 + 3 * 150,
            "quota": QUOTA,
            "kept": 2,
            "kept_bytes": 550,
            "others": 3,
            "others_bytes": 450,
        }


def test_own_and_followed_blobs_stay_even_past_the_quota(tmp_path: Path) -> None:
    home, me = make_home(tmp_path)
    with home.open_store() as store:
        blobs = BlobStore(home.blobs_path, store, now=TickingMs())
        mine, friends, stranger = blob("mine", 600), blob("friend", 600), blob("stranger", 10)
        store.append(me, Post(text="mine", attachments=(ref(mine),)))
        store.append(me, Follow(feed=FRIEND.public_key))
        store.ingest(raw(chain(FRIEND, [Post(text="f", attachments=(ref(friends),))])))
        store.ingest(raw(chain(OTHER, [Post(text="o", attachments=(ref(stranger),))])))
        for data in (stranger, mine, friends):  # none pinned: kept only by what names them
            blobs.put_bytes(data)
        result = upkeep(blobs, store, me.public_key, QUOTA)
        assert result["removed"] == [str(blob_id(stranger))] and result["bytes"] == 1200
        assert blobs.has(blob_id(mine)) and blobs.has(blob_id(friends))
        assert isinstance(BlobId.parse(result["removed"][0]), BlobId)


def test_a_store_opened_by_the_home_removes_a_deleted_posts_blobs(tmp_path: Path) -> None:
    home, me = make_home(tmp_path)
    with home.open_store() as store:
        blobs = home.open_blobs(store)
        made = blobs.put_bytes(b"picture", pinned=True)
        post = store.append(me, Post(text="p", attachments=(ref(b"picture"),)))
    with home.open_store() as store:  # as every command opens it
        store.append(me, Delete(target=post.hash))
        assert not home.open_blobs(store).has(made)
