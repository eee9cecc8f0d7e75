"""Private messages between real processes (spec/protocol.md §8.6, spec/cli.md *Private messages*).

alice writes to bob and carol while neither runs a node; a third node (relay) carries her log; alice
goes away; bob fetches it with a one-shot sync and reads it, carol's running node gets it live; dave,
who replicates alice's whole log, holds only the padded box and reads nothing. A reply and a delete
travel the same way.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import Running, feed, tidings, wait_for

SECRET = "meet at the old mill at noon"


def lines(home: Path, *args: str) -> list[dict[str, Any]]:
    out = tidings(home, *args, "--json").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def opened(home: Path) -> tuple[int, int]:
    """(messages read, boxes waiting for the key) in the home's store, read directly: what the node
    or the sync that stored the boxes opened, before any reading command could open them itself."""
    with sqlite3.connect(home / "store.db") as conn:
        read = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        return read, conn.execute("SELECT count(*) FROM box_pending").fetchone()[0]


def feed_hex(feed_id: str) -> str:
    from tidings.protocol import FeedId

    return FeedId.parse(feed_id).key.hex()


def messages_table(home: Path) -> bytes:
    """Every byte of the ``messages`` rows, as the database file gives them without the key."""
    with sqlite3.connect(home / "store.db") as conn:
        rows = conn.execute("SELECT * FROM messages").fetchall()
    return b"".join(v if isinstance(v, bytes) else str(v).encode() for row in rows for v in row)


def store_bytes(home: Path) -> bytes:
    """Everything the store holds on disk (the database and its write-ahead log)."""
    return b"".join(p.read_bytes() for p in home.glob("*.db*") if p.is_file())


@pytest.mark.slow
def test_alice_writes_bob_and_carol_read_dave_carries_it_blind(tmp_path):
    homes = {name: tmp_path / name for name in ("alice", "bob", "carol", "dave", "relay")}
    for name, home in homes.items():
        tidings(home, "init", "--name", name)
    ids = {name: feed(home) for name, home in homes.items()}
    alice, bob, carol, dave, relay = (homes[n] for n in ("alice", "bob", "carol", "dave", "relay"))
    for reader in (bob, carol, dave, relay):
        tidings(reader, "follow", ids["alice"])
    tidings(alice, "follow", ids["bob"])
    tidings(alice, "follow", ids["carol"])

    out = tidings(alice, "dm", ids["dave"] + "x", SECRET, check=False)
    assert out.returncode == 2 and "is not a feed id" in out.stderr
    out = tidings(alice, "dm", ids["dave"], SECRET, check=False)  # alice has never heard of dave
    assert out.returncode == 1 and "is not a feed this node knows" in out.stderr
    sent = lines(alice, "dm", ids["bob"], ids["carol"], SECRET)[0]
    assert sent["type"] == "box" and set(sent["to"]) == {ids["bob"], ids["carol"]}
    (mine,) = lines(alice, "inbox")
    assert mine["last"]["text"] == SECRET and mine["unread"] == 0

    node = Running(relay)
    try:
        tidings(alice, "sync", node.address)  # alice's log reaches the relay; alice then goes away
        # the relay carries the box without reading it
        assert lines(relay, "inbox") == [] and lines(relay, "inbox", "--requests") == []

        tidings(bob, "sync", node.address)  # bob was offline when alice wrote; alice is offline now
        assert opened(bob) == (1, 0)  # opened as the sync stored it
        (conv,) = lines(bob, "inbox")
        assert set(conv["with"]) == {ids["alice"], ids["carol"]}
        assert (conv["unread"], conv["last"]["text"]) == (1, SECRET)
        (message,) = lines(bob, "conversation", ids["alice"], ids["carol"])
        assert (message["text"], message["feed"], message["read"]) == (SECRET, ids["alice"], False)
        assert lines(bob, "inbox")[0]["unread"] == 0

        carol_node = Running(carol, "--peer", node.address)
        try:
            wait_for(lambda: opened(carol) == (1, 0), timeout=30)  # opened by carol's running node
            assert lines(carol, "inbox")[0]["last"]["text"] == SECRET

            tidings(dave, "sync", node.address)
            assert lines(dave, "log", ids["alice"])[0]["type"] == "box"
            assert opened(dave) == (0, 0)  # tried once as it was stored: not his
            assert lines(dave, "inbox") == [] and lines(dave, "inbox", "--requests") == []
            with sqlite3.connect(dave / "store.db") as conn:
                ((size,),) = conn.execute("SELECT length(payload) FROM entries WHERE type = 'box'").fetchall()
                assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
            assert size == 560  # 4 slots and 256 bytes of body: one recipient or three, short or long
            assert SECRET.encode() not in store_bytes(dave)
            for reader in (bob, carol):  # what they read is kept sealed with their key: not in the files
                assert SECRET.encode() not in store_bytes(reader)
                assert bytes.fromhex(
                    feed_hex(ids["carol"] if reader == bob else ids["bob"])
                ) not in messages_table(reader)
            for command in (("search", "mill"), ("timeline",)):
                assert SECRET not in tidings(dave, *command, "--json").stdout
                assert SECRET not in tidings(bob, *command, "--json").stdout

            # bob answers inside the conversation: alice and carol get it
            answer = lines(bob, "dm", "--reply", message["id"], "noon is fine")[0]
            assert set(answer["to"]) == {ids["alice"], ids["carol"]}
            tidings(bob, "sync", node.address)
            wait_for(lambda: len(lines(carol, "conversation", ids["alice"], ids["bob"])) == 2, timeout=30)
            replies = lines(carol, "conversation", ids["alice"], ids["bob"])
            assert replies[1]["reply"] == message["id"] and replies[1]["text"] == "noon is fine"

            # alice deletes hers: gone at the relay and at bob and carol, the log still verifies
            tidings(alice, "delete", sent["id"])
            tidings(alice, "sync", node.address)
            wait_for(lambda: len(lines(carol, "conversation", ids["alice"], ids["bob"])) == 1, timeout=30)
            tidings(bob, "sync", node.address)
            assert [m["text"] for m in lines(bob, "conversation", ids["alice"], ids["carol"])] == [
                "noon is fine"
            ]
            assert json.loads(tidings(bob, "verify", "--json").stdout)["ok"] is True
            carol_node.stop()
        finally:
            carol_node.kill()
        node.stop()
    finally:
        node.kill()


def test_an_encrypted_home_keeps_its_messages_behind_its_passphrase(tmp_path):
    """What a home with a passphrase-protected key read is sealed at rest: the files do not hold it,
    and the inbox and the conversation need the passphrase (a clear error without it)."""
    import os
    import subprocess

    from tests.support.processes import TIDINGS

    alice, bob = tmp_path / "alice", tmp_path / "bob"
    secret = {**os.environ, "TIDINGS_PASSPHRASE": "correct horse"}
    plain = {k: v for k, v in os.environ.items() if k != "TIDINGS_PASSPHRASE"}

    def run(home: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TIDINGS, "--home", str(home), *args], capture_output=True, text=True, timeout=60, env=env
        )

    assert run(alice, "init", "--encrypt", env=secret).returncode == 0
    tidings(bob, "init")
    assert run(alice, "follow", feed(bob), env=secret).returncode == 0
    sent = run(alice, "dm", feed(bob), SECRET, "--json", env=secret)
    assert sent.returncode == 0, sent.stderr
    for command in (("inbox",), ("conversation", feed(bob))):
        refused = run(alice, *command, env=plain)
        assert refused.returncode == 1 and "TIDINGS_PASSPHRASE" in refused.stderr
        assert "Traceback" not in refused.stderr
    shown = run(alice, "conversation", feed(bob), "--json", env=secret)
    assert json.loads(shown.stdout)["text"] == SECRET
    assert SECRET.encode() not in store_bytes(alice)
    assert bytes.fromhex(feed_hex(feed(bob))) not in messages_table(alice)
