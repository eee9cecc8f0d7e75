"""The local web API against real nodes: real sockets on 127.x, real stores, httpx as the client."""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
from typing import Any

import httpx
import trio
from tidings.node.home import Home
from tidings.node.web import WebService, auth, web_services
from tidings.node.web.api import ROUTES
from tidings.node.web.openapi import openapi_document
from tidings.protocol import EntryId, feed_id_text

from tests.support.nodes import follow, has_entry, make_home, post, start_node, wait_until
from tests.support.web import EventReader, web_node

CLI = [sys.executable, "-m", "tidings.cli.main"]
ENTRY_FIELDS = {"id", "feed", "seq", "ts", "type"}
READ_FIELDS = {"id", "feed", "seq", "ts", "type", "content"}


async def api(client: httpx.AsyncClient, method: str, path: str, status: int = 200, **kw: Any) -> Any:
    response = await client.request(method, path, **kw)
    assert response.status_code == status, f"{method} {path}: {response.status_code} {response.text}"
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    if status >= 400:
        assert set(body) == {"error", "code"} and body["error"] and body["code"], body
    return body


async def test_every_endpoint_reads_and_writes_like_the_cli(tmp_path):
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, web_node(nursery, tmp_path, "alice") as w:
            _, other = make_home(tmp_path, "bob")
            bob = feed_id_text(other.public_key)
            me = feed_id_text(w.key.public_key)
            async with w.client() as c:
                status = await api(c, "GET", "/api/status")
                assert status["running"] is True and status["feed"] == me
                assert status["services"]["web"]["url"] == w.url
                assert {"listen", "peers", "feeds", "entries"} <= set(status)

                rankers = (await api(c, "GET", "/api/rankers"))["items"]
                names = {r["name"] for r in rankers}
                assert {"chronological", "engagement", "trust", "swarm"} <= names
                assert all(isinstance(r["description"], str) for r in rankers)

                first = await api(c, "POST", "/api/post", json={"text": "hello gardens"})
                assert set(first) == ENTRY_FIELDS and first["type"] == "post" and first["feed"] == me
                reply = await api(
                    c, "POST", "/api/reply", json={"entry": first["id"][:10], "text": "a reply"}
                )
                reply2 = await api(c, "POST", "/api/post", json={"text": "another", "reply_to": reply["id"]})
                react = await api(c, "POST", "/api/react", json={"entry": first["id"], "emoji": "🎉"})
                assert react["type"] == "reaction"
                repost = await api(c, "POST", "/api/repost", json={"entry": first["id"]})
                assert repost["type"] == "repost"

                timeline = (await api(c, "GET", "/api/timeline"))["items"]
                assert [t["id"] for t in timeline][:1] == [repost["id"]]
                # the repost carries the reposted post's reactions: one person reacted with 🎉
                assert timeline[0]["reactions"] == {"🎉": 1}
                thread_items = (await api(c, "GET", "/api/thread", params={"entry": first["id"]}))["items"]
                assert next(t for t in thread_items if t["id"] == first["id"])["reactions"] == {"🎉": 1}
                assert all(READ_FIELDS | {"score"} <= set(t) and "why" not in t for t in timeline)
                explained = (
                    await api(
                        c,
                        "GET",
                        "/api/timeline",
                        params={
                            "ranker": "engagement",
                            "explain": "1",
                            "limit": "2",
                            "weight": "gravity=1.5",
                        },
                    )
                )["items"]
                assert len(explained) == 2 and all(isinstance(t["why"], list) and t["why"] for t in explained)

                log = (await api(c, "GET", "/api/log", params={"limit": 3}))["items"]
                assert [e["seq"] for e in log] == [6, 5, 4] and all(set(e) >= READ_FIELDS for e in log)
                thread = (await api(c, "GET", "/api/thread", params={"entry": reply2["id"]}))["items"]
                assert [t["id"] for t in thread] == [first["id"], reply["id"], reply2["id"]]
                found = (await api(c, "GET", "/api/search", params={"q": "gardens"}))["items"]
                assert [f["id"] for f in found] == [first["id"]]

                deleted = await api(c, "POST", "/api/delete", json={"entry": reply2["id"]})
                assert deleted["type"] == "delete"
                gone = (await api(c, "GET", "/api/thread", params={"entry": first["id"]}))["items"]
                assert reply2["id"] not in [g["id"] for g in gone]  # as tidings thread: the payload is gone
                await api(c, "POST", "/api/delete", 400, json={"entry": reply2["id"]})

                for kind in ("follow", "unfollow", "block", "unblock", "follow"):
                    out = await api(c, "POST", f"/api/{kind}", json={"feed": bob})
                    # a change writes an entry (changed: true, node/actions.py); repeats are tested below
                    assert out["type"] == kind and set(out) == ENTRY_FIELDS | {"changed"} and out["changed"]
                assert (await api(c, "GET", "/api/following"))["items"] == [{"feed": bob, "name": None}]
                assert bob in [feed_id_text(f) for f in w.node.wanted]  # the node replicates it now

                muted = await api(c, "POST", "/api/mute", json={"word": "Spoilers"})
                assert muted == {"kind": "word", "value": "spoilers", "muted": True, "changed": True}
                await api(c, "POST", "/api/mute", json={"feed": bob})
                mutes = (await api(c, "GET", "/api/mutes"))["items"]
                assert {"kind": "feed", "value": bob} in mutes and {
                    "kind": "word",
                    "value": "spoilers",
                } in mutes
                unmuted = await api(c, "POST", "/api/unmute", json={"word": "spoilers"})
                assert unmuted["muted"] is False and unmuted["changed"] is True

                assert await api(c, "GET", "/api/profile") == {"feed": me, "name": "alice", "bio": None}
                prof = await api(c, "POST", "/api/profile", json={"name": "Alice", "bio": "gardens"})
                assert prof["name"] == "Alice" and prof["bio"] == "gardens" and prof["feed"] == me
                assert {"id", "seq", "ts"} <= set(prof)
                assert (await api(c, "GET", "/api/profile", params={"feed": bob}))["name"] is None

                joined = await api(c, "POST", "/api/swarms/join", json={"name": "gardening"})
                assert joined == {"swarm": "gardening", "joined": True}
                swarms = (await api(c, "GET", "/api/swarms"))["items"]
                assert [s["name"] for s in swarms] == ["gardening"] and {"joined", "members"} <= set(
                    swarms[0]
                )
                swarm_tl = await api(c, "GET", "/api/timeline", params={"swarm": "gardening", "explain": "1"})
                assert any("member of swarm gardening" in t["why"] for t in swarm_tl["items"])
                left = await api(c, "POST", "/api/swarms/leave", json={"name": "gardening"})
                assert left == {"swarm": "gardening", "left": True}
                assert (await api(c, "GET", "/api/swarms"))["items"] == []

                assert (await api(c, "GET", "/api/peers"))["items"] == []
                doc = await api(c, "GET", "/api/openapi.json")
                assert doc["openapi"].startswith("3.1")
            nursery.cancel_scope.cancel()


