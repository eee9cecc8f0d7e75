"""What a connection sends its peer: answers to the peer's clocks and live push (spec/protocol.md §12.3,
§12.4, §12.7).

Two tasks per connection: ``serve`` answers the peer's clocks from the store, oldest first, with
``have`` notes for its lazy items, then says ``caught_up``; ``push`` sends, after each local change,
the new entries the peer wants and lacks, and hands the new seqs of the feeds the peer asked for
lazily to the node's gossip machine, which sends them as batched ``have`` notes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import trio
from tidings.node.net.transport import SecureChannel
from tidings.protocol.entry import peek_position
from tidings.protocol.replication import CaughtUp, ClockItem, Entries, Replication
from tidings.storage import gossip

__all__ = ["Feeder"]

#: Entries read from the store at a time to answer a clock item (spec §12.3).
_READ = 500


class FeederConnection(Protocol):
    """What a feeder needs of its connection."""

    node: Any
    rep: Replication
    channel: SecureChannel
    once: bool
    sent: int

    async def send_forks(self, proofs: list[bytes]) -> None: ...

    async def send_have(self, notes: Sequence[tuple[bytes, int]]) -> None: ...

    async def maybe_finish(self) -> None: ...


class Feeder:
    """Answers one peer's clocks and pushes it new entries live."""

    def __init__(self, conn: FeederConnection) -> None:
        self.conn = conn
        self.node = conn.node
        self._clocks_send, self._clocks_recv = trio.open_memory_channel[tuple[ClockItem, ...]](16)
        #: every clock received so far is answered (one-shot completion, §12.6)
        self.served_all = trio.Event()
        self._last_row = 0

    async def start(self) -> None:
        """Live push starts with the entries stored after this point."""
        self._last_row = await self.node.db.call(gossip.max_row)

    async def wants(self, items: tuple[ClockItem, ...]) -> None:
        """The peer sent a clock: queue it for ``serve`` (waits while 16 are queued)."""
        self.served_all = trio.Event()
        await self._clocks_send.send(items)

    async def _sent(self, batch: list[tuple[bytes, bytes | None]]) -> None:
        await self.conn.channel.send(self.conn.rep.send(Entries(items=batch)))
        self.conn.sent += len(batch)
        self.node.sent_entries += len(batch)

    async def serve(self) -> None:
        """Answer the peer's clocks one after another (spec §12.3)."""
        conn, db = self.conn, self.node.db
        async for items in self._clocks_recv:
            wanted = [item for item in items if item.feed not in self.node.blocked]
            proofs = await db.call(gossip.fork_proofs, {item.feed for item in wanted})
            await conn.send_forks(proofs)
            haves = []
            for item in wanted:
                if item.lazy and not conn.once:  # a have note instead of entries (§12.7)
                    haves.append(item.feed)
                    continue
                after = item.seq
                newest = item.newest
                while True:
                    batch = await db.call(gossip.entries_after, item.feed, after, limit=_READ, newest=newest)
                    newest = 0
                    if not batch:
                        break
                    await self._sent(batch)
                    after = peek_position(batch[-1][0])[1]
                    if len(batch) < _READ:
                        break
            if haves:
                held = await db.call(gossip.heads, set(haves))
                notes = [(f, seq) for f, seq in sorted(held.items()) if conn.rep.peer_lacks(f, seq)]
                if notes:
                    self.node.gossip.noted(id(conn), notes)
                    await conn.send_have(notes)
            await conn.channel.send(conn.rep.send(CaughtUp()))
            if self._clocks_recv.statistics().current_buffer_used == 0:
                self.served_all.set()
                await conn.maybe_finish()

    async def push(self) -> None:
        """Live push (spec §12.4): entries of eager feeds at once, notes of lazy ones to the machine."""
        rep = self.conn.rep
        while True:
            await self.node.wait_changed()
            while True:
                rows = await self.node.new_rows(self._last_row)
                if not rows:
                    break
                self._last_row = rows[-1][0]
                items = []
                notes: dict[bytes, int] = {}
                lazy = rep.peer_lazy
                for _, author, seq, _, raw, payload in rows:
                    if not rep.peer_lacks(author, seq):
                        continue
                    if author in lazy:
                        notes[author] = max(seq, notes.get(author, 0))
                    else:
                        items.append((raw, payload))
                if items:
                    await self._sent(items)
                if notes:  # gathered by the gossip machine, sent ``have_interval`` later (spec §12.4)
                    self.node.gossip.gathered(id(self.conn), notes, self.node.clock.monotonic())
                    self.node.wake_gossip()
