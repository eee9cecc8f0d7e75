"""Loading plugins from entry point groups, shared by bridges (``tidings.bridges``) and rankers
(``tidings.rankers``).

An entry point may name an instance, a class or a factory function (``instantiate``). Loading never
lets one plugin stop the others: one that raises on import or construction, or that its kind's
``check`` refuses, becomes a ``PluginProblem`` (shown by ``tidings bridge list``, ``tidings rankers``
and ``tidings status``). Entry points are taken in (name, value) order; when the same name is found
twice (one distribution seen twice on the path), the first wins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

__all__ = ["Loaded", "PluginProblem", "instantiate", "load_entry_points", "origin_of"]


@dataclass(frozen=True, slots=True)
class PluginProblem:
    """A plugin that could not be used: its kind, entry point name, where it came from, and why."""

    kind: str
    name: str
    origin: str
    error: str

    def __str__(self) -> str:
        return f"{self.kind} plugin {self.name!r} ({self.origin}): {self.error}"


@dataclass(slots=True)
class Loaded:
    """What ``load_entry_points`` found: ``(entry point name, object, origin)`` and the problems."""

    plugins: list[tuple[str, Any, str]] = field(default_factory=list)
    problems: list[PluginProblem] = field(default_factory=list)


def origin_of(ep: metadata.EntryPoint) -> str:
    """``"DIST VERSION: module:attr"`` (just the value when the distribution is unknown)."""
    dist = getattr(ep, "dist", None)
    where = f"{dist.name} {dist.version}: " if dist is not None else ""
    return f"{where}{ep.value}"


def instantiate(loaded: Any, marker: str) -> Any:
    """The plugin object: ``loaded`` itself when it already has the ``marker`` attribute its kind
    requires, else the result of calling it (a class or a factory)."""
    if isinstance(loaded, type) or (callable(loaded) and not hasattr(loaded, marker)):
        return loaded()
    return loaded


def load_entry_points(
    group: str,
    kind: str,
    *,
    marker: str,
    check: Callable[[Any, str], str | None],
    entry_points: Iterable[metadata.EntryPoint] | None = None,
) -> Loaded:
    """Every entry point of ``group`` that loads and passes ``check(obj, name)`` (None: usable, else why not)."""
    if entry_points is None:
        entry_points = metadata.entry_points(group=group)
    out = Loaded()
    seen: set[str] = set()
    for ep in sorted(entry_points, key=lambda e: (e.name, e.value)):
        if ep.name in seen:
            continue
        seen.add(ep.name)
        origin = origin_of(ep)
        try:
            obj = instantiate(ep.load(), marker)
        except Exception as exc:  # a plugin's import error must not stop the others
            out.problems.append(PluginProblem(kind, ep.name, origin, f"{type(exc).__name__}: {exc}"))
            continue
        why = check(obj, ep.name)
        if why is not None:
            out.problems.append(PluginProblem(kind, ep.name, origin, why))
            continue
        out.plugins.append((ep.name, obj, origin))
    return out
