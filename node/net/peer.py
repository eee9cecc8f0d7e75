"""One replication connection: the trio side of ``protocol.replication.Replication``.

Tasks (all in one nursery, so a failure anywhere ends the connection cleanly):
- the reader: frames -> events; entries are verified and stored through the database thread;
- the server: answers the peer's clocks from the store, oldest first, then says ``caught_up``;
- the pusher: after each local change, sends new entries the peer wants and lacks (live push).
A peer that breaks the protocol (bad frame, invalid entry, flood) is dropped with a logged reason and
reported to the node, which backs off from it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from typing import TYPE_CHECKING, Any

import trio
from tidings.node.addresses import SCOPE_RANK, address_scope
from tidings.node.net.budgets import RateLimit
from tidings.node.net.transport import ChannelClosed, SecureChannel
from tidings.protocol import (
    ForkProof,
    ProtocolError,
    RemoteProtocolError,
    feed_id_text,
)
from tidings.protocol.entry import peek_position
from tidings.protocol.gossip import Action, Admission, Cause, CheckGraft, CheckHole, SendClock, SendHave
from tidings.protocol.replication import (
    ClockItem,
    Closed,
    EntriesReceived,
    ForksReceived,
    MembersOffered,
    PeerCaughtUp,
    PeerHas,
    PeersOffered,
    PeerWants,
    Replication,
)
from tidings.storage import gossip
from tidings.storage.store import IngestResult, Store

if TYPE_CHECKING:
    from tidings.node.net.node import Node

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
        self._prepared_send, self._prepared_recv = trio.open_memory_channel[tuple[Any, int, set[bytes]]](1)
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
        self.host = address.rpartition(":")[0].strip("[]") if initiator else address
        self._cancelled = False
        # actions of the node's gossip machine (§12.7) from its timer, carried out by ``_actor``; at most
        # one per timer the machine holds for this connection, so the machine bounds the queue
        self._actions_send, self._actions_recv = trio.open_memory_channel[Action](math.inf)
        self.duplicates = 0
        self.haves_sent = 0
        #: one-shot sync: entries the peer announced it will send (None: unknown, a version-1 peer)
        self.expected_in: int | None = None
        self._probe_heads: dict[bytes, int] = {}

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
        await self.channel.send([self.rep.hello()])
        with trio.fail_after(self.node.limits["handshake_timeout"]):
            self.rep.receive(await self.channel.receive())
        self.node.gossip.open(id(self), author=self.feed, version=self.rep.version, one_shot=self.once)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self._cancelled:
                    nursery.cancel_scope.cancel()
                nursery.start_soon(self._server)
                nursery.start_soon(self._ingester)
                nursery.start_soon(self._writer)
                if not self.once:
                    nursery.start_soon(self._pusher)
                    nursery.start_soon(self._actor)
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
            self.node.gossip.close(id(self))
            self._actions_send.close()
            self.done.set()

    @property
    def lazy_in(self) -> frozenset[bytes]:
        """Feeds we asked this peer to push lazily (spec §12.7; kept by the node's gossip machine)."""
        return self.node.gossip.lazy_in(id(self))

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
        lazy = self.node.gossip.choose(id(self), sorted(held))  # spec §12.7, first naming
        items = [
            ClockItem(feed, seq, newest if seq == 0 else 0, lazy[feed]) for feed, seq in sorted(held.items())
        ]
        frames = self.rep.clock(items)
        self._clocks_out += len(frames)  # the peer answers each clock frame with its own caught_up
        await self.channel.send(frames)

    async def act(self, action: Action) -> None:
        """Carry out an action of the node's gossip machine on this connection (spec §12.7, §12.8.5)."""
        machine, db = self.node.gossip, self.node.db
        if isinstance(action, CheckGraft):
            head = (await db.call(gossip.heads, {action.feed}))[action.feed]
            for follow in machine.graft_checked(id(self), action.feed, head=head):
                await self.act(follow)
        elif isinstance(action, CheckHole):
            below = await db.call(gossip.held_below, action.feed, action.seq)
            for follow in machine.hole_checked(id(self), action.feed, seq=action.seq, below=below):
                await self.act(follow)
        elif isinstance(action, SendHave):
            due = [(f, seq) for f, seq in action.notes if self.rep.peer_lacks(f, seq)]
            if due and self.rep.state == "ACTIVE":
                self.haves_sent += len(due)
                await self.channel.send(self.rep.have(due))
        elif isinstance(action, SendClock):
            seq = (
                (await db.call(gossip.heads, {action.feed}))[action.feed]
                if action.seq is None
                else action.seq
            )
            if action.cause is not Cause.PRUNE:
                log.debug(
                    "%s %s on %s from seq %d",
                    action.cause.value,
                    feed_id_text(action.feed),
                    self.address,
                    seq,
                )
            if self.rep.state == "ACTIVE":  # graft, prune, repair or resume: a one-item clock (§12.7)
                frames = self.rep.clock([ClockItem(action.feed, seq, 0, action.lazy)])
                self._clocks_out += len(frames)
                await self.channel.send(frames)

    def post(self, action: Action) -> None:
        """Queue an action of the gossip machine's timer for ``_actor`` (dropped once the connection ended)."""
        with contextlib.suppress(trio.ClosedResourceError):
            self._actions_send.send_nowait(action)

    async def _actor(self) -> None:
        async for action in self._actions_recv:
            await self.act(action)

    async def _probe(self, wants: set[bytes]) -> None:
        """One-shot sync (§12.6): a lazy clock first, so the peer's notes tell how much will come."""
        held = await self.node.db.call(gossip.heads, wants)
        self._probe_heads = held
        frames = self.rep.clock([ClockItem(feed, seq, 0, True) for feed, seq in sorted(held.items())])
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
        machine = self.node.gossip
        heads = {}
        for feed, _ in items:  # our heads of the wanted feeds, unless a graft of the feed waits anyway
            if feed in self.node.wanted and feed not in heads:
                heads[feed] = 0 if machine.grafting(id(self), feed) else await self.node.head(feed)
        machine.have_received(id(self), items, heads, self.node.clock.monotonic())
        self.node.wake_gossip()

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
                await self.channel.send([self.rep.peers(offers)])
            await trio.sleep(self.node.limits["pex_interval"])

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
            elif isinstance(event, PeerHas):
                await self._on_have(event.items)
            elif isinstance(event, PeersOffered):
                await self._on_peers(event.items)
            elif isinstance(event, MembersOffered):
                if self.node.discovery is not None and not self.once:
                    await self.node.discovery.receive_members(event.records, self)
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

    async def send_members(self, records: list[bytes]) -> None:
        """Swarm member records (§13.6); only over version 2 connections of a running node."""
        if self.rep.state == "ACTIVE" and self.rep.version >= 2 and not self.once and records:
            await self.channel.send(self.rep.members(records))

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
        live = not self.once and self._caught_up_in >= self._clocks_out > 0
        now = self.node.clock.monotonic()
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
            else:  # a live budget per feed (spec §12.8.5); a paused feed is asked for again later
                admission = self.node.gossip.admit(id(self), author, live=live, now=now)
                if admission is Admission.TAKE:
                    keep.append((raw, payload))
                elif admission is Admission.PAUSE:
                    log.info(
                        "feed %s sends faster than its budget; pausing it on %s",
                        feed_id_text(author),
                        self.address,
                    )
                    self.node.wake_gossip()
        if useless:
            self.useless += useless
            self.node.penalize(self.host, "useless", useless)
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
                authors = {peek_position(raw)[0] for raw, _ in batch}
                prepared = await trio.to_thread.run_sync(db.store_prepare, batch)
                await self._prepared_send.send((prepared, frames, authors))

    async def _writer(self) -> None:
        async for prepared, frames, authors in self._prepared_recv:
            try:
                result = await self.node.db.call(Store.ingest_prepared, prepared)
                await self._handle_result(result)
                self.duplicates += result.duplicates
                fresh = {e.author for e in result.added} | {r.author for r in result.rejected if r.author}
                actions = self.node.gossip.stored(
                    id(self),
                    authors=authors,
                    fresh=fresh,
                    duplicates=result.duplicates,
                    gaps=result.gaps,
                    now=self.node.clock.monotonic(),
                )
                if result.gaps:
                    self.node.wake_gossip()  # hole checks after graft_delay (spec §12.7)
                for action in actions:  # prunes
                    await self.act(action)
            finally:
                self._pending -= frames
                if not self._pending:
                    self._idle.set()
                    self._idle = trio.Event()

    async def _handle_result(self, result: IngestResult) -> None:
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
                    await self.channel.send(self.rep.entries(batch))
                    self.sent += len(batch)
                    self.node.sent_entries += len(batch)
                    after = peek_position(batch[-1][0])[1]
                    if len(batch) < 500:
                        break
            if haves:
                held = await db.call(gossip.heads, set(haves))
                notes = [(f, seq) for f, seq in sorted(held.items()) if self.rep.peer_lacks(f, seq)]
                if notes:
                    self.node.gossip.noted(id(self), notes)
                    self.haves_sent += len(notes)
                    await self.channel.send(self.rep.have(notes))
            await self.channel.send([self.rep.caught_up()])
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
                        notes[author] = max(seq, notes.get(author, 0))
                    else:
                        items.append((raw, payload))
                if items:
                    await self.channel.send(self.rep.entries(items))
                    self.sent += len(items)
                    self.node.sent_entries += len(items)
                if notes:  # gathered by the gossip machine, sent ``have_interval`` later (spec §12.4)
                    self.node.gossip.gathered(id(self), notes, self.node.clock.monotonic())
                    self.node.wake_gossip()


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