async def test_writes_reach_a_connected_peer_and_the_peers_endpoint_shows_it(tmp_path):
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            hb, kb = make_home(tmp_path, "bob")
            async with web_node(nursery, tmp_path, "alice") as w:
                follow(hb, kb, w.key)
                b = await start_node(nursery, hb, kb)
                w.node.dial(b.address)
                async with w.client() as c:
                    out = await api(c, "POST", "/api/post", json={"text": "to bob"})
                    await wait_until(lambda: has_entry(hb, EntryId.parse(out["id"]).hash), timeout=10)
                    peers = (await api(c, "GET", "/api/peers"))["items"]
                    assert peers and peers[0]["connected"] is True
                    assert {"feed", "addresses", "last_seen", "connected"} <= set(peers[0])
                    status = await api(c, "GET", "/api/status")
                    assert status["peers"] == 1 and status["connections"][0]["address"] == b.address
                    assert (status["connections"][0]["path"], status["connections"][0]["relay"]) == (
                        "direct",
                        None,
                    )
                nursery.cancel_scope.cancel()


async def test_bad_input_is_400_and_unknown_ids_404(tmp_path):
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery, web_node(nursery, tmp_path, "alice") as w:
            async with w.client() as c:
                first = await api(c, "POST", "/api/post", json={"text": "x"})
                bad = [
                    ("POST", "/api/post", {"json": {}}, "missing_parameter"),
                    ("POST", "/api/post", {"json": {"text": 5}}, "bad_parameter"),
                    ("POST", "/api/post", {"json": {"text": "x", "colour": "red"}}, "unknown_parameter"),
                    ("POST", "/api/post", {"json": ["x"]}, "bad_json"),
                    (
                        "POST",
                        "/api/post",
                        {"content": b"{nope", "headers": {"content-type": "application/json"}},
                        "bad_json",
                    ),
                    ("POST", "/api/post", {"json": {"text": "x" * 100_000}}, None),
                    ("POST", "/api/react", {"json": {"entry": "%zz", "emoji": "x"}}, "bad_id"),
                    ("POST", "/api/follow", {"json": {"feed": "@nope"}}, "bad_feed"),
                    ("POST", "/api/follow", {"json": {"feed": first["feed"]}}, "self"),
                    ("POST", "/api/mute", {"json": {}}, "bad_parameter"),
                    ("POST", "/api/profile", {"json": {}}, "missing_parameter"),
                    ("POST", "/api/swarms/join", {"json": {"name": ""}}, "bad_swarm"),
                    ("GET", "/api/timeline", {"params": {"limit": "0"}}, "bad_parameter"),
                    ("GET", "/api/timeline", {"params": {"limit": "many"}}, "bad_parameter"),
                    ("GET", "/api/timeline", {"params": {"ranker": "astrology"}}, "unknown_ranker"),
                    ("GET", "/api/timeline", {"params": {"weight": "gravity"}}, "bad_weight"),
                    ("GET", "/api/timeline", {"params": {"weight": "nonsense=1"}}, "unknown_weight"),
                    ("GET", "/api/search", {"params": {"q": "   "}}, "missing_parameter"),
                    # plain words are never a bad query ("unbalanced is a word); FTS5 syntax can be
                    ("GET", "/api/search", {"params": {"q": '"unbalanced', "fts": "1"}}, "bad_query"),
                    (
                        "POST",
                        "/api/react",
                        {"json": {"entry": first["id"], "emoji": "hello world"}},
                        "not_emoji",
                    ),
                    ("POST", "/api/mute", {"json": {"feed": first["feed"]}}, "self"),
                    ("GET", "/api/thread", {"params": {"entry": "%s"}}, "bad_id"),
                    ("GET", "/api/thread", {}, "missing_parameter"),
                ]
                for method, path, kw, code in bad:
                    body = await api(c, method, path, 400, **kw)
                    assert code is None or body["code"] == code, (path, kw, body)
                missing = "%" + "a" * 52
                for method, path, kw in [
                    ("GET", "/api/thread", {"params": {"entry": missing}}),
                    ("POST", "/api/react", {"json": {"entry": missing, "emoji": "x"}}),
                    ("POST", "/api/repost", {"json": {"entry": "abcdabcd"}}),
                    ("GET", "/api/log", {"params": {"feed": "@" + "a" * 52}}),
                    ("GET", "/api/timeline", {"params": {"swarm": "never-joined"}}),
                    ("GET", "/api/nothing", {}),
                ]:
                    body = await api(c, method, path, 404, **kw)
                    assert body["code"] == "not_found"
                assert (await api(c, "DELETE", "/api/post", 405, json={}))["code"] == "method_not_allowed"
                page = await c.get("/no-such-page")
                assert page.status_code == 404
            nursery.cancel_scope.cancel()


