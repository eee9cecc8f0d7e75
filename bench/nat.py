"""NAT benchmark: from a follow to the first post through home routers, and relayed against direct sync.

    sudo python bench/nat.py              # 20 trials per NAT kind, 10k entries for the syncs
    sudo python bench/nat.py --smoke      # 2 trials per kind, 1k entries, for CI
    sudo python bench/nat.py --trials 50 --entries 20000

Everything runs in a NAT lab of network namespaces (tests/support/natlab.py: an "internet" inside
198.18.0.0/15, home routers that masquerade with nftables); no packet leaves the namespaces it creates.
Each node is a real ``tidings run`` process inside its namespace.

1. **Follow to first post**, per NAT kind of the follower's home, beside a follower on a public host
   (the baseline, measured in the same run). A public node ``pub`` follows nobody and
   is the only bootstrap. The poster sits behind a port-preserving NAT and has posted once. Each trial
   starts a fresh follower (a new identity) behind a router of the kind measured, waits until it is
   connected to ``pub``, then times ``tidings follow @poster`` until the post is in the follower's store
   (read from its SQLite file). A few seconds later the trial records the path of the follower's
   connection to the poster (``tidings peers --json``: ``direct`` or ``relayed``). Printed: p50, p95 and
   max, deliveries, and the share of trials that ended direct. Goals (issue 16): every trial delivers,
   100% direct between port-preserving NATs, p95 < 10 s.
2. **Direct against relayed sync** of ``--entries`` entries: a fresh follower behind a port-preserving
   NAT syncs a poster on a public host (direct from the start), then a fresh follower behind a symmetric
   NAT syncs a poster behind a port-preserving NAT (punching cannot work: relayed to the end). Printed:
   entries/s of each, and the relay's CPU seconds per relayed MB (its ``/proc`` CPU time over the bytes
   its counters say it relayed).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support: the NAT lab

from tidings.node.home import Home
from tidings.protocol import Post
from tidings.storage.store import Store

from tests.support.natlab import DOUBLE, PRESERVING, SYMMETRIC, NatLab, require_natlab
from tests.support.natlab_nodes import LabNode, LabNodes

T = TypeVar("T")
PRIVATE = {"limits": {"reach_recheck": 600.0}}
PUBLIC = "public"  # the baseline: a follower on a public host, no NAT of its own


def wait(predicate: Callable[[], T], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"nat.py: timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def count_entries(home: Path, feed_text: str) -> int:
    """Entries of ``feed_text`` in a home's store, read straight from SQLite (cheap enough to poll)."""
    from tidings.protocol import FeedId

    path = Home(home).store_path
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0) as db:
            row = db.execute(
                "SELECT count(*) FROM entries WHERE author = ?", (FeedId.parse(feed_text).key,)
            ).fetchone()
    except sqlite3.OperationalError:
        return 0
    return int(row[0])


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a running process (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def counters(node: LabNode) -> dict[str, Any]:
    data = json.loads((node.home / "node.json").read_text())
    return dict(data.get("counters", {}))


def path_to(node: LabNode, feed: str) -> str | None:
    for peer in node.peers():
        if peer.get("feed") == feed and peer.get("connected"):
            return str(peer.get("path", "direct"))
    return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def private_ready(node: LabNode) -> bool:
    status = node.status()
    return status.get("reachability") == "private"


def follow_trials(root: Path, kind: str, trials: int) -> dict[str, Any]:
    """Section 1 for one NAT kind of the follower's home (see the module docstring)."""
    with NatLab() as lab, LabNodes(lab, root / kind) as nodes:
        lab.add_public("pub")
        lab.add_home("poster", PRESERVING)
        if kind == PUBLIC:
            lab.add_public("home")
        else:
            lab.add_home("home", kind)
        pub = nodes.add("pub")
        pub_address = pub.start()
        poster = nodes.add("poster")
        poster.start(bootstrap=[pub_address], config=PRIVATE)
        poster.wait_for(lambda: private_ready(poster), 30, "the poster to find it is private")
        poster.post("hello from behind a home router")
        times: list[float] = []
        paths: list[str | None] = []
        for trial in range(trials):
            follower = nodes.add("home", name=f"f{trial}")
            follower.start(bootstrap=[pub_address], config=PRIVATE)
            follower.wait_for(lambda f=follower: f.status().get("peers", 0) >= 1, 30, "a connection to pub")
            start = time.monotonic()
            follower.follow(poster.feed)
            try:
                wait(lambda f=follower: count_entries(f.home, poster.feed) >= 1, 60, "the post")
            except SystemExit as exc:
                print(f"  {kind} trial {trial}: not delivered ({exc})")
                paths.append(None)
                follower.stop(check=False)
                continue
            times.append(time.monotonic() - start)
            deadline = time.monotonic() + 5
            path = path_to(follower, poster.feed)
            while path != "direct" and time.monotonic() < deadline:
                time.sleep(0.2)
                path = path_to(follower, poster.feed)
            paths.append(path)
            follower.stop(check=False)
        direct = sum(1 for p in paths if p == "direct")
        return {
            "kind": kind,
            "trials": trials,
            "delivered": len(times),
            "p50": percentile(times, 0.5) if times else float("nan"),
            "p95": percentile(times, 0.95) if times else float("nan"),
            "max": max(times) if times else float("nan"),
            "direct": direct,
            "pub_entries": count_entries(pub.home, poster.feed),
        }


def build_poster(node: LabNode, entries: int) -> None:
    """Fill a poster's store with ``entries`` posts before it starts (the store is a file on the host)."""
    home = Home(node.home)
    key = home.load_key()
    with Store(home.store_path) as store:
        store.append_many(key, [Post(text=f"post {i} " + "lorem ipsum " * 8) for i in range(entries)])


def sync_run(
    root: Path, name: str, poster_host: tuple[str, str | None], follower_kind: str, entries: int
) -> dict[str, Any]:
    """Section 2: one sync of ``entries`` entries; ``poster_host`` is (name, home kind or None: public)."""
    with NatLab() as lab, LabNodes(lab, root / name) as nodes:
        lab.add_public("pub")
        poster_name, poster_kind = poster_host
        if poster_kind is None:
            lab.add_public(poster_name)
        else:
            lab.add_home(poster_name, poster_kind)
        lab.add_home("home", follower_kind)
        pub = nodes.add("pub")
        pub_address = pub.start()
        poster = nodes.add(poster_name)
        build_poster(poster, entries)
        poster.start(bootstrap=[pub_address], config=PRIVATE)
        if poster_kind is not None:
            poster.wait_for(lambda: private_ready(poster), 30, "the poster to find it is private")
        follower = nodes.add("home", name="follower")
        follower.start(bootstrap=[pub_address], config=PRIVATE)
        follower.wait_for(lambda: follower.status().get("peers", 0) >= 1, 30, "a connection to pub")
        assert pub.proc is not None
        cpu0, relayed0 = process_cpu(pub.proc.pid), counters(pub).get("relay_bytes", 0)
        start = time.monotonic()
        follower.follow(poster.feed)
        wait(lambda: count_entries(follower.home, poster.feed) >= entries, 600, f"{entries} entries")
        elapsed = time.monotonic() - start
        time.sleep(1.5)  # node.json's counters are at most a second old
        cpu = process_cpu(pub.proc.pid) - cpu0
        relayed = counters(pub).get("relay_bytes", 0) - relayed0
        return {
            "name": name,
            "entries": entries,
            "seconds": elapsed,
            "rate": entries / elapsed,
            "path": path_to(follower, poster.feed),
            "relay_mb": relayed / 1e6,
            "relay_cpu": cpu,
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--smoke", action="store_true", help="small and quick, for CI")
    args = parser.parse_args()
    if args.smoke:
        args.trials, args.entries = 2, 1000
    try:
        require_natlab()
    except BaseException as exc:  # pytest's skip or fail outcome: say why in one line
        raise SystemExit(f"nat.py: {exc}") from None
    with tempfile.TemporaryDirectory(prefix="tidings-nat-") as tmp:
        root = Path(tmp)
        print(
            f"follow to first post, {args.trials} trials per NAT kind of the follower (poster behind a port-preserving NAT)"
        )
        for kind in (PUBLIC, PRESERVING, SYMMETRIC, DOUBLE):
            r = follow_trials(root, kind, args.trials)
            print(
                f"  {kind:10s} delivered {r['delivered']}/{r['trials']}  p50 {r['p50']:.2f} s  p95 {r['p95']:.2f} s"
                f"  max {r['max']:.2f} s  direct {r['direct']}/{r['trials']} ({100 * r['direct'] / r['trials']:.0f}%)"
                f"  public node stored {r['pub_entries']} of their entries"
            )
        print(f"sync of {args.entries} entries")
        direct = sync_run(root, "direct", ("pub2", None), PRESERVING, args.entries)
        relayed = sync_run(root, "relayed", ("poster", PRESERVING), SYMMETRIC, args.entries)
        for r in (direct, relayed):
            extra = ""
            if r["relay_mb"] > 0:
                extra = (
                    f"; relay carried {r['relay_mb']:.1f} MB with {r['relay_cpu']:.2f} CPU s"
                    f" = {r['relay_cpu'] / r['relay_mb']:.3f} CPU s per MB"
                )
            print(
                f"  {r['name']:8s} path {r['path']}: {r['seconds']:.2f} s = {r['rate']:,.0f} entries/s{extra}"
            )
        print(f"relayed / direct rate: {relayed['rate'] / direct['rate']:.2f}")


if __name__ == "__main__":
    main()
