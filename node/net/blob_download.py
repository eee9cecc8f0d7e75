"""One blob fetched from peers (spec/protocol.md §12.12), resumable, from whichever holder is connected.

Theory of operation. A ``Download`` opens the blob's partial file (storage/blob_partial.py), which
starts where an earlier try stopped, and asks one holder at a time for the rest, in ranges of
``BLOB_RANGE`` bytes with two ranges in flight, so the next one is under way while the last bytes of
the one before arrive. The connection's reader hands each ``blob_data`` to ``on_data``, which appends
it to the partial file at once (the data of a connection's requests comes in order, §12.12, and
``BlobRequests`` has checked it against the request). A holder is given up, and the next one asked
from the byte reached, when its connection ends, it refuses (``blob_none``), or a range takes longer
than ``blob_range_timeout`` (an endless slow stream: its score drops, ``slow_blob``)::

    OPEN --holder h: ranges--> FROM h --all bytes--> CHECK --hash and picture ok--> DONE (stored)
                                FROM h --h fails-----> next holder, or FAILED (partial kept: resumes)
                                                        CHECK --mismatch, bomb, not a picture--> FAILED
                                                                 (nothing kept, the senders pay)

When the bytes are whole they are hashed (they must be the blob asked for) and, for a picture, its
header is checked (``node.media.check_picture``: the kind its reference says, within the pixel bound)
before the blob takes its name. Bytes that do not hash to the id cost the peer that sent them all
``invalid``; when several peers sent parts, nobody can tell which lied, so none is charged and the next
try starts from byte 0 with one holder. A picture that fails its check costs its senders ``bad_blob``
(they served what an author signed, maybe in good faith) and is not tried again for a day.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from tidings.node.media import IMAGE_MIMES, MediaError, inspect_picture, picture_mime
from tidings.protocol.blob_transfer import BLOB_RANGE, Received
from tidings.protocol.errors import TidingsError
from tidings.protocol.identity import BlobId
from tidings.storage.blob_partial import PartialBlob
from tidings.storage.blobs import BlobError, BlobStore

if TYPE_CHECKING:
    from tidings.storage.blob_wants import Want

__all__ = ["BUSY_PAUSE", "WINDOW", "Download"]

log = logging.getLogger("tidings.blobs")

#: Ranges asked for at once from one holder.
WINDOW = 2
#: A holder that answers ``busy`` (its other requests first) is asked again after a pause, a few times.
BUSY_PAUSE = 0.2
BUSY_TRIES = 20
_PICTURE_FAILURES = {"not_a_picture", "image_too_large", "bad_image"}


class _HolderFailed(TidingsError):
    """One holder failed a download (it ended, refused, or was too slow): the next one is asked."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason, code=code)
        self.reason = reason


