"""What the web handlers work with: the part of the running node they use, the home, the rankers.

``WebNode`` names exactly what node/web/ needs of ``tidings.node.net.node.Node`` (a ``typing.Protocol``:
the node satisfies it without importing anything from here), so the web room depends on that narrow
interface and not on the network stack's classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from tidings.node.clock import SYSTEM_CLOCK, Clock
from tidings.node.ranking.registry import Registry, load_rankers
from tidings.node.web.pictures import Pictures

if TYPE_CHECKING:
    from tidings.node.home import Home
    from tidings.protocol import SigningKey
    from tidings.storage.blobs import BlobStore
    from tidings.storage.thread import DatabaseThread

__all__ = ["WebContext", "WebNode"]


class WebNode(Protocol):
    """The running node as the web service and API use it."""

    @property
    def key(self) -> SigningKey:
        """The node's identity: writes are signed with it."""
        ...

    @property
    def db(self) -> DatabaseThread:
        """The database thread: reads and writes run there (``await db.call(fn, *args)``)."""
        ...

    async def refresh_wants(self) -> None:
        """Recompute the wanted feeds (after a follow, block or swarm change)."""
        ...

    def wake(self) -> None:
        """Wake the pushers: new entries of ours go to connected peers at once."""
        ...

    async def wait_changed(self) -> None:
        """Return after new entries were stored."""
        ...

    def statistics(self) -> dict[str, Any]:
        """Address, feed, connections, services, entries ingested."""
        ...

    def services_changed(self) -> None:
        """A service's state changed (node.json is rewritten)."""
        ...


@dataclass(slots=True)
class WebContext:
    """What the handlers work with: the running node, its home, the ranker registry, the clock, the
    home's blobs and the picture checks (node/web/pictures.py).

    ``openapi`` builds the API's OpenAPI document (node/web/openapi.py); it is handed in because that
    module reads the route table of node/web/api.py, which therefore cannot import it.
    """

    node: WebNode
    home: Home
    openapi: Callable[[], dict[str, Any]]
    registry: Registry = field(default_factory=load_rankers)
    clock: Clock = SYSTEM_CLOCK
    pictures: Pictures = field(default_factory=Pictures)
    blob_store: BlobStore | None = None  # opened on first use (``blobs``)

    @property
    def me(self) -> bytes:
        return self.node.key.public_key

    def now(self) -> int:
        """Milliseconds since the epoch, from the node's clock seam."""
        return self.clock.wall_ms()

    async def changed(self, *, wants: bool = False) -> None:
        """After a write: recompute wanted feeds if the graph changed, and wake the pushers."""
        if wants:
            await self.node.refresh_wants()
        self.node.wake()

    async def blobs(self) -> BlobStore:
        """The home's blobs (``HOME/blobs``), opened on the database thread on first use. Their methods
        that read or write rows (``open_blob``, ``put_bytes``, ``listing``) run there too; looking at
        files (``path_of``, ``has``, ``size``) runs anywhere."""
        if self.blob_store is None:
            self.blob_store = await self.node.db.call(self.home.open_blobs)
        return self.blob_store
