"""The ``tidings`` command: a thin click front end over ``node.home`` and ``storage`` (spec/cli.md).

Every command takes ``--home DIR`` (env ``TIDINGS_HOME``, default ``~/.tidings``) and ``--debug``,
before or after the command name. Errors are one ``error: ...`` line on stderr and exit status 1
(2 for usage errors); a traceback only with ``--debug``. ``tidings`` alone prints the help.
"""

from __future__ import annotations

import textwrap

import click

from . import (
    commands_blob,
    commands_bridge,
    commands_demo,
    commands_dm,
    commands_graph,
    commands_integrity,
    commands_network,
    commands_rank,
    commands_read,
    commands_web,
    commands_write,
)
from .common import Session, TidingsGroup

__all__ = ["cli", "main"]


#: Examples shown at the end of the main commands' ``--help``, kept here beside the list of commands
#: (``\b`` keeps click from re-wrapping them). tests/cli/test_contract.py checks that
#: they name real commands and options.
EXAMPLES = {
    "": """
        tidings init --name alice            # your identity and store
        tidings post "first post"            # a signed entry in your log
        tidings follow @feedid               # replicate someone's feed
        tidings timeline --explain           # your timeline, and why each entry is there
        tidings run                          # the node: gossip, DHT and the web page
        tidings open                         # the web page of the running node""",
    "init": """
        tidings init --name alice
        tidings --home /tmp/other init --encrypt    # TIDINGS_PASSPHRASE, or asked on a terminal""",
    "post": """
        tidings post "first post"
        echo "from stdin" | tidings post -
        tidings post "a reply" --reply-to %abcd     # any unique prefix of an entry id
        tidings post "hello" --json                  # {"id", "feed", "seq", "ts"}""",
    "dm": """
        tidings dm @feedid "see you at eight"         # only you and they can read it
        tidings dm @feedid1 @feedid2 - < note.txt     # up to 31 feeds besides you; TEXT - reads stdin
        tidings dm --reply %abcd "eight is fine"      # to the people of that message
        tidings dm @feedid "hi" --json                # {"id", "feed", "seq", "ts", "type", "to"}""",
    "inbox": """
        tidings inbox                                 # conversations, newest first, unread counts
        tidings inbox --requests                      # from feeds you neither follow nor are followed by
        tidings inbox --json""",
    "conversation": """
        tidings conversation @feedid                  # oldest first; marks them read
        tidings conversation @feedid1 @feedid2 --json""",
    "timeline": """
        tidings timeline --limit 20
        tidings timeline --ranker engagement --explain
        tidings timeline --swarm gardening
        tidings timeline --explain-hidden             # what blocks and mutes hid""",
    "follow": """
        tidings follow @feedid                        # the running node finds and replicates it
        tidings follow @feedid --json""",
    "log": """
        tidings log                                   # your own feed, newest first
        tidings log @feedid --limit 20 --json""",
    "search": """
        tidings search gardens
        tidings search "gardens" --limit 5 --json""",
    "run": """
        tidings run                                   # listens on 0.0.0.0:7433, page on 127.0.0.1:7434
        tidings run --listen 127.0.0.1:0 --http off   # any free port, no web page
        tidings run --peer friend.example:7433 -v
        tidings run --bootstrap friend.example:7433 --swarm gardening
        tidings run --network-key "our club"          # a private network""",
    "sync": """
        tidings sync friend.example:7433
        tidings sync 127.0.0.1:7433 --network-key "our club" --json""",
    "status": """
        tidings status
        tidings status --json""",
    "open": """
        tidings open                                  # while 'tidings run' runs on this home
        tidings open --print                          # only print the one-time link""",
    "verify": """
        tidings verify
        tidings verify @feedid --json""",
    "export": """
        tidings export backup.tidings
        tidings --home /tmp/other init && tidings --home /tmp/other import backup.tidings""",
}


def _examples(text: str) -> str:
    return "\b\nExamples:\n" + textwrap.indent(textwrap.dedent(text).strip("\n"), "  ")


@click.group(
    cls=TidingsGroup,
    invoke_without_command=True,
    epilog=_examples(EXAMPLES[""]),
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--home", metavar="DIR", envvar="TIDINGS_HOME", help="Home folder (default: $TIDINGS_HOME or ~/.tidings)."
)
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@click.version_option(package_name="tidings", message="tidings %(version)s")
@click.pass_context
def cli(ctx: click.Context, home: str | None, debug: bool) -> None:
    """Tidings: a peer-to-peer social network node. Your posts live in a signed log in your home."""
    session = ctx.ensure_object(Session)
    session.home_dir = home or None
    session.debug = debug
    ctx.call_on_close(session.close)
    if ctx.invoked_subcommand is None:  # ``tidings`` alone (or with only --home): the help, exit 0
        click.echo(ctx.get_help())
        ctx.exit(0)


for _module in (
    commands_write,
    commands_dm,
    commands_graph,
    commands_read,
    commands_integrity,
    commands_network,
    commands_rank,
    commands_demo,
    commands_bridge,
    commands_web,
    commands_blob,
):
    for _command in _module.COMMANDS:
        cli.add_command(_command)
for _name, _text in EXAMPLES.items():
    if _name:
        cli.commands[_name].epilog = _examples(_text)


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``tidings = "tidings.cli.main:main"``)."""
    cli.main(args=argv, prog_name="tidings")


if __name__ == "__main__":
    main()
