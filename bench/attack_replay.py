"""Attack benchmark: what a cheap adversary costs a real ``tidings run`` node (issue 15), one section each.

    python bench/attack_replay.py                  # every section at full size
    python bench/attack_replay.py --smoke          # every section, small and quick, for CI
    python bench/attack_replay.py --only forks     # one section

Each section starts a victim (a real ``tidings run`` process on 127.0.0.2 serving its web API) that
holds its own feed of ``--own`` posts and a followed feed of ``--followed`` posts, and measures, without
and with the attack in the same run: an honest follower's ``tidings sync`` of both feeds (a real
process into a fresh home, the best of ``--syncs``) and the latency of ``GET /api/status``. The attacker
is a scripted peer with the real handshake (in this process, on its own thread); printed beside the
victim's: its bytes sent and received and its CPU, the victim's CPU, both amplifications (victim bytes
sent / attacker bytes sent, victim CPU / attacker CPU), and whether and when it was cut off. A section
is a function ``(args, root) -> None`` in ``SECTIONS``; another attack is another entry there.

``forks`` (issue 15 item 2): one valid fork proof of a throwaway feed, 100 copies a frame, ``--rate``
frames a second. ``clocks`` (issue 15 item 3): ``clock [[victim_feed, 0, 0]]`` again and again,
``--clock-rate`` a second, after one first clock whose answer (the whole feed, what any new follower
gets) is counted apart.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trio
from attack_victim import TIDINGS, Victim
from tidings.node.addresses import parse_address
from tidings.node.home import Home
from tidings.node.net.transport import ChannelClosed, SecureChannel
from tidings.protocol import Follow, Post, SigningKey
from tidings.protocol.entry import ForkProof, create_entry
from tidings.protocol.replication import CaughtUp, Clock, ClockItem, Forks, Hello, Replication
from tidings.storage.store import Store

ATTACKER_HOST = "127.0.5.1"


# -- the victim, the honest follower, the web client ------------------------------------------------------
def build(root: Path, own: int, followed: int) -> tuple[Home, Home, bytes]:
    """A victim with ``own`` posts of its own and ``followed`` of a feed it follows; a follower of it."""
    victim, follower = Home(root / "victim"), Home(root / "follower")
    kv, kf = victim.init(name="victim"), follower.init(name="follower")
    friend = SigningKey(os.urandom(32))
    with Store(victim.store_path) as s:
        s.append_many(kv, [Post(text=f"victim post {i} " + "lorem ipsum " * 12) for i in range(own)])
        s.append_many(friend, [Post(text=f"friend post {i} lorem ipsum") for i in range(followed)])
        s.append(kv, Follow(feed=friend.public_key))
    with Store(follower.store_path) as s:
        s.append(kf, Follow(feed=kv.public_key))
    return victim, follower, kv.public_key


def honest_sync(follower: Home, root: Path, address: str, tag: str, runs: int) -> float:
    """Best of ``runs`` times for a fresh copy of the follower to ``tidings sync`` from the victim."""
    best = float("inf")
    for i in range(runs):
        home = root / f"follower-{tag}-{i}"
        shutil.copytree(follower.path, home)
        start = time.perf_counter()
        out = subprocess.run([*TIDINGS, "--home", str(home), "sync", address, "--timeout", "120"],
                             capture_output=True, text=True)  # fmt: skip
        took = time.perf_counter() - start
        if out.returncode == 0:
            best = min(best, took)
        else:
            print(f"honest sync {tag}-{i} failed after {took:.1f} s: {out.stderr.strip()[-300:]}")
    return best


def honest_web(victim: Victim, requests: int) -> tuple[float, float]:
    """p50 and p95 (ms) of ``GET /api/status``."""
    times = []
    with httpx.Client(base_url=victim.url, timeout=10) as client:
        for _ in range(requests):
            start = time.perf_counter()
            client.get("/api/status", headers={"authorization": f"Bearer {victim.token}"})
            times.append((time.perf_counter() - start) * 1000)
            time.sleep(0.02)
    times.sort()
    return statistics.median(times), times[max(0, int(len(times) * 0.95) - 1)]


# -- the attacker: a scripted peer with the real handshake, on its own thread ------------------------------
@dataclass
class Attacker:
    """Replays ``frames`` at ``rate`` a second for ``duration`` seconds; when cut off, it comes back
    from the next address (127.0.5.1, .2, ...), as an attacker with a range of addresses would."""

    address: str
    rate: float
    duration: float
    first: Callable[[Replication], list[bytes]] | None = None
    make: Callable[[Replication], list[bytes]] = field(default=lambda rep: [])
    frames: int = 0
    #: bytes sent and received in all, and for the first clocks' answers (counted apart)
    sent: int = 0
    received: int = 0
    first_sent: int = 0
    first_received: int = 0
    cpu: float = 0.0
    #: seconds each connection lasted before the victim cut it off
    cut_offs: list[float] = field(default_factory=list)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=lambda: trio.run(self._run))
        thread.start()
        return thread

    async def _run(self) -> None:
        cpu = time.thread_time()
        deadline = trio.current_time() + self.duration
        n = 0
        while trio.current_time() < deadline:
            n += 1
            with trio.move_on_at(deadline):
                await self._session(f"127.0.5.{n}")
        self.cpu = time.thread_time() - cpu

    async def _session(self, source: str) -> None:
        host, port = parse_address(self.address)
        stream = await trio.open_tcp_stream(host, port, local_address=source)
        key = SigningKey(os.urandom(32))
        start = time.perf_counter()
        channel: SecureChannel | None = None
        try:
            channel = await SecureChannel.handshake(
                stream, initiator=True, identity=key, transport_private=os.urandom(32)
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(functools.partial(channel.run_writer, quiet=True))
                await self._replay(channel, nursery)
            self.cut_offs.append(time.perf_counter() - start)
        except (ChannelClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            self.cut_offs.append(time.perf_counter() - start)
        finally:
            if channel is not None:
                self.sent += channel.bytes_out
                self.received += channel.bytes_in
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _replay(self, channel: SecureChannel, nursery: trio.Nursery) -> None:
        rep = Replication()
        await channel.send(rep.send(Hello(agent="tidings")))
        rep.receive(await channel.receive())
        if self.first is not None:
            await channel.send(self.first(rep))
            while not isinstance(rep.receive(await channel.receive()), CaughtUp):
                pass
            await channel.wait_sent()
            self.first_sent += channel.bytes_out
            self.first_received += channel.bytes_in
        closed = trio.Event()

        async def drain() -> None:
            try:
                while True:
                    await channel.receive()
            except (ChannelClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                closed.set()

        nursery.start_soon(drain)
        frames = self.make(rep)
        try:
            while not closed.is_set():
                await channel.send(frames)
                self.frames += 1
                await trio.sleep(1 / self.rate)
        except (ChannelClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        await closed.wait()
        nursery.cancel_scope.cancel()


def fork_proof() -> bytes:
    key = SigningKey(os.urandom(32))
    one = create_entry(key, seq=1, backlink=None, skiplink=None, timestamp=1, payload=b"\x80")
    two = create_entry(key, seq=1, backlink=None, skiplink=None, timestamp=2, payload=b"\x80")
    return ForkProof(first=one, second=two).encode()


def run_section(args: argparse.Namespace, root: Path, name: str, attacker_for: Callable[[str, bytes], Attacker]) -> None:  # fmt: skip
    victim_home, follower, feed = build(root, args.own, args.followed)
    victim = Victim(victim_home)
    try:
        cpu0 = victim.cpu()
        base_web = honest_web(victim, args.requests)
        base_sync = honest_sync(follower, root, victim.address, "base", args.syncs)
        honest_cpu = victim.cpu() - cpu0  # the honest work alone, to tell the attack's share apart
        attacker = attacker_for(victim.address, feed)
        cpu0, start = victim.cpu(), time.perf_counter()
        thread = attacker.start()
        time.sleep(0.3)
        web = honest_web(victim, args.requests)
        sync = honest_sync(follower, root, victim.address, "attacked", args.syncs)
        thread.join()
        elapsed = time.perf_counter() - start
        cpu = victim.cpu() - cpu0
        log = victim.stop()
    except BaseException:
        victim.stop()
        raise
    kb = 1024
    lasted = statistics.median(attacker.cut_offs) if attacker.cut_offs else float("nan")
    banned = log.count("cutting off 127.0.5.")
    print(f"== {name}: {attacker.frames} frames at up to {attacker.rate:.0f}/s for {elapsed:.1f} s, over "
          f"{len(attacker.cut_offs)} connections from as many addresses; {banned} cut off and banned, "
          f"each after {lasted:.1f} s (median)")  # fmt: skip
    if attacker.first is not None:
        print(f"first clocks (what any new follower gets, once per connection): "
              f"{attacker.first_sent / kb:.1f} KB sent, {attacker.first_received / kb:.1f} KB answered")  # fmt: skip
    replay_out = attacker.sent - attacker.first_sent
    replay_in = attacker.received - attacker.first_received
    attack_cpu = max(cpu - honest_cpu, 0.0)
    print(f"attacker: {attacker.sent / kb:.1f} KB sent ({replay_out / kb:.1f} KB replayed), "
          f"{attacker.received / kb:.1f} KB received, CPU {attacker.cpu:.2f} s")  # fmt: skip
    print(f"victim:   CPU {cpu:.2f} s over {elapsed:.1f} s; the same honest work without the attack "
          f"took {honest_cpu:.2f} s, so ~{attack_cpu:.2f} s went to the attacker")  # fmt: skip
    print(f"amplification: bytes victim/attacker {attacker.received / max(attacker.sent, 1):.2f}x in all, "
          f"{replay_in / max(replay_out, 1):.2f}x for the replay; "
          f"CPU victim/attacker ~{attack_cpu / max(attacker.cpu, 1e-3):.1f}x")  # fmt: skip
    print("| honest client | without attack | with attack |")
    print("|---|---:|---:|")
    print(f"| tidings sync of {args.own + args.followed} entries, best of {args.syncs} (s) | {base_sync:.2f} | {sync:.2f} |")  # fmt: skip
    print(f"| GET /api/status p50 / p95 (ms) | {base_web[0]:.1f} / {base_web[1]:.1f} | {web[0]:.1f} / {web[1]:.1f} |")  # fmt: skip
    if "Traceback" in log:
        print("victim log had a traceback:\n" + log[-2000:])


# -- section: replayed fork proofs (issue 15 item 2) -------------------------------------------------------
def forks_section(args: argparse.Namespace, root: Path) -> None:
    proof = fork_proof()

    def attacker(address: str, feed: bytes) -> Attacker:
        return Attacker(
            address, args.rate, args.duration, make=lambda rep: rep.send(Forks(proofs=[proof] * 100))
        )

    run_section(args, root, "forks: one valid fork proof of a throwaway feed, 100 a frame", attacker)


# -- section: replayed clocks (issue 15 item 3) ------------------------------------------------------------
def clocks_section(args: argparse.Namespace, root: Path) -> None:
    def attacker(address: str, feed: bytes) -> Attacker:
        def clock(rep: Replication) -> list[bytes]:
            return rep.send(Clock(items=[ClockItem(feed, 0, 0)]))

        return Attacker(address, args.clock_rate, args.duration, first=clock, make=clock)

    run_section(args, root, "clocks: clock [[victim_feed, 0, 0]] again and again", attacker)


#: The attacks, by name; each runs against its own fresh victim.
SECTIONS: dict[str, Callable[[argparse.Namespace, Path], None]] = {
    "forks": forks_section,
    "clocks": clocks_section,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="small and quick, for CI")
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append", help="run only this section")
    parser.add_argument(
        "--own", type=int, default=1000, help="the victim's own posts (the replayed clock's feed)"
    )
    parser.add_argument("--followed", type=int, default=10000, help="posts of the feed it follows")
    parser.add_argument("--syncs", type=int, default=3, help="honest syncs per phase (the best counts)")
    parser.add_argument("--requests", type=int, default=40, help="honest web requests per phase")
    parser.add_argument("--duration", type=float, default=30.0, help="longest an attack runs (s)")
    parser.add_argument("--rate", type=float, default=100.0, help="fork frames a second")
    parser.add_argument("--clock-rate", type=float, default=500.0, help="clocks a second")
    args = parser.parse_args()
    if args.smoke:
        args.own, args.followed, args.syncs, args.requests, args.duration = 200, 1000, 1, 10, 8.0
    for name in args.only or list(SECTIONS):
        with tempfile.TemporaryDirectory(prefix="tidings-attack-") as tmp:
            SECTIONS[name](args, Path(tmp))


if __name__ == "__main__":
    main()
