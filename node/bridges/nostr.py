"""Nostr both ways (spec §14.5): publish the user's posts as kind-1 events, import followed authors.

Out (opt-in: ``tidings bridge nostr publish`` once, or ``bridge config nostr publish on`` for the node):
each own post becomes a kind-1 event signed by the bridge's own secp256k1 key
(``HOME/bridges/nostr/nostr.key``), ``created_at`` = the entry time in seconds, with a ``["tidings",
ENTRY_ID]`` tag linking back and NIP-10 ``e`` tags for replies to posts published before.
In (opt-in per author: ``follow NPUB``): kind-1 events of followed keys are fetched from the relays,
verified (id and BIP-340 signature), and imported once per event id into one bridge feed per author,
which the user follows. Progress per relay is kept in ``storage.bridges`` (cursor = last own seq sent;
per author, cursor = newest ``created_at`` imported). Inside ``tidings run`` each relay is followed live
over one long-lived connection (``nostr_live.NostrService``); ``pull`` and ``publish`` are one-shot.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import click
import trio
from tidings.cli.common import CliError, Session, common_options, emit, emit_lines, json_option, pass_session
from tidings.node.bridges.base import (
    Bridge,
    BridgeContext,
    BridgeError,
    Setting,
    follow_source,
    parse_bool,
    parse_seconds,
    unfollow_source,
)
from tidings.node.bridges.relay import check_relay_url, fetch_events, publish_events
from tidings.protocol import nostr as wire

if TYPE_CHECKING:
    from tidings.node.bridges.nostr_live import NostrService
    from tidings.node.home import Home
    from tidings.storage.store import Store

__all__ = ["NostrBridge", "import_events", "nostr_secret", "publish_pending", "pull_follows"]

log = logging.getLogger("tidings.bridges.nostr")

NAME = "nostr"
OUT = "out"  # bridge_items source of published events: item = event id, entry = the post
SLACK = 600  # seconds re-asked before the newest event seen (relays may learn events late)
Call = Callable[..., Awaitable[Any]]
Send = Callable[[list[wire.Event]], Awaitable[dict[str, tuple[bool, str]]]]


def _now() -> int:
    return int(time.time() * 1000)


def nostr_secret(home: Home) -> bytes:
    """The bridge's secp256k1 secret (``HOME/bridges/nostr/nostr.key``, 0600), made on first use."""
    from tidings.node.bridges.keys import bridge_dir, read_secret_file

    secret = read_secret_file(bridge_dir(home, NAME) / "nostr.key")
    try:
        wire.public_key(secret)
    except Exception:
        raise BridgeError("the Nostr key in the home is not a valid secp256k1 key", code="bad_key") from None
    return secret


def _event_for(
    store: Store, secret: bytes, post: dict[str, Any], batch: dict[bytes, str]
) -> wire.Event | None:
    """The kind-1 event for one own post (None for entries that are not live posts)."""
    from tidings.protocol import Post, decode_content, entry_id_text
    from tidings.storage import bridges as db

    if post["type"] != "post" or post["deleted"] or post["payload"] is None:
        return None
    try:
        content = decode_content(bytes(post["payload"]))
    except Exception:
        return None
    if not isinstance(content, Post):
        return None
    tags: list[tuple[str, ...]] = [("tidings", entry_id_text(post["hash"]))]
    if content.reply is not None and content.root is not None:
        root = batch.get(content.root) or db.item_for_entry(store, NAME, content.root)
        reply = batch.get(content.reply) or db.item_for_entry(store, NAME, content.reply)
        if root is not None:
            tags.append(("e", root, "", "root"))
        if reply is not None and reply != root:
            tags.append(("e", reply, "", "reply"))
    return wire.sign_event(
        secret,
        created_at=post["ts"] // 1000,
        kind=1,
        tags=tuple(tags),
        content=content.text,
        aux=secrets.token_bytes(32),
    )


