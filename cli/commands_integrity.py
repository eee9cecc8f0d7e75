"""Integrity and backup: ``verify``, ``export``, ``import``.

On a terminal these show a rich progress bar on stderr (imported only then); with ``--json`` or when
piped, they print nothing but their result.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from .common import CliError, FeedType, Session, common_options, emit, json_option, pass_session

__all__ = ["COMMANDS"]


@contextmanager
def progress(label: str, total: int | None, quiet: bool) -> Iterator[Callable[[int], None] | None]:
    """A progress callback ``advance(n)`` drawing a bar on stderr, or None when not on a terminal."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = [TextColumn(label), BarColumn(), MofNCompleteColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def _problem_line(p: dict[str, Any], unplaced: str = "store") -> str:
    where = f"{p['feed']} seq {p['seq']}" if p.get("feed") else unplaced
    return f"{where}: {p['code']}: {p['reason']}"


@click.command()
@click.argument("feed", required=False, type=FeedType())
@common_options
@json_option
@pass_session
def verify(session: Session, feed: bytes | None, as_json: bool) -> None:
    """Re-verify every stored log (or only FEED): signatures, links, payload hashes, the database.

    Exit status 0 only when everything verifies.
    """
    from tidings.storage.integrity import verify_store

    store = session.store()
    total = store.stats()["entries"] if feed is None else None
    with progress("verifying", total, as_json) as advance:
        result = verify_store(store, feed, advance)
    if as_json:
        emit(result)
    else:
        state = "ok" if result["ok"] else "FAILED"
        click.echo(f"{state}: {result['entries']} entries in {result['feeds']} feeds verified")
        for p in result["problems"]:
            click.echo("  problem " + _problem_line(p))
        for g in result["gaps"]:
            click.echo(f"  gap {g['feed']} seq {g['from']}..{g['to']} not held here (not an error)")
        for f in result["forks"]:
            click.echo(f"  fork {f['feed']} at seq {f['seq']}: two signed versions; feed frozen")
    if not result["ok"]:
        raise CliError(f"verification failed: {len(result['problems'])} problem(s)", code="verify_failed")


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@common_options
@json_option
@pass_session
def export(session: Session, file: str, force: bool, as_json: bool) -> None:
    """Write a self-verifying archive of every stored log to FILE.

    An existing FILE is kept (error) unless --force; a FILE inside the home is refused.
    """
    from tidings.storage.integrity import export_archive

    store = session.store()
    with progress("exporting", store.stats()["entries"], as_json) as advance:
        result = export_archive(store, file, advance, replace=force, outside=session.home.path)
    if as_json:
        emit({"file": file, **result})
    else:
        click.echo(f"exported {result['entries']} entries and {result['forks']} fork proofs to {file}")


#: Refused records ``tidings import`` lists on the terminal; the rest are summed up by code.
SHOWN = 20


@click.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@common_options
@json_option
@pass_session
def import_(session: Session, file: str, as_json: bool) -> None:
    """Verify an archive and add its valid entries; report the ones refused (then exit status 1)."""
    from tidings.storage.integrity import import_archive

    home = session.home
    lost = home.exists() and not home.store_path.exists()  # the identity survived, its store did not
    store = session.recreate_store() if lost else session.store()
    with progress("importing", None, as_json) as advance:
        result = import_archive(store, file, advance)
    refused = result["refused"]
    if as_json:
        emit({"file": file, **result})
    else:
        click.echo(
            f"imported {result['added']} entries from {file} "
            f"({result['duplicates']} already here, {result['forks']} fork proofs, {refused} refused)"
        )
        for r in result["rejected"][:SHOWN]:
            click.echo("  refused " + _problem_line(r, "archive record"))
        if refused > SHOWN:
            codes = ", ".join(f"{code} {n}" for code, n in sorted(result["refused_codes"].items()))
            click.echo(f"  ... and {refused - SHOWN} more refused ({codes})")
    if refused:
        raise CliError(f"{refused} record(s) of {file} failed verification and were not imported")
    if not result["complete"]:
        raise CliError(f"{file} is incomplete (no end record): it may be truncated")


COMMANDS = [verify, export, import_]
