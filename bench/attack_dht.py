"""Attacks on a running node, measured: what they cost the attacker, the victim, and honest users.

    python bench/attack_dht.py                  # every section, full length
    python bench/attack_dht.py --smoke          # every section, short: for CI
    python bench/attack_dht.py --only dht       # one section

One self-contained function per attack (``SECTIONS``), each printing the attacker's datagrams or bytes
and CPU beside the victim's, and what honest users get with and without the attack, side by side in
one run (issue 15, "Benchmark"). Goals: no attack makes the victim spend more than 10x what it costs
the attacker, and none slows an honest exchange by more than 2x.

Section ``dht`` (issue 15 item 6): a victim DHT node (node/discovery/dht.py, its own process, default
limits) among honest DHT nodes (this process, 127.70.0.x); attackers in another process flood it from
four addresses of one /24 (127.71.N.x, another for each attack), at five times the per-IP rate
limit, with in turn: plain values under fresh keys, signed node records of fresh keys (the attacker
signs each), Sybil member records of fresh keys on one swarm key, and undecodable datagrams. Meanwhile
honest nodes publish new versions of the node records of 200 feeds and of their own member records of
that swarm key, then look them up: "ok" when the victim holds and serves each new version and another
node finds the node record.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import trio
from tidings.node.discovery.dht import DHT
from tidings.protocol import SigningKey
from tidings.protocol.dht_wire import (
    Announce,
    FindValue,
    GetMembers,
    MembersReply,
    Store,
    ValueReply,
    encode_request,
)
from tidings.protocol.records import create_member_record, create_node_record, swarm_key

SECTIONS: dict[str, Callable[[argparse.Namespace], None]] = {}


def section(
    name: str,
) -> Callable[[Callable[[argparse.Namespace], None]], Callable[[argparse.Namespace], None]]:
    """Register an attack's section under ``name`` (``--only NAME``)."""

    def register(fn: Callable[[argparse.Namespace], None]) -> Callable[[argparse.Namespace], None]:
        SECTIONS[name] = fn
        return fn

    return register


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# -- dht: the record store fills from one address (issue 15 item 6) ------------------------------------

DHT_SWARM = "bench-attacks"
DHT_MODES = ("plain", "signed", "sybil", "junk")


def _dht_attackers(mode: str) -> list[str]:
    """Four addresses of one /24, a /24 of its own for each attack (127.71.N.x)."""
    return [f"127.71.{DHT_MODES.index(mode)}.{i}" for i in range(2, 6)]


def _dht_datagram(mode: str, rng: random.Random, now_ms: int) -> bytes:
    """One attack datagram of ``mode`` (built in the attacker's process: its CPU counts)."""
    msg, node_id = secrets.token_bytes(20), secrets.token_bytes(20)
    if mode == "plain":
        key = secrets.token_bytes(20)
        return encode_request(msg, Store(node_id=node_id, key=key, value=secrets.token_bytes(1000)))
    if mode == "junk":
        return b"\x00" + msg + b"\xc1" * rng.randint(10, 8000)
    signer = SigningKey(secrets.token_bytes(32))
    if mode == "signed":
        record = create_node_record(
            signer,
            addresses=[("127.71.0.9", 7433)],
            transport_key=bytes(32),
            seq=now_ms,
            expiry_ms=now_ms + 600_000,
        )
        return encode_request(msg, Store(node_id=node_id, key=record.key, value=record.encode()))
    member = create_member_record(
        signer, swarm=DHT_SWARM, addresses=[("127.71.0.9", 7433)], seq=now_ms, expiry_ms=now_ms + 600_000
    )
    return encode_request(msg, Announce(node_id=node_id, key=member.key, record=member.encode()))


def dht_attacker(mode: str, host: str, port: int, seconds: float, rate: float) -> None:
    """The attacker's process: flood ``host:port`` for ``seconds`` at ``rate`` datagrams/s per address;
    print what it sent and what it cost as JSON."""
    rng = random.Random(1)
    socks = []
    for address in _dht_attackers(mode):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((address, 0))
        sock.setblocking(False)
        socks.append(sock)
    sent = sent_bytes = replies = taken = 0
    cpu0, start = time.process_time(), time.monotonic()
    tick = 0.01
    while (elapsed := time.monotonic() - start) < seconds:
        now_ms = int(time.time() * 1000)
        due = int((elapsed + tick) * rate)
        while sent < due * len(socks):
            data = _dht_datagram(mode, rng, now_ms)
            with contextlib.suppress(BlockingIOError):  # a full send buffer drops it, as a network would
                socks[sent % len(socks)].sendto(data, (host, port))
            sent += 1
            sent_bytes += len(data)
        for sock in socks:
            while True:
                try:
                    reply = sock.recv(9000)
                except BlockingIOError:
                    break
                replies += 1
                taken += reply[21:] == b"\xc3"  # msgpack true: the victim stored it
        time.sleep(max(0.0, start + elapsed + tick - time.monotonic()))
    cpu = time.process_time() - cpu0
    print(json.dumps({"sent": sent, "bytes": sent_bytes, "cpu": cpu, "replies": replies, "taken": taken}))


