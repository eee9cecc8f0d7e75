"""One replication connection: the trio side of ``protocol.replication.Replication``.

Tasks (all in one nursery, so a failure anywhere ends the connection cleanly):
- the reader: frames -> events; entries are verified and stored through the database thread;
- the server: answers the peer's clocks from the store, oldest first, then says ``caught_up``;
- the pusher: after each local change, sends new entries the peer wants and lacks (live push);
- the channel's writer (``SecureChannel.run_writer``): the only task that writes to the stream; every
  other task (these, and the node's broadcasts) only queues frames with ``channel.send``.
A peer that breaks the protocol (bad frame, invalid entry, flood) is dropped with a logged reason and
reported to the node, which backs off from it.
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from tidings.node.addresses import SCOPE_RANK, address_scope
from tidings.node.net.budgets import FeedBudgets, RateLimit
from tidings.node.net.host import ConnectionHost
from tidings.node.net.transport import ChannelClosed, SecureChannel
from tidings.protocol import (
    ForkProof,
    ProtocolError,
    RemoteProtocolError,
    feed_id_text,
)
from tidings.protocol.entry import peek_position
from tidings.protocol.replication import (
    Bye,
    CaughtUp,
    Clock,
    ClockItem,
    Entries,
    Forks,
    Have,
    Hello,
    Members,
    Peers,
    Replication,
)
from tidings.storage import gossip
from tidings.storage.store import IngestResult, Store

__all__ = ["PeerConnection", "PeerMisbehaved"]

log = logging.getLogger("tidings.peer")

#: Rejection codes that mean the peer sent invalid data (as opposed to a fork it only relays).
_BENIGN = {"fork", "feed_forked", "link_conflict"}
_FORKS_PER_FRAME = 100
#: Most entries stored in one transaction by a connection (about: whole frames are taken). Two batches
#: are in flight (one checked, one written); at 4000 the receiver of a 100k sync peaked at 151 MB, at
#: 2000 at 137 MB, with the same throughput (bench/RESULTS.md).
_INGEST_BATCH = 2000


class PeerMisbehaved(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class PeerConnection:
    def __init__(
        self,
        node: ConnectionHost,
        channel: SecureChannel,
        address: str,
        *,
        initiator: bool,
        once: bool = False,
    ):
        self.node = node
        self.channel = channel
        self.address = address
        self.initiator = initiator
        self.once = once
        self.feed = channel.remote_feed
        self.rep = Replication()
        self.received = 0
        self.sent = 0
        self.useless = 0
        self._clocks_out = 0
        self._caught_up_in = 0
        self._served_all = trio.Event()
        self._ingest_send, self._ingest_recv = trio.open_memory_channel[list[tuple[bytes, bytes | None]]](32)
        self._prepared_send, self._prepared_recv = trio.open_memory_channel[tuple[Any, int, set[bytes]]](1)
        self._pending = 0
        self._idle = trio.Event()
        self._serve_send, self._serve_recv = trio.open_memory_channel[tuple[ClockItem, ...]](16)
        limits, clock = node.limits, node.clock
        self._frames = RateLimit(limits["frames_per_second"], limits["frames_per_second"] * 2, clock)
        self._entries = RateLimit(limits["entries_per_second"], limits["entries_per_second"] * 2, clock)
        self._last_row = 0
        self._asked: set[bytes] = set()
        self.connected_at = clock.monotonic()
        self.done = trio.Event()
        self._nursery: trio.Nursery
        self.host = address.rpartition(":")[0].strip("[]") if initiator else address
        self._cancelled = False
        #: EBT (spec §12.7): feeds we asked this peer to push lazily / have notes sent per feed
        self.lazy_in: set[bytes] = set()
        self._have_sent: dict[bytes, int] = {}
        self._notes: dict[bytes, int] = {}  # lazy notes waiting for ``_note_sender``
        self._notes_ready = trio.Event()
        self._grafting: dict[bytes, int] = {}  # feed -> highest seq a note named while a graft waits
        self._throttled: set[bytes] = set()
        self.duplicates = 0
        self.haves_sent = 0
        #: one-shot sync: entries the peer announced it will send (None: unknown, a version-1 peer)
        self.expected_in: int | None = None
        self._probe_heads: dict[bytes, int] = {}
        self.budgets = FeedBudgets(limits["feed_entries_per_second"], limits["feed_burst"], clock)

    def statistics(self) -> dict[str, Any]:
        return {
            "feed": feed_id_text(self.feed),
            "address": self.address,
            "received": self.received,
            "sent": self.sent,
            "bytes_in": self.channel.bytes_in,
            "bytes_out": self.channel.bytes_out,
            "duplicates": self.duplicates,
            "lazy_in": len(self.lazy_in),
            "lazy_out": len(self.rep.peer_lazy),
        }

    def cancel(self) -> None:
        """Close this connection (the node cut the peer off)."""
        self._cancelled = True
        nursery = getattr(self, "_nursery", None)
        if nursery is not None:
            nursery.cancel_scope.cancel()

    async def run(self) -> None:
        """Run until the peer leaves, breaks the rules, or (``once``) both sides are caught up."""
        db = self.node.db
        self._last_row = await db.call(gossip.max_row)
        failed: Exception | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self._cancelled:
                    nursery.cancel_scope.cancel()
                await nursery.start(self.channel.run_writer, self.node.limits["write_timeout"])
                try:  # a failed hello is raised as itself below, not in the nursery's exception group
                    await self.channel.send(self.rep.send(Hello(agent=self.node.agent)))
                    with trio.fail_after(self.node.limits["handshake_timeout"]):
                        self.rep.receive(await self.channel.receive())
                except Exception as exc:
                    failed = exc
                    nursery.cancel_scope.cancel()
                    return
                nursery.start_soon(self._server)
                nursery.start_soon(self._ingester)
                nursery.start_soon(self._writer)
                if not self.once:
                    nursery.start_soon(self._pusher)
                    nursery.start_soon(self._note_sender)
                    if self.rep.version >= 2:
                        nursery.start_soon(self._exchange_peers)
                wants = await self.node.current_wants(extra={self.feed} if self.once else None)
                if self.once and self.rep.version >= 2:
                    await self._probe(wants)
                await self.send_wants(wants)
                if self.rep.version >= 2 and not self.once and self.node.discovery is not None:
                    await self.node.discovery.offer_members(self)
                await self._reader(nursery)
        finally:
            self.done.set()
            if failed is not None:
                raise failed

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
        items = [
            ClockItem(feed, seq, newest if seq == 0 else 0, self._choose_lazy(feed))
            for feed, seq in sorted(held.items())
        ]
        frames = self.rep.send(Clock(items=items))
        self._clocks_out += len(frames)  # the peer answers each clock frame with its own caught_up
        await self.channel.send(frames)

    def _choose_lazy(self, feed: bytes) -> bool:
        """Ask this peer to push ``feed`` lazily unless it is the author or too few peers push it eagerly."""
        if self.once or self.rep.version < 2 or feed == self.feed:
            lazy = False
        else:
            holders = self.node.eager.get(feed, set())
            lazy = len(holders - {id(self)}) >= self.node.limits["eager_peers"]
        if lazy:
            self.lazy_in.add(feed)
        else:
            self.lazy_in.discard(feed)
            self.node.eager.setdefault(feed, set()).add(id(self))
        return lazy

    async def _set_mode(self, feed: bytes, *, lazy: bool, seq: int | None = None) -> None:
        """Graft (eager) or prune (lazy) ``feed`` on this connection with a one-item clock (§12.7);
        ``seq`` (default: our head) is what the clock says we hold."""
        head = (await self.node.db.call(gossip.heads, {feed}))[feed] if seq is None else seq
        if lazy:
            self.lazy_in.add(feed)
            self.node.eager.get(feed, set()).discard(id(self))
        else:
            self.lazy_in.discard(feed)
            self.node.eager.setdefault(feed, set()).add(id(self))
        if self.rep.state == "ACTIVE":
            frames = self.rep.send(Clock(items=[ClockItem(feed, head, 0, lazy)]))
            self._clocks_out += len(frames)
            await self.channel.send(frames)

    async def _probe(self, wants: set[bytes]) -> None:
        """One-shot sync (§12.6): a lazy clock first, so the peer's notes tell how much will come."""
        held = await self.node.db.call(gossip.heads, wants)
        self._probe_heads = held
        frames = self.rep.send(
            Clock(items=[ClockItem(feed, seq, 0, True) for feed, seq in sorted(held.items())])
        )
        self._clocks_out += len(frames)
        await self.channel.send(frames)

    async def _on_have(self, items: tuple[tuple[bytes, int], ...]) -> None:
        """Lazy notes: for a feed we want and lack, graft this peer unless an eager one delivers first."""
        if self.once:  # answers to the probe: what the sync will bring
            for feed, seq in items:
                held = self._probe_heads.get(feed)
                if held is not None and seq > held:
                    self.expected_in = (self.expected_in or 0) + seq - held
                    self._probe_heads[feed] = seq
            return
        for feed, seq in items:
            if feed not in self.node.wanted:
                continue
            if feed in self._grafting:  # a graft is pending: it checks against the newest note
                self._grafting[feed] = max(self._grafting[feed], seq)
                continue
            if await self.node.head(feed) < seq:
                self._grafting[feed] = seq
                self._nursery.start_soon(self._graft_later, feed, seq)

    async def _graft_later(self, feed: bytes, seq: int) -> None:
        try:
            await trio.sleep(self.node.limits["graft_delay"])
            seq = self._grafting.get(feed, seq)
            head = (await self.node.db.call(gossip.heads, {feed}))[feed]
            if head < seq and feed not in self._throttled:
                log.debug(
                    "grafting %s on %s (have %d, holds %d)", feed_id_text(feed), self.address, head, seq
                )
                await self._set_mode(feed, lazy=False)
        finally:
            self._grafting.pop(feed, None)

    async def _on_peers(self, items: tuple[tuple[bytes, str], ...]) -> None:
        """Peer exchange: offer checked addresses to the connection manager (spec §12.8)."""
        from tidings.node.addresses import parse_address

        if self.once:
            return
        try:
            peer_scope = address_scope(self.host)
        except ValueError:
            peer_scope = "public"
        for feed, address in items:
            if feed == self.node.key.public_key or feed in self.node.blocked:
                continue
            try:
                host, port = parse_address(address)
                scope = address_scope(host)
            except ValueError:
                continue  # names are not taken from peers: no lookups on their behalf
            # a peer may point us only at hosts as public as itself: a public peer cannot make us
            # dial into our own machine or local network
            if port == 0 or scope == "bad" or SCOPE_RANK[scope] < SCOPE_RANK.get(peer_scope, 2):
                continue
            self.node.dial(address, feed=feed, source="pex")

    async def _exchange_peers(self) -> None:
        """Every ``pex_interval`` (first at once): addresses of our other outgoing peers."""
        while True:
            offers = [
                (c.feed, c.address)
                for c in list(self.node.connections.values())
                if c is not self and c.initiator and not c.once
            ]
            if offers and self.rep.state == "ACTIVE":
                self.node.rng.shuffle(offers)
                await self.channel.send(self.rep.send(Peers(items=offers)))
            await trio.sleep(self.node.limits["pex_interval"])

    async def _reader(self, nursery: trio.Nursery) -> None:
        while True:
            frame = await self.channel.receive()
            if not self._frames.take():
                raise PeerMisbehaved("flood", "too many frames per second")
            event = self.rep.receive(frame)
            if isinstance(event, Entries):
                if not self._entries.take(len(event.items)):
                    raise PeerMisbehaved("flood", "too many entries per second")
                keep = self._filter(event.items)
                if keep:
                    self._pending += 1
                    await self._ingest_send.send(keep)
            elif isinstance(event, Clock):
                self._served_all = trio.Event()
                await self._serve_send.send(event.items)
            elif isinstance(event, CaughtUp):
                await self._wait_ingested()  # what it sent before caught_up is stored first
                if self.once:
                    # entries it sent may have widened what we want (follows of follows); ask
                    # before counting this answer, so the finish check sees the new clock.
                    await self.send_wants(await self.node.current_wants(extra={self.feed}))
                self._caught_up_in += 1
                await self._maybe_finish()
            elif isinstance(event, Forks):
                await self._take_forks(event.proofs)
            elif isinstance(event, Have):
                await self._on_have(event.items)
            elif isinstance(event, Peers):
                await self._on_peers(event.items)
            elif isinstance(event, Members):
                if self.node.discovery is not None and not self.once:
                    await self.node.discovery.receive_members(event.records, self)
            elif isinstance(event, Bye):
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

    async def send_members(self, records: list[bytes]) -> None:
        """Swarm member records (§13.6); only over version 2 connections of a running node."""
        if self.rep.state == "ACTIVE" and self.rep.version >= 2 and not self.once and records:
            await self.channel.send(self.rep.send(Members(records=records)))

    async def send_forks(self, proofs: list[bytes]) -> None:
        """Send fork proofs, ``_FORKS_PER_FRAME`` a frame (each proof is at most ~300 bytes)."""
        if self.rep.state == "ACTIVE" and proofs:
            step = _FORKS_PER_FRAME
            parts = [self.rep.send(Forks(proofs=proofs[i : i + step])) for i in range(0, len(proofs), step)]
            await self.channel.send([frame for part in parts for frame in part])

    async def _maybe_finish(self) -> None:
        """``once`` mode: leave when the peer answered all our clocks and we answered all of its."""
        if (
            self.once
            and self.rep.state != "CLOSED"
            and self._caught_up_in >= self._clocks_out
            and self._served_all.is_set()
        ):
            await self.channel.send(self.rep.send(Bye(code="done", reason="sync complete")))
            await self.channel.wait_sent()  # the writer ends with the nursery: let it write the bye
            self._nursery.cancel_scope.cancel()

    def _filter(self, items: tuple[tuple[bytes, bytes | None], ...]) -> list[tuple[bytes, bytes | None]]:
        """Keep entries of feeds we want; note that the peer holds what it sent (no echo by push)."""
        wants = self.node.wanted | ({self.feed} if self.once else set())
        keep: list[tuple[bytes, bytes | None]] = []
        live = not self.once and self._caught_up_in >= self._clocks_out > 0
        useless = 0
        for raw, payload in items:
            try:
                author, seq = peek_position(raw)
            except ProtocolError as exc:
                raise PeerMisbehaved(exc.code, f"undecodable entry: {exc.args[0]}") from None
            held = self.rep.peer_wants.get(author)
            if held is not None and seq > held:
                self.rep.peer_wants[author] = seq
            if author not in wants:
                if author not in self._asked:
                    useless += 1  # never asked for on this connection: spam (a dropped follow is not)
            elif author in self._throttled:
                pass  # asked for again with a clock when the feed's budget refills
            elif live and author != self.node.key.public_key and not self.budgets.take(author):
                self._throttled.add(author)
                self._nursery.start_soon(self._resume_feed, author)
            else:
                keep.append((raw, payload))
        if useless:
            self.useless += useless
            self.node.penalize(self.host, "useless", useless)
        return keep

    async def _resume_feed(self, feed: bytes) -> None:
        """A feed that went over its live budget (spec §12.8): ask for it again once the budget refills."""
        log.info("feed %s sends faster than its budget; pausing it on %s", feed_id_text(feed), self.address)
        await trio.sleep(self.node.limits["feed_burst"] / self.node.limits["feed_entries_per_second"] / 2)
        self._throttled.discard(feed)
        await self._set_mode(feed, lazy=feed in self.lazy_in)

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
                authors = {peek_position(raw)[0] for raw, _ in batch}
                prepared = await trio.to_thread.run_sync(db.store_prepare, batch)
                await self._prepared_send.send((prepared, frames, authors))

    async def _writer(self) -> None:
        async for prepared, frames, authors in self._prepared_recv:
            try:
                result = await self.node.db.call(Store.ingest_prepared, prepared)
                await self._handle_result(result)
                await self._prune(result, authors)
            finally:
                self._pending -= frames
                if not self._pending:
                    self._idle.set()
                    self._idle = trio.Event()

    async def _prune(self, result: IngestResult, authors: set[bytes]) -> None:
        """EBT (§12.7): feeds of which this peer sent only entries we held get pushed lazily from now."""
        self.duplicates += result.duplicates
        self.node.duplicates += result.duplicates
        if self.once or self.rep.version < 2 or not result.duplicates:
            return
        fresh = {e.author for e in result.added} | {r.author for r in result.rejected if r.author}
        for feed in authors - fresh:
            if feed == self.feed or feed in self.lazy_in:
                continue
            if len(self.node.eager.get(feed, set()) - {id(self)}) >= self.node.limits["min_eager_peers"]:
                await self._set_mode(feed, lazy=True)

    async def _repair_gaps(self, gaps: list[tuple[bytes, int]]) -> None:
        """Entries stored above a hole (they came out of order, or a relay skipped one): once
        ``graft_delay`` has let late arrivals land, ask this peer again from below the lowest hole
        of each feed (spec §12.7). The start of a partial log (nothing held below) is no hole."""
        await trio.sleep(self.node.limits["graft_delay"])
        lowest: dict[bytes, int] = {}
        for author, seq in gaps:
            lowest[author] = min(seq, lowest.get(author, seq))
        for author, seq in lowest.items():
            below = await self.node.db.call(gossip.held_below, author, seq)
            if 0 < below < seq - 1 and author not in self._throttled:
                log.debug("asking %s again for %s after seq %d", self.address, feed_id_text(author), below)
                self.node.repairs += 1
                await self._set_mode(author, lazy=False, seq=below)  # entries, not notes

    async def _handle_result(self, result: IngestResult) -> None:
        if result.gaps and not self.once:
            self._nursery.start_soon(self._repair_gaps, list(result.gaps))
        self.received += len(result.added)
        self.node.note_ingested(len(result.added))
        if result.added:
            self.node.scores.add(self.host, "delivered", len(result.added))
        for proof in result.forks:
            if proof.author == self.feed:
                self.node.penalize(self.host, "own_fork")
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
            haves = []
            for item in wanted:
                if item.lazy and not self.once:  # a have note instead of entries (§12.7)
                    haves.append(item.feed)
                    continue
                after = item.seq
                newest = item.newest
                while True:
                    batch = await db.call(gossip.entries_after, item.feed, after, limit=500, newest=newest)
                    newest = 0
                    if not batch:
                        break
                    await self.channel.send(self.rep.send(Entries(items=batch)))
                    self.sent += len(batch)
                    self.node.sent_entries += len(batch)
                    after = peek_position(batch[-1][0])[1]
                    if len(batch) < 500:
                        break
            if haves:
                held = await db.call(gossip.heads, set(haves))
                notes = [(f, seq) for f, seq in sorted(held.items()) if self.rep.peer_lacks(f, seq)]
                if notes:
                    for f, seq in notes:
                        self._have_sent[f] = seq
                    self.haves_sent += len(notes)
                    await self.channel.send(self.rep.send(Have(items=notes)))
            await self.channel.send(self.rep.send(CaughtUp()))
            if self._serve_recv.statistics().current_buffer_used == 0:
                self._served_all.set()
                await self._maybe_finish()

    async def _pusher(self) -> None:
        while True:
            await self.node.wait_changed()
            while True:
                rows = await self.node.new_rows(self._last_row)
                if not rows:
                    break
                self._last_row = rows[-1][0]
                items = []
                notes: dict[bytes, int] = {}
                lazy = self.rep.peer_lazy
                for _, author, seq, _, raw, payload in rows:
                    if not self.rep.peer_lacks(author, seq):
                        continue
                    if author in lazy:
                        if seq > self._have_sent.get(author, 0):
                            notes[author] = max(seq, notes.get(author, 0))
                    else:
                        items.append((raw, payload))
                if items:
                    await self.channel.send(self.rep.send(Entries(items=items)))
                    self.sent += len(items)
                    self.node.sent_entries += len(items)
                if notes:  # gathered for ``have_interval`` and sent by ``_note_sender``
                    self._have_sent.update(notes)
                    for feed, seq in notes.items():
                        self._notes[feed] = max(seq, self._notes.get(feed, 0))
                    self._notes_ready.set()

    async def _note_sender(self) -> None:
        """Send the gathered lazy notes at most every ``have_interval`` (spec §12.7): one frame for all
        the feeds that moved meanwhile, leaving out what the peer got from elsewhere in the meantime."""
        while True:
            await self._notes_ready.wait()
            await trio.sleep(self.node.limits["have_interval"])
            self._notes_ready = trio.Event()
            notes, self._notes = self._notes, {}
            due = sorted((f, seq) for f, seq in notes.items() if self.rep.peer_lacks(f, seq))
            if due and self.rep.state == "ACTIVE":
                self.haves_sent += len(due)
                await self.channel.send(self.rep.send(Have(items=due)))


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
