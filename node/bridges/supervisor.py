"""Inside ``tidings run``: the bridges' services follow their settings while the node runs.

Theory of operation. ``BridgeSupervisor`` is one service (``bridges``) that owns the services of every
installed bridge. Every ``CHECK`` seconds it asks each bridge, on a worker thread with its own store
connection, what it wants now: its settings (``Bridge.settings_of``) and whether it runs at all
(``Bridge.service`` returns None while nothing is enabled: bridges are opt-in). A bridge whose answer
changed since the last look is brought in line:

- enabled now: its service starts (a ``ServiceRunner`` in ``node.services``, so ``tidings status`` and
  the web page show it);
- settings changed: the running service is cancelled and a new one started with the new settings;
- disabled now: the service is cancelled and leaves ``node.services``.

So ``tidings bridge config ...``, a first ``rss follow`` or ``nostr follow``, take effect within a few
seconds, without a restart. A plugin that failed to load, or whose ``service()`` raises, shows as a
crashed service (``_Unavailable``) and the node runs on; a service that crashes stays shown as crashed
until its settings change, when it is started again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
from tidings.node.bridges import Registry, load_bridges, unavailable, wanted_services
from tidings.node.clock import SYSTEM_CLOCK, Clock
from tidings.node.services import ServiceRunner

if TYPE_CHECKING:
    from tidings.node.home import Home
    from tidings.node.net.node import Node
    from tidings.storage.store import Store

__all__ = ["CHECK", "BridgeSupervisor"]

log = logging.getLogger("tidings.bridges")

CHECK = 2.0  # seconds between looks at the bridges' settings


@dataclass
class _Running:
    key: tuple[Any, ...]
    runner: ServiceRunner
    scope: trio.CancelScope


class BridgeSupervisor:
    """The ``bridges`` service (see the module docstring)."""

    name = "bridges"

    def __init__(
        self,
        home: Home,
        *,
        registry: Registry | None = None,
        check: float = CHECK,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """``clock``: the clock the bridges' services read (the node's)."""
        self.home = home
        self.registry = registry
        self.check = check
        self.clock = clock
        self.running: dict[str, _Running] = {}
        self.restarts = 0

    def state(self) -> dict[str, Any]:
        return {"managed": sorted(self.running), "restarts": self.restarts}

    async def run(self, node: Node, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        from tidings.storage.store import Store

        registry = self.registry or await trio.to_thread.run_sync(load_bridges)
        store = await trio.to_thread.run_sync(Store, self.home.store_path)
        try:
            async with trio.open_nursery() as nursery:
                for problem in registry.problems:
                    log.error("%s", problem)
                    failed = unavailable(problem.name, f"failed to load: {problem.error}")
                    await self._start(node, nursery, problem.name, ("failed",), failed)
                wanted = await trio.to_thread.run_sync(self._wanted, registry, store)
                await self._apply(node, nursery, wanted)
                task_status.started()
                while True:
                    await trio.sleep(self.check)
                    wanted = await trio.to_thread.run_sync(self._wanted, registry, store)
                    await self._apply(node, nursery, wanted)
        finally:
            store.close()

    def _wanted(self, registry: Registry, store: Store) -> dict[str, tuple[tuple[Any, ...], Any]]:
        return wanted_services(registry, self.home, store, clock=self.clock)

    async def _apply(
        self, node: Node, nursery: trio.Nursery, wanted: dict[str, tuple[tuple[Any, ...], Any]]
    ) -> None:
        for name, (key, service) in wanted.items():
            current = self.running.get(name)
            if current is not None and current.key == key:
                continue
            if current is not None:
                self._stop(node, name)
                self.restarts += 1
                log.info("bridge %s: settings changed, %s", name, "restarting" if service else "stopping")
            if key[0] == "error":
                log.error("bridge %s %s", name, key[1])
            if service is not None:
                await self._start(node, nursery, name, key, service)

    async def _start(
        self, node: Node, nursery: trio.Nursery, name: str, key: tuple[Any, ...], service: Any
    ) -> None:
        runner = ServiceRunner(service)
        scope = trio.CancelScope()
        self.running[name] = _Running(key, runner, scope)
        node.services.append(runner)

        async def supervised(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await runner.run(node, task_status=task_status)

        await nursery.start(supervised)
        node.services_changed()

    def _stop(self, node: Node, name: str) -> None:
        running = self.running.pop(name)
        running.scope.cancel()
        if running.runner in node.services:
            node.services.remove(running.runner)
        node.services_changed()
