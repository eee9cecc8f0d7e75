"""The gossip machine (spec/protocol.md §12.7 epidemic broadcast trees, §12.4 have notes, §12.8.5 live
budgets), one rule at a time with a fake clock (plain floats), two machines paired over an in-memory
link, and random event sequences for its invariants."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tidings.protocol import LocalProtocolError
from tidings.protocol.gossip import (
    Action,
    Admission,
    Cause,
    CheckGraft,
    CheckHole,
    FeedBudgets,
    Gossip,
    GossipLimits,
    SendClock,
    SendHave,
)
from tidings.protocol.replication import Clock, ClockItem, Have, Hello, Replication

OWN = b"\xee" * 32
F = b"\x00" * 32
G = b"\x11" * 32
H = b"\x22" * 32
AUTHORS = [bytes([i]) * 32 for i in range(0x30, 0x36)]

LIMITS = GossipLimits(eager_peers=3, min_eager_peers=2, graft_delay=0.3, have_interval=0.5)


def machine(**limits: float) -> Gossip:
    return Gossip(own=OWN, limits=GossipLimits(**{**_fields(LIMITS), **limits}))


def _fields(limits: GossipLimits) -> dict[str, float]:
    return {name: getattr(limits, name) for name in GossipLimits.__dataclass_fields__}


def opened(g: Gossip, *conns: int, version: int = 2, one_shot: bool = False) -> None:
    for conn in conns:
        g.open(conn, author=AUTHORS[conn % len(AUTHORS)], version=version, one_shot=one_shot)


# -- §12.7 choosing at first naming ----------------------------------------------------------------------


def test_first_naming_the_first_eager_peers_connections_are_eager_later_ones_lazy() -> None:
    g = machine()
    opened(g, 1, 2, 3, 4, 5)
    modes = [g.choose(conn, [F])[F] for conn in (1, 2, 3, 4, 5)]
    assert modes == [False, False, False, True, True]
    assert g.eager_set(F) == {1, 2, 3}
    assert g.lazy_in(4) == {F} and g.lazy_in(1) == frozenset()


def test_first_naming_the_author_of_a_feed_is_always_eager() -> None:
    g = machine(eager_peers=0)
    opened(g, 1, 2)
    author = AUTHORS[2]
    assert g.choose(1, [author]) == {author: True}
    assert g.choose(2, [author]) == {author: False}  # conn 2 is the author's own connection
    assert g.eager_set(author) == {2}


def test_first_naming_one_shot_and_version_1_connections_are_always_eager() -> None:
    g = machine(eager_peers=0)
    g.open(1, author=AUTHORS[1], version=1)
    g.open(2, author=AUTHORS[2], version=2, one_shot=True)
    g.open(3, author=AUTHORS[3], version=2)
    assert g.choose(1, [F, G]) == {F: False, G: False}
    assert g.choose(2, [F]) == {F: False}
    assert g.choose(3, [F]) == {F: True}


def test_a_closed_connection_leaves_every_eager_set_and_the_next_one_is_eager() -> None:
    g = machine(eager_peers=1)
    opened(g, 1, 2)
    g.choose(1, [F, G])
    assert g.choose(2, [F]) == {F: True}
    g.close(1)
    assert g.eager_set(F) == frozenset() and g.eager_set(G) == frozenset()
    opened(g, 3)
    assert g.choose(3, [F]) == {F: False}
    g.close(1)  # closing twice is harmless


# -- §12.7 receiving have, graft ------------------------------------------------------------------------


def lazy_machine() -> Gossip:
    """Connection 1 pushes F eagerly, connection 2 lazily (eager_peers 1)."""
    g = machine(eager_peers=1)
    opened(g, 1, 2)
    g.choose(1, [F, G])
    g.choose(2, [F, G])
    return g


def test_graft_after_graft_delay_when_a_note_names_entries_still_lacking() -> None:
    g = lazy_machine()
    g.have_received(2, [(F, 7)], {F: 3}, now=10.0)
    assert g.next_timer() == pytest.approx(10.3)
    assert g.handle_timer(10.29) == []  # nothing before graft_delay
    assert g.handle_timer(10.3) == [CheckGraft(conn=2, feed=F, seq=7)]
    assert g.graft_checked(2, F, head=5) == [SendClock(conn=2, feed=F, lazy=False, seq=5, cause=Cause.GRAFT)]
    assert g.eager_set(F) == {1, 2} and F not in g.lazy_in(2)
    assert g.statistics()["grafts"] == 1


def test_no_graft_when_an_eager_peer_delivered_meanwhile() -> None:
    g = lazy_machine()
    g.have_received(2, [(F, 7)], {F: 3}, now=0.0)
    assert g.handle_timer(0.3) == [CheckGraft(conn=2, feed=F, seq=7)]
    assert g.graft_checked(2, F, head=7) == []
    assert F in g.lazy_in(2) and not g.grafting(2, F)


def test_notes_while_a_graft_waits_only_raise_the_seq_it_checks() -> None:
    g = lazy_machine()
    g.have_received(2, [(F, 5)], {F: 3}, now=0.0)
    g.have_received(2, [(F, 9)], {F: 3}, now=0.2)  # same graft: no new timer, a higher seq
    assert g.handle_timer(0.3) == [CheckGraft(conn=2, feed=F, seq=9)]
    assert g.handle_timer(0.5) == []
    g.have_received(2, [(F, 12)], {F: 3}, now=0.35)  # while the node reads its head
    assert g.graft_checked(2, F, head=9)[0].cause is Cause.GRAFT  # 9 < 12: still lacking


def test_notes_of_unwanted_feeds_or_of_seqs_held_start_no_graft() -> None:
    g = lazy_machine()
    g.have_received(2, [(H, 7)], {}, now=0.0)  # H not wanted: missing from heads
    g.have_received(2, [(F, 3)], {F: 3}, now=0.0)  # we hold 3 already
    assert g.next_timer() is None and not g.grafting(2, F)


def test_a_graft_is_not_limited_by_eager_peers() -> None:
    g = lazy_machine()
    g.have_received(2, [(F, 2)], {F: 1}, now=0.0)
    g.handle_timer(1.0)
    g.graft_checked(2, F, head=1)
    assert g.eager_set(F) == {1, 2}  # two eager with eager_peers 1


def test_no_graft_of_a_feed_paused_by_its_live_budget() -> None:
    g = machine(eager_peers=1, feed_burst=1, feed_entries_per_second=0.01)
    opened(g, 1, 2)
    g.choose(1, [F])
    g.choose(2, [F])
    assert g.admit(2, F, live=True, now=0.0) is Admission.TAKE
    assert g.admit(2, F, live=True, now=0.0) is Admission.PAUSE
    g.have_received(2, [(F, 9)], {F: 1}, now=0.0)
    assert g.handle_timer(0.3) == [CheckGraft(conn=2, feed=F, seq=9)]
    assert g.graft_checked(2, F, head=1) == []


def test_a_one_shot_sync_never_grafts_on_notes() -> None:
    g = machine()
    opened(g, 1, one_shot=True)
    g.choose(1, [F])
    g.have_received(1, [(F, 9)], {F: 0}, now=0.0)
    assert g.next_timer() is None


# -- §12.7 prune ----------------------------------------------------------------------------------------


def three_eager() -> Gossip:
    g = machine()
    opened(g, 1, 2, 3)
    for conn in (1, 2, 3):
        g.choose(conn, [F, G])
    return g


def test_prune_a_feed_whose_batch_held_only_duplicates_while_enough_others_are_eager() -> None:
    g = three_eager()
    actions = g.stored(1, authors=[F, G], fresh=[G], duplicates=4, gaps=[], now=0.0)
    assert actions == [SendClock(conn=1, feed=F, lazy=True, seq=None, cause=Cause.PRUNE)]
    assert g.lazy_in(1) == {F} and g.eager_set(F) == {2, 3}
    assert g.statistics()["duplicates"] == 4 and g.peer_statistics(1)["duplicates"] == 4


def test_no_prune_when_fewer_than_min_eager_peers_others_are_eager() -> None:
    g = three_eager()
    assert g.stored(1, authors=[F], fresh=[], duplicates=1, gaps=[], now=0.0) != []
    assert g.stored(2, authors=[F], fresh=[], duplicates=1, gaps=[], now=0.0) == []  # only 3 left
    assert g.eager_set(F) == {2, 3}


def test_no_prune_of_the_authors_feed_a_lazy_feed_or_without_duplicates() -> None:
    g = three_eager()
    author = AUTHORS[1]
    g.choose(1, [author])
    assert g.stored(1, authors=[author], fresh=[], duplicates=3, gaps=[], now=0.0) == []
    assert g.stored(1, authors=[F], fresh=[], duplicates=0, gaps=[], now=0.0) == []
    g.stored(1, authors=[F], fresh=[], duplicates=1, gaps=[], now=0.0)
    assert g.stored(1, authors=[F], fresh=[], duplicates=1, gaps=[], now=0.0) == []  # lazy already


def test_no_prune_on_a_version_1_or_one_shot_connection() -> None:
    g = machine(min_eager_peers=0)
    opened(g, 1, version=1)
    opened(g, 2, one_shot=True)
    g.choose(1, [F])
    g.choose(2, [F])
    for conn in (1, 2):
        assert g.stored(conn, authors=[F], fresh=[], duplicates=5, gaps=[], now=0.0) == []
    assert g.eager_set(F) == {1, 2}


# -- §12.7 holes ----------------------------------------------------------------------------------------


def test_holes_are_checked_after_graft_delay_at_the_lowest_seq_of_each_feed() -> None:
    g = three_eager()
    g.stored(1, authors=[F, G], fresh=[F, G], duplicates=0, gaps=[(F, 10), (F, 7), (G, 3)], now=1.0)
    assert g.handle_timer(1.2) == []
    assert g.handle_timer(1.3) == [CheckHole(conn=1, feed=F, seq=7), CheckHole(conn=1, feed=G, seq=3)]


def test_a_hole_is_asked_for_again_from_below_it_on_the_connection_that_delivered() -> None:
    g = lazy_machine()
    g.stored(2, authors=[F], fresh=[F], duplicates=0, gaps=[(F, 7)], now=0.0)
    [check] = g.handle_timer(0.3)
    assert g.hole_checked(2, F, seq=check.seq, below=4) == [
        SendClock(conn=2, feed=F, lazy=False, seq=4, cause=Cause.REPAIR)
    ]
    assert 2 in g.eager_set(F) and F not in g.lazy_in(2)  # the repair grafts the feed there
    assert g.statistics()["repairs"] == 1


def test_the_start_of_a_partial_log_is_no_hole() -> None:
    g = three_eager()
    assert g.hole_checked(1, F, seq=7, below=0) == []  # nothing held below: a partial log
    assert g.hole_checked(1, F, seq=7, below=6) == []  # filled meanwhile
    assert g.statistics()["repairs"] == 0


def test_no_hole_repair_in_a_one_shot_sync_or_of_a_paused_feed_or_after_close() -> None:
    g = machine(feed_burst=0)
    opened(g, 1, one_shot=True)
    g.stored(1, authors=[F], fresh=[F], duplicates=0, gaps=[(F, 7)], now=0.0)
    assert g.next_timer() is None
    opened(g, 2)
    assert g.admit(2, F, live=True, now=0.0) is Admission.PAUSE
    assert g.hole_checked(2, F, seq=7, below=3) == []
    g.stored(2, authors=[F], fresh=[F], duplicates=0, gaps=[(G, 7)], now=0.0)
    g.close(2)
    assert g.handle_timer(1.0) == [] and g.hole_checked(2, G, seq=7, below=3) == []


# -- §12.4 have notes out -------------------------------------------------------------------------------


def test_have_notes_are_gathered_and_sent_together_have_interval_after_the_first() -> None:
    g = three_eager()
    g.gathered(1, {G: 3}, now=0.0)
    g.gathered(1, {G: 5, F: 2}, now=0.2)
    assert g.next_timer() == pytest.approx(0.5)
    assert g.handle_timer(0.49) == []
    assert g.handle_timer(0.5) == [SendHave(conn=1, notes=((F, 2), (G, 5)))]  # ascending feed key
    assert g.next_timer() is None


def test_a_note_per_seq_at_most_and_notes_of_a_feed_only_grow() -> None:
    g = three_eager()
    g.noted(1, [(F, 7)])  # sent at once, answering a lazy clock item
    g.gathered(1, {F: 7}, now=0.0)
    g.gathered(1, {F: 6}, now=0.0)
    assert g.next_timer() is None
    g.gathered(1, {F: 8}, now=1.0)
    assert g.handle_timer(2.0) == [SendHave(conn=1, notes=((F, 8),))]
    g.gathered(1, {F: 8}, now=3.0)
    assert g.handle_timer(9.0) == []


# -- §12.8.5 live budgets -------------------------------------------------------------------------------


def test_a_feed_over_its_live_budget_is_paused_then_resumed_in_its_mode() -> None:
    g = machine(eager_peers=1, feed_burst=3, feed_entries_per_second=1.0)
    opened(g, 1, 2)
    g.choose(1, [F])
    g.choose(2, [F])  # lazy on 2
    got = [g.admit(2, F, live=True, now=0.0) for _ in range(5)]
    assert got == [Admission.TAKE] * 3 + [Admission.PAUSE, Admission.PAUSED]
    assert g.paused(2, F) and not g.paused(1, F)  # per connection
    assert g.next_timer() == pytest.approx(1.5)  # feed_burst / rate / 2
    assert g.handle_timer(1.5) == [SendClock(conn=2, feed=F, lazy=True, seq=None, cause=Cause.RESUME)]
    assert not g.paused(2, F)
    assert g.admit(2, F, live=True, now=1.5) is Admission.TAKE  # refilled 1.5 tokens meanwhile
    assert g.admit(2, F, live=True, now=1.5) is Admission.PAUSE


def test_catch_up_entries_one_shot_syncs_and_our_own_feed_take_no_tokens() -> None:
    g = machine(feed_burst=1, feed_entries_per_second=0.001)
    opened(g, 1)
    opened(g, 2, one_shot=True)
    assert all(g.admit(1, F, live=False, now=0.0) is Admission.TAKE for _ in range(10))
    assert all(g.admit(1, OWN, live=True, now=0.0) is Admission.TAKE for _ in range(10))
    assert all(g.admit(2, F, live=True, now=0.0) is Admission.TAKE for _ in range(10))
    assert g.admit(1, F, live=True, now=0.0) is Admission.TAKE
    assert g.admit(1, F, live=True, now=0.0) is Admission.PAUSE


def test_feed_budgets_refill_with_time_and_start_over_when_too_many_feeds() -> None:
    budgets = FeedBudgets(rate=2.0, burst=2, size=2)
    assert [budgets.take(F, now=0.0) for _ in range(3)] == [True, True, False]
    assert budgets.take(F, now=0.5)  # one token back
    assert not budgets.take(F, now=0.5)
    budgets.take(G, now=0.5)
    budgets.take(H, now=0.5)  # three feeds tracked: the next new one clears them
    budgets.take(AUTHORS[0], now=0.5)
    assert budgets.take(F, now=0.5)  # full again


# -- the machine's API ----------------------------------------------------------------------------------


def test_misuse_is_a_local_protocol_error() -> None:
    g = machine()
    opened(g, 1)
    with pytest.raises(LocalProtocolError) as info:
        opened(g, 1)
    assert info.value.code == "bad_argument"
    with pytest.raises(LocalProtocolError) as info:
        g.choose(9, [F])
    assert info.value.code == "unknown_connection"
    with pytest.raises(LocalProtocolError):
        GossipLimits(graft_delay=-1)
    with pytest.raises(LocalProtocolError):
        GossipLimits(feed_entries_per_second=0)


def test_a_reused_connection_id_inherits_no_timers() -> None:
    g = lazy_machine()
    g.have_received(2, [(F, 9)], {F: 1}, now=0.0)
    g.gathered(2, {G: 4}, now=0.0)
    g.close(2)
    opened(g, 2)
    g.choose(2, [F])
    assert g.handle_timer(5.0) == [] and g.next_timer() is None
    assert g.graft_checked(2, F, head=1) == []


# -- two machines over an in-memory link ----------------------------------------------------------------


@dataclass
class Side:
    """A node reduced to its gossip machine, one replication machine and its heads."""

    gossip: Gossip
    rep: Replication = field(default_factory=Replication)
    heads: dict[bytes, int] = field(default_factory=dict)


def link(a: Side, b: Side) -> None:
    (hello_a,) = a.rep.send(Hello(agent="test"))
    (hello_b,) = b.rep.send(Hello(agent="test"))
    a.rep.receive(hello_b)
    b.rep.receive(hello_a)


def deliver(actions: list[Action], sender: Side, receiver: Side, now: float) -> None:
    """Carry out ``sender``'s actions the way the node does, delivering frames to ``receiver``."""
    for action in actions:
        if isinstance(action, CheckGraft):
            head = sender.heads.get(action.feed, 0)
            deliver(sender.gossip.graft_checked(action.conn, action.feed, head=head), sender, receiver, now)
        elif isinstance(action, SendClock):
            seq = sender.heads.get(action.feed, 0) if action.seq is None else action.seq
            for frame in sender.rep.send(Clock(items=[ClockItem(action.feed, seq, 0, action.lazy)])):
                assert isinstance(receiver.rep.receive(frame), Clock)
        elif isinstance(action, SendHave):
            due = [(f, s) for f, s in action.notes if sender.rep.peer_lacks(f, s)]
            for frame in sender.rep.send(Have(items=due)):
                event = receiver.rep.receive(frame)
                assert isinstance(event, Have)
                receiver.gossip.have_received(1, event.items, receiver.heads, now)


