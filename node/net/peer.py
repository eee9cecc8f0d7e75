"""One replication connection: the trio side of ``protocol.replication.Replication``.

Tasks (all in one nursery, so a failure anywhere ends the connection cleanly):
- the reader: frames -> events; entries are verified and stored through the database thread
  (``IngestPipeline``, node/net/ingest.py);
- the server and the pusher (``Feeder``, node/net/feeder.py): answers to the peer's clocks, and live push;
- the gossip link (node/net/gossip_link.py): carries out the node's gossip machine's timer actions
  (grafts, hole repairs, batched ``have`` notes, resumed feeds; spec §12.7, §12.8.5);
- peer exchange (node/net/pex.py), on version 2 connections of a running node;
- the channel's writer (``SecureChannel.run_writer``): the only task that writes to the stream; every
  other task (these, and the node's broadcasts) only queues frames with ``channel.send``.
A peer that breaks the protocol (bad frame, invalid entry, flood) is dropped with a logged reason and
reported to the node, which backs off from it. Work the peer asks for again — entries sent before on
the connection, fork proofs — is paid from its work budget (``self.work``, protocol/budget.py, spec
§12.8.6) before it is done; a charge the budget refuses lowers the peer's score (``overspent``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

import trio
from tidings.node.net import followers
from tidings.node.net.blob_serve import PeerBlobs
from tidings.node.net.budgets import RateLimit
from tidings.node.net.feeder import Feeder
from tidings.node.net.forks import FORKS_PER_FRAME, take_forks
from tidings.node.net.gossip_link import GossipLink
from tidings.node.net.host import ConnectionHost
from tidings.node.net.ingest import IngestPipeline
from tidings.node.net.pex import offer_peers, take_peers
from tidings.node.net.transport import ChannelClosed, SecureChannel
from tidings.protocol import (
    ProtocolError,
    RemoteProtocolError,
    feed_id_text,
    hash_bytes,
)
from tidings.protocol.blob_transfer import BLOB_EVENTS
from tidings.protocol.budget import Ledger
from tidings.protocol.entry import peek_position
from tidings.protocol.errors import TidingsError
from tidings.protocol.gossip import Admission
from tidings.protocol.reach_events import WireMessage
from tidings.protocol.replication import (
    Bye,
    CaughtUp,
    Clock,
    ClockItem,
    Entries,
    Event,
    Followers,
    Forks,
    Have,
    Hello,
    Members,
    Peers,
    Replication,
    State,
)
from tidings.storage import gossip
from tidings.storage.store import IngestResult

__all__ = ["PeerConnection", "PeerMisbehaved", "open_inbound", "relayed_host"]

log = logging.getLogger("tidings.peer")

_BLOB_TYPES = tuple(BLOB_EVENTS.values())
#: Rejection codes that mean the peer sent invalid data (as opposed to a fork it only relays).
_BENIGN = {"fork", "feed_forked", "link_conflict"}


class PeerMisbehaved(TidingsError):
    """The peer broke the rules of replication (spec §12.5); ``code`` says which."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason, code=code)


