"""Fetching the blobs the node wants from its peers (spec/protocol.md §12.12).

Theory of operation. ``BlobService`` is the node's blobs while it runs: the ``BlobStore`` (opened on
the database thread, which its rows belong to) and the ``Fetcher``. The fetcher works from the
``blob_wants`` table (storage/blob_wants.py), so a want outlives a restart:

- **Wanting.** Every post and profile stored from a feed the node replicates (``node.wanted``: its
  own, those it follows and their hops) is read as it arrives (``new_rows``, like the pushers); the
  blobs and previews it names that are not held become wants, within ``blob_author_budget`` bytes per
  feed and hour (more is wanted later, or at once on request). A node that starts catches up with the
  references already stored (``missing_refs``). ``tidings blob get`` and the web page add wants for
  blobs the user asks for.
- **Asking.** Each round takes the wants that are due and, for those nobody has offered yet, sends
  ``blob_want`` to every connection of version 4 not asked yet; the ``blob_have`` answers make those
  peers holders. A want nobody holds after ``blob_ask_timeout`` fails ``not_found`` for now.
- **Fetching.** At most ``blob_downloads`` blobs at a time, each by one ``Download`` (blob_download.py)
  from one holder at a time, in ranges, into the blob's partial file; a holder that fails it (its
  connection ends, it refuses, it is too slow) is left for another, and the partial file keeps what
  came, so the next holder, or the next try after a restart, goes on from there.
- **Failing.** A want that fails is due again after ``blob_retry`` seconds, doubled with each failure
  up to an hour; a blob that is not what its reference says (a decompression bomb, an SVG posing as a
  PNG, a size that differs) is not kept and is not tried again for a day.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

import trio
from tidings.node.net.blob_download import WINDOW, Download
from tidings.node.net.budgets import RateLimit
from tidings.protocol import ProtocolError, blob_refs, decode_content
from tidings.protocol.blob_transfer import MAX_OPEN_REQUESTS, MAX_WANT_ITEMS, BlobWant, Received
from tidings.protocol.blobs import MAX_PREVIEW
from tidings.protocol.identity import BlobId
from tidings.storage import blob_wants, gossip
from tidings.storage.blob_partial import remove_partials
from tidings.storage.blob_refs import may_name_blobs
from tidings.storage.blob_wants import Want
from tidings.storage.blobs import BlobStore

__all__ = ["BlobService", "Fetcher"]

log = logging.getLogger("tidings.blobs")

#: How often the fetcher looks at its wants when nothing wakes it (a CLI may have added some).
POLL = 1.0
#: Longest wait between tries of a failed want; and the wait after a blob that is not what it claims.
MAX_RETRY = 3600.0
BAD_BLOB_RETRY = 86400.0
_CONTENT_TYPES = ("post", "profile")
#: Downloads from one holder at once: each keeps ``WINDOW`` ranges in flight, within the holder's
#: ``MAX_OPEN_REQUESTS``.
PER_HOLDER = MAX_OPEN_REQUESTS // WINDOW


class BlobService:
    """The node's blobs while it runs (see the module docstring)."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.store: BlobStore | None = None
        self.fetcher = Fetcher(self)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        node = self.node
        self.store = await node.db.call(node.home.open_blobs)
        task_status.started()
        await self.fetcher.run()

    async def held(self, ids: Iterable[bytes]) -> list[tuple[bytes, int]]:
        """``(id, size)`` of those of ``ids`` held here (a ``stat`` each, no query)."""
        if self.store is None:
            return []
        found = []
        for blob in ids:
            size = self.store.size(BlobId(blob))
            if size and size <= self.store.max_blob:  # a longer file is no blob of ours: never offered
                found.append((blob, size))
        return found

    def touch(self, blob: bytes) -> None:
        """A blob was served: it counts as used for gc, without holding up the serving task."""
        self.fetcher.touched.add(blob)

    async def want(self, wants: list[Want]) -> list[Want]:
        """Record ``wants`` (see ``blob_wants.add_wants``) and start on them."""
        added = await self.node.db.call(blob_wants.add_wants, wants, self.node.clock.wall_ms())
        if added:
            self.fetcher.wake()
        return added


