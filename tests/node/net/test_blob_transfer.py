"""Blob transfer between real nodes on loopback (spec §12.12): a follower fetches the pictures a post
names, resumes a partial transfer, and refuses, without keeping anything, bytes that are not what the
reference says; the peer that sent them pays."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio
from PIL import Image
from tidings.node.actions import attach
from tidings.node.home import Home
from tidings.node.net.blob_serve import PeerBlobs
from tidings.protocol import BlobId, BlobRef, Post, SigningKey
from tidings.storage import blob_wants
from tidings.storage.blob_partial import PartialBlob
from tidings.storage.store import Store

from tests.support.nodes import follow, make_home, start_node, wait_until
from tests.support.pictures import bomb_png, phone_photo


def post_with(home: Home, key: SigningKey, refs: tuple[BlobRef, ...], text: str = "look") -> None:
    with Store(home.store_path) as store:
        store.append(key, Post(text=text, attachments=refs))


def attach_file(home: Home, path: Path, **kwargs: Any) -> BlobRef:
    with Store(home.store_path) as store:
        return attach(home.open_blobs(store), str(path), **kwargs)


def raw_ref(home: Home, data: bytes, mime: str) -> BlobRef:
    """A reference to ``data`` stored as it is (a hostile author's blob: no preparation)."""
    with Store(home.store_path) as store:
        blob = home.open_blobs(store).put_bytes(data, pinned=True)
    return BlobRef(blob=blob.hash, size=len(data), mime=mime, width=10, height=10, alt="x")


def held(home: Home, blob: bytes) -> bytes | None:
    path = home.blobs_path / blob.hex()[:2] / blob.hex()
    return path.read_bytes() if path.is_file() else None


def wants_of(home: Home) -> dict[bytes, blob_wants.Want]:
    with Store(home.store_path) as store:
        return {w.blob: w for w in blob_wants.wants(store)}


def leftovers(home: Home) -> list[str]:
    """Files under blobs/ that are neither a whole blob nor the lock."""
    return sorted(
        str(p.relative_to(home.blobs_path))
        for p in home.blobs_path.rglob("*")
        if p.is_file() and p.name != "tmp.lock" and len(p.parent.name) != 2
    )


async def test_a_follower_gets_the_picture_and_its_preview(tmp_path: Path) -> None:
    (ha, ka), (hb, kb) = make_home(tmp_path, "alice"), make_home(tmp_path, "bob")
    ref = attach_file(ha, phone_photo(tmp_path / "photo.jpg", (2400, 1600), noise=True), alt="noise")
    assert ref.size > 2 * 1024 * 1024  # more than two ranges
    post_with(ha, ka, (ref,))
    follow(hb, kb, ka)
    async with trio.open_nursery() as nursery:
        alice = await start_node(nursery, ha, ka, dht=False)
        await start_node(nursery, hb, kb, dht=False, peers=[alice.address])
        await wait_until(lambda: held(hb, ref.blob) is not None and held(hb, ref.preview) is not None, 20)
        nursery.cancel_scope.cancel()
    assert held(hb, ref.blob) == held(ha, ref.blob)
    with Image.open(hb.blobs_path / ref.blob.hex()[:2] / ref.blob.hex()) as picture:
        assert picture.size == (2400, 1600) and "exif" not in picture.info
    assert wants_of(hb) == {} and leftovers(hb) == []


async def test_a_post_arriving_while_running_has_its_picture_fetched_at_once(tmp_path: Path) -> None:
    (ha, ka), (hb, kb) = make_home(tmp_path, "alice"), make_home(tmp_path, "bob")
    follow(hb, kb, ka)
    async with trio.open_nursery() as nursery:
        alice = await start_node(nursery, ha, ka, dht=False)
        bob = await start_node(nursery, hb, kb, dht=False, peers=[alice.address])
        await wait_until(lambda: len(bob.connections) == 1)
        ref = attach_file(ha, phone_photo(tmp_path / "photo.jpg", (300, 200)), alt="a gradient")
        post_with(ha, ka, (ref,))
        alice.wake()
        await wait_until(lambda: held(hb, ref.blob) is not None, 10)
        nursery.cancel_scope.cancel()


async def test_a_transfer_resumes_from_the_bytes_already_here(tmp_path: Path) -> None:
    (ha, ka), (hb, kb) = make_home(tmp_path, "alice"), make_home(tmp_path, "bob")
    data = os.urandom(3_000_000)
    ref = raw_ref(ha, data, "application/octet-stream")
    post_with(ha, ka, (ref,))
    follow(hb, kb, ka)
    with Store(hb.store_path) as store:  # what an earlier, interrupted try left
        with PartialBlob(hb.open_blobs(store), BlobId(ref.blob), len(data)) as part:
            part.write(data[:2_000_000])
        want = blob_wants.Want(ref.blob, ref.size, ref.size, ref.mime, ka.public_key)
        blob_wants.add_wants(store, [want], 0)
    async with trio.open_nursery() as nursery:
        alice = await start_node(nursery, ha, ka, dht=False)
        bob = await start_node(nursery, hb, kb, dht=False, peers=[alice.address])
        await wait_until(lambda: held(hb, ref.blob) is not None, 20)
        served = sum(conn.blobs.bytes_served for conn in alice.connections.values())
        assert served == 1_000_000  # only the rest
        assert bob.blobs.fetcher.fetched == 1
        nursery.cancel_scope.cancel()
    assert held(hb, ref.blob) == data and leftovers(hb) == []


async def test_bytes_that_are_not_the_blob_are_refused_and_their_sender_cut_off(tmp_path: Path) -> None:
    (ha, ka), (hb, kb) = make_home(tmp_path, "alice"), make_home(tmp_path, "bob")
    data = os.urandom(200_000)
    ref = raw_ref(ha, data, "application/octet-stream")
    (ha.blobs_path / ref.blob.hex()[:2] / ref.blob.hex()).write_bytes(os.urandom(200_000))  # alice lies
    post_with(ha, ka, (ref,))
    follow(hb, kb, ka)
    async with trio.open_nursery() as nursery:
        alice = await start_node(nursery, ha, ka, dht=False)
        bob = await start_node(nursery, hb, kb, dht=False, peers=[alice.address])
        await wait_until(
            lambda: (
                wants_of(hb).get(ref.blob, blob_wants.Want(b"", 0, 0, None, None)).failed == "blob_mismatch"
            ),
            10,
        )
        host = alice.address.rpartition(":")[0]
        assert bob.scores.get(host) < bob.scores.threshold and bob.penalties.banned(host)
        nursery.cancel_scope.cancel()
    assert held(hb, ref.blob) is None and leftovers(hb) == []


@pytest.mark.parametrize(
    ("make", "mime", "code"),
    [
        (lambda tmp: bomb_png(tmp / "bomb.png").read_bytes(), "image/png", "image_too_large"),
        (
            lambda tmp: b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>",
            "image/png",
            "not_a_picture",
        ),
        (lambda tmp: b"<html><script>alert(1)</script></html>", "image/jpeg", "not_a_picture"),
    ],
    ids=["bomb", "svg as png", "html as jpeg"],
)
async def test_a_blob_that_is_not_the_picture_it_claims_is_not_kept(
    tmp_path: Path, make: Any, mime: str, code: str
) -> None:
    (ha, ka), (hb, kb) = make_home(tmp_path, "alice"), make_home(tmp_path, "bob")
    good = attach_file(ha, phone_photo(tmp_path / "ok.jpg"), alt="fine")
    bad = raw_ref(ha, make(tmp_path), mime)
    post_with(ha, ka, (bad, good))
    follow(hb, kb, ka)
    async with trio.open_nursery() as nursery:
        alice = await start_node(nursery, ha, ka, dht=False)
        bob = await start_node(nursery, hb, kb, dht=False, peers=[alice.address])
        await wait_until(lambda: held(hb, good.blob) is not None, 10)  # other transfers go on
        await wait_until(lambda: getattr(wants_of(hb).get(bad.blob), "failed", None) == code, 10)
        host = alice.address.rpartition(":")[0]
        assert bob.scores.get(host) < 0
        nursery.cancel_scope.cancel()
    assert held(hb, bad.blob) is None and leftovers(hb) == []


async def test_an_endless_slow_stream_is_given_up_and_costs_its_sender(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (ha, ka), (hb, kb) = make_home(tmp_path, "alice"), make_home(tmp_path, "bob")
    data = os.urandom(500_000)
    ref = raw_ref(ha, data, "application/octet-stream")
    post_with(ha, ka, (ref,))
    follow(hb, kb, ka)
    honest = PeerBlobs._send_range

    async def trickle(self: PeerBlobs, fh: Any, event: Any) -> None:
        if self.conn.node.key.public_key != ka.public_key:
            return await honest(self, fh, event)
        await trio.sleep_forever()  # a peer that never sends the bytes it offered

    monkeypatch.setattr(PeerBlobs, "_send_range", trickle)
    async with trio.open_nursery() as nursery:
        alice = await start_node(nursery, ha, ka, dht=False)
        bob = await start_node(
            nursery, hb, kb, dht=False, peers=[alice.address], limits={"blob_range_timeout": 1.0}
        )
        await wait_until(lambda: getattr(wants_of(hb).get(ref.blob), "failed", None) is not None, 10)
        host = alice.address.rpartition(":")[0]
        assert bob.scores.get(host) < 0
        nursery.cancel_scope.cancel()
    assert held(hb, ref.blob) is None


@pytest.mark.parametrize("extra", [1_000_000, 9_000_000], ids=["larger", "past max_blob"])
async def test_a_holder_offering_another_size_than_the_reference_is_not_asked(
    tmp_path: Path, extra: int
) -> None:
    """An oversized blob: alice's file has grown past what her post says. Bob does not fetch a byte of
    it (a file past max_blob she does not even offer); the want fails for now, nothing is kept, and the
    connection carries on."""
    (ha, ka), (hb, kb) = make_home(tmp_path, "alice"), make_home(tmp_path, "bob")
    data = os.urandom(200_000)
    ref = raw_ref(ha, data, "application/octet-stream")
    path = ha.blobs_path / ref.blob.hex()[:2] / ref.blob.hex()
    path.write_bytes(data + os.urandom(extra))
    post_with(ha, ka, (ref,))
    follow(hb, kb, ka)
    async with trio.open_nursery() as nursery:
        alice = await start_node(nursery, ha, ka, dht=False)
        bob = await start_node(
            nursery, hb, kb, dht=False, peers=[alice.address], limits={"blob_ask_timeout": 0.5}
        )
        await wait_until(lambda: getattr(wants_of(hb).get(ref.blob), "failed", None) == "not_found", 10)
        assert sum(conn.blobs.bytes_served for conn in alice.connections.values()) == 0
        offered = bob.blobs.fetcher.holders.get(ref.blob, {})
        assert list(offered.values()) == ([] if extra > 8_000_000 else [200_000 + extra])
        assert len(bob.connections) == 1
        nursery.cancel_scope.cancel()
    assert held(hb, ref.blob) is None and leftovers(hb) == []
