"""``tidings bridge rss ...``: the RSS/Atom-in bridge's commands (spec §14.4, spec/cli.md *Bridges*).

Mounted by ``commands_bridge.BridgeGroup`` as the ``rss`` bridge's group. ``poll`` polls the followed
feeds once on the CLI's own store (``node.bridges.rss.poll_source``), as the running node does when due:
a few at once, each fetch within the bridge's ``timeout`` (spec §14.4), so the command ends within
about ``timeout`` × ceil(sources / 4) seconds whatever the servers do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
import trio
from tidings.node.bridges.blob_access import BridgeBlobs
from tidings.node.bridges.rss import (
    NAME,
    PollOutcome,
    RssBridge,
    RssService,
    check_url,
    poll_source,
    rss_config,
)
from tidings.node.bridges.sources import follow_source, unfollow_source
from tidings.storage.clock import wall_ms

from .common import CliError, Session, common_options, emit, emit_lines, json_option, pass_session, run_trio

__all__ = ["rss_group"]


@click.group("rss")
def rss_group() -> None:
    """RSS/Atom in: follow web feeds as bridge feeds."""


@rss_group.command("follow")
@click.argument("url")
@common_options
@json_option
@pass_session
def rss_follow(session: Session, url: str, as_json: bool) -> None:
    """Follow the RSS or Atom feed at URL (its items are imported by 'poll' or the running node)."""
    from tidings.protocol import feed_id_text

    url = check_url(url)
    store = session.store()
    bridge_feed, followed = follow_source(store, session.home, session.key(), NAME, url, wall_ms())
    out = {"source": url, "feed": feed_id_text(bridge_feed), "followed": followed}
    if as_json:
        emit(out)
    else:
        click.echo(f"following {url} as {out['feed']}; run 'tidings bridge rss poll' or 'tidings run'")


@rss_group.command("unfollow")
@click.argument("url")
@common_options
@json_option
@pass_session
def rss_unfollow(session: Session, url: str, as_json: bool) -> None:
    """Stop following URL (its imported posts stay; following it again imports only new items)."""
    from tidings.protocol import feed_id_text

    url = url.strip()
    src = unfollow_source(session.store(), session.key(), NAME, url)
    if src is None:
        raise CliError(f"not following {url}", code="not_found")
    out = {"source": url, "feed": feed_id_text(src["feed"]) if src["feed"] else None, "unfollowed": True}
    if as_json:
        emit(out)
    else:
        click.echo(f"unfollowed {url}")


@rss_group.command("list")
@common_options
@json_option
@pass_session
def rss_list(session: Session, as_json: bool) -> None:
    """Followed web feeds: bridge feed, title, last poll, last error."""
    from tidings.protocol import feed_id_text
    from tidings.storage import bridges as db

    rows = [
        {
            "source": s["source"],
            "feed": feed_id_text(s["feed"]) if s["feed"] else None,
            "title": s["title"],
            "last_poll": s["last_poll"],
            "last_ok": s["last_ok"],
            "error": s["last_error"],
            "failures": s["failures"],
        }
        for s in db.sources(session.store(), NAME, "in")
    ]
    if as_json:
        emit_lines(rows)
    elif not rows:
        click.echo("no web feeds followed: 'tidings bridge rss follow URL'")
    else:
        for r in rows:
            state = f"error: {r['error']}" if r["error"] else "ok" if r["last_ok"] else "not polled yet"
            click.echo(f"{r['source']}  {r['title'] or ''}  {state}")


@rss_group.command("poll")
@click.argument("url", required=False)
@common_options
@json_option
@pass_session
def rss_poll(session: Session, url: str | None, as_json: bool) -> None:
    """Poll the followed feeds (or only URL) once now, without the node. Exit 1 if any failed."""
    from tidings.storage import bridges as db

    store = session.store()
    config = rss_config(RssBridge().settings_of(store))
    todo = db.sources(store, NAME, "in")
    if url is not None:
        todo = [s for s in todo if s["source"] == url.strip()]
        if not todo:
            raise CliError(f"not following {url}; 'tidings bridge rss follow URL' first", code="not_found")

    async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(store, *args, **kwargs)

    media = BridgeBlobs.open(session.home)  # pictures and files of the items, into blobs (spec §14.4)

    async def main() -> list[PollOutcome]:
        outcomes: list[PollOutcome | None] = [None] * len(todo)
        limiter = trio.CapacityLimiter(RssService.CONCURRENT)
        parse_limiter = trio.CapacityLimiter(1)

        async def one(i: int, src: dict[str, Any]) -> None:
            async with limiter:
                outcomes[i] = await poll_source(
                    call, session.home, src, config=config, parse_limiter=parse_limiter, media=media
                )

        async with trio.open_nursery() as nursery:
            for i, src in enumerate(todo):
                nursery.start_soon(one, i, src)
        return [o for o in outcomes if o is not None]

    try:
        outcomes = run_trio(main)
    finally:
        media.close()
    if as_json:
        emit_lines(o.to_json() for o in outcomes)
    else:
        for o in outcomes:
            click.echo(f"{o.source}: error: {o.error}" if o.error else f"{o.source}: {o.new} new")
            for url, why in o.skipped:
                click.echo(f"  skipped {url}: {why}")
    failed = [o for o in outcomes if o.error]
    if failed:
        if as_json:
            raise click.exceptions.Exit(1)
        raise CliError(f"{len(failed)} of {len(outcomes)} feeds failed", code="poll_failed")
