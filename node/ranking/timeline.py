"""A ranked timeline: gather candidates, filter, rank, cut (spec/ranking.md §1).

``rank_timeline`` is the whole pipeline, free of click: the CLI (cli/commands_rank.py) and the web API
call it. Steps:

1. the ranker's weights: its defaults, config.toml ``[rankers.NAME]``, then the caller's overrides;
2. its candidate authors (``Ranker.authors``: by default you and whom you follow);
3. candidates: their posts and reposts newest first over the index of the ranked time
   ``min(ts, received + skew)`` (storage/ranking.py, spec/ranking.md §1.1), at most ``pool`` of them
   ranked no earlier than ``window_hours`` ago (the weights, when the ranker has them; a ranker
   without ``pool`` sees the newest ``limit``), after the filters (node/ranking/filters.py);
4. ``rank``; the result is ordered by ``(-score, entry id)`` and cut to ``limit``. With ``explain``,
   an entry dated in the future says so, whichever ranker placed it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from tidings.node.ranking.base import Candidate, RankContext, Ranked, RankingError
from tidings.node.ranking.filters import Filters, FilterSettings, Hidden
from tidings.node.ranking.rankers import future_reason
from tidings.node.ranking.registry import Registry, load_rankers, resolve_weights
from tidings.protocol import DecodeError, EntryId, InvalidContent, decode, entry_id_text, feed_id_text
from tidings.storage import ranking as queries

if TYPE_CHECKING:
    from tidings.storage.store import Store

__all__ = ["rank_timeline", "swarm_timeline"]

_HOUR_MS = 3_600_000
_OLDEST = -(2**62)


class _Labels:
    """Short names of feeds for reasons: ``name (@abcdefgh…)`` or ``@abcdefghijkl…``."""

    def __init__(self, store: Store, me: bytes) -> None:
        self._store = store
        self._me = me
        self._names: dict[bytes, str | None] = {}

    def preload(self, feeds: Collection[bytes]) -> None:
        todo = {f for f in feeds if f not in self._names}
        if todo:
            found = self._store.names(todo)
            for f in todo:
                self._names[f] = found.get(f)

    def __call__(self, feed: bytes) -> str:
        if feed not in self._names:
            self.preload({feed})
        text = feed_id_text(feed)
        name = self._names[feed]
        label = f"{name} ({text[:9]}…)" if name else f"{text[:13]}…"
        return label + " (you)" if feed == self._me else label


def _ref(value: Any) -> bytes | None:
    return value if isinstance(value, bytes) and len(value) == 32 else None


def _candidate(row: tuple[Any, ...], feed_text: dict[bytes, str]) -> Candidate | None:
    _rowid, hash_, author, seq, ts, kind, payload, _deleted, received, rank_ts = row
    try:
        content = decode(payload) if payload is not None else None
    except (DecodeError, InvalidContent):
        content = None
    if not isinstance(content, dict):
        return None  # undecodable payload: nothing to show
    author = bytes(author)
    feed = feed_text.get(author)
    if feed is None:
        feed = feed_text[author] = feed_id_text(author)
    target = _ref(content.get("target")) if kind == "repost" else None
    if kind == "repost" and target is None:
        return None
    text, lang = content.get("text", ""), content.get("lang")
    return Candidate(
        entry={"id": entry_id_text(hash_), "feed": feed, "seq": seq, "ts": ts, "type": kind},
        hash=bytes(hash_),
        author=author,
        ts=ts,
        received=received,
        rank_ts=rank_ts,
        type=kind,
        text=text if isinstance(text, str) else "",
        reply=_ref(content.get("reply")),
        target=target,
        lang=lang if isinstance(lang, str) else None,
        payload=bytes(payload),
    )


def _gather(store: Store, filters: Filters, *, pool: int, since: int) -> tuple[list[Candidate], list[Hidden]]:
    """Up to ``pool`` shown candidates, newest first, and the hidden ones met on the way."""
    shown: list[Candidate] = []
    hidden: list[Hidden] = []
    cursor: tuple[int, int] | None = None
    feed_text: dict[bytes, str] = {}
    page = max(pool + pool // 4, 32)
    while len(shown) < pool:
        rows = queries.candidate_page(store, before=cursor, since=since, n=page)
        cands = [c for c in (_candidate(r, feed_text) for r in rows) if c is not None]
        more_shown, more_hidden = filters.split(cands)
        shown += more_shown
        hidden += more_hidden
        if len(rows) < page:
            break
        cursor = (rows[-1][9], rows[-1][0])  # (ranked time, row id)
    return shown[:pool], hidden


def _check(ranker: Any, origin: str, ranked: Any, candidates: list[Candidate]) -> list[Ranked]:
    """A ranker's output, or ``ranker_failed`` saying what is wrong with it."""

    def bad(why: str) -> RankingError:
        return RankingError(f"ranker {ranker.name!r} ({origin}) {why}", code="ranker_failed")

    if not isinstance(ranked, list):
        raise bad(f"returned {type(ranked).__name__}, not a list of Ranked")
    ids = {c.id for c in candidates}
    seen: set[str] = set()
    for item in ranked:
        if not isinstance(item, Ranked):
            raise bad(f"returned a {type(item).__name__}, not a Ranked")
        entry_id = item.entry.get("id") if isinstance(item.entry, dict) else None
        if entry_id not in ids:
            raise bad(f"returned an entry that was not a candidate ({entry_id!r})")
        if entry_id in seen:
            raise bad(f"returned {entry_id} twice")
        seen.add(entry_id)
    return ranked


