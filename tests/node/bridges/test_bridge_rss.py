"""RSS/Atom in (spec §14.4) against real feeds served by a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import socket
import time

import trio
from tidings.node.bridges import bridge_services
from tidings.node.bridges.rss import RssService
from tidings.protocol import feed_id_text
from tidings.storage import bridges as db
from tidings.storage.store import Store

from tests.support.bridges import FeedServer, lines, tidings
from tests.support.nodes import make_home, start_node, wait_until

RSS = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel>
  <title>Example News</title><link>https://news.example/</link><description>news</description>
  {items}
</channel></rss>"""

RSS_ITEM = """<item><title>{title}</title><link>https://news.example/{n}</link>
  <guid isPermaLink="false">news-{n}</guid><author>ed@news.example (Ed)</author>
  <pubDate>{date}</pubDate><description>&lt;p&gt;Body of &lt;b&gt;story {n}&lt;/b&gt; &amp;amp; more&lt;/p&gt;</description></item>"""

ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <id>urn:uuid:60a76c80-d399-11d9-b91C-0003939e0af6</id><title>An Atom Blog</title>
  <updated>2025-03-01T10:00:00Z</updated><author><name>Ann</name></author>
  <entry><id>urn:uuid:1225c695-cfb8-4ebb-aaaa-80da344efa6a</id><title>First &amp; best</title>
    <link href="https://blog.example/1"/><updated>2025-03-01T09:00:00Z</updated>
    <content type="html">&lt;p&gt;Hello from Atom&lt;/p&gt;</content></entry>
  <entry><id>urn:uuid:1225c695-cfb8-4ebb-aaaa-80da344efa6b</id><title>Second</title>
    <link href="https://blog.example/2"/><updated>2025-03-01T10:00:00Z</updated>
    <summary>Short summary</summary></entry>
