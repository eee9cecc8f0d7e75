"""One replication connection: the trio side of ``protocol.replication.Replication``.

Tasks (all in one nursery, so a failure anywhere ends the connection cleanly):
- the reader: frames -> events; entries are verified and stored through the database thread;
- the server: answers the peer's clocks from the store, oldest first, then says ``caught_up``;
- the pusher: after each local change, sends new entries the peer wants and lacks (live push).
A peer that breaks the protocol (bad frame, invalid entry, flood) is dropped with a logged reason and
reported to the node, which backs off from it.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import trio
from tidings.protocol import (
    ForkProof,
    ProtocolError,
    RemoteProtocolError,
    feed_id_text,
)
from tidings.protocol.entry import peek_position
from tidings.protocol.replication import (
    ClockItem,
    Closed,
    EntriesReceived,
    ForksReceived,
    PeerCaughtUp,
    PeerWants,
    Replication,
)
from tidings.storage import gossip
from tidings.storage.store import IngestResult, Store

from .transport import ChannelClosed, SecureChannel

if TYPE_CHECKING:
    from .node import Node

__all__ = ["PeerConnection", "PeerMisbehaved"]

log = logging.getLogger("tidings.peer")

#: Rejection codes that mean the peer sent invalid data (as opposed to a fork it only relays).
_BENIGN = {"fork", "feed_forked", "link_conflict"}
_FORKS_PER_FRAME = 100
#: Most entries stored in one transaction by a connection.
_INGEST_BATCH = 4000


class PeerMisbehaved(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class RateLimit:
    """Token bucket: ``rate`` per second, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self, n: float = 1.0) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < n:
            return False
        self.tokens -= n
        return True


