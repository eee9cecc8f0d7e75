"""What a user does to their own log: post, reply, react, repost, delete, follow, block, set a profile.

Theory of operation: each action is one function over a ``Store``, the signing key and the time
``now`` (milliseconds since the epoch, read from the node's clock seam, node/clock.py, by the caller).
It checks what only the store can tell (the entry exists, it is ours, it is not deleted yet), appends
one entry (one transaction) and returns what both front ends show: the fields of
``tidings ... --json`` and of the web API's ``Written`` (id, feed, seq, ts, type). The CLI
(cli/commands_write.py, cli/commands_graph.py) and the web API (node/web/api.py) only parse their
input, call these and print the result, so a rule lives in one place.

Entries are named by a full ``%id`` or a unique prefix of one, in any case, with or without the
``%`` and the ``…`` of a shortened id (``entry_prefix``, ``resolve``). Refusals are ``ActionError``
(codes ``self``, ``already_deleted``, ``blocked``, ``not_emoji``) or the store's typed errors
(``NotFound``, ``AmbiguousId``, ``NotYours``, ``bad_id``).

The social graph (``graph``) has two relations per feed, follow and block (spec/protocol.md
§8.2.4); an entry is written only when it changes one:

==============================  =========================================================
follow a feed already followed  nothing written: ``changed`` false, ``note`` says so
(likewise unfollow, block,      (the result is the entry that already decides, or ids
unblock that change nothing)    of null when no entry ever did)
follow a blocked feed           refused (``blocked``): unblock it first
block a followed feed           written, with a ``warning``: the follow stays, inactive
                                while the block lasts (a blocked feed is never wanted,
                                spec/protocol.md §12.3)
==============================  =========================================================

Mutes (``mute``, ``unmute``) are local and never published; muting yourself is refused.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from tidings.node import media
from tidings.protocol import (
    BlobRef,
    Block,
    Delete,
    EntryId,
    Follow,
    Post,
    Profile,
    ProtocolError,
    Reaction,
    Repost,
    TidingsError,
    Unblock,
    Unfollow,
    entry_id_text,
    feed_id_text,
    type_of,
)
from tidings.storage.errors import NotFound, NotYours, StoreError
from tidings.storage.reads import MIN_PREFIX, entry_written

if TYPE_CHECKING:
    from tidings.protocol import Content, SigningKey
    from tidings.storage.blobs import BlobStore
    from tidings.storage.store import Store

__all__ = [
    "GRAPH_KINDS",
    "ActionError",
    "GraphKind",
    "attach",
    "block",
    "delete",
    "entry_prefix",
    "follow",
    "graph",
    "is_emoji",
    "keep_prepared",
    "mute",
    "post",
    "react",
    "reply_links",
    "repost",
    "resolve",
    "set_profile",
    "unblock",
    "unfollow",
    "unmute",
]

#: The characters of a text id after its sigil, and how many a full one has (spec/protocol.md §3.1).
BASE32 = "abcdefghijklmnopqrstuvwxyz234567"
ID_LENGTH = 52

GraphKind = Literal["follow", "unfollow", "block", "unblock"]
GRAPH_KINDS: tuple[GraphKind, ...] = ("follow", "unfollow", "block", "unblock")
_GRAPH = {"follow": Follow, "unfollow": Unfollow, "block": Block, "unblock": Unblock}
#: What a repeated graph action says: nothing was written.
_ALREADY = {
    "follow": "you already follow {feed}",
    "unfollow": "you do not follow {feed}",
    "block": "{feed} is already blocked",
    "unblock": "{feed} is not blocked",
}


class ActionError(TidingsError):
    """An action the rules refuse: ``self`` (follow or block yourself), ``already_deleted``."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message, code=code)


def _append(store: Store, key: SigningKey, content: Content, now: int) -> dict[str, Any]:
    """Sign and store ``content`` as ``key``'s next entry; the entry as both front ends show it."""
    return entry_written(store.append(key, content, now=now), type_of(content))


