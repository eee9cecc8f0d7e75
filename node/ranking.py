"""The ranker plugin interface: candidates in, scored entries with reasons out (spec/ranking.md §1).

A ranker is any object with ``name``, ``description``, ``defaults`` (its weights and their default
values) and ``rank(candidates, context) -> list[Ranked]``; subclassing ``Ranker`` gives the defaults.
Rankers run on this node over this store only. They get candidates already filtered by blocks and
mutes (node/filters.py), and a ``RankContext`` (who you are and follow, the time, the weights, the
store for anything else). The timeline keeps the order ``(-score, entry id)``, so equal scores come out
the same way every time.

Third-party rankers are installed as ordinary Python packages declaring an entry point in the group
``tidings.rankers`` whose object is a ranker instance, a ``Ranker`` subclass or a factory returning
one. ``load_rankers`` loads the built-ins and every entry point; a plugin that fails to load or is
malformed is reported in ``Registry.problems`` and left out, never stopping the others.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from importlib import metadata
from typing import TYPE_CHECKING, Any, ClassVar

from .plugins import PluginProblem, load_entry_points

if TYPE_CHECKING:
    from tidings.storage.store import Store

__all__ = [
    "ENTRY_POINT_GROUP",
    "Candidate",
    "PluginProblem",
    "RankContext",
    "Ranked",
    "Ranker",
    "RankingError",
    "Registry",
    "load_rankers",
    "parse_weights",
    "resolve_weights",
]

ENTRY_POINT_GROUP = "tidings.rankers"


class RankingError(Exception):
    """A ranking request that cannot be served; ``code`` is machine-readable.

    Codes: ``unknown_ranker``, ``unknown_weight``, ``bad_weight``, ``bad_config``, ``ranker_failed``
    (a plugin raised or returned something invalid), ``needs_swarm``.
    """

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """One entry a ranker may place, with the decoded facts rankers use.

    ``entry`` is its CLI dict without the content (``id, feed, seq, ts, type``): hand it back in
    ``Ranked``; the timeline adds the content of the entries it shows. ``content`` is the decoded,
    JSON-ready content (computed on first use). ``target`` is what a repost reposts, ``reply`` what a
    post answers (entry hashes).
    """

    entry: dict[str, Any]
    hash: bytes
    author: bytes
    ts: int
    type: str
    text: str = ""
    reply: bytes | None = None
    target: bytes | None = None
    lang: str | None = None
    payload: bytes | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return str(self.entry["id"])

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


@dataclass(slots=True)
class Registry:
    """Rankers by name, with where each came from, and the plugins that failed."""

    rankers: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    problems: list[PluginProblem] = field(default_factory=list)

    def get(self, name: str) -> Any:
        try:
            return self.rankers[name]
        except KeyError:
            known = ", ".join(sorted(self.rankers))
            broken = [p for p in self.problems if p.name == name]
            why = f" ({broken[0].error})" if broken else ""
            raise RankingError(
                f"no ranker named {name!r}{why}; available: {known}", code="unknown_ranker"
            ) from None

    def describe(self) -> list[dict[str, str]]:
        """``[{"name", "description"}]`` sorted by name (``tidings rankers --json``)."""
        return [{"name": n, "description": self.rankers[n].description} for n in sorted(self.rankers)]


def _check_ranker(obj: Any, entry_point: str = "") -> str | None:
    """Why ``obj`` is not a usable ranker, or None."""
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not name or not name.replace("-", "_").isidentifier():
        return f"its name must be a non-empty word, not {name!r}"
    if not isinstance(getattr(obj, "description", None), str):
        return "it has no description text"
    if not callable(getattr(obj, "rank", None)):
        return "it has no rank(candidates, context) method"
    defaults = getattr(obj, "defaults", {})
    if not isinstance(defaults, Mapping) or not all(
        isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
        for k, v in defaults.items()
    ):
        return "its defaults must map weight names to numbers"
    return None


def load_rankers(
    *, builtins: Iterable[Any] | None = None, entry_points: Iterable[metadata.EntryPoint] | None = None
) -> Registry:
    """The built-in rankers plus every ``tidings.rankers`` entry point that loads and checks out.

    A plugin that raises on import or construction, is malformed, or takes a name already used is
    recorded in ``problems`` (with the error) and skipped; the built-ins keep their names.
    """
    if builtins is None:
        from .rankers import BUILTINS

        builtins = [cls() for cls in BUILTINS]
    registry = Registry()
    for ranker in builtins:
        registry.rankers[ranker.name] = ranker
        registry.origins[ranker.name] = "built-in"
    loaded = load_entry_points(
        ENTRY_POINT_GROUP, "ranker", marker="rank", check=_check_ranker, entry_points=entry_points
    )
    registry.problems.extend(loaded.problems)
    for name, ranker, origin in loaded.plugins:
        if ranker.name in registry.rankers:
            why = f"the name {ranker.name!r} is taken by {registry.origins[ranker.name]}"
            registry.problems.append(PluginProblem("ranker", name, origin, why))
            continue
        registry.rankers[ranker.name] = ranker
        registry.origins[ranker.name] = origin
    return registry


def parse_weights(items: Iterable[str]) -> dict[str, float]:
    """``["k=v", ...]`` (the ``--weight`` options) as ``{k: float(v)}``; a malformed item is an error."""
    out: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RankingError(f"--weight takes NAME=VALUE, not {item!r}", code="bad_weight")
        out[key] = _number(value.strip(), f"--weight {key}")
    return out


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise RankingError(f"{where}: {value!r} is not a number", code="bad_weight")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RankingError(f"{where}: {value!r} is not a number", code="bad_weight") from None
    if not math.isfinite(number):
        raise RankingError(f"{where}: {value!r} is not a finite number", code="bad_weight")
    return number


def resolve_weights(
    ranker: Any, config: Mapping[str, Any] | None, overrides: Mapping[str, float] | None
) -> dict[str, float]:
    """The ranker's defaults, then config.toml ``[rankers.NAME]``, then ``--weight`` values.

    Names the ranker does not declare are refused, naming the ones it has.
    """
    defaults = dict(ranker.defaults)
    out = {k: float(v) for k, v in defaults.items()}
    table = ((config or {}).get("rankers") or {}).get(ranker.name) or {}
    if not isinstance(table, Mapping):
        raise RankingError(f"config.toml [rankers.{ranker.name}] must be a table", code="bad_config")
    known = ", ".join(sorted(defaults)) or "none"
    for where, values in ((f"config.toml [rankers.{ranker.name}]", table), ("--weight", overrides or {})):
        for key, value in values.items():
            if key not in defaults:
                raise RankingError(
                    f"{where}: the {ranker.name} ranker has no weight {key!r} (its weights: {known})",
                    code="unknown_weight",
                )
            out[key] = _number(value, f"{where} {key}")
    for key in getattr(ranker, "positive", ()):
        if key in out and out[key] <= 0:
            raise RankingError(f"the {ranker.name} weight {key} must be greater than 0", code="bad_weight")
    return out
