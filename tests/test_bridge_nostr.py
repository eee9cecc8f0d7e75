"""Nostr both ways (spec §14.5): NIP-01 events, a real ``nostr-relay`` process, and a forging relay."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import trio
from tidings.node.bridges import bridge_services
from tidings.node.bridges.nostr import NostrService, pull_follows
from tidings.node.bridges.relay import fetch_events, publish_events
from tidings.protocol import LocalProtocolError, Post, RemoteProtocolError, entry_id_text
from tidings.protocol import nostr as wire
from tidings.storage.store import Store
from trio_websocket import serve_websocket

from tests.nodes import make_home, start_node, wait_until
from tests.test_bridge_support import lines, tidings

SECRET = bytes(range(1, 33))


# -- the sans-IO part ----------------------------------------------------------------------------------------
def test_event_id_signature_and_validation():
    ev = wire.sign_event(
        SECRET, created_at=1_700_000_000, kind=1, tags=(("t", "x"),), content='hé\n"q"', aux=bytes(32)
    )
    wire.verify_event(ev)
    canonical = json.dumps(
        [0, ev.pubkey, ev.created_at, 1, [["t", "x"]], ev.content], separators=(",", ":"), ensure_ascii=False
    )
    assert wire.serialize(ev.pubkey, ev.created_at, 1, ev.tags, ev.content) == canonical.encode()
    assert ev.id == __import__("hashlib").sha256(canonical.encode()).hexdigest()
    # NIP-01: control characters other than the named escapes are written as they are
    assert wire.serialize("a" * 64, 1, 1, (), "\x01") == b'[0,"' + b"a" * 64 + b'",1,1,[],"\x01"]'
    # another aux gives another signature of the same id; both verify
    again = wire.sign_event(
        SECRET, created_at=ev.created_at, kind=1, tags=ev.tags, content=ev.content, aux=bytes([7]) * 32
    )
    assert again.id == ev.id and again.sig != ev.sig
    wire.verify_event(again)
    tampered = wire.parse_event({**ev.to_json(), "content": "something else"})
    with pytest.raises(RemoteProtocolError) as e:
        wire.verify_event(tampered)
    assert e.value.code == "bad_event_id"
    other = wire.sign_event(bytes([9]) * 32, created_at=1, kind=1, tags=(), content="x", aux=bytes(32))
    forged = wire.parse_event({**ev.to_json(), "sig": other.sig})
    with pytest.raises(RemoteProtocolError) as e:
        wire.verify_event(forged)
    assert e.value.code == "bad_signature"
    for bad in (
        {},
        {**ev.to_json(), "id": "XYZ"},
        {**ev.to_json(), "tags": [["t", 1]]},
        {**ev.to_json(), "kind": True},
    ):
        with pytest.raises(RemoteProtocolError):
            wire.parse_event(bad)


def test_npub_and_relay_messages():
    hex_key = "7e7e9c42a91bfef19fa929e5fda1b72e0ebc1a4c1141673e2794234d86addf4e"  # NIP-19 example
    npub = "npub10elfcs4fr0l0r8af98jlmgdh9c8tcxjvz9qkw038js35mp4dma8qzvjptg"
    assert wire.npub(hex_key) == npub
    assert wire.decode_key(npub) == hex_key == wire.decode_key(hex_key.upper())
    for bad in ("npub1xyz", npub[:-1] + "q", "nsec1" + npub[5:], "zz" * 32):
        with pytest.raises(LocalProtocolError):
            wire.decode_key(bad)
    assert wire.parse_relay_message('["EOSE","s"]') == wire.Eose("s")
    assert wire.parse_relay_message('["OK","ab",false,"blocked: no"]') == wire.Ok("ab", False, "blocked: no")
    assert wire.parse_relay_message('["AUTH","challenge"]') is None
    for bad in ("not json", "{}", "[]", '["EVENT","s",{}]', '["OK",1,true]'):
        with pytest.raises(RemoteProtocolError):
            wire.parse_relay_message(bad)


def test_protocol_nostr_does_no_io():
    import subprocess
    import sys

    code = "import sys, tidings.protocol.nostr; print(sorted(m for m in ('trio','socket','sqlite3','asyncio') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == "[]"


# -- a real relay -------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    """``nostr-relay`` (PyPI) as a subprocess on 127.0.0.1 with SQLite storage in a temporary folder."""
    exe = shutil.which("nostr-relay")
    assert exe, "the nostr-relay test dependency is not installed"
    folder = tmp_path_factory.mktemp("relay")
    port = _free_port()
    config = folder / "config.yaml"
    config.write_text(
        f"""DEBUG: false
