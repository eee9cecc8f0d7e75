"""Rough edges a new user hit (issue 17 items 1, 3, 4, 5, 9), each through the exact command that
failed, as a real ``tidings`` process on a temporary home."""

from __future__ import annotations

import ctypes
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import Running, tidings

CLI = [sys.executable, "-m", "tidings.cli.main"]
ENV = {k: v for k, v in os.environ.items() if k not in ("TIDINGS_PASSPHRASE", "TIDINGS_HOME")}


def run(home: Path, *args: str | bytes, code: int = 0, stdin: bytes | None = None, **kw: Any) -> Any:
    """``tidings --home HOME ARGS``: check the exit status, one error line, and no traceback."""
    proc = subprocess.run(
        [*CLI, "--home", str(home), *args],
        input=stdin,
        capture_output=True,
        env=ENV,
        timeout=120,
        check=False,
        **kw,
    )
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert "Traceback" not in err, err
    assert proc.returncode == code, f"{args}: exit {proc.returncode}\n{out}\n{err}"
    if code == 1:
        assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return out, err


def error(home: Path, *args: str | bytes, **kw: Any) -> str:
    """The one error line of a command that must fail (exit status 1)."""
    return run(home, *args, code=1, **kw)[1].strip()


def usage_error(home: Path, *args: str) -> str:
    """The message of a usage error (exit status 1 or 2: how usage errors exit is another issue's)."""
    proc = subprocess.run(
        [*CLI, "--home", str(home), *args], capture_output=True, text=True, env=ENV, check=False
    )
    assert proc.returncode in (1, 2) and "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


def js(home: Path, *args: str, **kw: Any) -> Any:
    return json.loads(run(home, *args, "--json", **kw)[0])


def jl(home: Path, *args: str) -> list[Any]:
    return [json.loads(line) for line in run(home, *args, "--json")[0].splitlines()]


@pytest.fixture
def alice(tmp_path: Path) -> Path:
    home = tmp_path / "alice"
    js(home, "init", "--name", "alice")
    return home


@pytest.fixture
def bob(tmp_path: Path) -> str:
    return js(tmp_path / "bob", "init")["feed"]


# -- 1: search ---------------------------------------------------------------------------------------------
def test_search_takes_ordinary_text_and_finds_profiles(alice: Path) -> None:
    post = js(alice, "post", "don't e-mail c++ people at 5:30 #tag")["id"]
    for query in ("don't", "e-mail", "c++", "#tag", "5:30"):
        assert [e["id"] for e in jl(alice, "search", query)] == [post], query
        assert "don't e-mail" in run(alice, "search", query)[0]
    # the README's tour: a bio, then a search for a word of it
    run(alice, "profile", "--name", "Alice", "--bio", "writes about gardens")
    (hit,) = jl(alice, "search", "gardens")
    assert hit["type"] == "profile" and hit["profile"]["bio"] == "writes about gardens"
    assert {"id", "feed", "seq", "ts", "type", "content"} <= set(hit) and hit["feed"] == hit["profile"][
        "feed"
    ]
    shown = run(alice, "search", "gardens")[0]
    assert "Alice" in shown and "profile" in shown and "writes about gardens" in shown
    # FTS5 syntax on request, and its errors in one line
    assert [e["type"] for e in jl(alice, "search", "--fts", "gardens OR people")] == ["profile", "post"]
    assert "bad search query (FTS5 syntax)" in error(alice, "search", "--fts", "e-mail")


# -- 3: entry ids ------------------------------------------------------------------------------------------
def test_ids_printed_by_timeline_can_be_pasted_back(alice: Path) -> None:
    post = js(alice, "post", "hello")["id"]
    (printed,) = re.findall(r"%\S+…", run(alice, "timeline")[0])
    assert post.startswith(printed.removesuffix("…"))
    reacted = js(alice, "react", printed, "🎉")
    assert jl(alice, "log", "--limit", "1")[0]["content"]["target"] == post and reacted["seq"] == 3
    js(alice, "repost", printed.upper())  # any case
    assert [e["id"] for e in jl(alice, "thread", printed)] == [post]


def test_an_id_that_cannot_be_resolved_says_why(alice: Path) -> None:
    js(alice, "post", "hello")
    assert error(alice, "react", "%s", "🎉") == (
        "error: '%s' is too short: give at least 4 characters of the entry id after %"
    )
    absent = next(p for p in ("%vkoe", "%aaaa") if not any(e["id"].startswith(p) for e in jl(alice, "log")))
    assert error(alice, "react", absent.upper(), "🎉") == f"error: no entry {absent}… in this store"
    assert "'!' (character 4) is not base32" in error(alice, "thread", "%7s!x")


