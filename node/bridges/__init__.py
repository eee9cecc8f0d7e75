"""Bridges to other networks, found through the ``tidings.bridges`` entry point group (spec §14).

``load_bridges`` loads every entry point; a plugin that fails to load or is malformed is kept in
``Registry.problems`` (shown by ``tidings bridge list`` and, inside ``tidings run``, as a crashed
service in ``tidings status``), never stopping the others.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

import trio
from tidings.node.bridges.base import Backoff, Bridge, BridgeContext, BridgeError, Setting
from tidings.node.clock import SYSTEM_CLOCK, Clock
from tidings.node.plugins import PluginProblem, load_entry_points

if TYPE_CHECKING:
    from tidings.node.home import Home
    from tidings.node.net.node import Node
    from tidings.storage.store import Store

__all__ = [
    "ENTRY_POINT_GROUP",
    "Backoff",
    "Bridge",
    "BridgeContext",
    "BridgeError",
    "PluginProblem",
    "Registry",
    "Setting",
    "bridge_services",
    "load_bridges",
    "unavailable",
    "wanted_services",
]

ENTRY_POINT_GROUP = "tidings.bridges"

log = logging.getLogger("tidings.bridges")


@dataclass
class Registry:
    bridges: dict[str, Bridge] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    problems: list[PluginProblem] = field(default_factory=list)

    def get(self, name: str) -> Bridge:
        if name in self.bridges:
            return self.bridges[name]
        for p in self.problems:
            if p.name == name:
                raise BridgeError(f"the {name} bridge failed to load: {p.error}", code="bridge_unavailable")
        known = ", ".join(sorted(self.bridges)) or "none"
        raise BridgeError(f"no bridge named {name!r} (installed: {known})", code="unknown_bridge")

    def context(
        self, bridge: Bridge, home: Home, store: Store, *, clock: Clock = SYSTEM_CLOCK
    ) -> BridgeContext:
        return BridgeContext(home=home, store=store, settings=bridge.settings_of(store), clock=clock)


def _check(obj: Any, name: str) -> str | None:
    """Why ``obj`` is not a usable bridge named ``name``, or None."""
    if not isinstance(getattr(obj, "name", None), str) or obj.name != name:
        return f"its name {getattr(obj, 'name', None)!r} is not the entry point name {name!r}"
    for attr in ("command", "service", "status", "settings_of"):
        if not callable(getattr(obj, attr, None)):
            return f"it has no {attr}() method (subclass tidings.node.bridges.Bridge)"
    return None


def load_bridges(*, entry_points: Iterable[metadata.EntryPoint] | None = None) -> Registry:
    """Every installed bridge; plugins that fail are reported in ``problems``."""
    loaded = load_entry_points(
        ENTRY_POINT_GROUP, "bridge", marker="name", check=_check, entry_points=entry_points
    )
    registry = Registry(problems=loaded.problems)
    for name, bridge, origin in loaded.plugins:
        registry.bridges[name] = bridge
        registry.origins[name] = origin
    return registry


class _Unavailable:
    """Stands in for a bridge that failed to load or to start: reported as a crashed service."""

    def __init__(self, name: str, error: str) -> None:
        self.name = f"bridge:{name}"
        self.error = error

    async def run(self, node: Node, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        raise BridgeError(self.error, code="bridge_unavailable")


def unavailable(name: str, error: str) -> Any:
    """A service standing in for bridge ``name``, which failed to load or to start: it fails at once."""
    return _Unavailable(name, error)


def wanted_services(
    registry: Registry, home: Home, store: Store, *, clock: Clock = SYSTEM_CLOCK
) -> dict[str, tuple[tuple[Any, ...], Any]]:
    """Per bridge: what its service depends on (on/off and its settings) and the service it wants to
    run now (None while nothing is enabled: bridges are opt-in). A bridge whose ``service()`` raises
    gets a stand-in service that fails at once (shown as crashed; the node runs on without it)."""
    wanted: dict[str, tuple[tuple[Any, ...], Any]] = {}
    for name, bridge in sorted(registry.bridges.items()):
        try:
            ctx = registry.context(bridge, home, store, clock=clock)
            service = bridge.service(ctx)
            key: tuple[Any, ...] = (
                "on" if service is not None else "off",
                tuple(sorted(ctx.settings.items())),
            )
        except Exception as exc:  # a bridge's bug must not stop the others
            error = f"cannot start: {type(exc).__name__}: {exc}"
            service, key = _Unavailable(name, error), ("error", error)
        wanted[name] = (key, service)
    return wanted


def bridge_services(home: Home) -> list[Any]:
    """Services for the bridges enabled in ``home`` now, and stand-ins for plugins that failed to load
    (``BridgeSupervisor`` keeps them in line with their settings inside ``tidings run``)."""
    from tidings.storage.store import Store

    registry = load_bridges()
    services: list[Any] = []
    for problem in registry.problems:
        log.error("%s", problem)
        services.append(_Unavailable(problem.name, f"failed to load: {problem.error}"))
    with Store(home.store_path) as store:
        for name, (key, service) in wanted_services(registry, home, store).items():
            if key[0] == "error":
                log.error("bridge %s %s", name, key[1])
            if service is not None:
                services.append(service)
    return services
