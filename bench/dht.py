"""DHT benchmark: N Tidings DHT nodes (node/discovery/dht.py) on loopback UDP in one trio process.

    python bench/dht.py                 # 200 nodes, 100 records, 300 lookups before and after churn
    python bench/dht.py --smoke         # 60 nodes, 100 lookups: ~10-20 s, for CI
    python bench/dht.py --nodes 200 --kill 0.2 --timeout 1.0 --seed 1

Each node has its own 127.x address (so per-IP limits stay on) and joins through a random node that
joined before it (node 0 first), then looks up its own id once more, as a node does on start. Then
``--records`` signed node records are stored from random nodes (``DHT.put``: a find_node lookup and
``store`` on the k closest), and ``--lookups`` ``find_value`` lookups of random records run from random
nodes that do not hold the record themselves, 8 at a time. Printed: hops (a seed is hop 1; the hop of
the node that served the value) mean and max, latency p50/p95/max, success rate; and for as many
``find_node`` lookups of random ids the hops to the closest node found (the lookup runs to the end:
the k closest must all answer, so under churn it waits out the timeouts of dead contacts). Then ``--kill`` of
the nodes are stopped at once (no goodbye, no republish) and the same lookups run from the survivors.
Goals (issue 4): mean hops <= log2(200) ~ 8, p95 < 1 s, >= 99 % success with 20 % of nodes gone.
"""

from __future__ import annotations

import argparse
import random
import secrets
import statistics
import sys
import time

import trio
from tidings.node.discovery.dht import DHT
from tidings.protocol import SigningKey
from tidings.protocol.lookup import LookupKind
from tidings.protocol.records import NodeRecord, create_node_record, validator


def host(n: int) -> str:
    # 127.64.x.y: away from the 127.0.x.y range the tests use
    return f"127.64.{n // 250}.{n % 250 + 2}"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def start_nodes(nursery: trio.Nursery, n: int, timeout: float) -> list[tuple[DHT, trio.CancelScope]]:
    out = []
    for i in range(n):
        node = DHT(secrets.token_bytes(20), host=host(i), port=0, timeout=timeout)
        scope = trio.CancelScope()

        async def serve(
            node: DHT = node, scope: trio.CancelScope = scope, *, task_status=trio.TASK_STATUS_IGNORED
        ):
            with scope:
                await node.run(task_status=task_status)

        await nursery.start(serve)
        out.append((node, scope))
    return out


async def join_all(nodes: list[DHT], rng: random.Random) -> float:
    started = time.perf_counter()
    joined = [nodes[0]]
    for start in range(1, len(nodes), 20):  # 20 at a time, each through a node that joined before
        batch = nodes[start : start + 20]
        async with trio.open_nursery() as nursery:
            for node in batch:
                via = rng.choice(joined)
                assert via.address is not None
                nursery.start_soon(node.bootstrap, [via.address])
        joined.extend(batch)
    async with trio.open_nursery() as nursery:  # a second self-lookup, as after a restart
        for node in nodes:
            nursery.start_soon(node.lookup, node.own_id, LookupKind.FIND_NODE)
    return time.perf_counter() - started


async def measure(
    nodes: list[DHT], records: list[NodeRecord], lookups: int, rng: random.Random
) -> dict[str, float]:
    hops: list[int] = []
    latency: list[float] = []
    found = 0
    now_ms = int(time.time() * 1000)
    jobs = []
    for _ in range(lookups):
        record = rng.choice(records)
        holders = [n for n in nodes if n.records.get(record.key, now_ms) is None]
        jobs.append((rng.choice(holders), record))
    limiter = trio.CapacityLimiter(8)

    async def one(node: DHT, record: NodeRecord) -> None:
        nonlocal found
        async with limiter:
            t0 = trio.current_time()
            accepts = validator(record.key, now_ms=now_ms, kind=NodeRecord)
            result = await node.lookup(record.key, LookupKind.FIND_VALUE, validate=accepts)
            latency.append(trio.current_time() - t0)
            if result.found and result.values[0].value == record.encode():
                found += 1
                hops.append(result.hops)

    async with trio.open_nursery() as nursery:
        for node, record in jobs:
            nursery.start_soon(one, node, record)
    return {
        "success": found / lookups,
        "hops_mean": statistics.fmean(hops) if hops else float("nan"),
        "hops_max": max(hops) if hops else float("nan"),
        "p50": pct(latency, 0.5),
        "p95": pct(latency, 0.95),
        "max": max(latency),
    }


