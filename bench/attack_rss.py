"""Attacks on a running node, side by side with honest traffic: what each costs the attacker and the victim.

    python bench/attack_rss.py            # every section at full size
    python bench/attack_rss.py --smoke    # CI: smaller attacks, same code paths
    python bench/attack_rss.py rss_gzip_bomb rss_slow_drip     # only these sections

Each section is one self-contained function ``section_NAME(smoke) -> list[Row]``: it starts its own
victim (a real ``tidings run`` process on 127.x), runs one attack and, where it applies, the honest
case beside it, and returns rows that ``main`` prints in one table. The victim's figures come from
``/proc/PID``: CPU (user + system) during the attack, peak resident memory over its idle level
(``VmHWM`` after a reset through ``clear_refs``, minus ``VmRSS`` before), and the p95 latency of its web
API (a timeline read, one database round trip) asked every 20 ms meanwhile. The attacker's figures are
the bytes it sent and the CPU its server threads spent.

RSS sections (spec §14.4, §14.6): a gzip bomb, a 50 MB feed, a 20,000-item feed, a slow drip, and a
redirect to another internal address, each beside an honest 50-item feed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

MB = 1024 * 1024
TIDINGS = [sys.executable, "-m", "tidings.cli.main"]


@dataclass
class Row:
    attack: str
    attacker_bytes: int
    attacker_cpu: float  # seconds
    victim_cpu: float  # seconds
    victim_peak_mb: float  # over idle
    seconds: float  # the victim's time on it (first request to outcome recorded)
    api_p95_ms: float
    outcome: str


# -- shared helpers of the RSS sections -------------------------------------------------------------------
class _Server:
    """An HTTP server on its own 127.x address that counts what it sends and its threads' CPU."""

    def __init__(self, host: str) -> None:
        self.routes: dict[str, Callable[[], tuple[int, dict[str, str], Any]]] = {}
        self.sent = 0
        self.cpu = 0.0
        self.hits: list[tuple[str, float]] = []
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                started = time.thread_time()
                server.hits.append((self.path, time.monotonic()))
                status, headers, body = server.routes.get(self.path, lambda: (404, {}, b""))()
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    if isinstance(body, bytes):
                        self.send_header("Content-Length", str(len(body)))
                        body = [body[i : i + 65536] for i in range(0, len(body), 65536)]
                    self.end_headers()
                    for chunk in body:
                        self.wfile.write(chunk)
                        with lock:  # counted as it goes: the victim may hang up at any point
                            server.sent += len(chunk)
                except OSError:
                    pass  # the victim hung up: what it cut off is not sent
                finally:
                    with lock:
                        server.cpu += time.thread_time() - started

            def log_message(self, *args: Any) -> None:
                pass

        class Quiet(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self.httpd = Quiet((host, 0), Handler)
        self.host = host
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _rss_item(n: int) -> bytes:
    return (
        b'<item><title>Item %d</title><link>https://feed.example/%d</link><guid isPermaLink="false">i-%d</guid>'
        b"<description>Body of item %d, a paragraph of text as a blog would have it.</description></item>"
        % (n, n, n, n)
    )


_RSS_HEAD = b'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Feed</title>'
_RSS_TAIL = b"</channel></rss>"


def _rss(count: int) -> bytes:
    return _RSS_HEAD + b"".join(_rss_item(n) for n in range(count)) + _RSS_TAIL


def _proc_figure(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Victim:
    """A ``tidings run`` process with its web API, in a fresh home."""

    def __init__(self, root: Path, host: int, settings: dict[str, str]) -> None:
        self.home = root / "victim"
        self._cli("init", "--name", "victim")
        for key, value in settings.items():
            self._cli("bridge", "config", "rss", key, value)
        web_host = f"127.0.9.{host}"
        with socket.socket() as s:
            s.bind((web_host, 0))
            web = f"{web_host}:{s.getsockname()[1]}"
        self.log = (root / "node.log").open("w")
        self.proc = subprocess.Popen(
            [*TIDINGS, "--home", str(self.home), "run", "--listen", f"127.0.8.{host}:0", "--http", web],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().startswith("listening on ")
        token = (self.home / "web.token").read_text().strip()
        self.api = httpx.Client(base_url=f"http://{web}", headers={"authorization": f"Bearer {token}"})
        for _ in range(10):
            self.api.get("/api/timeline", params={"limit": 20})
            time.sleep(0.05)
        time.sleep(1.0)
        self.idle = _proc_figure(self.proc.pid, "VmRSS")

    def _cli(self, *args: str) -> str:
        out = subprocess.run([*TIDINGS, "--home", str(self.home), *args], capture_output=True, text=True)
        return out.stdout

    def _source(self, url: str) -> dict[str, Any] | None:
        from tidings.storage import bridges as db
        from tidings.storage.store import Store

        with Store(self.home / "store.db") as s:
            found = [x for x in db.sources(s, "rss", "in") if x["source"] == url]
        return found[0] if found and found[0]["last_poll"] else None

    def posts_of(self, url: str) -> int:
        from tidings.storage import bridges as db
        from tidings.storage.store import Store

        with Store(self.home / "store.db") as s:
            (src,) = [x for x in db.sources(s, "rss", "in") if x["source"] == url]
            return int(
                s.read("SELECT count(*) FROM entries WHERE author = ? AND type = 'post'", (src["feed"],))[0][
                    0
                ]
            )

    def follow(self, name: str, server: _Server, path: str) -> Row:
        """Follow ``path`` on ``server`` and measure until the node recorded its poll."""
        url = server.url(path)
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")  # VmHWM back to VmRSS
        sent, attacker_cpu, cpu = server.sent, server.cpu, _proc_cpu(self.proc.pid)
        self._cli("bridge", "rss", "follow", url)
        latencies: list[float] = []
        deadline = time.monotonic() + 120
        while (src := self._source(url)) is None and time.monotonic() < deadline:
            started = time.monotonic()
            self.api.get("/api/timeline", params={"limit": 20})
            latencies.append(time.monotonic() - started)
            time.sleep(0.02)
        ended = time.monotonic()
        first = min((t for p, t in server.hits if p == path), default=ended)
        time.sleep(0.3)  # the attacker's thread notices the hang-up
        error = (src or {}).get("last_error")
        latencies.sort()
        return Row(
            attack=name,
            attacker_bytes=server.sent - sent,
            attacker_cpu=server.cpu - attacker_cpu,
            victim_cpu=_proc_cpu(self.proc.pid) - cpu,
            victim_peak_mb=(_proc_figure(self.proc.pid, "VmHWM") - self.idle) / MB,
            seconds=ended - first,
            api_p95_ms=latencies[int(len(latencies) * 0.95)] * 1000 if latencies else 0.0,
            outcome=f"refused: {error.replace(url + ': ', '')[:64]}"
            if error
            else f"{self.posts_of(url)} posts",
        )

    def close(self) -> None:
        self.api.close()
        self.proc.terminate()
        self.proc.communicate(timeout=15)
        self.log.close()


_hosts = iter(range(2, 250))


@contextlib.contextmanager
def _rss_victim(settings: dict[str, str] | None = None) -> Iterator[tuple[_Victim, _Server]]:
    n = next(_hosts)
    with tempfile.TemporaryDirectory(prefix="tidings-attacks-") as root:
        server = _Server(f"127.0.7.{n}")
        victim = _Victim(Path(root), n, settings or {})
        try:
            yield victim, server
        finally:
            victim.close()
            server.close()


def _honest(victim: _Victim, server: _Server) -> Row:
    honest = _rss(50)
    server.routes["/honest"] = lambda: (200, {"Content-Type": "application/rss+xml"}, honest)
    return victim.follow("honest feed, 50 items", server, "/honest")


# -- RSS sections ---------------------------------------------------------------------------------------
def section_rss_gzip_bomb(smoke: bool) -> list[Row]:
    """A gzip bomb: ~1,000:1 compressed zeros, served as a feed."""
    decoded = (30 if smoke else 300) * MB
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb = b"".join(z.compress(bytes(MB)) for _ in range(decoded // MB)) + z.flush()
    with _rss_victim() as (victim, server):
        server.routes["/bomb"] = lambda: (200, {"Content-Encoding": "gzip"}, bomb)
        return [
            _honest(victim, server),
            victim.follow(f"gzip bomb, {decoded // MB} MB decoded", server, "/bomb"),
        ]


def section_rss_big_feed(smoke: bool) -> list[Row]:
    """A feed of 50 MB: items without end, and one item that is 50 MB of text."""
    total = (10 if smoke else 50) * MB

    def items() -> Iterator[bytes]:
        yield _RSS_HEAD
        n, sent = 0, 0
        while sent < total:
            part = b"".join(_rss_item(n + i) for i in range(300))
            n, sent = n + 300, sent + len(part)
            yield part
        yield _RSS_TAIL

    def one() -> Iterator[bytes]:
        yield _RSS_HEAD + b"<item><title>x</title><description>"
        for _ in range(total // 65536):
            yield b"a" * 65536

    with _rss_victim() as (victim, server):
        server.routes["/items"] = lambda: (200, {}, items())
        server.routes["/one"] = lambda: (200, {}, one())
        return [
            victim.follow(f"{total // MB} MB feed of items", server, "/items"),
            victim.follow(f"{total // MB} MB feed, one item", server, "/one"),
        ]


def section_rss_many_items(smoke: bool) -> list[Row]:
    """A 3 MB feed of 20,000 items, with the default max_items (100) and with max_items = 1,000."""
    count = 5_000 if smoke else 20_000
    doc = _rss(count)
    rows = []
    for max_items in ("100",) if smoke else ("100", "1000"):
        with _rss_victim({"max_items": max_items}) as (victim, server):
            server.routes["/many"] = lambda: (200, {}, doc)
            name = f"{len(doc) / MB:.1f} MB, {count:,} items, max_items {max_items}"
            rows.append(victim.follow(name, server, "/many"))
    return rows


def section_rss_slow_drip(smoke: bool) -> list[Row]:
    """A server that sends one byte every 0.2 s, forever."""

    def drip() -> Iterator[bytes]:
        yield _RSS_HEAD
        for _ in range(100_000):
            time.sleep(0.2)
            yield b" "

    with _rss_victim({"timeout": "3"} if smoke else {}) as (victim, server):
        server.routes["/drip"] = lambda: (200, {}, drip())
        row = victim.follow("slow drip, 5 bytes/s", server, "/drip")
        time.sleep(2.0)  # a round or two more: the source is backed off, not fetched again
        row.outcome += f"; fetched {sum(1 for p, _ in server.hits if p == '/drip')}x"
        return [row]


def section_rss_internal_redirect(smoke: bool) -> list[Row]:
    """A followed feed that redirects to another internal address (a service only the node reaches)."""
    with _rss_victim() as (victim, server):
        inside = _Server(f"127.0.6.{server.host.rsplit('.', 1)[1]}")
        try:
            secret = _rss(3)
            inside.routes["/secret"] = lambda: (200, {}, secret)
            server.routes["/evil"] = lambda: (302, {"Location": inside.url("/secret")}, b"")
            row = victim.follow("redirect to another 127.x", server, "/evil")
            row.outcome += f"; internal hits {len(inside.hits)}"
            return [row]
        finally:
            inside.close()


SECTIONS: dict[str, Callable[[bool], list[Row]]] = {
    "rss_gzip_bomb": section_rss_gzip_bomb,
    "rss_big_feed": section_rss_big_feed,
    "rss_many_items": section_rss_many_items,
    "rss_slow_drip": section_rss_slow_drip,
    "rss_internal_redirect": section_rss_internal_redirect,
}


def _print(rows: list[Row]) -> None:
    head = (
        f"{'attack':<42} {'attacker bytes':>14} {'att. CPU s':>10} {'victim CPU s':>12} "
        f"{'peak MB':>8} {'victim s':>8} {'API p95 ms':>10}  outcome"
    )
    print(head)
    for r in rows:
        print(
            f"{r.attack:<42} {r.attacker_bytes:>14,} {r.attacker_cpu:>10.3f} {r.victim_cpu:>12.3f} "
            f"{r.victim_peak_mb:>8.1f} {r.seconds:>8.2f} {r.api_p95_ms:>10.0f}  {r.outcome}"
        )
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="small attacks, for CI")
    parser.add_argument("sections", nargs="*", choices=[[], *SECTIONS], help="sections to run (default: all)")
    args = parser.parse_args()
    for name in args.sections or list(SECTIONS):
        print(f"== {name}")
        _print(SECTIONS[name](args.smoke))


if __name__ == "__main__":
    main()
