"""The pictures and files a web feed's item names (spec §14.4): which to fetch, with what alt text; no IO.

An item may name media three ways, all read here into ``MediaLink`` s in this order:

- RSS 2.0 ``<enclosure url= type= length=>`` and Atom ``<link rel="enclosure" href= type= length=
  title=>`` (feedparser gives both as the entry's ``links`` with ``rel == "enclosure"``);
- Media RSS ``<media:content url= type= medium= fileSize=>``, alone or in a ``<media:group>``;
- Media RSS ``<media:thumbnail url=>``, only when the item names no picture otherwise (a video's
  thumbnail is the picture of a video post; beside a picture it is a smaller copy of it).

The same URL named twice is one link. Declared types and lengths are hints, never trusted: they only
let a fetch be skipped early (an audio enclosure of 80 MB), and what arrives decides the rest.

Alt text comes from the feed: the ``media:description`` of a ``media:content`` (else its ``media:title``),
else those of its ``media:group``, else those of the item, else the Atom enclosure's ``title``.
feedparser folds ``media:description`` into the item's summary, so those are read here with a small
expat pass of their own over the same (already cut, spec §14.4) document, as a map from URL to text.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from tidings.protocol.blobs import MAX_ALT
from tidings.protocol.content import MAX_ORIGIN_URL, MAX_TEXT

__all__ = ["MediaLink", "alt_texts", "media_links", "with_links"]

_MRSS = frozenset({"http://search.yahoo.com/mrss/", "http://search.yahoo.com/mrss"})
_ITEMS = frozenset({"item", "entry"})
_KEEP_TEXT = 4 * MAX_ALT  # characters of one media:title or media:description kept while reading


@dataclass(frozen=True, kw_only=True)
class MediaLink:
    """One picture or file an item names: its absolute http(s) URL and what the feed says of it."""

    url: str
    mime: str | None  # declared type, lower case, no parameters: a hint
    length: int | None  # declared length in bytes: a hint
    alt: str | None  # from the feed (module docstring), at most MAX_ALT bytes
    thumbnail: bool = False

    @property
    def maybe_picture(self) -> bool:
        """Whether the feed does not say it is something other than a picture."""
        return self.mime is None or self.mime.startswith("image/")


def _clip(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", "ignore") + "…"


def _mime(value: Any) -> str | None:
    text = str(value or "").split(";", 1)[0].strip().lower()
    return text or None


def _length(value: Any) -> int | None:
    text = str(value or "").strip()
    return int(text) if text.isdigit() and len(text) < 19 else None


def _url(base: str, value: Any) -> str | None:
    text = str(value or "").strip()
    if not text:
        return None
    url = urljoin(base, text) if base else text
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > MAX_ORIGIN_URL:
        return None
    return url.split("#", 1)[0]


def media_links(entry: Any, *, base: str = "", alts: dict[str, str] | None = None) -> tuple[MediaLink, ...]:
    """The media ``entry`` (a feedparser entry) names, in the order above; ``base`` resolves relative
    URLs, ``alts`` is ``alt_texts`` of the document."""
    alts = alts or {}
    found: dict[str, MediaLink] = {}

    def add(raw: Any, mime: Any, length: Any, title: Any = None, *, thumbnail: bool = False) -> None:
        url = _url(base, raw)
        if url is None or url in found:
            return
        alt = alts.get(url) or " ".join(str(title or "").split()) or None
        found[url] = MediaLink(
            url=url,
            mime=_mime(mime),
            length=_length(length),
            alt=_clip(alt, MAX_ALT) if alt else None,
            thumbnail=thumbnail,
        )

    for link in entry.get("links") or []:
        if isinstance(link, dict) and link.get("rel") == "enclosure":
            add(link.get("href"), link.get("type"), link.get("length"), link.get("title"))
    for media in entry.get("media_content") or []:
        if isinstance(media, dict):
            medium = str(media.get("medium") or "").lower()
            mime = media.get("type") or (
                "image/*" if medium == "image" else medium + "/*" if medium else None
            )
            add(media.get("url"), mime, media.get("filesize") or media.get("fileSize"))
    if not any(m.maybe_picture for m in found.values()):
        for thumb in entry.get("media_thumbnail") or []:
            if isinstance(thumb, dict):
                add(thumb.get("url"), "image/*", None, thumbnail=True)
    return tuple(found.values())


class _AltReader:
    """The expat pass of the module docstring: URL -> the alt text the feed gives it."""

    def __init__(self, clean: Callable[[str], str]) -> None:
        self.clean = clean
        self.alts: dict[str, str] = {}
        self.depth = 0
        self.item_urls: list[str] | None = None
        self.group_urls: list[str] | None = None
        self.content_url: str | None = None
        self.text: list[str] | None = None
        self.own: dict[str, dict[str, str]] = {}  # url -> {"description"/"title": text}
        self.group: dict[str, str] = {}
        self.item: dict[str, str] = {}

    def start(self, name: str, attrs: dict[str, str]) -> None:
        ns, _, local = name.rpartition(" ")
        if local in _ITEMS and ns not in _MRSS:
            self.item_urls, self.item = [], {}
        if ns not in _MRSS or self.item_urls is None:
            return
        if local == "group":
            self.group_urls, self.group = [], {}
        elif local in ("content", "thumbnail"):
            url = attrs.get("url", "").strip()
            if url:
                self.item_urls.append(url)
                if self.group_urls is not None:
                    self.group_urls.append(url)
                if local == "content":
                    self.content_url = url
        elif local in ("description", "title"):
            self.text = []

    def chars(self, data: str) -> None:
        if self.text is not None and sum(map(len, self.text)) < _KEEP_TEXT:
            self.text.append(data)

    def end(self, name: str) -> None:
        ns, _, local = name.rpartition(" ")
        if local in _ITEMS and ns not in _MRSS and self.item_urls is not None:
            self._settle(self.item_urls, self.item)
            self.item_urls = None
        if ns not in _MRSS or self.item_urls is None:
            return
        if local in ("description", "title") and self.text is not None:
            text = " ".join(self.clean("".join(self.text)).split())
            self.text = None
            if not text:
                return
            if self.content_url is not None:
                self.own.setdefault(self.content_url, {}).setdefault(local, text)
            elif self.group_urls is not None:
                self.group.setdefault(local, text)
            else:
                self.item.setdefault(local, text)
        elif local == "content":
            self.content_url = None
        elif local == "group" and self.group_urls is not None:
            self._settle(self.group_urls, self.group)
            self.group_urls = None

    def _settle(self, urls: Iterable[str], shared: dict[str, str]) -> None:
        for url in urls:
            own = self.own.get(url, {})
            text = own.get("description") or own.get("title")
            if not text:
                text = shared.get("description") or shared.get("title")
            if text and url not in self.alts:
                self.alts[url] = _clip(text, MAX_ALT)


def alt_texts(
    document: bytes, *, base: str = "", clean: Callable[[str], str] = lambda text: text
) -> dict[str, str]:
    """Absolute URL -> alt text, from the Media RSS titles and descriptions of ``document`` (each made
    plain text by ``clean``). A document expat cannot read (feedparser is more lenient) gives what was
    read before the fault."""
    from xml.parsers import expat

    reader = _AltReader(clean)
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.StartElementHandler = reader.start
    parser.EndElementHandler = reader.end
    parser.CharacterDataHandler = reader.chars
    with contextlib.suppress(expat.ExpatError):
        parser.Parse(document, True)
    out: dict[str, str] = {}
    for url, text in reader.alts.items():
        absolute = _url(base, url)
        if absolute is not None:
            out.setdefault(absolute, text)
    return out


def with_links(text: str, urls: Iterable[str]) -> str:
    """``text`` with each of ``urls`` (media that did not come in) on a line of its own at the end, as
    many as fit in a post's text (spec §8.3): the post still points at what it could not carry."""
    out = text
    for url in urls:
        if url in out:
            continue
        longer = f"{out}\n{url}"
        if len(longer.encode("utf-8")) <= MAX_TEXT:
            out = longer
    return out