async def publish_pending(
    call: Call,
    home: Home,
    relay: dict[str, Any],
    *,
    timeout: float,
    batch: int = 50,
    send: Send | None = None,
) -> tuple[int, str | None]:
    """Publish own posts after the relay's cursor; return (events accepted, last rejection or None).

    ``send`` publishes a batch and returns the relay's answers (default: over a new connection, see
    ``publish_events``; the node passes its open connection). Connection failures raise
    ``BridgeError``; a relay that refuses one event is recorded and moves on.
    """
    from tidings.storage import bridges as db

    if send is None:

        async def send(events: list[wire.Event]) -> dict[str, tuple[bool, str]]:
            return await publish_events(relay["source"], events, timeout=timeout)

    secret = nostr_secret(home)
    me = await call(lambda store: store.own_feed())
    sent, refused = 0, None
    cursor = int(relay["cursor"] or 0)
    while True:
        posts = await call(db.own_posts_after, me, cursor, batch)
        if not posts:
            return sent, refused
        events: list[tuple[dict[str, Any], wire.Event]] = []
        batch_ids: dict[bytes, str] = {}  # posts of this batch, for replies to each other
        for post in posts:
            event = await call(_event_for, secret, post, batch_ids)
            if event is not None:
                events.append((post, event))
                batch_ids[post["hash"]] = event.id
        results = await send([e for _, e in events])
        for post, event in events:
            if event.id not in results:  # the connection ended: resume from here next time
                return sent, refused
            accepted, message = results[event.id]
            if accepted:
                sent += 1
                await call(db.mark_items, NAME, OUT, [(event.id, post["hash"])], _now())
            else:
                refused = f"{relay['source']} refused {event.id[:12]}: {message}"
            cursor = post["seq"]
            await call(db.note_poll, NAME, "relay", relay["source"], cursor=cursor)
        cursor = posts[-1]["seq"]
        await call(db.note_poll, NAME, "relay", relay["source"], cursor=cursor)


def _post_for(event: wire.Event, thread: tuple[bytes, bytes] | None = None) -> Any:
    """The post an event becomes (None for an empty note); ``thread``: its (root, reply) entries."""
    from tidings.protocol import Post
    from tidings.protocol.content import MAX_TEXT

    text = event.content
    if len(text.encode("utf-8")) > MAX_TEXT:
        text = text.encode("utf-8")[: MAX_TEXT - 3].decode("utf-8", "ignore") + "…"
    if not text.strip():
        return None
    origin = {
        "network": "nostr",
        "id": event.id,
        "author": wire.npub(event.pubkey),
        "ts": event.created_at * 1000,
    }
    if thread is None:
        return Post(text=text, origin=origin)
    return Post(text=text, root=thread[0], reply=thread[1], origin=origin)


async def import_events(
    call: Call, home: Home, follows: dict[str, dict[str, Any]], events: list[wire.Event]
) -> int:
    """Import verified kind-1 ``events`` of followed authors (``follows``: author -> its source row) into
    their bridge feeds, once per event id; raise each author's cursor. Returns how many were new.

    Oldest first across authors, so a reply whose note arrived in the same batch finds it: a note that
    answers (NIP-10) a note carried before, imported or own, becomes a reply to its entry.
    """
    from tidings.node.bridges.keys import feed_key
    from tidings.storage import bridges as db

    mine = _parents_first(
        sorted((e for e in events if e.pubkey in follows), key=lambda e: (e.created_at, e.id))
    )
    imported, now = 0, _now()
    for i, event in enumerate(mine):  # unfollowed meanwhile: dropped above
        root, reply = wire.reply_refs(event)
        thread = None if root is None or reply is None else await call(db.thread_of_item, NAME, root, reply)
        post = _post_for(event, thread)
        if post is not None:  # 1 ms apart, in the source's order (spec §14.1)
            key = feed_key(home, NAME, event.pubkey)
            made = await call(db.append_bridged, key, NAME, event.pubkey, [(event.id, post)], now + i)
            imported += len(made)
    for author in {e.pubkey for e in mine}:
        newest = max(e.created_at for e in mine if e.pubkey == author)
        if newest > int(follows[author]["cursor"] or 0):
            await call(db.note_poll, NAME, "in", author, cursor=newest)
            follows[author]["cursor"] = newest  # the row is kept by a live subscription
    return imported