def test_pair_a_lazy_feed_travels_as_notes_and_is_grafted_when_nothing_else_delivers() -> None:
    """R asks P lazily for F (§12.7 first naming); P's live push becomes a have note after
    ``have_interval`` (§12.4); R grafts P ``graft_delay`` later (§12.7), and P pushes F eagerly."""
    p, r = Side(Gossip(own=G, limits=LIMITS)), Side(Gossip(own=H, limits=GossipLimits(eager_peers=0)))
    link(p, r)
    p.gossip.open(1, author=H, version=2)
    r.gossip.open(1, author=G, version=2)
    r.heads[F] = 2
    lazy = r.gossip.choose(1, [F])
    for frame in r.rep.send(Clock(items=[ClockItem(F, 2, 0, lazy[F])])):
        p.rep.receive(frame)
    assert F in p.rep.peer_lazy
    p.heads[F] = 5  # P stored F up to 5: its live push gathers a note (the peer lacks 5)
    assert p.rep.peer_lacks(F, 5)
    p.gossip.gathered(1, {F: 5}, now=0.0)
    deliver(p.gossip.handle_timer(0.5), p, r, now=0.5)
    assert r.gossip.grafting(1, F) and r.gossip.next_timer() == pytest.approx(0.8)
    deliver(r.gossip.handle_timer(0.8), r, p, now=0.8)
    assert F not in p.rep.peer_lazy and F not in r.gossip.lazy_in(1)
    assert p.rep.peer_wants[F] == 2  # the graft's clock: P sends the entries after R's head


