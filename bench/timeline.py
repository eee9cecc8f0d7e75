"""Timeline benchmark: ranked timelines (limit 50) over a large store, in process and as a whole command.

    python bench/timeline.py                # 1M entries of 2,000 feeds, 1,000 followed (built once, cached)
    python bench/timeline.py --smoke        # ~20 s: 40k entries of 400 feeds, 200 followed
    python bench/timeline.py --entries 200000 --feeds 1000 --runs 50

The home (identity + store) is built once under bench/out/ and reused. Entries are signed with
tidings.protocol and written through the store's own row writer (``storage.writer.RowWriter``, the
path ``Store.append`` takes; signatures are not re-verified, that is the ingest benchmark's subject),
in time order over 30 days: each feed follows ~15 others, then posts (10% replies), reactions (18%)
and reposts (8%) aimed at recent posts of anyone (how many posts back: exponential, mean 400). Your own feed follows the first half of
the feeds. Then, for each built-in ranker, ``ranked_timeline(..., limit=50)`` is timed in process
(``--runs`` times after one warm-up), and the whole command
``python -m tidings.cli.main --home HOME timeline --ranker NAME --limit 50 --json`` (the real
``tidings timeline``; its hidden ``--now`` pins the time
to the store's) and ``... rankers`` as separate processes. The swarm ranker gets 100 followed feeds as its members.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from tidings.cli.commands_rank import ranked_timeline
from tidings.node.home import Home
from tidings.node.ranking.registry import load_rankers
from tidings.protocol import (
    Content,
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
from tidings.storage.writer import RowWriter

OUT = Path(__file__).resolve().parent / "out"
NOW = 1_767_225_600_000  # 2026-01-01 00:00 UTC: every run ranks at the same "now"
SPAN = 30 * 24 * 3_600_000
WORDS = [
    "alpha",
    "bravo",
    "coffee",
    "delta",
    "echo",
    "garden",
    "gossip",
    "river",
    "morning",
    "evening",
    "network",
    "mountain",
    "tango",
]
RANKERS = ["chronological", "engagement", "trust", "swarm"]


def feed_key(i: int) -> SigningKey:
    return SigningKey(i.to_bytes(4, "big") + b"\x07" * 28)


def build(entries: int, feeds: int) -> Path:
    """A home whose feed follows half of ``feeds`` other feeds that wrote ``entries`` entries."""
    OUT.mkdir(exist_ok=True)
    path = OUT / f"timeline2-e{entries}-f{feeds}"
    if (path / "secret.pem").exists():
        return path
    tmp = path.with_name(path.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"building {path.name}: {entries} entries of {feeds} feeds ...", flush=True)
    t0 = time.perf_counter()
    home = Home(tmp)
    me = home.init(name="bench")
    keys = [feed_key(i) for i in range(feeds)]
    rng = random.Random(1)
    with Store(home.store_path) as store:
        store.append_many(me, [Follow(feed=k.public_key) for k in keys[: feeds // 2]], now=NOW - SPAN - 1000)
        store.run(
            lambda cur: cur.executemany(
                "INSERT INTO feeds (author) VALUES (?)", [(k.public_key,) for k in keys]
            )
        )
        hashes: list[list[bytes]] = [[] for _ in range(feeds)]
        follows_left = [15] * feeds
        recent: deque[bytes] = deque(maxlen=5000)
        step = SPAN / entries
        done = 0
        while done < entries:
            n = min(20_000, entries - done)
            batch = []
            for k in range(done, done + n):
                i = rng.randrange(feeds)
                batch.append(
                    (i, NOW - SPAN + int(k * step), _content(rng, i, feeds, follows_left, recent, k))
                )
            _write(store, keys, hashes, batch, recent)
            done += n
            print(f"  {done} entries, {time.perf_counter() - t0:.0f} s", flush=True)
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    os.replace(tmp, path)
    print(f"built in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def _content(
    rng: random.Random, i: int, feeds: int, follows_left: list[int], recent: deque[bytes], k: int
) -> Content | None:
    if follows_left[i]:
        follows_left[i] -= 1
        return Follow(feed=feed_key(rng.randrange(feeds)).public_key)
    r = rng.random()
    # engagement mostly goes to recent posts: the target's distance back is exponential, mean 400 posts
    if recent and r < 0.26:
        target = recent[-1 - min(len(recent) - 1, int(rng.expovariate(1 / 400)))]
        return Reaction(target=target, emoji="+1") if r < 0.18 else Repost(target=target)
    text = f"post {k}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30)))
    if recent and r < 0.33:
        target = recent[-1 - min(len(recent) - 1, int(rng.expovariate(1 / 400)))]
        return Post(text=text, reply=target, root=target)
    return None  # a plain post; made once its hash is wanted


def _write(
    store: Store,
    keys: list[SigningKey],
    hashes: list[list[bytes]],
    batch: list[tuple[int, int, Content | None]],
    recent: deque[bytes],
) -> None:
    def run(cur):  # type: ignore[no-untyped-def]
        writer = RowWriter(cur)
        for i, ts, content in batch:
            if content is None:
                content = Post(
                    text=f"post by {i} at {ts}: " + " ".join(WORDS[(ts >> s) % len(WORDS)] for s in range(6))
                )
            payload = encode_content(content)
            own = hashes[i]
            seq = len(own) + 1
            skip = skip_target(seq)
            entry = create_entry(
                keys[i],
                seq=seq,
                backlink=own[-1] if own else None,
                skiplink=own[skip - 1] if skip else None,
                timestamp=ts,
                payload=payload,
            )
            own.append(entry.hash)
            if isinstance(content, Post):
                recent.append(entry.hash)
            writer.insert(entry, payload, content, deleted=False)
        writer.finish()

    store.run(run)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--feeds", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=40, help="timed runs per ranker in process")
    ap.add_argument("--procs", type=int, default=10, help="timed whole-command runs per ranker")
    ap.add_argument("--smoke", action="store_true", help="small store, few runs (~20 s)")
    args = ap.parse_args()
    if args.smoke:
        args.entries, args.feeds, args.runs, args.procs = 40_000, 400, 10, 3
    home_dir = build(args.entries, args.feeds)
    home = Home(home_dir)
    members = [feed_key(i).public_key for i in range(0, args.feeds // 2, max(1, args.feeds // 200))][:100]
    print(f"store: {args.entries} entries of {args.feeds} feeds, {args.feeds // 2} followed; now={NOW}")
    print("in process, ranked_timeline(limit=50), ms:")
    registry = load_rankers()  # once, as a command does (the entry point scan costs ~8 ms)
    with Store(home.store_path, create=False) as store:
        me = store.own_feed()
        assert me is not None
        for name in RANKERS:
            times = []
            for run in range(args.runs + 1):
                t = time.perf_counter()
                items = ranked_timeline(
                    store,
                    me,
                    ranker=name,
                    limit=50,
                    now=NOW,
                    config={},
                    swarm_members=members,
                    registry=registry,
                )
                if run:
                    times.append((time.perf_counter() - t) * 1000)
            assert len(items) == 50, (name, len(items))
            print(
                f"  {name:<14} p50 {pct(times, 0.5):6.1f}  p95 {pct(times, 0.95):6.1f}  ({len(times)} runs)"
            )
            t = time.perf_counter()
            ranked_timeline(
                store,
                me,
                ranker=name,
                limit=50,
                now=NOW,
                config={},
                swarm_members=members,
                explain=True,
                registry=registry,
            )
            print(f"  {'':<14} with --explain: {(time.perf_counter() - t) * 1000:.1f} ms (one run)")
    print("whole command (separate process), ms:")
    commands = {
        name: [
            sys.executable,
            "-m",
            "tidings.cli.main",
            "--home",
            str(home_dir),
            "timeline",
            "--ranker",
            name,
            "--limit",
            "50",
            "--json",
            "--now",
            str(NOW),
        ]
        for name in ("chronological", "engagement", "trust")
    }
    commands["rankers"] = [
        sys.executable,
        "-m",
        "tidings.cli.main",
        "--home",
        str(home_dir),
        "rankers",
    ]
    for name, cmd in commands.items():
        times = []
        for run in range(args.procs + 1):
            t = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True)
            if run:
                times.append((time.perf_counter() - t) * 1000)
        status = "ok" if done.returncode == 0 else f"exit {done.returncode}: {done.stderr.strip()[:80]}"
        print(
            f"  {name:<20} p50 {pct(times, 0.5):6.0f}  p95 {pct(times, 0.95):6.0f}  ({len(times)} runs, {status})"
        )


if __name__ == "__main__":
    main()
