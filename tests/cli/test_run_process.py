"""Real processes: ``tidings run`` nodes on loopback, driven by ``tidings`` commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.processes import TIDINGS, Running, feed, log_ids, peers_of, tidings, wait_for


@pytest.mark.slow
def test_two_nodes_three_nodes_and_restart(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for home in (a, b, c):
        tidings(home, "init", "--name", home.name)
    fb, fa = feed(b), feed(a)
    tidings(a, "follow", fb)
    tidings(c, "follow", fa)
    tidings(b, "post", "before the nodes ran")
    nodes: list[Running] = []
    try:
        nb = Running(b)
        nodes.append(nb)
        na = Running(a, "--peer", nb.address)
        nodes.append(na)
        wait_for(lambda: any(p["connected"] for p in peers_of(a)), timeout=5.0)
        (peer_b,) = peers_of(a)
        assert peer_b["feed"] == fb and peer_b["addresses"] == [nb.address] and peer_b["last_seen"] > 0
        status = json.loads(tidings(a, "status", "--json").stdout)
        assert status["peers"] == 1
        assert status["running"] is True and status["listen"] == na.address and status["feed"] == fa
        # B posts with the CLI while running; A has it within 2 s
        posted = json.loads(tidings(b, "post", "live from b", "--json").stdout)
        took = wait_for(lambda: posted["id"] in log_ids(a, fb), timeout=2.0)
        assert took < 2.0
        counted = wait_for(
            lambda: json.loads(tidings(a, "status", "--json").stdout)["counters"].get("ingested", 0) >= 1,
            timeout=3.0,
        )
        assert counted < 3.0
        assert "gossip:  1 connection," in tidings(a, "status").stdout
        # C follows A only, never connects to B, yet gets B's posts through A (hops = 2)
        nc = Running(c, "--peer", na.address)
        nodes.append(nc)
        wait_for(lambda: posted["id"] in log_ids(c, fb), timeout=5.0)
        for node in reversed(nodes):
            node.stop()
        nodes.clear()
        assert not any(p["connected"] for p in peers_of(a))
        # A remembers B: restarted with no --peer, it dials B again by itself
        nb = Running(b, listen=peer_b["addresses"][0])
        nodes.append(nb)
        na = Running(a)
        nodes.append(na)
        wait_for(lambda: any(p["connected"] for p in peers_of(a)), timeout=5.0)
        na.stop()
        nb.stop()
        nodes.clear()
        # restart both: only the missing entries move
        tidings(b, "post", "while a was away")
        nb = Running(b, "-v")
        nodes.append(nb)
        before = len(log_ids(a, fb))
        out = json.loads(tidings(a, "sync", nb.address, "--json").stdout)
        assert out["peer"] == fb
        assert out["received"] == 1
        assert len(log_ids(a, fb)) == before + 1
        verify = json.loads(tidings(a, "verify", "--json").stdout)
        assert verify["ok"] is True
    finally:
        for node in nodes:
            node.kill()


def test_sync_errors_are_one_line(tmp_path):
    home = tmp_path / "h"
    tidings(home, "init")
    out = tidings(home, "sync", "127.0.0.1:1", check=False)
    assert out.returncode == 1
    assert out.stderr.startswith("error: ") and "Traceback" not in out.stderr
    out = tidings(home, "sync", "nonsense", check=False)
    assert out.returncode == 2


def test_run_creates_an_identity_on_a_fresh_home(tmp_path):
    home = tmp_path / "fresh"
    node = Running(home)
    try:
        assert (home / "secret.pem").exists()
        info = json.loads((home / "node.json").read_text())
        assert info["pid"] == node.proc.pid
        # written again once every service has started: none is left "starting"
        assert info["services"]["bridges"]["state"] == "running", info["services"]
        os.kill(node.proc.pid, 0)
        node.stop()
    finally:
        node.kill()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_ctrl_c_during_a_bulk_sync_stops_cleanly(tmp_path):
    """Signature checks of a bulk sync run in worker processes; Ctrl-C (SIGINT to the whole process
    group, as a terminal sends it) stops the sync at once, with no traceback and no worker left, and
    what was stored verifies."""
    from tidings.node.home import Home
    from tidings.protocol import Follow, Post, SigningKey
    from tidings.storage.store import Store

    hb, ha = Home(tmp_path / "b"), Home(tmp_path / "a")
    hb.init(name="b")
    me = ha.init(name="a")
    keys = [SigningKey(bytes([i + 1]) * 32) for i in range(10)]
    with Store(hb.store_path) as store:
        for key in keys:
            store.append_many(key, [Post(text=f"post {j} " + "lorem ipsum " * 8) for j in range(4000)])
    with Store(ha.store_path) as store:
        store.append_many(me, [Follow(feed=key.public_key) for key in keys])
    node = Running(hb.path)
    try:
        sync = subprocess.Popen(
            [*TIDINGS, "--home", str(ha.path), "sync", node.address],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, like a terminal's foreground job
        )
        try:
            wait_for(lambda: len(_children(sync.pid)) >= 2 or sync.poll() is not None, 30)
            assert sync.poll() is None, "the sync ended before its workers were seen"
            workers = _children(sync.pid)
            os.killpg(sync.pid, signal.SIGINT)
            _, err = sync.communicate(timeout=15)
        finally:
            if sync.poll() is None:
                sync.kill()
        assert sync.returncode == 1 and "Traceback" not in err, err
        assert "Aborted!" in err
        wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), 5)
        out = json.loads(tidings(ha.path, "verify", "--json").stdout)
        assert out["ok"] and out["entries"] < 40_001
        node.stop()
    finally:
        node.kill()
