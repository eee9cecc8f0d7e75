"""Real ``tidings run`` processes that find each other through the DHT (issue 4).

Only the first node's address is ever typed (``--bootstrap``, or ``bootstrap`` in config.toml); the
follow and the swarm join are done by separate ``tidings`` commands while the nodes run.
"""

from __future__ import annotations

import json

import pytest

from .test_run_process import Running, feed, log_ids, peers_of, tidings, wait_for


def _post(home, text: str) -> str:
    return json.loads(tidings(home, "post", text, "--json").stdout)["id"]


@pytest.mark.slow
def test_processes_follow_by_id_and_swarm(tmp_path):
    homes = [tmp_path / f"p{i}" for i in range(4)]
    for i, home in enumerate(homes):
        tidings(home, "init", "--name", f"p{i}")
    (homes[3] / "config.toml").write_text("")
    running = []
    try:
        first = Running(homes[0])
        running.append(first)
        running.append(Running(homes[1], "--bootstrap", first.address, "--swarm", "python"))
        running.append(Running(homes[2], "--bootstrap", first.address))
        (homes[3] / "config.toml").write_text(f'bootstrap = ["{first.address}"]\n')
        running.append(Running(homes[3], "--swarm", "python"))

        # follow by feed id alone: p2 follows p0's feed, with no address typed
        post0 = _post(homes[0], "p0 speaking")
        tidings(homes[2], "follow", feed(homes[0]))
        wait_for(lambda: post0 in log_ids(homes[2], feed(homes[0])), timeout=30)
        assert {p["feed"]: p["source"] for p in peers_of(homes[2])}[feed(homes[0])] == "dht"

        # swarm: p1 and p3 joined with --swarm; p2 joins with the command while it runs
        tidings(homes[2], "swarm", "join", "python")
        posts = {i: _post(homes[i], f"python post {i}") for i in (1, 2, 3)}
        for i in (1, 2, 3):
            for j in (1, 2, 3):
                wait_for(lambda i=i, j=j: posts[j] in log_ids(homes[i], feed(homes[j])), timeout=30)
        out = tidings(homes[1], "timeline", "--swarm", "python", "--json").stdout
        texts = {json.loads(line)["content"]["text"] for line in out.splitlines()}
        assert {f"python post {i}" for i in (1, 2, 3)} <= texts
        assert "p0 speaking" not in texts
        swarms = [json.loads(line) for line in tidings(homes[2], "swarm", "list", "--json").stdout.splitlines()]
        assert swarms[0]["name"] == "python" and swarms[0]["members"] == 2
        for node in running:
            node.stop()
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
