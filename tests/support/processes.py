"""Real ``tidings`` processes on loopback: run commands, start and stop ``tidings run`` nodes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.nodes import next_host

TIDINGS = [sys.executable, "-m", "tidings.cli.main"]


def tidings(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([*TIDINGS, "--home", str(home), *args], capture_output=True, text=True, timeout=60)
    if check and out.returncode != 0:
        raise AssertionError(f"tidings {' '.join(args)} failed: {out.stderr}")
    return out


class Running:
    """A ``tidings run`` process; stopped with SIGTERM, and checked to stop cleanly."""

    def __init__(self, home: Path, *args: str, listen: str | None = None) -> None:
        self.home = home
        self.proc = subprocess.Popen(
            [
                *TIDINGS,
                "--home",
                str(home),
                "run",
                "--listen",
                listen or f"{next_host()}:0",
                "--http",
                "off",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        assert line.startswith("listening on "), line + self.proc.stderr.read()
        self.address = line.split()[-1]

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=15)
        assert self.proc.returncode == 0, err
        assert "Traceback" not in err, err
        assert not (self.home / "node.json").exists()
        return err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)


def feed(home: Path) -> str:
    return json.loads(tidings(home, "id", "--json").stdout)["feed"]


def log_ids(home: Path, feed_id: str) -> set[str]:
    result = tidings(home, "log", feed_id, "--json", check=False)
    if result.returncode != 0:
        assert "no feed" in result.stderr, result.stderr  # not received yet
        return set()
    out = result.stdout
    return {json.loads(line)["id"] for line in out.splitlines() if line.strip()}


def peers_of(home: Path) -> list[dict]:
    out = tidings(home, "peers", "--json").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def wait_for(predicate, timeout: float) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError("timed out")
        time.sleep(0.05)
    return time.monotonic() - start