class PeerConnection:
    def __init__(
        self,
        node: ConnectionHost,
        channel: SecureChannel,
        address: str,
        *,
        initiator: bool,
        once: bool = False,
        opened: Replication | None = None,
        relay: bytes | None = None,
    ):
        self.node = node
        self.channel = channel
        self.address = address
        self.initiator = initiator
        self.once = once
        self.feed = channel.remote_feed
        #: ``opened``: hellos already exchanged (an inbound connection, ``open_inbound``)
        self.rep, self._opened = (Replication(), False) if opened is None else (opened, True)
        self.received = 0
        self.sent = 0
        self.useless = 0
        self._clocks_out = 0
        self._caught_up_in = 0
        self.ingest = IngestPipeline(node.db, functools.partial(_stored, self))
        self.feeder = Feeder(self)  # clock answers and live push
        limits, clock = node.limits, node.clock
        self._frames = RateLimit(limits["frames_per_second"], limits["frames_per_second"] * 2, clock)
        self._entries = RateLimit(limits["entries_per_second"], limits["entries_per_second"] * 2, clock)
        self._asked: set[bytes] = set()
        self.candidate = False  # its clock named our feed: we asked for its own (node/net/followers.py)
        self.notes = followers.Notes()  # follower notes sent and taken (version 5)
        #: what the peer asked and was sent here, and its work budget (spec §12.8.6)
        self.work = Ledger(limits["work_budget"])
        self.connected_at = clock.monotonic()
        self.done = trio.Event()
        self._nursery: trio.Nursery
        self.host = address.rpartition(":")[0].strip("[]") if initiator else address
        if relay is not None:  # a relayed peer's faults are its own, not the relay's (spec §12.10)
            self.host = relayed_host(self.feed)
        self._cancelled = False
        self.gossip = GossipLink(node, self)  # eager/lazy, grafts, prunes, holes, budgets (§12.7)
        self.duplicates = 0
        self.haves_sent = 0
        #: one-shot sync: entries the peer announced it will send (None: unknown, a version-1 peer)
        self.expected_in: int | None = None
        self._probe_heads: dict[bytes, int] = {}
        #: how the connection reaches the peer: "direct", or "relayed" through ``relay`` (spec §12.10)
        self.path = "direct" if relay is None else "relayed"
        self.relay = relay
        #: the direct connection that replaced this relayed one, set with ``replaced`` once it is live
        #: (spec §12.11; ``Sessions.serve``)
        self.replaced_by: PeerConnection | None = None
        self.replaced = trio.Event()
        self.helped = False  # it asked us for a dial-back or a reservation (§12.9, §12.10)
        self.remote_address = _socket_address(channel.stream, address)  # HOST:PORT, §12.9
        self.blobs = PeerBlobs(self)  # blob transfer, version 4 (§12.12)

    def statistics(self) -> dict[str, Any]:
        return {
            "feed": feed_id_text(self.feed),
            "address": self.address,
            "received": self.received,
            "sent": self.sent,
            "bytes_in": self.channel.bytes_in,
            "bytes_out": self.channel.bytes_out,
            "duplicates": self.duplicates,
            "lazy_in": len(self.gossip.lazy_in),
            "lazy_out": len(self.rep.peer_lazy),
            "work": self.work.statistics(),
            "path": self.path,
            "relay": None if self.relay is None else feed_id_text(self.relay),
        }

    def cancel(self) -> None:
        """Close this connection (the node cut the peer off)."""
        self._cancelled = True
        nursery = getattr(self, "_nursery", None)
        if nursery is not None:
            nursery.cancel_scope.cancel()

    async def run(self) -> None:
        """Run until the peer leaves, breaks the rules, or (``once``) both sides are caught up."""
        await self.feeder.start()
        failed: Exception | None = None
        opened = False
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self._cancelled:
                    nursery.cancel_scope.cancel()
                await nursery.start(self.channel.run_writer, self.node.limits["write_timeout"])
                try:  # a failed hello is raised as itself below, not in the nursery's exception group
                    if not self._opened:
                        await self.channel.send(self.rep.send(Hello(agent=self.node.agent)))
                        with trio.fail_after(self.node.limits["handshake_timeout"]):
                            self.rep.receive(await self.channel.receive())
                except Exception as exc:
                    failed = exc
                    nursery.cancel_scope.cancel()
                    return
                self.gossip.open(author=self.feed, version=self.rep.version, one_shot=self.once)
                opened = True
                nursery.start_soon(self.feeder.serve)
                nursery.start_soon(self.ingest.run)
                if self.rep.version >= 4:
                    nursery.start_soon(self.blobs.serve)
                if not self.once:
                    nursery.start_soon(self.feeder.push)
                    nursery.start_soon(self.gossip.run)
                    if self.rep.version >= 2:
                        nursery.start_soon(offer_peers, self.node, self, self.rep, self.channel)
                wants = await self.node.current_wants(extra={self.feed} if self.once else None)
                if self.once and self.rep.version >= 2:
                    await self._probe(wants)
                await self.send_wants(wants)
                if self.rep.version >= 2 and not self.once and self.node.discovery is not None:
                    await self.node.discovery.offer_members(self)
                await self._reader(nursery)
        finally:
            if opened:
                self.gossip.close()
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
        lazy = self.node.gossip.choose(id(self), sorted(held))  # spec §12.7, first naming
        items = [
            ClockItem(feed, seq, newest if seq == 0 else 0, lazy[feed]) for feed, seq in sorted(held.items())
        ]
        await self.send_clock(items)

    async def send_clock(self, items: list[ClockItem]) -> None:
        """Send a clock if the connection is ACTIVE; the peer answers each of its frames with a
        ``caught_up`` (spec §12.3), counted for the live test and one-shot completion."""
        if self.rep.state == "ACTIVE":
            frames = self.rep.send(Clock(items=items))
            self._clocks_out += len(frames)
            await self.channel.send(frames)

    async def send_have(self, notes: Sequence[tuple[bytes, int]]) -> None:
        """``have`` notes, leaving out those whose seq the peer holds by now (spec §12.4, §12.7)."""
        due = [(feed, seq) for feed, seq in notes if self.rep.peer_lacks(feed, seq)]
        if due and self.rep.state == "ACTIVE":
            self.haves_sent += len(due)
            await self.channel.send(self.rep.send(Have(items=due)))

    async def _probe(self, wants: set[bytes]) -> None:
        """One-shot sync (§12.6): a lazy clock first, so the peer's notes tell how much will come."""
        held = await self.node.db.call(gossip.heads, wants)
        self._probe_heads = held
        await self.send_clock([ClockItem(feed, seq, 0, True) for feed, seq in sorted(held.items())])

    def _on_probe_notes(self, items: tuple[tuple[bytes, int], ...]) -> None:
        """One-shot sync: the notes answering the probe tell what the sync will bring (§12.6)."""
        for feed, seq in items:
            held = self._probe_heads.get(feed)
            if held is not None and seq > held:
                self.expected_in = (self.expected_in or 0) + seq - held
                self._probe_heads[feed] = seq

    async def _reader(self, nursery: trio.Nursery) -> None:
        while True:
            frame = await self.channel.receive()
            if self.rep.our_state is State.CLOSED:
                continue  # our bye is out (upgraded, spec §12.11): the connection ends once it is written
            if not self._frames.take():
                raise PeerMisbehaved("flood", "too many frames per second")
            event = self.rep.receive(frame)
            if isinstance(event, Entries):
                if not self._entries.take(len(event.items)):
                    raise PeerMisbehaved("flood", "too many entries per second")
                keep = _filter(self, event.items)
                if keep:
                    await self.ingest.submit(keep)
            elif isinstance(event, Clock):  # follower notes (version 5) go before the answer
                await followers.on_clock(self, event.items)
                await self.feeder.wants(event.items)
            elif isinstance(event, CaughtUp):
                await self.ingest.wait_stored()  # what it sent before caught_up is stored first
                if self.once:
                    # entries it sent may have widened what we want (follows of follows); ask
                    # before counting this answer, so the finish check sees the new clock.
                    await self.send_wants(await self.node.current_wants(extra={self.feed}))
                self._caught_up_in += 1
                await self.maybe_finish()
            elif isinstance(event, Followers):  # version 5: follower notes (§12.3)
                await followers.on_notes(self, event.items)
            elif isinstance(event, Forks):
                refusals = self.work.budget.refusals
                await take_forks(self.node, self.work.budget, self.address, event.proofs)
                if self.work.budget.refusals > refusals:
                    self.overspent()
            elif isinstance(event, Have):
                for feed, seq in event.items:
                    self.work.shown(feed, seq)
                if self.once:
                    self._on_probe_notes(event.items)
                else:  # grafts of the feeds we lack unless an eager peer delivers them first (§12.7)
                    await self.gossip.on_have(event.items)
            elif isinstance(event, Peers):
                if not self.once:
                    take_peers(self.node, self.host, event.items)
            elif isinstance(event, Members):
                if self.node.discovery is not None and not self.once:
                    await self.node.discovery.receive_members(event.records, self)
            elif isinstance(event, _BLOB_TYPES):  # version 4: blob transfer (§12.12)
                await self.blobs.on_event(event)
            elif isinstance(event, WireMessage):  # version 3: reachability, relays, punching (§12.9-§12.11)
                await self.node.on_reach_event(self, event)
            elif isinstance(event, Bye):
                log.info("peer %s closed: %s %s", self.address, event.code, event.reason)
                nursery.cancel_scope.cancel()
                return

    def asked_frame(self) -> None:
        """The frame just read carried what we asked for (``blob_data``): it is not counted as a flood."""
        self._frames.refund()

    def overspent(self) -> None:
        """The peer asked for work its budget could not pay (spec §12.8.6): lower its score, once per
        frame that did; a running node cuts it off below the threshold."""
        if not self.once:
            log.info("peer %s overspent its work budget (%s)", self.address, self.work.statistics())
            self.node.penalize(self.host, "overspent")

    async def send_event(self, event: WireMessage) -> None:
        """Send one version-3 or -4 message (spec §12.9-§12.12) if the connection is ACTIVE."""
        if self.rep.state == "ACTIVE":
            await self.channel.send(self.rep.send(event))  # type: ignore[arg-type]

    async def send_members(self, records: list[bytes]) -> None:
        """Swarm member records (§13.6); only over version 2 connections of a running node."""
        if self.rep.state == "ACTIVE" and self.rep.version >= 2 and not self.once and records:
            await self.channel.send(self.rep.send(Members(records=records)))

    async def send_forks(self, proofs: list[bytes]) -> None:
        """Send fork proofs, ``FORKS_PER_FRAME`` a frame (each proof is at most ~300 bytes), leaving
        out those already sent on this connection (§12.4)."""
        proofs = self.work.unsent_proofs((hash_bytes(p), p) for p in proofs)
        if self.rep.state == "ACTIVE" and proofs:
            step = FORKS_PER_FRAME
            frames = [self.rep.send(Forks(proofs=proofs[i : i + step])) for i in range(0, len(proofs), step)]
            await self.channel.send([frame for message in frames for frame in message])

    async def maybe_finish(self) -> None:
        """``once`` mode: leave when the peer answered all our clocks and we answered all of its."""
        if (
            self.once
            and self.rep.state != "CLOSED"
            and self._caught_up_in >= self._clocks_out
            and self.feeder.served_all.is_set()
        ):
            await self.channel.send(self.rep.send(Bye(code="done", reason="sync complete")))
            await self.channel.wait_sent()  # the writer ends with the nursery: let it write the bye
            self._nursery.cancel_scope.cancel()