async def test_ids_graph_rules_and_search_are_the_clis(tmp_path):
    """The rules of node/actions.py and the search of storage/search.py, through the API as through
    the CLI (tests/cli/test_cli_edges.py): pasted ids, repeats and contradictions, plain words."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, web_node(nursery, tmp_path, "alice") as w:
            _, other = make_home(tmp_path, "bob")
            bob = feed_id_text(other.public_key)
            async with w.client() as c:
                first = await api(c, "POST", "/api/post", json={"text": "don't e-mail c++ at 5:30 #tag"})
                pasted = first["id"][:14].upper() + "…"  # as tidings timeline prints it, any case
                entry = await api(c, "GET", "/api/entry", params={"entry": pasted})
                assert entry["id"] == first["id"]
                missing = await api(c, "GET", "/api/entry", 404, params={"entry": "%VKOE"})
                assert "no entry %vkoe" in missing["error"]

                for query in ("don't", "e-mail", "c++", "5:30", "#tag"):
                    found = (await api(c, "GET", "/api/search", params={"q": query}))["items"]
                    assert [f["id"] for f in found] == [first["id"]], query
                await api(c, "POST", "/api/profile", json={"bio": "writes about gardens"})
                found = (await api(c, "GET", "/api/search", params={"q": "gardens"}))["items"]
                assert [f["type"] for f in found] == ["profile"]
                assert found[0]["profile"] == {
                    "feed": first["feed"],
                    "name": "alice",
                    "bio": "writes about gardens",
                }
                fts = (await api(c, "GET", "/api/search", params={"q": "bio:gardens", "fts": "1"}))["items"]
                assert [f["type"] for f in fts] == ["profile"]

                followed = await api(c, "POST", "/api/follow", json={"feed": bob})
                again = await api(c, "POST", "/api/follow", json={"feed": bob})
                assert (
                    again["changed"] is False and again["id"] == followed["id"] and "already" in again["note"]
                )
                blocked = await api(c, "POST", "/api/block", json={"feed": bob})
                assert blocked["changed"] is True and "you follow" in blocked["warning"]
                assert (await api(c, "GET", "/api/following"))["items"] == [
                    {"feed": bob, "name": None, "blocked": True}
                ]
                await api(c, "POST", "/api/unfollow", json={"feed": bob})
                refused = await api(c, "POST", "/api/follow", 400, json={"feed": bob})
                assert refused["code"] == "blocked" and "unblock it first" in refused["error"]
                log = (await api(c, "GET", "/api/log"))["items"]
                assert [e["type"] for e in log[:3]] == [
                    "unfollow",
                    "block",
                    "follow",
                ]  # the repeat wrote nothing
            nursery.cancel_scope.cancel()


async def test_without_the_token_every_endpoint_is_401(tmp_path):
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery, web_node(nursery, tmp_path, "alice") as w:
            token_file = w.home.path / auth.TOKEN_FILE
            assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
            async with httpx.AsyncClient(base_url=w.url, timeout=10) as anon:
                for route in ROUTES:
                    kw: dict[str, Any] = {"json": {}} if route.method == "POST" else {}
                    for headers in (
                        {},
                        {"authorization": "Bearer wrong"},
                        {"cookie": f"tidings_{w.url.rsplit(':', 1)[1]}=x"},
                    ):
                        r = await anon.request(route.method, route.path, headers=headers, **kw)
                        assert r.status_code == 401, (route.path, headers, r.text)
                        assert r.json()["code"] == "unauthorized"
                assert (await anon.get("/")).status_code == 200  # the page itself holds no data
            nursery.cancel_scope.cancel()


async def test_login_link_sets_the_cookie_once(tmp_path):
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery, web_node(nursery, tmp_path, "alice") as w:
            port = int(w.url.rsplit(":", 1)[1])
            code = auth.new_login_code(w.home.path)
            async with httpx.AsyncClient(base_url=w.url, timeout=10) as browser:
                r = await browser.get("/login", params={"code": code})
                assert r.status_code == 303 and r.headers["location"] == "/"
                cookie = r.headers["set-cookie"]
                assert cookie.startswith(f"tidings_{port}={w.token};")
                assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
                assert (await browser.get("/api/status")).status_code == 200  # the cookie jar sends it
                posted = await browser.post("/api/post", json={"text": "by cookie"})
                assert posted.status_code == 200, posted.text
            async with httpx.AsyncClient(base_url=w.url, timeout=10) as second:
                assert (await second.get("/login", params={"code": code})).status_code == 403  # used up
                assert "set-cookie" not in (await second.get("/login", params={"code": "forged"})).headers
                stale = auth.new_login_code(w.home.path, now=0.0)  # expired long ago
                assert (await second.get("/login", params={"code": stale})).status_code == 403
                assert (await second.get("/api/status")).status_code == 401
            nursery.cancel_scope.cancel()


async def test_requests_from_other_origins_are_refused(tmp_path):
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery, web_node(nursery, tmp_path, "alice") as w:
            host = w.url.removeprefix("http://")
            cookie = {"cookie": f"tidings_{host.rsplit(':', 1)[1]}={w.token}"}
            async with httpx.AsyncClient(base_url=w.url, headers=cookie, timeout=10) as c:
                refused = [
                    {"origin": "http://evil.example"},
                    {"origin": "null"},
                    {"sec-fetch-site": "cross-site"},
                    {"sec-fetch-site": "same-site"},
                ]
                for headers in refused:
                    r = await c.post("/api/post", json={"text": "csrf"}, headers=headers)
                    assert r.status_code == 403, (headers, r.text)
                    assert r.json()["code"] == "cross_origin"
                form = await c.post(
                    "/api/post",
                    content=b"text=csrf",
                    headers={"content-type": "application/x-www-form-urlencoded"},
                )
                assert form.status_code == 403 and form.json()["code"] == "not_json"
                plain = await c.post(
                    "/api/post", content=b'{"text": "csrf"}', headers={"content-type": "text/plain"}
                )
                assert plain.status_code == 403
                rebinding = await c.get(
                    "/api/status", headers={"host": f"evil.example:{host.rsplit(':', 1)[1]}"}
                )
                assert rebinding.status_code == 403 and rebinding.json()["code"] == "bad_host"
                assert (
                    await c.get("/api/status", headers={"sec-fetch-site": "cross-site"})
                ).status_code == 403
                log = (await c.get("/api/log")).json()["items"]
                assert all((e["content"] or {}).get("text") != "csrf" for e in log)
                same = await c.post(
                    "/api/post",
                    json={"text": "mine"},
                    headers={"origin": f"http://{host}", "sec-fetch-site": "same-origin"},
                )
                assert same.status_code == 200, same.text
                page = await c.get("/")
                csp = page.headers["content-security-policy"]
                # nothing by default; the page's own files only; no inline script, plugins or frames
                for rule in ("default-src 'none'", "script-src 'self'", "object-src 'none'"):
                    assert rule in csp, csp
                assert "frame-ancestors 'none'" in csp and "unsafe" not in csp
                assert page.headers["x-content-type-options"] == "nosniff"
            nursery.cancel_scope.cancel()


async def test_events_stream_reports_new_entries(tmp_path):
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery, web_node(nursery, tmp_path, "alice") as w:
            # read over a plain socket: httpx's line iterators, left suspended when the test ends, were
            # finalized during the run whenever the cyclic GC happened to run there (a ResourceWarning)
            async with await EventReader.open(w.url, w.token) as events:
                assert (await events.next_event())[0] == "hello"
                post(w.home, w.key, "written by another process")  # the node's watcher notices it
                assert (await events.next_event())[0] == "changed"
            nursery.cancel_scope.cancel()


def _busy_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


async def test_a_port_in_use_crashes_only_the_web_service(tmp_path):
    with _busy_port() as busy, trio.fail_after(20):
        port = busy.getsockname()[1]
        async with trio.open_nursery() as nursery:
            home, key = make_home(tmp_path, "alice")
            node = await start_node(nursery, home, key, services=web_services(home, f"127.0.0.1:{port}"))
            state = node.statistics()["services"]["web"]
            assert state["state"] == "crashed", state
            # the address, the reason and what to do (the OSError alone named none of them)
            assert f"on 127.0.0.1:{port}: address already in use" in state["error"], state
            assert "--http HOST:PORT" in state["error"] and "--http off" in state["error"], state
            on_disk = json.loads(home.node_file.read_text())["services"]["web"]
            assert on_disk["state"] == "crashed"
            assert node.address is not None  # still gossiping
            nursery.cancel_scope.cancel()


async def test_tidings_open_prints_a_working_login_link(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TIDINGS_HOME", "TIDINGS_PASSPHRASE")}
    with trio.fail_after(30):
        lonely = Home(tmp_path / "lonely")
        lonely.init()
        done = await trio.run_process(
            [*CLI, "--home", str(lonely.path), "open", "--print"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env,
        )
        assert done.returncode == 1 and b"no node is running" in done.stderr
        async with trio.open_nursery() as nursery, web_node(nursery, tmp_path, "alice") as w:
            done = await trio.run_process(
                [*CLI, "--home", str(w.home.path), "open", "--print"],
                capture_stdout=True,
                capture_stderr=True,
                env=env,
            )
            link = done.stdout.decode().strip()
            assert link.startswith(f"{w.url}/login?code=") and done.stderr == b""
            async with httpx.AsyncClient(timeout=10) as browser:
                r = await browser.get(link, follow_redirects=True)
                assert r.status_code == 200 and r.url == httpx.URL(w.url + "/")
                assert (await browser.get(w.url + "/api/status")).json()["feed"] == w.node.statistics()[
                    "feed"
                ]
                assert (await browser.get(link)).status_code == 403  # once only
            done = await trio.run_process(
                [*CLI, "--home", str(w.home.path), "open", "--print", "--json"], capture_stdout=True, env=env
            )
            out = json.loads(done.stdout)
            assert out["url"] == w.url and out["login"].startswith(w.url + "/login?code=")
            nursery.cancel_scope.cancel()


def test_openapi_documents_every_route():
    doc = openapi_document()
    assert doc["openapi"] == "3.1.0"
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    routed = {(r.path, r.method) for r in ROUTES}
    assert documented == routed
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    schemas = doc["components"]["schemas"]
    for route in ROUTES:
        op = doc["paths"][route.path][route.method.lower()]
        assert op["summary"] and {"200", "400", "401"} <= set(op["responses"])
        names = {p["name"] for p in op.get("parameters", [])} | set(
            op.get("requestBody", {})
            .get("content", {})
            .get("application/json", {})
            .get("schema", {})
            .get("properties", {})
        )
        assert names == {p.name for p in route.params}, route.path
        assert route.stream or route.response in schemas
    for path in (
        "/api/timeline",
        "/api/post",
        "/api/react",
        "/api/follow",
        "/api/mute",
        "/api/profile",
        "/api/swarms/join",
        "/api/events",
        "/api/search",
        "/api/thread",
        "/api/log",
        "/api/peers",
        "/api/status",
        "/api/rankers",
    ):
        assert path in doc["paths"], path
    json.dumps(doc)  # serialisable as served


def test_openapi_document_is_valid_openapi_31():
    """Checked by openapi-spec-validator (a test dependency)."""
    from openapi_spec_validator import validate

    validate(openapi_document())


def test_the_web_service_binds_only_where_asked(tmp_path):
    home = Home(tmp_path / "h")
    assert web_services(home, None) == []
    (service,) = web_services(home, "127.0.0.1:7434")
    assert service.address == "127.0.0.1:7434" and service.state() == {"address": "127.0.0.1:7434"}
    assert WebService(home).address == "127.0.0.1:7434"  # the default: loopback, never 0.0.0.0
    from tidings.cli.commands_network import run

    assert next(p.default for p in run.params if p.name == "http") == "127.0.0.1:7434"
