"""``tidings demo``: real nodes on loopback post and gossip in one swarm, then everything is removed.

The CLI is run as a real process (it registers the command itself until cli/main.py does); ``run_demo``
is also driven in-process. Loopback only, each run bounded in time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
from tidings.node.lab.demo import Snapshot, run_demo

DEMO = [sys.executable, "-m", "tidings.cli.main"]


def _env(parent: Path) -> dict[str, str]:
    return {**os.environ, "TIDINGS_DEMO_DIR": str(parent)}


def _parse(stdout: str) -> tuple[list[dict], dict]:
    lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    assert lines, "no output"
    return lines[:-1], lines[-1]


@pytest.mark.slow
def test_demo_process_spreads_posts_and_leaves_nothing(tmp_path) -> None:
    parent = tmp_path / "demo"
    parent.mkdir()
    out = subprocess.run(
        [*DEMO, "demo", "--nodes", "4", "--seconds", "8", "--json"],
        capture_output=True,
        text=True,
        timeout=90,
        env=_env(parent),
    )
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    ticks, summary = _parse(out.stdout)
    assert len(ticks) >= 5  # a line a second
    for tick in ticks:
        assert set(tick) >= {"t", "nodes", "posted", "dir"}
        assert [n["node"] for n in tick["nodes"]] == [0, 1, 2, 3]
        assert all(set(n) >= {"node", "held", "peers"} for n in tick["nodes"])
    assert any(n["peers"] > 0 for n in ticks[-1]["nodes"])
    assert set(summary) == {"nodes", "posted", "delivered_ratio", "seconds"}
    assert summary["nodes"] == 4
    assert summary["posted"] >= 8  # ~2 a second for 8 s
    assert summary["delivered_ratio"] >= 0.9
    homes = Path(ticks[0]["dir"])
    assert homes.parent == parent
    assert not homes.exists()
    assert list(parent.iterdir()) == []


@pytest.mark.slow
def test_demo_process_stops_cleanly_on_sigint(tmp_path) -> None:
    proc = subprocess.Popen(
        [*DEMO, "demo", "--nodes", "3", "--seconds", "60"],  # no terminal: JSON lines
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(tmp_path),
    )
    try:
        first = json.loads(proc.stdout.readline())
        deadline = time.monotonic() + 30
        while json.loads(proc.stdout.readline())["posted"] < 2:
            assert time.monotonic() < deadline
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    summary = json.loads(rest.splitlines()[-1])
    assert summary["posted"] >= 2
    assert summary["seconds"] < 30
    assert not Path(first["dir"]).exists()
    assert list(tmp_path.iterdir()) == []


def test_demo_node_count_is_checked() -> None:
    out = subprocess.run([*DEMO, "demo", "--nodes", "1"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr


@pytest.mark.slow
async def test_run_demo_in_process(tmp_path) -> None:
    seen: list[Snapshot] = []
    with trio.fail_after(40):
        summary = await run_demo(3, 3.0, seen.append, tick=0.25, parent=tmp_path, seed=7)
    assert summary.nodes == 3
    assert summary.posted >= 3
    assert summary.delivered_ratio >= 0.9
    assert summary.delivered <= summary.expected == summary.posted * 2
    phases = [s.phase for s in seen]
    assert phases[0] == "setup" and phases[-1] == "done"
    assert "posting" in phases
    final = seen[-1]
    assert sum(final.own) == final.posted
    assert all(row.held <= final.posted for row in final.nodes)
    assert {row.name for row in final.nodes} == {"ada", "alan", "barbara"}
    assert not Path(final.dir).exists()
    assert list(tmp_path.iterdir()) == []


async def test_run_demo_stops_early_and_rejects_bad_sizes(tmp_path) -> None:
    with pytest.raises(ValueError):
        await run_demo(1, 1.0, lambda s: None, parent=tmp_path)
    with pytest.raises(ValueError):
        await run_demo(51, 1.0, lambda s: None, parent=tmp_path)
    stop = trio.Event()
    seen: list[Snapshot] = []

    def on_tick(snap: Snapshot) -> None:
        seen.append(snap)
        if snap.posted >= 1:
            stop.set()

    with trio.fail_after(40):
        summary = await run_demo(2, 60.0, on_tick, tick=0.1, stop=stop, parent=tmp_path)
    assert summary.interrupted
    assert summary.posted >= 1
    assert summary.seconds < 40
    assert list(tmp_path.iterdir()) == []
