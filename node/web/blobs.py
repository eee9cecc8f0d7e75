"""Pictures and files on the web page: a blob's bytes, uploads to attach, attachments in the JSON.

Issue 18 item 6; spec/protocol.md §8.5. Theory of operation:

- ``GET /api/blobs/&ID`` (``open_answer`` then ``send_answer``) serves a blob held here, under the same
  token and same-origin rules as the rest of the API (node/web/auth.py). It is served as a picture,
  with its ``Content-Type``, only when (1) a shown post or profile stored here names it with one of the
  four picture types, or as a preview (storage/blob_refs.py ``blob_mimes``), and (2) its file is that
  picture format with no more pixels than the bomb limit (``media.inspect_picture``, through
  node/web/pictures.py). Anything else (a file, an SVG or HTML posing as ``image/png``, a bomb, a blob
  nobody here names) is ``application/octet-stream`` with ``Content-Disposition: attachment``: a
  download, never rendered. Every answer has ``nosniff`` and a policy that runs and loads nothing
  (node/web/responses.py ``BLOB_CSP``). The file is streamed in 64 KiB chunks read in a worker thread
  and hashed on the way; a file that no longer matches its id is cut off before its last byte. An id
  that is malformed is 400 ``bad_id``; a blob not held here 404 ``not_found``.
- ``POST /api/blobs`` (``upload``) takes one file as the raw body (``application/octet-stream``: a
  type no other site can make a browser send without a preflight, which is never answered). A
  ``Content-Length`` over ``max_blob`` is refused with 413 before the body is read; a body without
  one is counted and refused as soon as it passes the limit. The body is spooled to a private file
  under ``HOME/web-uploads`` (never held whole in memory while it arrives), then prepared as the CLI
  does (node/media.py: a picture re-encoded without its metadata, with a preview; anything else an
  opaque file) and stored as pinned blobs (``actions.keep_prepared``). The answer is the attachment
  to send back with the post (``attachment_json``).
- ``refs_from_json`` turns the attachments a post request sends back into blob references, believing
  nothing it is told: the blob must be held here, its size is the file's, a picture type must be what
  the file is (with its width and height), a preview must be a held WebP picture.
- ``with_attachments`` adds ``attachments`` to posts read by the API and ``profile_json`` a profile's
  ``avatar`` and ``banner`` (when it has them): each reference with its text ids and whether the blob (``held``) and its
  preview (``preview_held``) are here, so the page shows the picture, else its preview, else a
  placeholder with the alt text.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import trio
from tidings.node import actions
from tidings.node.media import IMAGE_MIMES, OPAQUE_MIME, PREVIEW_MAX_BYTES, MediaError
from tidings.node.web.responses import BLOB_CSP, Receive, Send, body_chunks, security_headers
from tidings.node.web.routes import ApiError
from tidings.protocol import BlobId, BlobRef, InvalidContent, ProtocolError
from tidings.protocol.blobs import MAX_ATTACHMENTS, BlobHasher, attachments_from_value
from tidings.storage import blob_wants
from tidings.storage.blob_refs import PREVIEW_MIME, blob_mimes, profile_refs
from tidings.storage.blob_wants import Want
from tidings.storage.blobs import BlobError
from tidings.storage.errors import NotFound
from tidings.storage.files import make_private_dir

if TYPE_CHECKING:
    from tidings.node.web.context import WebContext
    from tidings.storage.blobs import BlobStore
    from tidings.storage.store import Store

__all__ = [
    "BLOB_PREFIX",
    "UPLOAD_PATH",
    "UPLOAD_TYPE",
    "BlobAnswer",
    "attachment_json",
    "clear_uploads",
    "open_answer",
    "profile_json",
    "refs_from_json",
    "send_answer",
    "upload",
    "with_attachments",
]

log = logging.getLogger("tidings.web")


BLOB_PREFIX = "/api/blobs/"
UPLOAD_PATH = "/api/blobs"
UPLOAD_TYPE = "application/octet-stream"
UPLOADS = "web-uploads"
CHUNK = 64 * 1024
#: The keys of an attachment in the API's JSON (``attachment_json``); a post request may send them back.
ATTACHMENT_KEYS = ("blob", "size", "mime", "width", "height", "alt", "preview", "held", "preview_held")
_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/gif": "gif"}
_PICTURE_TYPES = frozenset(IMAGE_MIMES.values())


# -- serving ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class BlobAnswer:
    """A blob about to be served: its open file, its size and the type it is served as."""

    blob: BlobId
    file: BinaryIO = field(repr=False)
    size: int
    mime: str  # one of the four picture types, checked, or OPAQUE_MIME

    @property
    def picture(self) -> bool:
        return self.mime != OPAQUE_MIME


def _blob_id(text: Any, what: str) -> BlobId:
    if not isinstance(text, str):
        raise ApiError(f"{what} must be a blob id (& + 52 base32 characters)", code="bad_id")
    try:
        return BlobId.parse(text.strip())
    except ProtocolError as exc:
        raise ApiError(f"{what} {text!r} is not a blob id: {exc.message}", code="bad_id") from None


async def _shown_type(ctx: WebContext, blob: BlobId, path: Path, mimes: set[str]) -> str:
    """The picture type ``blob`` is served as, or OPAQUE_MIME (the module docstring, points 1 and 2)."""
    known = ctx.pictures.known(blob.hash)
    if known is not None:
        return known
    for mime in sorted(mimes & _PICTURE_TYPES):
        try:
            await ctx.pictures.inspect(blob.hash, path, mime)
        except MediaError as exc:
            log.info("web: blob %s named %s is served as a file: %s", blob, mime, exc.message)
            continue
        return mime
    return OPAQUE_MIME


async def open_answer(ctx: WebContext, path: str) -> BlobAnswer:
    """The blob ``GET /api/blobs/&ID`` asks for, opened and typed (ApiError 400, NotFound 404)."""
    blob = _blob_id(path.removeprefix(BLOB_PREFIX), "the path")
    blobs = await ctx.blobs()

    def look(store: Store) -> tuple[set[str], BinaryIO]:
        mimes = blob_mimes(store, blob.hash)
        try:
            return mimes, blobs.open_blob(blob)  # open_blob touches its last use
        except NotFound:
            if mimes:  # named by a shown entry: fetch it from peers (spec §12.12), ask again later
                mime = next(iter(mimes)) if len(mimes) == 1 else None
                want = Want(blob.hash, None, blobs.max_blob, mime, None)
                blob_wants.add_wants(store, [want], ctx.now())
            raise

    mimes, file = await ctx.node.db.call(look)
    try:
        size = os.fstat(file.fileno()).st_size
        mime = await _shown_type(ctx, blob, blobs.path_of(blob), mimes)
    except BaseException:
        file.close()
        raise
    return BlobAnswer(blob=blob, file=file, size=size, mime=mime)


def _answer_headers(answer: BlobAnswer) -> list[tuple[bytes, bytes]]:
    name = str(answer.blob).removeprefix("&")  # base32: nothing to quote
    if answer.picture:
        # the bytes of an id never change; a private cache may keep a picture (a file is never cached)
        disposition = f'inline; filename="{name}.{_EXTENSIONS[answer.mime]}"'
        cache = "private, max-age=31536000, immutable"
    else:
        disposition, cache = f'attachment; filename="{name}.bin"', "no-store"
    return [
        (b"content-type", answer.mime.encode()),
        (b"content-length", str(answer.size).encode()),
        (b"content-disposition", disposition.encode()),
        (b"cache-control", cache.encode()),
        *security_headers(BLOB_CSP),
    ]


async def send_answer(answer: BlobAnswer, send: Send, *, head: bool = False) -> None:
    """Stream the blob (its headers only for HEAD), checking its hash on the way, and close its file.

    A file that turns out not to be its blob is cut off before the end (the client sees a broken
    answer, never a complete wrong one) and reported in the log.
    """
    try:
        await send({"type": "http.response.start", "status": 200, "headers": _answer_headers(answer)})
        if head:
            await send({"type": "http.response.body", "body": b""})
            return
        hasher = BlobHasher()
        while chunk := await trio.to_thread.run_sync(answer.file.read, CHUNK):
            hasher.update(chunk)
            if hasher.size > answer.size:
                break
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if hasher.size != answer.size or hasher.blob_id() != answer.blob:
            log.error("web: the file of blob %s does not hash to its id; not served whole", answer.blob)
            raise BlobError(f"blob {answer.blob} is damaged here", code="blob_corrupt")  # cuts the answer
        await send({"type": "http.response.body", "body": b""})
    finally:
        answer.file.close()


# -- uploading --------------------------------------------------------------------------------------------
def clear_uploads(home_path: Path) -> int:
    """Remove the spooled uploads a stopped node left behind (``HOME/web-uploads``); how many."""
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for leftover in (home_path / UPLOADS).glob("*.part"):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
                removed += 1
    return removed


def _too_large(limit: int) -> ApiError:
    return ApiError(f"a file is at most {limit} bytes (max_blob)", status=413, code="too_large")


async def _spool(receive: Receive, out: Any, limit: int, deadline: float) -> int:
    """Copy the request body into ``out`` (an async file); its size. 413 past ``limit``, 408 late."""
    size = 0
    with trio.move_on_at(deadline):
        async for chunk in body_chunks(receive, limit, lambda: _too_large(limit)):
            size += len(chunk)
            await out.write(chunk)
        return size
    raise ApiError("the file took too long to arrive", status=408, code="slow_body")


async def upload(
    ctx: WebContext, headers: Mapping[str, str], receive: Receive, *, body_timeout: float
) -> dict[str, Any]:
    """``POST /api/blobs``: store the body as a file ready to attach; its ``attachment_json``.

    The body may take ``body_timeout`` seconds, and as long again for each MiB the limit allows.
    """
    blobs = await ctx.blobs()
    limit = blobs.max_blob
    declared = headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise _too_large(limit)  # said before a byte of the body is read
    folder = make_private_dir(ctx.home.path / UPLOADS)
    fd, name = tempfile.mkstemp(dir=folder, suffix=".part")
    spooled = Path(name)
    try:
        deadline = trio.current_time() + body_timeout * (1 + limit / (1 << 20))
        async with trio.wrap_file(os.fdopen(fd, "wb")) as out:
            size = await _spool(receive, out, limit, deadline)
        if size == 0:
            raise ApiError("send the file as the request body", code="empty")
        prepared = await ctx.pictures.prepare(spooled, max_blob=limit)
        ref = await ctx.node.db.call(lambda store: actions.keep_prepared(blobs, prepared))
    finally:
        spooled.unlink(missing_ok=True)
    return attachment_json(blobs, ref)


# -- attachments in and out -------------------------------------------------------------------------------
def attachment_json(blobs: BlobStore, ref: BlobRef) -> dict[str, Any]:
    """A blob reference as the API shows it: its fields with text ids, and whether its blob and its
    preview are held here."""
    preview = ref.preview_id
    return {
        "blob": str(ref.id),
        "size": ref.size,
        "mime": ref.mime,
        "width": ref.width,
        "height": ref.height,
        "alt": ref.alt,
        "preview": None if preview is None else str(preview),
        "held": blobs.has(ref.id),
        "preview_held": preview is not None and blobs.has(preview),
    }


def _refs_of(content: Any) -> tuple[BlobRef, ...]:
    """The attachments of a post's content as the store shows it (text ids); none if they break §8.5."""
    items = content.get("attachments") if isinstance(content, dict) else None
    if not items:
        return ()
    try:
        raw = [
            {
                **item,
                **{k: BlobId.parse(item[k]).hash for k in ("blob", "preview") if item.get(k) is not None},
            }
            for item in items
        ]
        return attachments_from_value(raw)
    except (ProtocolError, TypeError, AttributeError):
        return ()


