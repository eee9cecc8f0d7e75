"""``tidings bridge atom ...``: the Atom-out bridge's commands (spec §14.3, spec/cli.md *Bridges*).

Mounted by ``commands_bridge.BridgeGroup`` as the ``atom`` bridge's group; the document itself is made
by ``node.bridges.atom.atom_feed``, which the running node also serves.
"""

from __future__ import annotations

import click
from tidings.node.bridges.atom import DEFAULT_LIMIT, atom_feed
from tidings.node.bridges.base import BridgeError
from tidings.storage.clock import wall_ms

from .common import Session, common_options, emit, json_option, pass_session

__all__ = ["atom_group"]


@click.group("atom")
def atom_group() -> None:
    """Atom out: export a feed as Atom 1.0 (serve it with 'bridge config atom listen HOST:PORT')."""


@atom_group.command("export")
@click.argument("feed", required=False)
@click.option("-o", "--output", metavar="FILE", help="Write to FILE (default: standard output).")
@click.option("--limit", type=click.IntRange(1, 10000), default=DEFAULT_LIMIT, show_default=True)
@common_options
@json_option
@pass_session
def atom_export(session: Session, feed: str | None, output: str | None, limit: int, as_json: bool) -> None:
    """Write FEED's posts (default: yours) as an Atom 1.0 feed; --json prints a summary (and the
    document itself when there is no -o)."""
    from pathlib import Path

    from tidings.protocol import FeedId, ProtocolError, feed_id_text

    store = session.store()
    if feed is None:
        key = session.me()
    else:
        try:
            key = FeedId.parse(feed.strip()).key
        except ProtocolError as exc:
            reason = exc.message.removeprefix("feed id: ")  # what is wrong (protocol/identity.py)
            raise BridgeError(f"{feed!r} is not a feed id: {reason}", code="bad_feed") from None
        if store.feed_info(key) is None:
            raise BridgeError(f"no feed {feed} in this store", code="not_found")
    data, count = atom_feed(store, key, now=wall_ms(), limit=limit)
    if output:
        Path(output).write_bytes(data)
    summary = {"feed": feed_id_text(key), "entries": count, "file": output}
    if as_json:
        emit(summary if output else {**summary, "atom": data.decode("utf-8")})
    elif output:
        click.echo(f"wrote {count} entries of {summary['feed']} to {output}")
    else:
        click.echo(data.decode("utf-8"), nl=False)
