"""The running node's blob keeper: the blobs stay within ``blob_quota`` (spec/protocol.md §8.5, issue 18).

A service of ``tidings run`` (``node/services.py``). Blobs arrive while the node runs (fetched for the
feeds it replicates, attached from the web page), so a quota only ``tidings blob gc`` enforces would
be passed and stay passed. Every ``interval`` seconds the keeper runs ``storage.blob_upkeep.upkeep`` on
the database thread (the blobs' rows live in the node's store): it removes the blobs deletes left
marked (should a crash have come between a delete and their removal, ``storage/blob_drops.py``) and,
when the blobs take more than the quota, evicts others' blobs least recently used first, keeping
pinned blobs and those named by the node's own feed and the feeds it follows.

Reading the usage is one aggregate query over the ``blobs`` table; gc, which walks the blob files,
runs only past the quota. It never waits for blob writers (timeout 0: the database thread must not
sleep); while one writes, gc says ``blob_busy`` and the next round tries again.
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from tidings.node.home import Home
from tidings.storage.blob_upkeep import upkeep
from tidings.storage.blobs import BlobError, BlobStore
from tidings.storage.errors import StoreError
from tidings.storage.store import Store

__all__ = ["KEEP_INTERVAL", "BlobKeeper"]

log = logging.getLogger("tidings.blobs")

#: Seconds between two rounds.
KEEP_INTERVAL = 10.0


class BlobKeeper:
    """The ``blobs`` service: ``upkeep`` every ``interval`` seconds. ``quota``: bytes (default the
    home's ``blob_quota``)."""

    name = "blobs"

    def __init__(self, home: Home, *, interval: float = KEEP_INTERVAL, quota: int | None = None) -> None:
        self.home = home
        self.interval = interval
        self.quota = quota
        self.rounds = 0
        self.removed = 0
        self.busy = 0
        self.bytes = 0
        self.error: str | None = None
        self._blobs: BlobStore | None = None  # used on the database thread only

    def state(self) -> dict[str, Any]:
        """For ``tidings status``: the bytes the blobs took at the last round, the quota, the blobs
        removed since the start, the rounds gc found writers at work."""
        out: dict[str, Any] = {"bytes": self.bytes, "quota": self.quota, "removed": self.removed}
        if self.busy:
            out["busy"] = self.busy
        if self.error is not None:
            out["last_error"] = self.error
        return out

    async def run(self, node: Any, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run rounds until cancelled (``node``: the running ``Node``, for its database thread and feed)."""
        if self.quota is None:
            self.quota = int(self.home.limit("blob_quota"))
        me: bytes = node.key.public_key
        task_status.started()
        while True:
            await node.db.call(self._round, me, self.quota)
            await trio.sleep(self.interval)

    def _round(self, store: Store, me: bytes, quota: int) -> None:
        """One round, on the database thread."""
        try:
            if self._blobs is None:
                self._blobs = BlobStore(self.home.blobs_path, store)
            result = upkeep(self._blobs, store, me, quota, timeout=0, only_over_quota=True)
        except BlobError as exc:
            if exc.code != "blob_busy":
                self._failed(exc)
            else:
                self.busy += 1
            return
        except (StoreError, OSError) as exc:  # a full disk, say: reported, and tried again next round
            self._failed(exc)
            return
        self.rounds += 1
        self.removed += len(result["removed"])
        self.bytes = result["bytes"]
        self.error = None
        if result["removed"]:
            log.info(
                "blobs: removed %d (%d bytes), %d bytes left",
                len(result["removed"]),
                result["freed"],
                self.bytes,
            )

    def _failed(self, exc: Exception) -> None:
        self.error = f"{type(exc).__name__}: {exc}"
        log.warning("blobs: upkeep failed: %s", self.error)
