"""Atom out (spec §14.3): exported and served documents, checked field by field with feedparser."""

from __future__ import annotations

import calendar

import feedparser
import httpx
import trio
from PIL import Image
from tidings.node.bridges import bridge_services
from tidings.node.bridges.atom import AtomService, entry_urn, feed_urn, rfc3339
from tidings.protocol import BlobId, Post, Profile, SigningKey, blob_id_text, entry_id_text, feed_id_text
from tidings.storage.store import Store

from tests.support.bridges import lines, tidings
from tests.support.nodes import make_home, start_node

T0 = 1_900_000_000_123  # after the profile make_home writes at the real time


def _seed(tmp_path):
    home, key = make_home(tmp_path, "alice")
    with Store(home.store_path) as s:
        s.append(key, Profile(name="Alice", bio="I write things."), now=T0)
        first = s.append(key, Post(text="Hello Atom\nsecond line", tags=("intro", "atom")), now=T0 + 1000)
        reply = s.append(
            key, Post(text="a reply <b>&amp; escapes</b>", reply=first.hash, root=first.hash), now=T0 + 2000
        )
        gone = s.append(key, Post(text="deleted later"), now=T0 + 3000)
        from tidings.protocol import Delete

        s.append(key, Delete(target=gone.hash), now=T0 + 4000)
    return home, key, first, reply


def _check(parsed, key: SigningKey, first, reply) -> None:
    assert not parsed.bozo, parsed.bozo_exception
    assert parsed.version == "atom10"
    feed = feed_id_text(key.public_key)
    assert parsed.feed.id == feed_urn(feed) == "urn:tidings:feed:" + feed[1:]
    assert parsed.feed.title == "Alice on Tidings"
    assert parsed.feed.subtitle == "I write things."
    assert parsed.feed.author == "Alice"
    assert calendar.timegm(parsed.feed.updated_parsed) == (T0 + 2000) // 1000
    entries = parsed.entries
    assert [e.id for e in entries] == [
        entry_urn(entry_id_text(reply.hash)),
        entry_urn(entry_id_text(first.hash)),
    ]
    newest, oldest = entries
    assert newest.title == "a reply <b>&amp; escapes</b>"
    assert newest.content[0].value == "a reply <b>&amp; escapes</b>"
    assert newest.content[0].type == "text/plain"
    assert newest["thr_in-reply-to"]["ref"] == entry_urn(entry_id_text(first.hash))
    assert newest.published == rfc3339(T0 + 2000) == newest.updated
    assert newest.published.endswith("Z") and "T" in newest.published
    assert calendar.timegm(newest.published_parsed) == (T0 + 2000) // 1000
    assert newest.author == "Alice" and newest.author_detail.href == feed_urn(feed)
    assert oldest.title == "Hello Atom"
    assert oldest.content[0].value == "Hello Atom\nsecond line"
    assert [t.term for t in oldest.tags] == ["intro", "atom"]
    assert "thr_in-reply-to" not in oldest


def test_export_writes_a_valid_atom_feed(tmp_path):
    home, key, first, reply = _seed(tmp_path)
    out = tmp_path / "feed.atom"
    summary = lines(tidings(home.path, "bridge", "atom", "export", "-o", str(out), "--json"))[0]
    assert summary == {"feed": feed_id_text(key.public_key), "entries": 2, "file": str(out)}
    _check(feedparser.parse(out.read_bytes()), key, first, reply)
    # standard output, and another stored feed by id
    text = tidings(home.path, "bridge", "atom", "export").stdout
    _check(feedparser.parse(text.encode()), key, first, reply)
    by_id = tidings(home.path, "bridge", "atom", "export", feed_id_text(key.public_key)).stdout
    assert by_id == text  # stable: same ids, same dates


def test_export_of_a_bridged_post_keeps_its_origin(tmp_path):
    home, _ = make_home(tmp_path, "me")
    bridge = SigningKey(bytes([9]) * 32)
    origin = {"network": "rss", "id": "guid-1", "author": "Bob Writer", "url": "https://example.org/p/1"}
    with Store(home.store_path) as s:
        s.append(bridge, Post(text="bridged", origin=origin), now=T0)
    parsed = feedparser.parse(
        tidings(home.path, "bridge", "atom", "export", feed_id_text(bridge.public_key)).stdout
    )
    (entry,) = parsed.entries
    assert entry.link == "https://example.org/p/1"
    assert entry.author == "Bob Writer"


