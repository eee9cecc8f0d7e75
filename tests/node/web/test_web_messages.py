"""Private messages through the web API (node/web/messages.py; spec/cli.md *Private messages*, *Web*),
against real nodes on 127.x sockets: written from the page's API, carried by gossip, read, counted
unread until read, strangers apart in the requests, refused with the CLI's codes, behind the token
and the same-origin rule, announced on the event stream, and never in the public views."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import httpx
import trio
from tidings.node import dm
from tidings.node.home import Home
from tidings.protocol import Follow, SigningKey, entry_id_text, feed_id_text
from tidings.storage.store import Store

from tests.node.web.test_web_api import api
from tests.support.nodes import follow, make_home, post, start_node
from tests.support.web import EventReader, start_web_node

SECRET = "meet at the old mill at noon"
WRITTEN = {"id", "feed", "seq", "ts", "type", "to"}


def copy_log(source: Home, target: Home, author: bytes) -> None:
    """Store ``author``'s log, as ``source`` holds it, in ``target`` (what a sync would carry)."""
    with Store(source.store_path) as s:
        rows = s.read("SELECT raw, payload FROM entries WHERE author = ? ORDER BY seq", (author,))
    with Store(target.store_path) as t:
        t.ingest([(bytes(raw), None if payload is None else bytes(payload)) for raw, payload in rows])


async def poll(client: httpx.AsyncClient, path: str, check: Callable[[Any], bool], **params: Any) -> Any:
    """GET ``path`` until ``check`` holds of its answer (bounded: the test fails after 15 s)."""
    with trio.fail_after(15):
        while True:
            body = await api(client, "GET", path, params=params)
            if check(body):
                return body
            await trio.sleep(0.05)


def box_count(home: Home, author: bytes) -> int:
    with Store(home.store_path) as s:
        return int(s.read("SELECT count(*) FROM entries WHERE author = ? AND type = 'box'", (author,))[0][0])


