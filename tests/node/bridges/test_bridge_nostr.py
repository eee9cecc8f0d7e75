"""Nostr both ways (spec §14.5): NIP-01 events, a real ``nostr-relay`` process, and a forging relay."""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from tidings.node.bridges import bridge_services
from tidings.node.bridges.nostr import pull_follows
from tidings.node.bridges.nostr_live import NostrService
from tidings.node.bridges.relay import fetch_events, publish_events
from tidings.node.home import Home
from tidings.protocol import LocalProtocolError, Post, RemoteProtocolError, entry_id_text
from tidings.protocol import nostr as wire
from tidings.storage.store import Store
from trio_websocket import serve_websocket

from tests.support.bridges import lines, tidings
from tests.support.nodes import make_home, start_node, wait_until

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


def test_nip10_reply_references():
    def note(*tags):
        return wire.sign_event(bytes([7]) * 32, created_at=1, kind=1, tags=tags, content="x", aux=bytes(32))

    a, b, c = "a" * 64, "b" * 64, "c" * 64
    assert wire.reply_refs(note()) == (None, None)
    assert wire.reply_refs(note(("e", a, "", "root"))) == (a, a)  # answers the root itself
    assert wire.reply_refs(note(("e", a, "", "root"), ("e", b, "wss://r", "reply"))) == (a, b)
    assert wire.reply_refs(note(("e", b, "", "reply"), ("e", a, "", "root"))) == (a, b)  # order-free
    assert wire.reply_refs(note(("e", a), ("e", c), ("e", b))) == (a, b)  # deprecated positional form
    assert wire.reply_refs(note(("e", a, "", "root"), ("e", c, "", "mention"))) == (a, a)
    assert wire.reply_refs(note(("e", c, "", "mention"))) == (None, None)
    assert wire.reply_refs(note(("e", "not-an-id"), ("p", a), ("e",))) == (None, None)
    assert wire.reply_refs(note(("e", a.upper()))) == (None, None)  # ids are lowercase hex


def test_replies_are_imported_after_the_notes_they_answer():
    from tidings.node.bridges.nostr_sync import _parents_first

    def note(ts, text, *tags):
        return wire.sign_event(bytes([7]) * 32, created_at=ts, kind=1, tags=tags, content=text, aux=bytes(32))

    first = note(5, "first")
    answer = note(5, "answer", ("e", first.id, "", "root"))  # the same second as its parent
    deeper = note(5, "deeper", ("e", first.id, "", "root"), ("e", answer.id, "", "reply"))
    alone = note(1, "alone", ("e", "f" * 64, "", "root"))  # answers a note not in the batch
    for order in itertools.permutations([first, answer, deeper, alone]):
        batch = sorted(order, key=lambda e: (e.created_at, e.id))  # as import_events sorts them
        texts = [e.content for e in _parents_first(batch)]
        assert sorted(texts) == ["alone", "answer", "deeper", "first"]
        assert texts.index("first") < texts.index("answer") < texts.index("deeper")
        assert texts[0] == "alone"  # otherwise the order of the batch is kept


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


