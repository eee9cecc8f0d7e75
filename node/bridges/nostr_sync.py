"""Nostr, one round each way (spec §14.5): own posts out as kind-1 events, followed authors' events in.

Out: each own post becomes a kind-1 event signed by the bridge's own secp256k1 key
(``HOME/bridges/nostr/nostr.key``), ``created_at`` = the entry time in seconds, with a ``["tidings",
ENTRY_ID]`` tag linking back and NIP-10 ``e`` tags for replies to posts published before.
In: kind-1 events of followed keys, verified (id and BIP-340 signature), are imported once per event
id into one bridge feed per author, which the user follows. Progress per relay is kept in
``storage.bridges`` (cursor = last own seq sent; per author, cursor = newest ``created_at`` imported).

These rounds are shared by the one-shot commands (``tidings bridge nostr publish``/``pull``) and the
node's live connections (``nostr_live.NostrService``). ``call(fn, *args)`` runs ``fn(store, *args)``:
on the node's database thread, or directly on the CLI's store.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from tidings.node.bridges.base import BridgeError
from tidings.node.bridges.relay import fetch_events, publish_events
from tidings.node.clock import SYSTEM_CLOCK, Clock
from tidings.protocol import nostr as wire

if TYPE_CHECKING:
    from tidings.node.home import Home
    from tidings.storage.store import Store

__all__ = [
    "NAME",
    "SLACK",
    "Call",
    "import_events",
    "newest_seen",
    "nostr_secret",
    "note_authors_ok",
    "publish_pending",
    "pull_follows",
]

log = logging.getLogger("tidings.bridges.nostr")

NAME = "nostr"
OUT = "out"  # bridge_items source of published events: item = event id, entry = the post
SLACK = 600  # seconds re-asked before the newest event seen (relays may learn events late)
Call = Callable[..., Awaitable[Any]]
Send = Callable[[list[wire.Event]], Awaitable[dict[str, tuple[bool, str]]]]


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
    clock: Clock = SYSTEM_CLOCK,
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
                await call(db.mark_items, NAME, OUT, [(event.id, post["hash"])], clock.wall_ms())
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
    call: Call,
    home: Home,
    follows: dict[str, dict[str, Any]],
    events: list[wire.Event],
    *,
    clock: Clock = SYSTEM_CLOCK,
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
    imported, now = 0, clock.wall_ms()
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


async def note_authors_ok(call: Call, authors: list[str], *, clock: Clock = SYSTEM_CLOCK) -> None:
    """Record a successful round for each followed author (shown by ``tidings bridge list``)."""
    from tidings.storage import bridges as db

    now = clock.wall_ms()
    for author in authors:
        await call(db.note_poll, NAME, "in", author, last_poll=now, last_ok=now, last_error=None, failures=0)


async def pull_follows(
    call: Call, home: Home, relay: str, *, timeout: float, clock: Clock = SYSTEM_CLOCK
) -> tuple[int, int]:
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
    await note_authors_ok(call, list(wanted), clock=clock)
    return await import_events(call, home, wanted, good, clock=clock), rejected