@contextlib.contextmanager
def _plugin_faults(ranker: Any, origin: str) -> Iterator[None]:
    """A plugin ranker that raises fails the request as ``ranker_failed`` (spec/ranking.md §1); a
    built-in's exception is a bug and goes up as it is."""
    try:
        yield
    except RankingError:
        raise
    except Exception as exc:
        if origin == "built-in":
            raise
        raise RankingError(
            f"ranker {ranker.name!r} ({origin}) failed: {type(exc).__name__}: {exc}", code="ranker_failed"
        ) from exc


def rank_timeline(
    store: Store,
    me: bytes,
    *,
    ranker: str = "chronological",
    weights: Mapping[str, float] | None = None,
    limit: int = 50,
    explain: bool = False,
    explain_hidden: bool = False,
    now: int,
    config: Mapping[str, Any] | None = None,
    swarm_members: Collection[bytes] | None = None,
    registry: Registry | None = None,
) -> list[dict[str, Any]]:
    """The timeline as JSON-ready dicts (spec/cli.md): ``id, feed, seq, ts, type, content, score`` (+ ``why``).

    With ``explain_hidden``, the candidates the filters removed follow the shown ones as
    ``{"id", "feed", "seq", "ts", "type", "content": null, "hidden": true, "why": [...]}`` (their
    content is withheld: blocked and muted content never appears). Raises ``RankingError``.
    """
    registry = registry if registry is not None else load_rankers()
    chosen = registry.get(ranker)
    origin = registry.origins.get(chosen.name, "plugin")
    w = resolve_weights(chosen, config, weights)
    settings = FilterSettings.from_config(config)
    labels = _Labels(store, me)
    follows = frozenset(store.graph_targets(me, "follow")) - {me}
    context = RankContext(
        store=store,
        me=me,
        now=now,
        follows=follows,
        weights=w,
        swarm_members=frozenset(swarm_members) if swarm_members is not None else None,
        explain=explain,
        label=labels,
    )
    filters = Filters(store, me, follows, settings, labels)
    with _plugin_faults(chosen, origin):
        authors = set(chosen.authors(context)) if hasattr(chosen, "authors") else {me} | set(follows)
    if not explain_hidden:  # nothing will be said about them: do not even read them
        authors -= set(filters.muted_feeds) | set(filters.blocked)
    queries.set_authors(store, authors)
    pool = int(w["pool"]) if "pool" in w else limit
    since = now - int(w["window_hours"] * _HOUR_MS) if "window_hours" in w else _OLDEST
    shown, hidden = _gather(store, filters, pool=pool, since=since)
    if explain:
        labels.preload({c.author for c in shown})
    with _plugin_faults(chosen, origin):
        ranked = chosen.rank(shown, context)
    ranked = _check(chosen, origin, ranked, shown)
    ranked.sort(key=lambda r: (-r.score, r.entry["id"]))
    by_id = {c.id: c for c in shown}
    out: list[dict[str, Any]] = []
    placed: dict[bytes, dict[str, Any]] = {}  # subject (a post, or what a repost reposts) -> its row
    for item in ranked:
        if len(out) >= limit:
            break
        cand = by_id[item.entry["id"]]
        subject = cand.target if cand.target is not None else cand.hash
        first = placed.get(subject)
        if first is not None:  # a post and its reposts appear once, where the best of them ranks
            if explain:
                what = "reposted" if cand.target is not None else "posted"
                first["why"].append(f"also {what} by {labels(cand.author)} ({cand.id[:9]}…)")
            continue
        row = {k: cand.entry[k] for k in ("id", "feed", "seq", "ts", "type")}
        row["content"] = cand.content
        row["score"] = item.score
        if explain:
            row["why"] = list(item.reasons)
            if cand.clamped:  # spec/ranking.md §1.1, whichever ranker placed it
                row["why"].append(future_reason(cand.ts, cand.received))
        placed[subject] = row
        out.append(row)
    if explain_hidden:
        for h in hidden:
            c = h.candidate
            row = {k: c.entry[k] for k in ("id", "feed", "seq", "ts", "type")}
            row.update(content=None, hidden=True, why=list(h.reasons))
            out.append(row)
    return out


def swarm_timeline(store: Store, me: bytes, swarm: str, limit: int) -> list[dict[str, Any]]:
    """Posts and reposts of a swarm's members found so far (and yours), newest ranked time first
    (score: the ranked time, spec/ranking.md §1.1)."""
    items = store.timeline(me, limit=limit, swarm=swarm)
    times = queries.rank_times(store, [EntryId.parse(i["id"]).hash for i in items]) if items else {}
    for item in items:
        ts, received, rank_ts = times[EntryId.parse(item["id"]).hash]
        item["score"] = rank_ts
        item["why"] = ["chronological: newest first", f"member of swarm {swarm}"]
        if rank_ts < ts:
            item["why"].append(future_reason(ts, received))
    return items
