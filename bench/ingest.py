"""Ingest benchmark: verify + store entries of other feeds into a large store, beside bare verify rates.

    python bench/ingest.py                 # 1M existing entries (built once, cached in bench/out/), 100k new
    python bench/ingest.py --smoke         # ~20 s, for CI
    python bench/ingest.py --existing 200000 --new 50000 --batch 1000 --feeds 500

The store is built once from entries of ``--feeds`` other feeds (signed with tidings.protocol, stored
with ``Store.ingest``, so projections and the FTS index are filled as in real use) and cached under
bench/out/. Each run copies it, then ingests ``--new`` entries that continue those feeds (so backlinks
and lipmaa skip links point at stored entries) in batches of ``--batch``, as a node receives them from
peers: runs of ``--run`` consecutive entries of one feed, feeds interleaved, once with ``Store.ingest``
per batch and once pipelined as the node does it (``Store.prepare`` of the next batch on another thread
while ``Store.ingest_prepared`` writes this one). Prints entries/s and the bare Ed25519 verify rates of
``cryptography`` and PyNaCl measured in the same run, on 1 and 2 threads.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import Pool
from pathlib import Path

import msgpack
import nacl.bindings
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from tidings.protocol import (
    Entry,
    Follow,
    Post,
    Reaction,
    Repost,
    SigningKey,
    create_entry,
    encode_content,
    skip_target,
)
from tidings.storage.store import Store

OUT = Path(__file__).resolve().parent / "out"
WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
    "garden",
    "river",
    "mountain",
    "coffee",
    "morning",
    "evening",
    "network",
    "gossip",
    "feed",
    "entry",
    "signed",
    "log",
    "thread",
    "reply",
]


def feed_key(i: int) -> SigningKey:
    return SigningKey(hashlib.blake2b(f"tidings-bench-feed-{i}".encode(), digest_size=32).digest())


def content_for(i: int, seq: int, prev: list[bytes]):
    """A deterministic mix: mostly posts of 40-250 bytes, some reactions, reposts and follows."""
    r = (i * 7919 + seq * 104729) % 100
    if r < 8 and prev:
        return Reaction(target=prev[-1], emoji="+1")
    if r < 12 and prev:
        return Repost(target=prev[-1])
    if r < 15:
        return Follow(feed=feed_key((i + seq) % 997).public_key)
    n = 6 + (i + seq) % 30
    words = [WORDS[(i * 31 + seq * 17 + k * 13) % len(WORDS)] for k in range(n)]
    return Post(text=f"post {seq} of feed {i}: " + " ".join(words))


def gen_feed(args: tuple[int, int, int]) -> tuple[int, list[tuple[bytes, bytes]]]:
    """Entries 1..total of feed ``i``, raw and payload."""
    i, total, ts0 = args
    key = feed_key(i)
    hashes: list[bytes] = []
    out: list[tuple[bytes, bytes]] = []
    for seq in range(1, total + 1):
        payload = encode_content(content_for(i, seq, hashes[-3:]))
        target = skip_target(seq)
        entry = create_entry(
            key,
            seq=seq,
            backlink=hashes[-1] if hashes else None,
            skiplink=hashes[target - 1] if target else None,
            timestamp=ts0 + seq * 1000 + i,
            payload=payload,
        )
        hashes.append(entry.hash)
        out.append((entry.raw, payload))
    return i, out


def interleave(per_feed: list[list[tuple[bytes, bytes]]], run: int) -> list[tuple[bytes, bytes]]:
    """Runs of ``run`` consecutive entries of each feed in turn, as peers stream them."""
    out: list[tuple[bytes, bytes]] = []
    pos = [0] * len(per_feed)
    while True:
        progressed = False
        for f, items in enumerate(per_feed):
            if pos[f] < len(items):
                out.extend(items[pos[f] : pos[f] + run])
                pos[f] += run
                progressed = True
        if not progressed:
            return out


def build(existing: int, new: int, feeds: int, run: int) -> tuple[Path, list[tuple[bytes, bytes]]]:
    """The cached store holding ``existing`` entries and the ``new`` entries that continue its feeds."""
    OUT.mkdir(exist_ok=True)
    tag = f"e{existing}-n{new}-f{feeds}"
    db, new_file = OUT / f"store-{tag}.db", OUT / f"new-{tag}-r{run}.msgpack"
    if db.exists() and new_file.exists():
        with new_file.open("rb") as fh:
            return db, [tuple(x) for x in msgpack.unpack(fh)]
    per_old, per_new = existing // feeds, new // feeds
    print(f"building {db.name}: {feeds} feeds x ({per_old} stored + {per_new} new) entries ...", flush=True)
    t0 = time.perf_counter()
    tmp = db.with_suffix(".partial")
    for suffix in ("", "-wal", "-shm"):
        Path(str(tmp) + suffix).unlink(missing_ok=True)
    new_parts: list[list[tuple[bytes, bytes]]] = [[] for _ in range(feeds)]
    stored = 0
    with Store(tmp) as store, Pool(os.cpu_count() or 2) as pool:
        jobs = ((i, per_old + per_new, 1_700_000_000_000) for i in range(feeds))
        pending: list[tuple[bytes, bytes]] = []
        for i, items in pool.imap_unordered(gen_feed, jobs, chunksize=4):
            pending.extend(items[:per_old])
            new_parts[i] = items[per_old:]
            if len(pending) >= 20_000:
                stored += _store(store, pending)
                pending = []
        stored += _store(store, pending)
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    os.replace(tmp, db)
    new_items = interleave(new_parts, run)
    with new_file.open("wb") as fh:
        msgpack.pack([list(x) for x in new_items], fh)
    print(f"built {stored} entries in {time.perf_counter() - t0:.0f} s", flush=True)
    return db, new_items


def _store(store: Store, items: list[tuple[bytes, bytes]]) -> int:
    items.sort(key=lambda x: x[0][:44])  # by author then roughly by seq: fewer page writes
    result = store.ingest(items)
    assert not result.rejected, result.rejected[:3]
    return len(result.added)


def verify_rates(items: list[tuple[bytes, bytes]], n: int) -> dict[str, float]:
    """Bare Ed25519 verify rates over real entries (keys loaded beforehand, messages precomputed)."""
    entries = [Entry.decode(raw) for raw, _ in items[:n]]
    jobs = [(e.author, e.signature, e.signing_bytes()) for e in entries]
    crypto_keys = {a: Ed25519PublicKey.from_public_bytes(a) for a, _, _ in jobs}

    def crypto(part):
        for author, sig, msg in part:
            crypto_keys[author].verify(sig, msg)

    def pynacl(part):
        for author, sig, msg in part:
            nacl.bindings.crypto_sign_open(sig + msg, author)

    rates: dict[str, float] = {}
    with ThreadPoolExecutor(2) as pool:
        for name, fn in (("cryptography", crypto), ("pynacl", pynacl)):
            t0 = time.perf_counter()
            fn(jobs)
            rates[f"{name} 1 thread"] = len(jobs) / (time.perf_counter() - t0)
            half = len(jobs) // 2
            t0 = time.perf_counter()
            list(pool.map(fn, [jobs[:half], jobs[half:]]))
            rates[f"{name} 2 threads"] = len(jobs) / (time.perf_counter() - t0)
    return rates


def ingest_run(
    db: Path, items: list[tuple[bytes, bytes]], batch: int, threads: int, pipelined: bool, processes: int = 0
) -> tuple[float, int]:
    """Ingest ``items`` into a fresh copy of ``db``; entries/s.

    Plain: ``Store.ingest`` per batch. Pipelined: as the node does it, ``Store.prepare`` (decode,
    payload and signature checks) of batch k+1 runs on another thread while ``Store.ingest_prepared``
    checks links and writes batch k.
    """
    work = OUT / "work.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(work) + suffix).unlink(missing_ok=True)
    shutil.copyfile(db, work)
    added = 0
    batches = [items[i : i + batch] for i in range(0, len(items), batch)]
    with (
        Store(work, verify_threads=threads, verify_processes=processes) as store,
        ThreadPoolExecutor(1) as other,
    ):
        if processes:  # start the worker processes before the clock, as a running node has them
            store.verifier.verify([Entry.decode(raw) for raw, _ in items[:batch]])
        store.read("SELECT count(*) FROM entries")  # open and warm the schema
        t0 = time.perf_counter()
        if pipelined:
            nxt = other.submit(store.prepare, batches[0])
            for i in range(len(batches)):
                prepared = nxt.result()
                if i + 1 < len(batches):
                    nxt = other.submit(store.prepare, batches[i + 1])
                result = store.ingest_prepared(prepared)
                if result.rejected:
                    sys.exit(f"unexpected refusals: {result.rejected[:3]}")
                added += len(result.added)
        else:
            for part in batches:
                result = store.ingest(part)
                if result.rejected:
                    sys.exit(f"unexpected refusals: {result.rejected[:3]}")
                added += len(result.added)
        elapsed = time.perf_counter() - t0
        total = store.stats()["entries"]
    for suffix in ("", "-wal", "-shm"):
        Path(str(work) + suffix).unlink(missing_ok=True)
    if added != len(items):
        sys.exit(f"only {added} of {len(items)} entries were added")
    return added / elapsed, total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--existing", type=int, default=1_000_000, help="entries already stored")
    parser.add_argument("--new", type=int, default=100_000, help="new entries to ingest")
    parser.add_argument("--batch", type=int, default=1_000, help="entries per ingest call")
    parser.add_argument("--feeds", type=int, default=1_000, help="number of other feeds")
    parser.add_argument("--run", type=int, default=50, help="consecutive entries of one feed in the stream")
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1], help="verify threads to try")
    parser.add_argument(
        "--processes", type=int, default=2, help="also try this many verify processes, as a node does (0: no)"
    )
    parser.add_argument("--smoke", action="store_true", help="small sizes, ~20 s (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.existing, args.new, args.feeds, args.threads = 20_000, 10_000, 100, [2]
    db, items = build(args.existing, args.new, args.feeds, args.run)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    sample = min(len(items), 20_000)
    rates = verify_rates(items, sample)
    for name, rate in rates.items():
        print(f"bare verify  {name:24s} {rate:10,.0f} /s", flush=True)
    results = []
    ways = [(f"{args.processes} verify processes", 2, args.processes)] if args.processes else []
    ways += [(f"{threads} verify thread(s)", threads, 0) for threads in args.threads]
    for workers, threads, processes in ways:
        for pipelined in (False, True):
            rate, total = ingest_run(db, items, args.batch, threads, pipelined, processes)
            how = "pipelined" if pipelined else "ingest()"
            results.append((how, workers, rate))
            print(
                f"ingest       {how:9s} {workers}, batch {args.batch:<5d} {rate:10,.0f} entries/s"
                f"  (store then held {total:,})",
                flush=True,
            )
    # measured again after the runs: on a shared machine one measurement may catch a busy moment
    again = verify_rates(items, sample)
    for name, rate in again.items():
        print(f"bare verify  {name:24s} {rate:10,.0f} /s (after)")
    best_name, best = max(((n, max(rates[n], again[n])) for n in rates), key=lambda nr: nr[1])
    print(f"fastest bare verify: {best_name}, {best:,.0f} /s")
    for how, workers, rate in results:
        print(f"ingest       {how:9s} {workers}: {rate / best:.0%} of the fastest bare verify rate")


if __name__ == "__main__":
    main()
