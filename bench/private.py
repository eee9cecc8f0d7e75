"""Private messages benchmark: ingest with boxes that are not ours, and ``tidings dm`` as a whole process.

    python bench/private.py                 # 100k entries (10% boxes), 20 runs of each command
    python bench/private.py --smoke         # 10k entries, 3 runs of each command (CI)
    python bench/private.py --new 50000 --boxes 0.2 --rounds 3

Ingest (issue 19, "reading cost bounded"): ``--new`` entries of ``--feeds`` other feeds arrive in runs of
``--run`` per feed, ``INGEST_BATCH`` per transaction, through the path the running node uses: a store
opened with the node's ``store_options`` (signature checks in 2 worker processes, the home's ``BoxKey``),
``Store.prepare`` of batch k+1 on another thread while ``Store.ingest_prepared`` writes batch k
(``node.net.ingest``). Two streams of the same feeds and length: *plain*, every entry a post, and
*boxes*, where every ``1/--boxes``-th entry of each feed is a private message sealed to 1-3 other feeds
of the benchmark, never to this node, so every box is trial-decrypted and found not ours. Each is run
``--rounds`` times, alternating, into a fresh store; the rate of boxes is printed as a share of the
plain rate of the same round (goal >= 90%), with how long the writing thread waited for the preparing
one (trial decryption runs in the verify worker processes for these bulk batches, on the preparing
thread for small ones: storage/verifier.py). A third figure, the boxes stream into a store without the
key, shows what the larger payloads cost apart from the decryption.

Sending: the wall time of ``tidings dm FEED TEXT`` (interpreter start, imports, key load, store open,
seal, sign, store, open our own slot, exit) and of ``tidings post TEXT`` in the same home, alternating,
``--cli-runs`` times each; p50 and p95 (goal < 300 ms).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import Pool
from pathlib import Path

import msgpack
from ingest import interleave  # the stream as peers send it, as bench/ingest.py builds it
from tidings.node.net.ingest import INGEST_BATCH
from tidings.node.net.node import VERIFY_PROCESSES
from tidings.protocol import (
    BoxKey,
    Entry,
    Message,
    Post,
    SigningKey,
    create_entry,
    encode_content,
    feed_id_text,
    seal,
    skip_target,
)
from tidings.storage.store import Store

OUT = Path(__file__).resolve().parent / "out"
HOME_KEY = SigningKey(hashlib.blake2b(b"tidings-bench-private-home", digest_size=32).digest())


def feed_key(i: int) -> SigningKey:
    return SigningKey(hashlib.blake2b(f"tidings-bench-private-{i}".encode(), digest_size=32).digest())


def _rng(seed: bytes):
    """A deterministic byte stream (the generated data is cached; its randomness need not be secret)."""
    counter = 0

    def draw(n: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < n:
            counter += 1
            out += hashlib.blake2b(seed + counter.to_bytes(8, "big"), digest_size=64).digest()
        return out[:n]

    return draw


def gen_feed(args: tuple[int, int, int, int]) -> tuple[int, list[tuple[bytes, bytes]]]:
    """Entries 1..total of feed ``i``; with ``every`` > 0, each ``every``-th is a box to other feeds."""
    i, total, feeds, every = args
    key, author = feed_key(i), feed_key(i).public_key
    rng = _rng(author)
    hashes: list[bytes] = []
    out: list[tuple[bytes, bytes]] = []
    for seq in range(1, total + 1):
        backlink = hashes[-1] if hashes else None
        if every and seq % every == 0:
            to = tuple(feed_key((i + k * 7 + seq) % feeds).public_key for k in range(1, 2 + seq % 3))
            to = tuple(dict.fromkeys(f for f in to if f != author))
            text = f"a private word {seq} from feed {i}: " + "lorem ipsum " * (2 + seq % 12)
            content = seal(Message(text=text, to=to), author=author, seq=seq, backlink=backlink, rng=rng)
        else:
            content = Post(text=f"post {seq} of feed {i}: " + "some words of a post " * (1 + seq % 9))
        payload = encode_content(content)
        target = skip_target(seq)
        entry = create_entry(
            key,
            seq=seq,
            backlink=backlink,
            skiplink=hashes[target - 1] if target else None,
            timestamp=1_700_000_000_000 + seq * 1000 + i,
            payload=payload,
        )
        hashes.append(entry.hash)
        out.append((entry.raw, payload))
    return i, out


def stream(new: int, feeds: int, every: int, run: int) -> list[tuple[bytes, bytes]]:
    """The cached stream of ``new`` entries (built once in worker processes)."""
    OUT.mkdir(exist_ok=True)
    path = OUT / f"private-n{new}-f{feeds}-b{every}-r{run}.msgpack"
    if path.exists():
        with path.open("rb") as fh:
            return [tuple(x) for x in msgpack.unpack(fh)]
    t0 = time.perf_counter()
    per_feed: list[list[tuple[bytes, bytes]]] = [[] for _ in range(feeds)]
    with Pool(os.cpu_count() or 2) as pool:
        for i, items in pool.imap_unordered(
            gen_feed, [(i, new // feeds, feeds, every) for i in range(feeds)]
        ):
            per_feed[i] = items
    items = interleave(per_feed, run)
    with path.open("wb") as fh:
        msgpack.pack([list(x) for x in items], fh)
    print(f"built {path.name} ({len(items):,} entries) in {time.perf_counter() - t0:.0f} s", flush=True)
    return items


def ingest_run(folder: Path, items: list[tuple[bytes, bytes]], *, key: bool) -> tuple[float, float, int]:
    """Ingest ``items`` into a fresh store as the node does; (entries/s, seconds the writing thread
    waited for the preparing one, boxes recorded as opened or undecryptable)."""
    db = folder / "ingest.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    batches = [items[i : i + INGEST_BATCH] for i in range(0, len(items), INGEST_BATCH)]
    box_key = BoxKey(HOME_KEY) if key else None
    added, waited = 0, 0.0
    with (
        Store(db, verify_processes=VERIFY_PROCESSES, box_key=box_key) as store,
        ThreadPoolExecutor(1) as other,
    ):
        # start the worker processes before the clock, as a syncing node has them
        store.verifier.verify([Entry.decode(raw) for raw, _ in batches[0]])
        store.read("SELECT count(*) FROM entries")
        t0 = time.perf_counter()
        nxt = other.submit(store.prepare, batches[0])
        for i in range(len(batches)):
            t1 = time.perf_counter()
            prepared = nxt.result()
            waited += time.perf_counter() - t1
            if i + 1 < len(batches):
                nxt = other.submit(store.prepare, batches[i + 1])
            result = store.ingest_prepared(prepared)
            if result.rejected:
                sys.exit(f"unexpected refusals: {result.rejected[:3]}")
            added += len(result.added)
        elapsed = time.perf_counter() - t0
        mine = int(store.read("SELECT count(*) FROM messages")[0][0])
    if added != len(items):
        sys.exit(f"only {added} of {len(items)} entries were added")
    return added / elapsed, waited, mine


def ingest(folder: Path, args: argparse.Namespace) -> None:
    every = round(1 / args.boxes)
    plain = stream(args.new, args.feeds, 0, args.run)
    boxes = stream(args.new, args.feeds, every, args.run)
    count = sum(1 for _, payload in boxes if b"\xa4type\xa3box" in payload)
    print(
        f"ingest: {len(plain):,} entries of {args.feeds} feeds, batches of {INGEST_BATCH}, "
        f"{VERIFY_PROCESSES} verify processes; boxes stream: {count:,} boxes ({count / len(boxes):.0%}), none ours"
    )
    shares = []
    for r in range(args.rounds):
        plain_rate, plain_wait, _ = ingest_run(folder, plain, key=True)
        box_rate, box_wait, mine = ingest_run(folder, boxes, key=True)
        nokey_rate, nokey_wait, _ = ingest_run(folder, boxes, key=False)
        if mine:
            sys.exit(f"{mine} boxes were recorded as ours: the stream is wrong")
        shares.append(box_rate / plain_rate)
        print(
            f"round {r + 1}: plain {plain_rate:8,.0f} entries/s   boxes {box_rate:8,.0f} entries/s "
            f"({box_rate / plain_rate:.0%} of plain)   boxes without the key {nokey_rate:8,.0f} entries/s",
            flush=True,
        )
        print(
            f"         writer waited for prepare: plain {plain_wait:.2f} s, boxes {box_wait:.2f} s, "
            f"boxes without the key {nokey_wait:.2f} s",
            flush=True,
        )
    share = statistics.median(shares)
    print(
        f"ingest with 10% boxes not ours: median {share:.0%} of plain (goal >= 90%: {'met' if share >= 0.9 else 'not met'})"
    )


def _exe() -> str | None:
    here = Path(sys.executable).parent / "tidings"
    return str(here) if here.exists() else shutil.which("tidings")


def _p95(times: list[float]) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def cli(folder: Path, runs: int) -> None:
    exe = _exe()
    if exe is None:
        print("tidings dm: skipped (the tidings command is not installed)")
        return
    env = dict(os.environ, TIDINGS_HOME=str(folder / "home"))
    env.pop("TIDINGS_PASSPHRASE", None)
    friend = feed_id_text(feed_key(10_001).public_key)
    for argv in (["init", "--name", "bench"], ["follow", friend]):
        done = subprocess.run([exe, *argv], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"tidings dm: skipped (tidings {argv[0]}: {(done.stderr or done.stdout).strip()[:200]})")
            return
    times: dict[str, list[float]] = {"post": [], "dm": []}
    for i in range(runs):
        for name, argv in (("post", ["post", f"benchmark post {i}"]), ("dm", ["dm", friend, f"private {i}"])):
            t0 = time.perf_counter()
            done = subprocess.run([exe, *argv], env=env, capture_output=True, text=True)
            times[name].append((time.perf_counter() - t0) * 1000)
            if done.returncode != 0:
                sys.exit(
                    f"tidings {name} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[:300]}"
                )
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    bare = (time.perf_counter() - t0) * 1000
    for name, values in times.items():
        p50, p95 = statistics.median(values), _p95(values)
        goal = "met" if p95 < 300 else "not met"
        print(
            f"tidings {name:4s}  p50 {p50:4.0f} ms  p95 {p95:4.0f} ms  max {max(values):4.0f} ms over {runs} runs"
            f"  (goal < 300 ms: {goal})"
        )
    print(f"(bare `python -c pass`: {bare:.0f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--new", type=int, default=100_000, help="entries to ingest")
    parser.add_argument("--feeds", type=int, default=100, help="number of other feeds")
    parser.add_argument("--boxes", type=float, default=0.1, help="share of boxes in the boxes stream")
    parser.add_argument("--run", type=int, default=50, help="consecutive entries of one feed in the stream")
    parser.add_argument(
        "--rounds", type=int, default=2, help="ingest rounds (plain, boxes, boxes without key)"
    )
    parser.add_argument(
        "--cli-runs", type=int, default=20, help="runs of `tidings dm` and `tidings post` (0: skip)"
    )
    parser.add_argument("--smoke", action="store_true", help="small sizes, ~30 s (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.new, args.feeds, args.rounds, args.cli_runs = 10_000, 20, 1, 3
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="tidings-bench-") as tmp:
        ingest(Path(tmp), args)
        if args.cli_runs:
            cli(Path(tmp), args.cli_runs)


if __name__ == "__main__":
    main()
