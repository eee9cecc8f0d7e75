"""Append benchmark: sign + store our own posts in process, and ``tidings post`` as a whole process.

    python bench/append.py                  # 5,000 single appends, 20,000 in batches, 20 CLI runs
    python bench/append.py --smoke          # a few seconds
    python bench/append.py --single 2000 --many 10000 --batch 100 --cli-runs 20

In process: ``Store.append`` (one transaction per entry, as ``tidings post`` does) and
``Store.append_many`` (one transaction per batch), into a store that already holds ``--prefill`` own
entries, entries/s. Whole process: the median wall time of ``tidings post TEXT`` (interpreter start,
imports, key load, store open, sign, store, exit) over ``--cli-runs`` runs on a fresh home; skipped with
a message when the ``tidings`` command is not installed or not working yet.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tidings.protocol import Post, SigningKey
from tidings.storage.store import Store


def in_process(folder: Path, single: int, many: int, batch: int, prefill: int) -> None:
    key = SigningKey(b"\x07" * 32)
    with Store(folder / "store.db") as store:
        for i in range(0, prefill, 1000):
            store.append_many(key, [Post(text=f"prefill {j}") for j in range(i, min(prefill, i + 1000))])
        t0 = time.perf_counter()
        for i in range(single):
            store.append(key, Post(text=f"single append number {i}, a post of a typical short length"))
        rate = single / (time.perf_counter() - t0)
        print(
            f"Store.append       1 entry per transaction  {rate:10,.0f} entries/s  ({1e6 / rate:.0f} µs each)"
        )
        contents = [
            Post(text=f"batched append number {i}, a post of a typical short length") for i in range(many)
        ]
        t0 = time.perf_counter()
        for i in range(0, many, batch):
            store.append_many(key, contents[i : i + batch])
        rate = many / (time.perf_counter() - t0)
        print(f"Store.append_many  {batch} entries per transaction {rate:10,.0f} entries/s")
        print(f"(store holds {store.stats()['entries']:,} entries of 1 feed)")


def cli(folder: Path, runs: int) -> None:
    exe = shutil.which("tidings")
    if exe is None:
        print("tidings post: skipped (the tidings command is not installed)")
        return
    home = folder / "home"
    env = dict(os.environ, TIDINGS_HOME=str(home))
    env.pop("TIDINGS_PASSPHRASE", None)
    init = subprocess.run([exe, "init", "--name", "bench"], env=env, capture_output=True, text=True)
    if init.returncode != 0:
        print(f"tidings post: skipped (tidings init failed: {(init.stderr or init.stdout).strip()[:200]})")
        return
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        done = subprocess.run([exe, "post", f"benchmark post {i}"], env=env, capture_output=True, text=True)
        times.append((time.perf_counter() - t0) * 1000)
        if done.returncode != 0:
            print(
                f"tidings post: skipped (exit {done.returncode}: {(done.stderr or done.stdout).strip()[:200]})"
            )
            return
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    bare = (time.perf_counter() - t0) * 1000
    print(
        f"tidings post       median {statistics.median(times):.0f} ms, min {min(times):.0f} ms, "
        f"max {max(times):.0f} ms over {runs} runs  (bare `python -c pass`: {bare:.0f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--single", type=int, default=5_000, help="Store.append calls")
    parser.add_argument("--many", type=int, default=20_000, help="entries appended with append_many")
    parser.add_argument("--batch", type=int, default=1_000, help="entries per append_many call")
    parser.add_argument("--prefill", type=int, default=10_000, help="own entries stored before timing")
    parser.add_argument("--cli-runs", type=int, default=20, help="runs of `tidings post` (0: skip)")
    parser.add_argument("--smoke", action="store_true", help="small sizes, a few seconds")
    args = parser.parse_args()
    if args.smoke:
        args.single, args.many, args.prefill, args.cli_runs = 500, 2_000, 1_000, 3
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="tidings-bench-") as tmp:
        in_process(Path(tmp), args.single, args.many, args.batch, args.prefill)
        if args.cli_runs:
            cli(Path(tmp), args.cli_runs)


if __name__ == "__main__":
    main()
