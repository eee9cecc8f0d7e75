"""Attack benchmark: what a cheap adversary costs a real ``tidings run`` node (issue 15), one section each.

    python bench/attack_web.py                  # every section at full size
    python bench/attack_web.py --smoke          # every section, small and quick, for CI
    python bench/attack_web.py --only web       # one section

Each section starts a victim (a real ``tidings run`` process on 127.0.0.2 with a descriptor limit of
``--nofile``, as a default Linux session has), measures an honest client with and without the attack
in the same run, and prints the attacker's cost beside the victim's. A section is a function
``(args, root) -> None`` in ``SECTIONS``; another attack is another entry there.

``web`` (issue 15 item 7): the attacker opens ``--web-connections`` connections to the web port from
``--web-sources`` loopback addresses, each pipelining ``--web-pipeline`` ``GET /static/app.js``
requests, and never reads. Printed: the attacker's connections accepted and refused, its bytes sent
and CPU; the victim's descriptors (``/proc/PID/fd``), CPU and bytes written; an honest web client's
``GET /api/status`` latency (p50/p95, failures) and an honest follower's ``tidings sync`` time, without
and with the attack; and how long the victim's descriptors take to come back after the attacker leaves.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import resource
import shutil
import socket
import statistics
import struct
import subprocess
import tempfile
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from attack_victim import TIDINGS, Victim
from tidings.node.home import Home
from tidings.protocol import Follow, Post, SigningKey
from tidings.storage.store import Store


# -- the victim process ----------------------------------------------------------------------------------
def build_pair(root: Path, entries: int, feeds: int) -> tuple[Home, Home]:
    """A victim holding ``entries`` posts over ``feeds`` feeds, and an honest follower of them all."""
    victim, follower = Home(root / "victim"), Home(root / "follower")
    kv, kf = victim.init(name="victim"), follower.init(name="follower")
    keys = [SigningKey(os.urandom(32)) for _ in range(feeds)]
    with Store(victim.store_path) as s:
        for i, key in enumerate(keys):
            s.append_many(key, [Post(text=f"feed {i} post {j} lorem ipsum") for j in range(entries // feeds)])
    with Store(follower.store_path) as s:
        s.append_many(kf, [Follow(feed=k.public_key) for k in keys] + [Follow(feed=kv.public_key)])
    return victim, follower


def honest_sync(follower: Home, root: Path, address: str, tag: str) -> float:
    """Seconds for a fresh copy of the follower to ``tidings sync`` everything from the victim."""
    home = root / f"follower-{tag}"
    shutil.copytree(follower.path, home)
    start = time.perf_counter()
    out = subprocess.run(
        [*TIDINGS, "--home", str(home), "sync", address, "--timeout", "60"], capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    return elapsed if out.returncode == 0 else float("nan")


def honest_web(url: str, token: str, requests: int) -> tuple[float, float, int]:
    """p50 and p95 (ms) of ``GET /api/status`` on a fresh connection each, and how many failed."""
    times: list[float] = []
    failed = 0
    for _ in range(requests):
        start = time.perf_counter()
        try:
            with httpx.Client(base_url=url, timeout=5) as client:
                ok = (
                    client.get("/api/status", headers={"authorization": f"Bearer {token}"}).status_code == 200
                )
        except httpx.HTTPError:
            ok = False
        times.append((time.perf_counter() - start) * 1000)
        failed += not ok
    times.sort()
    return statistics.median(times), times[max(0, int(len(times) * 0.95) - 1)], failed


# -- section: the web port (issue 15 item 7) --------------------------------------------------------------
class WebAttacker:
    """Connections that pipeline ``GET /static/app.js`` and never read; counts what it spent."""

    def __init__(self, url: str, sources: list[str], pipeline: int) -> None:
        host, _, port = url.removeprefix("http://").rpartition(":")
        self.target = (host, int(port))
        self.sources = sources
        self.request = f"GET /static/app.js HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode() * pipeline
        self.socks: list[socket.socket] = []
        self.sent = 0
        self.refused = 0
        self.cpu = 0.0

    def attack(self, connections: int) -> None:
        cpu = time.thread_time()
        for i in range(connections):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(2)
            try:
                sock.bind((self.sources[i % len(self.sources)], 0))
                sock.connect(self.target)
                sock.setblocking(False)
                self.sent += sock.send(self.request)
            except OSError:
                sock.close()
                self.refused += 1
                continue
            self.socks.append(sock)
        self.cpu += time.thread_time() - cpu

    def alive(self) -> int:
        """Connections the victim has neither closed nor reset (``TCP_INFO`` state ESTABLISHED)."""
        alive = 0
        for sock in self.socks:
            with contextlib.suppress(OSError):
                alive += sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] == 1
        return alive

    def received(self) -> int:
        """Bytes the victim sent that wait unread in the attacker's buffers (``FIONREAD``)."""
        total = 0
        for sock in self.socks:
            with contextlib.suppress(OSError):
                total += struct.unpack("i", fcntl.ioctl(sock, termios.FIONREAD, b"\0" * 4))[0]
        return total

    def leave(self) -> None:
        for sock in self.socks:
            sock.close()
        self.socks.clear()