def entry_prefix(text: str) -> str:
    """An entry id or prefix as a user gives it, as the store reads it (``%`` and lowercase
    base32): any case, with or without ``%``, with the ``…`` (or ``...``) of an id shortened for
    display. Raises ``StoreError`` code ``bad_id`` (as the store does for a malformed id) saying what
    is wrong: a feed id, a character that is not base32, too short, too long, a last character no
    id ends in."""
    body = text.strip()
    for ellipsis in ("…", "..."):
        body = body.removesuffix(ellipsis)
    if body.startswith("@"):
        raise StoreError(f"{text!r} is a feed id; give an entry id (%...)", code="bad_id")
    body = body.removeprefix("%").lower()
    for i, c in enumerate(body):
        if c not in BASE32:
            raise StoreError(
                f"{text!r} is not an entry id: {c!r} (character {i + 2}) is not base32 (a-z, 2-7)",
                code="bad_id",
            )
    if len(body) < MIN_PREFIX:
        raise StoreError(
            f"{text!r} is too short: give at least {MIN_PREFIX} characters of the entry id after %",
            code="bad_id",
        )
    if len(body) > ID_LENGTH:
        raise StoreError(
            f"{text!r} is too long: an entry id has {ID_LENGTH} characters after %, this has {len(body)}",
            code="bad_id",
        )
    if len(body) == ID_LENGTH:
        try:
            EntryId.parse("%" + body)
        except ProtocolError as exc:  # its last character (spec/protocol.md §3.1)
            reason = exc.message.removeprefix("entry id: ")
            raise StoreError(f"{text!r} is not an entry id: {reason}", code="bad_id") from None
    return "%" + body


def resolve(store: Store, text: str) -> bytes:
    """A stored entry's hash from a full ``%id`` or a unique prefix, as ``entry_prefix`` reads it.
    Errors say what is wrong: malformed (``bad_id``), no such entry here (``NotFound``), more than
    one entry with that prefix (``AmbiguousId``)."""
    wanted = entry_prefix(text)
    try:
        hash_ = store.resolve_entry(wanted)
        store.entry_author(hash_)  # NotFound when this store does not hold a full id
    except NotFound:
        shown = wanted if len(wanted) > ID_LENGTH else wanted + "…"
        raise NotFound(f"no entry {shown} in this store") from None
    return hash_


def reply_links(store: Store, reply_to: str) -> tuple[bytes, bytes]:
    """``(reply, root)`` of a reply to ``reply_to``: root is the parent's root if it names a valid
    one, else the parent (spec/protocol.md §8.2.1)."""
    reply = resolve(store, reply_to)
    parent_root = (store.entry(reply).get("content") or {}).get("root")
    if isinstance(parent_root, str):
        try:
            return reply, EntryId.parse(parent_root).hash
        except ProtocolError:
            pass  # a parent with a malformed root starts its own thread
    return reply, reply


def post(
    store: Store,
    key: SigningKey,
    text: str,
    *,
    reply_to: str | None = None,
    attachments: Sequence[BlobRef] = (),
    now: int,
) -> dict[str, Any]:
    """Append a post; with ``reply_to`` (an entry id or unique prefix), a reply in that thread; with
    ``attachments`` (``attach``), pictures and files (spec §8.5)."""
    reply = root = None
    if reply_to is not None:
        reply, root = reply_links(store, reply_to)
    content = Post(text=text, reply=reply, root=root, attachments=tuple(attachments))
    return _append(store, key, content, now)


def attach(
    blobs: BlobStore,
    path: str,
    *,
    alt: str | None = None,
    keep_metadata: bool = False,
    picture: bool = False,
) -> BlobRef:
    """Store the file at ``path`` for a post or a profile: a picture is re-encoded here first, so its
    metadata (EXIF and GPS, XMP, comments, thumbnails) never leaves the machine unless ``keep_metadata``
    (node/media.py); it and its preview become pinned blobs. ``picture``: anything else is refused
    before it is stored. The reference to carry (spec §8.5)."""
    prepared = media.prepare(path, keep_metadata=keep_metadata, max_blob=blobs.max_blob)
    if picture and prepared.kind != "image":
        raise ActionError(f"{path} is not a picture (JPEG, PNG, WebP or GIF)", code="not_a_picture")
    return keep_prepared(blobs, prepared, alt=alt)