def test_relay_session_subscription_states():
    """spec §14.5: one subscription per connection; replaced by CLOSE + REQ; stale events ignored."""
    author = wire.public_key(SECRET)
    session = wire.RelaySession()
    flt = wire.follow_filter([author], 1_700_000_700)
    assert flt == {"authors": [author], "kinds": [1], "limit": 500, "since": 1_700_000_100}
    assert "since" not in wire.follow_filter([author], 0)
    (req,) = session.subscribe("a", flt)
    assert json.loads(req) == ["REQ", "a", flt] and session.state == "stored"
    ev = wire.sign_event(SECRET, created_at=1_700_000_800, kind=1, tags=(), content="x", aux=bytes(32))
    assert session.receive_data(json.dumps(["EVENT", "a", ev.to_json()])) == [wire.Received(ev, stored=True)]
    assert session.receive_data(json.dumps(["EVENT", "a", ev.to_json()])) == []  # once per id
    assert session.receive_data('["EOSE","a"]') == [wire.Caught("a")] and session.state == "live"
    closing, req2 = session.subscribe("b", flt)
    assert json.loads(closing) == ["CLOSE", "a"] and json.loads(req2)[:2] == ["REQ", "b"]
    assert session.receive_data(json.dumps(["EVENT", "a", ev.to_json()])) == []  # the old subscription
    assert session.receive_data('["EOSE","b"]') == [wire.Caught("b")]
    later = wire.sign_event(SECRET, created_at=1_700_000_900, kind=1, tags=(), content="y", aux=bytes(32))
    assert session.receive_data(json.dumps(["EVENT", "b", later.to_json()])) == [wire.Received(later, False)]
    kind7 = wire.sign_event(SECRET, created_at=1, kind=7, tags=(), content="+", aux=bytes(32))
    (refused,) = session.receive_data(json.dumps(["EVENT", "b", kind7.to_json()]))
    assert isinstance(refused, wire.Refused) and refused.code == "not_asked"
    (bad,) = session.receive_data("nope")
    assert isinstance(bad, wire.Refused) and bad.code == "bad_message"
    assert session.receive_data(json.dumps(["OK", ev.id, True, ""])) == []  # not ours to answer
    session.publish(ev)
    assert session.receive_data(json.dumps(["OK", ev.id, False, "duplicate: have it"])) == [
        wire.Ok(ev.id, True, "duplicate: have it")
    ]
    assert session.receive_data('["CLOSED","b","rate-limited"]') == [wire.Closed("b", "rate-limited")]
    assert session.state == "idle" and session.unsubscribe() == []
    with pytest.raises(LocalProtocolError):
        session.subscribe("b")


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_relay_session_takes_any_message(text):
    session = wire.RelaySession()
    session.subscribe("s", {"kinds": [1]})
    for got in session.receive_data(text):
        assert isinstance(
            got, wire.Refused | wire.Notice | wire.Closed | wire.Caught | wire.Ok | wire.Received
        )


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


@contextmanager
def _run_relay(folder: Path, port: int) -> Iterator[subprocess.Popen]:
    """``nostr-relay`` (PyPI) as a subprocess on 127.0.0.1:PORT with SQLite storage in ``folder``."""
    exe = shutil.which("nostr-relay")
    assert exe, "the nostr-relay test dependency is not installed"
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
    log = open(folder / "relay.log", "ab")  # noqa: SIM115
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
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    port = _free_port()
    with _run_relay(tmp_path_factory.mktemp("relay"), port):
        yield f"ws://127.0.0.1:{port}/"


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
        orphan = wire.sign_event(
            bytes([5]) * 32,
            created_at=int(time.time()),
            kind=1,
            tags=(("e", "d" * 64, "", "root"),),  # answers a note this node never saw
            content="an answer to something unseen",
            aux=secrets.token_bytes(32),
        )
        sent = await publish_events(relay, [other, orphan], timeout=10)
        assert sent == {other.id: (True, ""), orphan.id: (True, "")}

    trio.run(check_relay)
    other_pub = wire.public_key(bytes([5]) * 32)
    tidings(bob.path, "bridge", "nostr", "relay", "add", relay)
    fa = lines(tidings(bob.path, "bridge", "nostr", "follow", key["npub"], "--json"))[0]
    fo = lines(tidings(bob.path, "bridge", "nostr", "follow", other_pub, "--json"))[0]
    assert fa["followed"] and fo["followed"] and fa["feed"] != fo["feed"]  # one bridge feed per author
    out = lines(tidings(bob.path, "bridge", "nostr", "pull", "--json"))
    assert out == [{"relay": relay, "imported": 4, "rejected": 0, "error": None}]
    assert lines(tidings(bob.path, "bridge", "nostr", "pull", "--json"))[0]["imported"] == 0  # by event id
    timeline = lines(tidings(bob.path, "timeline", "--json"))
    texts = {e["content"]["text"]: e for e in timeline if e["type"] == "post"}
    assert set(texts) == {
        "first from Tidings",
        "a reply\nwith two lines",
        "hello from Nostr",
        "an answer to something unseen",
    }
    assert "reply" not in texts["an answer to something unseen"]["content"]  # kept as a plain post
    imported = texts["hello from Nostr"]
    assert imported["feed"] == fo["feed"]
    origin = imported["content"]["origin"]
    assert (
        origin["network"] == "nostr" and origin["author"] == wire.npub(other_pub) and len(origin["id"]) == 64
    )
    assert texts["first from Tidings"]["feed"] == fa["feed"]
    # the Nostr reply (NIP-10 root tag) is a reply in Tidings too, to the imported note's entry
    answer = texts["a reply\nwith two lines"]["content"]
    first_here = texts["first from Tidings"]["id"]
    assert answer["reply"] == first_here and answer["root"] == first_here
    assert "reply" not in texts["hello from Nostr"]["content"]
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


