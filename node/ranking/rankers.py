"""The built-in rankers: chronological, engagement, trust, swarm (formulas in spec/ranking.md §3–§5).

Each is a pure function of the candidates, the store and ``context.now``: no clock, no randomness, so
the same store, config and ``now`` give the same scores (ties are broken by entry id by the caller).
Newness and ages use the ranked time ``rank_ts`` = ``min(ts, received + skew)``, never the author's
``ts`` alone (spec/ranking.md §1.1): an entry dated in the future ranks as received, so it cannot stay
on top. Ages are ``max(0, now - rank_ts)`` in hours.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from tidings.node.ranking.base import Candidate, RankContext, Ranked, Ranker, RankingError
from tidings.storage import ranking as queries
from tidings.storage.schema import FUTURE_SKEW_MS

__all__ = [
    "BUILTINS",
    "Chronological",
    "Engagement",
    "Swarm",
    "Trust",
    "age_hours",
    "future_reason",
    "utc_text",
]

_HOUR_MS = 3_600_000
_DAY_MS = 24 * _HOUR_MS


def age_hours(now: int, ts: int) -> float:
    """Hours from ``ts`` to ``now`` (ms), never negative."""
    return max(0, now - ts) / _HOUR_MS


def utc_text(ms: int) -> str:
    """``2027-01-15 07:00:00 UTC``; a valid timestamp may lie past the year 9999: ``after 9999-12-31``."""
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, ValueError, OSError):
        return "after 9999-12-31" if ms > 0 else "before 0001-01-01"


def _span(ms: int) -> str:
    if ms < 2 * _DAY_MS:
        return f"{ms / _HOUR_MS:.1f} h"
    if ms < 730 * _DAY_MS:
        return f"{ms / _DAY_MS:.0f} days"
    return f"{ms / (365.25 * _DAY_MS):,.0f} years"


def future_reason(ts: int, received: int) -> str:
    """What ``--explain`` says of an entry dated in the future (``Candidate.clamped``): its timestamp
    ``ts`` is more than the skew after it was ``received`` (spec/ranking.md §1.1)."""
    return (
        f"dated in the future: ranked as received at {utc_text(received)} (plus "
        f"{FUTURE_SKEW_MS // 60_000} min allowed clock skew), not at its timestamp {ts} "
        f"({utc_text(ts)}, {_span(ts - received)} after it arrived)"
    )


def _num(x: float) -> str:
    """A weight or factor as people write it: 2, 0.5, 1.8, 0.0123."""
    return f"{x:.4g}"


def _plural(n: int, word: str) -> str:
    if n == 1:
        return f"1 {word}"
    return f"{n} {word[:-1] + 'ies' if word.endswith('y') else word + 's'}"


class Chronological(Ranker):
    """Newest first. score = the ranked time (ms): the timestamp, or the arrival for an entry dated in
    the future (spec/ranking.md §1.1, §5)."""

    name = "chronological"
    description = "Newest first: posts and reposts of you and the feeds you follow."
    defaults: Mapping[str, float] = {}

    def rank(self, candidates: Sequence[Candidate], context: RankContext) -> list[Ranked]:
        out = []
        for c in candidates:
            reasons = []
            if context.explain:
                what = "received time + skew" if c.clamped else "timestamp"
                who = "your own entry" if c.author == context.me else f"you follow {context.label(c.author)}"
                reasons = [f"newest first: score = {what} {c.rank_ts} ({utc_text(c.rank_ts)})", who]
            out.append(Ranked(entry=c.entry, score=c.rank_ts, reasons=reasons))
        return out


def _engagement(
    candidates: Sequence[Candidate], context: RankContext, by: frozenset[bytes], who: str
) -> list[Ranked]:
    """score = (1 + reaction·R + reply·C + repost·S) / (age_h + 2) ** gravity (spec/ranking.md §3).

    R, C, S count distinct people in ``by`` (not the author) reacting to, replying to and reposting the
    entry (for a repost: the reposted entry). Hacker News' gravity decay with its +2 hours.
    """
    w = context.weights
    subject = {c.hash: (c.target if c.target is not None else c.hash) for c in candidates}
    reposted = [c.target for c in candidates if c.target is not None]
    target_author = queries.entry_authors(context.store, reposted) if reposted else {}
    targets = {}
    for c in candidates:
        if c.target is None:
            targets[c.hash] = c.author
        elif c.target in target_author:
            targets[c.target] = target_author[c.target]
    counts = queries.engagement_counts(context.store, targets, by)
    out = []
    for c in candidates:
        r, cm, s = counts.get(subject[c.hash], (0, 0, 0))
        points = 1 + w["reaction"] * r + w["reply"] * cm + w["repost"] * s
        age = age_hours(context.now, c.rank_ts)
        decay = (age + 2) ** w["gravity"]
        score = points / decay
        if not context.explain:
            out.append(Ranked(entry=c.entry, score=score))
            continue
        of = "the reposted entry" if c.target is not None else "it"
        reasons = [
            f"{_plural(r, 'reaction')}, {_plural(cm, 'reply')} and {_plural(s, 'repost')} on {of} "
            f"from {who} (weights {_num(w['reaction'])}, {_num(w['reply'])}, {_num(w['repost'])}): "
            f"points {_num(points)}",
            f"age {age:.1f} h: divided by ({age:.1f} + 2)^{_num(w['gravity'])} = {_num(decay)}",
            f"score {_num(points)} / {_num(decay)} = {_num(score)}",
        ]
        if c.author != context.me and c.author in context.follows:
            reasons.append(f"you follow {context.label(c.author)}")
        out.append(Ranked(entry=c.entry, score=score, reasons=reasons))
    return out


_ENGAGEMENT_DEFAULTS: Mapping[str, float] = {
    "reaction": 1.0,
    "reply": 2.0,
    "repost": 3.0,
    "gravity": 1.8,
    "pool": 1000.0,
    "window_hours": 72.0,
}


class Engagement(Ranker):
    """Reactions, replies and reposts by people you follow, decayed by age like Hacker News."""

    name = "engagement"
    description = "Reactions, replies and reposts from people you follow, with Hacker News-style time decay."
    defaults = _ENGAGEMENT_DEFAULTS
    positive = frozenset({"pool", "window_hours"})

    def rank(self, candidates: Sequence[Candidate], context: RankContext) -> list[Ranked]:
        return _engagement(candidates, context, context.follows, "people you follow")


class Swarm(Ranker):
    """A swarm's posts, ranked by engagement among the swarm's members."""

    name = "swarm"
    description = (
        "A swarm's posts, ranked by reactions, replies and reposts from its members, with time decay."
    )
    defaults = _ENGAGEMENT_DEFAULTS
    positive = frozenset({"pool", "window_hours"})

    def authors(self, context: RankContext) -> set[bytes]:
        if context.swarm_members is None:
            raise RankingError("the swarm ranker needs a swarm (--swarm NAME)", code="needs_swarm")
        return {context.me} | set(context.swarm_members)

    def rank(self, candidates: Sequence[Candidate], context: RankContext) -> list[Ranked]:
        members = context.swarm_members or frozenset()
        ranked = _engagement(candidates, context, members, "swarm members")
        for item, c in zip(ranked, candidates, strict=True):
            if context.explain:
                who = context.label(c.author)
                item.reasons.append(
                    "your own entry" if c.author == context.me else f"{who} is a swarm member"
                )
        return ranked


class Trust(Ranker):
    """Social distance: you and your follows, then follows of follows weighted by how many vouch."""

    name = "trust"
    description = (
        "Social distance: feeds you follow, then feeds they follow, weighted by how many of your "
        "follows vouch for them; halves with age."
    )
    defaults: Mapping[str, float] = {
        "self": 1.0,
        "follow": 1.0,
        "fof": 0.8,
        "vouch_half": 2.0,
        "min_vouches": 1.0,
        "half_life_hours": 24.0,
        "pool": 1000.0,
        "window_hours": 72.0,
    }
    positive = frozenset({"vouch_half", "half_life_hours", "pool", "window_hours"})

    @staticmethod
    def _vouches(context: RankContext) -> dict[bytes, int]:
        if "trust.vouches" not in context.cache:
            context.cache["trust.vouches"] = queries.vouches(context.store, context.follows)
        found: dict[bytes, int] = context.cache["trust.vouches"]
        return found

    def authors(self, context: RankContext) -> set[bytes]:
        least = context.weights["min_vouches"]
        fof = {f for f, n in self._vouches(context).items() if n >= least}
        return {context.me} | set(context.follows) | fof

    @staticmethod
    def trust(author: bytes, context: RankContext, vouches: Mapping[bytes, int]) -> float:
        """1 for you (``self``), ``follow`` for a follow, else ``fof · v / (v + vouch_half)``."""
        w = context.weights
        if author == context.me:
            return w["self"]
        if author in context.follows:
            return w["follow"]
        v = vouches.get(author, 0)
        return w["fof"] * v / (v + w["vouch_half"])

    def rank(self, candidates: Sequence[Candidate], context: RankContext) -> list[Ranked]:
        w = context.weights
        vouches = self._vouches(context)
        far = {c.author for c in candidates if c.author != context.me and c.author not in context.follows}
        names = queries.vouchers(context.store, context.follows, far) if context.explain and far else {}
        out = []
        for c in candidates:
            trust = self.trust(c.author, context, vouches)
            age = age_hours(context.now, c.rank_ts)
            decay = 0.5 ** (age / w["half_life_hours"])
            score = trust * decay
            if not context.explain:
                out.append(Ranked(entry=c.entry, score=score))
                continue
            if c.author == context.me:
                why = f"your own entry: trust {_num(trust)}"
            elif c.author in context.follows:
                why = f"you follow {context.label(c.author)}: trust {_num(trust)}"
            else:
                v = vouches.get(c.author, 0)
                who = ", ".join(context.label(f) for f in names.get(c.author, [])[:3])
                more = ", …" if v > 3 else ""
                why = (
                    f"{context.label(c.author)} is followed by {v} of the people you follow"
                    f"{f' ({who}{more})' if who else ''}: trust {_num(w['fof'])} × {v}/({v} + "
                    f"{_num(w['vouch_half'])}) = {_num(trust)}"
                )
            reasons = [
                why,
                f"age {age:.1f} h, half-life {_num(w['half_life_hours'])} h: × {_num(decay)}",
                f"score {_num(trust)} × {_num(decay)} = {_num(score)}",
            ]
            out.append(Ranked(entry=c.entry, score=score, reasons=reasons))
        return out


#: Built-in ranker classes, in the order ``tidings rankers`` lists them (it sorts by name anyway).
BUILTINS: tuple[type[Ranker], ...] = (Chronological, Engagement, Trust, Swarm)
