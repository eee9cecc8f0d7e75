"""The home's blobs as bridges use them inside trio: a store connection of their own, one worker thread
at a time (issue 18).

The RSS bridge writes the pictures and files of web feed items into blobs (node/bridges/rss_media.py)
and the Atom server reads them out (node/bridges/atom_blobs.py). ``storage.blobs.BlobStore`` does file
IO and records rows, both blocking: ``BridgeBlobs.run`` does each step on a worker thread, so the node's
database thread (``node.db``) and the event loop never wait for a disk. The store connection is its own
(several connections to one home are fine, WAL) and is used by one thread at a time: the steps of all
tasks sharing a ``BridgeBlobs`` queue on its ``limiter``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from tidings.node.home import Home
    from tidings.storage.blobs import BlobStore
    from tidings.storage.store import Store

__all__ = ["BridgeBlobs"]


class BridgeBlobs:
    """``blobs`` (a ``BlobStore`` on a store connection of its own), used one step at a time."""

    def __init__(self, blobs: BlobStore, store: Store | None = None) -> None:
        self.blobs = blobs
        self._store = store
        self.limiter = trio.CapacityLimiter(1)

    @classmethod
    def open(cls, home: Home) -> BridgeBlobs:
        """Open ``home``'s blobs on a new store connection (blocking: call it from a worker thread)."""
        from tidings.storage.store import Store

        store = Store(home.store_path)
        try:
            return cls(home.open_blobs(store), store)
        except BaseException:
            store.close()
            raise

    async def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` on a worker thread, once every step queued before it has ended."""
        return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self.limiter)

    def close(self) -> None:
        """Close the store connection (the blobs need no closing)."""
        if self._store is not None:
            self._store.close()