def _note(secret: bytes, text: str) -> wire.Event:
    """A kind-1 event made now by another Nostr client."""
    return wire.sign_event(
        secret, created_at=int(time.time()), kind=1, tags=(), content=text, aux=secrets.token_bytes(32)
    )


def _texts(home: Path) -> set[str]:
    return {e["content"]["text"] for e in lines(tidings(home, "timeline", "--json")) if e["type"] == "post"}


def _configure(home: Home, relay: str, **settings: str) -> NostrService:
    tidings(home.path, "bridge", "nostr", "relay", "add", relay)
    for k, v in settings.items():
        tidings(home.path, "bridge", "config", "nostr", k, v)
    (service,) = [s for s in bridge_services(home) if s.name == "bridge:nostr"]
    assert isinstance(service, NostrService)
    return service


async def test_the_node_follows_a_relay_live(tmp_path, relay):
    """Events arrive over the open subscription, not by polling (interval 600 s); a follow made while
    the node runs re-subscribes at once."""
    home, key = make_home(tmp_path, "listener")
    first, second = bytes([11]) * 32, bytes([12]) * 32
    tidings(home.path, "bridge", "nostr", "follow", wire.public_key(first))
    service = _configure(home, relay, interval="600", retry="0.2", timeout="5")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            node = await start_node(nursery, home, key, services=[service], dht=False)
            await wait_until(lambda: relay in service.live, timeout=10)
            woke = node.wait_changed  # imports wake the node's pushers
            changed = trio.Event()

            async def watch() -> None:
                await woke()
                changed.set()

            nursery.start_soon(watch)
            note = _note(first, "live from Nostr")
            assert await publish_events(relay, [note], timeout=5) == {note.id: (True, "")}
            took = await wait_until(lambda: service.imported >= 1, timeout=5)
            assert took < 5 and "live from Nostr" in _texts(home.path)
            with trio.fail_after(2):
                await changed.wait()
            # a second author, followed while running: picked up without a restart
            tidings(home.path, "bridge", "nostr", "follow", wire.public_key(second))
            late = _note(second, "a newly followed author")
            assert await publish_events(relay, [late], timeout=5) == {late.id: (True, "")}
            await wait_until(lambda: "a newly followed author" in _texts(home.path), timeout=8)
            again = _note(second, "and live after the re-subscription")
            await publish_events(relay, [again], timeout=5)
            await wait_until(lambda: "and live after the re-subscription" in _texts(home.path), timeout=5)
            stranger = _note(bytes([13]) * 32, "nobody follows me")
            await publish_events(relay, [stranger], timeout=5)
            # a followed author's note sent after the stranger's: once it is in, the stranger's was seen
            marker = _note(second, "sent after the stranger's note")
            await publish_events(relay, [marker], timeout=5)
            await wait_until(lambda: "sent after the stranger's note" in _texts(home.path), timeout=5)
            await wait_until(lambda: service.imported >= 4, timeout=5)  # counted after its batch is stored
            assert service.imported == 4 and service.rejected == 0 and not service.failing
            nursery.cancel_scope.cancel()
    texts = _texts(home.path)
    assert "nobody follows me" not in texts
    assert {"live from Nostr", "a newly followed author", "and live after the re-subscription"} <= texts


async def test_own_posts_reach_the_relay_promptly(tmp_path, relay):
    home, key = make_home(tmp_path, "prompt")
    service = _configure(home, relay, publish="on", interval="600", retry="0.2", timeout="5")
    pub = _npub(home.path)["hex"]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await start_node(nursery, home, key, services=[service], dht=False)
            await wait_until(lambda: relay in service.live, timeout=10)
            with Store(home.store_path) as s:
                entry = s.append(key, Post(text="sent at once"))
            took = await wait_until(lambda: service.published >= 1, timeout=5)
            assert took < 5
            got = await fetch_events(relay, [{"authors": [pub]}], timeout=5)
            assert [e.content for e in got.events] == ["sent at once"]
            assert got.events[0].tag_values("tidings") == [(entry_id_text(entry.hash),)]
            nursery.cancel_scope.cancel()


