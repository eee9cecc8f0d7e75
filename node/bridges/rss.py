"""RSS/Atom in (spec §14.4): followed web feeds become bridge feeds, one per source.

``tidings bridge rss follow URL`` (cli/commands_bridge_rss.py) records the source and appends a Follow of its bridge feed to the
user's log (exactly like ``tidings follow``), so the timeline shows it like any followed feed. Items
are imported once (deduplicated by guid/id) by ``tidings bridge rss poll`` or, inside ``tidings run``,
by a service that polls each source every ``interval`` seconds with conditional requests
(ETag/Last-Modified) and backs off after failures, never holding up the node.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import trio
from tidings.node.bridges.base import Backoff, Bridge, BridgeContext, BridgeError, Setting, parse_seconds
from tidings.node.bridges.feeds import parse_feed
from tidings.node.clock import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:
    import httpx
    from tidings.node.home import Home
    from tidings.node.net.node import Node

__all__ = ["Call", "PollOutcome", "RssBridge", "RssService", "check_url", "poll_source", "settings_numbers"]

log = logging.getLogger("tidings.bridges.rss")

NAME = "rss"
MAX_BODY = 5 * 1024 * 1024
USER_AGENT = "tidings-rss-bridge/0.1"

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

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "status": self.status, "new": self.new, "error": self.error}


async def _fetch(client: httpx.AsyncClient, src: dict[str, Any], timeout: float) -> httpx.Response:
    import httpx

    headers = {"user-agent": USER_AGENT, "accept": "application/rss+xml, application/atom+xml, */*;q=0.5"}
    if src.get("etag"):
        headers["if-none-match"] = src["etag"]
    if src.get("last_modified"):
        headers["if-modified-since"] = src["last_modified"]
    try:
        response = await client.get(src["source"], headers=headers, timeout=timeout, follow_redirects=True)
    except httpx.TimeoutException:
        raise BridgeError(f"{src['source']}: no answer within {timeout:g} s", code="unreachable") from None
    except httpx.HTTPError as exc:
        raise BridgeError(
            f"{src['source']}: cannot fetch: {exc or type(exc).__name__}", code="unreachable"
        ) from None
    if response.status_code not in (200, 304):
        raise BridgeError(f"{src['source']}: HTTP {response.status_code}", code="http_error")
    if len(response.content) > MAX_BODY:
        raise BridgeError(f"{src['source']}: larger than {MAX_BODY} bytes", code="too_large")
    return response


async def poll_source(
    call: Call,
    home: Home,
    src: dict[str, Any],
    client: httpx.AsyncClient,
    *,
    interval: float,
    backoff: Backoff,
    timeout: float,
    clock: Clock = SYSTEM_CLOCK,
) -> PollOutcome:
    """Poll one source once and record the outcome; failures are recorded, not raised."""
    from tidings.node.bridges.keys import feed_key
    from tidings.protocol import Post, Profile
    from tidings.storage import bridges as db

    url = src["source"]
    now = clock.wall_ms()
    try:
        response = await _fetch(client, src, timeout)
        if response.status_code == 304:
            await call(
                db.note_poll, NAME, "in", url, last_poll=now, last_ok=now, last_error=None, failures=0,
                next_poll=now + int(interval * 1000),
            )  # fmt: skip
            return PollOutcome(url, "unchanged")
        parsed = parse_feed(response.content, url=url)
        key = feed_key(home, NAME, url)
        items: list[tuple[str, Any]] = []
        if parsed.title and parsed.title != src.get("title"):
            items.append(
                (f"profile:{parsed.title}", Profile(name=parsed.title[:64].strip() or "feed", bio=url))
            )
        items += [(i.id, Post(text=i.text, origin=i.origin(NAME))) for i in parsed.items]
        made = await call(db.append_bridged, key, NAME, url, items, now)
        new = sum(1 for item, _ in made if not item.startswith("profile:"))
        await call(
            db.note_poll, NAME, "in", url, last_poll=now, last_ok=now, last_error=None, failures=0,
            next_poll=now + int(interval * 1000), etag=response.headers.get("etag"),
            last_modified=response.headers.get("last-modified"), title=parsed.title,
        )  # fmt: skip
        return PollOutcome(url, "new" if new else "ok", new=new)
    except BridgeError as exc:
        error = str(exc)
    except Exception as exc:  # anything a remote can provoke is recorded against the source
        error = f"{url}: {type(exc).__name__}: {exc}"
    failures = int(src.get("failures") or 0) + 1
    await call(
        db.note_poll, NAME, "in", url, last_poll=now, last_error=error, failures=failures,
        next_poll=now + int(backoff.delay(failures) * 1000),
    )  # fmt: skip
    log.warning("rss: %s (failure %d)", error, failures)
    return PollOutcome(url, "error", error=error)


def settings_numbers(settings: dict[str, str]) -> tuple[float, Backoff, float]:
    """The poll interval, the backoff after failures and the request timeout that ``settings`` give."""
    interval = float(settings.get("interval", "900"))
    retry = float(settings.get("retry", "30"))
    timeout = float(settings.get("timeout", "20"))
    return interval, Backoff(interval=interval, base=retry, cap=max(interval, retry) * 8), timeout


class RssService:
    """Polls the followed sources when due, a few at a time, inside ``tidings run``."""

    def __init__(self, home: Home, settings: dict[str, str], *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.name = "bridge:rss"
        self.home = home
        self.clock = clock
        self.interval, self.backoff, self.timeout = settings_numbers(settings)
        self.polls = 0
        self.imported = 0
        self.failing: dict[str, str] = {}
        self.last_poll: int | None = None

    def state(self) -> dict[str, Any]:
        return {
            "polls": self.polls,
            "imported": self.imported,
            "last_poll": self.last_poll,
            "failing": len(self.failing),
            "errors": dict(self.failing),
        }

    async def run(self, node: Node, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        import httpx
        from tidings.storage import bridges as db

        task_status.started()
        limiter = trio.CapacityLimiter(4)
        async with httpx.AsyncClient() as client:
            while True:
                due = await node.db.call(db.sources, NAME, "in", due=self.clock.wall_ms())
                if due:
                    async with trio.open_nursery() as nursery:
                        for src in due:
                            nursery.start_soon(self._poll_one, node, client, src, limiter)
                    node.services_changed()
                await trio.sleep(min(1.0, self.interval))

    async def _poll_one(
        self, node: Node, client: httpx.AsyncClient, src: dict[str, Any], limiter: trio.CapacityLimiter
    ) -> None:
        async with limiter:
            with trio.move_on_after(self.timeout * 2):
                out = await poll_source(
                    node.db.call, self.home, src, client,
                    interval=self.interval, backoff=self.backoff, timeout=self.timeout, clock=self.clock,
                )  # fmt: skip
                self.polls += 1
                self.last_poll = self.clock.wall_ms()
                self.imported += out.new
                if out.error:
                    self.failing[out.source] = out.error
                else:
                    self.failing.pop(out.source, None)
                if out.new:
                    node.wake()


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
        Setting(name="timeout", default="20", help="seconds to wait for a feed server", parse=parse_seconds),
    )

    def service(self, ctx: BridgeContext) -> RssService | None:
        from tidings.storage import bridges as db

        if not db.sources(ctx.store, NAME, "in"):
            return None  # opt-in: nothing runs until a source is followed
        return RssService(ctx.home, ctx.settings, clock=ctx.clock)
