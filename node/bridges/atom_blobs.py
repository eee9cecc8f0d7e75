"""Atom out's attachments (spec §14.3): each is an entry's ``link rel="enclosure"``, and the running
node serves the blob at that link.

Theory of operation. ``/feeds/@FEED/blobs/&BLOB`` is served only when both hold, else it is a 404 that
says nothing more: a stored, not deleted post of ``FEED`` attaches ``BLOB`` (``storage.blob_refs.
attachment_of``), and the blob is held here. So the feed server serves exactly the files its documents
link to, never any blob a caller can name. The body is streamed from the blob store (checked against its
id as it is read, node/bridges/httpserve.py ``Streamed``), never held whole. Its ``Content-Type`` is the
attachment's ``mime`` only for the four pictures a reader may show (spec §8.5); any other blob is
``application/octet-stream`` with ``Content-Disposition: attachment``, and every answer carries
``X-Content-Type-Options: nosniff`` and a CSP that runs nothing, so a file posing as a picture or a page
is never rendered by a browser that follows the link.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from tidings.protocol.blobs import IMAGE_MIMES, OPAQUE_MIME

if TYPE_CHECKING:
    from tidings.node.bridges.blob_access import BridgeBlobs
    from tidings.node.bridges.httpserve import Response, Streamed
    from tidings.protocol import BlobId
    from tidings.protocol.blobs import BlobRef

__all__ = ["blob_path", "blob_urn", "parse_blob_path", "serve_blob", "served_mime"]

#: the answer's CSP: nothing in it may run or load anything
CSP = "default-src 'none'; sandbox"
NOT_FOUND: Response = (404, "text/plain; charset=utf-8", b"not found\n")


def served_mime(mime: str) -> str:
    """The type an attachment is listed and served as: its ``mime`` for the four pictures (spec §8.5),
    else ``application/octet-stream``."""
    return mime if mime in IMAGE_MIMES else OPAQUE_MIME


def blob_path(feed_text: str, blob_text: str) -> str:
    """Where the feed server serves blob ``&BLOB`` of feed ``@FEED``: ``/feeds/@FEED/blobs/&BLOB``."""
    return f"/feeds/{feed_text}/blobs/{blob_text}"


def blob_urn(blob_text: str) -> str:
    """``urn:tidings:blob:BASE32`` for a blob id ``&BASE32``: an exported document's enclosure links
    (no server to point at)."""
    return "urn:tidings:blob:" + blob_text.lstrip("&")


def parse_blob_path(path: str) -> tuple[bytes, BlobId] | None:
    """``(feed key, blob id)`` of a ``blob_path`` (already percent-decoded), or None."""
    from tidings.protocol import BlobId, FeedId, ProtocolError

    if not path.startswith("/feeds/"):
        return None
    feed_text, sep, blob_text = path[len("/feeds/") :].partition("/blobs/")
    if not sep:
        return None
    try:
        return FeedId.parse(feed_text).key, BlobId.parse(blob_text)
    except ProtocolError:
        return None


class _BlobBody:
    """A held blob read in pieces on ``BridgeBlobs``' worker thread (``httpserve.Body``)."""

    def __init__(self, blobs: BridgeBlobs, pieces: Iterator[bytes], first: bytes) -> None:
        self.blobs = blobs
        self.pieces = pieces
        self.first: bytes | None = first

    async def read(self) -> bytes:
        if self.first is not None:
            first, self.first = self.first, None
            return first
        piece: bytes = await self.blobs.run(next, self.pieces, b"")
        return piece

    async def aclose(self) -> None:
        close: Any = getattr(self.pieces, "close", None)
        if close is not None:
            await self.blobs.run(close)


async def serve_blob(call: Any, blobs: BridgeBlobs, feed: bytes, blob: BlobId) -> Response | Streamed:
    """The answer to ``GET blob_path(feed, blob)`` (see the module docstring). ``call(fn, *args)`` runs
    ``fn(store, *args)`` on the node's database thread."""
    from tidings.node.bridges.httpserve import Streamed
    from tidings.storage.blob_refs import attachment_of
    from tidings.storage.errors import NotFound

    ref: BlobRef | None = await call(attachment_of, feed, blob.hash)
    if ref is None:
        return NOT_FOUND
    size = await blobs.run(blobs.blobs.size, blob)
    if size is None:
        return NOT_FOUND
    pieces = blobs.blobs.read(blob)
    try:
        first = await blobs.run(next, pieces, b"")  # opens the file: a blob gone since is still a 404
    except NotFound:
        return NOT_FOUND
    kind = served_mime(ref.mime)
    headers = [("content-security-policy", CSP)]
    if kind == OPAQUE_MIME:
        headers.append(("content-disposition", f'attachment; filename="{str(blob).lstrip("&")}"'))
    return Streamed(
        status=200, kind=kind, length=size, body=_BlobBody(blobs, pieces, first), headers=tuple(headers)
    )
