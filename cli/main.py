"""The ``tidings`` command: a thin click front end over ``node.home`` and ``storage`` (../shared/CLI.md).

Every command takes ``--home DIR`` (env ``TIDINGS_HOME``, default ``~/.tidings``) and ``--debug``,
before or after the command name. Errors are one ``error: ...`` line on stderr and exit status 1
(2 for usage errors); a traceback only with ``--debug``.
"""

from __future__ import annotations

import click

from . import (
    commands_bridge,
    commands_demo,
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


@click.group(cls=TidingsGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


for _module in (
    commands_write,
    commands_graph,
    commands_read,
    commands_integrity,
    commands_network,
    commands_rank,
    commands_demo,
    commands_bridge,
    commands_web,
):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``tidings = "tidings.cli.main:main"``)."""
    cli.main(args=argv, prog_name="tidings")


if __name__ == "__main__":
    main()
