"""Services that run inside ``tidings run`` beside the gossip node: the local web API, bridges, plugins.

A service is any object with a ``name`` and ``async run(node, *, task_status)``; it calls
``task_status.started()`` once it is ready (the HTTP server once it listens, a bridge at once) and then
runs until cancelled. It may offer ``state() -> dict`` (shown by ``tidings status``). A service that
raises is reported (log, ``node.json``, ``tidings status``) and the node keeps running without it:
a crashing plugin or an unreachable remote must never stop the node.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any, Protocol

import trio

__all__ = ["Service", "ServiceHost", "ServiceRunner"]

log = logging.getLogger("tidings.services")


class ServiceHost(Protocol):
    """What the runner needs from the node: a way to say a service's state changed."""

    def services_changed(self) -> None: ...


class Service(Protocol):
    name: str

    # ``node`` is the running ``tidings.node.net.node.Node``; each service uses what it needs of it
    # (typed ``Any`` here so this module, which the node imports, does not import the node)
    async def run(self, node: Any, *, task_status: trio.TaskStatus[Any] = ...) -> None: ...


class ServiceRunner:
    """Runs one service under the node's nursery and keeps its state for ``status``."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.name = service.name
        self.crashed: str | None = None
        self.running = False

    def state(self) -> dict[str, Any]:
        if self.crashed is not None:
            return {"state": "crashed", "error": self.crashed}
        extra: dict[str, Any] = {}
        getter = getattr(self.service, "state", None)
        if callable(getter):
            try:
                extra = dict(getter())
            except Exception as exc:  # a broken state() must not break status
                extra = {"state_error": f"{type(exc).__name__}: {exc}"}
        return {"state": "running" if self.running else "starting", **extra}

    async def run(
        self, node: ServiceHost, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        started = False

        class _Status:
            def started(self, value: Any = None) -> None:
                nonlocal started
                if not started:
                    started = True
                    task_status.started()

        try:
            self.running = True
            await self.service.run(node, task_status=_Status())  # type: ignore[arg-type]
        except Exception as exc:
            self.crashed = f"{type(exc).__name__}: {exc}"
            log.error("service %s stopped: %s (the node goes on without it)", self.name, self.crashed)
            log.debug("service %s traceback:\n%s", self.name, "".join(traceback.format_exception(exc)))
            node.services_changed()
        finally:
            self.running = False
            if not started:
                task_status.started()