async def dht_victim(host: str) -> None:
    """The victim's process: one DHT node with the default limits; answers ``stats`` on stdin."""
    node = DHT(secrets.token_bytes(20), host=host, port=0, timeout=0.5)
    async with trio.open_nursery() as nursery:
        address = await nursery.start(node.run)
        print(json.dumps({"address": list(address)}), flush=True)
        while (await trio.to_thread.run_sync(sys.stdin.readline)).strip():
            stats = {k: v for k, v in node.statistics().items() if isinstance(v, int | float)}
            print(json.dumps({"cpu": time.process_time(), **stats}), flush=True)
        nursery.cancel_scope.cancel()


class _Victim:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--dht-victim", "127.70.1.2"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.address = tuple(json.loads(self.proc.stdout.readline())["address"])

    def stats(self) -> dict[str, Any]:
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return dict(json.loads(self.proc.stdout.readline()))

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


#: Each honest node's swarm identity: it announces a new version of its member record every round.
_MEMBERS: dict[bytes, SigningKey] = {}
#: Honest feeds whose owners publish new versions of their node records, as running nodes do (a /24
#: holding thousands of distinct records on one storing node would be its quota's business, §13.5).
#: What failed in honest rounds (reset by each phase): the lookup, the victim's copy, the member.
_FAILED: Counter[str] = Counter()
_FEEDS = [SigningKey(bytes([i]) * 32) for i in range(1, 201)]


async def _honest_round(nodes: list[DHT], victim: tuple[str, int], rng: random.Random) -> tuple[bool, float]:
    """One honest exchange: a new version of one of 200 feeds' signed node records stored, and the
    writer's member record announced anew, then looked up. Ok when the victim serves both (the new
    versions) and another node finds the node record."""
    writer, reader = rng.sample(nodes, 2)
    now_ms = int(time.time() * 1000)
    signer = _FEEDS[rng.randrange(len(_FEEDS))]
    record = create_node_record(
        signer,
        addresses=[("127.70.0.9", 7433)],
        transport_key=bytes(32),
        seq=now_ms,
        expiry_ms=now_ms + 600_000,
    )
    identity = _MEMBERS.setdefault(writer.own_id, SigningKey(secrets.token_bytes(32)))
    member = create_member_record(
        identity, swarm=DHT_SWARM, addresses=[("127.70.0.9", 7433)], seq=now_ms, expiry_ms=now_ms + 600_000
    )
    t0 = trio.current_time()
    await writer.put(record.key, record.encode())
    await writer.announce(member.key, member.encode())
    found = await reader.find_node_record(signer.public_key)
    elapsed = trio.current_time() - t0
    held = await reader.request(victim, FindValue(node_id=reader.own_id, key=record.key), 1.0)
    in_store = False
    # a reply within the anti-amplification limit (§13.1) holds about 4 sampled member records: a member
    # the victim holds shows within a few dozen replies
    for _ in range(100):
        members = await reader.request(
            victim, GetMembers(node_id=reader.own_id, key=swarm_key(DHT_SWARM)), 1.0
        )
        if in_store := isinstance(members, MembersReply) and member.encode() in members.records:
            break
    checks = {
        "found": found == record,
        "held": isinstance(held, ValueReply) and held.value == record.encode(),
        "member": in_store,
    }
    _FAILED.update(k for k, v in checks.items() if not v)
    return all(checks.values()), elapsed


async def _honest_phase(nodes: list[DHT], victim: tuple[str, int], seconds: float) -> dict[str, float]:
    rng = random.Random(2)
    _FAILED.clear()
    results: list[tuple[bool, float]] = []
    deadline = trio.current_time() + seconds
    while trio.current_time() < deadline:
        results.append(await _honest_round(nodes, victim, rng))
    latency = [t for _, t in results]
    return {
        "rounds": len(results),
        "ok": sum(ok for ok, _ in results) / len(results),
        "p50": pct(latency, 0.5),
        "p95": pct(latency, 0.95),
        "mean": statistics.fmean(latency),
        "failed": " ".join(f"{k} {v}" for k, v in sorted(_FAILED.items())),
    }


