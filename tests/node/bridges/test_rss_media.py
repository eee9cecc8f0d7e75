"""RSS/Atom in with pictures and files (spec §14.4, §8.5): enclosures, Atom enclosure links and Media RSS
become blobs attached to the bridged posts; bad ones are skipped with a reason. Real HTTP servers on their
own 127.x addresses, the CLI in-process on a real home."""

from __future__ import annotations

import io
import random
import struct
import time
import zlib
from pathlib import Path

import feedparser
import httpx
import trio
from PIL import Image
from tidings.node.bridges import bridge_services
from tidings.node.bridges.atom import AtomService
from tidings.node.bridges.rss import RssService
from tidings.node.media import prepare
from tidings.protocol import BlobId, feed_id_text
from tidings.storage import bridges as db
from tidings.storage.store import Store

from tests.support.bridges import FeedServer, lines, tidings
from tests.support.nodes import make_home, next_host, start_node, wait_until
from tests.support.pictures import gps_jpeg

MAX_BLOB = 262_144  # config.toml [limits] max_blob of these homes: an oversize body is small to send
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def photo() -> bytes:
    """A JPEG from a phone: a GPS position and a camera name in its EXIF, a comment."""
    return gps_jpeg(96, 64)


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(out, format="PNG")
    return out.getvalue()


def bomb() -> bytes:
    """A tiny PNG that declares 100000 x 100000 pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


RSS = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/"><channel>
  <title>Example Pics</title><link>https://pics.example/</link><description>pictures</description>
  <item><title>Bad ones</title><link>https://pics.example/3</link><guid isPermaLink="false">pics-3</guid>
    <pubDate>Wed, 03 Jan 2024 10:00:00 GMT</pubDate><description>nothing good here</description>
    <enclosure url="{base}/gone.jpg" type="image/jpeg" length="1000"/>
    <media:content url="{base}/huge.png" type="image/png" medium="image"/>
    <media:content url="{base}/bomb.png" type="image/png" medium="image"/>
    <media:content url="{elsewhere}/lan.png" type="image/png" medium="image"/>
  </item>
  <item><title>A document</title><link>https://pics.example/2</link><guid isPermaLink="false">pics-2</guid>
    <pubDate>Tue, 02 Jan 2024 10:00:00 GMT</pubDate><description>read it</description>
    <enclosure url="{base}/doc.pdf" type="application/pdf" length="{pdf_length}"/>
    <enclosure url="{base}/episode.mp3" type="audio/mpeg" length="80000000"/>
    <media:content url="{base}/declared.png" medium="image"/>
  </item>
  <item><title>Garden</title><link>https://pics.example/1</link><guid isPermaLink="false">pics-1</guid>
    <pubDate>Mon, 01 Jan 2024 10:00:00 GMT</pubDate><description>my garden</description>
    <enclosure url="{base}/photo.jpg" type="image/jpeg" length="{photo_length}"/>
    <media:content url="{base}/red.png" type="image/png" medium="image">
      <media:description type="plain">A red square</media:description>
    </media:content>
    <media:thumbnail url="{base}/thumb.jpg"/>
  </item>
</channel></rss>"""

ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><id>urn:uuid:pics</id><title>Atom Pics</title>
  <updated>2025-03-01T10:00:00Z</updated><author><name>Ann</name></author>
  <entry><id>urn:uuid:pic-1</id><title>A photo</title><link href="https://blog.example/1"/>
    <link rel="enclosure" href="{base}/photo.jpg" type="image/jpeg" title="The garden at dusk"/>
    <updated>2025-03-01T09:00:00Z</updated><summary>look</summary></entry>
