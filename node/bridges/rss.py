"""RSS/Atom in (spec §14.4): followed web feeds become bridge feeds, one per source.

``tidings bridge rss follow URL`` (cli/commands_bridge_rss.py) records the source and appends a Follow of its bridge feed to the
user's log (exactly like ``tidings follow``), so the timeline shows it like any followed feed. Items
are imported once (deduplicated by guid/id) by ``tidings bridge rss poll`` or, inside ``tidings run``,
by a service that polls each source every ``interval`` seconds with conditional requests
(ETag/Last-Modified) and backs off after failures, never holding up the node.

Theory of operation of one poll (``poll_source``), every step bounded (spec §14.4, §14.6):

1. *claim*: the source's next poll is first set as if this one failed, so a poll that is cancelled
   or dies is not retried before its backoff: a source is fetched at most once per round;
2. *fetch* (node/bridges/webfetch.py): within ``timeout`` seconds and ``min_rate`` bytes/s, at most
   ``max_size`` bytes on the wire and decoded, every connection checked by the outbound policy
   (node/bridges/outbound.py), and read only until the start of item ``max_items + 1``;
3. *parse* on a worker thread, one document at a time per process part (``parse_limiter``), of the
   first ``max_items`` items only;
4. *media*: the pictures and files named by the items not imported before are fetched into blobs
   and attached to their posts, within the poll's media budget (node/bridges/rss_media.py); one that
   fails is skipped, its URL kept in the post's text, and the post comes in all the same;
5. *import* in batches of ``IMPORT_BATCH`` items, each one call to the database, so the web API and
   gossip get the database thread between batches;
6. *record* the outcome: success sets the next poll ``interval`` seconds on; any failure (a timeout,
   a cap, a refused address, a bad document) counts against the source and backs it off.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import trio
from tidings.node.bridges.base import (
    Backoff,
    Bridge,
    BridgeContext,
    BridgeError,
    Setting,
    parse_count,
    parse_seconds,
)
from tidings.node.bridges.feeds import ItemCounter, parse_feed
from tidings.node.bridges.rss_media import bridged_post
from tidings.node.clock import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:
    from tidings.node.bridges.blob_access import BridgeBlobs
    from tidings.node.bridges.feeds import FeedItem
    from tidings.node.bridges.outbound import Resolver
    from tidings.node.bridges.rss_media import Carried, MediaConfig
    from tidings.node.bridges.webfetch import FetchLimits
    from tidings.node.home import Home
    from tidings.node.net.node import Node

__all__ = [
    "Call",
    "PollOutcome",
    "RssBridge",
    "RssConfig",
    "RssService",
    "check_url",
    "poll_source",
    "rss_config",
]

log = logging.getLogger("tidings.bridges.rss")

NAME = "rss"
USER_AGENT = "tidings-rss-bridge/0.1"
IMPORT_BATCH = 10  # items appended per database call (spec §14.4)
MAX_SIZE_LIMIT = 64 * 1024 * 1024  # the largest ``max_size`` a user may set
MAX_ITEMS_LIMIT = 10_000  # the largest ``max_items`` a user may set
MEDIA_BYTES_LIMIT = 1024 * 1024 * 1024  # the largest ``media_bytes`` a user may set

#: ``await call(fn, *args, **kwargs)`` runs ``fn(store, *args, **kwargs)``: the node's database thread, or the CLI's store.
Call = Callable[..., Awaitable[Any]]


def check_url(url: str) -> str:
    """An http(s) URL with a host, or ``BridgeError(code="bad_url")``."""
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise BridgeError(f"not a feed URL: {url!r} ({exc})", code="bad_url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BridgeError(f"not an http(s) URL: {url!r}", code="bad_url")
    return url


@dataclass
class PollOutcome:
    source: str
    status: str  # "new", "unchanged" (304), "ok" (nothing new), "error"
    new: int = 0
    error: str | None = None
    media: int = 0  # attachments stored
    skipped: list[tuple[str, str]] = field(default_factory=list)  # media (URL, why) not attached

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "status": self.status,
            "new": self.new,
            "error": self.error,
            "media": self.media,
            "skipped": [{"url": url, "reason": why} for url, why in self.skipped],
        }


@dataclass(frozen=True, kw_only=True)
class RssConfig:
    """What the rss bridge's settings say (spec §14.4): when to poll, and the bounds of one poll."""

    interval: float
    backoff: Backoff
    limits: FetchLimits
    max_items: int
    media: MediaConfig


