"""RSS attacks against a real ``tidings run`` process (spec §14.4): its memory and its web API.

The node runs in a subprocess, so its memory is measured honestly from ``/proc/PID/status``: the peak
resident size (``VmHWM``, reset before each attack through ``/proc/PID/clear_refs``) against its idle
resident size (``VmRSS``) once it has started. Meanwhile the web API is asked for the timeline (a
database round trip) every 20 ms.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx
from tidings.node.web import auth
from tidings.storage import bridges as db
from tidings.storage.store import Store

from tests.node.bridges.test_rss_limits import gzip_bomb, rss, streamed
from tests.support.bridges import FeedServer, tidings
from tests.support.nodes import make_home, next_host
from tests.support.processes import TIDINGS

MB = 1024 * 1024


def _status(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` figure in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _polled(home, url: str) -> dict | None:
    with Store(home.store_path) as s:
        found = [x for x in db.sources(s, "rss", "in") if x["source"] == url]
    return found[0] if found and found[0]["last_poll"] else None


def _attack(proc, home, client: httpx.Client, url: str) -> tuple[int, list[float], dict]:
    """Follow ``url`` while the node runs; return its peak memory over idle, the API latencies, the source."""
    Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # reset VmHWM to the current VmRSS
    tidings(home.path, "bridge", "rss", "follow", url)
    latencies: list[float] = []
    deadline = time.monotonic() + 60
    while (src := _polled(home, url)) is None:
        assert time.monotonic() < deadline, "the node never polled the source"
        started = time.monotonic()
        assert client.get("/api/timeline", params={"limit": 20}).status_code == 200
        latencies.append(time.monotonic() - started)
        time.sleep(0.02)
    return _status(proc.pid, "VmHWM"), latencies, src


def _p95(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.95)] if values else 0.0


def test_a_running_node_stays_small_and_answering_under_rss_attacks(tmp_path):
    home, _ = make_home(tmp_path, "victim")
    tidings(home.path, "bridge", "config", "rss", "max_items", "1000")  # a big import: 1,000 posts
    http = f"{next_host()}:"
    http += str(_free_port(http[:-1]))
    log = tmp_path / "node.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [*TIDINGS, "--home", str(home.path), "run", "--listen", f"{next_host()}:0", "--http", http],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("listening on "), log.read_text()
        headers = {"authorization": f"Bearer {auth.load_token(home.path)}"}
        with (
            FeedServer(next_host()) as server,
            httpx.Client(base_url=f"http://{http}", headers=headers) as client,
        ):
            for _ in range(20):  # warm up: the API answers, the node settles
                client.get("/api/timeline", params={"limit": 20})
                time.sleep(0.05)
            bomb = gzip_bomb(300 * MB)
            server.routes["/bomb"] = lambda _h: (200, {"Content-Encoding": "gzip"}, bomb)
            server.routes["/big"] = lambda _h: (200, {}, streamed(50 * MB)())
            many = rss(*range(20_000))
            server.routes["/many"] = lambda _h: (200, {}, many)
            idle = _status(proc.pid, "VmRSS")
            report = {}
            for path in ("/bomb", "/big", "/many"):
                peak, latencies, src = _attack(proc, home, client, server.url(path))
                report[path] = (peak - idle, _p95(latencies), len(latencies), src)
            print({k: (round(v[0] / MB, 1), round(v[1] * 1000), v[2]) for k, v in report.items()})
            for path, (over_idle, p95, samples, _src) in report.items():
                assert over_idle < 100 * MB, (path, over_idle / MB)
                assert p95 < 0.2, (path, p95, samples)
            assert "larger than" in report["/bomb"][3]["last_error"]
            assert report["/big"][3]["last_error"] is None and report["/many"][3]["last_error"] is None
            assert report["/many"][2] >= 10  # the API was asked all through the 1,000-post import
        with Store(home.store_path) as s:
            counts = {
                x["source"].rsplit("/", 1)[1]: s.read(
                    "SELECT count(*) FROM entries WHERE author = ? AND type = 'post'", (x["feed"],)
                )[0][0]
                for x in db.sources(s, "rss", "in")
            }
        assert counts == {"bomb": 0, "big": 1000, "many": 1000}
    finally:
        proc.terminate()
        proc.communicate(timeout=15)
    assert "Traceback" not in log.read_text()