class Download:
    """The transfer of one wanted blob (see the module docstring)."""

    def __init__(self, fetcher: Any, want: Want, conn: Any) -> None:
        """``fetcher``: the node's ``blob_fetch.Fetcher``, whose holders, routes and failures it uses."""
        self.fetcher = fetcher
        self.want = want
        self.part: PartialBlob | None = None
        self.contributors: set[str] = set()
        self.received = 0
        #: the holder this download is fetching from now (``conn`` first; None once it ended)
        self.conn: Any = conn
        self._outstanding: list[int] = []
        self._failure: _HolderFailed | None = None
        self._event = trio.Event()

    @property
    def blob(self) -> BlobId:
        return BlobId(self.want.blob)

    async def run(self) -> None:
        fetcher = self.fetcher
        store = fetcher.service.store
        assert store is not None
        tried: set[int] = set()
        busy = 0
        conn = self.conn
        if self.want.size is None:  # a preview or a blob asked for by id: the size the holder gave
            self.want = dataclasses.replace(self.want, size=fetcher.holders[self.want.blob][id(conn)])
        size = self.want.size
        assert size is not None
        try:
            self.part = part = await trio.to_thread.run_sync(PartialBlob, store, self.blob, size)
        except BlobError as exc:
            await fetcher.failed(self.want, exc.code, exc.message)
            return
        try:
            if part.offset:
                log.info("resuming blob %s at byte %d of %d", self.blob, part.offset, size)
            while part.offset < size and part.state == "OPEN":
                if conn is None:
                    await fetcher.failed(
                        self.want,
                        "not_found",
                        f"no connected peer has the rest ({part.offset} of {size} bytes here)",
                    )
                    return
                try:
                    await self._from(conn, size)
                except _HolderFailed as failure:
                    log.info(
                        "blob %s from %s: %s (%s)", self.blob, conn.address, failure.reason, failure.code
                    )
                    if failure.code == "busy" and busy < BUSY_TRIES:  # its other requests first
                        busy += 1
                        await trio.sleep(BUSY_PAUSE)
                        continue
                    tried.add(id(conn))
                    conn = self.conn = fetcher.holder(self.want, tried)
            await self._finish(store, part)
        finally:
            self.conn = None
            part.close()

    async def _finish(self, store: BlobStore, part: PartialBlob) -> None:
        fetcher = self.fetcher
        if part.state != "OPEN":
            await fetcher.failed(self.want, "io", "the partial file could not be written")
            return
        try:
            await trio.to_thread.run_sync(part.finish, _checker(self.want.mime))
        except (BlobError, MediaError) as exc:
            await self._refused(exc)
            return
        await fetcher.node.db.call(_record, store, self.want.blob, part.size)
        log.info("fetched blob %s (%d bytes)", self.blob, part.size)
        await fetcher.fetched_blob(self.want)

    async def _refused(self, exc: TidingsError) -> None:
        """The whole bytes are not what the reference names: nothing was kept (module docstring)."""
        node, code = self.fetcher.node, exc.code
        if code == "blob_mismatch" and len(self.contributors) == 1:
            node.penalize(next(iter(self.contributors)), "invalid")
        elif code in _PICTURE_FAILURES:
            for host in self.contributors:
                node.penalize(host, "bad_blob")
        log.warning("blob %s refused from %s: %s", self.blob, sorted(self.contributors), exc.message)
        retry = 86400.0 if code in _PICTURE_FAILURES else None
        await self.fetcher.failed(self.want, code, exc.message, retry=retry)

    async def _from(self, conn: Any, size: int) -> None:
        """Ranges from ``conn`` until the blob is whole; ``_HolderFailed`` when it fails us."""
        part = self.part
        assert part is not None
        fetcher, node = self.fetcher, self.fetcher.node
        self._failure, self._outstanding = None, []
        requests = conn.blobs.requests
        asked = part.offset
        timeout = float(node.limits["blob_range_timeout"])
        try:
            while part.offset < size:
                while len(self._outstanding) < WINDOW and asked < size:
                    get = requests.ask(self.want.blob, asked, min(BLOB_RANGE, size - asked))
                    fetcher.routes[(id(conn), get.request)] = self
                    self._outstanding.append(get.request)
                    await conn.send_event(get)
                    asked += get.length
                await self._wait_range(conn, timeout)
        except BaseException:
            for request in self._outstanding:
                requests.abandon(request)
                fetcher.routes.pop((id(conn), request), None)
            raise

    async def _wait_range(self, conn: Any, timeout: float) -> None:
        """Until the first range in flight is whole (or the holder fails)."""
        first = self._outstanding[0]
        deadline = trio.current_time() + timeout
        while first in self._outstanding:
            with trio.move_on_at(min(deadline, trio.current_time() + 0.5)):
                await self._event.wait()
            self._event = trio.Event()
            if self._failure is not None:
                raise self._failure
            if conn.done.is_set() or conn.rep.state != "ACTIVE":
                raise _HolderFailed("interrupted", "the connection ended")
            if trio.current_time() >= deadline and first in self._outstanding:
                self.fetcher.node.penalize(conn.host, "slow_blob")
                raise _HolderFailed("slow", f"a range took over {timeout:g} s")

    # -- what the connection hands over ----------------------------------------------------------------
    def on_data(self, conn: Any, got: Received) -> None:
        part = self.part
        if conn is not self.conn or part is None or self._failure is not None:
            return
        if got.offset != part.offset:
            node = self.fetcher.node
            node.penalize(conn.host, "invalid")
            self._fail(_HolderFailed("bad_order", f"data at byte {got.offset}, expected {part.offset}"))
            return
        try:
            part.write(got.data)
        except BlobError as exc:
            self._fail(_HolderFailed(exc.code, exc.message))
            return
        self.contributors.add(conn.host)
        self.received += len(got.data)
        if got.done:
            self._outstanding.remove(got.request)
            self.fetcher.routes.pop((id(conn), got.request), None)
            self._event.set()

    def on_refused(self, conn: Any, request: int, code: str, reason: str) -> None:
        if conn is not self.conn:
            return
        if request in self._outstanding:
            self._outstanding.remove(request)
        self.fetcher.routes.pop((id(conn), request), None)
        if code == "not_found":
            self.fetcher.holders.get(self.want.blob, {}).pop(id(conn), None)
        self._fail(_HolderFailed(code, f"refused: {reason}"))

    def _fail(self, failure: _HolderFailed) -> None:
        if self._failure is None:
            self._failure = failure
        self._event.set()

    def progress(self) -> dict[str, Any]:
        part = self.part
        return {
            "blob": str(self.blob),
            "size": self.want.size,
            "have": 0 if part is None else part.offset,
            "from": None if self.conn is None else self.conn.address,
        }


def _checker(mime: str | None) -> Callable[[Path], None] | None:
    """The check a blob of ``mime`` passes before it is kept: pictures are checked (``image/*``, a
    preview: any of the four kinds), files are not."""
    if mime == "image/*" or mime in IMAGE_MIMES.values():
        return functools.partial(_check_picture, mime=mime)
    return None


def _check_picture(path: Path, mime: str) -> None:
    if mime == "image/*":
        mime = picture_mime(path) or "image/*"
    inspect_picture(path, mime)


def _record(store: Any, blobs: BlobStore, blob: bytes, size: int) -> None:
    blobs._record(BlobId(blob), size, pinned=False)
