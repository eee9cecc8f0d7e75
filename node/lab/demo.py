"""``tidings demo``: N real nodes on loopback in one trio process, posting to one swarm.

Theory of operation. ``run_demo`` owns everything it makes and goes through these phases:

1. ``setup``: a ``tempfile.TemporaryDirectory`` (under ``parent``) holds one home per node, created on
   a worker thread; each node follows one or two random others (so follows travel as well as swarm
   membership).
2. ``starting``: the nodes start one by one, each on its own 127.x address with port 0 (as tests/nodes.py
   does, so per-host limits act as on a real network); node 0 is the DHT bootstrap of all the others,
   and every node joins swarm ``demo``. The phase ends when every node has a connection (at most
   ``warmup`` seconds).
3. ``posting``: for ``seconds`` seconds, every ``post_interval`` a random node appends a post through its
   own database thread, exactly as the running node stores anything.
4. ``draining``: no more posts; at most ``drain`` seconds until every node holds every post.

Then the nodes are cancelled together (each closes its sockets and store), the temporary homes are
removed, and a ``Summary`` is returned. ``stop`` (an event, set on Ctrl-C by the CLI) ends the current
phase at once and skips the drain. ``on_tick`` receives a ``Snapshot`` every ``tick`` seconds from the
start to the end, and once more with the final figures.

Delivery (``Snapshot.delivered_ratio``): every node is in the swarm, so every node wants every post.
The ratio is the copies held by nodes other than the author, over ``posted * (N - 1)``; 1.0 means every
node holds every post made so far.

No click here: the CLI (cli/commands_demo.py) and bench/swarm.py drive ``run_demo``.
"""

from __future__ import annotations

import contextlib
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from tidings.node.clock import SYSTEM_CLOCK, Clock, make_rng
from tidings.node.home import Home
from tidings.node.net.node import Node
from tidings.protocol import Follow, Post, SigningKey
from tidings.storage.store import Store

if TYPE_CHECKING:
    import random

__all__ = ["MAX_NODES", "MIN_NODES", "SWARM", "NodeRow", "Snapshot", "Summary", "run_demo"]

MIN_NODES = 2
MAX_NODES = 50
SWARM = "demo"

#: Quicker discovery than a long-running node needs: the demo lasts seconds, not days.
DEMO_LIMITS: dict[str, Any] = {
    "record_ttl": 600.0,
    "swarm_interval": 2.0,
    "dht_timeout": 0.5,
    "discovery_interval": 0.5,
    "poll_interval": 0.1,
    "max_per_range": 64,  # every demo node is in 127.0.0.0/24: one address range (spec §12.5)
}

