"""Attacks on a node, measured (issue 15): per attack, what it costs the attacker against what it costs
the victim, and an honest follower's sync time without and with the attack, side by side in one run.

    python bench/attack_idle.py                # every section, full size
    python bench/attack_idle.py --smoke        # small and quick, for CI
    python bench/attack_idle.py idle           # only the named sections

Each section is one self-contained function in ``SECTIONS``. The victim is a real ``tidings run``
process (its CPU read from ``/proc``); each attacker is a child process running this file with
``--attacker`` (its CPU from ``wait4``), so neither is charged for the other; the honest follower is a
fresh home that follows the victim and runs ``Node.sync_once`` in this process. Goal: no attack makes the
victim spend more than 10x what it costs the attacker, and none slows an honest sync by more than 2x.

Sections:
- ``idle`` (item 1): 8 addresses x 8 connections of throwaway identities that do the real handshake,
  send ``hello`` and then nothing, reconnecting whenever the victim closes one; then the same with a
  65,535-byte frame declared and sent a byte a second (slowloris after the handshake).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TIDINGS = [sys.executable, "-m", "tidings.cli.main"]
VICTIM_HOST = "127.0.0.2"


# -- shared helpers --------------------------------------------------------------------------------------


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a running process (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_victim(root: Path, entries: int, limits: dict[str, Any]) -> tuple[subprocess.Popen[str], str, Any]:
    """A ``tidings run`` process whose home holds ``entries`` posts; (process, address, home)."""
    from tidings.node.home import Home
    from tidings.protocol import Post
    from tidings.storage.store import Store

    home = Home(root / "victim")
    key = home.init(name="victim")
    with Store(home.store_path) as s:
        s.append_many(key, [Post(text=f"post {i} " + "lorem ipsum " * 10) for i in range(entries)])
    home.config_path.write_text("[limits]\n" + "".join(f"{k} = {v}\n" for k, v in limits.items()))
    proc = subprocess.Popen(
        [*TIDINGS, "--home", str(home.path), "run", "--listen", f"{VICTIM_HOST}:0", "--http", "off"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on"):
        raise SystemExit(f"victim did not start: {line}{proc.stderr.read() if proc.stderr else ''}")
    return proc, line.split()[-1], home


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)


def honest_sync(root: Path, victim_home: Any, address: str) -> float:
    """Seconds an honest follower (a fresh home) takes to sync the victim's feed whole."""
    import trio
    from tidings.node.home import Home
    from tidings.node.net.node import Node
    from tidings.protocol import Follow
    from tidings.storage.store import Store

    home = Home(root / f"honest-{os.urandom(4).hex()}")
    key = home.init(name="honest")
    victim = victim_home.public_key()
    with Store(home.store_path) as s:
        s.append(key, Follow(feed=victim))
    node = Node(home, key, listen="127.0.0.3:0")
    start = time.perf_counter()
    trio.run(node.sync_once, address)
    took = time.perf_counter() - start
    with Store(home.store_path) as s, Store(victim_home.store_path) as v:
        mine = s.read("SELECT count(*) FROM entries WHERE author = ?", (victim,))[0][0]
        theirs = v.read("SELECT count(*) FROM entries WHERE author = ?", (victim,))[0][0]
    if mine != theirs:
        raise SystemExit(f"honest sync incomplete: {mine} of {theirs} entries")
    return took


def counters(home: Any) -> dict[str, int]:
    """The running victim's counters from ``node.json`` (refreshed every second)."""
    info = home.running_node() or {}
    return dict(info.get("counters", {}))