</feed>"""


def _home(tmp_path: Path):
    home, key = make_home(tmp_path, "reader")
    home.config_path.write_text(f"[limits]\nmax_blob = {MAX_BLOB}\n")
    return home, key


def _serve(server: FeedServer) -> None:
    jpeg = photo()
    server.routes["/photo.jpg"] = lambda _h: (200, {"Content-Type": "image/jpeg"}, jpeg)
    server.routes["/red.png"] = lambda _h: (200, {"Content-Type": "image/png"}, png())
    server.routes["/doc.pdf"] = lambda _h: (200, {"Content-Type": "application/pdf"}, PDF)
    server.routes["/bomb.png"] = lambda _h: (200, {"Content-Type": "image/png"}, bomb())
    # no Content-Length: refused by counting while it streams, past max_blob
    server.routes["/huge.png"] = lambda _h: (200, {}, iter([png()[:16], *[b"\0" * 65536] * 8]))
    server.routes["/episode.mp3"] = lambda _h: (200, {}, b"ID3" + bytes(1000))
    # a Content-Length over max_blob: refused before the body is read
    server.routes["/declared.png"] = lambda _h: (200, {}, png() + bytes(MAX_BLOB))


def _posts(home, feed: str) -> dict[str, dict]:
    log = lines(tidings(home.path, "log", feed, "--json"))
    return {e["content"]["origin"]["id"]: e["content"] for e in log if e["type"] == "post"}


def _blob(home, blob: str) -> bytes:
    with Store(home.store_path) as s:
        blobs = home.open_blobs(s)
        return b"".join(blobs.read(BlobId.parse(blob)))


def test_enclosures_and_media_content_come_in_as_blobs(tmp_path):
    home, _ = _home(tmp_path)
    with FeedServer(next_host()) as server, FeedServer(next_host()) as lan:
        _serve(server)
        lan.routes["/lan.png"] = lambda _h: (200, {}, png())
        base = server.url("")
        server.routes["/pics.xml"] = lambda _h: (
            200,
            {"Content-Type": "application/rss+xml"},
            RSS.format(
                base=base, elsewhere=lan.url(""), pdf_length=len(PDF), photo_length=len(photo())
            ).encode(),
        )
        url = server.url("/pics.xml")
        feed = lines(tidings(home.path, "bridge", "rss", "follow", url, "--json"))[0]["feed"]
        out = lines(tidings(home.path, "bridge", "rss", "poll", "--json"))[0]
        assert out["status"] == "new" and out["new"] == 3 and out["error"] is None
        assert out["media"] == 3
        reasons = {s["url"].removeprefix(base): s["reason"] for s in out["skipped"]}
        assert reasons.keys() == {
            "/gone.jpg",
            "/huge.png",
            "/bomb.png",
            f"{lan.url('')}/lan.png",
            "/episode.mp3",
            "/declared.png",
        }
        assert reasons["/gone.jpg"] == "HTTP 404"
        assert reasons["/huge.png"].endswith(f"larger than {MAX_BLOB} bytes (too_large)")
        assert "too large to decode safely" in reasons["/bomb.png"] or "pixels" in reasons["/bomb.png"]
        assert reasons["/bomb.png"].endswith("(image_too_large)")
        assert "internal address" in reasons[f"{lan.url('')}/lan.png"]
        assert reasons[f"{lan.url('')}/lan.png"].endswith("(forbidden_address)")
        assert reasons["/episode.mp3"] == "declared 80000000 bytes, over 1048576"
        size = len(png()) + MAX_BLOB
        assert reasons["/declared.png"].endswith(
            f"larger than {MAX_BLOB} bytes (Content-Length {size}) (too_large)"
        )
        assert not lan.requests and not server.hits("/episode.mp3")  # refused before any connection
        assert not server.hits("/thumb.jpg")  # a thumbnail beside pictures is not fetched

        posts = _posts(home, feed)
        # the garden: the photo without its metadata, the PNG with the feed's own alt text
        jpeg, red = posts["pics-1"]["attachments"]
        assert jpeg["mime"] == "image/jpeg" and (jpeg["width"], jpeg["height"]) == (96, 64)
        assert jpeg["alt"] == "image from Example Pics" and jpeg["preview"].startswith("&")
        stored = _blob(home, jpeg["blob"])
        assert len(stored) == jpeg["size"]
        assert b"SpyCam-9000" not in stored and b"SECRET-COMMENT" not in stored
        with Image.open(io.BytesIO(stored)) as picture:
            assert picture.size == (96, 64) and not picture.getexif()
        assert red["mime"] == "image/png" and red["alt"] == "A red square"
        assert (red["width"], red["height"]) == (40, 30)
        # (feedparser reads a media:description as the item's summary too)
        assert posts["pics-1"]["text"].startswith("Garden\n\n")
        assert posts["pics-1"]["text"].endswith("\n\nhttps://pics.example/1")  # nothing skipped: no link
        # the document: an opaque file, bytes unchanged; the podcast episode stays a link
        (pdf,) = posts["pics-2"]["attachments"]
        assert pdf["mime"] == "application/octet-stream" and pdf["size"] == len(PDF)
        assert pdf["alt"] == "file from Example Pics" and "width" not in pdf and "preview" not in pdf
        assert _blob(home, pdf["blob"]) == PDF
        assert posts["pics-2"]["text"].endswith(
            f"https://pics.example/2\n{base}/episode.mp3\n{base}/declared.png"
        )
        # the bad ones: the post comes in with its text, the URLs of what was skipped kept in it
        assert "attachments" not in posts["pics-3"]
        for path in ("/gone.jpg", "/huge.png", "/bomb.png"):
            assert f"\n{base}{path}" in posts["pics-3"]["text"]
        # nothing partial left behind; the blobs of a bridge feed are pinned (rss_media docstring)
        assert list((home.blobs_path / "tmp").iterdir()) == []
        listed = {b["id"]: b for b in lines(tidings(home.path, "blob", "ls", "--json"))}
        for ref in (jpeg, red, pdf):
            assert listed[ref["blob"]]["pinned"] and listed[ref["blob"]]["size"] == ref["size"]
        assert len(listed) == 5  # three blobs and the two pictures' previews
        # a second poll imports nothing and fetches nothing again
        hits = len(server.requests)
        again = lines(tidings(home.path, "bridge", "rss", "poll", "--json"))[0]
        assert again["new"] == 0 and again["media"] == 0 and again["skipped"] == []
        assert [p for p, _ in server.requests[hits:]] == ["/pics.xml"]


def test_an_atom_enclosure_keeps_its_title_as_alt_text(tmp_path):
    home, _ = _home(tmp_path)
    with FeedServer(next_host()) as server:
        _serve(server)
        server.routes["/atom"] = lambda _h: (200, {}, ATOM.format(base=server.url("")).encode())
        url = server.url("/atom")
        feed = lines(tidings(home.path, "bridge", "rss", "follow", url, "--json"))[0]["feed"]
        out = lines(tidings(home.path, "bridge", "rss", "poll", "--json"))[0]
        assert (out["new"], out["media"], out["skipped"]) == (1, 1, [])
        (ref,) = _posts(home, feed)["urn:uuid:pic-1"]["attachments"]
        assert ref["alt"] == "The garden at dusk" and ref["mime"] == "image/jpeg"
        assert b"SpyCam-9000" not in _blob(home, ref["blob"])


def test_a_feed_of_many_enclosures_costs_one_polls_budget(tmp_path):
    home, _ = _home(tmp_path)
    tidings(home.path, "bridge", "config", "rss", "media_fetches", "5")
    with FeedServer(next_host()) as server:
        noise = Image.frombytes("L", (120, 120), random.Random(7).randbytes(14400))
        buffer = io.BytesIO()
        noise.save(buffer, format="PNG")
        picture = buffer.getvalue()  # large beside HTTP headers
        ready = prepare(picture)
        cost = max(len(ready.data) + len(ready.preview or b""), len(picture) + 1000)  # stored, or fetched
        server.routes.update({f"/p{n}.png": (lambda _h: (200, {}, picture)) for n in range(300)})
        items = "".join(
            f'<item><title>n{n}</title><guid isPermaLink="false">g{n}</guid><pubDate>Mon, 01 Jan 2024 10:{n // 60:02d}:{n % 60:02d} GMT'
            f'</pubDate><enclosure url="{server.url(f"/p{n}.png")}" type="image/png"/></item>'
            for n in range(100)
        )
        server.routes["/many"] = lambda _h: (
            200,
            {},
            f'<?xml version="1.0"?><rss version="2.0"><channel><title>Many</title>{items}</channel></rss>'.encode(),
        )
        url = server.url("/many")
        feed = lines(tidings(home.path, "bridge", "rss", "follow", url, "--json"))[0]["feed"]
        out = lines(tidings(home.path, "bridge", "rss", "poll", "--json"))[0]
        assert out["new"] == 100 and out["media"] == 5 and len(out["skipped"]) == 95
        assert {s["reason"] for s in out["skipped"]} == {
            "this poll's media fetches (media_fetches) are spent"
        }
        fetched = sorted(p for p, _ in server.requests if p.endswith(".png"))
        assert fetched == ["/p95.png", "/p96.png", "/p97.png", "/p98.png", "/p99.png"]  # the newest
        with_pictures = [k for k, c in _posts(home, feed).items() if c.get("attachments")]
        assert sorted(with_pictures) == ["g95", "g96", "g97", "g98", "g99"]
        # and a byte budget: nothing past it is fetched
        tidings(home.path, "bridge", "config", "rss", "media_fetches", "1000")
        tidings(home.path, "bridge", "config", "rss", "media_bytes", str(3 * cost + len(picture) // 2))
        more = "".join(
            f'<item><title>m{n}</title><guid>m{n}</guid><enclosure url="{server.url(f"/p{100 + n}.png")}"/></item>'
            for n in range(50)
        )
        server.routes["/many"] = lambda _h: (
            200,
            {},
            f'<?xml version="1.0"?><rss version="2.0"><channel><title>Many</title>{more}</channel></rss>'.encode(),
        )
        out = lines(tidings(home.path, "bridge", "rss", "poll", "--json"))[0]
        assert out["new"] == 50 and out["media"] == 3
        # the fourth is refused by its Content-Length, over what is left; nothing is asked for after it
        reasons = [s["reason"] for s in out["skipped"]]
        assert reasons[0].endswith("what is left of this poll's media budget (media_bytes)")
        assert reasons[1:] == ["this poll's media budget (media_bytes) is spent"] * 46
        assert len([p for p, _ in server.requests if p.endswith(".png")]) == 5 + 4
    with Store(home.store_path) as s:
        (src,) = db.sources(s, "rss", "in")
        assert feed_id_text(src["feed"]) == feed


def test_files_off_and_a_file_over_max_file(tmp_path):
    home, _ = _home(tmp_path)
    with FeedServer(next_host()) as server:
        server.routes["/big.bin"] = lambda _h: (200, {}, iter([b"x" * 40_000] * 3))  # no declared length
        server.routes["/doc.pdf"] = lambda _h: (200, {}, PDF)
        server.routes["/f"] = lambda _h: (
            200,
            {},
            (
                '<?xml version="1.0"?><rss version="2.0"><channel><title>F</title>'
                f'<item><title>a</title><guid>a</guid><enclosure url="{server.url("/big.bin")}"/></item>'
                f'<item><title>b</title><guid>b</guid><enclosure url="{server.url("/doc.pdf")}" type="application/pdf"/></item>'
                "</channel></rss>"
            ).encode(),
        )
        tidings(home.path, "bridge", "config", "rss", "max_file", "65536")
        url = server.url("/f")
        tidings(home.path, "bridge", "rss", "follow", url)
        out = lines(tidings(home.path, "bridge", "rss", "poll", "--json"))[0]
        reasons = {s["url"]: s["reason"] for s in out["skipped"]}
        assert reasons == {server.url("/big.bin"): "a file of more than 65536 bytes (max_file)"}
        assert out["media"] == 1
        assert list((home.blobs_path / "tmp").iterdir()) == []
        tidings(home.path, "bridge", "config", "rss", "max_file", "0")
        server.routes["/f"] = lambda _h: (
            200,
            {},
            (
                '<?xml version="1.0"?><rss version="2.0"><channel><title>F</title>'
                f'<item><title>c</title><guid>c</guid><enclosure url="{server.url("/doc.pdf")}"/></item>'
                "</channel></rss>"
            ).encode(),
        )
        out = lines(tidings(home.path, "bridge", "rss", "poll", "--json"))[0]
        assert out["media"] == 0
        assert out["skipped"] == [
            {
                "url": server.url("/doc.pdf"),
                "reason": "not a picture (JPEG, PNG, WebP or GIF), and files are off (max_file 0)",
            }
        ]


async def test_the_running_node_bridges_a_picture_in_and_serves_it_out_as_an_enclosure(tmp_path):
    """Inside ``tidings run``: the rss service brings the picture in, the atom service lists it as an
    enclosure of the bridge feed and serves its bytes, metadata gone."""
    home, key = _home(tmp_path)
    with FeedServer(next_host()) as server:
        _serve(server)
        server.routes["/atom"] = lambda _h: (200, {}, ATOM.format(base=server.url("")).encode())
        feed = lines(tidings(home.path, "bridge", "rss", "follow", server.url("/atom"), "--json"))[0]["feed"]
        tidings(home.path, "bridge", "config", "atom", "listen", "127.0.0.1:0")
        services = {s.name: s for s in bridge_services(home)}
        rss, atom = services["bridge:rss"], services["bridge:atom"]
        assert isinstance(rss, RssService) and isinstance(atom, AtomService)
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                await start_node(nursery, home, key, services=[rss, atom], dht=False)
                await wait_until(lambda: rss.media == 1, timeout=10)
                async with httpx.AsyncClient() as client:
                    document = await client.get(f"http://{atom.address}/feeds/{feed}.atom")
                    parsed = feedparser.parse(document.content)
                    (entry,) = parsed.entries
                    (enclosure,) = entry.enclosures
                    assert enclosure.type == "image/jpeg" and enclosure.title == "The garden at dusk"
                    assert enclosure.href.startswith(f"http://{atom.address}/feeds/{feed}/blobs/&")
                    got = await client.get(enclosure.href)
                assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
                assert got.headers["x-content-type-options"] == "nosniff"
                assert len(got.content) == int(enclosure.length)
                assert got.content == _blob(home, enclosure.href.rsplit("/", 1)[1])
                assert b"SpyCam-9000" not in got.content
                with Image.open(io.BytesIO(got.content)) as picture:
                    assert picture.size == (96, 64) and not picture.getexif()
                assert list((home.blobs_path / "tmp").iterdir()) == []
                nursery.cancel_scope.cancel()


def test_a_slow_medium_is_cut_at_the_polls_media_time(tmp_path):
    home, _ = _home(tmp_path)
    tidings(home.path, "bridge", "config", "rss", "media_time", "0.5")
    with FeedServer(next_host()) as server:

        def slow(_h):
            time.sleep(1.5)
            return 200, {}, png()

        server.routes["/slow.png"] = slow
        server.routes["/later.png"] = lambda _h: (200, {}, png())
        server.routes["/f"] = lambda _h: (
            200,
            {},
            (
                '<?xml version="1.0"?><rss version="2.0"><channel><title>S</title>'
                f'<item><title>slow, the newest</title><guid>s</guid><enclosure url="{server.url("/slow.png")}"/></item>'
                f'<item><title>later</title><guid>l</guid><enclosure url="{server.url("/later.png")}"/></item>'
                "</channel></rss>"
            ).encode(),
        )
        tidings(home.path, "bridge", "rss", "follow", server.url("/f"))
        started = time.monotonic()
        out = lines(tidings(home.path, "bridge", "rss", "poll", "--json"))[0]
        assert time.monotonic() - started < 1.4  # the poll did not wait for the slow server
        assert out["new"] == 2 and out["media"] == 0
        assert [s["reason"] for s in out["skipped"]] == [
            "cut off: this poll's media time (media_time) is over",
            "this poll's media time (media_time) is over",
        ]
        assert not server.hits("/later.png") and list((home.blobs_path / "tmp").iterdir()) == []