class PeerConnection:
    def __init__(
        self, node: Node, channel: SecureChannel, address: str, *, initiator: bool, once: bool = False
    ):
        self.node = node
        self.channel = channel
        self.address = address
        self.initiator = initiator
        self.once = once
        self.feed = channel.remote_feed
        self.rep = Replication(agent=node.agent)
        self.received = 0
        self.sent = 0
        self.useless = 0
        self._clocks_out = 0
        self._caught_up_in = 0
        self._served_all = trio.Event()
        self._ingest_send, self._ingest_recv = trio.open_memory_channel[list[tuple[bytes, bytes | None]]](32)
        self._prepared_send, self._prepared_recv = trio.open_memory_channel[tuple[Any, int]](1)
        self._pending = 0
        self._idle = trio.Event()
        self._serve_send, self._serve_recv = trio.open_memory_channel[tuple[ClockItem, ...]](16)
        self._frames = RateLimit(node.limits["frames_per_second"], node.limits["frames_per_second"] * 2)
        self._entries = RateLimit(node.limits["entries_per_second"], node.limits["entries_per_second"] * 2)
        self._last_row = 0
        self._asked: set[bytes] = set()
        self.connected_at = time.time()
        self.done = trio.Event()
        self._nursery: trio.Nursery

    def statistics(self) -> dict[str, Any]:
        return {
            "feed": feed_id_text(self.feed),
            "address": self.address,
            "received": self.received,
            "sent": self.sent,
            "bytes_in": self.channel.bytes_in,
            "bytes_out": self.channel.bytes_out,
        }

    async def run(self) -> None:
        """Run until the peer leaves, breaks the rules, or (``once``) both sides are caught up."""
        db = self.node.db
        self._last_row = await db.call(gossip.max_row)
        await self.channel.send([self.rep.hello()])
        with trio.fail_after(self.node.limits["handshake_timeout"]):
            self.rep.receive(await self.channel.receive())
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._server)
                nursery.start_soon(self._ingester)
                nursery.start_soon(self._writer)
                if not self.once:
                    nursery.start_soon(self._pusher)
                await self.send_wants(await self.node.current_wants(extra={self.feed} if self.once else None))
                await self._reader(nursery)
        finally:
            self.done.set()

    async def send_wants(self, wants: set[bytes]) -> None:
        """Tell the peer about feeds we want that we have not asked it for yet."""
        if self.rep.state != "ACTIVE":
            return  # before hello (run() sends the first clock once hellos are exchanged) or after bye
        new = wants - self._asked
        if not new and self._clocks_out:
            return
        self._asked |= new
        held = await self.node.db.call(gossip.heads, new)
        newest = self.node.limits["newest"]
        items = [ClockItem(feed, seq, newest if seq == 0 else 0) for feed, seq in sorted(held.items())]
        frames = self.rep.clock(items)
        self._clocks_out += len(frames)  # the peer answers each clock frame with its own caught_up
        await self.channel.send(frames)

    async def _reader(self, nursery: trio.Nursery) -> None:
        while True:
            frame = await self.channel.receive()
            if not self._frames.take():
                raise PeerMisbehaved("flood", "too many frames per second")
            event = self.rep.receive(frame)
            if isinstance(event, EntriesReceived):
                if not self._entries.take(len(event.items)):
                    raise PeerMisbehaved("flood", "too many entries per second")
                keep = self._filter(event.items)
                if keep:
                    self._pending += 1
                    await self._ingest_send.send(keep)
            elif isinstance(event, PeerWants):
                self._served_all = trio.Event()
                await self._serve_send.send(event.items)
            elif isinstance(event, PeerCaughtUp):
                await self._wait_ingested()  # what it sent before caught_up is stored first
                if self.once:
                    # entries it sent may have widened what we want (follows of follows); ask
                    # before counting this answer, so the finish check sees the new clock.
                    await self.send_wants(await self.node.current_wants(extra={self.feed}))
                self._caught_up_in += 1
                await self._maybe_finish()
            elif isinstance(event, ForksReceived):
                await self._take_forks(event.proofs)
            elif isinstance(event, Closed):
                log.info("peer %s closed: %s %s", self.address, event.code, event.reason)
                nursery.cancel_scope.cancel()
                return

    async def _take_forks(self, proofs: tuple[bytes, ...]) -> None:
        """Fork proofs are self-verifying (spec §7): a valid one marks the feed forked, whoever sent it."""
        fresh = []
        for raw in proofs[:_FORKS_PER_FRAME]:
            proof = ForkProof.decode(raw)  # RemoteProtocolError for an invalid proof: the peer lied
            if proof.author not in self.node.wanted:
                continue  # only feeds we replicate: forked throwaway feeds cost us nothing
            known = await self.node.db.call(gossip.fork_seqs, proof.author)
            if proof.seq not in known:  # one proof per (feed, seq) is kept and spread, once
                await self.node.db.call(Store.add_fork_proof, proof)
                log.warning(
                    "fork proof for %s seq %d from %s", feed_id_text(proof.author), proof.seq, self.address
                )
                fresh.append(raw)
        if fresh:
            await self.node.broadcast_forks(fresh)

    async def send_forks(self, proofs: list[bytes]) -> None:
        """Send fork proofs, ``_FORKS_PER_FRAME`` a frame (each proof is at most ~300 bytes)."""
        if self.rep.state == "ACTIVE" and proofs:
            step = _FORKS_PER_FRAME
            await self.channel.send(
                [self.rep.forks(proofs[i : i + step]) for i in range(0, len(proofs), step)]
            )

    async def _maybe_finish(self) -> None:
        """``once`` mode: leave when the peer answered all our clocks and we answered all of its."""
        if (
            self.once
            and self.rep.state != "CLOSED"
            and self._caught_up_in >= self._clocks_out
            and self._served_all.is_set()
        ):
            await self.channel.send([self.rep.bye("done", "sync complete")])
            self._nursery.cancel_scope.cancel()

    def _filter(self, items: tuple[tuple[bytes, bytes | None], ...]) -> list[tuple[bytes, bytes | None]]:
        """Keep entries of feeds we want; note that the peer holds what it sent (no echo by push)."""
        wants = self.node.wanted | ({self.feed} if self.once else set())
        keep: list[tuple[bytes, bytes | None]] = []
        for raw, payload in items:
            try:
                author, seq = peek_position(raw)
            except ProtocolError as exc:
                raise PeerMisbehaved(exc.code, f"undecodable entry: {exc.args[0]}") from None
            held = self.rep.peer_wants.get(author)
            if held is not None and seq > held:
                self.rep.peer_wants[author] = seq
            if author in wants:
                keep.append((raw, payload))
            else:
                self.useless += 1  # not asked for: never stored (spam bound)
        return keep

    async def _wait_ingested(self) -> None:
        while self._pending:
            await self._idle.wait()

    async def _ingester(self) -> None:
        """Two stages, so checking batch k+1 overlaps writing batch k (bench/RESULTS.md, "pipelined"):
        this task gathers queued frames (several per transaction) and decodes and verifies them on a
        worker thread (``Store.prepare``); ``_writer`` links and writes them on the database thread."""
        db = self.node.db
        async with self._prepared_send:
            async for first in self._ingest_recv:
                batch, frames = list(first), 1
                while len(batch) < _INGEST_BATCH:
                    try:
                        batch.extend(self._ingest_recv.receive_nowait())
                        frames += 1
                    except trio.WouldBlock:
                        break
                prepared = await trio.to_thread.run_sync(db.store_prepare, batch)
                await self._prepared_send.send((prepared, frames))

    async def _writer(self) -> None:
        async for prepared, frames in self._prepared_recv:
            try:
                result = await self.node.db.call(Store.ingest_prepared, prepared)
                await self._handle_result(result)
            finally:
                self._pending -= frames
                if not self._pending:
                    self._idle.set()
                    self._idle = trio.Event()

    async def _handle_result(self, result: IngestResult) -> None:
        self.received += len(result.added)
        self.node.note_ingested(len(result.added))
        for proof in result.forks:
            log.warning(
                "fork detected in %s at seq %d (from %s)", feed_id_text(proof.author), proof.seq, self.address
            )
        if result.forks:
            await self.node.broadcast_forks([proof.encode() for proof in result.forks])
        bad = [r for r in result.rejected if r.code not in _BENIGN]
        if bad:
            first = bad[0]
            raise PeerMisbehaved(first.code, f"sent {len(bad)} invalid entries ({first.reason})")

    async def _server(self) -> None:
        db = self.node.db
        async for items in self._serve_recv:
            wanted = [item for item in items if item.feed not in self.node.blocked]
            proofs = await db.call(gossip.fork_proofs, {item.feed for item in wanted})
            await self.send_forks(proofs)
            for item in wanted:
                after = item.seq
                newest = item.newest
                while True:
                    batch = await db.call(gossip.entries_after, item.feed, after, limit=500, newest=newest)
                    newest = 0
                    if not batch:
                        break
                    await self.channel.send(self.rep.entries(batch))
                    self.sent += len(batch)
                    after = peek_position(batch[-1][0])[1]
                    if len(batch) < 500:
                        break
            await self.channel.send([self.rep.caught_up()])
            if self._serve_recv.statistics().current_buffer_used == 0:
                self._served_all.set()
                await self._maybe_finish()

    async def _pusher(self) -> None:
        db = self.node.db
        while True:
            await self.node.wait_changed()
            while True:
                rows = await db.call(gossip.new_rows, self._last_row)
                if not rows:
                    break
                self._last_row = rows[-1][0]
                items = [
                    (raw, payload)
                    for _, author, seq, _, raw, payload in rows
                    if self.rep.peer_lacks(author, seq)
                ]
                if items:
                    await self.channel.send(self.rep.entries(items))
                    self.sent += len(items)


def describe_error(exc: BaseException) -> tuple[str, str]:
    """(code, reason) for a connection that ended with ``exc``."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = next((e for e in exc.exceptions if not isinstance(e, trio.Cancelled)), exc.exceptions[0])
    if isinstance(exc, PeerMisbehaved):
        return exc.code, str(exc)
    if isinstance(exc, RemoteProtocolError):
        return exc.code, str(exc.args[0])
    if isinstance(exc, ChannelClosed):
        return "closed", str(exc)
    if isinstance(exc, trio.TooSlowError):
        return "timeout", "peer too slow"
    return "error", f"{type(exc).__name__}: {exc}"
