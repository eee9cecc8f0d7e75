"""The pictures and files of web feed items, fetched into blobs and attached to their posts (spec §14.4).

Theory of operation. A poll of a source (node/bridges/rss.py) hands the items it is about to import
here, with the media each names (node/bridges/enclosures.py). Items are served newest first (the ones
a reader sees first get the budget), each item's media in the feed's order, at most
``MAX_ATTACHMENTS`` (4, spec §8.5) tried per item. For each one:

1. *skip early* when the poll's budget is spent (``media_bytes`` bytes, ``media_fetches`` fetches and
   ``media_time`` seconds for all media of one poll: a hostile feed of thousands of enclosures costs
   one poll's budget, not the disk), when the feed declares a length over the cap, or declares a
   non-picture while files are off (``max_file`` 0);
2. *fetch* with the bridge's own fetcher (node/bridges/webfetch.py) and the source's outbound policy
   (spec §14.6: an internal address only for the followed feed's own host and port, so a feed cannot
   point the node at its LAN), within the fetch ``timeout`` and ``min_rate``, at most
   ``min(max_blob, budget left)`` bytes: a ``Content-Length`` over it is refused before the body, and
   the body is counted as it arrives;
3. *decide by content*, from the first bytes, never from the declared or served type: a body with a
   picture signature (JPEG, PNG, WebP, GIF) is gathered in memory (at most ``max_blob``: Pillow
   decodes it whole anyway) and goes through ``node/media.prepare`` on a worker thread, exactly like
   ``tidings post --attach``: re-encoded without its metadata (EXIF, GPS, XMP, comments), refused when
   it is a decompression bomb or broken, with a WebP preview as a blob of its own. Anything else is an
   opaque file (``application/octet-stream``), streamed straight into a ``BlobWriter`` (never held
   whole) and kept only within ``max_file`` bytes;
4. *skip with a reason* on any failure (an HTTP error, too large, too slow, a refused address, a bomb,
   a broken picture): the reason is logged and returned, the item's URL is added to the post's text
   (``enclosures.with_links``) and the post comes in all the same. A writer that fails or is cut off
   removes its temporary file: nothing partial stays in ``HOME/blobs/tmp``.

**Pinned.** The blobs of a bridge feed are pinned, like the user's own attachments: a bridge feed is a
local feed, signed by a key this node holds, and no other node can have its blobs but by fetching them
from this one, so evicting one would lose it for everyone while its post lives. Pinning also covers
the moment between storing a blob and appending the post that names it. They stay when the source is
unfollowed (its imported posts stay too); ``tidings blob ls`` shows them as pinned.

Blobs are written through ``BridgeBlobs`` (node/bridges/blob_access.py): a store connection of their
own, one worker thread at a time, so the node's database thread never waits for file IO.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import trio
from tidings.protocol.blobs import MAX_ALT, MAX_ATTACHMENTS, OPAQUE_MIME, BlobRef
from tidings.protocol.errors import TidingsError

if TYPE_CHECKING:
    from tidings.node.bridges.blob_access import BridgeBlobs
    from tidings.node.bridges.enclosures import MediaLink
    from tidings.node.bridges.feeds import FeedItem
    from tidings.node.bridges.outbound import OutboundPolicy
    from tidings.node.bridges.webfetch import FetchLimits
    from tidings.protocol import Post
    from tidings.storage.blobs import BlobWriter

__all__ = ["Carried", "MediaConfig", "bridged_post", "fetch_media"]

log = logging.getLogger("tidings.bridges.rss")

USER_AGENT = "tidings-rss-bridge/0.1"
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a")  # node/media.py decides


def _picture_head(head: bytes) -> bool:
    """Whether ``head`` starts like one of the four pictures ``node/media.prepare`` accepts (it checks
    again: this only chooses between gathering the body and streaming it to a file)."""
    return head.startswith(_SIGNATURES) or (head.startswith(b"RIFF") and head[8:12] == b"WEBP")


@dataclass(frozen=True, kw_only=True)
class MediaConfig:
    """The rss bridge's media settings (spec §14.4)."""

    budget: int  # bytes fetched per poll of a source, all media together; 0: none
    fetches: int  # media fetched per poll of a source
    max_file: int  # the largest non-picture kept, as an opaque file; 0: none
    seconds: float  # for all media of one poll
    limits: FetchLimits  # timeout and min_rate of each fetch; max_size is set per fetch


@dataclass
class Carried:
    """What came of one item's media: the references to attach, and the URLs skipped with why."""

    attachments: list[BlobRef] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


