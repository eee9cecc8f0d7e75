"""Work budgets, repeated clocks and known fork proofs (spec/protocol.md §12.8.6), without IO."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tidings.protocol import SigningKey
from tidings.protocol.budget import (
    EARN_DELIVERED,
    EARN_SENT,
    MAX_RANGES,
    REQUEST_COST,
    Ask,
    Ledger,
    ProofCache,
    Segment,
    WorkBudget,
    _Ranges,
    resend_cost,
)
from tidings.protocol.entry import ForkProof, create_entry, peek_fork
from tidings.protocol.errors import DecodeError, InvalidEntry, LocalProtocolError

F = bytes(range(32))
G = bytes(32)


def sent(ledger: Ledger, feed: bytes, seqs: range | list[int]) -> int:
    return ledger.sent((feed, s) for s in seqs)


# -- the budget -------------------------------------------------------------------------------------------
def test_a_budget_is_charged_before_and_refuses_without_taking() -> None:
    b = WorkBudget(10)
    assert b.charge(4) and b.balance == 6
    assert not b.charge(7) and b.balance == 6 and b.refusals == 1
    assert b.charge(6) and b.balance == 0
    assert b.spent == 10


def test_grant_pays_for_what_it_can_and_counts_a_refusal_when_short() -> None:
    b = WorkBudget(10)
    assert b.grant(4, 2.0) == 4 and b.balance == 2 and b.refusals == 0
    assert b.grant(5, 1.0) == 2 and b.balance == 0 and b.refusals == 1
    b.refund(1.0)
    assert b.balance == 1


def test_earning_is_capped_and_there_is_no_refill_with_time() -> None:
    b = WorkBudget(10)
    b.charge(10)
    b.earn(25)
    assert b.balance == 10 and b.earned == 25
    with pytest.raises(LocalProtocolError):
        WorkBudget(0)


# -- sorting clock items ----------------------------------------------------------------------------------
def test_first_eager_item_reads_everything_after_its_seq_for_free() -> None:
    ledger = Ledger(100)
    assert ledger.clock()  # the first clock message is free
    kind, segments = ledger.ask(F, 3, lazy=False)
    assert kind is Ask.FIRST and segments == [Segment(after=3, until=None, resend=False)]
    assert ledger.budget.balance == 100


def test_a_replayed_clock_is_answered_from_where_we_left_off() -> None:
    """The attack of issue 15 item 3: ``clock [[feed, 0, 0]]`` again and again."""
    ledger = Ledger(100)
    ledger.clock()
    ledger.ask(F, 0, lazy=False)
    assert sent(ledger, F, range(1, 1001)) == 1000
    balance = ledger.budget.balance
    assert ledger.clock()
    kind, segments = ledger.ask(F, 0, lazy=False)
    assert kind is Ask.REPEAT
    assert segments == [Segment(after=1000, until=None, resend=False)]  # nothing sent twice
    assert ledger.budget.balance == balance - 2 * REQUEST_COST  # the message and the item


def test_repeats_spend_the_budget_and_are_then_refused() -> None:
    ledger = Ledger(10)
    ledger.clock()
    ledger.ask(F, 0, lazy=False)
    answered = 0
    for _ in range(20):
        if ledger.clock() and ledger.ask(F, 0, lazy=False)[1] is not None:
            answered += 1
    assert answered == 5  # 2 units each
    assert ledger.budget.refusals == 15 and ledger.repeats == 5  # a refused message is not looked into


def test_asking_from_below_what_the_peer_showed_is_a_repeat() -> None:
    ledger = Ledger(100)
    ledger.ask(F, 0, lazy=False)
    ledger.shown(F, 50)  # a have note, or an entry it sent us
    assert ledger.ask(F, 20, lazy=False)[0] is Ask.REPEAT
    assert ledger.ask(F, 51, lazy=False)[0] is Ask.PROGRESS


def test_progress_resends_what_was_sent_before_as_paid_runs() -> None:
    """A resumed feed (§12.8.5): the peer moved on, but dropped what we pushed meanwhile."""
    ledger = Ledger(1000)
    ledger.ask(F, 0, lazy=False)
    sent(ledger, F, range(1, 151))
    kind, segments = ledger.ask(F, 20, lazy=False)
    assert kind is Ask.PROGRESS
    assert segments == [
        Segment(after=20, until=150, resend=True),
        Segment(after=150, until=None, resend=False),
    ]


def test_a_hole_we_never_sent_is_fresh_even_in_a_repeat() -> None:
    """Entries pushed out of order (§12.7 Holes): seq 3 never went out, 4 and 5 did."""
    ledger = Ledger(100)
    ledger.ask(F, 0, lazy=False)
    sent(ledger, F, [1, 2, 4, 5])
    ledger.shown(F, 5)
    kind, segments = ledger.ask(F, 2, lazy=False)
    assert kind is Ask.REPEAT
    assert segments == [
        Segment(after=2, until=3, resend=False),
        Segment(after=5, until=None, resend=False),
    ]


def test_lazy_items_read_nothing_and_a_lazy_probe_does_not_make_the_eager_clock_a_repeat() -> None:
    ledger = Ledger(100)
    assert ledger.ask(F, 7, lazy=True) == (Ask.FIRST, [])
    kind, segments = ledger.ask(F, 7, lazy=False)  # a one-shot sync: probe, then its eager clock
    assert kind is Ask.FIRST and segments == [Segment(after=7, until=None, resend=False)]
    assert ledger.ask(F, 7, lazy=True) == (Ask.REPEAT, [])  # a prune at the same head
    assert ledger.budget.balance == 100 - REQUEST_COST


def test_sent_entries_earn_once_and_delivered_ones_earn_too() -> None:
    ledger = Ledger(100)
    ledger.budget.charge(100)
    assert sent(ledger, F, range(1, 11)) == 10
    assert sent(ledger, F, range(1, 11)) == 0 and ledger.resent == 10
    ledger.delivered(4)
    assert ledger.budget.balance == 10 * EARN_SENT + 4 * EARN_DELIVERED


def test_each_feed_has_its_own_record() -> None:
    ledger = Ledger(100)
    ledger.ask(F, 0, lazy=False)
    sent(ledger, F, range(1, 5))
    assert ledger.ask(G, 0, lazy=False) == (Ask.FIRST, [Segment(after=0, until=None, resend=False)])


def test_proofs_go_out_once_per_connection() -> None:
    ledger = Ledger(100)
    assert ledger.unsent_proofs([(b"a", b"A"), (b"b", b"B")]) == [b"A", b"B"]
    assert ledger.unsent_proofs([(b"a", b"A"), (b"c", b"C")]) == [b"C"]


def test_resend_cost_counts_kibibytes() -> None:
    assert resend_cost(2048) == 2.0


# -- ranges of sent seqs --------------------------------------------------------------------------------
@given(st.lists(st.integers(min_value=1, max_value=300), max_size=200), st.integers(0, 300))
def test_ranges_split_what_is_asked_into_runs_never_sent_and_sent(seqs: list[int], after: int) -> None:
    ranges = _Ranges()
    for s in seqs:
        ranges.add(s)
    assert len(ranges.spans) <= MAX_RANGES
    flat = [lo for span in ranges.spans for lo in span]
    assert flat == sorted(flat)
    assert all(ranges.contains(s) for s in seqs)  # merging only ever adds
    segments = ranges.segments(after, resend=True)
    covered: list[int] = []
    for seg in segments[:-1]:
        assert seg.until is not None
        run = list(range(seg.after + 1, seg.until + 1))
        assert all(ranges.contains(s) == seg.resend for s in run)
        covered += run
    last = segments[-1]
    assert last.until is None and not last.resend
    assert covered == list(range(after + 1, last.after + 1))  # contiguous, in order, nothing skipped
    assert all(not ranges.contains(s) for s in range(last.after + 1, 400))
    fresh_only = ranges.segments(after, resend=False)
    assert fresh_only == [seg for seg in segments if not seg.resend]


# -- fork proofs ------------------------------------------------------------------------------------------
def a_fork() -> ForkProof:
    key = SigningKey(os.urandom(32))
    one = create_entry(key, seq=1, backlink=None, skiplink=None, timestamp=1, payload=b"\x80")
    two = create_entry(key, seq=1, backlink=None, skiplink=None, timestamp=2, payload=b"\x80")
    return ForkProof(first=one, second=two)


def test_peek_fork_reads_author_seq_and_hash_without_checking_signatures() -> None:
    proof = a_fork()
    raw = proof.encode()
    author, seq, digest = peek_fork(raw)
    assert (author, seq) == (proof.author, 1) and len(digest) == 32
    forged = raw[:-5] + b"\x00" * 5  # the second signature broken: peeked all the same
    assert peek_fork(forged)[:2] == (author, 1)
    with pytest.raises((DecodeError, InvalidEntry)):
        peek_fork(b"\x92\x01\x02")


def test_the_proof_cache_knows_a_proof_by_hash_and_by_feed_and_seq_and_is_bounded() -> None:
    cache = ProofCache(2)
    cache.add(b"h1", F, 1)
    assert cache.known(b"h1", G, 9) and cache.known(b"other", F, 1)
    assert not cache.known(b"h2", F, 2)
    cache.add(b"h2", F, 2)
    cache.add(b"h3", F, 3)
    assert not cache.known(b"h1", G, 9)  # the least recent went first
    assert cache.known(b"h3", F, 3)
    with pytest.raises(LocalProtocolError):
        ProofCache(0)
