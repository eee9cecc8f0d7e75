"""What a user does to their own log: post, reply, react, repost, delete, follow, block, set a profile.

Theory of operation: each action is one function over a ``Store``, the signing key and the time
``now`` (milliseconds since the epoch, read from the node's clock seam, node/clock.py, by the caller).
It checks what only the store can tell (the entry exists, it is ours, it is not deleted yet), appends
one entry (one transaction) and returns what both front ends show: the fields of
``tidings ... --json`` and of the web API's ``Written`` (id, feed, seq, ts, type). The CLI
(cli/commands_write.py, cli/commands_graph.py) and the web API (node/web/api.py) only parse their
input, call these and print the result, so a rule lives in one place.

Entries are named by a full ``%id`` or a unique prefix of one (``resolve``). Refusals are
``ActionError`` (codes ``self``, ``already_deleted``) or the store's typed errors (``NotFound``,
``AmbiguousId``, ``NotYours``, ``bad_id``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from tidings.protocol import (
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
    type_of,
)
from tidings.storage.errors import NotYours
from tidings.storage.reads import entry_written

if TYPE_CHECKING:
    from tidings.protocol import Content, SigningKey
    from tidings.storage.store import Store

__all__ = [
    "GRAPH_KINDS",
    "ActionError",
    "GraphKind",
    "block",
    "delete",
    "follow",
    "graph",
    "post",
    "react",
    "reply_links",
    "repost",
    "resolve",
    "set_profile",
    "unblock",
    "unfollow",
]

GraphKind = Literal["follow", "unfollow", "block", "unblock"]
GRAPH_KINDS: tuple[GraphKind, ...] = ("follow", "unfollow", "block", "unblock")
_GRAPH = {"follow": Follow, "unfollow": Unfollow, "block": Block, "unblock": Unblock}


class ActionError(TidingsError):
    """An action the rules refuse: ``self`` (follow or block yourself), ``already_deleted``."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message, code=code)


def _append(store: Store, key: SigningKey, content: Content, now: int) -> dict[str, Any]:
    """Sign and store ``content`` as ``key``'s next entry; the entry as both front ends show it."""
    return entry_written(store.append(key, content, now=now), type_of(content))


def resolve(store: Store, text: str) -> bytes:
    """A stored entry's hash from a full ``%id`` or a unique prefix (errors: not found, ambiguous,
    malformed). ``Store.resolve_entry`` returns a full id as is; an action also needs the entry."""
    hash_ = store.resolve_entry(text)
    store.entry_author(hash_)  # NotFound when this store does not hold it
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
    store: Store, key: SigningKey, text: str, *, reply_to: str | None = None, now: int
) -> dict[str, Any]:
    """Append a post; with ``reply_to`` (an entry id or unique prefix), a reply in that thread."""
    reply = root = None
    if reply_to is not None:
        reply, root = reply_links(store, reply_to)
    return _append(store, key, Post(text=text, reply=reply, root=root), now)


def react(store: Store, key: SigningKey, entry: str, emoji: str, *, now: int) -> dict[str, Any]:
    """Append a reaction (an emoji) to ``entry``."""
    return _append(store, key, Reaction(target=resolve(store, entry), emoji=emoji), now)


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
    """Append a follow, unfollow, block or unblock of ``feed`` (a public entry in our log)."""
    if feed == key.public_key and kind in ("follow", "block"):
        raise ActionError(f"you cannot {kind} yourself", code="self")
    return _append(store, key, _GRAPH[kind](feed=feed), now)


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


def set_profile(
    store: Store, key: SigningKey, *, name: str | None, bio: str | None, now: int
) -> dict[str, Any]:
    """Append a profile entry (``bio=''`` clears the bio) and return the profile now shown, with the
    entry's ``id``, ``seq`` and ``ts``."""
    written = _append(store, key, Profile(name=name, bio=bio), now)
    shown = store.profile(key.public_key)
    return {**shown, "id": written["id"], "seq": written["seq"], "ts": written["ts"]}