def test_export_errors_are_one_line(tmp_path):
    home, _ = make_home(tmp_path, "me")
    out = tidings(home.path, "bridge", "atom", "export", "@nope", code=1)
    assert out.stderr.startswith("error: '@nope' is not a feed id")
    out = tidings(home.path, "bridge", "atom", "export", "@" + "a" * 52, code=1)
    assert "no feed" in out.stderr
    out = tidings(home.path, "bridge", "config", "atom", "listen", "nowhere", code=1)
    assert "not a HOST:PORT" in out.stderr
    out = tidings(home.path, "bridge", "config", "atom", "colour", "red", code=1)
    assert "has no setting 'colour'" in out.stderr


async def test_the_running_node_serves_the_feed(tmp_path):
    home, key, first, reply = _seed(tmp_path)
    tidings(home.path, "bridge", "config", "atom", "listen", "127.0.0.1:0")
    services = [s for s in bridge_services(home) if s.name == "bridge:atom"]
    assert len(services) == 1 and isinstance(services[0], AtomService)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            node = await start_node(nursery, home, key, services=services, dht=False)
            atom = services[0]
            assert atom.address is not None and atom.address.startswith("127.0.0.1:")
            async with httpx.AsyncClient() as client:
                r = await client.get(f"http://{atom.address}/feed.atom")
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("application/atom+xml")
                parsed = feedparser.parse(r.content)
                _check(parsed, key, first, reply)
                assert parsed.feed.links[0].rel == "self"
                assert parsed.feed.links[0].href == f"http://{atom.address}/feed.atom"
                other = await client.get(f"http://{atom.address}/feeds/{feed_id_text(key.public_key)}.atom")
                assert other.status_code == 200
                assert (await client.get(f"http://{atom.address}/nothing")).status_code == 404
                assert (await client.post(f"http://{atom.address}/feed.atom")).status_code == 405
            state = node.statistics()["services"]["bridge:atom"]
            assert state["state"] == "running" and state["served"] == 2
            nursery.cancel_scope.cancel()


def test_dates_from_the_future_or_before_1970_still_make_a_feed():
    """A validly signed entry may carry any ts up to 2^53 - 1 (spec §5.3); the feed shows the nearest
    date RFC 3339 can write instead of failing."""
    assert rfc3339(2**53 - 1) == "9999-12-31T23:59:59.999Z"
    assert rfc3339(-5) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(1_767_323_045_678) == "2026-01-02T03:04:05.678Z"


def _attached(tmp_path, home, key):
    """Alice's posts with a picture and a file, a deleted post's picture, a blob never stored, and a
    stranger's post with a picture of its own: what the feed server may serve and what it may not."""
    from tidings.node.actions import attach
    from tidings.protocol import BlobRef, Delete

    picture, document, secret, strange = (tmp_path / n for n in ("red.png", "a.html", "b.png", "c.png"))
    Image.new("RGB", (40, 30), (200, 10, 10)).save(picture, format="PNG")
    document.write_bytes(b"<html><script>alert(1)</script></html>")
    Image.new("RGB", (8, 8), (0, 0, 0)).save(secret, format="PNG")
    Image.new("RGB", (9, 9), (0, 0, 0)).save(strange, format="PNG")
    stranger = SigningKey(bytes([7]) * 32)
    never = BlobRef(blob=bytes(32), size=10, mime="image/png", alt="never stored")
    with Store(home.store_path) as s:
        blobs = home.open_blobs(s)
        red = attach(blobs, str(picture), alt="a red square")
        page = attach(blobs, str(document))
        hidden, other = attach(blobs, str(secret)), attach(blobs, str(strange))
        # a remote writer may call a page a picture: it is still served as a download
        lying = BlobRef(blob=page.blob, size=page.size, mime="text/html")
        s.append(key, Post(text="with files", attachments=(red, page)), now=T0 + 5000)
        s.append(key, Post(text="a lie", attachments=(lying, never)), now=T0 + 6000)
        gone = s.append(key, Post(text="gone", attachments=(hidden,)), now=T0 + 7000)
        s.append(key, Delete(target=gone.hash), now=T0 + 8000)
        s.append(stranger, Post(text="not alice's", attachments=(other,)), now=T0)
    return red, page, hidden, other, never