def rss_config(settings: dict[str, str]) -> RssConfig:
    """The ``RssConfig`` that ``settings`` (the bridge's stored settings over its defaults) give."""
    from tidings.node.bridges.rss_media import MediaConfig
    from tidings.node.bridges.webfetch import FetchLimits

    defaults = {s.name: s.default for s in RssBridge.settings}
    value = {**defaults, **settings}
    interval = float(value["interval"])
    retry = float(value["retry"])
    limits = FetchLimits(
        timeout=float(value["timeout"]), max_size=int(value["max_size"]), min_rate=float(value["min_rate"])
    )
    backoff = Backoff(interval=interval, base=retry, cap=max(interval, retry) * 8)
    media = MediaConfig(
        budget=int(value["media_bytes"]), fetches=int(value["media_fetches"]),
        max_file=int(value["max_file"]), seconds=float(value["media_time"]), limits=limits,
    )  # fmt: skip
    return RssConfig(
        interval=interval, backoff=backoff, limits=limits, max_items=int(value["max_items"]), media=media
    )


async def _fetch(src: dict[str, Any], config: RssConfig, resolve: Resolver | None) -> Any:
    from tidings.node.bridges.outbound import OutboundPolicy
    from tidings.node.bridges.webfetch import fetch

    url = src["source"]
    headers = {"user-agent": USER_AGENT, "accept": "application/rss+xml, application/atom+xml, */*;q=0.5"}
    if src.get("etag"):
        headers["if-none-match"] = src["etag"]
    if src.get("last_modified"):
        headers["if-modified-since"] = src["last_modified"]
    fetched = await fetch(
        url,
        policy=OutboundPolicy.for_url(url, resolve=resolve),
        limits=config.limits,
        headers=headers,
        enough=ItemCounter(config.max_items).enough,
    )
    if fetched.status not in (200, 304):
        raise BridgeError(f"{url}: HTTP {fetched.status}", code="http_error")
    return fetched


