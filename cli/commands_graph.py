"""Social graph: ``follow``, ``unfollow``, ``block``, ``unblock`` (published entries), ``mute`` and
``unmute`` (local only, never published), ``following``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import click

from .commands_write import report, write
from .common import FeedType, Session, common_options, emit, emit_lines, json_option, pass_session

if TYPE_CHECKING:
    from tidings.node.actions import GraphKind

__all__ = ["COMMANDS"]


def _graph_command(kind: GraphKind, verb: str, summary: str) -> click.Command:
    """One of follow/unfollow/block/unblock: each appends the matching entry to your log."""

    @click.command(
        kind,
        help=f"{summary} Appends a '{kind}' entry to your log (public); "
        "when nothing would change, writes nothing and says so.",
    )
    @click.argument("feed", type=FeedType())
    @common_options
    @json_option
    @pass_session
    def command(session: Session, feed: bytes, as_json: bool) -> None:
        from tidings.node import actions

        store, key, now = write(session)
        out = actions.graph(store, key, kind, feed, now=now)
        if not out["changed"] and not as_json:
            click.echo(f"{out['note']}: nothing written")
        else:
            report(out, as_json, verb)
        if "warning" in out and not as_json:
            click.echo(f"warning: {out['warning']}", err=True)

    return command


follow = _graph_command("follow", "followed; entry", "Follow FEED: its posts join your timeline.")
unfollow = _graph_command("unfollow", "unfollowed; entry", "Stop following FEED.")
block = _graph_command("block", "blocked; entry", "Block FEED: hidden everywhere, not replicated.")
unblock = _graph_command("unblock", "unblocked; entry", "Lift a block of FEED.")


def _mute_target(feed: bytes | None, word: str | None) -> tuple[Literal["feed", "word"], str]:
    from tidings.protocol import feed_id_text

    if (feed is None) == (word is None):
        raise click.UsageError("give either FEED or --word WORD")
    if feed is not None:
        return "feed", feed_id_text(feed)
    assert word is not None
    word = word.strip().lower()
    if not word:
        raise click.UsageError("--word must not be empty")
    return "word", word


@click.command()
@click.argument("feed", required=False, type=FeedType())
@click.option("--word", help="Hide posts containing this word (case-insensitive).")
@click.option("--list", "list_", is_flag=True, help="List current mutes.")
@common_options
@json_option
@pass_session
def mute(session: Session, feed: bytes | None, word: str | None, list_: bool, as_json: bool) -> None:
    """Hide FEED or posts with --word WORD from your timeline. Local only: never published."""
    store = session.store()
    if list_ or (feed is None and word is None):
        mutes = store.mutes()
        if as_json:
            emit_lines(mutes)
        elif not mutes:
            click.echo("nothing is muted")
        for m in [] if as_json else mutes:
            click.echo(f"{m['kind']:5} {m['value']}")
        return
    from tidings.node import actions

    kind, value = _mute_target(feed, word)
    out = actions.mute(store, session.me(), kind, value)
    if as_json:
        emit(out)
    else:
        click.echo(f"muted {kind} {value}" if out["changed"] else f"{kind} {value} was already muted")


@click.command()
@click.argument("feed", required=False, type=FeedType())
@click.option("--word", help="The muted word to show again.")
@common_options
@json_option
@pass_session
def unmute(session: Session, feed: bytes | None, word: str | None, as_json: bool) -> None:
    """Show FEED (or posts with --word WORD) again."""
    from tidings.node import actions

    kind, value = _mute_target(feed, word)
    out = actions.unmute(session.store(), kind, value)
    if as_json:
        emit(out)
    else:
        click.echo(f"unmuted {kind} {value}" if out["changed"] else f"{kind} {value} was not muted")


@click.command()
@common_options
@json_option
@pass_session
def following(session: Session, as_json: bool) -> None:
    """The feeds you follow (JSON Lines {"feed", "name"}; "blocked": true on those you also block)."""
    rows = session.store().following(session.me())
    if as_json:
        emit_lines(rows)
        return
    if not rows:
        click.echo("you follow no one yet: tidings follow @FEED")
    for row in rows:
        blocked = "  (blocked: not shown or replicated until you unblock it)" if row.get("blocked") else ""
        click.echo(f"{row['feed']}  {row['name'] or ''}".rstrip() + blocked)


COMMANDS = [follow, unfollow, block, unblock, mute, unmute, following]