async def _dht_run(args: argparse.Namespace) -> list[dict[str, Any]]:
    victim = _Victim()
    rows: list[dict[str, Any]] = []
    try:
        async with trio.open_nursery() as nursery:
            nodes = []
            for i in range(args.honest):
                node = DHT(secrets.token_bytes(20), host=f"127.70.0.{i + 2}", port=0, timeout=0.5)
                await nursery.start(node.run)
                nodes.append(node)
            for node in nodes:
                await node.bootstrap([victim.address])
            for mode in ("none", *DHT_MODES):
                before = victim.stats()
                proc = None
                if mode != "none":
                    proc = await trio.lowlevel.open_process(
                        [sys.executable, __file__, "--dht-attack", mode, victim.address[0], str(victim.address[1]),
                         str(args.seconds), str(args.rate)],
                        stdout=subprocess.PIPE,
                    )  # fmt: skip
                    await trio.sleep(0.2)  # the flood is on before honest nodes go
                honest = await _honest_phase(nodes, victim.address, args.seconds - 0.4)
                attacker = {"sent": 0, "bytes": 0, "cpu": 0.0, "taken": 0}
                if proc is not None:
                    assert proc.stdout is not None
                    out = b""
                    while chunk := await proc.stdout.receive_some():
                        out += chunk
                    await proc.wait()
                    attacker = json.loads(out)
                after = victim.stats()
                delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
                rows.append(
                    {"mode": mode, "honest": honest, "attacker": attacker, "victim": delta, "held": after}
                )
            nursery.cancel_scope.cancel()
    finally:
        victim.close()
    return rows


@section("dht")
def dht_section(args: argparse.Namespace) -> None:
    """Issue 15 item 6: floods of the DHT record store, and of undecodable datagrams, from one /24."""
    args.honest = 6 if args.smoke else 12
    args.seconds = 3.0 if args.smoke else 12.0
    args.rate = 1000.0  # datagrams/s per attacking address: five times the per-IP limit of 200/s
    rows = trio.run(_dht_run, args)
    print("== dht: one /24 (4 addresses) floods a DHT node at 5x its per-IP rate limit")
    print(
        f"{'attack':8} {'sent':>7} {'KB':>7} {'cpu s':>6} {'taken':>6} | {'v.decoded':>9} {'v.KB out':>8} "
        f"{'v.cpu s':>7} {'cpu x':>6} | {'honest ok':>9} {'p50 s':>6} {'p95 s':>6} {'slower':>6}"
    )
    base = rows[0]["honest"]
    for row in rows:
        a, v, h = row["attacker"], row["victim"], row["honest"]
        ratio = v["cpu"] / a["cpu"] if a["cpu"] else float("nan")
        print(
            f"{row['mode']:8} {a['sent']:7d} {a['bytes'] / 1000:7.0f} {a['cpu']:6.2f} {a['taken']:6d} | "
            f"{v.get('decoded', 0):9d} {v.get('bytes_out', 0) / 1000:8.0f} {v['cpu']:7.2f} {ratio:6.2f} | "
            f"{h['ok']:9.0%} {h['p50']:6.3f} {h['p95']:6.3f} {h['p50'] / base['p50']:6.2f}"
            + (f"  (failed: {h['failed']})" if h["failed"] else "")
        )
    held = rows[-1]["held"]
    print(
        f"victim's store at the end: {held.get('node_records', 0)} node records, "
        f"{held.get('member_records', 0)} member records, {held.get('plain_values', 0)} plain values, "
        f"{held.get('store_evicted', 0)} evicted; refused: "
        + ", ".join(f"{k[8:]} {v}" for k, v in sorted(held.items()) if k.startswith("refused_"))
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="short runs, for CI")
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append", help="run only this section")
    parser.add_argument("--dht-victim", metavar="HOST", help=argparse.SUPPRESS)
    parser.add_argument("--dht-attack", nargs=5, metavar="X", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dht_victim:
        trio.run(dht_victim, args.dht_victim)
        return
    if args.dht_attack:
        mode, host, port, seconds, rate = args.dht_attack
        dht_attacker(mode, host, int(port), float(seconds), float(rate))
        return
    print(
        f"bench/attack_dht.py{' --smoke' if args.smoke else ''}: pid {os.getpid()}, {time.strftime('%Y-%m-%d %H:%M')}"
    )
    for name in args.only or sorted(SECTIONS):
        SECTIONS[name](args)


if __name__ == "__main__":
    main()
