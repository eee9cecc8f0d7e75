"""What changed in the store: new rows for the pushers, feed heads, and the watcher that notices them.

Theory of operation. Every connection's pusher waits in ``wait_changed`` and then asks ``new_rows``
for the rows stored after the last one it sent (spec §12.4). A change wakes every pusher at once, so the
first to ask reads the new rows from the store and the others get them from memory: the last
``ROW_CACHE`` rows are kept, ``head`` answers a feed's highest seq from the same rows. ``watch`` notices
entries written by other processes (a CLI command, a bridge) as well as our own: it polls the store's
file sizes and change times every ``poll_interval`` (a stat, not a query), queries the highest row
when they change (and once a second whatever they say), re-reads the wanted feeds when the follow graph
changed, and wakes the pushers.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from tidings.node.clock import Clock
from tidings.storage import gossip
from tidings.storage.thread import DatabaseThread

__all__ = ["ROW_CACHE", "Changes"]

#: Rows kept in memory for the pushers.
ROW_CACHE = 5000
#: Rows read from the store at a time (``gossip.new_rows`` returns at most this many).
_PAGE = 2000


class Changes:
    """The row cache, the feed heads and the store watcher of one node (see the module docstring)."""

    def __init__(self, store_path: Path, clock: Clock) -> None:
        self.store_path = store_path
        self.clock = clock
        self.db: DatabaseThread | None = None
        self._rows: list[tuple[Any, ...]] = []
        self._base = -1  # the cache holds every row with id > _base (when >= 0)
        self._stale = True
        self._lock = trio.Lock()
        self._heads: dict[bytes, int] = {}
        self._changed = trio.Event()

    def _db(self) -> DatabaseThread:
        assert self.db is not None, "Changes.db is set when the node runs"
        return self.db

    def wake(self) -> None:
        """Wake every pusher once (new entries are stored)."""
        self._stale = True
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        """Wait for the next ``wake``."""
        await self._changed.wait()

    async def new_rows(self, after: int) -> list[tuple[Any, ...]]:
        """Rows stored after row ``after`` (``gossip.new_rows``), shared by all pushers."""
        db = self._db()
        async with self._lock:
            if self._base < 0 or after < self._base:
                if self._base >= 0:
                    return await db.call(gossip.new_rows, after)  # older than the cache
                self._base = after
            if self._stale:
                self._stale = False
                high = self._rows[-1][0] if self._rows else self._base
                while True:
                    fresh = await db.call(gossip.new_rows, high)
                    if not fresh:
                        break
                    self._rows.extend(fresh)
                    for row in fresh:
                        if row[2] > self._heads.get(row[1], -1) and row[1] in self._heads:
                            self._heads[row[1]] = row[2]
                    high = fresh[-1][0]
                    if len(fresh) < _PAGE:
                        break
                if len(self._rows) > ROW_CACHE:
                    drop = len(self._rows) - ROW_CACHE
                    self._base = self._rows[drop - 1][0]
                    del self._rows[:drop]
            start = bisect.bisect_right(self._rows, after, key=lambda r: r[0])
            return self._rows[start : start + _PAGE]

    async def head(self, feed: bytes) -> int:
        """The highest seq held of ``feed`` (cached; raised as rows are stored)."""
        held = self._heads.get(feed)
        if held is None:
            held = (await self._db().call(gossip.heads, {feed}))[feed]
            if len(self._heads) > 100000:
                self._heads.clear()
            self._heads[feed] = max(held, self._heads.get(feed, 0))
        return self._heads[feed]

    def _signature(self) -> tuple[int, ...]:
        """Sizes and change times of the store's files: any commit, by any process, changes them."""
        out: list[int] = []
        for suffix in ("", "-wal"):
            try:
                st = os.stat(f"{self.store_path}{suffix}")
                out += [st.st_mtime_ns, st.st_size]
            except OSError:
                out += [0, 0]
        return tuple(out)

    async def watch(self, poll_interval: float, refresh_wants: Callable[[], Awaitable[None]]) -> None:
        """Notice entries written by other processes (and ourselves) and wake the pushers."""
        db = self._db()
        last = await db.call(gossip.max_row)
        seen = self._signature()
        next_query = self.clock.monotonic() + 1.0
        while True:
            await trio.sleep(poll_interval)
            signature = self._signature()
            if signature == seen and not self._stale and self.clock.monotonic() < next_query:
                continue  # no file of the store changed: nobody wrote (a stat, not a query)
            seen = signature
            next_query = self.clock.monotonic() + 1.0  # and a query every second whatever the files say
            now = await db.call(gossip.max_row)
            if now != last:
                if await db.call(gossip.graph_changed, last):
                    await refresh_wants()
                last = now
                self.wake()
