"""Work budgets, repeated requests and known fork proofs (spec/protocol.md §12.8.6).

Theory of operation. A peer can make a node work for it: read entries from its store and send them,
check the signatures of fork proofs, answer clocks. Work that the peer asks for the first time on a
connection is bounded by what the node holds (each entry goes out once); work that it asks for again is
not, so it is paid from a **work budget**, one per connection (``WorkBudget``), charged *before* the work
is done and earned back only by useful exchange: entries sent that the connection never carried, and
entries received that were new to the node. A charge the balance cannot pay is refused: the work is not
done, and the node lowers the peer's score (``overspent``), so a peer that keeps asking for nothing new
is cut off.

``Ledger`` is one connection's record, sans-IO like the replication machine: per feed, the seqs sent
on the connection (a few ranges), the highest seq the peer has named or shown it holds, and whether it
asked for entries of the feed before. It sorts each clock item into one of three kinds::

    (unnamed) --eager item--------------------------> FIRST     all entries after seq, none charged
    named     --eager item, seq above all it said---> PROGRESS  entries sent before are charged
    named     --any other item----------------------> REPEAT    entries never sent only; one request charged

and answers with the ``Segment`` list to read: runs of seqs never sent (free) and, for FIRST and
PROGRESS, runs already sent (charged per entry before the read, per KiB before the send). So an honest
peer that resumes a paused feed or repairs a hole gets what it lacks, and a replayed clock gets only
what is new ("answered from where we left off").

``ProofCache`` is the node's memory of fork proofs it has checked or holds, by hash and by (feed,
seq), bounded; it is consulted, like the wanted feeds, before any signature is checked.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import LocalProtocolError

__all__ = [
    "EARN_DELIVERED",
    "EARN_SENT",
    "KIB_COST",
    "MAX_RANGES",
    "PROOF_CHECK_COST",
    "PROOF_LOOKUP_COST",
    "PROOF_PEEK_COST",
    "REQUEST_COST",
    "RESEND_COST",
    "Ask",
    "Ledger",
    "ProofCache",
    "Segment",
    "WorkBudget",
]

#: Work units (spec §12.8.6); one unit is about the work of reading one entry from the store and
#: sending it. A clock message after the first, and each REPEAT item of a clock:
REQUEST_COST = 1.0
#: Each entry sent again on a connection, plus ``KIB_COST`` per KiB of it (entry and payload).
RESEND_COST = 1.0
KIB_COST = 1.0
#: A fork proof looked at (shape, author, seq, hash); a proof looked up in the store; a proof's two
#: signatures checked (two Ed25519 verifications, ~110 µs).
PROOF_PEEK_COST = 0.25
PROOF_LOOKUP_COST = 1.0
PROOF_CHECK_COST = 4.0
#: Earned back per entry sent that the connection never carried, and per entry received new to the node.
EARN_SENT = 0.5
EARN_DELIVERED = 1.0
#: Ranges of sent seqs kept per feed and connection; beyond, the two closest merge (the seqs between
#: count as sent: at worst a REPEAT misses them, and the budget never pays twice).
MAX_RANGES = 32
#: Fork proof hashes remembered as sent per connection; beyond, the record starts over.
MAX_PROOFS_SENT = 10000


class WorkBudget:
    """A balance of work units: starts full at ``limit``, never above it; no refill with time."""

    def __init__(self, limit: float) -> None:
        if not limit > 0:
            raise LocalProtocolError("a work budget must be positive", code="bad_argument")
        self.limit = float(limit)
        self.balance = float(limit)
        self.spent = 0.0
        self.earned = 0.0
        #: charges refused so far (the node lowers the peer's score when this grows)
        self.refusals = 0

    def charge(self, units: float) -> bool:
        """Take ``units`` before doing the work; False (and nothing taken) when the balance is short."""
        if units > self.balance:
            self.refusals += 1
            return False
        self.balance -= units
        self.spent += units
        return True

    def grant(self, count: int, each: float) -> int:
        """Take ``each`` for as many of ``count`` pieces of work as the balance pays; how many."""
        paid = min(count, int(self.balance // each)) if each > 0 else count
        if paid < count:
            self.refusals += 1
        self.balance -= paid * each
        self.spent += paid * each
        return paid

    def refund(self, units: float) -> None:
        """Give back what was charged for work that turned out not to be needed."""
        self.balance = min(self.limit, self.balance + units)
        self.spent -= units

    def earn(self, units: float) -> None:
        """Useful exchange pays back, up to the limit."""
        if units > 0:
            self.balance = min(self.limit, self.balance + units)
            self.earned += units


def resend_cost(size: int) -> float:
    """The bytes part of re-sending an entry of ``size`` bytes (entry and payload), spec §12.8.6."""
    return KIB_COST * size / 1024


class Ask(enum.Enum):
    """What kind of request a clock item is, on its connection (module docstring)."""

    FIRST = "first"
    PROGRESS = "progress"
    REPEAT = "repeat"


@dataclass(frozen=True, slots=True, kw_only=True)
class Segment:
    """Entries with ``after < seq <= until`` (``until`` None: no end); ``resend``: sent before."""

    after: int
    until: int | None
    resend: bool


class _Ranges:
    """Sorted, disjoint, inclusive ranges of seqs; at most ``MAX_RANGES``."""

    __slots__ = ("spans",)

    def __init__(self) -> None:
        self.spans: list[list[int]] = []

    def add(self, seq: int) -> None:
        spans = self.spans
        if spans and spans[-1][1] + 1 == seq:  # the common case: in order
            spans[-1][1] = seq
            return
        i = 0
        while i < len(spans) and spans[i][1] + 1 < seq:
            i += 1
        if i < len(spans) and spans[i][0] - 1 <= seq:
            span = spans[i]
            span[0], span[1] = min(span[0], seq), max(span[1], seq)
            if i + 1 < len(spans) and spans[i + 1][0] - 1 <= span[1]:
                span[1] = max(span[1], spans.pop(i + 1)[1])
        else:
            spans.insert(i, [seq, seq])
        if len(spans) > MAX_RANGES:
            gaps = [spans[j + 1][0] - spans[j][1] for j in range(len(spans) - 1)]
            j = gaps.index(min(gaps))
            spans[j][1] = spans.pop(j + 1)[1]

    def contains(self, seq: int) -> bool:
        return any(lo <= seq <= hi for lo, hi in self.spans)

    def segments(self, after: int, *, resend: bool) -> list[Segment]:
        """The runs of seqs above ``after``: never sent, and (``resend``) sent before."""
        out: list[Segment] = []
        cur = after
        for lo, hi in self.spans:
            if hi <= cur:
                continue
            if lo > cur + 1:
                out.append(Segment(after=cur, until=lo - 1, resend=False))
            if resend:
                out.append(Segment(after=max(cur, lo - 1), until=hi, resend=True))
            cur = hi
        out.append(Segment(after=cur, until=None, resend=False))
        return out


class Ledger:
    """One connection's record of what the peer asked and was sent, and its work budget (sans-IO)."""

    def __init__(self, budget: float) -> None:
        self.budget = WorkBudget(budget)
        self._sent: dict[bytes, _Ranges] = {}
        #: feed -> the highest seq the peer has named (any clock item) or shown it holds (have, entries)
        self._held: dict[bytes, int] = {}
        #: feeds the peer asked entries of (an eager clock item) on this connection
        self._eager: set[bytes] = set()
        self._clocks = 0
        self._proofs_sent: set[bytes] = set()
        self.repeats = 0
        self.resent = 0

    # -- what the peer says --------------------------------------------------------------------------
    def clock(self) -> bool:
        """A clock message is about to be answered: the first is free, each later one a request."""
        self._clocks += 1
        return self._clocks == 1 or self.budget.charge(REQUEST_COST)

    def ask(self, feed: bytes, seq: int, *, lazy: bool) -> tuple[Ask, list[Segment] | None]:
        """Sort a clock item and say what to read for it: None when it is a REPEAT the budget cannot
        pay ``REQUEST_COST`` for (answered not at all), nothing for a lazy item (a ``have`` note)."""
        held = self._held.get(feed)
        if held is None or (not lazy and feed not in self._eager):
            kind = Ask.FIRST
        elif seq > held:
            kind = Ask.PROGRESS
        else:
            kind = Ask.REPEAT
        self._held[feed] = seq if held is None else max(held, seq)
        if kind is Ask.REPEAT:
            self.repeats += 1
            if not self.budget.charge(REQUEST_COST):
                return kind, None
        if lazy:
            return kind, []
        self._eager.add(feed)
        ranges = self._sent.get(feed)
        if ranges is None:
            return kind, [Segment(after=seq, until=None, resend=False)]
        return kind, ranges.segments(seq, resend=kind is not Ask.REPEAT)

    def shown(self, feed: bytes, seq: int) -> None:
        """The peer holds ``feed`` up to ``seq``: a ``have`` note, or an entry it sent."""
        held = self._held.get(feed)
        if held is None or seq > held:
            self._held[feed] = seq

    # -- what we send --------------------------------------------------------------------------------
    def was_sent(self, feed: bytes, seq: int) -> bool:
        ranges = self._sent.get(feed)
        return ranges is not None and ranges.contains(seq)

    def sent(self, positions: Iterable[tuple[bytes, int]]) -> int:
        """Entries went out; the new ones earn ``EARN_SENT`` each. Returns how many were new."""
        fresh = 0
        for feed, seq in positions:
            ranges = self._sent.get(feed)
            if ranges is None:
                ranges = self._sent[feed] = _Ranges()
            elif ranges.contains(seq):
                self.resent += 1
                continue
            ranges.add(seq)
            fresh += 1
        self.budget.earn(EARN_SENT * fresh)
        return fresh

    def delivered(self, count: int) -> None:
        """The peer sent ``count`` entries new to the node."""
        self.budget.earn(EARN_DELIVERED * count)

    def unsent_proofs(self, proofs: Iterable[tuple[bytes, bytes]]) -> list[bytes]:
        """Of ``(hash, proof)`` pairs, the proofs not sent on this connection yet (now noted as sent)."""
        if len(self._proofs_sent) > MAX_PROOFS_SENT:
            self._proofs_sent.clear()
        out = []
        for digest, proof in proofs:
            if digest not in self._proofs_sent:
                self._proofs_sent.add(digest)
                out.append(proof)
        return out

    def statistics(self) -> dict[str, float]:
        b = self.budget
        return {
            "balance": round(b.balance, 2),
            "spent": round(b.spent, 2),
            "earned": round(b.earned, 2),
            "refusals": b.refusals,
            "repeats": self.repeats,
            "resent": self.resent,
        }


class ProofCache:
    """Fork proofs the node has checked or holds: by hash and by (feed, seq), least recent forgotten."""

    def __init__(self, size: int = 10000) -> None:
        if size < 1:
            raise LocalProtocolError("a proof cache holds at least one proof", code="bad_argument")
        self.size = size
        self._keys: OrderedDict[object, None] = OrderedDict()
        #: proofs whose signatures were checked (the expensive part), for statistics and tests
        self.checked = 0
        self.hits = 0

    def known(self, digest: bytes, author: bytes, seq: int) -> bool:
        """True when this proof, or another of the same (feed, seq), is known."""
        for key in (digest, (author, seq)):
            if key in self._keys:
                self._keys.move_to_end(key)
                self.hits += 1
                return True
        return False

    def add(self, digest: bytes, author: bytes, seq: int) -> None:
        for key in (digest, (author, seq)):
            self._keys[key] = None
            self._keys.move_to_end(key)
        while len(self._keys) > 2 * self.size:
            self._keys.popitem(last=False)