async def poll_source(
    call: Call,
    home: Home,
    src: dict[str, Any],
    *,
    config: RssConfig,
    clock: Clock = SYSTEM_CLOCK,
    parse_limiter: trio.CapacityLimiter | None = None,
    resolve: Resolver | None = None,
    media: BridgeBlobs | None = None,
) -> PollOutcome:
    """Poll one source once and record the outcome; failures are recorded, not raised (module docstring).

    ``parse_limiter`` bounds how many documents are parsed at once (default: one for this call);
    ``resolve`` replaces the system's DNS resolver (tests); ``media``: where the items' pictures and
    files go (None: they are not fetched, their URLs are added to the text).
    """
    from tidings.node.bridges.keys import feed_key
    from tidings.protocol import Profile
    from tidings.storage import bridges as db

    url = src["source"]
    now = clock.wall_ms()
    failures = int(src.get("failures") or 0) + 1
    await call(db.note_poll, NAME, "in", url, next_poll=now + int(config.backoff.delay(failures) * 1000))
    try:
        fetched = await _fetch(src, config, resolve)
        if fetched.status == 304:
            await call(
                db.note_poll, NAME, "in", url, last_poll=now, last_ok=now, last_error=None, failures=0,
                next_poll=now + int(config.interval * 1000),
            )  # fmt: skip
            return PollOutcome(url, "unchanged")
        async with parse_limiter or trio.CapacityLimiter(1):
            parsed = await trio.to_thread.run_sync(
                functools.partial(parse_feed, fetched.body, url=url, max_items=config.max_items)
            )
        etag, modified = fetched.headers.get("etag"), fetched.headers.get("last-modified")
        del fetched  # the document is not needed past its items
        key = feed_key(home, NAME, url)
        items: list[tuple[str, Any]] = []
        if parsed.title and parsed.title != src.get("title"):
            items.append(
                (f"profile:{parsed.title}", Profile(name=parsed.title[:64].strip() or "feed", bio=url))
            )
        carried = await _media(call, url, parsed.items, parsed.title, config, media, resolve)
        items += [(i.id, bridged_post(i, carried.get(i.id), NAME)) for i in parsed.items]
        new = 0
        for start in range(0, len(items), IMPORT_BATCH):
            # one database call per batch: others' calls queue between them (spec §14.4)
            made = await call(
                db.append_bridged, key, NAME, url, items[start : start + IMPORT_BATCH], now + start
            )
            new += sum(1 for item, _ in made if not item.startswith("profile:"))
        await call(
            db.note_poll, NAME, "in", url, last_poll=now, last_ok=now, last_error=None, failures=0,
            next_poll=now + int(config.interval * 1000), etag=etag,
            last_modified=modified, title=parsed.title,
        )  # fmt: skip
        return PollOutcome(
            url, "new" if new else "ok", new=new, media=sum(len(c.attachments) for c in carried.values()),
            skipped=[s for c in carried.values() for s in c.skipped],
        )  # fmt: skip
    except BridgeError as exc:
        error = str(exc)
    except Exception as exc:  # anything a remote can provoke is recorded against the source
        error = f"{url}: {type(exc).__name__}: {exc}"
    await call(
        db.note_poll, NAME, "in", url, last_poll=now, last_error=error, failures=failures,
        next_poll=now + int(config.backoff.delay(failures) * 1000),
    )  # fmt: skip
    log.warning("rss: %s (failure %d)", error, failures)
    return PollOutcome(url, "error", error=error)


async def _media(
    call: Call,
    url: str,
    items: list[FeedItem],
    title: str | None,
    config: RssConfig,
    media: BridgeBlobs | None,
    resolve: Resolver | None,
) -> dict[str, Carried]:
    """The media of the items not imported before, fetched and stored (node/bridges/rss_media.py)."""
    from tidings.node.bridges.outbound import OutboundPolicy
    from tidings.node.bridges.rss_media import fetch_media
    from tidings.storage import bridges as db

    with_media = [i for i in items if i.media]
    if media is None or config.media.budget <= 0 or not with_media:
        return {}
    seen = await call(db.seen_items, NAME, url, [i.id for i in with_media])
    return await fetch_media(
        [i for i in with_media if i.id not in seen],
        media=media,
        config=config.media,
        # the source's own policy: an internal address only for the followed feed's host (spec §14.6)
        policy=OutboundPolicy.for_url(url, resolve=resolve),
        feed_title=title or urlsplit(url).hostname or url,
        source=url,
    )