def keep_prepared(blobs: BlobStore, prepared: media.Prepared, *, alt: str | None = None) -> BlobRef:
    """Store what ``media.prepare`` made (the second half of ``attach``; the web page prepares in a
    worker thread and stores on the database thread): the file and its preview become pinned blobs.
    The reference to carry (spec §8.5)."""
    blob = blobs.put_bytes(prepared.data, pinned=True)
    preview = None if prepared.preview is None else blobs.put_bytes(prepared.preview, pinned=True)
    return BlobRef(
        blob=blob.hash,
        size=len(prepared.data),
        mime=prepared.mime,
        width=prepared.width,
        height=prepared.height,
        alt=alt or None,
        preview=None if preview is None else preview.hash,
    )


def react(store: Store, key: SigningKey, entry: str, emoji: str, *, now: int) -> dict[str, Any]:
    """Append a reaction to ``entry``: an emoji (``is_emoji``), spaces around it dropped."""
    target = resolve(store, entry)
    emoji = emoji.strip()
    if not is_emoji(emoji):
        raise ActionError(f"{emoji!r} is not an emoji: react with one, such as 👍 or 🎉", code="not_emoji")
    return _append(store, key, Reaction(target=target, emoji=emoji), now)


#: What may follow or join the symbols of an emoji: zero-width joiner, variation selectors, the
#: combining keycap; skin tone modifiers and tag characters are ranges (``is_emoji``).
_EMOJI_PARTS = {"\u200d", "\ufe0e", "\ufe0f", "\u20e3"}


def is_emoji(text: str) -> bool:
    """Whether ``text`` is one emoji or a few (a reaction, as people write them): symbols (Unicode
    category So: 🎉 👍 ❤ and flags' regional indicators), a character shown as emoji by the
    variation selector U+FE0F (‼️) or a keycap (1️⃣), with what joins and modifies them (ZWJ
    sequences, skin tones, tag sequences). Letters, digits, spaces and punctuation of their own
    are not: ``hello world`` is text, not a reaction. The protocol asks only for non-blank text
    (spec/protocol.md §8.2.2); this is what we write."""
    symbols = 0
    for i, c in enumerate(text):
        code = ord(c)
        if c in _EMOJI_PARTS or 0x1F3FB <= code <= 0x1F3FF or 0xE0020 <= code <= 0xE007F:
            continue
        if unicodedata.category(c) == "So" or text[i + 1 : i + 2] in ("\ufe0f", "\u20e3"):
            symbols += 1
            continue
        return False
    return symbols > 0


def repost(store: Store, key: SigningKey, entry: str, *, now: int) -> dict[str, Any]:
    """Append a repost of ``entry``."""
    return _append(store, key, Repost(target=resolve(store, entry)), now)


def delete(store: Store, key: SigningKey, entry: str, *, now: int) -> dict[str, Any]:
    """Append a tombstone for one of our own entries: its payload is dropped here and by peers, the
    log stays valid (spec/protocol.md §8.2.9). Someone else's entry is ``NotYours``."""
    target = resolve(store, entry)
    if store.entry_author(target) != key.public_key:
        raise NotYours(f"{entry_id_text(target)} is someone else's entry: you can only delete your own")
    if store.entry(target).get("deleted"):
        raise ActionError(f"{entry_id_text(target)} is already deleted", code="already_deleted")
    return _append(store, key, Delete(target=target), now)


