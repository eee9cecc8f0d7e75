"""Atom out (spec §14.3): a feed's posts as an Atom 1.0 document (RFC 4287, replies per RFC 4685).

``tidings bridge atom export [FEED] [-o FILE]`` (cli/commands_bridge_atom.py) writes it once; with the ``listen`` setting
(``tidings bridge config atom listen 127.0.0.1:7435``) the running node serves it over HTTP:
``/feed.atom`` is the user's own feed, ``/feeds/@ID.atom`` any stored feed. A post's attachments are
its entry's ``link rel="enclosure"`` s; the server serves those blobs at ``/feeds/@ID/blobs/&BLOB``, and
no other blob (node/bridges/atom_blobs.py).
"""

from __future__ import annotations

import datetime
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import trio
from tidings.node.bridges.base import Bridge, BridgeContext, Setting, parse_listen
from tidings.node.clock import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:
    from tidings.node.bridges.httpserve import Response
    from tidings.node.net.node import Node
    from tidings.storage.store import Store

__all__ = ["AtomBridge", "atom_feed", "entry_urn", "feed_urn", "rfc3339"]

log = logging.getLogger("tidings.bridges.atom")

ATOM = "http://www.w3.org/2005/Atom"
THR = "http://purl.org/syndication/thread/1.0"
ET.register_namespace("", ATOM)
ET.register_namespace("thr", THR)

DEFAULT_LIMIT = 100
TITLE_CHARS = 80


def feed_urn(feed_text: str) -> str:
    """``urn:tidings:feed:BASE32`` for a feed id ``@BASE32`` (stable: the key never changes)."""
    return "urn:tidings:feed:" + feed_text.lstrip("@")


def entry_urn(entry_text: str) -> str:
    """``urn:tidings:entry:BASE32`` for an entry id ``%BASE32`` (stable: the entry hash)."""
    return "urn:tidings:entry:" + entry_text.lstrip("%")


