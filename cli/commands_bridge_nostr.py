"""``tidings bridge nostr ...``: the Nostr bridge's commands (spec §14.5, spec/cli.md *Bridges*).

Mounted by ``commands_bridge.BridgeGroup`` as the ``nostr`` bridge's group. ``publish`` and ``pull``
run one round with each relay (``node.bridges.nostr_sync``) on the CLI's own store; the running node
does the same over live connections (``node.bridges.nostr_live``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import click
from tidings.node.bridges.base import BridgeError
from tidings.node.bridges.nostr import NostrBridge
from tidings.node.bridges.nostr_sync import NAME, Call, nostr_secret, publish_pending, pull_follows
from tidings.node.bridges.relay import check_relay_url
from tidings.node.bridges.sources import follow_source, unfollow_source
from tidings.protocol import nostr as wire
from tidings.storage.clock import wall_ms

from .common import CliError, Session, common_options, emit, emit_lines, json_option, pass_session, run_trio

if TYPE_CHECKING:
    from tidings.storage.store import Store

__all__ = ["nostr_group"]


@click.group("nostr")
def nostr_group() -> None:
    """Nostr both ways: relays, publishing your posts, following Nostr authors."""


def _store_call(store: Store) -> Call:
    async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(store, *args, **kwargs)

    return call


@nostr_group.command("key")
@common_options
@json_option
@pass_session
def nostr_key(session: Session, as_json: bool) -> None:
    """Show the bridge's Nostr public key (made on first use; never your Tidings key)."""
    session.store()
    pub = wire.public_key(nostr_secret(session.home))
    out = {"npub": wire.npub(pub), "hex": pub}
    if as_json:
        emit(out)
    else:
        click.echo(f"{out['npub']}\n{out['hex']}")


@nostr_group.group("relay")
def relay_group() -> None:
    """Relays to publish to and fetch from."""


@relay_group.command("add")
@click.argument("url")
@common_options
@json_option
@pass_session
def relay_add(session: Session, url: str, as_json: bool) -> None:
    """Use the relay at URL (ws:// or wss://)."""
    from tidings.storage import bridges as db

    url = check_relay_url(url)
    added = db.add_source(session.store(), NAME, "relay", url, feed=None, now=wall_ms())
    emit({"relay": url, "added": added}) if as_json else click.echo(
        f"relay {url} {'added' if added else 'already used'}"
    )


@relay_group.command("remove")
@click.argument("url")
@common_options
@json_option
@pass_session
def relay_remove(session: Session, url: str, as_json: bool) -> None:
    """Stop using the relay at URL."""
    from tidings.storage import bridges as db

    if db.remove_source(session.store(), NAME, "relay", url.strip()) is None:
        raise CliError(f"no relay {url}", code="not_found")
    emit({"relay": url.strip(), "removed": True}) if as_json else click.echo(f"relay {url} removed")


@relay_group.command("list")
@common_options
@json_option
@pass_session
def relay_list(session: Session, as_json: bool) -> None:
    """Relays, the last own post sent to each, last round and error."""
    from tidings.storage import bridges as db

    rows = [
        {"relay": r["source"], "sent_seq": r["cursor"], "last_poll": r["last_poll"], "error": r["last_error"]}
        for r in db.sources(session.store(), NAME, "relay")
    ]
    if as_json:
        emit_lines(rows)
    else:
        for r in rows:
            click.echo(f"{r['relay']}  {'error: ' + r['error'] if r['error'] else 'ok'}")


def _relays(store: Store) -> list[dict[str, Any]]:
    from tidings.storage import bridges as db

    relays = db.sources(store, NAME, "relay")
    if not relays:
        raise BridgeError("no relays: add one with 'tidings bridge nostr relay add URL'", code="no_relays")
    return relays


@nostr_group.command("publish")
@common_options
@json_option
@pass_session
def nostr_publish(session: Session, as_json: bool) -> None:
    """Publish your posts not yet sent to each relay, once, now."""

    async def one(call: Call, relay: dict[str, Any], timeout: float) -> dict[str, Any]:
        sent, refused = await publish_pending(call, session.home, relay, timeout=timeout)
        return {"published": sent, "error": refused}

    _each_relay(session, one, {"published": 0}, as_json, "published")


