"""Inside ``tidings run``: one long-lived connection per Nostr relay, followed live (spec §14.5).

Theory of operation. ``NostrService.run`` keeps one task per configured relay; it re-reads the relay
list every ``CHECK`` seconds, cancelling the task of a removed relay and starting one for a new relay.
A relay task loops through these states::

    WAIT ──(follows or publishing on)──> CONNECT ──> SYNC ──(EOSE)──> LIVE
     ^                                      │          │                │
     └──── BACKOFF <──(failure: recorded)───┴──────────┴────────────────┘

- CONNECT opens the websocket (at most ``timeout`` seconds).
- SYNC sends pending own posts (when publishing is on; each ``EVENT`` waits for its ``OK``), then
  ``REQ`` for the followed authors' kind-1 events since the newest seen − 600 s, and imports what the
  relay held once ``EOSE`` comes (within ``timeout``). The round is then recorded as successful.
- LIVE imports every further event of the subscription as it arrives. The control task wakes when the
  node sees new entries (``Node.wait_changed``: an own post, a follow written by the CLI) or every
  ``CHECK`` seconds: a changed set of followed authors is re-subscribed at once (CLOSE + REQ), new own
  posts are published, and every ``interval`` seconds the subscription is renewed anyway — a safety
  re-sync that also proves the connection alive (no ``EOSE`` in time is a failure).
- BACKOFF: a failure (unreachable, dropped, silent, a CLOSED subscription) is recorded as the old
  polling rounds did (``note_poll``; ``failing`` in ``tidings status``) and the task sleeps
  ``Backoff.delay(failures)`` before connecting again; the new subscription starts from newest − 600 s,
  so nothing sent while the relay was away is lost.

Every event is verified (``protocol.nostr.RelaySession``); invalid ones are counted in ``rejected``.
One relay's failure ends only its own task's connection, never the others' or the node.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio
from tidings.node.bridges.base import Backoff, BridgeError
from tidings.node.bridges.nostr_sync import (
    NAME,
    SLACK,
    import_events,
    newest_seen,
    note_authors_ok,
    publish_pending,
)
from tidings.node.bridges.relay import RelayConnection, open_relay, relay_failure
from tidings.node.clock import SYSTEM_CLOCK, Clock
from tidings.protocol import nostr as wire

if TYPE_CHECKING:
    from tidings.node.home import Home
    from tidings.node.net.node import Node

__all__ = ["CHECK", "SETTLE", "NostrService"]

log = logging.getLogger("tidings.bridges.nostr")

CHECK = 2.0  # seconds between looks at the store (relays, followed authors, own posts) without a wake-up
SETTLE = 0.2  # seconds to let a burst of new entries end before looking


def _numbers(settings: dict[str, str]) -> tuple[float, Backoff, float]:
    interval = float(settings.get("interval", "60"))
    retry = float(settings.get("retry", "10"))
    return (
        interval,
        Backoff(interval=interval, base=retry, cap=max(interval, retry) * 8),
        float(settings.get("timeout", "10")),
    )


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside nested exception groups (one task of a connection failed)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


@dataclass
class _Link:
    """What the reader and the control task of one connection share."""

    conn: RelayConnection
    follows: dict[str, dict[str, Any]] = field(default_factory=dict)  # author -> source row
    stored: list[wire.Event] = field(default_factory=list)  # events before EOSE
    synced: trio.Event = field(default_factory=trio.Event)  # EOSE of the open subscription
    ok: bool = False  # a round succeeded on this connection


class NostrService:
    """Inside ``tidings run``: one live connection per relay (see the module docstring); a failing relay
    backs off and is shown in ``tidings status``."""

    def __init__(self, home: Home, settings: dict[str, str], *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.name = "bridge:nostr"
        self.home = home
        self.clock = clock
        self.publish = settings.get("publish", "off") == "on"
        self.interval, self.backoff, self.timeout = _numbers(settings)
        self.published = 0
        self.imported = 0
        self.rejected = 0
        self.failing: dict[str, str] = {}
        self.connected: set[str] = set()  # relays with an open connection
        self.live: set[str] = set()  # ... whose subscription is caught up (EOSE seen)

    def state(self) -> dict[str, Any]:
        return {
            "publish": self.publish,
            "published": self.published,
            "imported": self.imported,
            "rejected": self.rejected,
            "connected": len(self.connected),
            "live": len(self.live),
            "failing": len(self.failing),
            "errors": dict(self.failing),
        }

    async def run(self, node: Node, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        from tidings.storage import bridges as db

        task_status.started()
        tasks: dict[str, trio.CancelScope] = {}
        async with trio.open_nursery() as nursery:
            while True:
                relays = {r["source"]: r for r in await node.db.call(db.sources, NAME, "relay")}
                for url in [u for u in tasks if u not in relays]:  # removed by 'relay remove'
                    tasks.pop(url).cancel()
                    self.failing.pop(url, None)
                    self.connected.discard(url)
                    self.live.discard(url)
                for url, relay in relays.items():
                    if url not in tasks:
                        tasks[url] = await nursery.start(self._keep, node, relay)
                await trio.sleep(CHECK)

    # -- one relay ---------------------------------------------------------------------------------------
    async def _keep(
        self, node: Node, relay: dict[str, Any], *, task_status: trio.TaskStatus[trio.CancelScope]
    ) -> None:
        """Keep ``relay`` connected for as long as the service runs; back off after failures."""
        url = relay["source"]
        failures = int(relay["failures"] or 0)
        with trio.CancelScope() as scope:
            task_status.started(scope)
            while True:
                await self._wait_for_work(node)
                link: _Link | None = None
                try:
                    async with open_relay(url, timeout=self.timeout) as conn:
                        link = _Link(conn)
                        self.connected.add(url)
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(self._read, node, link)
                            await self._control(node, link)
                    raise BridgeError(
                        "the relay ended the connection", code="relay_error"
                    )  # the url is shown beside it
                except Exception as exc:  # a relay's failure is recorded and retried, never fatal
                    error = relay_failure(url, _leaf(exc))
                finally:
                    self.connected.discard(url)
                    self.live.discard(url)
                if link is not None and link.ok:
                    failures = 0
                failures += 1
                delay = self.backoff.delay(failures)
                await self._note_failure(node, url, str(error), failures, delay)
                await trio.sleep(delay)

    async def _wait_for_work(self, node: Node) -> None:
        """Connect only when something is enabled: publishing, or at least one followed author."""
        from tidings.storage import bridges as db

        while not self.publish and not await node.db.call(db.sources, NAME, "in"):
            await trio.sleep(CHECK)

    async def _note_failure(self, node: Node, url: str, error: str, failures: int, delay: float) -> None:
        from tidings.storage import bridges as db

        now = self.clock.wall_ms()
        log.info("relay %s failed (%d in a row; again in %.1f s): %s", url, failures, delay, error)
        self.failing[url] = error
        await node.db.call(
            db.note_poll, NAME, "relay", url, last_poll=now, last_error=error, failures=failures,
            next_poll=now + int(delay * 1000),
        )  # fmt: skip
        node.services_changed()

    async def _note_ok(self, node: Node, link: _Link, refused: str | None) -> None:
        from tidings.storage import bridges as db

        now, url = self.clock.wall_ms(), link.conn.url
        link.ok = True
        self.failing.pop(url, None)
        self.live.add(url)
        await node.db.call(
            db.note_poll, NAME, "relay", url, last_poll=now, last_ok=now, last_error=refused, failures=0,
            next_poll=now + int(self.interval * 1000),
        )  # fmt: skip
        node.services_changed()

    async def _read(self, node: Node, link: _Link) -> None:
        """Receive everything the relay sends; import events (in a batch at EOSE, then one by one)."""
        while True:
            live: list[wire.Event] = []
            for got in await link.conn.receive():
                if isinstance(got, wire.Received):
                    (link.stored if got.stored else live).append(got.event)
                elif isinstance(got, wire.Caught):
                    live.extend(link.stored)
                    link.stored = []
                    link.synced.set()
                elif isinstance(got, wire.Refused):
                    self.rejected += 1
                elif isinstance(got, wire.Closed):
                    raise BridgeError(
                        f"{link.conn.url}: the relay closed the subscription: {got.message}",
                        code="relay_error",
                    )
                elif isinstance(got, wire.Notice):
                    log.info("relay %s: notice: %s", link.conn.url, got.message)
            if live:
                got_new = await import_events(node.db.call, self.home, link.follows, live, clock=self.clock)
                if got_new:
                    self.imported += got_new
                    node.wake()
                    node.services_changed()  # the counts in 'tidings status'

    async def _control(self, node: Node, link: _Link) -> None:
        """Publish own posts and keep the subscription matching the followed authors (see above)."""
        from tidings.storage import bridges as db

        authors: list[str] | None = None
        renew = self.clock.monotonic()
        refused: str | None = None
        while True:
            if self.publish and (refusal := await self._publish(node, link)) is not None:
                refused = refusal  # shown at once, and kept until the next recorded round
                await node.db.call(db.note_poll, NAME, "relay", link.conn.url, last_error=refused)
            follows = await node.db.call(db.sources, NAME, "in")
            wanted = sorted(f["source"] for f in follows)
            if wanted != authors or self.clock.monotonic() >= renew:
                await self._subscribe(node, link, follows)
                authors, renew = wanted, self.clock.monotonic() + self.interval
                await self._note_ok(node, link, refused)
                refused = None
            with trio.move_on_after(min(CHECK, max(0.0, renew - self.clock.monotonic()))):
                await node.wait_changed()
                await trio.sleep(SETTLE)  # a busy node changes often: one look per burst

    async def _subscribe(self, node: Node, link: _Link, follows: list[dict[str, Any]]) -> None:
        """(Re)open the subscription for ``follows`` and wait for its ``EOSE`` (``timeout``)."""
        link.synced = trio.Event()
        link.stored = []
        if not follows:
            await link.conn.unsubscribe()
            link.follows = {}
            return
        link.follows = {f["source"]: f for f in follows}
        await link.conn.subscribe(wire.follow_filter(link.follows, newest_seen(follows), slack=SLACK))
        with trio.fail_after(self.timeout):
            await link.synced.wait()
        await note_authors_ok(node.db.call, list(link.follows), clock=self.clock)

    async def _publish(self, node: Node, link: _Link) -> str | None:
        """Send own posts not yet on this relay over the open connection; the last refusal, or None."""
        from tidings.storage import bridges as db

        url = link.conn.url
        rows = [r for r in await node.db.call(db.sources, NAME, "relay") if r["source"] == url]
        if not rows:
            return None
        sent, refused = await publish_pending(
            node.db.call, self.home, rows[0], timeout=self.timeout, send=link.conn.publish, clock=self.clock
        )
        self.published += sent
        if sent:
            node.services_changed()
        return refused