# -- invariants over random event sequences -------------------------------------------------------------

CONNS = range(4)
FEEDS = [F, G, H, AUTHORS[1], AUTHORS[2]]

waits = st.tuples(st.just("wait"), st.floats(0.0, 1.0))
events = st.lists(
    st.one_of(
        waits,
        waits,
        st.tuples(st.just("open"), st.sampled_from(CONNS), st.sampled_from([1, 2, 2, 2]), st.booleans()),
        st.tuples(st.just("close"), st.sampled_from(CONNS)),
        st.tuples(st.just("choose"), st.sampled_from(CONNS), st.sets(st.sampled_from(FEEDS))),
        st.tuples(st.just("choose"), st.sampled_from(CONNS), st.sets(st.sampled_from(FEEDS))),
        st.tuples(st.just("have"), st.sampled_from(CONNS), st.sampled_from(FEEDS), st.integers(1, 9)),
        st.tuples(
            st.just("stored"),
            st.sampled_from(CONNS),
            st.sets(st.sampled_from(FEEDS), min_size=1),
            st.integers(0, 3),
            st.lists(st.tuples(st.sampled_from(FEEDS), st.integers(2, 9)), max_size=2),
        ),
        st.tuples(st.just("admit"), st.sampled_from(CONNS), st.sampled_from(FEEDS), st.booleans()),
        st.tuples(st.just("gathered"), st.sampled_from(CONNS), st.sampled_from(FEEDS), st.integers(1, 9)),
        st.tuples(st.just("wait"), st.floats(0.0, 2.0)),
    ),
    min_size=15,
    max_size=80,
)
#: the connections open at the start: (version, one-shot) of each
preludes = st.lists(
    st.tuples(st.sampled_from([1, 2, 2, 2, 2]), st.sampled_from([False, False, False, True])),
    min_size=4,
    max_size=4,
)