async def node_hops(nodes: list[DHT], lookups: int, rng: random.Random) -> dict[str, float]:
    """find_node lookups of random ids: hops to the closest node, latency."""
    hops: list[int] = []
    latency: list[float] = []
    limiter = trio.CapacityLimiter(8)

    async def one(node: DHT, target: bytes) -> None:
        async with limiter:
            t0 = trio.current_time()
            result = await node.lookup(target, LookupKind.FIND_NODE)
            latency.append(trio.current_time() - t0)
            hops.append(result.hops)

    async with trio.open_nursery() as nursery:
        for _ in range(lookups):
            nursery.start_soon(one, rng.choice(nodes), rng.randbytes(20))
    return {
        "hops_mean": statistics.fmean(hops),
        "hops_max": max(hops),
        "p50": pct(latency, 0.5),
        "p95": pct(latency, 0.95),
        "max": max(latency),
    }


def show_nodes(label: str, m: dict[str, float]) -> None:
    print(
        f"{label}: find_node hops to the closest node mean {m['hops_mean']:.2f} max {m['hops_max']:.0f}, "
        f"latency p50 {1000 * m['p50']:.1f} ms p95 {1000 * m['p95']:.1f} ms max {1000 * m['max']:.1f} ms"
    )


def show(label: str, m: dict[str, float]) -> None:
    print(
        f"{label}: success {100 * m['success']:.1f} %, hops mean {m['hops_mean']:.2f} max {m['hops_max']:.0f}, "
        f"latency p50 {1000 * m['p50']:.1f} ms p95 {1000 * m['p95']:.1f} ms max {1000 * m['max']:.1f} ms"
    )


async def main(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    async with trio.open_nursery() as nursery:
        started = await start_nodes(nursery, args.nodes, args.timeout)
        nodes = [n for n, _ in started]
        took = await join_all(nodes, rng)
        sizes = [len(n.table) for n in nodes]
        print(
            f"{args.nodes} nodes joined in {took:.1f} s; routing table size mean {statistics.fmean(sizes):.1f} "
            f"min {min(sizes)} max {max(sizes)}"
        )
        records = []
        stored = []
        now_ms = int(time.time() * 1000)
        for i in range(args.records):
            key = SigningKey(rng.randbytes(32))
            record = create_node_record(
                key,
                addresses=[(host(i), 7433)],
                transport_key=rng.randbytes(32),
                seq=now_ms,
                expiry_ms=now_ms + 3_600_000,
            )
            stored.append(await rng.choice(nodes).put(record.key, record.encode()))
            records.append(record)
        print(f"{args.records} records stored on {statistics.fmean(stored):.1f} nodes each (mean)")
        show("no churn", await measure(nodes, records, args.lookups, rng))
        show_nodes("no churn", await node_hops(nodes, args.lookups, rng))

        victims = rng.sample(range(len(nodes)), int(args.kill * len(nodes)))
        for i in victims:
            started[i][1].cancel()
        await trio.sleep(0.1)
        alive = [n for i, n in enumerate(nodes) if i not in set(victims)]
        show(f"{100 * args.kill:.0f} % killed", await measure(alive, records, args.lookups, rng))
        show_nodes(f"{100 * args.kill:.0f} % killed", await node_hops(alive, args.lookups, rng))
        out = sum(n.statistics().get("timeouts", 0) for n in alive)
        print(f"survivors: {out} request timeouts in all")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--records", type=int, default=100)
    parser.add_argument("--lookups", type=int, default=300)
    parser.add_argument("--kill", type=float, default=0.2)
    parser.add_argument("--timeout", type=float, default=1.0, help="Seconds before a query counts as lost.")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="60 nodes, 30 records, 100 lookups (CI).")
    arguments = parser.parse_args()
    if arguments.smoke:
        arguments.nodes, arguments.records, arguments.lookups = 60, 30, 100
    print(" ".join(["python", "bench/dht.py", *sys.argv[1:]]))
    trio.run(main, arguments)
