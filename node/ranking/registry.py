"""The rankers a node knows: built-ins plus plugins, and the weights a request gives them.

Third-party rankers are installed as ordinary Python packages declaring an entry point in the group
``tidings.rankers`` whose object is a ranker instance, a ``Ranker`` subclass or a factory returning
one (the interface is in ``node/ranking/base.py``). ``load_rankers`` loads the built-ins and every
entry point; a plugin that fails to load or is malformed is reported in ``Registry.problems`` and left
out, never stopping the others.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from tidings.node.plugins import PluginProblem, load_entry_points
from tidings.node.ranking.base import RankingError
from tidings.node.ranking.rankers import BUILTINS

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginProblem",
    "Registry",
    "load_rankers",
    "parse_weights",
    "resolve_weights",
]

ENTRY_POINT_GROUP = "tidings.rankers"


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
