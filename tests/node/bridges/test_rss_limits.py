"""RSS in under attack (spec §14.4, §14.6): bombs, huge and endless documents, slow drips, redirects to
internal hosts. Real HTTP servers on their own 127.x addresses; the CLI in-process on a real store."""

from __future__ import annotations

import gzip
import time
import zlib

import trio
from tidings.node.bridges import bridge_services
from tidings.node.bridges.rss import RssService
from tidings.storage import bridges as db
from tidings.storage.store import Store

from tests.support.bridges import FeedServer, lines, tidings
from tests.support.nodes import make_home, next_host, start_node, wait_until

CHANNEL = b'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Big</title>'
END = b"</channel></rss>"


def item(n: int) -> bytes:
    return (
        b'<item><title>Item %d</title><link>https://big.example/%d</link><guid isPermaLink="false">big-%d</guid>'
        b"<description>Body of item %d, with some words to make it longer.</description></item>"
        % (n, n, n, n)
    )


def rss(*ns: int) -> bytes:
    return CHANNEL + b"".join(item(n) for n in ns) + END


def gzip_bomb(decoded: int) -> bytes:
    """``decoded`` zero bytes, gzipped (about 1/1000 of that on the wire)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1024 * 1024)
    out = [z.compress(block) for _ in range(decoded // len(block))]
    return b"".join(out) + z.flush()


def streamed(total: int, chunk: int = 64 * 1024):
    """A document of ``total`` bytes with one item per ~200 bytes, sent in chunks (never held whole)."""

    def body():
        yield CHANNEL
        sent, n = len(CHANNEL), 0
        while sent < total:
            part = b"".join(item(n + i) for i in range(chunk // 200))
            n += chunk // 200
            sent += len(part)
            yield part
        yield END

    return body


def _stored_posts(home, url: str) -> int:
    with Store(home.store_path) as s:
        (src,) = [x for x in db.sources(s, "rss", "in") if x["source"] == url]
        rows = s.read("SELECT count(*) FROM entries WHERE author = ? AND type = 'post'", (src["feed"],))
        return int(rows[0][0])


def _source(home, url: str) -> dict:
    with Store(home.store_path) as s:
        (src,) = [x for x in db.sources(s, "rss", "in") if x["source"] == url]
        return src


def _poll(home, url: str, code: int = 0) -> dict:
    return lines(tidings(home.path, "bridge", "rss", "poll", url, "--json", code=code))[0]


def test_a_gzip_bomb_is_cut_at_the_decoded_cap(tmp_path):
    home, _ = make_home(tmp_path, "reader")
    bomb = gzip_bomb(300 * 1024 * 1024)
    assert len(bomb) < 400 * 1024  # the attacker's 300 KB
    with FeedServer(next_host()) as server:
        server.routes["/bomb"] = lambda _h: (200, {"Content-Encoding": "gzip"}, bomb)
        url = server.url("/bomb")
        tidings(home.path, "bridge", "rss", "follow", url)
        out = _poll(home, url, code=1)
        assert out["error"] == f"{url}: larger than {2 * 1024 * 1024} bytes decoded"
        src = _source(home, url)
        assert src["failures"] == 1 and src["next_poll"] > time.time() * 1000 + 20_000
        assert _stored_posts(home, url) == 0


def test_gzip_and_deflate_feeds_are_read_and_other_codings_refused(tmp_path):
    home, _ = make_home(tmp_path, "reader")
    with FeedServer(next_host()) as server:
        server.routes["/gz"] = lambda _h: (200, {"Content-Encoding": "gzip"}, gzip.compress(rss(1, 2)))
        server.routes["/deflate"] = lambda _h: (200, {"Content-Encoding": "deflate"}, zlib.compress(rss(3)))
        server.routes["/br"] = lambda _h: (200, {"Content-Encoding": "br"}, b"\x0b\x02\x80")
        raw = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)  # "deflate" sent without its zlib header
        server.routes["/raw"] = lambda _h: (
            200,
            {"Content-Encoding": "deflate"},
            raw.compress(rss(4)) + raw.flush(),
        )
        for path in ("/gz", "/deflate", "/br", "/raw"):
            tidings(home.path, "bridge", "rss", "follow", server.url(path))
        assert _poll(home, server.url("/gz"))["new"] == 2
        assert _poll(home, server.url("/deflate"))["new"] == 1
        assert "unsupported content encoding 'br'" in _poll(home, server.url("/br"), code=1)["error"]
        assert _poll(home, server.url("/raw"))["new"] == 1
        assert server.hits("/gz")[0]["accept-encoding"] == "gzip, deflate"


def test_a_50_mb_document_is_read_only_up_to_its_first_items_or_refused_at_the_cap(tmp_path):
    home, _ = make_home(tmp_path, "reader")
    with FeedServer(next_host()) as server:
        # 50 MB of items: reading stops at the start of item 101, the first 100 are imported
        server.routes["/big"] = lambda _h: (200, {}, streamed(50 * 1024 * 1024)())
        # 50 MB of one item's text: no item ends before the cap, so the document is refused there
        one = lambda: iter([CHANNEL + b"<item><title>x</title><description>", *[b"a" * 65536] * 800])  # noqa: E731
        server.routes["/one"] = lambda _h: (200, {}, one())
        for path in ("/big", "/one"):
            tidings(home.path, "bridge", "rss", "follow", server.url(path))
        started = time.monotonic()
        assert _poll(home, server.url("/big")) == {
            "source": server.url("/big"),
            "status": "new",
            "new": 100,
            "error": None,
            "media": 0,
            "skipped": [],
        }
        assert _poll(home, server.url("/one"), code=1)["error"] == (
            f"{server.url('/one')}: larger than {2 * 1024 * 1024} bytes"
        )
        assert time.monotonic() - started < 15
        # the first items of the document are the ones imported (feeds list newest first)
        texts = {
            e["content"]["origin"]["id"]
            for e in lines(tidings(home.path, "timeline", "--json", "--limit", "200"))
            if e["type"] == "post"
        }
        assert texts == {f"big-{n}" for n in range(100)}


def test_a_20000_item_feed_imports_max_items_per_poll(tmp_path):
    home, _ = make_home(tmp_path, "reader")
    doc = rss(*range(20_000))
    assert len(doc) > 3_000_000
    with FeedServer(next_host()) as server:
        server.routes["/many"] = lambda _h: (200, {}, doc)
        url = server.url("/many")
        tidings(home.path, "bridge", "rss", "follow", url)
        tidings(home.path, "bridge", "config", "rss", "max_items", "30")
        started = time.monotonic()
        assert _poll(home, url)["new"] == 30
        assert time.monotonic() - started < 10
        assert _stored_posts(home, url) == 30
        assert _poll(home, url)["new"] == 0  # the same first items: nothing twice
    out = tidings(home.path, "bridge", "config", "rss", "max_items", "0", code=1)
    assert "from 1 to 10000" in out.stderr


def _drip(every: float, count: int = 10_000):
    def body():
        yield CHANNEL
        for _ in range(count):
            time.sleep(every)
            yield b" "

    return body


def test_a_slow_drip_is_cut_off_by_the_deadline_and_counted_as_failing(tmp_path):
    home, _ = make_home(tmp_path, "reader")
    with FeedServer(next_host()) as server:
        server.routes["/drip"] = lambda _h: (200, {}, _drip(0.05)())
        url = server.url("/drip")
        tidings(home.path, "bridge", "rss", "follow", url)
        tidings(home.path, "bridge", "config", "rss", "timeout", "1.5")
        started = time.monotonic()
        out = _poll(home, url, code=1)
        assert time.monotonic() - started < 4
        assert out["error"].startswith(f"{url}: too slow: ") and "within 1.5 s" in out["error"]
        src = _source(home, url)
        assert src["failures"] == 1 and src["last_error"] == out["error"]


def test_a_drip_under_the_least_rate_is_cut_after_the_grace(tmp_path):
    home, _ = make_home(tmp_path, "reader")
    with FeedServer(next_host()) as server:
        server.routes["/drip"] = lambda _h: (200, {}, _drip(0.1)())  # ~10 bytes/s
        url = server.url("/drip")
        tidings(home.path, "bridge", "rss", "follow", url)
        started = time.monotonic()
        out = _poll(home, url, code=1)  # timeout 20 s, min_rate 4096 bytes/s after 5 s
        assert 4.5 < time.monotonic() - started < 9
        assert "at least 4096 bytes/s after 5 s" in out["error"]


async def test_the_node_fetches_a_dripping_source_once_then_backs_off(tmp_path):
    home, key = make_home(tmp_path, "reader")
    with FeedServer(next_host()) as server:
        server.routes["/drip"] = lambda _h: (200, {}, _drip(0.05)())
        server.routes["/ok"] = lambda _h: (200, {}, rss(1))
        for path in ("/drip", "/ok"):
            tidings(home.path, "bridge", "rss", "follow", server.url(path))
        for k, v in (("timeout", "1"), ("retry", "30"), ("interval", "60")):
            tidings(home.path, "bridge", "config", "rss", k, v)
        (service,) = [s for s in bridge_services(home) if s.name == "bridge:rss"]
        assert isinstance(service, RssService)
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                await start_node(nursery, home, key, services=[service], dht=False)
                await wait_until(lambda: server.url("/drip") in service.failing, timeout=5)
                assert service.imported == 1  # the honest source was not held up
                await trio.sleep(2.5)  # two more rounds of the service's loop
                assert len(server.hits("/drip")) == 1
                nursery.cancel_scope.cancel()
    src = _source(home, server.url("/drip"))
    assert src["failures"] == 1 and "too slow" in src["last_error"]


def test_a_redirect_to_another_internal_host_is_refused_and_nothing_is_stored(tmp_path):
    home, _ = make_home(tmp_path, "reader")
    with FeedServer(next_host()) as feed, FeedServer(next_host()) as inside, FeedServer(feed.host) as port2:
        inside.routes["/secret"] = lambda _h: (200, {}, rss(7))  # an internal service the node can reach
        port2.routes["/secret"] = lambda _h: (200, {}, rss(8))  # the followed host, another port
        feed.routes["/moved"] = lambda _h: (301, {"Location": "/feed.xml"}, b"")
        feed.routes["/feed.xml"] = lambda _h: (200, {}, rss(1))
        feed.routes["/evil"] = lambda _h: (302, {"Location": inside.url("/secret")}, b"")
        feed.routes["/evil-port"] = lambda _h: (307, {"Location": port2.url("/secret")}, b"")
        for path in ("/moved", "/evil", "/evil-port"):
            tidings(home.path, "bridge", "rss", "follow", feed.url(path))
        # the user followed an internal address explicitly: redirects within its origin are fine
        assert _poll(home, feed.url("/moved"))["new"] == 1
        for path, target in (("/evil", inside), ("/evil-port", port2)):
            out = _poll(home, feed.url(path), code=1)
            assert out["error"] == (
                f"refused to connect to the internal address {target.host}:{target.port}: only the host "
                "and port of a followed URL written as an internal address may be internal"
            )
            assert _source(home, feed.url(path))["failures"] == 1
            assert _stored_posts(home, feed.url(path)) == 0
        assert inside.requests == [] and port2.requests == []
    texts = [
        e["content"]["text"] for e in lines(tidings(home.path, "timeline", "--json")) if e["type"] == "post"
    ]
    assert len(texts) == 1 and texts[0].startswith("Item 1")


def _redirect(to: str):
    return lambda _h: (302, {"Location": to}, b"")


def test_a_redirect_chain_longer_than_the_cap_is_refused(tmp_path):
    home, _ = make_home(tmp_path, "reader")
    with FeedServer(next_host()) as server:
        for n in range(10):
            server.routes[f"/r{n}"] = _redirect(f"/r{n + 1}")
        server.routes["/r10"] = lambda _h: (200, {}, rss(1))
        server.routes["/s5"] = lambda _h: (302, {"Location": "/r6"}, b"")  # 5 redirects, then the feed
        for path in ("/r0", "/s5"):
            tidings(home.path, "bridge", "rss", "follow", server.url(path))
        out = _poll(home, server.url("/r0"), code=1)
        assert out["error"] == f"{server.url('/r0')}: more than 5 redirects"
        assert [p for p, _ in server.requests] == [f"/r{n}" for n in range(6)]
        assert _stored_posts(home, server.url("/r0")) == 0
        assert _poll(home, server.url("/s5"))["new"] == 1