</feed>"""


def rss(*ns: int) -> bytes:
    items = "".join(
        RSS_ITEM.format(title=f"Story {n}", n=n, date=f"Mon, 0{n} Jan 2024 10:00:00 GMT")
        for n in sorted(ns, reverse=True)
    )
    return RSS.format(items=items).encode()


def fixed(body: bytes, **headers: str):
    return lambda _h: (200, {"Content-Type": "application/xml", **headers}, body)


def _home(tmp_path):
    home, key = make_home(tmp_path, "reader")
    return home, key


def _timeline(home) -> list[dict]:
    return lines(tidings(home.path, "timeline", "--json", "--limit", "50"))


def test_follow_and_poll_an_rss_feed_once_with_conditional_requests(tmp_path):
    home, key = _home(tmp_path)
    with FeedServer() as server:
        server.routes["/news.xml"] = fixed(
            rss(1, 2), ETag='"v1"', **{"Last-Modified": "Mon, 02 Jan 2024 10:00:00 GMT"}
        )
        url = server.url("/news.xml")
        out = lines(tidings(home.path, "bridge", "rss", "follow", url, "--json"))[0]
        assert out["source"] == url and out["followed"] is True
        bridge_feed = out["feed"]
        assert bridge_feed != feed_id_text(key.public_key)
        # following appended a Follow to the user's own log, like 'tidings follow'
        assert bridge_feed in {f["feed"] for f in lines(tidings(home.path, "following", "--json"))}
        mine = lines(tidings(home.path, "log", "--json"))
        assert mine[0]["type"] == "follow" and mine[0]["content"]["feed"] == bridge_feed

        polled = lines(tidings(home.path, "bridge", "rss", "poll", "--json"))
        assert polled == [
            {"source": url, "status": "new", "new": 2, "error": None, "media": 0, "skipped": []}
        ]
        posts = [e for e in _timeline(home) if e["feed"] == bridge_feed and e["type"] == "post"]
        assert [p["content"]["text"] for p in posts] == [
            "Story 2\n\nBody of story 2 & more\n\nhttps://news.example/2",
            "Story 1\n\nBody of story 1 & more\n\nhttps://news.example/1",
        ]
        origin = posts[0]["content"]["origin"]
        assert origin == {
            "network": "rss",
            "id": "news-2",
            "author": "ed@news.example (Ed)",
            "url": "https://news.example/2",
            "ts": 1704189600000,
        }
        # the bridge feed is signed by the bridge's key, has the feed's title as its name, never the user's feed
        log = lines(tidings(home.path, "log", bridge_feed, "--json"))
        assert log[-1]["type"] == "profile" and log[-1]["content"]["name"] == "Example News"
        assert all(e["feed"] == bridge_feed for e in log)
        with Store(home.store_path) as s:
            assert s.feed_info(bytes(key.public_key))["kind"] == "own"
        # second poll: conditional request, 304, nothing imported twice
        server.routes["/news.xml"] = lambda h: (
            (304, {}, b"") if h.get("if-none-match") == '"v1"' else (200, {}, rss(1, 2))
        )
        polled = lines(tidings(home.path, "bridge", "rss", "poll", "--json"))
        assert polled[0]["status"] == "unchanged" and polled[0]["new"] == 0
        last = server.hits("/news.xml")[-1]
        assert last["if-none-match"] == '"v1"'
        assert last["if-modified-since"] == "Mon, 02 Jan 2024 10:00:00 GMT"
        # the feed changes: only the new item comes in; a replayed old item is not imported again
        server.routes["/news.xml"] = fixed(rss(1, 2, 3), ETag='"v2"')
        polled = lines(tidings(home.path, "bridge", "rss", "poll", "--json"))
        assert polled[0]["new"] == 1
        server.routes["/news.xml"] = fixed(rss(1, 2, 3))
        assert lines(tidings(home.path, "bridge", "rss", "poll", "--json"))[0]["new"] == 0
        texts = [
            p["content"]["text"].split("\n")[0]
            for p in _timeline(home)
            if p["feed"] == bridge_feed and p["type"] == "post"
        ]
        assert texts == ["Story 3", "Story 2", "Story 1"]
        listed = lines(tidings(home.path, "bridge", "rss", "list", "--json"))
        assert listed[0]["title"] == "Example News" and listed[0]["error"] is None
        state = {b["name"]: b for b in lines(tidings(home.path, "bridge", "list", "--json"))}["rss"]
        assert state["ok"] and state["sources"][0]["source"] == url and state["sources"][0]["last_poll"]
        # unfollow: an Unfollow in the user's log; following again gives the same bridge feed back
        tidings(home.path, "bridge", "rss", "unfollow", url)
        assert bridge_feed not in {f["feed"] for f in lines(tidings(home.path, "following", "--json"))}
        assert lines(tidings(home.path, "bridge", "rss", "follow", url, "--json"))[0]["feed"] == bridge_feed
        assert lines(tidings(home.path, "bridge", "rss", "poll", "--json"))[0]["new"] == 0


def test_an_atom_source_is_imported(tmp_path):
    home, _ = _home(tmp_path)
    with FeedServer() as server:
        server.routes["/atom"] = fixed(ATOM.encode())
        url = server.url("/atom")
        feed = lines(tidings(home.path, "bridge", "rss", "follow", url, "--json"))[0]["feed"]
        assert lines(tidings(home.path, "bridge", "rss", "poll", url, "--json"))[0]["new"] == 2
        posts = [e for e in _timeline(home) if e["feed"] == feed and e["type"] == "post"]
        assert [p["content"]["text"] for p in posts] == [
            "Second\n\nShort summary\n\nhttps://blog.example/2",
            "First & best\n\nHello from Atom\n\nhttps://blog.example/1",
        ]
        assert posts[1]["content"]["origin"]["id"] == "urn:uuid:1225c695-cfb8-4ebb-aaaa-80da344efa6a"
        assert posts[1]["content"]["origin"]["author"] == "Ann"


def test_malformed_feeds_and_bad_urls_are_clear_errors(tmp_path):
    home, _ = _home(tmp_path)
    with FeedServer() as server:
        server.routes["/broken"] = fixed(b"<rss><channel><title>oops</channel")
        server.routes["/html"] = fixed(b"this is not xml at all {")
        for path in ("/broken", "/html"):
            tidings(home.path, "bridge", "rss", "follow", server.url(path))
        out = tidings(home.path, "bridge", "rss", "poll", code=1)
        assert "not an RSS or Atom feed" in out.stdout
        assert out.stderr.strip() == "error: 2 of 2 feeds failed"
        listed = lines(tidings(home.path, "bridge", "rss", "list", "--json"))
        assert all("not an RSS or Atom feed" in r["error"] and r["failures"] == 1 for r in listed)
    out = tidings(home.path, "bridge", "rss", "follow", "ftp://example.org/feed", code=1)
    assert out.stderr.strip() == "error: not an http(s) URL: 'ftp://example.org/feed'"
    tidings(home.path, "bridge", "rss", "follow", "not a url", code=1)
    out = tidings(home.path, "bridge", "rss", "unfollow", "http://nowhere.example/", code=1)
    assert "not following" in out.stderr
    # an unreachable host: a closed port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tidings(home.path, "bridge", "rss", "follow", f"http://127.0.0.1:{port}/feed")
    out = tidings(home.path, "bridge", "rss", "poll", f"http://127.0.0.1:{port}/feed", "--json", code=1)
    assert "cannot fetch" in lines(out)[0]["error"]


def test_a_failing_server_is_retried_and_recovers(tmp_path):
    home, _ = _home(tmp_path)
    with FeedServer() as server:
        server.routes["/flaky"] = lambda _h: (500, {}, b"oops")
        url = server.url("/flaky")
        tidings(home.path, "bridge", "rss", "follow", url)
        out = lines(tidings(home.path, "bridge", "rss", "poll", "--json", code=1))
        assert out[0]["error"].endswith("HTTP 500")
        with Store(home.store_path) as s:
            (src,) = db.sources(s, "rss", "in")
        assert src["failures"] == 1 and src["next_poll"] > time.time() * 1000 + 20_000  # backed off (30 s)
        server.routes["/flaky"] = fixed(rss(1))
        assert lines(tidings(home.path, "bridge", "rss", "poll", "--json"))[0]["new"] == 1
        with Store(home.store_path) as s:
            (src,) = db.sources(s, "rss", "in")
        assert src["failures"] == 0 and src["last_error"] is None


async def test_the_node_service_polls_backs_off_and_is_never_blocked(tmp_path):
    """Inside the node: a flaky source recovers after backoff, a hanging one times out, status shows both."""
    home, key = _home(tmp_path)
    with FeedServer() as server:
        calls = {"n": 0}

        def flaky(_h):
            calls["n"] += 1
            return (500, {}, b"down") if calls["n"] <= 2 else (200, {}, rss(1, 2))

        def hang(_h):
            time.sleep(3)  # longer than the bridge's timeout
            return 200, {}, rss(9)

        server.routes["/flaky"] = flaky
        server.routes["/hang"] = hang
        for path in ("/flaky", "/hang"):
            tidings(home.path, "bridge", "rss", "follow", server.url(path))
        for k, v in (("interval", "60"), ("retry", "0.2"), ("timeout", "0.5")):
            tidings(home.path, "bridge", "config", "rss", k, v)
        (service,) = [s for s in bridge_services(home) if s.name == "bridge:rss"]
        assert isinstance(service, RssService)
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                node = await start_node(nursery, home, key, services=[service], dht=False)
                started = trio.current_time()
                await wait_until(lambda: service.imported == 2, timeout=10)
                assert calls["n"] == 3  # failed twice, retried after 0.2 s then 0.4 s
                assert trio.current_time() - started < 5
                await wait_until(lambda: server.url("/hang") in service.failing, timeout=5)
                state = node.statistics()["services"]["bridge:rss"]
                assert state["state"] == "running" and state["failing"] == 1
                assert "no answer within 0.5 s" in state["errors"][server.url("/hang")]
                nursery.cancel_scope.cancel()
    feed = lines(tidings(home.path, "bridge", "rss", "list", "--json"))[0]["feed"]
    assert len([e for e in _timeline(home) if e["feed"] == feed and e["type"] == "post"]) == 2