async def test_write_read_reply_and_requests_apart_between_real_nodes(tmp_path):
    """alice writes to bob from the page's API; gossip carries it; bob's inbox counts it unread until
    he reads the conversation; his reply reaches alice; carol, whom bob's node replicates as one of
    alice's follows but who is a stranger to bob, lands in his requests, never in his inbox."""
    (ha, ka), (hb, kb), (hc, kc) = (make_home(tmp_path, n) for n in ("alice", "bob", "carol"))
    alice, bob, carol = (feed_id_text(k.public_key) for k in (ka, kb, kc))
    follow(ha, ka, kb)
    follow(ha, ka, kc)
    for home, key in ((hb, kb), (hc, kc)):
        follow(home, key, ka)
        copy_log(ha, home, ka.public_key)  # they know alice follows bob and carol
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            wa = await start_web_node(nursery, ha, ka)
            wb = await start_web_node(nursery, hb, kb, peers=[wa.node.address])
            wc = await start_web_node(nursery, hc, kc, peers=[wa.node.address])
            async with wa.client() as a, wb.client() as b, wc.client() as c:
                sent = await api(a, "POST", "/api/dm", json={"to": [bob], "text": SECRET})
                assert set(sent) == WRITTEN and sent["type"] == "box" and sent["to"] == [bob]
                assert sent["feed"] == alice
                (mine,) = (await api(a, "GET", "/api/inbox"))["items"]
                assert (mine["with"], mine["unread"], mine["last"]["text"]) == ([bob], 0, SECRET)

                badge = await poll(b, "/api/unread", lambda u: u["unread"] == 1)
                assert badge == {"unread": 1, "requests": 0, "newest": sent["id"]}
                (conv,) = (await api(b, "GET", "/api/inbox"))["items"]
                assert (conv["with"], conv["messages"], conv["unread"]) == ([alice], 1, 1)
                assert (conv["last"]["id"], conv["last"]["text"], conv["last"]["read"]) == (
                    sent["id"],
                    SECRET,
                    False,
                )
                (message,) = (await api(b, "GET", "/api/conversation", params={"with": alice}))["items"]
                assert message == {
                    "id": sent["id"],
                    "feed": alice,
                    "ts": sent["ts"],
                    "text": SECRET,
                    "read": False,
                }
                assert (await api(b, "GET", "/api/unread"))["unread"] == 0  # reading it marked it read
                assert (await api(b, "GET", "/api/inbox"))["items"][0]["unread"] == 0
                again = (await api(b, "GET", "/api/conversation", params={"with": alice}))["items"]
                assert again[0]["read"] is True

                answer = await api(b, "POST", "/api/dm", json={"reply": sent["id"][:12], "text": "see you"})
                assert answer["to"] == [alice]
                await poll(a, "/api/unread", lambda u: u["newest"] == answer["id"] and u["unread"] == 1)
                both = (await api(a, "GET", "/api/conversation", params={"with": bob}))["items"]
                assert [(m["text"], m["feed"], m["read"]) for m in both] == [
                    (SECRET, alice, True),
                    ("see you", bob, False),
                ]
                assert both[1]["reply"] == sent["id"]
                assert (await api(a, "GET", "/api/unread"))["unread"] == 0

                group = await api(a, "POST", "/api/dm", json={"to": [bob, carol], "text": "all three"})
                # the conversation of exactly these feeds: comma-separated (or the parameter repeated)
                three = await poll(
                    b, "/api/conversation", lambda r: r["items"], **{"with": f"{alice}, {carol}"}
                )
                assert [m["id"] for m in three["items"]] == [group["id"]]
                assert [m["text"] for m in (await api(b, "GET", "/api/conversation", params={"with": alice}))["items"]] == [SECRET, "see you"]  # fmt: skip

                bees = await api(c, "POST", "/api/dm", json={"to": [bob], "text": "buy my bees"})
                badge = await poll(b, "/api/unread", lambda u: u["requests"] == 1)
                assert badge["newest"] == bees["id"]
                inbox = (await api(b, "GET", "/api/inbox"))["items"]
                assert [set(i["with"]) for i in inbox] == [{alice, carol}, {alice}]  # newest first
                assert carol not in [i["last"]["feed"] for i in inbox]  # never in the inbox
                (request,) = (await api(b, "GET", "/api/inbox", params={"requests": "1"}))["items"]
                assert (request["with"], request["unread"], request["last"]["text"]) == (
                    [carol],
                    1,
                    "buy my bees",
                )
                await api(b, "GET", "/api/conversation", params={"with": carol})
                assert await api(b, "GET", "/api/unread") == {
                    "unread": 0,
                    "requests": 0,
                    "newest": bees["id"],
                }

                # alice carries carol's box to bob and reads none of it
                await poll(a, "/api/status", lambda s: s["entries"] >= 9)
                assert all(
                    bees["id"] != i["last"]["id"] for i in (await api(a, "GET", "/api/inbox"))["items"]
                )
                assert (await api(a, "GET", "/api/inbox", params={"requests": "1"}))["items"] == []
            nursery.cancel_scope.cancel()


