"""``tidings blob ...``: the pictures and files the home holds (spec/protocol.md §8.5, spec/cli.md *Blobs*).

Blobs are files under ``HOME/blobs`` named by their hash (``storage.blobs``); these commands add one
from a file, list them, copy one out, and evict what the quota (``blob_quota`` in config.toml) has no
room for, keeping the blobs your own entries and those of the feeds you follow name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from .common import CliError, Session, common_options, emit, emit_lines, json_option, pass_session
from .render import when

if TYPE_CHECKING:
    from tidings.protocol import BlobId
    from tidings.storage.blobs import BlobStore

__all__ = ["COMMANDS"]


class BlobType(click.ParamType):
    """A blob id ``&base32``; a malformed one is a usage error (exit 2)."""

    name = "BLOB"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> BlobId:
        from tidings.protocol import BlobId, ProtocolError

        if isinstance(value, BlobId):
            return value
        try:
            return BlobId.parse(str(value).strip())
        except ProtocolError as exc:  # the reason names what is wrong (protocol/identity.py)
            reason = exc.message.removeprefix("blob id: ")
            self.fail(f"{value!r} is not a blob id (& + 52 base32 characters): {reason}", param, ctx)


def _blobs(session: Session) -> BlobStore:
    return session.home.open_blobs(session.store())


def size_text(n: int) -> str:
    """A size as people read it: ``512 B``, ``14.2 KB``, ``8.4 MB`` (powers of 1000, as ``ls --si``)."""
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("KB", "MB", "GB"):
        value /= 1000
        if value < 1000:
            return f"{value:.1f} {unit}"
    return f"{value / 1000:.1f} TB"


def _count(n: int) -> str:
    return f"{n} blob" if n == 1 else f"{n} blobs"


@click.group()
def blob() -> None:
    """Pictures and files: blobs named by their hash, kept under the home."""


@blob.command("add")
@click.argument("file", type=click.Path(dir_okay=False))
@common_options
@json_option
@pass_session
def blob_add(session: Session, file: str, as_json: bool) -> None:
    """Store FILE as a blob (as it is: no metadata is stripped) and print its id. Blobs you add
    are pinned: gc never evicts them."""
    import os

    from tidings.storage.blobs import BlobError

    blobs = _blobs(session)
    try:
        size = os.stat(file).st_size
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc.strerror}", code="io") from None
    if size > blobs.max_blob:  # said before reading it; the writer refuses it as well
        raise CliError(
            f"{file} is {size} bytes; a blob is at most {blobs.max_blob} (max_blob)", code="blob_too_large"
        )
    try:
        made = blobs.put_file(file, pinned=True)
    except BlobError as exc:
        if exc.code == "blob_empty":
            raise CliError(f"{file} is empty; a blob has at least one byte", code=exc.code) from None
        raise
    size = blobs.size(made) or size
    if as_json:
        emit({"id": str(made), "size": size})
    else:
        click.echo(str(made))


@blob.command("ls")
@click.option("--wanted", is_flag=True, help="The blobs wanted from peers instead (not here yet).")
@common_options
@json_option
@pass_session
def blob_ls(session: Session, wanted: bool, as_json: bool) -> None:
    """The blobs held here, most recently used first, and what they take."""
    if wanted:
        _ls_wanted(session, as_json)
        return
    blobs = _blobs(session)
    rows = blobs.listing()
    if as_json:
        emit_lines(rows)
        return
    for row in rows:
        pin = "  pinned" if row["pinned"] else ""
        click.echo(f"{row['id']}  {size_text(row['size']):>9}  used {when(row['last_used'])}{pin}")
    usage = blobs.usage()
    click.echo(f"{_count(usage['blobs'])}, {size_text(usage['bytes'])} ({usage['pinned']} pinned)")


@blob.command("get")
@click.argument("blob_id", metavar="BLOB", type=BlobType())
@click.option(
    "-o",
    "--output",
    "output",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="Write it to FILE (never over an existing one).",
)
@click.option(
    "--wait",
    type=click.FloatRange(0, 3600),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="A blob not here is fetched from peers by the running node: wait this long for it.",
)
@common_options
@json_option
@pass_session
def blob_get(session: Session, blob_id: BlobId, output: str | None, wait: float, as_json: bool) -> None:
    """Copy the blob BLOB to FILE, or its bytes to standard output (not to a terminal).

    A blob not here is wanted from peers: the running node fetches it (tidings blob ls --wanted shows
    what it is fetching). The bytes are checked against BLOB as they are copied; a FILE is written
    whole or not at all.
    """
    import sys

    from tidings.storage.files import FileError, atomic_writer

    if output is None and as_json:
        raise click.UsageError("--json needs -o FILE (without it the bytes go to standard output)")
    if output is None and sys.stdout.isatty():
        raise CliError(
            "a blob is not text: give -o FILE, or send standard output to a file or a pipe", code="tty"
        )
    blobs = _blobs(session)
    size = blobs.size(blob_id)
    if size is None:
        size = _fetch(session, blobs, blob_id, wait, quiet=as_json)
    if output is None:
        out = sys.stdout.buffer
        for chunk in blobs.read(blob_id):
            out.write(chunk)
        out.flush()
        return
    try:
        with atomic_writer(output, outside=session.home.path) as fh:
            for chunk in blobs.read(blob_id):
                fh.write(chunk)
    except FileError as exc:
        if exc.code == "exists":  # never over a file: there is no --force here
            raise CliError(f"{output} exists; choose another file", code="exists") from None
        raise
    if as_json:
        emit({"id": str(blob_id), "size": size, "file": output})
    else:
        click.echo(f"wrote {size_text(size)} to {output}")


@blob.command("gc")
@common_options
@json_option
@pass_session
def blob_gc(session: Session, as_json: bool) -> None:
    """Evict blobs, least recently used first, until they fit blob_quota (config.toml). Blobs you
    added, and those your entries and the entries of feeds you follow name, are kept; those of
    deleted posts that nothing else names go first."""
    from tidings.storage.blob_upkeep import upkeep

    store = session.store()
    quota = int(session.home.limit("blob_quota"))
    result = upkeep(_blobs(session), store, session.me(), quota)
    if as_json:
        emit(result)
        return
    click.echo(
        f"removed {_count(len(result['removed']))} ({size_text(result['freed'])}); "
        f"{_count(result['blobs'])} take {size_text(result['bytes'])} of a quota of {size_text(quota)}"
    )


COMMANDS = [blob]


def _fetch(session: Session, blobs: BlobStore, blob: BlobId, wait: float, *, quiet: bool) -> int:
    """Want ``blob`` from peers and wait up to ``wait`` seconds for the running node to fetch it
    (spec §12.12); its size. Progress goes to standard error."""
    import sys
    import time

    from tidings.storage import blob_wants
    from tidings.storage.clock import wall_ms

    store = session.store()
    want = blob_wants.Want(blob.hash, None, blobs.max_blob, None, None)
    blob_wants.add_wants(store, [want], wall_ms())
    if session.home.running_node() is None:
        raise CliError(
            f"no blob {blob} here; it is wanted now, and the node fetches it from peers once it runs "
            "(tidings run)",
            code="not_found",
        )
    partial = blobs.folder / "partial" / blob.hash.hex()
    deadline = time.monotonic() + wait
    shown = -1
    while (size := blobs.size(blob)) is None:
        if time.monotonic() >= deadline:
            failed = {w.blob: w.failed for w in blob_wants.wants(store)}.get(blob.hash)
            why = f" (last try: {failed})" if failed else ""
            raise CliError(
                f"blob {blob} did not arrive within {wait:g} s{why}; the node keeps trying "
                "(tidings blob ls --wanted)",
                code="not_found",
            )
        have = partial.stat().st_size if partial.exists() else 0
        if not quiet and have != shown and sys.stderr.isatty():
            click.echo(f"\rfetching {blob}: {size_text(have)}", nl=False, err=True)
            shown = have
        time.sleep(0.1)
    if shown >= 0:
        click.echo("", err=True)
    return size


def _ls_wanted(session: Session, as_json: bool) -> None:
    from tidings.protocol import BlobId, feed_id_text
    from tidings.storage import blob_wants

    rows = [
        {
            "id": str(BlobId(w.blob)),
            "size": w.size,
            "mime": w.mime,
            "feed": None if w.author is None else feed_id_text(w.author),
            "tries": w.tries,
            "next_try": w.next_try,
            "failed": w.failed,
        }
        for w in blob_wants.wants(session.store())
    ]
    if as_json:
        emit_lines(rows)
        return
    for row in rows:
        size = "?" if row["size"] is None else size_text(row["size"])
        why = f"  last try: {row['failed']}, next {when(row['next_try'])}" if row["failed"] else ""
        click.echo(f"{row['id']}  {size:>9}  {row['mime'] or 'file'}{why}")
    click.echo(f"{_count(len(rows))} wanted")
