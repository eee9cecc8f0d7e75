"""Reading RSS 2.0 and Atom documents into items to import (spec §14.4); no IO here.

``parse_feed`` takes the bytes of a fetched document and returns its title and items, each with a
stable id (the RSS ``guid`` or Atom ``id``; else the link; else a hash of title and text), a text for
the post (title, the summary as plain text, the link), and its origin.
"""

from __future__ import annotations

import calendar
import hashlib
import html
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

from tidings.node.bridges.base import BridgeError
from tidings.protocol.content import MAX_ORIGIN_AUTHOR, MAX_ORIGIN_ID, MAX_ORIGIN_URL, MAX_TEXT

__all__ = ["FeedItem", "ParsedFeed", "html_to_text", "parse_feed"]


@dataclass(frozen=True, kw_only=True)
class FeedItem:
    id: str
    text: str
    url: str | None
    author: str | None
    ts: int | None  # milliseconds, when the feed gives a date

    def origin(self, network: str) -> dict[str, Any]:
        out: dict[str, Any] = {"network": network, "id": self.id}
        if self.author:
            out["author"] = self.author
        if self.url:
            out["url"] = self.url
        if self.ts is not None:
            out["ts"] = self.ts
        return out


@dataclass(frozen=True, kw_only=True)
class ParsedFeed:
    title: str | None
    kind: str  # feedparser's version: rss20, atom10, ...
    items: list[FeedItem]  # oldest first


class _Text(HTMLParser):
    _BREAKS = frozenset({"p", "br", "div", "li", "h1", "h2", "h3", "h4", "blockquote", "tr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self._BREAKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def html_to_text(value: str) -> str:
    """Plain text of an HTML fragment: tags dropped, entities decoded, blank runs squeezed."""
    parser = _Text()
    try:
        parser.feed(value)
        parser.close()
        text = "".join(parser.parts)
    except Exception:  # HTMLParser is lenient; this is only belt and braces
        text = html.unescape(value)
    lines = [" ".join(line.split()) for line in text.splitlines()]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


def _clip(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", "ignore") + "…"


def _ms(entry: Any) -> int | None:
    for key in ("published_parsed", "updated_parsed"):
        value = entry.get(key)
        if value:
            try:
                return calendar.timegm(value) * 1000
            except (TypeError, ValueError, OverflowError):
                continue
    return None


def _item(entry: Any, feed_author: str | None) -> FeedItem | None:
    title = html_to_text(str(entry.get("title") or ""))
    body = ""
    if entry.get("content"):
        body = html_to_text(str(entry["content"][0].get("value") or ""))
    if not body:
        body = html_to_text(str(entry.get("summary") or ""))
    link = str(entry.get("link") or "").strip() or None
    if link is not None and (len(link) > MAX_ORIGIN_URL or not link.startswith(("http://", "https://"))):
        link = None
    ident = str(entry.get("id") or "").strip() or link
    if not ident:
        if not (title or body):
            return None
        ident = "sha256:" + hashlib.sha256(f"{title}\n{body}".encode()).hexdigest()
    if len(ident.encode("utf-8")) > MAX_ORIGIN_ID:
        ident = "sha256:" + hashlib.sha256(ident.encode("utf-8")).hexdigest()
    parts = [p for p in (title, body if body != title else "") if p]
    tail = f"\n\n{link}" if link else ""
    text = _clip("\n\n".join(parts), MAX_TEXT - len(tail.encode("utf-8"))) + tail
    if not text.strip():
        return None
    author = html_to_text(str(entry.get("author") or "")) or feed_author
    if author:
        author = _clip(author, MAX_ORIGIN_AUTHOR)
    return FeedItem(id=ident, text=text.strip(), url=link, author=author, ts=_ms(entry))


def parse_feed(body: bytes, *, url: str = "") -> ParsedFeed:
    """Parse an RSS or Atom document; ``BridgeError(code="not_a_feed")`` when it is neither.

    feedparser accepts much broken XML (``bozo``): a broken document it reads no items from (or one
    of no known feed version) is refused; one that is broken but has readable items is used.
    """
    import feedparser

    parsed = feedparser.parse(body, response_headers={"content-location": url} if url else None)
    if not parsed.entries and (parsed.get("bozo") or not parsed.get("version")):
        why = parsed.get("bozo_exception")
        detail = f": {type(why).__name__}: {why}" if why else ""
        raise BridgeError(f"{url or 'the document'} is not an RSS or Atom feed{detail}", code="not_a_feed")
    feed_author = html_to_text(str(parsed.feed.get("author") or "")) or None
    items = [i for i in (_item(e, feed_author) for e in parsed.entries) if i is not None]
    # Feeds list newest first; import oldest first. Items without dates keep the document order.
    items.reverse()
    if all(i.ts is not None for i in items):
        items.sort(key=lambda i: i.ts or 0)
    title = html_to_text(str(parsed.feed.get("title") or "")) or None
    return ParsedFeed(title=title, kind=str(parsed.get("version") or "unknown"), items=items)