async def test_public_views_never_show_a_message_even_to_its_recipient(tmp_path):
    """Timeline, search, a log, a thread, an entry: the recipient's own node lists no box in its
    timeline or search, and its plaintext is in no public view's answer (spec/cli.md *Private messages*)."""
    (ha, ka), (hb, kb) = make_home(tmp_path, "alice"), make_home(tmp_path, "bob")
    alice, bob = feed_id_text(ka.public_key), feed_id_text(kb.public_key)
    follow(ha, ka, kb)
    follow(hb, kb, ka)
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            wa = await start_web_node(nursery, ha, ka)
            wb = await start_web_node(nursery, hb, kb, peers=[wa.node.address])
            async with wa.client() as a, wb.client() as b:
                public = await api(a, "POST", "/api/post", json={"text": "the old mill is public"})
                sent = await api(a, "POST", "/api/dm", json={"to": [bob], "text": SECRET})
                await poll(b, "/api/unread", lambda u: u["newest"] == sent["id"])
                for client in (a, b):  # the author and the recipient alike
                    answers = [
                        await api(client, "GET", "/api/timeline", params={"limit": 500}),
                        await api(client, "GET", "/api/timeline", params={"ranker": "engagement"}),
                        await api(client, "GET", "/api/search", params={"q": "mill"}),
                        await api(client, "GET", "/api/search", params={"q": "noon"}),
                        await api(client, "GET", "/api/log", params={"feed": alice}),
                        await api(client, "GET", "/api/thread", params={"entry": sent["id"]}),
                        await api(client, "GET", "/api/entry", params={"entry": sent["id"]}),
                    ]
                    timeline, ranked, mill, noon = (x["items"] for x in answers[:4])
                    assert [t["id"] for t in timeline] == [public["id"]]
                    assert sent["id"] not in [t["id"] for t in ranked] and "box" not in [
                        t["type"] for t in ranked
                    ]
                    assert [m["id"] for m in mill] == [public["id"]] and noon == []
                    for answer in answers:
                        text = json.dumps(answer, ensure_ascii=False)
                        assert "noon" not in text and "at the old mill" not in text, text
                # the message is in the messages views only
                (message,) = (await api(b, "GET", "/api/conversation", params={"with": alice}))["items"]
                assert message["text"] == SECRET
            nursery.cancel_scope.cancel()


KNOWN = [SigningKey(hashlib.blake2b(b"known %d" % i, digest_size=32).digest()) for i in range(32)]


async def test_refusals_carry_the_clis_codes_and_write_nothing(tmp_path):
    home, key = make_home(tmp_path, "alice")
    with Store(home.store_path) as s:
        s.append_many(key, [Follow(feed=k.public_key) for k in KNOWN])
    public = post(home, key, "a public post")
    me = feed_id_text(key.public_key)
    known = [feed_id_text(k.public_key) for k in KNOWN]
    stranger = feed_id_text(SigningKey(b"\x01" * 32).public_key)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            w = await start_web_node(nursery, home, key)
            async with w.client() as c:
                refused = [
                    ({"to": ["@nope"], "text": "x"}, "bad_feed"),
                    ({"to": [stranger], "text": "x"}, "unknown_feed"),
                    ({"to": known, "text": "x"}, "too_many_recipients"),
                    ({"to": known[:1], "text": "é" * 3501}, "message_too_long"),  # 7002 bytes
                    ({"to": known[:1], "text": "   "}, "bad_message"),
                    ({"text": "x"}, "no_recipients"),
                    ({"to": [me], "text": "x"}, "no_recipients"),
                    ({"reply": entry_id_text(public.hash), "text": "x"}, "not_a_message"),
                    ({"to": known[0], "text": "x"}, "bad_parameter"),  # a list, not a string
                    ({"to": known[:1]}, "missing_parameter"),
                    ({"to": known[:1], "text": "x", "cc": []}, "unknown_parameter"),
                ]
                for body, code in refused:
                    answer = await api(c, "POST", "/api/dm", 400, json=body)
                    assert code is None or answer["code"] == code, (body, answer)
                missing = await api(c, "POST", "/api/dm", 404, json={"reply": "%" + "a" * 52, "text": "x"})
                assert missing["code"] == "not_found"
                for params, code in [
                    ({}, "missing_parameter"),
                    ({"with": "@nope"}, "bad_feed"),
                    ({"with": me}, "no_recipients"),
                ]:
                    assert (await api(c, "GET", "/api/conversation", 400, params=params))["code"] == code
                assert (await api(c, "GET", "/api/inbox", 400, params={"requests": "maybe"}))[
                    "code"
                ] == "bad_parameter"
                assert box_count(home, key.public_key) == 0  # nothing was written
                assert (await api(c, "GET", "/api/conversation", params={"with": known[0]}))["items"] == []

                widest = await api(c, "POST", "/api/dm", json={"to": known[:31], "text": "to 31 feeds"})
                assert sorted(widest["to"]) == sorted(known[:31])
            nursery.cancel_scope.cancel()


