"""Reading RSS 2.0 and Atom documents into items to import (spec §14.4); no IO here.

``parse_feed`` takes the bytes of a fetched document and returns its title and items, each with a
stable id (the RSS ``guid`` or Atom ``id``; else the link; else a hash of title and text), a text for
the post (title, the summary as plain text, the link), its origin, and the pictures and files it
names (``enclosures.media_links``: enclosures, Media RSS content and thumbnails).

Only the first ``max_items`` items of a document are read (spec §14.4): feedparser holds some 30 times a
document's size in memory for one of many tiny items, so the document is cut before the start tag of
item ``max_items + 1`` (counted textually: ``<item`` or ``<entry``, any namespace prefix, any case) and
the elements still open there are closed, before feedparser sees it. ``ItemCounter`` counts the same
start tags while a document arrives, so a fetch can stop reading once it has enough.
"""

from __future__ import annotations

import calendar
import codecs
import hashlib
import html
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

from tidings.node.bridges.base import BridgeError
from tidings.node.bridges.enclosures import MediaLink, alt_texts, media_links
from tidings.protocol.content import MAX_ORIGIN_AUTHOR, MAX_ORIGIN_ID, MAX_ORIGIN_URL, MAX_TEXT

__all__ = ["FeedItem", "ItemCounter", "ParsedFeed", "first_items", "html_to_text", "parse_feed"]

#: an item's start tag: RSS and RDF ``<item``, Atom ``<entry``, with any namespace prefix, in any case
_ITEM_START = re.compile(rb"<(?:[A-Za-z_][\w.-]{0,40}:)?(?:item|entry)[\s/>]", re.IGNORECASE)
_TAG_WINDOW = 64  # longer than any match, so a tag split between two reads is found whole
_WIDE = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
    (b"<\x00\x00\x00", "utf-32-le"),
    (b"\x00\x00\x00<", "utf-32-be"),
    (b"<\x00?\x00", "utf-16-le"),
    (b"\x00<\x00?", "utf-16-be"),
)
_DECLARED = re.compile(rb"""^(\s*<\?xml[^>]*?encoding\s*=\s*)(["'])[^"']*\2""")


class ItemCounter:
    """Counts item start tags in a document as it grows; ``enough(document)`` is True once the start of
    item ``limit + 1`` has arrived (the first ``limit`` items are then complete)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self._pos = 0

    def enough(self, document: bytes | bytearray) -> bool:
        while self.count <= self.limit:
            found = _ITEM_START.search(document, self._pos)
            if found is None:
                self._pos = max(self._pos, len(document) - _TAG_WINDOW)
                return False
            self.count += 1
            self._pos = found.end()
        return True


def _utf8(body: bytes) -> bytes:
    """A UTF-16 or UTF-32 document as UTF-8 (its declaration changed to say so), so its tags can be counted."""
    for mark, codec in _WIDE:
        if body.startswith(mark):
            text = body.decode(codec, "replace").lstrip("\ufeff").encode("utf-8")
            return _DECLARED.sub(rb'\g<1>"utf-8"', text, count=1)
    return body


def _closers(head: bytes) -> bytes:
    """End tags for the elements open at the end of ``head`` (none when it is not well-formed XML)."""
    from xml.parsers import expat

    # Latin-1 maps every byte to one character, so the names come back as the bytes they were.
    parser = expat.ParserCreate(encoding="iso-8859-1")
    stack: list[str] = []
    parser.StartElementHandler = lambda name, _attrs: stack.append(name)
    parser.EndElementHandler = lambda _name: stack.pop()
    try:
        parser.Parse(head, False)
    except expat.ExpatError:
        return b""
    return b"".join(f"</{name}>".encode("latin-1") for name in reversed(stack))


def first_items(body: bytes, limit: int) -> bytes:
    """``body`` cut before the start of its item ``limit + 1`` and closed there; as it is when shorter."""
    for count, found in enumerate(_ITEM_START.finditer(body)):
        if count == limit:
            head = body[: found.start()]
            return head + _closers(head)
    return body


@dataclass(frozen=True, kw_only=True)
class FeedItem:
    id: str
    text: str
    url: str | None
    author: str | None
    ts: int | None  # milliseconds, when the feed gives a date
    media: tuple[MediaLink, ...] = ()  # what the item names to attach (spec §14.4), in order

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


def _item(entry: Any, feed_author: str | None, *, base: str, alts: dict[str, str]) -> FeedItem | None:
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
    return FeedItem(
        id=ident,
        text=text.strip(),
        url=link,
        author=author,
        ts=_ms(entry),
        media=media_links(entry, base=base, alts=alts),
    )


def parse_feed(body: bytes, *, url: str = "", max_items: int | None = None) -> ParsedFeed:
    """Parse an RSS or Atom document; ``BridgeError(code="not_a_feed")`` when it is neither.

    feedparser accepts much broken XML (``bozo``): a broken document it reads no items from (or one
    of no known feed version) is refused; one that is broken but has readable items is used. With
    ``max_items``, only the document's first ``max_items`` items are read (see the module docstring).
    """
    import feedparser

    if max_items is not None:
        body = first_items(_utf8(body), max_items)

    parsed = feedparser.parse(body, response_headers={"content-location": url} if url else None)
    if not parsed.entries and (parsed.get("bozo") or not parsed.get("version")):
        why = parsed.get("bozo_exception")
        detail = f": {type(why).__name__}: {why}" if why else ""
        raise BridgeError(f"{url or 'the document'} is not an RSS or Atom feed{detail}", code="not_a_feed")
    feed_author = html_to_text(str(parsed.feed.get("author") or "")) or None
    entries = parsed.entries if max_items is None else parsed.entries[:max_items]
    alts = alt_texts(body, base=url, clean=html_to_text) if b"mrss" in body else {}
    items = [i for i in (_item(e, feed_author, base=url, alts=alts) for e in entries) if i is not None]
    # Feeds list newest first; import oldest first. Items without dates keep the document order.
    items.reverse()
    if all(i.ts is not None for i in items):
        items.sort(key=lambda i: i.ts or 0)
    title = html_to_text(str(parsed.feed.get("title") or "")) or None
    return ParsedFeed(title=title, kind=str(parsed.get("version") or "unknown"), items=items)