def _parents_first(events: list[wire.Event]) -> list[wire.Event]:
    """``events`` in the same order, except that a note comes after the notes of the batch it answers
    (``created_at`` has whole seconds: a reply may tie with its parent, and an id decides the tie).
    Iterative, so a long (or forged, cyclic) chain of references cannot exhaust the stack."""
    by_id = {e.id: e for e in events}
    out: list[wire.Event] = []
    seen: set[str] = set()
    for event in events:
        stack = [(event, False)]
        while stack:
            current, ready = stack.pop()
            if ready:
                out.append(current)
                continue
            if current.id in seen:
                continue
            seen.add(current.id)
            stack.append((current, True))  # after its parents
            for parent in wire.reply_refs(current):
                if parent is not None and parent in by_id and parent not in seen:
                    stack.append((by_id[parent], False))
    return out


def newest_seen(follows: list[dict[str, Any]]) -> int:
    """What ``since`` is counted from: the oldest of the followed authors' newest events (0: fetch all)."""
    return min((int(f["cursor"] or 0) for f in follows), default=0)


async def note_authors_ok(call: Call, authors: list[str]) -> None:
    """Record a successful round for each followed author (shown by ``tidings bridge list``)."""
    from tidings.storage import bridges as db

    now = _now()
    for author in authors:
        await call(db.note_poll, NAME, "in", author, last_poll=now, last_ok=now, last_error=None, failures=0)


async def pull_follows(call: Call, home: Home, relay: str, *, timeout: float) -> tuple[int, int]:
    """Fetch kind-1 events of followed authors from ``relay``; import new valid ones.

    Returns (imported, rejected). Events are verified by ``fetch_events``; an event by an author that
    was not asked for, or of another kind, is rejected too.
    """
    from tidings.storage import bridges as db

    follows = await call(db.sources, NAME, "in")
    if not follows:
        return 0, 0
    flt = wire.follow_filter([f["source"] for f in follows], newest_seen(follows), slack=SLACK)
    fetched = await fetch_events(relay, [flt], timeout=timeout)
    wanted = {f["source"]: f for f in follows}
    rejected = fetched.rejected
    good: list[wire.Event] = []
    for event in fetched.events:
        if event.pubkey not in wanted or event.kind != 1:
            rejected += 1
        else:
            good.append(event)
    await note_authors_ok(call, list(wanted))
    return await import_events(call, home, wanted, good), rejected


class NostrBridge(Bridge):
    """Nostr both ways over NIP-01 relays."""

    name = NAME
    description = "Nostr: publish your posts as kind-1 events; follow Nostr authors as bridge feeds."
    settings = (
        Setting(
            name="publish",
            default="off",
            help="publish your posts to the relays from the node",
            parse=parse_bool,
        ),
        Setting(
            name="interval",
            default="60",
            help="longest time between full re-subscriptions to a relay (events arrive live in between)",
            parse=parse_seconds,
        ),
        Setting(
            name="retry",
            default="10",
            help="first retry delay after a relay failure (doubles)",
            parse=parse_seconds,
        ),
        Setting(name="timeout", default="10", help="seconds to wait for a relay", parse=parse_seconds),
    )

    def service(self, ctx: BridgeContext) -> NostrService | None:
        from tidings.storage import bridges as db

        if not db.sources(ctx.store, NAME, "relay"):
            return None
        if ctx.settings.get("publish") != "on" and not db.sources(ctx.store, NAME, "in"):
            return None  # opt-in: neither direction is enabled
        from tidings.node.bridges.nostr_live import NostrService

        return NostrService(ctx.home, ctx.settings)

    def status(self, ctx: BridgeContext) -> dict[str, Any]:
        out = super().status(ctx)
        key = ctx.home.path / "bridges" / NAME / "nostr.key"
        out["npub"] = wire.npub(wire.public_key(nostr_secret(ctx.home))) if key.exists() else None
        return out

    def command(self) -> click.Group:
        return nostr_group


# -- commands -------------------------------------------------------------------------------------------
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
    added = db.add_source(session.store(), NAME, "relay", url, feed=None, now=_now())
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
    feed, followed = follow_source(session.store(), session.home, session.key(), NAME, pub, _now())
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
            row = trio.run(one, call, relay, timeout)
        except BridgeError as exc:
            row = {**failed, "error": str(exc)}
        rows.append({"relay": relay["source"], **row})
        _note_round(store, relay["source"], row["error"])
    _report(rows, as_json, what)


def _note_round(store: Store, relay: str, error: str | None) -> None:
    from tidings.storage import bridges as db

    now = _now()
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