class RssService:
    """Polls the followed sources when due, a few at a time, inside ``tidings run``.

    ``CONCURRENT`` sources are fetched at once, their documents parsed one at a time (each parse holds
    up to some 30 times a document's size in memory, spec §14.4).
    """

    CONCURRENT = 4

    def __init__(
        self,
        home: Home,
        settings: dict[str, str],
        *,
        clock: Clock = SYSTEM_CLOCK,
        resolve: Resolver | None = None,
    ) -> None:
        self.name = "bridge:rss"
        self.home = home
        self.clock = clock
        self.resolve = resolve
        self.config = rss_config(settings)
        self.interval = self.config.interval
        self.polls = 0
        self.imported = 0
        self.media = 0
        self.failing: dict[str, str] = {}
        self.last_poll: int | None = None

    def state(self) -> dict[str, Any]:
        return {
            "polls": self.polls,
            "imported": self.imported,
            "media": self.media,
            "last_poll": self.last_poll,
            "failing": len(self.failing),
            "errors": dict(self.failing),
        }

    async def run(self, node: Node, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        from tidings.node.bridges.blob_access import BridgeBlobs
        from tidings.storage import bridges as db

        media = await trio.to_thread.run_sync(BridgeBlobs.open, self.home)
        try:
            task_status.started()
            limiter = trio.CapacityLimiter(self.CONCURRENT)
            parse_limiter = trio.CapacityLimiter(1)
            while True:
                due = await node.db.call(db.sources, NAME, "in", due=self.clock.wall_ms())
                if due:
                    async with trio.open_nursery() as nursery:
                        for src in due:
                            nursery.start_soon(self._poll_one, node, src, limiter, parse_limiter, media)
                    node.services_changed()
                await trio.sleep(min(1.0, self.interval))
        finally:
            media.close()

    async def _poll_one(
        self,
        node: Node,
        src: dict[str, Any],
        limiter: trio.CapacityLimiter,
        parse_limiter: trio.CapacityLimiter,
        media: BridgeBlobs,
    ) -> None:
        # Every step of a poll is bounded (the fetch by its deadline), so nothing here needs a timeout
        # of its own; a poll is never cut off before its outcome is recorded (spec §14.4).
        async with limiter:
            out = await poll_source(
                node.db.call, self.home, src, config=self.config, clock=self.clock,
                parse_limiter=parse_limiter, resolve=self.resolve, media=media,
            )  # fmt: skip
            self.polls += 1
            self.last_poll = self.clock.wall_ms()
            self.imported += out.new
            self.media += out.media
            if out.error:
                self.failing[out.source] = out.error
            else:
                self.failing.pop(out.source, None)
            if out.new:
                node.wake()


def _parse_rate(value: str) -> str:
    """Bytes per second, 0 (no least rate) or more."""
    try:
        rate = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number of bytes per second") from None
    if not 0 <= rate <= 1e9:
        raise ValueError("a number of bytes per second from 0 to 10^9")
    return f"{rate:g}"


class RssBridge(Bridge):
    """RSS 2.0 / Atom in: each followed web feed is a bridge feed you follow."""

    name = NAME
    description = "RSS/Atom in: follow web feeds; their items become posts of a bridge feed you follow."
    settings = (
        Setting(
            name="interval", default="900", help="seconds between polls of a source", parse=parse_seconds
        ),
        Setting(
            name="retry",
            default="30",
            help="first retry delay after a failure (doubles)",
            parse=parse_seconds,
        ),
        Setting(
            name="timeout",
            default="20",
            help="seconds one fetch may take in all (redirects and body included)",
            parse=parse_seconds,
        ),
        Setting(
            name="max_size",
            default=str(2 * 1024 * 1024),
            help="bytes of a document, on the wire and decompressed",
            parse=parse_count(1024, MAX_SIZE_LIMIT),
        ),
        Setting(
            name="max_items",
            default="100",
            help="items read from a document per poll (its first ones)",
            parse=parse_count(1, MAX_ITEMS_LIMIT),
        ),
        Setting(
            name="min_rate",
            default="4096",
            help="bytes/s a document must arrive at, after its first 5 s (0: no least rate)",
            parse=_parse_rate,
        ),
        Setting(
            name="media_bytes",
            default=str(32 * 1024 * 1024),
            help="bytes of pictures and files fetched per poll of a source, all together (0: none)",
            parse=parse_count(0, MEDIA_BYTES_LIMIT),
        ),
        Setting(
            name="media_fetches",
            default="40",
            help="pictures and files fetched per poll of a source",
            parse=parse_count(0, 1000),
        ),
        Setting(
            name="media_time",
            default="120",
            help="seconds all pictures and files of one poll may take",
            parse=parse_seconds,
        ),
        Setting(
            name="max_file",
            default=str(1024 * 1024),
            help="largest enclosure that is not a picture, kept as an opaque file (0: none)",
            parse=parse_count(0, 8 * 1024 * 1024),
        ),
    )

    def service(self, ctx: BridgeContext) -> RssService | None:
        from tidings.storage import bridges as db

        if not db.sources(ctx.store, NAME, "in"):
            return None  # opt-in: nothing runs until a source is followed
        return RssService(ctx.home, ctx.settings, clock=ctx.clock)
