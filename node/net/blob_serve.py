"""One connection's blob messages (spec/protocol.md §12.12): answering the peer, and passing what it
sends us to the node's fetcher.

Theory of operation. ``PeerBlobs`` belongs to one ``PeerConnection`` of protocol version 4. The reader
hands it every blob message (``on_event``):

- ``blob_want``: the blobs named that we hold, with their sizes, go back in one ``blob_have`` (one
  query for the lot; the frame rate limit of §12.5 bounds how often).
- ``blob_get``: checked, then queued for the connection's one serving task (``serve``), which sends
  the requests one after another, each whole, in the order they came (§12.12): the data of a request
  is read from the blob's file a chunk at a time, never the whole blob in memory, and the writer's
  bounded queue holds the task back when the peer reads slowly. Before the work is queued it is paid
  for: more than ``MAX_OPEN_REQUESTS`` open requests is ``busy``; bytes sent on this connection before
  are charged to its work budget (§12.8.6) and refused (``overspent``, the score drops) when it is
  short; a blob we do not hold, or a range past its end, is ``not_found`` / ``bad_range``.
- ``blob_have``, ``blob_data``, ``blob_none``: answers to our own asks, checked against our open
  requests by ``BlobRequests`` (data nobody asked for ends the connection, ``bad_message``), then given
  to the fetcher (node/net/blob_fetch.py), which writes the bytes to the blob's partial file.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import trio
from tidings.protocol.blob_transfer import (
    CHUNK,
    MAX_OPEN_REQUESTS,
    BlobData,
    BlobEvent,
    BlobGet,
    BlobHave,
    BlobNone,
    BlobRequests,
    BlobWant,
)
from tidings.protocol.budget import resend_cost
from tidings.protocol.identity import BlobId

__all__ = ["PeerBlobs"]

log = logging.getLogger("tidings.blobs")

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class PeerBlobs:
    """The blob side of one connection (see the module docstring); ``conn`` is its ``PeerConnection``."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.requests = BlobRequests()
        self._send_gets, self._gets = trio.open_memory_channel[BlobGet](MAX_OPEN_REQUESTS)
        self.bytes_served = 0

    @property
    def service(self) -> Any:
        """The node's ``BlobService`` (None while it is not running)."""
        return getattr(self.conn.node, "blobs", None)

    async def on_event(self, event: BlobEvent) -> None:
        """One blob message from the peer."""
        service = self.service
        if isinstance(event, BlobData):
            self.conn.asked_frame()  # bytes we asked for: not a flood (spec §12.5, §12.12)
            got = self.requests.received(event)
            if got is not None and service is not None:
                service.fetcher.on_data(self.conn, got)
        elif isinstance(event, BlobWant):
            held = [] if service is None else await service.held(event.ids)
            await self.conn.send_event(BlobHave(items=held))
        elif isinstance(event, BlobGet):
            await self._on_get(event)
        elif isinstance(event, BlobHave):
            if service is not None:
                service.fetcher.on_have(self.conn, event.items)
        elif isinstance(event, BlobNone):
            blob = self.requests.refused(event)
            if blob is not None and service is not None:
                service.fetcher.on_refused(self.conn, event.request, event.code, event.reason)

    async def _on_get(self, event: BlobGet) -> None:
        if not self.requests.serving(event):
            await self._refuse(event.request, "busy", f"{MAX_OPEN_REQUESTS} requests are open")
            return
        cost = resend_cost(self.requests.resent(event))
        if cost and not self.conn.work.budget.charge(cost):
            self.conn.overspent()
            await self._refuse(event.request, "overspent", "bytes asked for again on this connection")
            return
        self._send_gets.send_nowait(event)  # room: at most MAX_OPEN_REQUESTS are open

    async def _refuse(self, request: int, code: str, reason: str) -> None:
        self.requests.served(request)
        await self.conn.send_event(BlobNone(request=request, code=code, reason=reason))

    async def serve(self) -> None:
        """The connection's serving task: the queued requests, one after another (module docstring)."""
        async for event in self._gets:
            service = self.service
            path = None if service is None else service.store.path_of(BlobId(event.blob))
            try:
                fd = -1 if path is None else os.open(path, os.O_RDONLY | _NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                fd = -1
            if fd < 0:
                await self._refuse(event.request, "not_found", "no such blob here")
                continue
            with open(fd, "rb") as fh:
                size = os.fstat(fd).st_size
                if event.offset + event.length > size:
                    await self._refuse(event.request, "bad_range", f"the blob has {size} bytes")
                    continue
                await self._send_range(fh, event)
            if service is not None:
                service.touch(event.blob)

    async def _send_range(self, fh: Any, event: BlobGet) -> None:
        fh.seek(event.offset)
        offset, end = event.offset, event.offset + event.length
        while offset < end:
            data = fh.read(min(CHUNK, end - offset))
            if not data:  # the file shrank under us (removed and replaced): end the request
                await self._refuse(event.request, "error", "the blob could not be read")
                return
            await self.conn.send_event(BlobData(request=event.request, offset=offset, data=data))
            offset += len(data)
            self.bytes_served += len(data)
        self.requests.served(event.request)
