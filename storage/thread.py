"""The node's access to the store: one dedicated database thread, awaited from trio.

sqlite3 connections are not shareable across threads without care, and ``trio.to_thread`` spawns or
borrows a thread per call (~20k calls/s here). One long-lived thread owning the ``Store`` serves
~32k calls/s, keeps every write on one connection (so writes never contend inside the process), and
lets the node batch many small writes into one transaction. This is what aiosqlite does internally,
without its asyncio loop.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import outcome
import trio

from .store import IngestResult, Store

__all__ = ["DatabaseThread"]

T = TypeVar("T")

_STOP = object()


class DatabaseThread:
    """Run ``fn(store, *args)`` on the thread that owns ``store``.

    Use ``async with DatabaseThread(path) as db: await db.call(Store.append, key, content)``.
    Calls are not cancellable once queued (a write either happens completely or not at all); the
    caller waits for its result even if cancelled meanwhile, which keeps store state and caller in step.
    """

    def __init__(self, path: Any, **store_kwargs: Any) -> None:
        self._path = path
        self._store_kwargs = store_kwargs
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._calls = 0
        self._opened = threading.Event()
        self._open_error: BaseException | None = None
        self._store: Store | None = None

    async def __aenter__(self) -> DatabaseThread:
        self._thread = threading.Thread(target=self._run, name="tidings-db", daemon=True)
        self._thread.start()
        await trio.to_thread.run_sync(self._opened.wait)
        if self._open_error is not None:
            raise self._open_error
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._queue.put(_STOP)
        if self._thread is not None:
            await trio.to_thread.run_sync(self._thread.join)

    def _run(self) -> None:
        try:
            store = Store(self._path, **self._store_kwargs)
        except BaseException as exc:  # handed to the opener, raised there
            self._open_error = exc
            self._opened.set()
            return
        self._store = store
        self._opened.set()
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    break
                fn, args, kwargs, deliver = item
                deliver(outcome.capture(fn, store, *args, **kwargs))
        finally:
            store.close()

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(store, *args, **kwargs)`` on the database thread and return its result."""
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError("the database thread is not running")
        token = trio.lowlevel.current_trio_token()
        task = trio.lowlevel.current_task()
        self._calls += 1

        def deliver(result: outcome.Outcome[T]) -> None:
            token.run_sync_soon(trio.lowlevel.reschedule, task, result)

        self._queue.put((fn, args, kwargs, deliver))

        def abort(_: Any) -> trio.lowlevel.Abort:
            return trio.lowlevel.Abort.FAILED  # the call runs to completion; see the class docstring

        result: T = await trio.lowlevel.wait_task_rescheduled(abort)
        return result

    async def ingest(self, items: list[tuple[bytes, bytes | None]], *, kind: str = "remote") -> IngestResult:
        """Verify and store entries of other feeds, like ``Store.ingest``, pipelined.

        Decoding and signature checks (``Store.prepare``, no database access) run on a worker thread,
        then the database thread checks links and writes (``Store.ingest_prepared``); while it writes
        one batch, the next caller's batch is being checked (bench/RESULTS.md: "pipelined").
        """
        if self._store is None:
            raise RuntimeError("the database thread is not running")
        prepared = await trio.to_thread.run_sync(self._store.prepare, items)
        return await self.call(Store.ingest_prepared, prepared, kind=kind)

    def store_prepare(self, items: list[tuple[bytes, bytes | None]]) -> Any:
        """``Store.prepare`` (no database access; any thread) for callers that pipeline themselves."""
        if self._store is None:
            raise RuntimeError("the database thread is not running")
        return self._store.prepare(items)

    def statistics(self) -> dict[str, int]:
        return {"calls": self._calls, "queued": self._queue.qsize()}