async def test_messages_need_the_token_and_the_same_origin(tmp_path):
    home, key = make_home(tmp_path, "alice")
    _, other = make_home(tmp_path, "bob")
    follow(home, key, other)
    bob = feed_id_text(other.public_key)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            w = await start_web_node(nursery, home, key)
            host = w.url.removeprefix("http://")
            async with httpx.AsyncClient(base_url=w.url, timeout=10) as anon:
                for method, path, kw in [
                    ("GET", "/api/inbox", {}),
                    ("GET", "/api/inbox", {"params": {"requests": "1"}}),
                    ("GET", "/api/conversation", {"params": {"with": bob}}),
                    ("GET", "/api/unread", {}),
                    ("POST", "/api/dm", {"json": {"to": [bob], "text": "x"}}),
                ]:
                    assert (await api(anon, method, path, 401, **kw))["code"] == "unauthorized"
                    wrong = await anon.request(method, path, headers={"authorization": "Bearer no"}, **kw)
                    assert wrong.status_code == 401
            cookie = {"cookie": f"tidings_{host.rsplit(':', 1)[1]}={w.token}"}
            async with httpx.AsyncClient(base_url=w.url, headers=cookie, timeout=10) as c:
                for headers in ({"origin": "http://evil.example"}, {"sec-fetch-site": "cross-site"}):
                    refused = await api(
                        c, "POST", "/api/dm", 403, json={"to": [bob], "text": "csrf"}, headers=headers
                    )
                    assert refused["code"] == "cross_origin"
                # a browser names the site that made it read (the cookie is SameSite=Strict besides):
                # another site can neither read the messages nor mark them read
                read = await api(
                    c,
                    "GET",
                    "/api/conversation",
                    403,
                    params={"with": bob},
                    headers={"sec-fetch-site": "cross-site"},
                )
                assert read["code"] == "cross_origin"
                form = await api(
                    c,
                    "POST",
                    "/api/dm",
                    403,
                    content=b"to=x&text=csrf",
                    headers={"content-type": "application/x-www-form-urlencoded"},
                )
                assert form["code"] == "not_json"
                plain = await c.post(
                    "/api/dm",
                    content=json.dumps({"to": [bob], "text": "csrf"}),
                    headers={"content-type": "text/plain"},
                )
                assert plain.status_code == 403
                assert box_count(home, key.public_key) == 0
                same = {"origin": f"http://{host}", "sec-fetch-site": "same-origin"}
                await api(c, "POST", "/api/dm", json={"to": [bob], "text": "from the page"}, headers=same)
                assert box_count(home, key.public_key) == 1
            nursery.cancel_scope.cancel()


async def test_the_event_stream_announces_a_message_for_us(tmp_path):
    """A message for us arrives by gossip: the stream says ``changed`` as before, then ``messages``
    with the new unread count and the message's id (what the page's badge shows)."""
    (ha, ka), (hb, kb) = make_home(tmp_path, "alice"), make_home(tmp_path, "bob")
    follow(ha, ka, kb)
    follow(hb, kb, ka)
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            b = await start_node(nursery, hb, kb)
            w = await start_web_node(nursery, ha, ka, peers=[b.address])
            events = await EventReader.open(w.url, w.token)
            async with w.client() as c, events:
                hello, data = await events.next_event()
                assert hello == "hello" and data["messages"] == {"unread": 0, "requests": 0, "newest": None}
                with Store(hb.store_path) as s:  # bob's CLI writes; his node carries it to alice's
                    sent = dm.send(s, kb, [ka.public_key], "are you there?", now=1_700_000_000_000)
                seen = []
                while True:
                    event, data = await events.next_event()
                    seen.append(event)
                    if event == "messages":
                        break
                assert seen[0] == "changed"  # what every consumer of the stream already knew
                assert data == {"unread": 1, "requests": 0, "newest": sent["id"]}
                (conv,) = (await api(c, "GET", "/api/inbox"))["items"]
                assert conv["last"]["text"] == "are you there?" and conv["unread"] == 1
            nursery.cancel_scope.cancel()