def run_events(
    prelude: list[tuple[int, bool]],
    events: list[tuple[Any, ...]],
    *,
    grafts: bool,
    heads: dict[bytes, int],
) -> None:
    limits = GossipLimits(
        eager_peers=2, min_eager_peers=1, graft_delay=0.3, feed_burst=3, feed_entries_per_second=2.0
    )
    g = Gossip(own=OWN, limits=limits)
    now = 0.0
    open_: dict[int, tuple[bytes, bool]] = {}  # conn -> (author, forced eager)
    named: dict[int, set[bytes]] = {}
    first_note: dict[tuple[int, bytes], float] = {}
    checked: set[tuple[int, bytes]] = set()
    taken: dict[tuple[int, bytes], list[float]] = {}
    events = [("open", conn, version, one_shot) for conn, (version, one_shot) in enumerate(prelude)] + events

    def act(actions: list[Action]) -> None:
        for action in actions:
            key = (action.conn, getattr(action, "feed", b""))
            if isinstance(action, CheckGraft):
                assert now - first_note.pop(key) >= limits.graft_delay - 1e-9  # never before graft_delay
                checked.add(key)
                act(g.graft_checked(action.conn, action.feed, head=heads[action.feed]))
            elif isinstance(action, CheckHole):
                act(g.hole_checked(action.conn, action.feed, seq=action.seq, below=action.seq // 2))
            elif isinstance(action, SendClock) and action.cause is Cause.GRAFT:
                assert key in checked  # a graft only follows its check
                checked.discard(key)
            elif isinstance(action, SendClock) and action.cause is Cause.PRUNE:
                assert len(g.eager_set(action.feed)) >= limits.min_eager_peers  # enough others stay

    for event in events:
        kind, *args = event
        if kind == "wait":  # in steps, so a timer that runs early shows
            end = now + float(args[0])
            while now < end:
                later = min(end, now + 0.05)
                deadline = g.next_timer()
                if deadline is None or later < deadline:
                    assert g.handle_timer(later) == []  # nothing runs before next_timer()
                now = later
                act(g.handle_timer(now))
            continue
        conn = args[0]
        if kind == "open":
            if conn not in open_:
                version, one_shot = args[1], args[2]
                g.open(conn, author=AUTHORS[conn % 3], version=version, one_shot=one_shot)
                open_[conn] = (AUTHORS[conn % 3], one_shot or version < 2)
                named[conn] = set()
            continue
        if conn not in open_:
            continue
        if kind == "close":
            g.close(conn)
            del open_[conn]
            first_note = {k: v for k, v in first_note.items() if k[0] != conn}
            taken = {k: v for k, v in taken.items() if k[0] != conn}
        elif kind == "choose":
            feeds = set(args[1]) - named[conn]
            g.choose(conn, sorted(feeds))
            named[conn] |= feeds
        elif kind == "have" and grafts:
            feed, seq = args[1], args[2]
            before = g.grafting(conn, feed)
            g.have_received(conn, [(feed, seq)], {feed: heads[feed]}, now)
            if g.grafting(conn, feed) and not before:
                first_note[(conn, feed)] = now
        elif kind == "stored":
            authors, dups, gaps = args[1], args[2], args[3] if grafts else []
            act(g.stored(conn, authors=authors, fresh=[], duplicates=dups, gaps=gaps, now=now))
        elif kind == "admit" and grafts:
            feed, live = args[1], args[2]
            if g.admit(conn, feed, live=live, now=now) is Admission.TAKE and live and feed != OWN:
                taken.setdefault((conn, feed), []).append(now)
        elif kind == "gathered":
            feed, seq = args[1], args[2]
            g.gathered(conn, {feed: seq}, now)
        check_invariants(g, open_, named, taken, limits, bounded=not grafts)


def check_invariants(
    g: Gossip,
    open_: dict[int, tuple[bytes, bool]],
    named: dict[int, set[bytes]],
    taken: dict[tuple[int, bytes], list[float]],
    limits: GossipLimits,
    *,
    bounded: bool,
) -> None:
    for feed in FEEDS:
        eager = g.eager_set(feed)
        assert eager <= set(open_)  # closed connections leave every eager set
        for conn in eager:
            assert feed not in g.lazy_in(conn)  # a feed is eager or lazy on a connection, not both
        if bounded:  # without grafts, repairs and resumes: at most eager_peers chosen eager per feed
            chosen = [c for c in eager if not open_[c][1] and open_[c][0] != feed]
            assert len(chosen) <= limits.eager_peers
    for conn, (author, forced) in open_.items():
        if forced:
            assert g.lazy_in(conn) == frozenset()
        if author in named[conn]:  # the author of a feed always pushes it eagerly
            assert author not in g.lazy_in(conn) and conn in g.eager_set(author)
    for times in taken.values():  # a live budget: at most burst + rate x elapsed tokens
        assert len(times) <= limits.feed_burst + limits.feed_entries_per_second * (times[-1] - times[0])


@settings(max_examples=300, deadline=None)
@given(preludes, events, st.lists(st.integers(0, 9), min_size=len(FEEDS), max_size=len(FEEDS)))
def test_invariants_hold_over_random_event_sequences(
    prelude: list[tuple[int, bool]], events: list[tuple[Any, ...]], held: list[int]
) -> None:
    """Closed connections leave the eager sets, a feed is never both eager and lazy on a connection,
    authors and forced connections stay eager, nothing is grafted before ``graft_delay`` nor without
    its check, a prune leaves at least ``min_eager_peers`` others eager, no timer runs before
    ``next_timer()``, and live budgets hold (§12.7, §12.8.5)."""
    run_events(prelude, events, grafts=True, heads=dict(zip(FEEDS, held, strict=True)))


@settings(max_examples=300, deadline=None)
@given(preludes, events)
def test_never_more_than_eager_peers_chosen_eager_per_feed(
    prelude: list[tuple[int, bool]], events: list[tuple[Any, ...]]
) -> None:
    """Without grafts, repairs or resumes (which §12.7 does not limit), first naming and prune never
    leave more than ``eager_peers`` connections eager per feed, besides authors and forced ones."""
    run_events(prelude, events, grafts=False, heads=dict.fromkeys(FEEDS, 0))


def test_next_timer_is_none_when_idle_and_inf_is_never_returned() -> None:
    g = machine()
    assert g.next_timer() is None
    opened(g, 1)
    g.gathered(1, {F: 1}, now=0.0)
    timer = g.next_timer()
    assert timer is not None and math.isfinite(timer)