class _Skip(TidingsError):
    """One medium is not attached; ``reason`` says why (it goes to the log and the poll's outcome)."""

    code = "media_skipped"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Sink:
    """Receives one media body (webfetch ``BodySink``): a picture gathered, anything else streamed to a
    ``BlobWriter`` within ``max_file``. ``close`` aborts a writer not committed."""

    def __init__(self, media: BridgeBlobs, url: str, max_file: int) -> None:
        self.media = media
        self.url = url
        self.max_file = max_file
        self.declared: int | None = None
        self.head = bytearray()
        self.picture: bytearray | None = None
        self.writer: BlobWriter | None = None
        self.received = 0
        self.stored = 0  # bytes stored: the blob, and a picture's preview

    async def begin(self, headers: dict[str, str]) -> None:
        declared = headers.get("content-length", "").strip()
        coded = headers.get("content-encoding", "identity").strip().lower() not in ("", "identity")
        self.declared = int(declared) if declared.isdigit() and not coded else None

    async def write(self, data: bytes) -> None:
        self.received += len(data)
        if self.picture is not None:
            self.picture += data
        elif self.writer is not None:
            await self._to_file(data)
        else:
            self.head += data
            if len(self.head) >= 12:
                await self._decide()

    async def _decide(self) -> None:
        head, self.head = bytes(self.head), bytearray()
        if _picture_head(head):
            self.picture = bytearray(head)
            return
        if self.max_file <= 0:
            raise _Skip("not a picture (JPEG, PNG, WebP or GIF), and files are off (max_file 0)")
        if self.declared is not None and self.declared > self.max_file:
            raise _Skip(f"a file of {self.declared} bytes, over max_file ({self.max_file})")
        self.writer = await self.media.run(self.media.blobs.writer, pinned=True)
        await self._to_file(head)

    async def _to_file(self, data: bytes) -> None:
        assert self.writer is not None
        if self.writer.size + len(data) > self.max_file:
            raise _Skip(f"a file of more than {self.max_file} bytes (max_file)")
        await self.media.run(self.writer.write, data)

    async def finish(self, *, picture_alt: str, file_alt: str) -> BlobRef:
        """The blob reference of what arrived (stored, pinned); ``_Skip`` when it cannot be kept."""
        if self.picture is None and self.writer is None:
            if not self.head:
                raise _Skip("an empty body")
            await self._decide()
        if self.writer is not None:
            blob = await self.media.run(self.writer.commit)
            self.stored = self.writer.size
            return BlobRef(blob=blob.hash, size=self.writer.size, mime=OPAQUE_MIME, alt=file_alt)
        assert self.picture is not None
        return await self._prepared(bytes(self.picture), picture_alt)

    async def _prepared(self, data: bytes, alt: str) -> BlobRef:
        from tidings.node.media import MediaError, prepare

        self.picture = None
        blobs = self.media.blobs
        try:
            ready = await self.media.run(prepare, data, max_blob=blobs.max_blob)
        except MediaError as exc:
            raise _Skip(f"{exc} ({exc.code})") from None
        if ready.kind != "image":
            raise _Skip("not a picture after all")  # the signatures above are prepare's own
        blob = await self.media.run(blobs.put_bytes, ready.data, pinned=True)
        preview = await self.media.run(blobs.put_bytes, ready.preview, pinned=True)
        self.stored = len(ready.data) + len(ready.preview or b"")
        return BlobRef(
            blob=blob.hash, size=len(ready.data), mime=ready.mime, width=ready.width, height=ready.height,
            alt=alt, preview=preview.hash,
        )  # fmt: skip

    def close(self) -> None:
        self.picture = None
        if self.writer is not None:
            self.writer.abort()  # removes its temporary file unless it was committed


class _Budget:
    """What is left of one poll's media budget (spec §14.4)."""

    def __init__(self, config: MediaConfig) -> None:
        self.bytes = config.budget
        self.fetches = config.fetches
        self.deadline = trio.current_time() + config.seconds

    def spent(self) -> str | None:
        if self.bytes <= 0:
            return "this poll's media budget (media_bytes) is spent"
        if self.fetches <= 0:
            return "this poll's media fetches (media_fetches) are spent"
        if trio.current_time() >= self.deadline:
            return "this poll's media time (media_time) is over"
        return None


def _alt(link: MediaLink, picture: bool, feed_title: str) -> str:
    alt = link.alt or f"{'image' if picture else 'file'} from {feed_title}"
    data = alt.encode("utf-8")
    return alt if len(data) <= MAX_ALT else data[: MAX_ALT - 3].decode("utf-8", "ignore") + "…"