def graph(store: Store, key: SigningKey, kind: GraphKind, feed: bytes, *, now: int) -> dict[str, Any]:
    """Append a follow, unfollow, block or unblock of ``feed`` (a public entry in our log) when it
    changes something; the result has ``changed``. See the module docstring for the rules: a
    repeat writes nothing and returns the entry that already decides (``changed`` false), following a
    blocked feed is refused, blocking a followed feed adds a ``warning``."""
    if feed == key.public_key and kind in ("follow", "block"):
        raise ActionError(f"you cannot {kind} yourself", code="self")
    me, name = key.public_key, feed_id_text(feed)
    relation = "block" if kind in ("block", "unblock") else "follow"
    standing = store.graph_entry(me, relation, feed)
    if (standing is not None and bool(standing["active"])) == (
        kind == relation
    ):  # a repeat: the state asked for is the state already
        shown = {k: (standing or {}).get(k) for k in ("id", "seq", "ts", "type")}
        return {
            **shown,
            "feed": feed_id_text(me),
            "type": shown["type"] or kind,
            "changed": False,
            "note": _ALREADY[kind].format(feed=name),
        }
    if kind == "follow" and _holds(store, me, "block", feed):
        raise ActionError(f"{name} is blocked: unblock it first (tidings unblock {name})", code="blocked")
    written = {**_append(store, key, _GRAPH[kind](feed=feed), now), "changed": True}
    if kind == "block" and _holds(store, me, "follow", feed):
        written["warning"] = (
            f"you follow {name}: it stays followed, but is neither shown nor replicated while "
            f"blocked (to stop following it: tidings unfollow {name})"
        )
    return written


def _holds(store: Store, me: bytes, relation: str, feed: bytes) -> bool:
    """Whether we follow (``relation`` ``follow``) or block (``block``) ``feed`` now."""
    standing = store.graph_entry(me, relation, feed)
    return standing is not None and bool(standing["active"])


def follow(store: Store, key: SigningKey, feed: bytes, *, now: int) -> dict[str, Any]:
    """Follow ``feed``: its posts join our timeline and it is replicated."""
    return graph(store, key, "follow", feed, now=now)


def unfollow(store: Store, key: SigningKey, feed: bytes, *, now: int) -> dict[str, Any]:
    """Stop following ``feed``."""
    return graph(store, key, "unfollow", feed, now=now)


def block(store: Store, key: SigningKey, feed: bytes, *, now: int) -> dict[str, Any]:
    """Block ``feed``: hidden everywhere, not replicated."""
    return graph(store, key, "block", feed, now=now)


def unblock(store: Store, key: SigningKey, feed: bytes, *, now: int) -> dict[str, Any]:
    """Lift a block of ``feed``."""
    return graph(store, key, "unblock", feed, now=now)


def mute(store: Store, me: bytes, kind: Literal["feed", "word"], value: str) -> dict[str, Any]:
    """Hide a feed (``value`` its ``@id``) or posts with a word from the timeline: local only, never
    published. Muting yourself is refused (your own posts would vanish from your timeline); a repeat
    changes nothing (``changed`` false)."""
    if kind == "feed" and value == feed_id_text(me):
        raise ActionError("you cannot mute yourself", code="self")
    return {"kind": kind, "value": value, "muted": True, "changed": store.mute(kind, value)}


def unmute(store: Store, kind: Literal["feed", "word"], value: str) -> dict[str, Any]:
    """Show a muted feed or word again (``changed`` false when it was not muted)."""
    return {"kind": kind, "value": value, "muted": False, "changed": store.unmute(kind, value)}


def set_profile(
    store: Store,
    key: SigningKey,
    *,
    name: str | None,
    bio: str | None,
    avatar: BlobRef | None = None,
    now: int,
) -> dict[str, Any]:
    """Append a profile entry (``bio=''`` clears the bio; ``avatar`` from ``attach``) and return the
    profile now shown, with the entry's ``id``, ``seq`` and ``ts``."""
    written = _append(store, key, Profile(name=name, bio=bio, avatar=avatar), now)
    shown = store.profile(key.public_key)
    return {**shown, "id": written["id"], "seq": written["seq"], "ts": written["ts"]}
