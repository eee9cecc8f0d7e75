"""Where an ingested entry's CPU time goes, and the ceiling that sets on this machine.

    python bench/costs.py                      # 20k stored + 10k new entries of 100 feeds (built once)
    python bench/costs.py --existing 1000000 --new 100000 --feeds 1000    # the 1M-entry store of ingest.py
    python bench/costs.py --smoke              # CI

Measures, on the same entries as ``bench/ingest.py`` (its cached stores in bench/out/):

1. the parts every received entry needs, one at a time on one thread: the Ed25519 signature check
   (libsodium, as the store does it), strict decoding of the entry, the payload's hash and size, and
   strict decoding of the payload;
2. a real ``Store.prepare`` + ``Store.ingest_prepared`` of the new entries in batches, on one thread,
   with the signature check left out (it is item 1's figure), as CPU time per entry, and within
   ``ingest_prepared`` the time of each table's INSERT statements, the full-text index and the commit;
3. from these, the most entries per second two cores could take if the signature checks ran on both
   cores and nothing else (no network, no framing, no thread hand-offs, no other process) cost anything,
   beside the goals of 20,000 entries/s (sync) and 70% of the 2-thread bare verify rate (ingest).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ingest as source  # bench/ingest.py: the cached stores and entries
import tidings.storage.verifier as verifier_module
import tidings.storage.writer as writer_module
from tidings.protocol import Entry, decode_content, verify_payload
from tidings.protocol.identity import verify_signature
from tidings.storage.store import Store
from tidings.storage.verifier import signed_parts

CORES = 2


def per_item(fn: Callable[[Any], object], items: list[Any]) -> float:
    """CPU µs per call of ``fn`` over ``items`` (best of two passes)."""
    best = float("inf")
    for _ in range(2):
        t0 = time.process_time()
        for item in items:
            fn(item)
        best = min(best, time.process_time() - t0)
    return best / len(items) * 1e6


class Timings:
    """CPU time of this thread in the store's statements, by part, while ``ingest_prepared`` runs."""

    def __init__(self) -> None:
        self.parts: dict[str, float] = defaultdict(float)
        self._finished = 0.0
        insert_rows, index_posts, finish = (
            writer_module.insert_rows,
            writer_module.index_posts,
            writer_module.RowWriter.finish,
        )

        def timed_insert(cur: Any, head: str, rows: list[tuple[object, ...]]) -> None:
            t0 = time.thread_time()
            insert_rows(cur, head, rows)
            self.parts[f"INSERT {head.split()[2]}"] += time.thread_time() - t0

        def timed_index(cur: Any) -> int:
            t0 = time.thread_time()
            try:
                return index_posts(cur)
            finally:
                self.parts["full-text index"] += time.thread_time() - t0

        def timed_finish(writer: Any) -> None:
            finish(writer)
            self._finished = time.thread_time()  # what follows in ingest_prepared is the COMMIT

        writer_module.insert_rows = timed_insert
        writer_module.index_posts = timed_index
        writer_module.RowWriter.finish = timed_finish  # type: ignore[method-assign]

    def commit_since_finish(self) -> None:
        self.parts["COMMIT"] += time.thread_time() - self._finished