async def test_attachments_are_enclosures_served_by_the_feed_server(tmp_path):
    home, key, _first, _reply = _seed(tmp_path)
    red, page, hidden, other, never = _attached(tmp_path, home, key)
    tidings(home.path, "bridge", "config", "atom", "listen", "127.0.0.1:0")
    (atom,) = [s for s in bridge_services(home) if s.name == "bridge:atom"]
    feed = feed_id_text(key.public_key)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            node = await start_node(nursery, home, key, services=[atom], dht=False)
            base = f"http://{atom.address}"
            async with httpx.AsyncClient() as client:
                parsed = feedparser.parse((await client.get(f"{base}/feed.atom")).content)
                assert not parsed.bozo, parsed.bozo_exception
                lie, with_files = parsed.entries[:2]
                assert with_files.title == "with files" and lie.title == "a lie"
                assert [(e.href, e.type, e.length, e.get("title")) for e in with_files.enclosures] == [
                    (f"{base}/feeds/{feed}/blobs/{blob_id_text(red.blob)}", "image/png", str(red.size), "a red square"),
                    (f"{base}/feeds/{feed}/blobs/{blob_id_text(page.blob)}", "application/octet-stream", str(page.size), None),
                ]  # fmt: skip
                assert [e.type for e in lie.enclosures] == ["application/octet-stream", "image/png"]
                # the picture: its bytes, as a picture, never sniffed
                r = await client.get(with_files.enclosures[0].href)
                assert r.status_code == 200 and r.content == _blob_bytes(home, red.blob)
                assert r.headers["content-type"] == "image/png"
                assert r.headers["content-length"] == str(red.size)
                assert r.headers["x-content-type-options"] == "nosniff"
                assert "content-disposition" not in r.headers
                assert r.headers["content-security-policy"] == "default-src 'none'; sandbox"
                # the page: a download, whatever its post calls it
                r = await client.get(with_files.enclosures[1].href)
                assert r.status_code == 200 and r.content == _blob_bytes(home, page.blob)
                assert r.headers["content-type"] == "application/octet-stream"
                assert r.headers["content-disposition"].startswith("attachment")
                assert r.headers["x-content-type-options"] == "nosniff"
                assert (await client.get(lie.enclosures[0].href)).headers["content-type"] == (
                    "application/octet-stream"
                )
                head = await client.head(with_files.enclosures[0].href)
                assert head.status_code == 200 and head.content == b""
                assert head.headers["content-length"] == str(red.size)
                # not an open blob server: only what a live post of that feed attaches, and is held
                stranger = feed_id_text(SigningKey(bytes([7]) * 32).public_key)
                for path in (
                    f"/feeds/{feed}/blobs/{blob_id_text(hidden.blob)}",  # its post was deleted
                    f"/feeds/{feed}/blobs/{blob_id_text(other.blob)}",  # held, but another feed's
                    f"/feeds/{feed}/blobs/{blob_id_text(never.blob)}",  # attached, never stored
                    f"/feeds/{feed}/blobs/{blob_id_text(bytes([5]) * 32)}",  # nobody's
                    f"/feeds/{feed}/blobs/&nonsense",
                    f"/feeds/{stranger}/blobs/{blob_id_text(red.blob)}",  # alice's, asked of another feed
                ):
                    assert (await client.get(base + path)).status_code == 404, path
                r = await client.get(f"{base}/feeds/{stranger}/blobs/{blob_id_text(other.blob)}")
                assert r.status_code == 200 and r.content == _blob_bytes(home, other.blob)
            state = node.statistics()["services"]["bridge:atom"]
            assert state["blobs"] == 5 and state["served"] == 1  # the 404s are not counted
            nursery.cancel_scope.cancel()


def test_export_lists_attachments_as_blob_urns(tmp_path):
    home, key, _first, _reply = _seed(tmp_path)
    red, page, *_ = _attached(tmp_path, home, key)
    parsed = feedparser.parse(tidings(home.path, "bridge", "atom", "export").stdout)
    (with_files,) = [e for e in parsed.entries if e.title == "with files"]
    assert [(e.href, e.type) for e in with_files.enclosures] == [
        ("urn:tidings:blob:" + blob_id_text(red.blob)[1:], "image/png"),
        ("urn:tidings:blob:" + blob_id_text(page.blob)[1:], "application/octet-stream"),
    ]


def _blob_bytes(home, blob: bytes) -> bytes:
    with Store(home.store_path) as s:
        return b"".join(home.open_blobs(s).read(BlobId(blob)))