async def _one(
    link: MediaLink,
    *,
    media: BridgeBlobs,
    config: MediaConfig,
    policy: OutboundPolicy,
    budget: _Budget,
    feed_title: str,
) -> BlobRef:
    """Fetch and store one media link, or raise ``_Skip``."""
    from tidings.node.bridges.webfetch import fetch

    max_blob = media.blobs.max_blob
    if not link.maybe_picture and config.max_file <= 0:
        raise _Skip(f"declared {link.mime}, not a picture, and files are off (max_file 0)")
    declared_cap = max_blob if link.maybe_picture else config.max_file
    if link.length is not None and link.length > declared_cap:
        raise _Skip(f"declared {link.length} bytes, over {declared_cap}")
    cap = min(max_blob, budget.bytes)
    sink = _Sink(media, link.url, config.max_file)
    budget.fetches -= 1
    charged = 0
    try:
        with trio.move_on_at(budget.deadline):
            fetched = await fetch(
                link.url,
                policy=policy,
                limits=replace(config.limits, max_size=cap),
                headers={"user-agent": USER_AGENT, "accept": "image/*, */*;q=0.5"},
                sink=sink,
            )
            charged = max(sink.received, fetched.wire_bytes)
            if fetched.status != 200:
                raise _Skip(f"HTTP {fetched.status}")
            ref = await sink.finish(
                picture_alt=_alt(link, True, feed_title), file_alt=_alt(link, False, feed_title)
            )
            charged = max(charged, sink.stored)  # a re-encoded picture may come out larger
            return ref
        raise _Skip("cut off: this poll's media time (media_time) is over")
    except _Skip:
        raise
    except TidingsError as exc:  # the fetch's (BridgeError), or the blobs' (a full disk: BlobError)
        if exc.code == "too_large" and cap < max_blob:
            budget.bytes = 0  # what is left of the budget is too little for this one: the rest waits
            raise _Skip(f"{exc}, what is left of this poll's media budget (media_bytes)") from None
        raise _Skip(f"{exc} ({exc.code})") from None
    finally:
        budget.bytes -= max(charged, sink.received)
        sink.close()


async def fetch_media(
    items: Sequence[FeedItem],
    *,
    media: BridgeBlobs,
    config: MediaConfig,
    policy: OutboundPolicy,
    feed_title: str,
    source: str = "",
) -> dict[str, Carried]:
    """Fetch and store the media of ``items`` (see the module docstring); item id -> ``Carried``.

    Items without media are left out. ``feed_title`` names the feed in alt texts the feed gives none
    of; ``source`` names it in the log."""
    budget = _Budget(config)
    out: dict[str, Carried] = {}
    for item in reversed(items):  # newest first: the posts seen first get the budget
        if not item.media:
            continue
        carried = out.setdefault(item.id, Carried())
        for n, link in enumerate(item.media):
            why = budget.spent() if n < MAX_ATTACHMENTS else f"a post carries at most {MAX_ATTACHMENTS}"
            if why is None:
                try:
                    ref = await _one(
                        link, media=media, config=config, policy=policy, budget=budget, feed_title=feed_title
                    )
                    carried.attachments.append(ref)
                    continue
                except _Skip as skip:
                    why = skip.reason
            carried.skipped.append((link.url, why))
            log.info("rss: %s: media %s skipped: %s", source, link.url, why)
    return out


def _clipped(ref: BlobRef, limit: int) -> BlobRef:
    if ref.alt is None or len(ref.alt.encode("utf-8")) <= limit:
        return ref
    return replace(ref, alt=ref.alt.encode("utf-8")[: limit - 3].decode("utf-8", "ignore") + "…")


def bridged_post(item: FeedItem, carried: Carried | None, network: str) -> Post:
    """The post of ``item``: its attachments, and in its text the URLs of its media that did not come
    in. A post must fit in a payload (spec §8.3): when a long text, origin and four long alt texts do
    not, the alt texts are shortened, and as a last resort the attachments left as links."""
    from tidings.node.bridges.enclosures import with_links
    from tidings.protocol import MAX_PAYLOAD_SIZE, Post, encode

    skipped = {url for url, _ in carried.skipped} if carried else set()
    attachments = tuple(carried.attachments) if carried else ()
    missing = [m.url for m in item.media if carried is None or m.url in skipped]
    origin = item.origin(network)
    for limit in (MAX_ALT, 120):
        post = Post(
            text=with_links(item.text, missing),
            origin=origin,
            attachments=tuple(_clipped(ref, limit) for ref in attachments),
        )
        if len(encode(post.to_map())) <= MAX_PAYLOAD_SIZE:
            return post
    return Post(text=with_links(item.text, [m.url for m in item.media]), origin=origin)
