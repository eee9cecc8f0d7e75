"""Reading: ``log``, ``timeline``, ``thread``, ``search``.

JSON Lines of ``{"id", "feed", "seq", "ts", "type", "content"}`` (the shape ``storage.reads`` returns);
the timeline adds ``score`` and, with ``--explain``, ``why``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from .common import CliError, FeedType, Session, common_options, emit_lines, json_option, pass_session
from .render import Names, print_entries

if TYPE_CHECKING:
    from tidings.storage.store import Store

__all__ = ["COMMANDS", "RANKERS"]

Ranker = Callable[["Store", bytes, int], list[dict[str, Any]]]


def chronological(store: Store, me: bytes, limit: int) -> list[dict[str, Any]]:
    """Your own and followed feeds' posts and reposts, newest first (blocks and mutes filtered out).

    The score is the author's timestamp (ms), so higher is newer and scores compare across pages.
    """
    from tidings.protocol import feed_id_text

    items = store.timeline(me, limit=limit)
    own = feed_id_text(me)
    names = Names(store, me)
    names.load({item["feed"] for item in items})
    for item in items:
        item["score"] = item["ts"]
        what = "repost" if item["type"] == "repost" else "post"
        source = f"your own {what}" if item["feed"] == own else f"you follow {_who(names, item['feed'])}"
        item["why"] = ["chronological: newest first", source]
    return items


def swarm_timeline(store: Store, me: bytes, swarm: str, limit: int) -> list[dict[str, Any]]:
    """Posts and reposts of a swarm's members found so far (and yours), newest first."""
    items = store.timeline(me, limit=limit, swarm=swarm)
    for item in items:
        item["score"] = item["ts"]
        item["why"] = ["chronological: newest first", f"member of swarm {swarm}"]
    return items


def _who(names: Names, feed: str) -> str:
    label = names.label(feed)
    return feed if label.startswith("@") else f"{feed} ({label})"


#: Timeline rankers by name. Ranker plugins (entry point group ``tidings.rankers``) will join here.
RANKERS: dict[str, Ranker] = {"chronological": chronological}


@click.command()
@click.argument("feed", required=False, type=FeedType())
@click.option("--limit", type=click.IntRange(min=1), help="At most N entries (default: all).")
@click.option("--raw", is_flag=True, help="With --json, add the raw entry and payload (hex).")
@common_options
@json_option
@pass_session
def log(session: Session, feed: bytes | None, limit: int | None, raw: bool, as_json: bool) -> None:
    """One feed's entries, newest first (default: your own)."""
    from tidings.protocol import EntryId, feed_id_text

    store = session.store()
    me = session.me()
    author = feed if feed is not None else me
    if author != me and store.feed_info(author) is None:
        raise CliError(f"no feed {feed_id_text(author)} in this store", code="not_found")
    items = store.log(author, limit=limit)
    if as_json:
        if raw:
            for item in items:
                entry, payload = store.raw_entry(EntryId.parse(item["id"]).hash)
                item["raw"] = entry.hex()
                item["payload"] = None if payload is None else bytes(payload).hex()
        emit_lines(items)
    elif not items:
        click.echo("no entries yet")
    else:
        print_entries(store, items, Names(store, me))


@click.command()
@click.option(
    "--ranker",
    type=click.Choice(sorted(RANKERS)),
    default="chronological",
    show_default=True,
    help="How to order the timeline.",
)
@click.option("--swarm", metavar="NAME", help="Only the posts of this swarm's members (a swarm you joined).")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="At most N entries.")
@click.option("--explain", is_flag=True, help="Say why each entry is shown.")
@common_options
@json_option
@pass_session
def timeline(
    session: Session, ranker: str, swarm: str | None, limit: int, explain: bool, as_json: bool
) -> None:
    """Posts and reposts of you and the feeds you follow, minus blocks and mutes."""
    store = session.store()
    me = session.me()
    if swarm is not None:
        from tidings.storage.dht import swarm_names

        if swarm not in swarm_names(store):
            raise CliError(f"not in swarm {swarm}: join it with 'tidings swarm join {swarm}'", code="not_found")
        items = swarm_timeline(store, me, swarm, limit)
    else:
        items = RANKERS[ranker](store, me, limit)
    if not explain:
        for item in items:
            item.pop("why", None)
    if as_json:
        emit_lines(items)
    elif not items:
        click.echo("your timeline is empty: post something, or follow someone (tidings follow @FEED)")
    else:
        print_entries(store, items, Names(store, me))


@click.command()
@click.argument("entry")
@common_options
@json_option
@pass_session
def thread(session: Session, entry: str, as_json: bool) -> None:
    """The conversation ENTRY belongs to: its root, then the replies in time order."""
    store = session.store()
    items = store.thread(store.resolve_entry(entry))
    if as_json:
        emit_lines(items)
        return
    depths: dict[str, int] = {}
    for item in items:  # parents come before their replies (time order)
        parent = (item.get("content") or {}).get("reply")
        depths[item["id"]] = depths.get(parent, 0) + 1 if parent else 0
    print_entries(store, items, Names(store, session.me()), depths=depths)


@click.command()
@click.argument("query")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="At most N results.")
@common_options
@json_option
@pass_session
def search(session: Session, query: str, limit: int, as_json: bool) -> None:
    """Full-text search over stored posts (SQLite FTS5 syntax), best match first."""
    if not query.strip():
        raise click.BadParameter("give some words to search for", param_hint="QUERY")
    store = session.store()
    items = store.search(query, limit=limit)
    if as_json:
        emit_lines(items)
    elif not items:
        click.echo("no matches")
    else:
        print_entries(store, items, Names(store, session.me()))


COMMANDS = [log, timeline, thread, search]