class Fetcher:
    """Wants, holders and downloads of one node (see the module docstring)."""

    def __init__(self, service: BlobService) -> None:
        self.service = service
        self.node = service.node
        self.downloads: dict[bytes, Download] = {}
        self.routes: dict[tuple[int, int], Download] = {}  # (connection, request) -> its download
        self.holders: dict[bytes, dict[int, int]] = {}  # blob -> {connection: size}
        self._asked: dict[bytes, tuple[set[int], float]] = {}  # blob -> (connections asked, first ask)
        self._budgets: dict[bytes, RateLimit] = {}
        self._wake = trio.Event()
        self.touched: set[bytes] = set()
        self.fetched = 0
        self.failures = 0

    def wake(self) -> None:
        self._wake.set()

    # -- running ---------------------------------------------------------------------------------------
    async def run(self) -> None:
        node = self.node
        start_row = await node.db.call(gossip.max_row)
        await self._catch_up()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._follow_rows, start_row)
            while True:
                await self._round(nursery)
                with trio.move_on_after(POLL):
                    await self._wake.wait()
                self._wake = trio.Event()

    async def _catch_up(self) -> None:
        """Wants for the references stored before the node started; partial files nobody wants go."""
        node, store = self.node, self.service.store
        assert store is not None
        found = await node.db.call(blob_wants.missing_refs, set(node.wanted), max_blob=store.max_blob)
        await self.service.want(self._within_budget(found))
        wanted = {w.blob for w in await node.db.call(blob_wants.wants)}
        await trio.to_thread.run_sync(remove_partials, store, wanted)

    async def _follow_rows(self, after: int) -> None:
        """Posts and profiles of replicated feeds, as they are stored: their blobs become wants."""
        node = self.node
        while True:
            rows = await node.new_rows(after)
            if not rows:
                with trio.move_on_after(POLL):
                    await node.wait_changed()
                continue
            after = rows[-1][0]
            found = []
            for _, author, _, kind, _, payload in rows:
                if kind in _CONTENT_TYPES and payload is not None and author in node.wanted:
                    found.extend(self._wants_of(author, payload))
            if found:
                await self.service.want(self._within_budget(found))

    def _wants_of(self, author: bytes, payload: bytes) -> list[Want]:
        store = self.service.store
        assert store is not None
        if not may_name_blobs(payload):  # most posts: not decoded a second time
            return []
        try:
            refs = blob_refs(decode_content(payload))
        except ProtocolError:
            return []  # not shown (§8.4): nothing to fetch for it
        found = []
        for ref in refs:
            if ref.size <= store.max_blob:
                found.append(Want(ref.blob, ref.size, ref.size, ref.mime, author))
            if ref.preview is not None:
                found.append(Want(ref.preview, None, MAX_PREVIEW, "image/*", author))
        return found

    def _within_budget(self, wants: list[Want]) -> list[Want]:
        """Wants of a feed past its ``blob_author_budget`` are recorded as due when it has room again."""
        per_hour = float(self.node.limits["blob_author_budget"])
        now = self.node.clock.wall_ms()
        out = []
        for want in wants:
            if want.author is None or want.author == self.node.key.public_key:
                out.append(want)
                continue
            bucket = self._budgets.get(want.author)
            if bucket is None:
                bucket = self._budgets[want.author] = RateLimit(per_hour / 3600, per_hour, self.node.clock)
            if bucket.take(want.most):
                out.append(want)
            else:
                wait = 3600.0 if per_hour <= 0 else (want.most - bucket.tokens) * 3600 / per_hour
                out.append(
                    Want(
                        want.blob,
                        want.size,
                        want.most,
                        want.mime,
                        want.author,
                        0,
                        now + int(wait * 1000),
                        "budget",
                    )
                )
        return out

    async def _round(self, nursery: trio.Nursery) -> None:
        """Ask for the wants that are due, start downloads where a holder is known (module docstring)."""
        node = self.node
        await self._touch()
        now = node.clock.wall_ms()
        due = await node.db.call(blob_wants.due_wants, now, skip=set(self.downloads))
        asks: dict[int, list[bytes]] = {}
        conns = self.connections()
        for want in due:
            holder = self.holder(want, set())
            if holder is not None:
                if len(self.downloads) < node.limits["blob_downloads"]:
                    self._start(nursery, want, holder)
                continue
            if self.holder(want, set(), busy=True) is not None:
                continue  # offered, by holders busy with other blobs for now
            asked, since = self._asked.setdefault(want.blob, (set(), node.clock.monotonic()))
            new = [conn_id for conn_id in conns if conn_id not in asked]
            for conn_id in new:
                asked.add(conn_id)
                asks.setdefault(conn_id, []).append(want.blob)
            waited = node.clock.monotonic() - since
            if not new and waited >= node.limits["blob_ask_timeout"]:
                del self._asked[want.blob]
                await self.failed(want, "not_found", f"none of {len(conns)} connected peers has it")
        for conn_id, ids in asks.items():
            for start in range(0, len(ids), MAX_WANT_ITEMS):
                await conns[conn_id].send_event(BlobWant(ids=tuple(ids[start : start + MAX_WANT_ITEMS])))

    async def _touch(self) -> None:
        touched, self.touched = self.touched, set()
        store = self.service.store
        for blob in touched:
            if store is not None:
                await self.node.db.call(_touch, store, blob)

    def _start(self, nursery: trio.Nursery, want: Want, holder: Any) -> None:
        download = Download(self, want, holder)
        self.downloads[want.blob] = download
        nursery.start_soon(self._run_download, download)

    async def _run_download(self, download: Download) -> None:
        try:
            await download.run()
        finally:
            self.downloads.pop(download.want.blob, None)
            self._asked.pop(download.want.blob, None)
            for key in [k for k, d in self.routes.items() if d is download]:
                del self.routes[key]
            self.wake()

    # -- what the downloads use ------------------------------------------------------------------------
    def connections(self) -> dict[int, Any]:
        """The node's connections that speak blob transfer (version 4, replicating)."""
        return {
            conn_id: conn
            for conn_id, conn in list(self.node.connections.items())
            if conn.rep.state == "ACTIVE" and conn.rep.version >= 4 and not conn.once
        }

    def holder(self, want: Want, tried: set[int], *, busy: bool = False) -> Any:
        """A connected peer that said it holds ``want`` (at the size its reference gave), not in
        ``tried`` and not busy with other downloads (``busy``: busy ones too); a direct connection
        before a relayed one."""
        conns = self.connections()
        load: dict[int, int] = {}
        for download in self.downloads.values():
            if download.conn is not None and download.want.blob != want.blob:
                load[id(download.conn)] = load.get(id(download.conn), 0) + 1
        fits = [
            conns[c]
            for c, size in self.holders.get(want.blob, {}).items()
            if c in conns
            and c not in tried
            and (want.size is None or size == want.size)
            and size <= want.most
            and (busy or load.get(c, 0) < PER_HOLDER)  # its open requests are bounded (§12.12)
        ]
        fits.sort(key=lambda conn: conn.path != "direct")
        return fits[0] if fits else None

    async def fetched_blob(self, want: Want) -> None:
        self.fetched += 1
        self.holders.pop(want.blob, None)
        await self.node.db.call(blob_wants.fetched, want.blob)

    async def failed(self, want: Want, code: str, reason: str, *, retry: float | None = None) -> None:
        """A try of ``want`` failed: due again after the backoff (or ``retry`` seconds)."""
        self.failures += 1
        if retry is None:
            retry = min(MAX_RETRY, float(self.node.limits["blob_retry"]) * math.pow(2, min(want.tries, 20)))
        log.info(
            "blob %s not fetched (%s): %s; trying again in %.0f s", BlobId(want.blob), code, reason, retry
        )
        retry_at = self.node.clock.wall_ms() + int(retry * 1000)
        await self.node.db.call(blob_wants.failed, want.blob, code, retry_at)

    # -- what connections pass on ----------------------------------------------------------------------
    def on_have(self, conn: Any, items: tuple[tuple[bytes, int], ...]) -> None:
        for blob, size in items:
            self.holders.setdefault(blob, {})[id(conn)] = size
        if items:
            self.wake()

    def on_data(self, conn: Any, got: Received) -> None:
        download = self.routes.get((id(conn), got.request))
        if download is not None:
            download.on_data(conn, got)

    def on_refused(self, conn: Any, request: int, code: str, reason: str) -> None:
        download = self.routes.get((id(conn), request))
        if download is not None:
            download.on_refused(conn, request, code, reason)

    def statistics(self) -> dict[str, int]:
        """Blobs being fetched now, fetched and failed since the node started (``node.json``)."""
        return {"downloads": len(self.downloads), "fetched": self.fetched, "failures": self.failures}


def _touch(store: Any, blobs: BlobStore, blob: bytes) -> None:
    blobs._touch(BlobId(blob))
