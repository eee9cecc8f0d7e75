"""Replication benchmark: a full sync over loopback, live latency, and the receiver's peak memory.

    python bench/replicate.py                  # 100k entries over 100 feeds (goal >= 20k entries/s)
    python bench/replicate.py --smoke          # 10k entries over 20 feeds, a few seconds, for CI
    python bench/replicate.py --entries 100000 --feeds 100 --posts 30

Node B (a real ``tidings run`` process) holds ``--entries`` entries over ``--feeds`` feeds; node A, a
fresh home that follows those feeds, runs ``tidings sync B`` as a real process. Printed: entries/s end to
end (process start to exit, handshake, streaming, verification, storage), beside the bare Ed25519
verify rate measured in the same run (PyNaCl, 1 and 2 threads); A's peak RSS during the sync (from
``wait4``); then, with A running as a node connected to B, the latency from ``tidings post`` on B
(its entry's timestamp) to the entry being stored on A, p50/p95/max over ``--posts`` posts.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nacl.bindings
from tidings.node.home import Home
from tidings.protocol import Follow, Post, SigningKey
from tidings.storage.store import Store

TIDINGS = [sys.executable, "-m", "tidings.cli.main"]


def bare_verify_rate(threads: int, n: int = 20000) -> float:
    key = SigningKey(bytes(32))
    msgs = [os.urandom(150) for _ in range(256)]
    signed = [(key.sign(m) + m) for m in msgs]
    pk = key.public_key

    def work(count: int) -> None:
        for i in range(count):
            nacl.bindings.crypto_sign_open(signed[i % 256], pk)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, [n // threads] * threads))
    return n / (time.perf_counter() - start)


def build(root: Path, entries: int, feeds: int) -> tuple[Home, Home, list[SigningKey]]:
    hb, ha = Home(root / "b"), Home(root / "a")
    kb, ka = hb.init(name="b"), ha.init(name="a")
    keys = [SigningKey(os.urandom(32)) for _ in range(feeds)]
    per = entries // feeds
    t = time.perf_counter()
    with Store(hb.store_path) as s:
        for i, key in enumerate(keys):
            s.append_many(key, [Post(text=f"feed {i} post {j} " + "lorem ipsum " * 8) for j in range(per)])
    with Store(ha.store_path) as s:
        s.append_many(ka, [Follow(feed=k.public_key) for k in keys] + [Follow(feed=kb.public_key)])
    print(f"built B with {per * feeds} entries over {feeds} feeds in {time.perf_counter() - t:.1f} s")
    return ha, hb, keys


def start_node(home: Home, *args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [*TIDINGS, "--home", str(home.path), "run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on"):
        raise SystemExit(f"node did not start: {line}{proc.stderr.read() if proc.stderr else ''}")
    return proc, line.split()[-1]


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a running process (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)


def stored_at(home: Home, entry_hash: bytes) -> bool:
    with Store(home.store_path) as s:
        return bool(s.read("SELECT 1 FROM entries WHERE hash = ?", (entry_hash,)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--feeds", type=int, default=100)
    parser.add_argument("--posts", type=int, default=30, help="live posts for the latency figure")
    parser.add_argument("--smoke", action="store_true", help="small and quick, for CI")
    args = parser.parse_args()
    if args.smoke:
        args.entries, args.feeds, args.posts = 10_000, 20, 5
    print(
        f"bare Ed25519 verify (PyNaCl): 1 thread {bare_verify_rate(1):,.0f}/s, 2 threads {bare_verify_rate(2):,.0f}/s"
    )
    with tempfile.TemporaryDirectory(prefix="tidings-bench-") as tmp:
        ha, hb, _ = build(Path(tmp), args.entries, args.feeds)
        proc_b, addr_b = start_node(hb, "--listen", "127.0.0.2:0")
        try:
            b_cpu = process_cpu(proc_b.pid)
            start = time.perf_counter()
            sync = subprocess.Popen(
                [*TIDINGS, "--home", str(ha.path), "sync", addr_b, "--json"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            _, status, usage = os.wait4(sync.pid, 0)
            elapsed = time.perf_counter() - start
            b_cpu = process_cpu(proc_b.pid) - b_cpu
            out = sync.stdout.read() if sync.stdout else ""
            err = sync.stderr.read() if sync.stderr else ""
            if status != 0:
                raise SystemExit(f"sync failed: {err}")
            summary = json.loads(out)
            received = summary["received"]
            print(
                f"sync: {received} entries in {elapsed:.2f} s = {received / elapsed:,.0f} entries/s end to end "
                f"(whole 'tidings sync' process); peak RSS of A {usage.ru_maxrss / 1024:.0f} MB"
            )
            cpu = usage.ru_utime + usage.ru_stime
            print(
                f"CPU of A: {cpu:.2f} s ({cpu / elapsed:.2f} cores), {1e6 * cpu / max(received, 1):.0f} µs per entry; "
                f"of B meanwhile: {b_cpu:.2f} s ({1e6 * b_cpu / max(received, 1):.0f} µs per entry)"
            )
            # live latency: A runs as a node connected to B; B posts with the CLI
            proc_a, _ = start_node(ha, "--listen", "127.0.0.3:0", "--peer", addr_b)
            try:
                time.sleep(1.0)
                latencies = []
                for i in range(args.posts):
                    out = subprocess.run(
                        [*TIDINGS, "--home", str(hb.path), "post", f"live {i}", "--json"],
                        capture_output=True,
                        text=True,
                        check=True,
                    ).stdout
                    posted = json.loads(out)
                    from tidings.protocol import EntryId

                    h = EntryId.parse(posted["id"]).hash
                    deadline = time.time() + 10
                    while not stored_at(ha, h):
                        if time.time() > deadline:
                            raise SystemExit("live post did not arrive in 10 s")
                        time.sleep(0.005)
                    latencies.append(time.time() * 1000 - posted["ts"])
                latencies.sort()
                p95 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))]
                print(
                    f"live latency (post committed on B -> stored on A) over {len(latencies)} posts: "
                    f"p50 {statistics.median(latencies):.0f} ms, p95 {p95:.0f} ms, max {latencies[-1]:.0f} ms"
                )
            finally:
                stop(proc_a)
        finally:
            stop(proc_b)


if __name__ == "__main__":
    main()
