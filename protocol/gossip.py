"""Epidemic broadcast trees and live budgets as a sans-IO machine (spec/protocol.md §12.7, §12.8.5).

Theory of operation. One ``Gossip`` machine serves all the connections of a node. It never reads the
clock, the store or the network: the node passes ``now`` and what it read from its store in, and
carries out the actions that come back (``SendClock``, ``SendHave``, ``CheckGraft``, ``CheckHole``).
Timers work as in aioquic: ``next_timer()`` says when ``handle_timer(now)`` must run next.

A connection is opened with the peer's feed (its *author*), its version and whether it is a one-shot
sync. Per connection and feed the machine keeps the mode we asked the peer to push the feed in::

    (unnamed) --choose: forced or < eager_peers others eager--> EAGER
    (unnamed) --choose: otherwise--------------------------------> LAZY
    LAZY  --graft (have note, graft_delay, still lacking) / hole repair--> EAGER
    EAGER --prune (a batch held only duplicates, >= min_eager_peers others eager)--> LAZY

EAGER puts the connection in the feed's *eager set*; LAZY puts the feed in the connection's ``lazy_in``
(§12.7). A connection is *forced eager* when it is a one-shot sync or runs version 1 (no prune, every
feed eager), and a feed is always eager on its author's connection. Closing a connection takes it out
of every eager set and drops its timers.

Timers, each per connection (all dropped when it closes):

- **graft** (per feed): a ``have`` note names a wanted feed beyond our head and no graft is pending;
  after ``graft_delay`` the machine emits ``CheckGraft``; the node reads its head and answers
  ``graft_checked``, which grafts when the head is still below the highest seq noted meanwhile and the
  feed is not paused (§12.7 "Receiving have", "Graft");
- **hole** (per stored batch and feed): entries were stored above a hole; after ``graft_delay`` the
  machine emits ``CheckHole`` at the lowest such seq; the node reads the highest seq it holds below and
  answers ``hole_checked``, which asks again from there when it is a hole and not the start of a
  partial log (§12.7 "Holes");
- **notes** (per connection): have notes of lazy feeds, gathered from live push, go out together
  ``have_interval`` after the first of them (§12.4); a note per seq at most, notes of a feed only grow;
- **resume** (per paused feed): a feed that ran out of its live budget is paused on the connection and
  resumed ``feed_burst / feed_entries_per_second / 2`` seconds later with a one-item clock in its current
  mode (§12.8.5).

Live budgets are token buckets per connection and feed (``FeedBudgets``), with time passed in; ``admit``
takes one token for every live entry of a wanted feed other than our own.
"""

from __future__ import annotations

import enum
import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .errors import LocalProtocolError

