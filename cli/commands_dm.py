"""Private messages: ``dm``, ``inbox``, ``conversation`` (spec/cli.md, *Private messages*).

A message is a box in your log (spec/protocol.md §8.6): only you and its recipients can read it; nodes
that carry your log see that you wrote one, and nothing of what or to whom. The work is in
``node/dm.py``; these commands parse, call it and print.
"""

from __future__ import annotations

import click

from .common import CliError, FeedType, Session, common_options, emit, emit_lines, json_option, pass_session
from .common import read_stdin_text as _stdin

__all__ = ["COMMANDS"]

_FEED = FeedType()


def _feeds(values: tuple[str, ...], ctx: click.Context) -> list[bytes]:
    return [_FEED.convert(v, None, ctx) for v in values]


def _names(session: Session, feeds: list[str]) -> str:
    from .render import Names

    names = Names(session.store(), session.me())
    return ", ".join(names.label(f) for f in feeds)


@click.command()
@click.argument("args", nargs=-1, required=True, metavar="[FEED]... TEXT")
@click.option("--reply", "reply", metavar="ENTRY", help="Answer this message, to its people (id or prefix).")
@common_options
@json_option
@pass_session
@click.pass_context
def dm(ctx: click.Context, session: Session, args: tuple[str, ...], reply: str | None, as_json: bool) -> None:
    """Write privately to one or more feeds (up to 31 besides you). TEXT '-' reads standard input.
    Only you and they can read it; it travels in your log, so they get it even while you are offline."""
    from tidings.node import dm as private
    from tidings.node.clock import SYSTEM_CLOCK

    *people, text = args
    if not people and reply is None:
        raise click.UsageError("name at least one FEED to write to (or --reply ENTRY)")
    to = _feeds(tuple(people), ctx)
    if text == "-":
        text = _stdin()
    store = session.store()
    sent = private.send(store, session.key(), to, text, reply=reply, now=SYSTEM_CLOCK.wall_ms())
    if as_json:
        emit(sent)
    else:
        click.echo(f"sent {sent['id']} (seq {sent['seq']}) to {_names(session, sent['to'])}")


@click.command()
@click.option(
    "--requests", is_flag=True, help="Conversations of feeds you neither follow nor are followed by."
)
@common_options
@json_option
@pass_session
def inbox(session: Session, requests: bool, as_json: bool) -> None:
    """Your conversations, newest first, with unread counts; messages from strangers are requests."""
    from tidings.node import dm as private

    from .render import short, when

    store = session.store()
    items = private.inbox(store, session.key(), requests=requests)
    if as_json:
        emit_lines(items)
        return
    if not items:
        click.echo("no requests" if requests else "no messages")
    for item in items:
        if item.get("undecryptable"):
            click.echo(
                f"{when(item['ts'])}  {_names(session, [item['feed']])}: undecryptable {short(item['id'])}"
            )
            continue
        unread = f"{item['unread']} unread" if item["unread"] else "read"
        text = " ".join(item["last"]["text"].split())
        text = text if len(text) <= 60 else text[:59] + "…"
        click.echo(f"{when(item['ts'])}  {_names(session, item['with'])}  ({item['messages']}, {unread})")
        click.echo(f"    {_names(session, [item['last']['feed']])}: {text}")


@click.command()
@click.argument("feeds", nargs=-1, required=True, type=FeedType())
@common_options
@json_option
@pass_session
def conversation(session: Session, feeds: tuple[bytes, ...], as_json: bool) -> None:
    """The messages between you and FEEDs, oldest first; marks them read."""
    from tidings.node import dm as private

    from .render import short, when

    store = session.store()
    items = private.conversation(store, session.key(), feeds)
    if as_json:
        emit_lines(items)
        return
    if not items:
        raise CliError("no messages with them here", code="not_found")
    for item in items:
        who = _names(session, [item["feed"]])
        mark = "" if item["read"] else " *"
        click.echo(f"{when(item['ts'])}  {who}{mark}  {short(item['id'])}")
        for line in item["text"].splitlines() or [""]:
            click.echo(f"    {line}")


COMMANDS = [dm, inbox, conversation]