_NAMES = (
    *("ada", "alan", "barbara", "claude", "dennis", "edsger", "frances", "grace", "hedy", "ivan"),
    *("john", "ken", "leslie", "linus", "margaret", "niklaus", "ole", "radia", "rob", "shafi"),
    *("sophie", "tim", "tony", "vint", "whitfield", "yukihiro"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeRow:
    """One node at one moment: its index, name, posts it holds (its own included), connections."""

    node: int
    name: str
    held: int
    peers: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """The demo at one moment (what ``on_tick`` receives)."""

    t: float
    phase: str
    posted: int
    dir: str
    nodes: tuple[NodeRow, ...]
    own: tuple[int, ...]  # posts made by each node

    @property
    def delivered(self) -> int:
        """Copies of posts held by nodes other than their author."""
        return sum(max(0, row.held - own) for row, own in zip(self.nodes, self.own, strict=True))

    @property
    def expected(self) -> int:
        return self.posted * (len(self.own) - 1)

    @property
    def delivered_ratio(self) -> float:
        return self.delivered / self.expected if self.expected else 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Summary:
    """The outcome: ``{"nodes", "posted", "delivered_ratio", "seconds"}`` as ``as_dict()``."""

    nodes: int
    posted: int
    delivered: int
    expected: int
    delivered_ratio: float
    seconds: float
    interrupted: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes,
            "posted": self.posted,
            "delivered_ratio": round(self.delivered_ratio, 4),
            "seconds": round(self.seconds, 1),
        }


@dataclass(slots=True)
class _Member:
    index: int
    name: str
    home: Home
    key: SigningKey
    node: Node | None = None
    posted: int = 0
    held: int = 0


def _name(i: int) -> str:
    return _NAMES[i % len(_NAMES)] + (str(i // len(_NAMES) + 1) if i >= len(_NAMES) else "")


def _host(i: int, spread: bool) -> str:
    """Node ``i``'s loopback address: 127.0.x.y per node where the OS routes all of 127/8 (Linux)."""
    if not spread:
        return "127.0.0.1"
    k = i + 2
    return f"127.0.{k // 250}.{k % 250 + 2}"


def _loopback_spreads() -> bool:
    """Whether 127.0.0.x other than .1 can be bound (Linux yes; macOS only with aliases)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.3", 0))
        except OSError:
            return False
    return True


def _make_homes(root: Path, n: int, rng: random.Random) -> list[_Member]:
    """Create ``n`` homes under ``root``; each node follows one or two random others."""
    members = []
    for i in range(n):
        home = Home(root / f"node{i}")
        members.append(_Member(i, _name(i), home, home.init(name=_name(i))))
    for m in members:
        others = [o for o in members if o is not m]
        with Store(m.home.store_path) as store:
            for other in rng.sample(others, min(len(others), rng.choice((1, 2)))):
                store.append(m.key, Follow(feed=other.key.public_key))
    return members


def _count_posts(store: Store) -> int:
    return int(store.read("SELECT count(*) FROM posts")[0][0])


class _Demo:
    def __init__(
        self,
        n: int,
        on_tick: Callable[[Snapshot], None],
        stop: trio.Event,
        rng: random.Random,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.n = n
        self.on_tick = on_tick
        self.stop = stop
        self.rng = rng
        self.clock = clock
        self.members: list[_Member] = []
        self.dir = ""
        self.phase = "setup"
        self.posted = 0
        self.started = clock.monotonic()

    def snapshot(self) -> Snapshot:
        rows = []
        for i in range(self.n):
            m = self.members[i] if i < len(self.members) else None
            node = m.node if m is not None else None
            rows.append(
                NodeRow(
                    node=i,
                    name=m.name if m is not None else _name(i),
                    held=m.held if m is not None else 0,
                    peers=len(node.connections) if node is not None else 0,
                )
            )
        own = tuple(m.posted for m in self.members) + (0,) * (self.n - len(self.members))
        return Snapshot(
            t=round(self.clock.monotonic() - self.started, 2),
            phase=self.phase,
            posted=self.posted,
            dir=self.dir,
            nodes=tuple(rows),
            own=own,
        )

    async def refresh(self) -> Snapshot:
        """Count the posts each running node holds (through its own database thread)."""

        async def count(m: _Member, node: Node) -> None:
            m.held = await node.db.call(_count_posts)

        async with trio.open_nursery() as nursery:  # at once: a busy node must not delay the others
            for m in self.members:
                if m.node is not None:
                    nursery.start_soon(count, m, m.node)
        return self.snapshot()

    async def ticker(self, tick: float) -> None:
        while True:
            self.on_tick(await self.refresh())
            await trio.sleep(tick)

    async def until(self, deadline: float, done: Callable[[], bool] | None = None) -> None:
        """Sleep until ``deadline`` (trio time), ``stop``, or ``done()`` (checked every 0.1 s)."""
        with trio.move_on_at(deadline):
            while not self.stop.is_set():
                if done is not None and done():
                    return
                with trio.move_on_after(0.1):
                    await self.stop.wait()

    async def start_nodes(self, nursery: trio.Nursery, spread: bool) -> None:
        self.phase = "starting"
        limits = dict(DEMO_LIMITS)
        if not spread:  # all on 127.0.0.1: per-host limits would cut the swarm off
            limits["max_per_host"] = 2 * self.n
        bootstrap: list[str] = []
        for m in self.members:
            if self.stop.is_set():
                return
            node = Node(
                m.home,
                m.key,
                listen=f"{_host(m.index, spread)}:0",
                bootstrap=bootstrap,
                swarms=[SWARM],
                limits=limits,
                clock=self.clock,
                rng=make_rng(self.rng.getrandbits(64)),
            )
            address = await nursery.start(node.run)
            m.node = node
            if not bootstrap:
                bootstrap = [address]

    async def drain(self, deadline: float) -> None:
        """Wait (counting afresh every 0.2 s) until every node holds every post, or ``deadline``."""
        while not self.stop.is_set() and self.clock.monotonic() < deadline:
            await self.refresh()
            if all(m.held >= self.posted for m in self.members):
                return
            await self.until(min(deadline, self.clock.monotonic() + 0.2))

    async def post_one(self) -> None:
        m = self.rng.choice(self.members)
        assert m.node is not None
        self.posted += 1
        m.posted += 1
        text = f"hello from node {m.index} (#{self.posted})"
        await m.node.db.call(Store.append, m.key, Post(text=text))
        m.held += 1
        m.node.wake()

    def summary(self, final: Snapshot, interrupted: bool) -> Summary:
        return Summary(
            nodes=self.n,
            posted=final.posted,
            delivered=final.delivered,
            expected=final.expected,
            delivered_ratio=final.delivered_ratio,
            seconds=self.clock.monotonic() - self.started,
            interrupted=interrupted,
        )


async def run_demo(
    n: int,
    seconds: float,
    on_tick: Callable[[Snapshot], None],
    *,
    tick: float = 1.0,
    stop: trio.Event | None = None,
    post_interval: float = 0.5,
    warmup: float = 15.0,
    drain: float = 5.0,
    parent: str | Path | None = None,
    seed: int | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> Summary:
    """Run the demo (module docstring): N nodes, ``seconds`` of posting, then clean up everything.

    ``on_tick`` is called every ``tick`` seconds and at the end; it must not block. ``stop`` ends the
    demo early (still cleanly). Raises ValueError for ``n`` outside MIN_NODES..MAX_NODES; errors of the
    nodes (cannot listen, disk full) come out of the nursery as trio reports them. ``seed`` makes the
    follows and who posts when repeatable; ``clock`` is the clock the phases are timed by.
    """
    if not MIN_NODES <= n <= MAX_NODES:
        raise ValueError(f"the demo runs {MIN_NODES} to {MAX_NODES} nodes, not {n}")
    if seconds < 0 or tick <= 0 or post_interval <= 0:
        raise ValueError("seconds must be >= 0, tick and post_interval > 0")
    demo = _Demo(n, on_tick, stop if stop is not None else trio.Event(), make_rng(seed), clock)
    with tempfile.TemporaryDirectory(prefix="tidings-demo-", dir=parent) as root:
        demo.dir = root
        spread = _loopback_spreads()
        async with trio.open_nursery() as nodes:
            async with trio.open_nursery() as work:
                work.start_soon(demo.ticker, tick)
                demo.members = await trio.to_thread.run_sync(_make_homes, Path(root), n, demo.rng)
                await demo.start_nodes(nodes, spread)
                await demo.until(
                    clock.monotonic() + warmup,
                    lambda: all(m.node is not None and m.node.connections for m in demo.members),
                )
                demo.phase = "posting"
                end = clock.monotonic() + seconds
                while not demo.stop.is_set() and clock.monotonic() < end:
                    await demo.post_one()
                    await demo.until(min(end, clock.monotonic() + post_interval))
                demo.phase = "draining"
                await demo.drain(clock.monotonic() + drain)
                work.cancel_scope.cancel()
            # the ticker is gone before the nodes stop: a call queued on a stopped database thread
            # would never be answered
            demo.phase = "done"
            final = await demo.refresh()
            nodes.cancel_scope.cancel()
        with contextlib.suppress(Exception):  # a display error must not skip the summary
            on_tick(final)
        return demo.summary(final, demo.stop.is_set())
