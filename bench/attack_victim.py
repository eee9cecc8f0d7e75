"""The victim of the attack benchmarks: a real ``tidings run`` process serving its web API.

Shared by ``bench/attack_replay.py`` and ``bench/attack_web.py``. Its stderr goes to a file, not a pipe (a
full pipe would stall the victim); its CPU comes from ``/proc``.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

from tidings.node.home import Home

TIDINGS = [sys.executable, "-m", "tidings.cli.main"]
VICTIM_HOST = "127.0.0.2"


class Victim:
    """``tidings run`` on ``VICTIM_HOST`` (gossip and web on free ports); ``nofile`` lowers its
    descriptor limit (``RLIMIT_NOFILE``) before it starts."""

    def __init__(self, home: Home, nofile: int | None = None) -> None:
        def limit() -> None:
            if nofile is not None:
                _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

        self.home = home
        self.log = home.path / "victim.log"
        self.proc = subprocess.Popen(
            [*TIDINGS, "--home", str(home.path), "run", "--listen", f"{VICTIM_HOST}:0",
             "--http", f"{VICTIM_HOST}:0"],
            stdout=subprocess.PIPE, stderr=self.log.open("w"), text=True, preexec_fn=limit,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("listening on"):
            raise SystemExit(f"victim did not start: {line}{self.log.read_text()}")
        self.address = line.split()[-1]
        deadline = time.monotonic() + 20
        while True:
            info = json.loads(home.node_file.read_text()) if home.node_file.exists() else {}
            url = info.get("services", {}).get("web", {}).get("url")
            if url:
                break
            if time.monotonic() > deadline:
                raise SystemExit("the victim's web service did not start")
            time.sleep(0.05)
        self.url: str = url
        self.token = (home.path / "web.token").read_text().strip()

    def descriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def cpu(self) -> float:
        """CPU seconds (user + system) of the victim so far (Linux ``/proc``)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate(timeout=10)
        return self.log.read_text()
