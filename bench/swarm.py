"""Swarm benchmark: N real ``tidings run`` processes on loopback, all in one swarm, every node posting.

    python bench/swarm.py 50              # 50 nodes, 2 posts each
    python bench/swarm.py 50 --posts 4 --interval 0.05 --seed 1
    python bench/swarm.py --smoke         # 8 nodes, 1 post each: ~30 s, for CI

Each node is its own ``tidings run`` process with its own home, on its own 127.1.x.y address (real TCP
and UDP sockets, a real SQLite store, the real DHT). Node 0 starts first and is the bootstrap of the
others; each node follows 5 random others and all join swarm ``bench``; ``[limits]`` in each home's
config.toml shortens the discovery intervals (``node.swarmlab.LAB_LIMITS``), as a benchmark lasts a
minute, not days. Once every node knows every member (its ``node.json`` counters show N wanted feeds)
and the initial sync is over, the benchmark appends ``--posts`` posts to each node's store, in random
order, one every ``--interval`` seconds, the way ``tidings post`` does from another process (the node
notices within its 0.1 s poll). Printed:

- delivery: stored copies of the posts on nodes other than their author, over ``posts * (N - 1)``;
- latency of each delivery (appended to stored on that node, the store's ``received`` time) and of
  each post (to its last delivery), p50/p95/max, on the machine's one clock;
- copies sent per delivery: entries sent over all connections while posting (the nodes' counters),
  over deliveries (1.0 is each node receiving each post once);
- per-node CPU (percent of one core while posting) and memory (RSS), mean and max over the processes.

Goals (issue 5) at N = 50: 100 % delivery, post p95 < 2 s, copies per delivery <= 3.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tidings.node.lab.swarmlab import LAB_LIMITS, SwarmLab
from tidings.protocol import Post
from tidings.storage.store import Store

TICK = os.sysconf("SC_CLK_TCK")
#: The defaults of a long-running node for what costs CPU all the time (swarm lookups, the DHT).
BENCH_LIMITS = {"swarm_interval": 30.0, "discovery_interval": 1.0, "dht_timeout": 1.0}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def counters(home: Path) -> dict[str, int]:
    try:
        return dict(json.loads((home / "node.json").read_text()).get("counters", {}))
    except (OSError, ValueError):
        return {}


def wait_for(predicate, timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def start(home: Path, listen: str, bootstrap: str | None) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "tidings.cli.main", "--home", str(home), "run", "--listen", listen]
    cmd += ["--swarm", "bench", "--http", "off"]
    if bootstrap:
        cmd += ["--bootstrap", bootstrap]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def bench(args: argparse.Namespace, root: Path) -> dict[str, object]:
    n = args.nodes
    lab = SwarmLab(root, n, swarm="bench", follows=min(5, n - 1), seed=args.seed)
    lab.make_homes()
    limits = "".join(f"{k} = {v}\n" for k, v in {**LAB_LIMITS, **BENCH_LIMITS}.items())
    for m in lab.members:
        m.home.config_path.write_text("[limits]\n" + limits)
    homes = [m.home.path for m in lab.members]
    procs: list[subprocess.Popen[str]] = []
    try:
        t0 = time.monotonic()
        first = start(homes[0], f"{lab.members[0].host}:0", None)
        procs.append(first)
        assert first.stdout is not None
        line = first.stdout.readline()
        if not line.startswith("listening on "):
            raise SystemExit(f"node 0 did not start: {line!r}")
        bootstrap = line.split()[-1]
        for m in lab.members[1:]:
            procs.append(start(m.home.path, f"{m.host}:0", bootstrap))
        if not wait_for(lambda: all((h / "node.json").exists() for h in homes), 120):
            raise SystemExit("not every node started within 120 s")
        print(f"# {n} nodes started in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        t1 = time.monotonic()
        wait_for(lambda: all(counters(h).get("wanted", 0) >= n for h in homes), args.warmup, 0.5)
        knowing = sum(1 for h in homes if counters(h).get("wanted", 0) >= n)
        last: list[int] = []
        for _ in range(60):  # the initial sync is over when no counter moves for 2 s
            time.sleep(2.0)
            now = [counters(h).get("sent_entries", 0) for h in homes]
            if now == last:
                break
            last = now
        print(
            f"# {knowing}/{n} nodes know the whole swarm; ready after {time.monotonic() - t1:.1f} s",
            file=sys.stderr,
        )
        conns = [counters(h).get("connections", 0) for h in homes]
        sent0 = sum(counters(h).get("sent_entries", 0) for h in homes)
        dups0 = sum(counters(h).get("duplicates", 0) for h in homes)
        cpu0 = [cpu_seconds(p.pid) for p in procs]
        wall0 = time.monotonic()
        rng = random.Random(args.seed)
        order = [i for i in range(n) for _ in range(args.posts)]
        rng.shuffle(order)
        posts: dict[bytes, tuple[int, float]] = {}
        for i in order:
            m = lab.members[i]
            with Store(m.home.store_path) as store:
                entry = store.append(m.key, Post(text=f"post from node {i}"))
            posts[entry.hash] = (i, entry.timestamp / 1000)
            time.sleep(args.interval)
        readers = [sqlite3.connect(f"file:{m.home.store_path}?mode=ro", uri=True) for m in lab.members]
        arrivals: dict[bytes, dict[int, float]] = {}

        def collect() -> bool:
            marks = ",".join("?" * len(posts))
            for i, db in enumerate(readers):
                for h, received in db.execute(
                    f"SELECT hash, received FROM entries WHERE hash IN ({marks})", list(posts)
                ):
                    author, at = posts[bytes(h)]
                    if author != i:
                        arrivals.setdefault(bytes(h), {})[i] = max(0.0, received / 1000 - at)
            return sum(len(v) for v in arrivals.values()) == len(posts) * (n - 1)

        delivered_all = wait_for(collect, args.drain, 0.25)
        time.sleep(1.5)  # counters are written every second
        wall = time.monotonic() - wall0
        cpu = [(cpu_seconds(p.pid) - c0) / wall * 100 for p, c0 in zip(procs, cpu0, strict=True)]
        memory = [rss_mb(p.pid) for p in procs]
        sent = sum(counters(h).get("sent_entries", 0) for h in homes) - sent0
        dups = sum(counters(h).get("duplicates", 0) for h in homes) - dups0
        repairs = sum(counters(h).get("repairs", 0) for h in homes)
        for db in readers:
            db.close()
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    deliveries = [t for where in arrivals.values() for t in where.values()]
    post_latency = [max(where.values()) for where in arrivals.values() if len(where) == n - 1]
    expected = len(posts) * (n - 1)
    return {
        "nodes": n,
        "posts": len(posts),
        "connections_mean": round(statistics.mean(conns), 1),
        "delivery": round(len(deliveries) / expected, 4) if expected else 1.0,
        "all_delivered": delivered_all,
        "delivery_p50_s": round(pct(deliveries, 0.5), 3),
        "delivery_p95_s": round(pct(deliveries, 0.95), 3),
        "post_p50_s": round(pct(post_latency, 0.5), 3),
        "post_p95_s": round(pct(post_latency, 0.95), 3),
        "post_max_s": round(max(post_latency), 3) if post_latency else None,
        "copies_per_delivery": round(sent / len(deliveries), 2) if deliveries else None,
        "duplicates_per_delivery": round(dups / len(deliveries), 2) if deliveries else None,
        "hole_repairs": repairs,
        "cpu_per_node_pct_mean": round(statistics.mean(cpu), 2),
        "cpu_per_node_pct_max": round(max(cpu), 2),
        "rss_per_node_mb_mean": round(statistics.mean(memory), 1),
        "rss_per_node_mb_max": round(max(memory), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("nodes", nargs="?", type=int, default=50)
    parser.add_argument("--posts", type=int, default=2, help="posts per node (default 2)")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between posts (default 0.1)")
    parser.add_argument("--warmup", type=float, default=120.0, help="most seconds to wait for discovery")
    parser.add_argument("--drain", type=float, default=30.0, help="most seconds to wait for delivery")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="8 nodes, 1 post each (CI)")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of text")
    args = parser.parse_args()
    if args.smoke:
        args.nodes, args.posts = 8, 1
    if args.nodes < 2:
        parser.error("at least 2 nodes")
    with tempfile.TemporaryDirectory(prefix="tidings-swarm-") as root:
        result = bench(args, Path(root))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:26} {value}")
    if args.smoke and result["delivery"] != 1.0:
        sys.exit("smoke run: not every post was delivered")


if __name__ == "__main__":
    main()
