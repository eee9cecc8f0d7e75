"""Human-readable output of entries (the ``--json`` shapes come from ``storage.reads`` unchanged).

Plain ``click.style`` text: click drops the colours when the output is not a terminal, and this costs
no import time (rich is not needed for lines of text).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from tidings.storage.store import Store

__all__ = ["Names", "print_entries", "print_profiles", "short"]

_VERBS = {"follow": "follows", "unfollow": "unfollows", "block": "blocks", "unblock": "unblocks"}


def short(text_id: str | None, size: int = 12) -> str:
    """The first characters of an id: enough to recognise it and to pass back as a prefix."""
    if not text_id:
        return "?"
    return text_id if len(text_id) <= size else text_id[:size] + "…"


def when(ts: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts / 1000))


class Names:
    """Display names of feeds (profile name, else a short id), looked up once per command."""

    def __init__(self, store: Store, me: bytes | None = None) -> None:
        self._store = store
        self._me = me
        self._labels: dict[str, str] = {}

    def load(self, feed_texts: Iterable[str]) -> None:
        from tidings.protocol import FeedId, ProtocolError

        keys: dict[bytes, str] = {}
        for text in feed_texts:
            if text in self._labels:
                continue
            try:
                keys[FeedId.parse(text).key] = text
            except ProtocolError:
                continue
        found = self._store.names(set(keys))
        for key, text in keys.items():
            name = found.get(key)
            label = name if name else short(text, 14)
            if key == self._me:
                label += " (you)"
            self._labels[text] = label

    def label(self, feed_text: str) -> str:
        if feed_text not in self._labels:
            self.load([feed_text])
        return self._labels.get(feed_text, short(feed_text, 14))


def _feeds_in(items: list[dict[str, Any]]) -> set[str]:
    out: set[str] = set()
    for item in items:
        out.add(item["feed"])
        content = item.get("content") or {}
        if isinstance(content.get("feed"), str):
            out.add(content["feed"])
    return out


def _summary(item: dict[str, Any], names: Names, store: Store) -> list[str]:
    """The body lines of one entry."""
    kind = item.get("type")
    content = item.get("content")
    if item.get("deleted"):
        return [click.style("[deleted]", dim=True)]
    if content is None:
        return [click.style(f"[{kind or 'unknown'} entry, not shown]", dim=True)]
    if kind == "post":
        lines = []
        if content.get("reply"):
            lines.append(click.style(f"↪ reply to {short(content['reply'])}", dim=True))
        lines.extend(str(content.get("text", "")).splitlines() or [""])
        return lines
    if kind == "reaction":
        return [f"reacted {content.get('emoji')} to {short(content.get('target'))}"]
    if kind == "repost":
        return [f"reposted {short(content.get('target'))}", *_quoted(store, content.get("target"))]
    if kind == "delete":
        return [f"deleted {short(content.get('target'))}"]
    if kind in _VERBS:
        return [f"{_VERBS[kind]} {names.label(content.get('feed', ''))}"]
    if kind == "profile":
        parts = [f"{k}: {content[k]!r}" for k in ("name", "bio") if content.get(k) is not None]
        return ["profile " + ", ".join(parts)]
    return [click.style(f"[{kind} entry]", dim=True)]


def _quoted(store: Store, target: str | None) -> list[str]:
    """The first line of a reposted post, when this store holds it."""
    if not target:
        return []
    from tidings.protocol import EntryId, ProtocolError
    from tidings.storage.errors import StoreError

    try:
        original = store.entry(EntryId.parse(target).hash)
    except (ProtocolError, StoreError):
        return []
    text = (original.get("content") or {}).get("text")
    if not isinstance(text, str) or not text.strip():
        return []
    first = text.strip().splitlines()[0]
    return [click.style(f"│ {first[:100]}", dim=True)]


def print_entries(
    store: Store,
    items: list[dict[str, Any]],
    names: Names,
    *,
    depths: dict[str, int] | None = None,
) -> None:
    """Print entries as short blocks; ``why`` lists (timeline --explain) go under their entry."""
    names.load(_feeds_in(items))
    for n, item in enumerate(items):
        pad = "    " * (depths or {}).get(item["id"], 0)
        if n:
            click.echo()
        head = (
            f"{click.style(names.label(item['feed']), bold=True)}  "
            f"{click.style(when(item['ts']), dim=True)}  "
            f"{click.style(short(item['id'], 14), fg='cyan')}"
        )
        click.echo(pad + head)
        for line in _summary(item, names, store):
            click.echo(f"{pad}  {line}")
        for reason in item.get("why", ()):
            click.echo(click.style(f"{pad}  · {reason}", dim=True))


def print_profiles(items: list[dict[str, Any]], names: Names) -> None:
    """Print the profile hits of a search: who (name and id), then the bio."""
    names.load(item["feed"] for item in items)
    for n, item in enumerate(items):
        if n:
            click.echo()
        profile = item["profile"]
        click.echo(
            f"{click.style(names.label(item['feed']), bold=True)}  "
            f"{click.style('profile', dim=True)}  {click.style(item['feed'], fg='cyan')}"
        )
        if profile.get("bio"):
            for line in str(profile["bio"]).splitlines():
                click.echo(f"  {line}")
