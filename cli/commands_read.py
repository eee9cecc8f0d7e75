"""Reading: ``log``, ``timeline``, ``thread``, ``search``.

JSON Lines of ``{"id", "feed", "seq", "ts", "type", "content"}`` (the shape ``storage.reads`` returns);
the timeline adds ``score`` and, with ``--explain``, ``why``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from .commands_rank import ranked_timeline, ranking_options
from .common import CliError, FeedType, Session, common_options, emit_lines, json_option, pass_session
from .render import Names, print_entries, print_profiles

if TYPE_CHECKING:
    from tidings.storage.store import Store

__all__ = ["COMMANDS"]


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
@ranking_options
@click.option("--swarm", metavar="NAME", help="Only the posts of this swarm's members (a swarm you joined).")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="At most N entries.")
@click.option(
    "--now", type=int, hidden=True, help="Rank as at this time (ms since the epoch): reproducible runs."
)
@common_options
@json_option
@pass_session
def timeline(
    session: Session,
    ranker: str,
    weights: tuple[str, ...],
    explain: bool,
    explain_hidden: bool,
    swarm: str | None,
    limit: int,
    now: int | None,
    as_json: bool,
) -> None:
    """Your timeline, ranked on this machine by the ranker you choose (see: tidings rankers).

    Posts and reposts of you and the feeds you follow (or of a swarm's members), minus blocks and mutes.
    """
    from tidings.node.ranking.registry import load_rankers

    registry = load_rankers()
    if ranker not in registry.rankers:  # a usage error, before the home is even opened
        known = ", ".join(sorted(registry.rankers))
        raise click.UsageError(f"no ranker named {ranker!r}; available: {known}")
    store = session.store()
    me = session.me()
    members = None
    if swarm is not None:
        from tidings.node.ranking.timeline import swarm_timeline
        from tidings.storage.dht import swarm_members, swarm_names

        if swarm not in swarm_names(store):
            raise CliError(
                f"not in swarm {swarm}: join it with 'tidings swarm join {swarm}'", code="not_found"
            )
        if ranker == "chronological":
            items = swarm_timeline(store, me, swarm, limit)
            _show(store, me, items, explain, as_json)
            return
        if ranker != "swarm":
            raise click.UsageError("--swarm goes with --ranker chronological or --ranker swarm")
        members = swarm_members(store, swarm)
    for problem in registry.problems:
        click.echo(f"warning: {problem}", err=True)
    items = ranked_timeline(
        store,
        me,
        ranker=ranker,
        weights=weights,
        limit=limit,
        explain=explain or explain_hidden,
        explain_hidden=explain_hidden,
        now=now,
        config=session.home.config(),
        swarm_members=members,
        registry=registry,
    )
    _show(store, me, items, explain or explain_hidden, as_json)


def _show(store: Store, me: bytes, items: list[dict[str, Any]], explain: bool, as_json: bool) -> None:
    if not explain:
        for item in items:
            item.pop("why", None)
    if as_json:
        emit_lines(items)
    elif not items:
        click.echo("your timeline is empty: post something, or follow someone (tidings follow @FEED)")
    else:
        print_entries(store, items, Names(store, me))  # prints each entry's "why" when present


@click.command()
@click.argument("entry")
@common_options
@json_option
@pass_session
def thread(session: Session, entry: str, as_json: bool) -> None:
    """The conversation ENTRY belongs to: its root, then the replies in time order."""
    from tidings.node.actions import resolve

    store = session.store()
    items = store.thread(resolve(store, entry))
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
@click.option("--fts", is_flag=True, help='Read QUERY as SQLite FTS5 syntax (OR, NOT, "phrases", prefix*).')
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="At most N results.")
@common_options
@json_option
@pass_session
def search(session: Session, query: str, fts: bool, limit: int, as_json: bool) -> None:
    """Search stored profiles (name, bio) and posts: people first, then posts, best match first.

    QUERY is plain words, each of which must appear (any punctuation is fine: don't, e-mail, c++,
    #tag, 5:30); a word ending in * matches as a prefix. With --fts it is SQLite FTS5 syntax.
    """
    if not query.strip():
        raise click.BadParameter("give some words to search for", param_hint="QUERY")
    store = session.store()
    items = store.search(query, limit=limit, fts=fts)
    if as_json:
        emit_lines(items)
    elif not items:
        click.echo("no matches")
    else:
        names = Names(store, session.me())
        people = [item for item in items if item["type"] == "profile" and "profile" in item]
        print_profiles(people, names)
        if people and len(people) < len(items):
            click.echo()
        print_entries(store, items[len(people) :], names)


COMMANDS = [log, timeline, thread, search]
