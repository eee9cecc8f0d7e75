"""The ranker plugin interface: candidates in, scored entries with reasons out (spec/ranking.md §1).

A ranker is any object with ``name``, ``description``, ``defaults`` (its weights and their default
values) and ``rank(candidates, context) -> list[Ranked]``; subclassing ``Ranker`` gives the defaults.
Rankers run on this node over this store only. They get candidates already filtered by blocks and
mutes (node/ranking/filters.py), and a ``RankContext`` (who you are and follow, the time, the weights, the
store for anything else). The timeline keeps the order ``(-score, entry id)``, so equal scores come out
the same way every time.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from tidings.protocol.errors import TidingsError

if TYPE_CHECKING:
    from tidings.storage.store import Store

__all__ = ["Candidate", "RankContext", "Ranked", "Ranker", "RankingError"]


class RankingError(TidingsError):
    """A ranking request that cannot be served; ``code`` is machine-readable.

    Codes: ``unknown_ranker``, ``unknown_weight``, ``bad_weight``, ``bad_config``, ``ranker_failed``
    (a plugin raised or returned something invalid), ``needs_swarm``.
    """

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message, code=code)


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """One entry a ranker may place, with the decoded facts rankers use.

    ``entry`` is its CLI dict without the content (``id, feed, seq, ts, type``): hand it back in
    ``Ranked``; the timeline adds the content of the entries it shows. ``content`` is the decoded,
    JSON-ready content (computed on first use). ``target`` is what a repost reposts, ``reply`` what a
    post answers (entry hashes).

    Times are ms since the epoch. ``ts`` is the author's timestamp, ``received`` when the entry reached
    this store, and ``rank_ts`` the time to rank by: ``min(ts, received + skew)`` (spec/ranking.md
    §1.1), so an entry dated in the future ranks as received, never above the present. Rankers use
    ``rank_ts`` for newness and age; ``clamped`` says when it is earlier than ``ts``.
    """

    entry: dict[str, Any]
    hash: bytes
    author: bytes
    ts: int
    received: int
    rank_ts: int
    type: str
    text: str = ""
    reply: bytes | None = None
    target: bytes | None = None
    lang: str | None = None
    payload: bytes | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return str(self.entry["id"])

    @property
    def clamped(self) -> bool:
        """True when the entry is dated further in the future than the skew allows (spec/ranking.md §1.1)."""
        return self.rank_ts < self.ts

    @cached_property
    def content(self) -> dict[str, Any] | None:
        from tidings.storage.reads import content_json

        return content_json(self.payload)


@dataclass(frozen=True, slots=True, kw_only=True)
class Ranked:
    """A ranker's verdict on one candidate: its entry dict, a finite score (higher first), reasons."""

    entry: dict[str, Any]
    score: float
    reasons: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.score, bool) or not isinstance(self.score, int | float):
            raise TypeError(f"score must be a number, not {type(self.score).__name__}")
        if not math.isfinite(self.score):
            raise ValueError(f"score must be finite, not {self.score}")
        if not isinstance(self.reasons, list) or not all(isinstance(r, str) for r in self.reasons):
            raise TypeError("reasons must be a list of strings")


@dataclass(frozen=True, slots=True, kw_only=True)
class RankContext:
    """What a ranker may know: the store (read only), you, whom you follow, the time, its weights.

    ``now`` is milliseconds since the epoch, passed in (rankers never read the clock), so the same
    store, config and ``now`` give the same timeline. ``swarm_members`` is set for swarm timelines.
    ``label(feed)`` is a short human name of a feed for reasons; ``explain`` is False when nobody
    will read the reasons (a ranker may then skip work that only feeds them). ``cache`` is scratch
    space shared by ``authors`` and ``rank`` of one request.
    """

    store: Store
    me: bytes
    now: int
    follows: frozenset[bytes]
    weights: Mapping[str, float]
    swarm_members: frozenset[bytes] | None = None
    explain: bool = True
    label: Callable[[bytes], str] = field(default=lambda feed: feed.hex()[:12])
    cache: dict[str, Any] = field(default_factory=dict, compare=False)


class Ranker(ABC):
    """Base class of rankers (built-in and plugins).

    ``defaults`` names every weight the ranker accepts with its default value: config.toml
    ``[rankers.NAME]`` and ``--weight k=v`` may only set these. ``authors(context)`` picks whose
    posts and reposts become candidates (default: you and the feeds you follow); ``pool`` and
    ``window_hours`` weights, when a ranker declares them, bound how many newest candidates it sees
    and how old they may be.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    defaults: ClassVar[Mapping[str, float]] = {}
    #: weights that must be greater than zero (a divisor, a half-life, a pool size).
    positive: ClassVar[frozenset[str]] = frozenset()

    def authors(self, context: RankContext) -> set[bytes]:
        """Whose entries are candidates."""
        return {context.me} | set(context.follows)

    @abstractmethod
    def rank(self, candidates: Sequence[Candidate], context: RankContext) -> list[Ranked]:
        """Score each candidate worth showing (leaving one out hides it); order is by score."""