__all__ = [
    "Action",
    "Admission",
    "Cause",
    "CheckGraft",
    "CheckHole",
    "FeedBudgets",
    "Gossip",
    "GossipLimits",
    "SendClock",
    "SendHave",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class GossipLimits:
    """The limits of §12.5 that the gossip rules use, with the reference defaults."""

    eager_peers: int = 3
    min_eager_peers: int = 2
    graft_delay: float = 0.3
    have_interval: float = 0.5
    feed_entries_per_second: float = 20.0
    feed_burst: float = 2000
    #: feeds with a live budget per connection; one more and all of them start over, full (§12.5)
    budget_feeds: int = 10000

    def __post_init__(self) -> None:
        counts = (self.eager_peers, self.min_eager_peers, self.budget_feeds)
        delays = (self.graft_delay, self.have_interval, self.feed_burst)
        if min(counts) < 0 or min(delays) < 0 or not self.feed_entries_per_second > 0:
            raise LocalProtocolError("gossip limits must not be negative", code="bad_argument")

    @property
    def pause(self) -> float:
        """How long a feed stays paused after it ran out of its live budget (§12.8.5)."""
        return self.feed_burst / self.feed_entries_per_second / 2


class Cause(enum.Enum):
    """Why a one-item clock is sent (§12.7, §12.8.5)."""

    GRAFT = "graft"
    PRUNE = "prune"
    REPAIR = "repair"
    RESUME = "resume"


class Admission(enum.Enum):
    """What to do with a received entry of a wanted feed (§12.8.5)."""

    TAKE = "take"
    #: dropped: the feed is paused on this connection
    PAUSED = "paused"
    #: dropped: the feed ran out of its live budget just now and is paused from now on
    PAUSE = "pause"


@dataclass(frozen=True, slots=True, kw_only=True)
class SendClock:
    """Send ``conn`` a one-item clock ``[feed, seq, 0, lazy]`` if the connection is ACTIVE; ``seq`` None:
    the node's highest held seq of ``feed``. The machine has already changed the feed's mode."""

    conn: int
    feed: bytes
    lazy: bool
    seq: int | None
    cause: Cause


@dataclass(frozen=True, slots=True, kw_only=True)
class SendHave:
    """Send ``conn`` these have notes (ascending feed key), leaving out those whose seq the peer holds by
    now (what it was sent or sent us meanwhile, ``Replication.peer_lacks``)."""

    conn: int
    notes: tuple[tuple[bytes, int], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckGraft:
    """Read the highest held seq of ``feed`` and answer ``Gossip.graft_checked`` (a note named ``seq``)."""

    conn: int
    feed: bytes
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckHole:
    """Read the highest seq of ``feed`` held below ``seq`` and answer ``Gossip.hole_checked``."""

    conn: int
    feed: bytes
    seq: int


Action = SendClock | SendHave | CheckGraft | CheckHole


class FeedBudgets:
    """A token bucket per feed (§12.8.5): ``rate`` per second, bursts up to ``burst``, full when a feed is
    first seen; when more than ``size`` feeds are tracked, all buckets start over, full."""

    def __init__(self, rate: float, burst: float, size: int = 10000) -> None:
        self.rate, self.burst, self.size = rate, burst, size
        self._buckets: dict[bytes, tuple[float, float]] = {}  # feed -> (tokens, when)

    def take(self, feed: bytes, now: float) -> bool:
        """Take one token of ``feed`` at ``now``; False when its bucket is empty."""
        bucket = self._buckets.get(feed)
        if bucket is None:
            if len(self._buckets) > self.size:
                self._buckets.clear()
            bucket = (self.burst, now)
        tokens = min(self.burst, bucket[0] + max(0.0, now - bucket[1]) * self.rate)
        if tokens < 1:
            self._buckets[feed] = (tokens, now)
            return False
        self._buckets[feed] = (tokens - 1, now)
        return True


class _Timer(enum.Enum):
    GRAFT = "graft"
    HOLE = "hole"
    NOTES = "notes"
    RESUME = "resume"


@dataclass(slots=True)
class _Graft:
    """A pending graft: when it is due (inf while the node checks its head) and the highest seq noted."""

    due: float
    seq: int


@dataclass(slots=True)
class _Peer:
    """What the machine keeps about one connection."""

    conn: int
    author: bytes
    one_shot: bool
    #: one-shot sync or version 1: every feed eager, no prune (§12.7)
    forced: bool
    budgets: FeedBudgets
    lazy_in: set[bytes] = field(default_factory=set)
    #: feed -> highest seq a note (sent or gathered) named on this connection (§12.4)
    noted: dict[bytes, int] = field(default_factory=dict)
    gathered: dict[bytes, int] = field(default_factory=dict)
    notes_due: float = math.inf
    grafts: dict[bytes, _Graft] = field(default_factory=dict)
    #: feed -> when the pause ends (§12.8.5)
    paused: dict[bytes, float] = field(default_factory=dict)
    duplicates: int = 0


class Gossip:
    """The gossip rules of one node over all its connections (see the module docstring)."""

    def __init__(self, *, own: bytes, limits: GossipLimits | None = None) -> None:
        self.own = own
        self.limits = limits or GossipLimits()
        self._peers: dict[int, _Peer] = {}
        self._eager: dict[bytes, set[int]] = {}
        # (due, order, kind, peer, feed, seq); entries of closed peers or cancelled timers are skipped
        self._timers: list[tuple[float, int, _Timer, _Peer, bytes, int]] = []
        self._order = 0
        self.duplicates = 0
        self.grafts = 0
        self.prunes = 0
        self.repairs = 0
        self.pauses = 0

    # -- connections ------------------------------------------------------------------------------------
    def open(self, conn: int, *, author: bytes, version: int, one_shot: bool = False) -> None:
        """A connection to ``author`` finished its hello exchange; ``conn`` is unique while it is open."""
        if conn in self._peers:
            raise LocalProtocolError("connection opened twice", code="bad_argument")
        budgets = FeedBudgets(
            self.limits.feed_entries_per_second, self.limits.feed_burst, self.limits.budget_feeds
        )
        forced = one_shot or version < 2
        self._peers[conn] = _Peer(conn=conn, author=author, one_shot=one_shot, forced=forced, budgets=budgets)

    def close(self, conn: int) -> None:
        """The connection ended: it leaves every eager set and its timers are dropped (§12.7)."""
        if self._peers.pop(conn, None) is None:
            return
        for feed in [f for f, holders in self._eager.items() if conn in holders]:
            self._set_eager(conn, feed, False)

    def _peer(self, conn: int) -> _Peer:
        peer = self._peers.get(conn)
        if peer is None:
            raise LocalProtocolError("unknown or closed connection", code="unknown_connection")
        return peer

    # -- modes ------------------------------------------------------------------------------------------
    def choose(self, conn: int, feeds: Iterable[bytes]) -> dict[bytes, bool]:
        """Name ``feeds`` on ``conn`` for the first time: feed -> lazy (§12.7 "Choosing at first naming")."""
        peer = self._peer(conn)
        out: dict[bytes, bool] = {}
        for feed in feeds:
            lazy = not peer.forced and feed != peer.author
            lazy = lazy and len(self._eager.get(feed, set()) - {conn}) >= self.limits.eager_peers
            self._set_mode(peer, feed, lazy)
            out[feed] = lazy
        return out

    def _set_mode(self, peer: _Peer, feed: bytes, lazy: bool) -> None:
        if lazy:
            peer.lazy_in.add(feed)
        else:
            peer.lazy_in.discard(feed)
        self._set_eager(peer.conn, feed, not lazy)

    def _set_eager(self, conn: int, feed: bytes, eager: bool) -> None:
        if eager:
            self._eager.setdefault(feed, set()).add(conn)
            return
        holders = self._eager.get(feed)
        if holders is not None:
            holders.discard(conn)
            if not holders:
                del self._eager[feed]

    # -- have notes in: graft ---------------------------------------------------------------------------
    def have_received(
        self, conn: int, notes: Sequence[tuple[bytes, int]], heads: Mapping[bytes, int], now: float
    ) -> None:
        """The peer sent have notes; ``heads`` holds our highest seq of each noted feed we want (a feed
        missing from it is not wanted: its notes are ignored). Schedules grafts (§12.7)."""
        peer = self._peer(conn)
        if peer.one_shot:
            return  # a one-shot sync never grafts on the notes (§12.6)
        for feed, seq in notes:
            head = heads.get(feed)
            if head is None:
                continue
            pending = peer.grafts.get(feed)
            if pending is not None:  # a graft is pending: it checks against the newest note
                pending.seq = max(pending.seq, seq)
            elif head < seq:
                due = now + self.limits.graft_delay
                peer.grafts[feed] = _Graft(due=due, seq=seq)
                self._schedule(due, _Timer.GRAFT, peer, feed, seq)

    def graft_checked(self, conn: int, feed: bytes, *, head: int) -> list[Action]:
        """Answer to ``CheckGraft``: our highest held seq of ``feed`` now. Grafts the feed when we still
        lack what the notes named and it is not paused (§12.7). A closed connection gets nothing."""
        peer = self._peers.get(conn)
        pending = None if peer is None else peer.grafts.pop(feed, None)
        if peer is None or pending is None or head >= pending.seq or feed in peer.paused:
            return []
        self.grafts += 1
        self._set_mode(peer, feed, False)
        return [SendClock(conn=conn, feed=feed, lazy=False, seq=head, cause=Cause.GRAFT)]

    def grafting(self, conn: int, feed: bytes) -> bool:
        """Whether a graft of ``feed`` is pending on ``conn``."""
        peer = self._peers.get(conn)
        return peer is not None and feed in peer.grafts

    # -- stored batches: prune and holes ----------------------------------------------------------------
    def stored(
        self,
        conn: int,
        *,
        authors: Iterable[bytes],
        fresh: Iterable[bytes],
        duplicates: int,
        gaps: Iterable[tuple[bytes, int]],
        now: float,
    ) -> list[Action]:
        """A batch received on ``conn`` was stored: the feeds of its entries (``authors``), those with an
        entry stored as new or refused (``fresh``), the duplicate count, and the (feed, seq) of entries
        stored above a hole. Prunes feeds that brought only duplicates and schedules hole checks (§12.7)."""
        peer = self._peer(conn)
        peer.duplicates += duplicates
        self.duplicates += duplicates
        lowest: dict[bytes, int] = {}
        for feed, seq in gaps:
            lowest[feed] = min(seq, lowest.get(feed, seq))
        if not peer.one_shot:
            due = now + self.limits.graft_delay
            for feed, seq in lowest.items():
                self._schedule(due, _Timer.HOLE, peer, feed, seq)
        actions: list[Action] = []
        if peer.forced or not duplicates:
            return actions
        for feed in sorted(set(authors) - set(fresh)):
            if feed == peer.author or feed in peer.lazy_in:
                continue
            if len(self._eager.get(feed, set()) - {conn}) >= self.limits.min_eager_peers:
                self.prunes += 1
                self._set_mode(peer, feed, True)
                actions.append(SendClock(conn=conn, feed=feed, lazy=True, seq=None, cause=Cause.PRUNE))
        return actions

    def hole_checked(self, conn: int, feed: bytes, *, seq: int, below: int) -> list[Action]:
        """Answer to ``CheckHole``: the highest seq of ``feed`` held below ``seq``. A hole (``0 < below <
        seq - 1``; 0 is the start of a partial log) on a feed not paused is asked for again with an eager
        clock from ``below`` (§12.7 "Holes"). A closed connection gets nothing."""
        peer = self._peers.get(conn)
        if peer is None or not 0 < below < seq - 1 or feed in peer.paused:
            return []
        self.repairs += 1
        self._set_mode(peer, feed, False)
        return [SendClock(conn=conn, feed=feed, lazy=False, seq=below, cause=Cause.REPAIR)]

    # -- have notes out ---------------------------------------------------------------------------------
    def gathered(self, conn: int, notes: Mapping[bytes, int], now: float) -> None:
        """Live push found new entries of feeds the peer asked for lazily: feed -> highest new seq the
        peer lacks. Notes beyond what was noted go out together ``have_interval`` later (§12.4)."""
        peer = self._peer(conn)
        for feed, seq in notes.items():
            if seq > peer.noted.get(feed, 0):
                peer.noted[feed] = seq
                peer.gathered[feed] = max(seq, peer.gathered.get(feed, 0))
        if peer.gathered and peer.notes_due == math.inf:
            peer.notes_due = now + self.limits.have_interval
            self._schedule(peer.notes_due, _Timer.NOTES, peer, b"", 0)

    def noted(self, conn: int, notes: Iterable[tuple[bytes, int]]) -> None:
        """Notes sent at once (the answer to a lazy clock item): remembered as noted (§12.7)."""
        peer = self._peer(conn)
        for feed, seq in notes:
            peer.noted[feed] = max(seq, peer.noted.get(feed, 0))

    # -- live budgets -----------------------------------------------------------------------------------
    def admit(self, conn: int, feed: bytes, *, live: bool, now: float) -> Admission:
        """An entry of a wanted ``feed`` arrived on ``conn``; ``live``: the peer has answered every clock
        we sent on it. Takes a token of the feed's live budget, or pauses the feed (§12.8.5)."""
        peer = self._peer(conn)
        if feed in peer.paused:
            return Admission.PAUSED
        if not live or peer.one_shot or feed == self.own or peer.budgets.take(feed, now):
            return Admission.TAKE
        self.pauses += 1
        peer.paused[feed] = due = now + self.limits.pause
        self._schedule(due, _Timer.RESUME, peer, feed, 0)
        return Admission.PAUSE

    def paused(self, conn: int, feed: bytes) -> bool:
        """Whether ``feed`` is paused on ``conn`` by its live budget."""
        peer = self._peers.get(conn)
        return peer is not None and feed in peer.paused

    # -- timers -----------------------------------------------------------------------------------------
    def _schedule(self, due: float, kind: _Timer, peer: _Peer, feed: bytes, seq: int) -> None:
        self._order += 1
        heapq.heappush(self._timers, (due, self._order, kind, peer, feed, seq))

    def _live(self, kind: _Timer, peer: _Peer, feed: bytes, due: float) -> bool:
        """Whether a timer still stands (its connection open, and not cancelled or replaced)."""
        if self._peers.get(peer.conn) is not peer:
            return False
        if kind is _Timer.GRAFT:
            pending = peer.grafts.get(feed)
            return pending is not None and pending.due == due
        if kind is _Timer.NOTES:
            return peer.notes_due == due
        if kind is _Timer.RESUME:
            return peer.paused.get(feed) == due
        return True

    def next_timer(self) -> float | None:
        """When ``handle_timer`` must run next, or None when no timer is set."""
        while self._timers and not self._live(*self._head()):
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def _head(self) -> tuple[_Timer, _Peer, bytes, float]:
        due, _, kind, peer, feed, _ = self._timers[0]
        return kind, peer, feed, due

    def handle_timer(self, now: float) -> list[Action]:
        """Run the timers due at ``now``, oldest first; returns the actions to carry out."""
        actions: list[Action] = []
        while self._timers and self._timers[0][0] <= now:
            due, _, kind, peer, feed, seq = heapq.heappop(self._timers)
            if not self._live(kind, peer, feed, due):
                continue
            if kind is _Timer.GRAFT:
                pending = peer.grafts[feed]
                pending.due = math.inf  # checking: later notes still raise its seq
                actions.append(CheckGraft(conn=peer.conn, feed=feed, seq=pending.seq))
            elif kind is _Timer.HOLE:
                actions.append(CheckHole(conn=peer.conn, feed=feed, seq=seq))
            elif kind is _Timer.NOTES:
                notes, peer.gathered, peer.notes_due = peer.gathered, {}, math.inf
                actions.append(SendHave(conn=peer.conn, notes=tuple(sorted(notes.items()))))
            else:
                del peer.paused[feed]
                lazy = feed in peer.lazy_in
                self._set_mode(peer, feed, lazy)
                actions.append(SendClock(conn=peer.conn, feed=feed, lazy=lazy, seq=None, cause=Cause.RESUME))
        return actions

    # -- views ------------------------------------------------------------------------------------------
    def lazy_in(self, conn: int) -> frozenset[bytes]:
        """Feeds we asked the peer on ``conn`` to push lazily (§12.7)."""
        peer = self._peers.get(conn)
        return frozenset() if peer is None else frozenset(peer.lazy_in)

    def eager_set(self, feed: bytes) -> frozenset[int]:
        """Connections we asked to push ``feed`` eagerly (§12.7)."""
        return frozenset(self._eager.get(feed, ()))

    def peer_statistics(self, conn: int) -> dict[str, int]:
        """Counters of one connection (empty once it is closed)."""
        peer = self._peers.get(conn)
        if peer is None:
            return {}
        return {"duplicates": peer.duplicates, "lazy_in": len(peer.lazy_in), "paused": len(peer.paused)}

    def statistics(self) -> dict[str, int]:
        """Counters over all connections since the machine started."""
        return {
            "duplicates": self.duplicates,
            "grafts": self.grafts,
            "prunes": self.prunes,
            "repairs": self.repairs,
            "pauses": self.pauses,
            "eager_feeds": len(self._eager),
        }
