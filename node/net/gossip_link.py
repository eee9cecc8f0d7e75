"""One connection's side of the node's gossip machine (spec/protocol.md §12.7, §12.8.5).

The node owns one ``protocol.gossip.Gossip``; each connection has a ``GossipLink`` that opens and
closes the connection in it, feeds it the peer's ``have`` notes (with the heads it needs, read from the
store) and carries out its actions on the connection: one-item clocks (graft, prune, repair, resume),
batched ``have`` notes, and the store reads the machine asks for before a graft or a hole repair. The
node's ``GossipTimer`` task sleeps until the machine's next timer and hands the actions of its timers
to the links' ``post``; each link's ``run`` carries them out in its connection's nursery, so a slow
peer delays only its own.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import trio
from tidings.node.clock import Clock
from tidings.protocol import feed_id_text
from tidings.protocol.gossip import (
    Action,
    Cause,
    CheckGraft,
    CheckHole,
    Gossip,
    GossipLimits,
    SendClock,
    SendHave,
)
from tidings.protocol.replication import ClockItem
from tidings.storage import gossip as stored
from tidings.storage.thread import DatabaseThread

__all__ = ["GossipLink", "GossipTimer", "gossip_limits"]

log = logging.getLogger("tidings.peer")


class GossipNode(Protocol):
    """What a link needs of the node."""

    gossip: Gossip
    db: DatabaseThread
    clock: Clock
    wanted: set[bytes]

    async def head(self, feed: bytes) -> int: ...

    def wake_gossip(self) -> None: ...


class GossipConnection(Protocol):
    """What a link needs of its connection."""

    address: str

    async def send_clock(self, items: list[ClockItem]) -> None: ...

    async def send_have(self, notes: Sequence[tuple[bytes, int]]) -> None: ...


class GossipLink:
    """Feeds one connection's events to the node's gossip machine and carries out its actions."""

    def __init__(self, node: GossipNode, conn: GossipConnection) -> None:
        self.node = node
        self.conn = conn
        self.id = id(conn)
        # timer actions wait here for ``run``; the machine holds at most one timer per feed and kind
        # for a connection, so it bounds the queue
        self._send, self._recv = trio.open_memory_channel[Action](math.inf)

    def open(self, *, author: bytes, version: int, one_shot: bool) -> None:
        """The hello exchange is over: the machine knows the connection from now on."""
        self.node.gossip.open(self.id, author=author, version=version, one_shot=one_shot)

    def close(self) -> None:
        """The connection ended: it leaves the eager sets (§12.7); later timer actions are dropped."""
        self.node.gossip.close(self.id)
        self._send.close()

    @property
    def lazy_in(self) -> frozenset[bytes]:
        """Feeds we asked this peer to push lazily (§12.7)."""
        return self.node.gossip.lazy_in(self.id)

    def post(self, action: Action) -> None:
        """Queue an action of the machine's timer for ``run`` (dropped once the connection ended)."""
        with contextlib.suppress(trio.ClosedResourceError):
            self._send.send_nowait(action)

    async def run(self) -> None:
        """Carry out the timer actions posted for this connection, one after another."""
        async for action in self._recv:
            await self.act(action)

    async def on_have(self, notes: Sequence[tuple[bytes, int]]) -> None:
        """The peer's ``have`` notes: the machine schedules grafts of wanted feeds we lack (§12.7)."""
        machine, node = self.node.gossip, self.node
        heads: dict[bytes, int] = {}
        for feed, _ in notes:  # our heads of the wanted feeds, unless a graft of the feed waits anyway
            if feed in node.wanted and feed not in heads:
                heads[feed] = 0 if machine.grafting(self.id, feed) else await node.head(feed)
        machine.have_received(self.id, notes, heads, node.clock.monotonic())
        node.wake_gossip()

    async def act(self, action: Action) -> None:
        """Carry out one action of the machine on this connection."""
        machine, db = self.node.gossip, self.node.db
        if isinstance(action, CheckGraft):
            head = (await db.call(stored.heads, {action.feed}))[action.feed]
            for follow in machine.graft_checked(self.id, action.feed, head=head):
                await self.act(follow)
        elif isinstance(action, CheckHole):
            below = await db.call(stored.held_below, action.feed, action.seq)
            for follow in machine.hole_checked(self.id, action.feed, seq=action.seq, below=below):
                await self.act(follow)
        elif isinstance(action, SendHave):
            await self.conn.send_have(action.notes)
        elif isinstance(action, SendClock):
            seq = action.seq
            if seq is None:
                seq = (await db.call(stored.heads, {action.feed}))[action.feed]
            if action.cause is not Cause.PRUNE:
                text = feed_id_text(action.feed)
                log.debug("%s of %s on %s from seq %d", action.cause.value, text, self.conn.address, seq)
            await self.conn.send_clock([ClockItem(action.feed, seq, 0, action.lazy)])


class GossipTimer:
    """Runs the timers of the node's gossip machine (graft, hole, notes, resume; spec §12.7, §12.8.5)
    and hands their actions to the connections' links; ``wake`` after an input that may set an earlier
    timer."""

    def __init__(self, machine: Gossip, clock: Clock, link: Callable[[int], GossipLink | None]) -> None:
        self.machine = machine
        self.clock = clock
        self.link = link
        self._wake = trio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Sleep until the machine's next timer (or a wake), run the due timers, repeat."""
        while True:
            self._wake = trio.Event()
            deadline = self.machine.next_timer()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self._wake.wait()
            for action in self.machine.handle_timer(self.clock.monotonic()):
                link = self.link(action.conn)
                if link is not None:
                    link.post(action)


def gossip_limits(limits: Mapping[str, Any]) -> GossipLimits:
    """The gossip machine's limits out of a node's ``limits`` (spec §12.5)."""
    return GossipLimits(
        eager_peers=limits["eager_peers"],
        min_eager_peers=limits["min_eager_peers"],
        graft_delay=limits["graft_delay"],
        have_interval=limits["have_interval"],
        feed_entries_per_second=limits["feed_entries_per_second"],
        feed_burst=limits["feed_burst"],
    )
