"""Real ``tidings run`` processes that find each other through the DHT (issue 4).

Only the first node's address is ever typed (``--bootstrap``, or ``bootstrap`` in config.toml); the
follow and the swarm join are done by separate ``tidings`` commands while the nodes run.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.nodes import next_host
from tests.support.processes import TIDINGS, feed, log_ids, peers_of, tidings, wait_for


def _post(home, text: str) -> str:
    return json.loads(tidings(home, "post", text, "--json").stdout)["id"]


class _Process:
    """A ``tidings run`` process (own 127.x address, no web page) started without waiting for it, so
    that many start at once; its log goes to a file (a full pipe would stall it)."""

    def __init__(self, home: Path, *args: str) -> None:
        self.home = home
        self.log = home.parent / f"{home.name}.log"
        with self.log.open("w") as err:
            self.proc = subprocess.Popen(
                [
                    *TIDINGS,
                    "--home",
                    str(home),
                    "run",
                    "--listen",
                    f"{next_host()}:0",
                    "--http",
                    "off",
                    *args,
                ],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        self.address = ""

    def wait_listening(self) -> _Process:
        line = self.proc.stdout.readline()  # the first line, printed once the listener is bound
        assert line.startswith("listening on "), line + self.log.read_text()
        self.address = line.split()[-1]
        return self

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.communicate(timeout=15)
        err = self.log.read_text()
        assert self.proc.returncode == 0 and "Traceback" not in err, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=10)


def _swarm_texts(home: Path) -> set[str]:
    out = tidings(home, "timeline", "--swarm", "python", "--json").stdout
    return {json.loads(line)["content"]["text"] for line in out.splitlines() if line.strip()}


@pytest.mark.slow
def test_ten_processes_follow_by_id_swarm_and_lose_the_bootstrap(tmp_path):
    """10 nodes given only one bootstrap address; follow by feed id; 5 nodes in swarm ``python`` see each
    other's posts; with the bootstrap node killed, a new node joins through another known node."""
    homes = [tmp_path / f"p{i}" for i in range(11)]
    with ThreadPoolExecutor(len(homes)) as pool:
        list(pool.map(lambda i: tidings(homes[i], "init", "--name", f"p{i}"), range(len(homes))))
        feeds = list(pool.map(feed, homes))
    members = (1, 3, 5, 7, 9)
    running: list[_Process] = []
    try:
        first = _Process(homes[0]).wait_listening()
        running.append(first)
        for i in range(1, 10):
            args = ["--swarm", "python"] if i in (1, 3, 5, 7) else []
            if i == 9:  # the bootstrap address in config.toml instead of on the command line
                (homes[9] / "config.toml").write_text(f'bootstrap = ["{first.address}"]\n')
            else:
                args += ["--bootstrap", first.address]
            running.append(_Process(homes[i], *args))
        for node in running[1:]:
            node.wait_listening()
        started = time.monotonic()

        # follow by feed id alone: p2 follows p8's feed (neither is the bootstrap node)
        post8 = _post(homes[8], "p8 speaking")
        tidings(homes[2], "follow", feeds[8])
        wait_for(lambda: post8 in log_ids(homes[2], feeds[8]), timeout=30)
        assert {p["feed"]: p["source"] for p in peers_of(homes[2])}[feeds[8]] == "dht"

        # swarm: p1, p3, p5, p7 joined with --swarm; p9 joins with the command while it runs
        tidings(homes[9], "swarm", "join", "python")
        with ThreadPoolExecutor(len(members)) as pool:
            list(pool.map(lambda i: _post(homes[i], f"python post {i}"), members))
        wanted = {f"python post {i}" for i in members}
        for i in members:
            wait_for(lambda i=i: wanted <= _swarm_texts(homes[i]), timeout=40)
        assert "p8 speaking" not in _swarm_texts(homes[1])
        swarms = [
            json.loads(line) for line in tidings(homes[9], "swarm", "list", "--json").stdout.splitlines()
        ]
        assert swarms[0]["name"] == "python" and swarms[0]["members"] == len(members) - 1

        # the bootstrap node dies; a new node given it and one other known node still joins the DHT,
        # finds p6 by feed id and gets its posts
        first.kill()
        running.remove(first)
        post6 = _post(homes[6], "p6 after the bootstrap died")
        tidings(homes[10], "follow", feeds[6])
        late = _Process(homes[10], "--bootstrap", first.address, "--bootstrap", running[4].address)
        running.append(late.wait_listening())
        wait_for(lambda: post6 in log_ids(homes[10], feeds[6]), timeout=30)
        assert {p["feed"]: p["source"] for p in peers_of(homes[10])}[feeds[6]] == "dht"
        print(f"10 processes: follow, swarm and rejoin in {time.monotonic() - started:.1f} s")
        with ThreadPoolExecutor(len(running)) as pool:
            list(pool.map(_Process.stop, running))
        running.clear()
    finally:
        for node in running:
            node.kill()


def test_swarm_commands(tmp_path):
    home = tmp_path / "h"
    tidings(home, "init")
    out = tidings(home, "timeline", "--swarm", "python", check=False)
    assert out.returncode == 1 and out.stderr.startswith("error: not in swarm python")
    assert json.loads(tidings(home, "swarm", "join", "python", "--json").stdout) == {
        "swarm": "python",
        "joined": True,
    }
    assert "already in swarm" in tidings(home, "swarm", "join", "python").stdout
    rows = [json.loads(line) for line in tidings(home, "swarm", "list", "--json").stdout.splitlines()]
    assert [(r["name"], r["members"]) for r in rows] == [("python", 0)]
    assert tidings(home, "timeline", "--swarm", "python", "--json").stdout == ""
    assert tidings(home, "swarm", "leave", "python").stdout.strip() == "left swarm python"
    out = tidings(home, "swarm", "leave", "python", check=False)
    assert out.returncode == 1 and out.stderr.strip() == "error: not in swarm python"
    out = tidings(home, "swarm", "join", "", check=False)
    assert out.returncode == 2
    out = tidings(home, "run", "--bootstrap", "nonsense", check=False)
    assert out.returncode == 2