storage:
  sqlalchemy.url: sqlite+aiosqlite:///{folder}/nostr.sqlite3
  validators:
    - nostr_relay.validators.is_not_too_large
    - nostr_relay.validators.is_signed
gunicorn:
  bind: 127.0.0.1:{port}
verification:
  nip05_verification: disabled
authentication:
  enabled: false
logging:
  version: 1
  root: {{level: WARNING}}
"""
    )
    log = open(folder / "relay.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [exe, "-c", str(config), "serve", "--use-uvicorn"],
        cwd=folder,
        env={**os.environ, "HOME": str(folder)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (folder / "relay.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nostr-relay did not start"
                time.sleep(0.1)
        yield f"ws://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def _npub(home: Path) -> dict:
    return lines(tidings(home, "bridge", "nostr", "key", "--json"))[0]


def test_round_trip_with_a_real_relay(tmp_path, relay):
    alice, _ = make_home(tmp_path, "alice")
    bob, _ = make_home(tmp_path, "bob")
    first = lines(tidings(alice.path, "post", "first from Tidings", "--json"))[0]
    reply = lines(
        tidings(alice.path, "post", "a reply\nwith two lines", "--reply-to", first["id"], "--json")
    )[0]
    tidings(alice.path, "bridge", "nostr", "relay", "add", relay)
    out = lines(tidings(alice.path, "bridge", "nostr", "publish", "--json"))
    assert out == [{"relay": relay, "published": 2, "error": None}]
    assert lines(tidings(alice.path, "bridge", "nostr", "publish", "--json"))[0]["published"] == 0  # once
    key = _npub(alice.path)
    assert key["npub"].startswith("npub1") and wire.decode_key(key["npub"]) == key["hex"]
    assert (alice.path / "bridges" / "nostr" / "nostr.key").stat().st_mode & 0o777 == 0o600

    async def check_relay() -> None:
        got = await fetch_events(relay, [{"authors": [key["hex"]], "kinds": [1]}], timeout=10)
        assert got.rejected == 0 and len(got.events) == 2
        events = sorted(got.events, key=lambda e: e.tag_values("tidings")[0][0] != first["id"])
        a, b = events
        assert a.content == "first from Tidings" and a.tag_values("tidings") == [(first["id"],)]
        assert a.created_at == first["ts"] // 1000 and a.kind == 1
        assert b.content == "a reply\nwith two lines" and b.tag_values("tidings") == [(reply["id"],)]
        assert b.tag_values("e") == [(a.id, "", "root")]
        for e in events:
            wire.verify_event(e)
        # an event made by another Nostr client, for the way in
        other = wire.sign_event(
            bytes([5]) * 32,
            created_at=int(time.time()),
            kind=1,
            tags=(),
            content="hello from Nostr",
            aux=secrets.token_bytes(32),
        )
        assert (await publish_events(relay, [other], timeout=10)) == {other.id: (True, "")}

    trio.run(check_relay)
    other_pub = wire.public_key(bytes([5]) * 32)
    tidings(bob.path, "bridge", "nostr", "relay", "add", relay)
    fa = lines(tidings(bob.path, "bridge", "nostr", "follow", key["npub"], "--json"))[0]
    fo = lines(tidings(bob.path, "bridge", "nostr", "follow", other_pub, "--json"))[0]
    assert fa["followed"] and fo["followed"] and fa["feed"] != fo["feed"]  # one bridge feed per author
    out = lines(tidings(bob.path, "bridge", "nostr", "pull", "--json"))
    assert out == [{"relay": relay, "imported": 3, "rejected": 0, "error": None}]
    assert lines(tidings(bob.path, "bridge", "nostr", "pull", "--json"))[0]["imported"] == 0  # by event id
    timeline = lines(tidings(bob.path, "timeline", "--json"))
    texts = {e["content"]["text"]: e for e in timeline if e["type"] == "post"}
    assert set(texts) == {"first from Tidings", "a reply\nwith two lines", "hello from Nostr"}
    imported = texts["hello from Nostr"]
    assert imported["feed"] == fo["feed"]
    origin = imported["content"]["origin"]
    assert (
        origin["network"] == "nostr" and origin["author"] == wire.npub(other_pub) and len(origin["id"]) == 64
    )
    assert texts["first from Tidings"]["feed"] == fa["feed"]
    listed = {b["name"]: b for b in lines(tidings(bob.path, "bridge", "list", "--json"))}["nostr"]
    assert {s["kind"] for s in listed["sources"]} == {"relay", "in"}
    assert all(s["error"] is None and s["last_ok"] for s in listed["sources"])


def test_bad_input_is_one_line(tmp_path):
    home, _ = make_home(tmp_path, "x")
    assert (
        "not a Nostr public key"
        in tidings(home.path, "bridge", "nostr", "follow", "npub1nope", code=1).stderr
    )
    assert (
        "not a relay URL" in tidings(home.path, "bridge", "nostr", "relay", "add", "http://x", code=1).stderr
    )
    assert "no relays" in tidings(home.path, "bridge", "nostr", "pull", code=1).stderr
    tidings(home.path, "bridge", "nostr", "relay", "add", f"ws://127.0.0.1:{_free_port()}/")
    out = tidings(home.path, "bridge", "nostr", "publish", code=1)
    assert "cannot connect" in out.stdout and out.stderr.strip() == "error: 1 of 1 relays failed"


# -- a forging relay --------------------------------------------------------------------------------------
async def test_forged_events_from_a_relay_are_not_imported(tmp_path):
    home, _ = make_home(tmp_path, "reader")
    author = bytes([3]) * 32
    pub = wire.public_key(author)
    tidings(home.path, "bridge", "nostr", "follow", pub)
    good = wire.sign_event(
        author, created_at=1_800_000_000, kind=1, tags=(), content="genuine", aux=bytes(32)
    )
    bad_id = {**good.to_json(), "content": "altered after signing"}
    resigned = wire.sign_event(
        bytes([4]) * 32, created_at=1_800_000_001, kind=1, tags=(), content="forged", aux=bytes(32)
    )
    forged_sig = {**resigned.to_json(), "pubkey": pub}
    forged_sig["id"] = wire.event_id(pub, resigned.created_at, 1, (), "forged")
    stranger = wire.sign_event(
        bytes([6]) * 32, created_at=1_800_000_002, kind=1, tags=(), content="not asked for", aux=bytes(32)
    )
    requests: list[list] = []

    async def handler(request) -> None:
        ws = await request.accept()
        msg = json.loads(await ws.get_message())
        requests.append(msg)
        sub = msg[1]
        for ev in (bad_id, forged_sig, stranger.to_json(), good.to_json()):
            await ws.send_message(json.dumps(["EVENT", sub, ev]))
        await ws.send_message('["EVENT", "x", {"no": "event"}]')
        await ws.send_message(json.dumps(["EOSE", sub]))
        try:
            await ws.get_message()
        except Exception:
            pass

    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
            url = f"ws://127.0.0.1:{server.port}/"
            with Store(home.store_path) as store:

                async def call(fn, *args, **kwargs):
                    return fn(store, *args, **kwargs)

                imported, rejected = await pull_follows(call, home, url, timeout=5)
            nursery.cancel_scope.cancel()
    assert requests[0][0] == "REQ" and requests[0][2]["authors"] == [pub] and requests[0][2]["kinds"] == [1]
    assert imported == 1 and rejected == 4
    posts = [e for e in lines(tidings(home.path, "timeline", "--json")) if e["type"] == "post"]
    assert [p["content"]["text"] for p in posts] == ["genuine"]
    assert posts[0]["content"]["origin"]["id"] == good.id


# -- inside the node ------------------------------------------------------------------------------------
async def test_the_node_publishes_and_a_dead_relay_is_reported(tmp_path, relay):
    home, key = make_home(tmp_path, "runner")
    dead = f"ws://127.0.0.1:{_free_port()}/"
    tidings(home.path, "bridge", "nostr", "relay", "add", relay)
    tidings(home.path, "bridge", "nostr", "relay", "add", dead)
    for k, v in (("publish", "on"), ("interval", "0.3"), ("retry", "0.2"), ("timeout", "3")):
        tidings(home.path, "bridge", "config", "nostr", k, v)
    (service,) = [s for s in bridge_services(home) if s.name == "bridge:nostr"]
    assert isinstance(service, NostrService)
    pub = _npub(home.path)["hex"]
    with trio.fail_after(25):
        async with trio.open_nursery() as nursery:
            node = await start_node(nursery, home, key, services=[service], dht=False)
            with Store(home.store_path) as s:
                entry = s.append(key, Post(text="posted while running"))
            await wait_until(lambda: service.published >= 1, timeout=15)
            await wait_until(lambda: dead in service.failing, timeout=10)
            state = node.statistics()["services"]["bridge:nostr"]
            assert (
                state["state"] == "running"
                and state["failing"] == 1
                and "cannot connect" in state["errors"][dead]
            )
            got = await fetch_events(relay, [{"authors": [pub]}], timeout=10)
            assert [e.tag_values("tidings") for e in got.events] == [[(entry_id_text(entry.hash),)]]
            nursery.cancel_scope.cancel()
