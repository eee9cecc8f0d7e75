"""What a connection sends its peer: answers to the peer's clocks and live push (spec/protocol.md §12.3,
§12.4, §12.7, §12.8.6).

Two tasks per connection: ``serve`` answers the peer's clocks from the store, oldest first, with
``have`` notes for its lazy items, then says ``caught_up``; ``push`` sends, after each local change,
the new entries the peer wants and lacks, and hands the new seqs of the feeds the peer asked for
lazily to the node's gossip machine, which sends them as batched ``have`` notes.

What a clock item gets is decided by the connection's ``Ledger`` (protocol/budget.py): the runs of
seqs never sent on the connection, and, when the peer has moved on since it last asked, the runs sent
before, which its work budget pays for before they are read and before they are sent (§12.8.6).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import trio
from tidings.node.net.transport import SecureChannel
from tidings.protocol.budget import RESEND_COST, Ledger, Segment, resend_cost
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
    #: what the peer asked and was sent on this connection, and its work budget (§12.8.6)
    work: Ledger

    def overspent(self) -> None: ...

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
        self.conn.work.sent(peek_position(raw) for raw, _ in batch)
        self.conn.sent += len(batch)
        self.node.sent_entries += len(batch)

    async def serve(self) -> None:
        """Answer the peer's clocks one after another (spec §12.3); each gets its ``caught_up``, even
        when the work budget pays for none of it (§12.8.6)."""
        conn, work = self.conn, self.conn.work
        async for items in self._clocks_recv:
            refusals = work.budget.refusals
            if work.clock():
                await self._answer(items)
            await conn.channel.send(conn.rep.send(CaughtUp()))
            if work.budget.refusals > refusals:
                conn.overspent()
            if self._clocks_recv.statistics().current_buffer_used == 0:
                self.served_all.set()
                await conn.maybe_finish()

    async def _answer(self, items: tuple[ClockItem, ...]) -> None:
        conn, db, work = self.conn, self.node.db, self.conn.work
        wanted = [item for item in items if item.feed not in self.node.blocked]
        if wanted:
            await conn.send_forks(await db.call(gossip.fork_proofs, {item.feed for item in wanted}))
        haves = []
        for item in wanted:
            lazy = item.lazy and not conn.once  # a have note instead of entries (§12.7)
            _, segments = work.ask(item.feed, item.seq, lazy=lazy)
            if lazy:
                if segments is not None:
                    haves.append(item.feed)
                continue
            newest = item.newest
            for segment in segments or ():
                if segment.resend:
                    await self._resend(item.feed, segment)
                else:
                    await self._send_run(item.feed, segment, newest)
                newest = 0
        if haves:
            held = await db.call(gossip.heads, set(haves))
            notes = [(f, seq) for f, seq in sorted(held.items()) if conn.rep.peer_lacks(f, seq)]
            if notes:
                self.node.gossip.noted(id(conn), notes)
                await conn.send_have(notes)

    async def _send_run(self, feed: bytes, segment: Segment, newest: int) -> None:
        """Send the held entries of a run of seqs never sent on this connection, oldest first."""
        after, until = segment.after, segment.until
        while until is None or after < until:
            limit = _READ if until is None else min(_READ, until - after)
            batch = await self.node.db.call(gossip.entries_after, feed, after, limit=limit, newest=newest)
            newest = 0
            if not batch:
                return
            last = peek_position(batch[-1][0])[1]
            if until is not None and last > until:  # the store has gaps: seqs past the run came too
                batch = [row for row in batch if peek_position(row[0])[1] <= until]
            if batch:
                await self._sent(batch)
            if len(batch) < limit:
                return
            after = last

    async def _resend(self, feed: bytes, segment: Segment) -> None:
        """Send again a run of entries sent before on this connection, as far as the work budget pays:
        ``RESEND_COST`` per entry before the read, ``KIB_COST`` per KiB before the send (§12.8.6)."""
        budget = self.conn.work.budget
        after, until = segment.after, segment.until
        assert until is not None  # a run sent before has an end
        while after < until:
            want = min(_READ, until - after)
            paid = budget.grant(want, RESEND_COST)
            if not paid:
                return
            batch = await self.node.db.call(gossip.entries_after, feed, after, limit=paid)
            rows = [row for row in batch if peek_position(row[0])[1] <= until]
            budget.refund(RESEND_COST * (paid - len(rows)))
            keep = []
            for raw, payload in rows:
                if not budget.charge(resend_cost(len(raw) + len(payload or b""))):
                    break
                keep.append((raw, payload))
            if keep:
                await self._sent(keep)
            if len(keep) < len(rows) or paid < want or len(batch) < paid:
                return
            after = peek_position(batch[-1][0])[1]

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