#: The last moment RFC 3339 can write (year 9999): an entry may be signed with any ``ts`` up to 2^53 - 1
#: (spec §5.3), which the feed shows as this date rather than failing.
_LAST_MS = 253_402_300_799_999
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def rfc3339(ms: int) -> str:
    """Milliseconds since the epoch as an RFC 3339 UTC date-time, e.g. ``2026-01-02T03:04:05.678Z``;
    times outside years 1970–9999 are shown as the nearest end of that range."""
    moment = _EPOCH + datetime.timedelta(milliseconds=min(max(ms, 0), _LAST_MS))  # exact: no float
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _title(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else text
    return first if len(first) <= TITLE_CHARS else first[: TITLE_CHARS - 1] + "…"


def _sub(parent: ET.Element, tag: str, text: str | None = None, ns: str = ATOM, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, f"{{{ns}}}{tag}", attrs)
    if text is not None:
        el.text = text
    return el


def _author(parent: ET.Element, name: str, uri: str) -> None:
    a = _sub(parent, "author")
    _sub(a, "name", name)
    _sub(a, "uri", uri)


#: ``blob_href(feed_text, blob_text)``: the URL of an enclosure
BlobHref = Callable[[str, str], str]


def atom_feed(
    store: Store,
    feed: bytes,
    *,
    now: int,
    limit: int = DEFAULT_LIMIT,
    self_url: str | None = None,
    blob_href: BlobHref | None = None,
) -> tuple[bytes, int]:
    """The Atom document of ``feed``'s newest ``limit`` posts, and how many entries it holds.

    Deleted posts and payloads that are absent or undecodable are left out. Bridged posts keep their
    origin: the original URL is the entry's ``alternate`` link and the original author its author.
    Attachments are ``enclosure`` links to ``blob_href(feed, blob)`` (default: ``urn:tidings:blob:``).
    """
    from tidings.node.bridges.atom_blobs import blob_urn
    from tidings.protocol import feed_id_text

    feed_text = feed_id_text(feed)
    profile = store.profile(feed)
    name = profile["name"] or feed_text
    root = ET.Element(f"{{{ATOM}}}feed")
    _sub(root, "id", feed_urn(feed_text))
    _sub(root, "title", f"{name} on Tidings")
    if profile["bio"]:
        _sub(root, "subtitle", profile["bio"])
    _sub(root, "generator", "Tidings", version="0.1")
    if self_url:
        _sub(root, "link", rel="self", href=self_url, type="application/atom+xml")
    _author(root, name, feed_urn(feed_text))
    posts = [
        e
        for e in store.log(feed, limit=None)
        if e["type"] == "post" and not e.get("deleted") and isinstance(e["content"], dict)
    ][:limit]
    _sub(root, "updated", rfc3339(posts[0]["ts"] if posts else now))
    href = blob_href or (lambda _feed, blob: blob_urn(blob))
    for e in posts:
        _entry(root, e, name, feed_text, href)
    ET.indent(root)
    data = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data + b"\n", len(posts)


def _entry(root: ET.Element, e: dict[str, Any], name: str, feed_text: str, href: BlobHref) -> None:
    content = e["content"]
    text = str(content.get("text", ""))
    el = _sub(root, "entry")
    _sub(el, "id", entry_urn(e["id"]))
    _sub(el, "title", _title(text))
    _sub(el, "published", rfc3339(e["ts"]))
    _sub(el, "updated", rfc3339(e["ts"]))
    origin = content.get("origin") if isinstance(content.get("origin"), dict) else None
    if origin and origin.get("author"):
        _author(el, str(origin["author"]), feed_urn(feed_text))
    else:
        _author(el, name, feed_urn(feed_text))
    _sub(el, "content", text, type="text")
    if origin and origin.get("url"):
        _sub(el, "link", rel="alternate", href=str(origin["url"]))
    for tag in content.get("tags") or []:
        _sub(el, "category", term=str(tag))
    reply = content.get("reply")
    if isinstance(reply, str):
        _sub(el, "in-reply-to", ns=THR, ref=entry_urn(reply))  # RFC 4685 §3
    _enclosures(el, content.get("attachments"), feed_text, href)


def _enclosures(el: ET.Element, attachments: Any, feed_text: str, href: BlobHref) -> None:
    """One ``link rel="enclosure"`` per attachment (RFC 4287 §4.2.7.2): its URL, the type it is served
    as, its length and its alt text as the title (spec §14.3)."""
    from tidings.node.bridges.atom_blobs import served_mime

    for ref in attachments if isinstance(attachments, list) else []:
        if not isinstance(ref, dict) or not isinstance(ref.get("blob"), str):
            continue
        attrs = {
            "rel": "enclosure",
            "href": href(feed_text, ref["blob"]),
            "type": served_mime(str(ref.get("mime", ""))),
            "length": str(ref.get("size", "")),
        }
        if ref.get("alt"):
            attrs["title"] = str(ref["alt"])
        _sub(el, "link", **attrs)


class AtomService:
    """Serves Atom documents of stored feeds over HTTP inside ``tidings run``."""

    def __init__(self, listen: str, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.name = "bridge:atom"
        self.listen = listen
        self.clock = clock
        self.address: str | None = None
        self.served = 0
        self.blobs_served = 0
        self.errors = 0

    def state(self) -> dict[str, Any]:
        return {
            "listen": self.address or self.listen,
            "served": self.served,
            "blobs": self.blobs_served,
            "errors": self.errors,
        }

    async def run(self, node: Node, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        from tidings.node.addresses import parse_address
        from tidings.node.bridges.atom_blobs import blob_path, parse_blob_path, serve_blob
        from tidings.node.bridges.blob_access import BridgeBlobs
        from tidings.node.bridges.httpserve import Streamed, serve_http

        host, port = parse_address(self.listen)
        me = node.key.public_key
        blobs = await trio.to_thread.run_sync(BridgeBlobs.open, node.home)

        def href(feed_text: str, blob_text: str) -> str:
            return f"http://{self.address}{blob_path(feed_text, blob_text)}"

        async def handler(method: str, target: str) -> Response | Streamed:
            path = unquote(target.split("?", 1)[0])
            blob = parse_blob_path(path)
            if blob is not None:
                answer = await serve_blob(node.db.call, blobs, *blob)
                self.blobs_served += isinstance(answer, Streamed)
                return answer
            feed = self._route(path, me)
            if feed is None:
                return 404, "text/plain; charset=utf-8", b"not found: try /feed.atom\n"
            url = f"http://{self.address}{path}"
            try:
                data, _ = await node.db.call(
                    atom_feed, feed, now=self.clock.wall_ms(), self_url=url, blob_href=href
                )
            except Exception:
                self.errors += 1
                raise
            self.served += 1
            return 200, "application/atom+xml; charset=utf-8", data

        try:
            async with trio.open_nursery() as nursery:
                bound = await nursery.start(serve_http, host, port, handler)
                self.address = f"{bound[0]}:{bound[1]}"
                log.info("serving Atom feeds on http://%s/feed.atom", self.address)
                node.services_changed()
                task_status.started(self.address)
        finally:
            blobs.close()

    @staticmethod
    def _route(path: str, me: bytes) -> bytes | None:
        from tidings.protocol import FeedId, ProtocolError

        if path in ("/", "/feed.atom"):
            return me
        if path.startswith("/feeds/") and path.endswith(".atom"):
            try:
                return FeedId.parse(path[len("/feeds/") : -len(".atom")]).key
            except ProtocolError:
                return None
        return None


class AtomBridge(Bridge):
    """Atom out: export or serve a feed's posts as Atom 1.0."""

    name = "atom"
    description = "Atom out: a feed's posts as an Atom 1.0 feed, exported or served on localhost."
    settings = (
        Setting(
            name="listen",
            default="off",
            help="HOST:PORT to serve /feed.atom on while 'tidings run' runs (e.g. 127.0.0.1:7435), or off",
            parse=parse_listen,
        ),
    )

    def service(self, ctx: BridgeContext) -> AtomService | None:
        listen = ctx.settings.get("listen", "off")
        return None if listen == "off" else AtomService(listen, clock=ctx.clock)

    def status(self, ctx: BridgeContext) -> dict[str, Any]:
        listen = ctx.settings.get("listen", "off")
        return {"serving": None if listen == "off" else f"http://{listen}/feed.atom"}
