"""Filters applied to timeline candidates before any ranker sees them (spec/ranking.md §6).

Blocks (yours, and with ``follows_blocks`` those of the feeds you follow), muted feeds and words
(``tidings mute``, local only), hidden replies and languages. A filtered entry keeps every reason it is
hidden, so ``tidings timeline --explain-hidden`` can say why it is absent. A repost is hidden for the
blocks and mutes of the feed it reposts too, so blocked content never comes back through a repost.

Settings come from the home's config.toml::

    [filters]
    follows_blocks = false     # also hide feeds blocked by people you follow
    hide_replies = false
    languages = []             # e.g. ["en", "de"]: hide posts tagged with another language
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tidings.node.ranking.base import Candidate, RankingError
from tidings.storage import ranking as queries

if TYPE_CHECKING:
    from tidings.storage.store import Store

__all__ = ["FilterSettings", "Filters", "Hidden"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FilterSettings:
    """Which optional filters are on (blocks by you and mutes always are)."""

    follows_blocks: bool = False
    hide_replies: bool = False
    languages: frozenset[str] = frozenset()

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> FilterSettings:
        """From config.toml's ``[filters]`` table; wrong types are a ``bad_config`` error."""
        table = (config or {}).get("filters") or {}
        if not isinstance(table, Mapping):
            raise RankingError("config.toml [filters] must be a table", code="bad_config")
        unknown = set(table) - {"follows_blocks", "hide_replies", "languages"}
        if unknown:
            raise RankingError(
                f"config.toml [filters] has no setting {sorted(unknown)[0]!r} "
                "(settings: follows_blocks, hide_replies, languages)",
                code="bad_config",
            )
        for key in ("follows_blocks", "hide_replies"):
            if not isinstance(table.get(key, False), bool):
                raise RankingError(f"config.toml [filters] {key} must be true or false", code="bad_config")
        langs = table.get("languages", [])
        if not isinstance(langs, list) or not all(isinstance(x, str) for x in langs):
            raise RankingError("config.toml [filters] languages must be a list of strings", code="bad_config")
        return cls(
            follows_blocks=table.get("follows_blocks", False),
            hide_replies=table.get("hide_replies", False),
            languages=frozenset(x.lower() for x in langs),
        )


@dataclass(frozen=True, slots=True)
class Hidden:
    """A candidate the filters removed, and every reason why."""

    candidate: Candidate
    reasons: list[str] = field(default_factory=list)


class Filters:
    """The block and mute state of one timeline request, loaded once; ``split`` applies it."""

    def __init__(
        self,
        store: Store,
        me: bytes,
        follows: frozenset[bytes],
        settings: FilterSettings,
        label: Callable[[bytes], str],
    ) -> None:
        from tidings.protocol import FeedId, ProtocolError

        self._store = store
        self._settings = settings
        self._label = label
        self._me = me
        blockers = {me} | (set(follows) if settings.follows_blocks else set())
        self.blocked = queries.blocks_by(store, blockers)  # feed -> who blocks it
        self.muted_feeds: set[bytes] = set()
        self.words: list[str] = []
        for mute in store.mutes():
            if mute["kind"] == "feed":
                try:
                    self.muted_feeds.add(FeedId.parse(mute["value"]).key)
                except ProtocolError:
                    continue  # a malformed mute hides nothing
            elif mute["kind"] == "word" and mute["value"].strip():
                self.words.append(mute["value"].lower())

    def _feed_reasons(self, feed: bytes, prefix: str) -> list[str]:
        out: list[str] = []
        if feed not in self.blocked and feed not in self.muted_feeds:
            return out
        who = self._label(feed)
        for blocker in self.blocked.get(feed, ()):
            if blocker == self._me:
                out.append(f"{prefix}{who} is blocked by you")
            else:
                out.append(f"{prefix}{who} is blocked by {self._label(blocker)}, whom you follow")
        if feed in self.muted_feeds:
            out.append(f"{prefix}{who} is muted")
        return out

    def reasons(self, cand: Candidate, target_author: bytes | None) -> list[str]:
        """Why ``cand`` is hidden (empty: it is shown)."""
        out = self._feed_reasons(cand.author, "")
        if target_author is not None and target_author != cand.author:
            out += self._feed_reasons(target_author, "reposts a post of ")
        if self.words:
            text = cand.text.lower()
            out += [f"contains the muted word {w!r}" for w in self.words if w in text]
        if self._settings.hide_replies and cand.reply is not None:
            out.append("a reply, and replies are hidden")
        langs = self._settings.languages
        if langs and cand.lang is not None and cand.lang.lower() not in langs:
            out.append(f"in language {cand.lang!r}, not one of yours ({', '.join(sorted(langs))})")
        return out

    def split(self, candidates: Sequence[Candidate]) -> tuple[list[Candidate], list[Hidden]]:
        """``(shown, hidden)``, each in the order given."""
        targets = [c.target for c in candidates if c.target is not None]
        authors = queries.entry_authors(self._store, targets) if targets else {}
        shown: list[Candidate] = []
        hidden: list[Hidden] = []
        for cand in candidates:
            why = self.reasons(cand, authors.get(cand.target) if cand.target is not None else None)
            if why:
                hidden.append(Hidden(cand, why))
            else:
                shown.append(cand)
        return shown, hidden