def with_attachments(blobs: BlobStore, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add ``attachments`` (a list of ``attachment_json``) to each post among ``rows`` (on the
    database thread: it looks at files, no more)."""
    for row in rows:
        if row.get("type") == "post":
            row["attachments"] = [attachment_json(blobs, ref) for ref in _refs_of(row.get("content"))]
    return rows


def profile_json(store: Store, blobs: BlobStore, profile: dict[str, Any], feed: bytes) -> dict[str, Any]:
    """``profile`` with ``avatar`` and ``banner`` where the feed's profile shows them now (spec
    §8.2.8), as ``attachment_json`` (a profile without pictures keeps the fields it had)."""
    for key, ref in profile_refs(store, feed).items():
        profile[key] = attachment_json(blobs, ref)
    return profile


async def _checked_ref(ctx: WebContext, blobs: BlobStore, item: Any, what: str) -> BlobRef:
    if not isinstance(item, dict):
        raise ApiError(f"{what} must be an object", code="bad_attachment")
    unknown = sorted(set(item) - set(ATTACHMENT_KEYS))
    if unknown:
        raise ApiError(f"{what} has no key {unknown[0]!r}", code="bad_attachment")
    blob = _blob_id(item.get("blob"), f"{what}: blob")
    size = blobs.size(blob)
    if size is None:
        raise NotFound(f"{what}: no blob {blob} here: upload the file first (POST {UPLOAD_PATH})")
    mime = item.get("mime") or OPAQUE_MIME
    if not isinstance(mime, str):
        raise ApiError(f"{what}: mime must be text", code="bad_attachment")
    width = height = preview = None
    if mime in _PICTURE_TYPES:
        try:
            width, height = await ctx.pictures.inspect(blob.hash, blobs.path_of(blob), mime)
            if item.get("preview") is not None:
                preview = _blob_id(item["preview"], f"{what}: preview")
                small = blobs.size(preview)
                if small is None or small > PREVIEW_MAX_BYTES:
                    raise NotFound(f"{what}: no preview {preview} of at most {PREVIEW_MAX_BYTES} bytes here")
                await ctx.pictures.inspect(preview.hash, blobs.path_of(preview), PREVIEW_MIME)
        except MediaError as exc:
            raise ApiError(f"{what}: {exc.message}", code="bad_attachment") from None
    elif mime != OPAQUE_MIME:
        raise ApiError(
            f"{what}: mime is a picture type or {OPAQUE_MIME}, not {mime!r}", code="bad_attachment"
        )
    told = {"size": size, "width": width, "height": height, "preview": preview and str(preview)}
    for key, value in told.items():
        given = item.get(key)
        if given is not None and given != value:
            raise ApiError(f"{what}: {key} is {value}, not {given!r}", code="bad_attachment")
    alt = item.get("alt")
    if alt is not None and not isinstance(alt, str):
        raise ApiError(f"{what}: alt must be text", code="bad_attachment")
    try:
        return BlobRef(
            blob=blob.hash,
            size=size,
            mime=mime,
            width=width,
            height=height,
            alt=alt.strip() or None if alt else None,
            preview=None if preview is None else preview.hash,
        )
    except InvalidContent as exc:
        raise ApiError(f"{what}: {exc.message}", code="bad_attachment") from None


async def refs_from_json(ctx: WebContext, items: list[Any], *, what: str = "attachment") -> list[BlobRef]:
    """The blob references of ``items`` (objects as ``attachment_json`` gives them, with an ``alt``
    of the user's), each checked against the blob held here (the module docstring)."""
    if len(items) > MAX_ATTACHMENTS:
        raise ApiError(f"a post carries at most {MAX_ATTACHMENTS} attachments", code="bad_attachment")
    blobs = await ctx.blobs()
    return [await _checked_ref(ctx, blobs, item, f"{what} {i}") for i, item in enumerate(items, 1)]