def _filter(
    self: PeerConnection, items: tuple[tuple[bytes, bytes | None], ...]
) -> list[tuple[bytes, bytes | None]]:
    """Keep entries of feeds we want; note that the peer holds what it sent (no echo by push)."""
    wants = self.node.wanted | ({self.feed} if self.once or self.candidate else set())
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
        self.work.shown(author, seq)
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


async def _stored(self: PeerConnection, result: IngestResult, authors: set[bytes]) -> None:
    """A batch this peer sent is stored: count it, pass on forks, feed the gossip machine."""
    await _take_result(self, result)
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
        await self.gossip.act(action)


async def _take_result(self: PeerConnection, result: IngestResult) -> None:
    """Count what a batch of this peer brought, pass on forks, and drop the peer for invalid entries."""
    self.received += len(result.added)
    self.node.note_ingested(len(result.added))
    if result.added:
        self.node.scores.add(self.host, "delivered", len(result.added))
        self.work.delivered(len(result.added))
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


def _socket_address(stream: trio.abc.Stream, address: str) -> str:
    """``HOST:PORT`` of the remote end of ``stream``'s socket; ``address`` for a stream without one."""
    try:
        host, port = stream.socket.getpeername()[:2]  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def relayed_host(feed: bytes) -> str:
    """What scores and bans of a relayed peer are kept under: its feed, never the relay's address
    (spec §12.10: the relay carries the peer's bytes, it does not answer for them)."""
    return f"relay:{feed.hex()}"


async def open_inbound(channel: SecureChannel, agent: str, timeout: float) -> tuple[Replication, Event]:
    """The opening of an inbound connection, before the node registers it: our ``hello`` at once
    (``write_now``: no writer runs yet), then the peer's first message within ``timeout`` seconds.
    That is ``hello`` on a replication connection, ``connect`` or ``accept`` on a relay connection
    (spec §12.10), which must never be taken for a peer."""
    rep = Replication()
    with trio.fail_after(timeout):
        await channel.write_now(rep.send(Hello(agent=agent)))
        first = rep.receive(await channel.receive())
    return rep, first


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