def web_section(args: argparse.Namespace, root: Path) -> None:
    victim_home, follower = build_pair(root, args.entries, args.feeds)
    victim = Victim(victim_home, args.nofile)
    try:
        time.sleep(1.0)
        idle_fds = victim.descriptors()
        base_p50, base_p95, base_failed = honest_web(victim.url, victim.token, args.requests)
        base_sync = honest_sync(follower, root, victim.address, "base")
        attacker = WebAttacker(
            victim.url, [f"127.0.3.{i + 1}" for i in range(args.web_sources)], args.web_pipeline
        )
        cpu0 = victim.cpu()
        start = time.perf_counter()
        thread = threading.Thread(target=attacker.attack, args=(args.web_connections,))
        thread.start()
        thread.join()
        time.sleep(2.0)  # the victim's share of the attack alone, before the honest clients come
        cpu, window = victim.cpu() - cpu0, time.perf_counter() - start
        attack_fds = victim.descriptors()
        p50, p95, failed = honest_web(victim.url, victim.token, args.requests)
        sync = honest_sync(follower, root, victim.address, "attacked")
        alive, written = attacker.alive(), attacker.received()
        attacked = time.perf_counter() - start
        attacker.leave()
        left = time.perf_counter()
        recovered = float("nan")
        while time.perf_counter() - left < args.recover:
            if victim.descriptors() <= idle_fds + 5:
                recovered = time.perf_counter() - left
                break
            time.sleep(0.1)
        final_p50, _, final_failed = honest_web(victim.url, victim.token, 5)
        err = victim.stop()
    except BaseException:
        victim.stop()
        raise
    mb = 1024 * 1024
    print(f"== web: {args.web_connections} connections from {args.web_sources} addresses, "
          f"{args.web_pipeline} pipelined GET /static/app.js each, never reading; victim RLIMIT_NOFILE {args.nofile}")  # fmt: skip
    print(f"attacker: {args.web_connections - attacker.refused} connected, {attacker.refused} refused at connect, "
          f"{alive} still open after {attacked:.1f} s; {attacker.sent / mb:.2f} MB sent, CPU {attacker.cpu:.2f} s")  # fmt: skip
    print(f"victim:   descriptors idle {idle_fds} -> attacked {attack_fds}; CPU {cpu:.2f} s in the attack's first {window:.1f} s "
          f"({cpu / window:.0%} of a core); {written / mb:.1f} MB sent to the attacker (unread there)")  # fmt: skip
    print(f"amplification: victim CPU / attacker CPU {cpu / max(attacker.cpu, 1e-3):.1f}x; "
          f"victim bytes sent / attacker bytes sent {written / max(attacker.sent, 1):.1f}x")  # fmt: skip
    print("| honest client | without attack | with attack |")
    print("|---|---:|---:|")
    print(f"| GET /api/status p50 / p95 (ms) | {base_p50:.1f} / {base_p95:.1f} | {p50:.1f} / {p95:.1f} |")
    print(f"| failed requests | {base_failed} of {args.requests} | {failed} of {args.requests} |")
    print(f"| tidings sync of {args.entries} entries (s) | {base_sync:.2f} | {sync:.2f} |")
    print(f"after the attacker left: descriptors back within idle + 5 in {recovered:.1f} s "
          f"(limit {args.recover:.0f} s); honest GET p50 {final_p50:.1f} ms, {final_failed} of 5 failed")  # fmt: skip
    if "Traceback" in err:
        print("victim log had a traceback:\n" + err[-2000:])


#: The attacks, by name; each runs against its own fresh victim.
SECTIONS: dict[str, Callable[[argparse.Namespace, Path], None]] = {"web": web_section}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="small and quick, for CI")
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append", help="run only this section")
    parser.add_argument("--nofile", type=int, default=1024, help="the victim's descriptor limit")
    parser.add_argument("--entries", type=int, default=5000, help="entries the honest follower syncs")
    parser.add_argument("--feeds", type=int, default=20)
    parser.add_argument("--requests", type=int, default=40, help="honest web requests per phase")
    parser.add_argument("--recover", type=float, default=60.0, help="seconds to wait for recovery")
    parser.add_argument("--web-connections", type=int, default=1100)
    parser.add_argument("--web-sources", type=int, default=8, help="attacker source addresses")
    parser.add_argument("--web-pipeline", type=int, default=200, help="requests per connection")
    args = parser.parse_args()
    if args.smoke:
        args.nofile, args.entries, args.feeds, args.requests, args.recover = 256, 500, 5, 10, 20.0
        args.web_connections, args.web_pipeline = 300, 50
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.web_connections + 256
    if soft < need:  # the attacker holds its own sockets
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    for name in args.only or list(SECTIONS):
        with tempfile.TemporaryDirectory(prefix="tidings-attack-") as tmp:
            SECTIONS[name](args, Path(tmp))


if __name__ == "__main__":
    main()
