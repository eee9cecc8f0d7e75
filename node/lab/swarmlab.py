"""A swarm laboratory: many real nodes in one trio process, for swarm tests and ``bench/swarm.py``.

Theory of operation. ``SwarmLab`` owns a folder with one home per node. ``make_homes`` creates the
identities (each following ``follows`` random others, as people do) and joins every node to one swarm.
``run`` (used as ``async with lab.running(nursery)``) starts nodes on their own 127.x addresses with
port 0 — real TCP and UDP sockets, real SQLite files, the real DHT — node 0 first, as the bootstrap of
all the others. Each node runs in its own cancel scope, so ``kill(i)`` stops one node abruptly (its
sockets close, its store stays) and ``start(i)`` brings it back on the same address when possible.

Measurements: ``post(i)`` appends a post through node i's database thread and remembers the wall-clock
time; ``arrivals()`` reads, from every running node's store, when each post was stored there (the
``received`` column), so the latency of a delivery is ``received - posted`` on one machine's clock.
``copies()`` is the number of entries sent over all connections, ``duplicates()`` the entries received
that were held already.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from tidings.node.clock import SYSTEM_CLOCK, Clock, make_rng
from tidings.node.home import Home
from tidings.node.net.node import Node
from tidings.protocol import Follow, Post, SigningKey
from tidings.storage import dht as dht_store
from tidings.storage.store import Store

__all__ = ["LAB_LIMITS", "LabNode", "SwarmLab"]

#: Quicker discovery than a long-running node needs: a lab lasts seconds, not days.
LAB_LIMITS: dict[str, Any] = {
    "record_ttl": 600.0,
    "swarm_interval": 5.0,
    "dht_timeout": 0.5,
    "discovery_interval": 0.5,
    "poll_interval": 0.1,
    # every lab node is in 127.1.0.0/24: one address range would hold all of a node's inbound slots
    # (spec §12.5), which on a real network is one site
    "max_per_range": 64,
}


def lab_host(i: int) -> str:
    k = i + 2
    return f"127.1.{k // 250}.{k % 250 + 2}"


@dataclass
class LabNode:
    index: int
    home: Home
    key: SigningKey
    host: str
    node: Node | None = None
    scope: trio.CancelScope | None = None
    port: int = 0
    stopped: trio.Event = field(default_factory=trio.Event)


class SwarmLab:
    def __init__(
        self,
        root: Path,
        n: int,
        *,
        swarm: str = "lab",
        follows: int = 5,
        seed: int | None = None,
        limits: dict[str, Any] | None = None,
        host: Any = lab_host,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """``seed`` makes the follows repeatable; ``clock`` is the clock posts are timed by."""
        self.root = Path(root)
        self.n = n
        self.swarm = swarm
        self.follows = follows
        self.rng = make_rng(seed)
        self.clock = clock
        self.limits = {**LAB_LIMITS, **(limits or {})}
        self.host = host
        self.members: list[LabNode] = []
        self.posts: dict[bytes, tuple[int, float]] = {}  # entry hash -> (author index, posted at, s)
        self._nursery: trio.Nursery | None = None
        self.bootstrap: list[str] = []

    # -- setup -----------------------------------------------------------------------------------------
    def make_homes(self) -> None:
        for i in range(self.n):
            home = Home(self.root / f"node{i}")
            self.members.append(LabNode(i, home, home.init(name=f"node{i}"), self.host(i)))
        for m in self.members:
            others = [o for o in self.members if o is not m]
            with Store(m.home.store_path) as store:
                for other in self.rng.sample(others, min(len(others), self.follows)):
                    store.append(m.key, Follow(feed=other.key.public_key))
                dht_store.join_swarm(store, self.swarm, self.clock.wall_ms())

    @contextlib.asynccontextmanager
    async def running(self, nursery: trio.Nursery, *, count: int | None = None) -> AsyncIterator[SwarmLab]:
        """Start the first ``count`` nodes (all by default); stop every node on exit."""
        self._nursery = nursery
        try:
            for i in range(self.n if count is None else count):
                await self.start(i)
            yield self
        finally:
            for m in self.members:
                if m.scope is not None:
                    m.scope.cancel()

    async def start(self, i: int, *, extra_limits: dict[str, Any] | None = None) -> Node:
        m = self.members[i]
        assert self._nursery is not None and m.node is None
        node = Node(
            m.home,
            m.key,
            listen=f"{m.host}:{m.port}",
            bootstrap=[b for b in self.bootstrap if not b.startswith(m.host + ":")],
            limits={**self.limits, **(extra_limits or {})},
            clock=self.clock,
            rng=make_rng(self.rng.getrandbits(64)),
        )
        m.stopped = trio.Event()

        async def run(task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with trio.CancelScope() as scope:
                    m.scope = scope
                    await node.run(task_status=task_status)
            finally:
                m.node = None
                m.scope = None
                m.stopped.set()

        address = await self._nursery.start(run)
        m.node = node
        m.port = int(address.rpartition(":")[2])
        if not self.bootstrap:
            self.bootstrap = [address]
        return node

    async def kill(self, i: int) -> None:
        """Stop node ``i`` at once (as a crash or a pulled cable would, minus the store)."""
        m = self.members[i]
        if m.scope is not None:
            m.scope.cancel()
            await m.stopped.wait()

    def running_nodes(self) -> list[LabNode]:
        return [m for m in self.members if m.node is not None]

    # -- posting and measuring -------------------------------------------------------------------------
    async def post(self, i: int, text: str | None = None) -> bytes:
        m = self.members[i]
        assert m.node is not None
        entry = await m.node.db.call(Store.append, m.key, Post(text=text or f"post from node {i}"))
        self.posts[entry.hash] = (i, self.clock.wall_ms() / 1000)
        m.node.wake()
        return entry.hash

    async def arrivals(self, among: list[int] | None = None) -> dict[bytes, dict[int, float]]:
        """Post hash -> {node index: seconds from posting to stored there}, for running nodes."""
        out: dict[bytes, dict[int, float]] = {h: {} for h in self.posts}
        hashes = list(self.posts)
        wanted = set(among) if among is not None else None

        def query(store: Store) -> list[tuple[bytes, int]]:
            rows: list[tuple[bytes, int]] = []
            for k in range(0, len(hashes), 500):
                part = hashes[k : k + 500]
                marks = ",".join("?" * len(part))
                rows += [
                    (bytes(h), int(r))
                    for h, r in store.read(
                        f"SELECT hash, received FROM entries WHERE hash IN ({marks})", part
                    )
                ]
            return rows

        async def collect(m: LabNode) -> None:
            if m.node is None:
                return
            with contextlib.suppress(Exception):  # a node stopping meanwhile simply has no answer
                for h, received in await m.node.db.call(query):
                    out[h][m.index] = max(0.0, received / 1000 - self.posts[h][1])

        async with trio.open_nursery() as nursery:
            for m in self.members:
                if wanted is None or m.index in wanted:
                    nursery.start_soon(collect, m)
        return out

    async def wait_delivered(self, among: list[int], timeout: float) -> bool:
        """Wait until every post is stored on every node of ``among``; False on timeout."""
        with trio.move_on_after(timeout):
            while True:
                arr = await self.arrivals(among)
                if all(len(arr[h]) >= len(among) for h in arr):
                    return True
                await trio.sleep(0.2)
        return False

    def copies(self) -> int:
        return sum(m.node.sent_entries for m in self.members if m.node is not None)

    def duplicates(self) -> int:
        return sum(m.node.duplicates for m in self.members if m.node is not None)