async def test_a_relay_that_goes_away_is_reported_and_followed_again(tmp_path):
    home, key = make_home(tmp_path, "patient")
    author = bytes([14]) * 32
    tidings(home.path, "bridge", "nostr", "follow", wire.public_key(author))
    port = _free_port()
    url = f"ws://127.0.0.1:{port}/"
    folder = tmp_path / "relay"
    folder.mkdir()
    service = _configure(home, url, interval="600", retry="0.1", timeout="3")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            node = await start_node(nursery, home, key, services=[service], dht=False)
            with _run_relay(folder, port) as proc:
                await wait_until(lambda: url in service.live, timeout=15)
                before = _note(author, "before the outage")
                await publish_events(url, [before], timeout=5)
                await wait_until(lambda: service.imported == 1, timeout=5)
                proc.kill()  # a crash: no goodbye
                proc.wait(5)
                await wait_until(lambda: url in service.failing, timeout=10)
                state = node.statistics()["services"]["bridge:nostr"]
                assert state["state"] == "running" and state["failing"] == 1 and state["live"] == 0
                with Store(home.store_path) as s:
                    (row,) = s.read(
                        "SELECT last_error, failures FROM bridge_sources WHERE kind = 'relay' AND source = ?",
                        (url,),
                    )
                assert row[0] and row[1] >= 1
            with _run_relay(folder, port):  # back on the same port, with what it stored
                await wait_until(lambda: url in service.live and not service.failing, timeout=25)
                after = _note(author, "after the outage")
                await publish_events(url, [after], timeout=5)
                await wait_until(lambda: service.imported == 2, timeout=5)
                nursery.cancel_scope.cancel()
    assert {"before the outage", "after the outage"} <= _texts(home.path)


async def test_forged_events_are_not_imported_on_the_live_path(tmp_path):
    home, key = make_home(tmp_path, "wary")
    author = bytes([3]) * 32
    pub = wire.public_key(author)
    tidings(home.path, "bridge", "nostr", "follow", pub)

    def signed(secret: bytes, at: int, text: str) -> wire.Event:
        return wire.sign_event(secret, created_at=at, kind=1, tags=(), content=text, aux=bytes(32))

    stored, live = (
        signed(author, 1_800_000_000, "stored genuine"),
        signed(author, 1_800_000_010, "live genuine"),
    )
    altered = {**live.to_json(), "content": "altered after signing"}
    other = signed(bytes([4]) * 32, 1_800_000_011, "forged")
    forged_sig = {
        **other.to_json(),
        "pubkey": pub,
        "id": wire.event_id(pub, other.created_at, 1, (), "forged"),
    }
    stranger = signed(bytes([6]) * 32, 1_800_000_012, "not asked for")
    sent_live = trio.Event()

    async def handler(request) -> None:
        ws = await request.accept()
        try:
            while True:
                msg = json.loads(await ws.get_message())
                if msg[0] != "REQ":
                    continue
                sub = msg[1]
                await ws.send_message(json.dumps(["EVENT", sub, altered]))
                await ws.send_message(json.dumps(["EVENT", sub, stored.to_json()]))
                await ws.send_message(json.dumps(["EOSE", sub]))
                await trio.sleep(0.3)  # then, live:
                for ev in (forged_sig, stranger.to_json(), live.to_json(), live.to_json()):
                    await ws.send_message(json.dumps(["EVENT", sub, ev]))
                await ws.send_message('["EVENT", "x", {"no": "event"}]')
                sent_live.set()
        except Exception:
            pass

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
            url = f"ws://127.0.0.1:{server.port}/"
            service = _configure(home, url, interval="600", retry="0.2", timeout="3")
            await start_node(nursery, home, key, services=[service], dht=False)
            await sent_live.wait()
            await wait_until(lambda: service.imported == 2 and service.rejected == 4, timeout=5)
            await trio.sleep(0.3)
            assert service.imported == 2 and service.rejected == 4 and not service.failing
            nursery.cancel_scope.cancel()
    posts = [e for e in lines(tidings(home.path, "timeline", "--json")) if e["type"] == "post"]
    assert sorted(p["content"]["text"] for p in posts) == ["live genuine", "stored genuine"]
    assert {p["content"]["origin"]["id"] for p in posts} == {stored.id, live.id}