def store_costs(
    db: Path, items: list[tuple[bytes, bytes]], batch: int
) -> tuple[float, float, float, dict[str, float]]:
    """µs per entry: CPU of ``prepare``, CPU and wall time of ``ingest_prepared`` (signatures not
    checked), and the CPU of its parts."""
    work = source.OUT / "costs.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(work) + suffix).unlink(missing_ok=True)
    shutil.copyfile(db, work)
    timings = Timings()
    checks = verifier_module.check_signatures
    verifier_module.check_signatures = lambda signed: [True] * len(signed)  # item 1 measures these
    prepare_cpu = ingest_cpu = ingest_wall = 0.0
    try:
        with Store(work, verify_threads=1) as store:
            store.read("SELECT count(*) FROM entries")
            for start in range(0, len(items), batch):
                part = items[start : start + batch]
                t0 = time.process_time()
                prepared = store.prepare(part)
                t1, w1 = time.process_time(), time.perf_counter()
                result = store.ingest_prepared(prepared)
                timings.commit_since_finish()
                ingest_cpu += time.process_time() - t1
                ingest_wall += time.perf_counter() - w1
                prepare_cpu += t1 - t0
                if result.rejected or len(result.added) != len(part):
                    sys.exit(f"unexpected: {len(result.added)} added, refused {result.rejected[:3]}")
    finally:
        verifier_module.check_signatures = checks
        for suffix in ("", "-wal", "-shm"):
            Path(str(work) + suffix).unlink(missing_ok=True)
    n = len(items)
    parts = {k: v / n * 1e6 for k, v in timings.parts.items()}
    return prepare_cpu / n * 1e6, ingest_cpu / n * 1e6, ingest_wall / n * 1e6, parts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--existing", type=int, default=20_000, help="entries already stored")
    parser.add_argument("--new", type=int, default=10_000, help="new entries to measure")
    parser.add_argument("--feeds", type=int, default=100)
    parser.add_argument("--run", type=int, default=50, help="consecutive entries of one feed in the stream")
    parser.add_argument("--batch", type=int, default=1_000, help="entries per transaction")
    parser.add_argument("--smoke", action="store_true", help="small sizes, for CI")
    args = parser.parse_args()
    if args.smoke:
        args.existing, args.new, args.feeds = 20_000, 10_000, 100
    db, items = source.build(args.existing, args.new, args.feeds, args.run)
    entries = [Entry.decode(raw) for raw, _ in items]
    jobs = [signed_parts(e) for e in entries]
    print(
        f"{len(items):,} new entries into a store of {args.existing:,}; batches of {args.batch:,}; one thread"
    )

    verify = per_item(lambda job: verify_signature(*job), jobs)
    parts = {
        "Ed25519 signature check (libsodium)": verify,
        "strict decode of the entry": per_item(Entry.decode, [raw for raw, _ in items]),
        "payload hash and size": per_item(
            lambda ep: verify_payload(*ep), list(zip(entries, (p for _, p in items), strict=True))
        ),
        "strict decode of the payload": per_item(decode_content, [p for _, p in items]),
    }
    for name, us in parts.items():
        print(f"  {name:44s} {us:6.1f} µs")
    # ingest.py's bare rates (best of two measurements, as it does)
    two = max(source.verify_rates(items, min(len(items), 20_000))["pynacl 2 threads"] for _ in range(2))
    print(f"  bare signature checks on 2 threads: {two:,.0f}/s")

    prepare, ingest, ingest_wall, sql = store_costs(db, items, args.batch)
    print(f"Store.prepare, signature checks left out     {prepare:6.1f} µs CPU per entry")
    print(
        f"Store.ingest_prepared                        {ingest:6.1f} µs CPU per entry ({ingest_wall:.1f} µs wall), in:"
    )
    for name, us in sorted(sql.items(), key=lambda kv: -kv[1]):
        print(f"  {name:44s} {us:6.1f} µs")
    print(f"  {'link checks, rows and the rest (Python)':44s} {ingest - sum(sql.values()):6.1f} µs")

    decoding = sum(parts.values()) - verify
    floor = verify + decoding + sum(sql.values())
    whole = verify + prepare + ingest
    print(
        f"CPU per entry: {whole:.0f} µs for the store's whole ingest (signature check included); {floor:.0f} µs"
    )
    print("  for the signature check, strict decoding and SQLite's statements alone")
    for label, us in (("the whole ingest", whole), ("signature, decoding and SQLite alone", floor)):
        print(f"ceiling on {CORES} cores, if {label} were all that ran: {CORES / us * 1e6:,.0f} entries/s")
    print(f"ceiling of the one writing thread (SQLite has one writer): {1e6 / ingest_wall:,.0f} entries/s")
    print(f"goals: sync 20,000 entries/s; ingest 70% of {two:,.0f}/s = {0.7 * two:,.0f} entries/s")
    budget = CORES / (0.7 * two) * 1e6
    print(
        f"70% of the 2-thread verify rate leaves {budget:.0f} µs of CPU per entry on {CORES} cores, "
        f"{budget - verify:.0f} µs of it besides the signature check (the store now needs {whole - verify:.0f} µs)"
    )


if __name__ == "__main__":
    main()