def run_attacker(
    mode: str, address: str, seconds: float, hosts: list[str], per_host: int
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--attacker",
            mode,
            "--target",
            address,
            "--seconds",
            str(seconds),
            "--per-host",
            str(per_host),
            *[a for h in hosts for a in ("--host", h)],
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "inf"


# -- section: idle connections and slow frames (issue 15 item 1) -------------------------------------------


def section_idle(root: Path, smoke: bool) -> None:
    """Item 1: idle throwaway peers and slow frames against the inbound slots of spec §12.5."""
    entries = 2000 if smoke else 20000
    # smoke: short deadlines, so the cuts show within a CI-sized run; full: the defaults
    limits: dict[str, Any] = {"idle_timeout": 2.0, "frame_timeout": 2.0} if smoke else {}
    seconds = 8.0 if smoke else 25.0
    proc, address, home = start_victim(root / "idle", entries, limits)
    try:
        honest_sync(root, home, address)  # warm-up (first-run costs are not the attack's)
        cpu0 = process_cpu(proc.pid)
        alone = min(honest_sync(root, home, address) for _ in range(2))
        per_sync = (process_cpu(proc.pid) - cpu0) / 2  # the victim's CPU to serve one honest sync
        print(f"victim: {entries} entries at {address}; limits {limits or 'defaults'}")
        for n, mode in enumerate(("idle", "slowframe")):
            hosts = [f"127.{60 + 10 * n + i}.0.2" for i in range(8)]  # fresh addresses: not banned yet
            before = counters(home)
            cpu0 = process_cpu(proc.pid)
            attacker = run_attacker(mode, address, seconds, hosts, 8)
            assert attacker.stdout is not None
            if attacker.stdout.readline().strip() != "ready":
                raise SystemExit(f"attacker failed: {attacker.stderr.read() if attacker.stderr else ''}")
            time.sleep(1.5)  # past the eviction grace of the attacker's slots
            attacked = min(honest_sync(root, home, address) for _ in range(2))
            _, status, usage = os.wait4(attacker.pid, 0)
            victim_cpu = max(0.0, process_cpu(proc.pid) - cpu0 - 2 * per_sync)
            out = attacker.stdout.read()
            if status != 0 or not out.strip():
                raise SystemExit(
                    f"attacker failed ({status}): {attacker.stderr.read() if attacker.stderr else ''}"
                )
            report = json.loads(out)
            time.sleep(1.1)  # node.json is refreshed every second
            after = counters(home)
            attacker_cpu = usage.ru_utime + usage.ru_stime
            closes = report["closed_after"]
            print(
                f"[{mode}] attacker: {len(hosts)} addresses x 8, {seconds:.0f} s, reconnecting: "
                f"{report['attempts']} connects, {report['accepted']} past hello, {report['refused']} refused, "
                f"{len(closes)} closed by the victim after hello"
                + (
                    f" (after {statistics.median(closes):.1f} s median, {max(closes):.1f} s max)"
                    if closes
                    else ""
                )
            )
            print(
                f"[{mode}] bytes: attacker sent {report['bytes_out'] / 1024:.0f} KB, victim sent "
                f"{report['bytes_in'] / 1024:.0f} KB ({ratio(report['bytes_in'], report['bytes_out'])}); "
                f"CPU: attacker {attacker_cpu:.2f} s, victim {victim_cpu:.2f} s "
                f"({ratio(victim_cpu, attacker_cpu)} of the attacker's; serving the honest syncs left out)"
            )
            print(
                f"[{mode}] victim: {after.get('evicted', 0) - before.get('evicted', 0)} evicted, "
                f"{after.get('idle_cut', 0) - before.get('idle_cut', 0)} cut idle, "
                f"{after.get('inbound', 0)} inbound after"
            )
            print(
                f"[{mode}] honest sync of {entries} entries: {alone:.2f} s alone, {attacked:.2f} s under attack "
                f"({ratio(attacked, alone)}; goal <= 2x)"
            )
    finally:
        stop(proc)


SECTIONS: dict[str, Callable[[Path, bool], None]] = {"idle": section_idle}


# -- the attacker process ------------------------------------------------------------------------------------


def attacker_main(args: argparse.Namespace) -> None:
    """Open ``per_host`` connections from each host and keep them open (reconnecting when closed) for
    ``seconds``; print ``ready`` once the first round is open, then a JSON report."""
    import trio
    from tidings.node.addresses import parse_address
    from tidings.node.net.transport import ChannelClosed, SecureChannel
    from tidings.protocol import SigningKey
    from tidings.protocol.replication import Hello, Replication

    stats: dict[str, Any] = {
        "attempts": 0,
        "accepted": 0,
        "refused": 0,
        "closed_after": [],
        "bytes_out": 0,
        "bytes_in": 0,
    }
    h, p = parse_address(args.target)
    lost = (ChannelClosed, trio.BrokenResourceError, trio.ClosedResourceError, OSError)

    async def one(host: str) -> None:
        stats["attempts"] += 1
        try:
            stream = await trio.open_tcp_stream(h, p, local_address=host)
        except OSError:
            stats["refused"] += 1
            await trio.sleep(0.5)
            return
        try:
            channel = await SecureChannel.handshake(
                stream, initiator=True, identity=SigningKey(os.urandom(32)), transport_private=os.urandom(32)
            )
            async with channel.writing():
                await channel.send(Replication().send(Hello(agent="tidings")))
                await channel.wait_sent()  # our writer is done before the raw bytes below go out
                await channel.receive()
                stats["accepted"] += 1
                opened = trio.current_time()
                if args.attacker == "slowframe":
                    await stream.send_all((65535).to_bytes(4, "big"))
                async with trio.open_nursery() as nursery:
                    if args.attacker == "slowframe":
                        nursery.start_soon(drip, stream)
                    await hold(channel)
                    nursery.cancel_scope.cancel()
                stats["closed_after"].append(round(trio.current_time() - opened, 2))
        except lost:
            stats["refused"] += 1
            await trio.sleep(0.5)  # refused before hello: try again a little later
        finally:
            stats["bytes_out"] += channel_bytes(stream, "out")
            stats["bytes_in"] += channel_bytes(stream, "in")
            with trio.move_on_after(1):
                await stream.aclose()

    async def hold(channel: Any) -> None:
        """Read (and drop) what the victim sends until it closes the connection."""
        try:
            while True:
                await channel.receive()
        except lost:
            return

    async def drip(stream: Any) -> None:
        try:
            while True:
                await stream.send_all(b"x")
                await trio.sleep(1.0)
        except lost:
            return

    async def keep(host: str) -> None:
        while True:
            await one(host)

    async def main() -> None:
        with trio.move_on_after(args.seconds):
            async with trio.open_nursery() as nursery:
                for host in args.host:
                    for _ in range(args.per_host):
                        await one_first(host, nursery)
                with trio.move_on_after(5):  # until every first connection got past hello or was refused
                    while stats["accepted"] + stats["refused"] < len(args.host) * args.per_host:
                        await trio.sleep(0.05)
                print("ready", flush=True)

    async def one_first(host: str, nursery: trio.Nursery) -> None:
        nursery.start_soon(keep, host)
        await trio.sleep(0.005)  # opened in order, as an attacker's script would

    trio.run(main)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    stats["cpu"] = usage.ru_utime + usage.ru_stime
    print(json.dumps(stats), flush=True)


def channel_bytes(stream: Any, direction: str) -> int:
    """Bytes the kernel counted on a TCP socket (Linux ``TCP_INFO``), 0 when unknown."""
    import socket
    import struct

    try:
        info = stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
    except (AttributeError, OSError):
        return 0
    if len(info) < 136:
        return 0
    # struct tcp_info: tcpi_bytes_acked (u64) at offset 120, tcpi_bytes_received (u64) at offset 128
    acked, received = struct.unpack_from("<QQ", info, 120)
    return int(acked if direction == "out" else received)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "sections", nargs="*", help=f"sections to run (default: all of {', '.join(SECTIONS)})"
    )
    parser.add_argument("--smoke", action="store_true", help="small and quick, for CI")
    parser.add_argument("--attacker", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=10.0, help=argparse.SUPPRESS)
    parser.add_argument("--host", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--per-host", type=int, default=8, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attacker:
        attacker_main(args)
        return
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown sections: {', '.join(unknown)} (known: {', '.join(SECTIONS)})")
    with tempfile.TemporaryDirectory(prefix="tidings-attacks-") as tmp:
        for name in args.sections or list(SECTIONS):
            print(f"== {name}")
            SECTIONS[name](Path(tmp), args.smoke)


if __name__ == "__main__":
    main()