def _author_key(text: str) -> str:
    """A Nostr public key (npub or hex) as hex; ``bad_key`` otherwise."""
    from tidings.protocol import ProtocolError

    try:
        return wire.decode_key(text)
    except ProtocolError as exc:
        raise BridgeError(str(exc.args[0]), code="bad_key") from None


@nostr_group.command("follow")
@click.argument("key", metavar="NPUB_OR_HEX")
@common_options
@json_option
@pass_session
def nostr_follow(session: Session, key: str, as_json: bool) -> None:
    """Follow a Nostr author: their kind-1 notes are imported into a bridge feed you follow."""
    from tidings.protocol import feed_id_text

    pub = _author_key(key)
    feed, followed = follow_source(session.store(), session.home, session.key(), NAME, pub, wall_ms())
    out = {"author": wire.npub(pub), "hex": pub, "feed": feed_id_text(feed), "followed": followed}
    emit(out) if as_json else click.echo(f"following {out['author']} as {out['feed']}")


@nostr_group.command("unfollow")
@click.argument("key", metavar="NPUB_OR_HEX")
@common_options
@json_option
@pass_session
def nostr_unfollow(session: Session, key: str, as_json: bool) -> None:
    """Stop following a Nostr author."""
    pub = _author_key(key)
    if unfollow_source(session.store(), session.key(), NAME, pub) is None:
        raise CliError(f"not following {key}", code="not_found")
    emit({"author": wire.npub(pub), "unfollowed": True}) if as_json else click.echo(f"unfollowed {key}")


@nostr_group.command("pull")
@common_options
@json_option
@pass_session
def nostr_pull(session: Session, as_json: bool) -> None:
    """Fetch followed authors' notes from each relay once, now."""

    async def one(call: Call, relay: dict[str, Any], timeout: float) -> dict[str, Any]:
        got, bad = await pull_follows(call, session.home, relay["source"], timeout=timeout)
        return {"imported": got, "rejected": bad, "error": None}

    _each_relay(session, one, {"imported": 0, "rejected": 0}, as_json, "imported")


def _each_relay(
    session: Session,
    one: Callable[[Call, dict[str, Any], float], Awaitable[dict[str, Any]]],
    failed: dict[str, Any],
    as_json: bool,
    what: str,
) -> None:
    """``one`` round with each relay, one after another; a relay that fails gives the ``failed`` row
    with its error. Each round is recorded (``tidings bridge list``), then the rows are reported."""
    store = session.store()
    timeout = float(NostrBridge().settings_of(store)["timeout"])
    call = _store_call(store)
    rows = []
    for relay in _relays(store):
        try:
            row = run_trio(one, call, relay, timeout)
        except BridgeError as exc:
            row = {**failed, "error": str(exc)}
        rows.append({"relay": relay["source"], **row})
        _note_round(store, relay["source"], row["error"])
    _report(rows, as_json, what)


def _note_round(store: Store, relay: str, error: str | None) -> None:
    from tidings.storage import bridges as db

    now = wall_ms()
    if error is None:
        db.note_poll(store, NAME, "relay", relay, last_poll=now, last_ok=now, last_error=None, failures=0)
    else:
        db.note_poll(store, NAME, "relay", relay, last_poll=now, last_error=error)


def _report(rows: list[dict[str, Any]], as_json: bool, what: str) -> None:
    if as_json:
        emit_lines(rows)
    else:
        for r in rows:
            click.echo(f"{r['relay']}: " + (f"error: {r['error']}" if r["error"] else f"{r[what]} {what}"))
    failed = [r for r in rows if r["error"] and not r.get(what)]
    if failed:
        if as_json:
            raise click.exceptions.Exit(1)
        raise CliError(f"{len(failed)} of {len(rows)} relays failed", code="relay_failed")