# -- 4: follow, block and their repeats --------------------------------------------------------------------
def test_repeats_write_nothing_and_contradictions_are_named(alice: Path, bob: str) -> None:
    followed = js(alice, "follow", bob)
    assert followed["changed"] is True
    out, _ = run(alice, "follow", bob)
    assert out.strip() == f"you already follow {bob}: nothing written"
    again = js(alice, "follow", bob)
    assert again["changed"] is False and again["id"] == followed["id"] and again["seq"] == followed["seq"]

    out, err = run(alice, "block", bob)
    assert out.startswith("blocked; entry %")
    assert err.strip() == (
        f"warning: you follow {bob}: it stays followed, but is neither shown nor replicated while blocked "
        f"(to stop following it: tidings unfollow {bob})"
    )
    assert jl(alice, "following") == [{"feed": bob, "name": None, "blocked": True}]
    assert "blocked: not shown or replicated" in run(alice, "following")[0]
    assert js(alice, "block", bob)["changed"] is False
    run(alice, "unfollow", bob)
    assert error(alice, "follow", bob) == f"error: {bob} is blocked: unblock it first (tidings unblock {bob})"
    run(alice, "unblock", bob)
    assert run(alice, "unblock", bob)[0].strip() == f"{bob} is not blocked: nothing written"
    assert run(alice, "unfollow", bob)[0].strip() == f"you do not follow {bob}: nothing written"
    types = [e["type"] for e in jl(alice, "log")]
    assert types == ["unblock", "unfollow", "block", "follow", "profile"]  # one entry per change


# -- 5: text on standard input -----------------------------------------------------------------------------
def test_invalid_utf8_on_stdin_is_refused_like_the_same_bytes_as_an_argument(alice: Path) -> None:
    piped = error(alice, "post", "-", stdin=b"ab\xff")
    assert piped == (
        "error: text is not valid Unicode text: standard input has byte 0xff at offset 2, which is not UTF-8"
    )
    assert error(alice, "post", b"ab\xff") == "error: text is not valid Unicode text"
    assert js(alice, "post", "-", stdin="grüße\n".encode())["seq"] == 2
    assert jl(alice, "log", "--limit", "1")[0]["content"]["text"] == "grüße"


# -- 9: smaller ----------------------------------------------------------------------------------------------
def test_muting_yourself_is_refused(alice: Path) -> None:
    me = js(alice, "id")["feed"]
    js(alice, "post", "mine")
    assert error(alice, "mute", me) == "error: you cannot mute yourself"
    assert jl(alice, "mute", "--list") == [] and len(jl(alice, "timeline")) == 1


def test_a_reaction_is_an_emoji(alice: Path) -> None:
    post = js(alice, "post", "hello")["id"]
    assert error(alice, "react", post, "hello world") == (
        "error: 'hello world' is not an emoji: react with one, such as 👍 or 🎉"
    )
    assert js(alice, "react", post, "👍🏽")["seq"] == 3


def test_a_typo_in_a_feed_id_is_named(alice: Path, bob: str) -> None:
    assert "character 7 is '1', which is not base32 (a-z, 2-7)" in usage_error(
        alice, "follow", bob[:6] + "1" + bob[7:]
    )
    last = "b" if bob[-1] != "b" else "c"
    assert f"cannot end in '{last}' (a 52-character id ends in 'a' or 'q')" in usage_error(
        alice, "follow", bob[:-1] + last
    )
    assert "51 characters after the sigil, not 52" in usage_error(alice, "follow", bob[:-1])


def test_an_empty_store_is_refused_and_left_alone(alice: Path) -> None:
    store = alice / "store.db"
    store.write_bytes(b"")
    message = error(alice, "id")
    assert message == (
        f"error: the store file is empty (0 bytes): its data is gone ({store}); "
        "move it aside, then restore a backup with 'tidings import FILE'"
    )
    assert error(alice, "post", "hi") == message
    assert store.stat().st_size == 0  # not quietly rebuilt


def _without_file_permission_override() -> None:
    """In the child, before exec: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding
    set, so even root (as CI runs) obeys file modes after exec."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    for cap in (1, 2):  # linux/capability.h
        if prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.mark.skipif(sys.platform != "linux", reason="drops a Linux capability to make mode 000 hold for root")
def test_a_store_you_may_not_open_is_named(alice: Path) -> None:
    store = alice / "store.db"
    store.chmod(0)
    try:
        message = error(alice, "id", preexec_fn=_without_file_permission_override)
    finally:
        store.chmod(0o600)
    assert message == (
        f"error: cannot open the store {store}: Permission denied (mode 0000); "
        f"it must be a file you may read and write (chmod 600 {store})"
    )


def test_an_ipv6_listening_address_is_printed_in_brackets(alice: Path) -> None:
    import socket

    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    node = Running(alice, listen="[::1]:0")
    try:
        assert re.fullmatch(r"\[::1\]:\d+", node.address), node.address
        status = json.loads(tidings(alice, "status", "--json").stdout)
        assert status["listen"] == node.address  # tidings status writes it the same way
        assert f"listening on {node.address}" in tidings(alice, "status").stdout
    finally:
        node.stop()
