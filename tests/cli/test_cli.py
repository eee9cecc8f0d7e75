"""The command line, run as a real subprocess on temporary homes (spec/cli.md is the contract).

Every call goes through ``python -m tidings.cli.main``; every call also asserts that no traceback
reached stderr. Checks are grouped so the whole file runs about a hundred processes.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest

CLI = [sys.executable, "-m", "tidings.cli.main"]
ENTRY_FIELDS = {"id", "feed", "seq", "ts"}
READ_FIELDS = {"id", "feed", "seq", "ts", "type", "content"}
FEED_RE = re.compile(r"^@[a-z2-7]{52}$")
ENTRY_RE = re.compile(r"^%[a-z2-7]{52}$")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TIDINGS_PASSPHRASE", "TIDINGS_HOME")}
    env.update(extra)
    return env


ENV = clean_env()


def run(home: Path | None, *args: str, code: int = 0, stdin: str | None = None, env: Any = None):
    """Run ``tidings [--home HOME] ARGS``; check the exit status and that no traceback was printed."""
    argv = [*CLI, *(["--home", str(home)] if home is not None else []), *args]
    proc = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, env=env or ENV, timeout=120, check=False
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == code, f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    if code == 0:
        assert proc.stderr == "", proc.stderr
    if code == 1:
        lines = proc.stderr.splitlines()
        assert lines and lines[-1].startswith("error: "), proc.stderr
        assert len(lines) == 1, f"expected one error line: {proc.stderr!r}"
    return proc


def js(home: Path, *args: str, **kw: Any) -> Any:
    """One JSON object from ``ARGS --json``."""
    out = run(home, *args, "--json", **kw).stdout
    assert out.count("\n") == 1, out
    return json.loads(out)


def jl(home: Path, *args: str, **kw: Any) -> list[Any]:
    """JSON Lines from ``ARGS --json``."""
    return [json.loads(line) for line in run(home, *args, "--json", **kw).stdout.splitlines()]


def error(home: Path | None, *args: str, **kw: Any) -> str:
    """Run a command that must fail with exit status 1; return its one error line."""
    return run(home, *args, code=1, **kw).stderr.strip()


def check_written(out: dict[str, Any], feed: str, seq: int | None = None) -> None:
    assert set(out) >= ENTRY_FIELDS
    assert ENTRY_RE.match(out["id"]) and out["feed"] == feed
    assert isinstance(out["ts"], int) and out["ts"] > 1_600_000_000_000
    if seq is not None:
        assert out["seq"] == seq


# -- a small world shared by the read-only and cross-feed tests ------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    base = tmp_path_factory.mktemp("world")
    alice, bob = base / "alice", base / "bob"
    a = js(alice, "init", "--name", "alice")["feed"]
    b = js(bob, "init", "--name", "bob")["feed"]
    bob_posts = [js(bob, "post", text)["id"] for text in ("bob grows gardens", "bob second thoughts")]
    run(bob, "export", str(base / "bob.tid"))
    imported = js(alice, "import", str(base / "bob.tid"), code=0)
    assert imported["added"] == 3 and imported["rejected"] == [] and imported["complete"] is True
    hello = js(alice, "post", "alice says hello")["id"]
    js(alice, "post", "alice replies to bob", "--reply-to", bob_posts[0])
    js(alice, "react", hello, "🌱")
    doomed = js(alice, "post", "a post alice regrets")["id"]
    js(alice, "delete", doomed)
    return SimpleNamespace(base=base, alice=alice, bob=bob, a=a, b=b, bob_posts=bob_posts, hello=hello)


# -- usage ------------------------------------------------------------------------------------------------
def test_help_and_usage_errors(tmp_path: Path) -> None:
    assert "timeline" in run(None, "--help").stdout
    for args in (
        ("post",),
        ("timeline", "--ranker", "no-such-ranker"),
        ("follow", "not-a-feed"),
        ("log", "--limit", "0"),
    ):
        proc = run(tmp_path, *args, code=2)
        # one line (spec/cli.md, Errors) that names the command's help, not click's three
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr
        assert proc.stderr.rstrip().endswith(f"(see 'tidings {args[0]} --help')"), proc.stderr


def test_cli_import_is_lazy() -> None:
    """`import tidings.cli.main` must not pull in the store, rich or trio: every command pays for it."""
    code = (
        "import sys, tidings.cli.main\n"
        "heavy = [m for m in ('rich', 'trio', 'sqlite3', 'tidings.storage.store', 'cryptography')"
        " if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- identity and writing ---------------------------------------------------------------------------------
def test_init_id_profile_and_second_init(tmp_path: Path) -> None:
    home = tmp_path / "home"
    feed = js(home, "init", "--name", "alice")["feed"]
    assert FEED_RE.match(feed)
    assert (home / "secret.pem").stat().st_mode & 0o077 == 0
    assert "already exists" in error(home, "init")
    assert js(home, "id") == {"feed": feed}
    assert run(home, "id").stdout.strip() == feed
    assert js(home, "profile") == {"feed": feed, "name": "alice", "bio": None}
    out = js(home, "profile", "--bio", "grows tomatoes")
    assert {k: out[k] for k in ("feed", "name", "bio")} == {
        "feed": feed,
        "name": "alice",
        "bio": "grows tomatoes",
    }
    # --home after the command name works too
    proc = subprocess.run([*CLI, "profile", "--home", str(home)], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0 and "grows tomatoes" in proc.stdout


def test_writing_reading_and_deleting(tmp_path: Path) -> None:
    home = tmp_path / "home"
    me = js(home, "init")["feed"]
    hello = js(home, "post", "hello tidings world")
    check_written(hello, me, seq=1)
    from_stdin = js(home, "post", "-", stdin="from stdin\n")
    check_written(from_stdin, me, seq=2)
    reply = js(home, "post", "first reply", "--reply-to", hello["id"][:9])  # a unique prefix
    nested = js(home, "post", "nested reply", "--reply-to", reply["id"])
    reaction = js(home, "react", hello["id"], "🎉")
    repost = js(home, "repost", from_stdin["id"])
    assert [reply["seq"], nested["seq"], reaction["seq"], repost["seq"]] == [3, 4, 5, 6]

    log = jl(home, "log")
    assert [e["seq"] for e in log] == [6, 5, 4, 3, 2, 1]  # newest first
    for e in log:
        assert set(e) >= READ_FIELDS and e["feed"] == me
    by_seq = {e["seq"]: e for e in log}
    assert by_seq[2]["content"]["text"] == "from stdin"
    assert by_seq[3]["content"]["reply"] == hello["id"] and by_seq[3]["content"]["root"] == hello["id"]
    assert by_seq[4]["content"]["reply"] == reply["id"] and by_seq[4]["content"]["root"] == hello["id"]
    assert by_seq[5]["type"] == "reaction" and by_seq[5]["content"]["emoji"] == "🎉"
    assert by_seq[6]["type"] == "repost" and by_seq[6]["content"]["target"] == from_stdin["id"]
    assert [e["seq"] for e in jl(home, "log", "--limit", "2")] == [6, 5]

    thread = jl(home, "thread", nested["id"])
    assert [e["id"] for e in thread] == [hello["id"], reply["id"], nested["id"]]
    human = run(home, "thread", hello["id"]).stdout
    assert "hello tidings world" in human and "nested reply" in human

    found = jl(home, "search", "tidings")
    assert [e["id"] for e in found] == [hello["id"]] and set(found[0]) >= READ_FIELDS

    timeline = jl(home, "timeline", "--explain")
    assert [e["id"] for e in timeline] == [  # the reposted post is shown once, as its newer repost
        repost["id"],
        nested["id"],
        reply["id"],
        hello["id"],
    ]
    assert timeline[0]["why"][-1].startswith("also posted by")
    for e in timeline:
        assert READ_FIELDS | {"score", "why"} <= set(e)
        assert e["why"][0].startswith("newest first: score = timestamp") and "your own" in e["why"][1]
    assert "why" not in jl(home, "timeline", "--limit", "1")[0]

    deleted = js(home, "delete", reply["id"])
    check_written(deleted, me, seq=7)
    gone = jl(home, "log", "--limit", "5")[-1]
    assert gone["id"] == reply["id"] and gone["content"] is None and gone.get("deleted") is True
    assert jl(home, "search", "first") == []
    assert "already deleted" in error(home, "delete", reply["id"])
    assert "text must not be empty" in error(home, "post", "   ")
    assert js(home, "verify")["ok"] is True


def test_unknown_malformed_and_ambiguous_entry_ids(tmp_path: Path, world: SimpleNamespace) -> None:
    unknown = "%" + "a" * 52
    assert "no entry" in error(world.alice, "react", unknown, "👍")
    assert "no entry" in error(world.alice, "post", "re", "--reply-to", "%zzzzzz")
    assert "not an entry id" in error(world.alice, "thread", "xy!")

    # Ambiguous prefix: append posts in-process until two ids share their first four characters.
    from tidings.node.home import Home
    from tidings.protocol import Post, entry_id_text

    home = Home(tmp_path / "many")
    key = home.init()
    seen: dict[str, str] = {}
    prefix = None
    with home.open_store() as store:
        for batch in range(20):
            for entry in store.append_many(key, [Post(text=f"p{batch}.{i}") for i in range(1000)]):
                text = entry_id_text(entry.hash)
                if text[:5] in seen:
                    prefix = text[:5]
                    break
                seen[text[:5]] = text
            if prefix:
                break
    assert prefix is not None
    assert re.search(r"matches \d+ entries", error(home.path, "repost", prefix))


def test_delete_refuses_someone_elses_entry(world: SimpleNamespace) -> None:
    message = error(world.alice, "delete", world.bob_posts[0])
    assert "someone else's" in message and world.bob_posts[0] in message
    bob_log = jl(world.alice, "log", world.b)
    assert bob_log[-2]["content"]["text"] == "bob grows gardens" and "deleted" not in bob_log[-2]


# -- social graph -----------------------------------------------------------------------------------------
def test_follow_mute_block_and_timeline(world: SimpleNamespace) -> None:
    alice, b = world.alice, world.b
    assert {e["feed"] for e in jl(alice, "timeline")} == {world.a}  # bob is not followed yet
    followed = js(alice, "follow", b)
    check_written(followed, world.a)
    assert followed["type"] == "follow"
    assert jl(alice, "following") == [{"feed": b, "name": "bob"}]

    timeline = jl(alice, "timeline", "--explain")
    bobs = [e for e in timeline if e["feed"] == b]
    assert {e["id"] for e in bobs} == set(world.bob_posts)
    assert any(w.startswith("you follow ") for w in bobs[0]["why"])
    scores = [e["score"] for e in timeline]
    assert scores == sorted(scores, reverse=True)
    assert "you follow" in run(alice, "timeline", "--explain").stdout

    assert js(alice, "mute", b)["changed"] is True
    assert jl(alice, "mute", "--list") == [{"kind": "feed", "value": b}]
    assert all(e["feed"] != b for e in jl(alice, "timeline"))
    js(alice, "unmute", b)
    js(alice, "mute", "--word", "GARDENS")
    texts = [e["content"]["text"] for e in jl(alice, "timeline")]
    assert "bob second thoughts" in texts and "bob grows gardens" not in texts
    js(alice, "unmute", "--word", "gardens")

    js(alice, "block", b)
    assert all(e["feed"] != b for e in jl(alice, "timeline"))
    js(alice, "unblock", b)
    js(alice, "unfollow", b)
    assert jl(alice, "following") == []
    graph = [e["type"] for e in jl(alice, "log", "--limit", "4")]
    assert graph == ["unfollow", "unblock", "block", "follow"]  # published; mutes are not
    assert "yourself" in error(alice, "follow", world.a)


# -- errors -----------------------------------------------------------------------------------------------
def test_home_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    for args in (("id",), ("post", "hi"), ("log",)):
        assert error(missing, *args) == f"error: no home at {missing}; run 'tidings init' first"
    assert "no home at" in error(None, "timeline", env=clean_env(TIDINGS_HOME=str(missing)))
    assert not missing.exists()  # reading commands never create a home
    (tmp_path / "empty").mkdir()
    assert "no identity in" in error(tmp_path / "empty", "verify")


def test_encrypted_key_and_wrong_passphrase(tmp_path: Path) -> None:
    home = tmp_path / "home"
    right, wrong = clean_env(TIDINGS_PASSPHRASE="correct horse"), clean_env(TIDINGS_PASSPHRASE="wrong")
    assert "TIDINGS_PASSPHRASE" in error(home, "init", "--encrypt")  # no terminal, no passphrase
    assert not home.exists()
    feed = js(home, "init", "--encrypt", env=right)["feed"]
    assert b"ENCRYPTED" in (home / "secret.pem").read_bytes()
    assert "wrong passphrase" in error(home, "post", "hi", env=wrong)
    assert "TIDINGS_PASSPHRASE" in error(home, "post", "hi")  # no terminal to ask on
    assert jl(home, "log") == []  # reading needs no passphrase
    check_written(js(home, "post", "hi", env=right), feed, seq=1)


def _on_terminal(args: list[str], answers: list[tuple[str, str]], env: dict[str, str]) -> tuple[int, str]:
    """Run ``args`` on a pseudo-terminal, answering each prompt; return (exit status, output)."""
    master, slave = pty.openpty()
    # A new session: no controlling terminal, so getpass cannot reach the terminal pytest runs in.
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    out = b""
    pending = list(answers)
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            if pending and pending[0][0].encode() in out.split(b"\n")[-1]:
                os.write(master, pending.pop(0)[1].encode() + b"\n")
        return proc.wait(timeout=30), out.decode("utf-8", "replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_passphrase_prompts_on_a_terminal(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    status, out = _on_terminal(
        [*CLI, "--home", home, "init", "--encrypt"],
        [("New passphrase", "pw one"), ("Repeat for confirmation", "pw one")],
        ENV,
    )
    assert status == 0 and "created identity" in out and "Traceback" not in out, out
    assert b"ENCRYPTED" in Path(home, "secret.pem").read_bytes()
    status, out = _on_terminal([*CLI, "--home", home, "post", "typed"], [("Passphrase", "pw one")], ENV)
    assert status == 0 and "posted %" in out, out
    assert "wrong passphrase" in error(Path(home), "post", "x", env=clean_env(TIDINGS_PASSPHRASE="pw two"))


@pytest.mark.parametrize("damage", ["garbage", "pages"])
def test_corrupted_store_gives_a_clear_error(tmp_path: Path, damage: str) -> None:
    home = tmp_path / "home"
    js(home, "init", "--name", "carol")
    for text in ("first " + "x" * 300, "second " + "x" * 300, "y" * 8000):  # several pages of data
        js(home, "post", text)
    run(home, "export", str(tmp_path / "backup.tid"))
    db = home / "store.db"
    data = bytearray(db.read_bytes())
    assert len(data) > 3 * 4096
    if damage == "garbage":
        data = bytearray(os.urandom(len(data)))
    else:
        data[4096:] = os.urandom(len(data) - 4096)  # a valid header, damaged pages
    db.write_bytes(bytes(data))
    for args in (("log",), ("post", "hi"), ("verify",), ("timeline",)):
        message = error(home, *args)
        assert "damaged" in message and str(db) in message, message
    # the way out the message names: move the store aside and import the backup
    db.rename(home / "store.db.damaged")
    assert "missing" in error(home, "log")
    assert js(home, "import", str(tmp_path / "backup.tid"))["added"] == 4
    assert js(home, "post", "after the restore")["seq"] == 5
    assert js(home, "verify")["ok"] is True


# -- integrity and backup ---------------------------------------------------------------------------------
def test_verify_json_fields(world: SimpleNamespace) -> None:
    out = js(world.alice, "verify")
    assert {"feeds", "entries", "ok", "problems"} <= set(out)
    assert out["ok"] is True and out["problems"] == [] and out["feeds"] == 2
    assert js(world.alice, "verify", world.b)["entries"] == 3


def test_export_import_reproduces_identical_logs(tmp_path: Path, world: SimpleNamespace) -> None:
    archive = tmp_path / "alice.tid"
    exported = js(world.alice, "export", str(archive))
    assert exported["entries"] > 0 and archive.read_bytes().startswith(b"TIDINGS-ARCHIVE 1\n")
    fresh = tmp_path / "fresh"
    js(fresh, "init")  # no name: the fresh home's own feed stays empty
    imported = js(fresh, "import", str(archive))
    assert imported["added"] == exported["entries"] and imported["rejected"] == []
    for feed in (world.a, world.b):
        original = jl(world.alice, "log", feed, "--raw")
        assert original and all(e["raw"] for e in original)
        assert jl(fresh, "log", feed, "--raw") == original
    assert js(fresh, "verify") == js(world.alice, "verify")
    again = js(fresh, "import", str(archive))
    assert again["added"] == 0 and again["duplicates"] == exported["entries"]


def _tamper(archive: bytes, where: str, text: str) -> tuple[bytes, int]:
    """Flip one byte inside the entry record whose post text is ``text``; return (archive, seq)."""
    from tidings.protocol import Entry

    magic = b"TIDINGS-ARCHIVE 1\n"
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(archive[len(magic) :])
    offset = len(magic)
    for record in unpacker:
        start, offset = offset, len(magic) + unpacker.tell()
        if record[0] != "entry" or record[2] is None or text.encode() not in record[2]:
            continue
        body = archive[start:offset]
        raw, payload = record[1], record[2]
        if where == "payload":
            at = start + body.index(payload) + payload.index(text.encode())
        else:
            at = start + body.index(raw) + len(raw) - 10  # inside the signature
        tampered = bytearray(archive)
        tampered[at] ^= 0x02
        return bytes(tampered), Entry.decode(raw).seq
    raise AssertionError(f"no entry with {text!r} in the archive")


@pytest.mark.parametrize("where", ["payload", "raw"])
def test_tampered_archive_imports_the_valid_entries(
    tmp_path: Path, world: SimpleNamespace, where: str
) -> None:
    archive = tmp_path / "alice.tid"
    total = js(world.alice, "export", str(archive))["entries"]
    data, seq = _tamper(archive.read_bytes(), where, "alice says hello")
    bad = tmp_path / "tampered.tid"
    bad.write_bytes(data)
    fresh = tmp_path / "fresh"
    js(fresh, "init")
    proc = run(fresh, "import", str(bad), "--json", code=1)
    assert "failed verification" in proc.stderr
    report = json.loads(proc.stdout)
    assert report["added"] == total - 1
    assert len(report["rejected"]) == 1
    refused = report["rejected"][0]
    assert refused["feed"] == world.a and refused["seq"] == seq
    assert refused["code"] == ("payload_hash" if where == "payload" else "bad_signature")
    seqs = [e["seq"] for e in jl(fresh, "log", world.a)]
    assert seq not in seqs and len(seqs) == len(jl(world.alice, "log", world.a)) - 1
    verified = js(fresh, "verify")
    assert verified["ok"] is True and verified["gaps"] == [{"feed": world.a, "from": seq, "to": seq}]


def test_import_errors(tmp_path: Path, world: SimpleNamespace) -> None:
    assert "cannot read" in error(world.alice, "import", str(tmp_path / "missing.tid"))
    (tmp_path / "notes.txt").write_text("not an archive")
    assert "not a Tidings archive" in error(world.alice, "import", str(tmp_path / "notes.txt"))
    archive = tmp_path / "full.tid"
    run(world.bob, "export", str(archive))
    cut = tmp_path / "cut.tid"
    cut.write_bytes(archive.read_bytes()[:-40])
    assert "incomplete" in error(world.alice, "import", str(cut))
