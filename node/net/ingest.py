"""A connection's ingest pipeline: received entries are checked and stored in two stages.

Checking batch k+1 overlaps writing batch k (bench/RESULTS.md, "pipelined"): ``_checker`` gathers
queued frames (several per transaction) and decodes and verifies them on a worker thread
(``Store.prepare``); ``_writer`` links and writes them on the database thread and hands each result to
the connection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio
from tidings.protocol.entry import peek_position
from tidings.storage.store import IngestResult, Store
from tidings.storage.thread import DatabaseThread

__all__ = ["INGEST_BATCH", "IngestPipeline"]

#: Most entries stored in one transaction by a connection (about: whole frames are taken). Two batches
#: are in flight (one checked, one written); at 4000 the receiver of a 100k sync peaked at 151 MB, at
#: 2000 at 137 MB, with the same throughput (bench/RESULTS.md).
INGEST_BATCH = 2000

Items = list[tuple[bytes, bytes | None]]


class IngestPipeline:
    """Check and store what one connection received; ``on_stored(result, authors)`` after each batch."""

    def __init__(
        self, db: DatabaseThread, on_stored: Callable[[IngestResult, set[bytes]], Awaitable[None]]
    ) -> None:
        self.db = db
        self.on_stored = on_stored
        self._queued_send, self._queued_recv = trio.open_memory_channel[Items](32)
        self._checked_send, self._checked_recv = trio.open_memory_channel[tuple[Any, int, set[bytes]]](1)
        self._pending = 0
        self._idle = trio.Event()

    async def submit(self, items: Items) -> None:
        """Queue the kept entries of one frame (waits while 32 frames are queued)."""
        self._pending += 1
        await self._queued_send.send(items)

    async def wait_stored(self) -> None:
        """Wait until every frame submitted so far is stored."""
        while self._pending:
            await self._idle.wait()

    async def run(self) -> None:
        """Run both stages until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._checker)
            nursery.start_soon(self._writer)

    async def _checker(self) -> None:
        async with self._checked_send:
            async for first in self._queued_recv:
                batch, frames = list(first), 1
                while len(batch) < INGEST_BATCH:
                    try:
                        batch.extend(self._queued_recv.receive_nowait())
                        frames += 1
                    except trio.WouldBlock:
                        break
                authors = {peek_position(raw)[0] for raw, _ in batch}
                prepared = await trio.to_thread.run_sync(self.db.store_prepare, batch)
                await self._checked_send.send((prepared, frames, authors))

    async def _writer(self) -> None:
        async for prepared, frames, authors in self._checked_recv:
            try:
                result = await self.db.call(Store.ingest_prepared, prepared)
                await self.on_stored(result, authors)
            finally:
                self._pending -= frames
                if not self._pending:
                    self._idle.set()
                    self._idle = trio.Event()
