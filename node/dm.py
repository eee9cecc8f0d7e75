"""Private messages as a user writes and reads them (spec/protocol.md §8.6; spec/cli.md, *Private messages*).

Theory of operation: like ``node.actions``, each function works on a ``Store`` with the signing key
(or the feed key, to read) and returns what the front ends print. ``send`` checks what only the store
can tell — every recipient is a feed this node knows (an entry, a follow, a peer), a reply answers a
message it holds — then appends the message, sealed inside the append's transaction (``Store.append``)
with random bytes from the OS, and reads it back at once (the author's own slot). ``inbox`` and
``conversation`` first open the boxes that wait for the key (stored by a process that did not have it,
``storage.messages``), then read what was opened. Refusals are ``DmError`` (``unknown_feed``,
``not_a_message``, ``no_recipients``) or the protocol's (``too_many_recipients``, ``message_too_long``,
``bad_recipient``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tidings.protocol import BoxKey, Message, TidingsError, feed_id_text
from tidings.protocol.box import MAX_RECIPIENTS
from tidings.storage import messages
from tidings.storage.reads import entry_written

if TYPE_CHECKING:
    from tidings.protocol import SigningKey
    from tidings.storage.store import Store

__all__ = ["DmError", "catch_up", "conversation", "inbox", "send"]


class DmError(TidingsError):
    """A private message the rules refuse."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message, code=code)


def _box_key(store: Store, key: SigningKey) -> BoxKey:
    """The store's ``BoxKey``, made of ``key`` when it has none (or another's)."""
    box_key = store.box_key
    if box_key is None or box_key.feed != key.public_key:
        box_key = store.box_key = BoxKey(key)
    return box_key


def catch_up(store: Store, key: SigningKey) -> int:
    """Open the boxes stored while the key was not at hand; returns how many were tried."""
    box_key = _box_key(store, key)
    if not messages.pending_count(store):
        return 0
    return store.run(lambda cur: messages.open_pending(cur, box_key))


def send(
    store: Store,
    key: SigningKey,
    to: Sequence[bytes],
    text: str,
    *,
    reply: str | None = None,
    now: int,
) -> dict[str, Any]:
    """Write ``text`` privately to the feeds ``to`` (you are always a participant); with ``reply``
    (an entry id or prefix of a message you hold), to the people of that message, answering it."""
    me = key.public_key
    answered = None
    # the feeds given must be known here; those of a message we read are known by that message
    for feed in dict.fromkeys(to):
        if feed != me and not messages.known_feed(store, feed):
            raise DmError(
                f"{feed_id_text(feed)} is not a feed this node knows (no entry, follow or peer): check the "
                "id, or follow the feed first",
                code="unknown_feed",
            )
    if reply is not None:
        from tidings.node.actions import resolve  # only for replies: it loads the media tools

        answered = resolve(store, reply)
        found = messages.message_of(store, _box_key(store, key), answered)
        if found is None:
            raise DmError(f"{reply} is not a private message you can read", code="not_a_message")
        author, recipients = found
        to = [*to, author, *recipients]
    people = list(dict.fromkeys(f for f in to if f != me))
    if not people:
        raise DmError("name at least one feed besides yourself", code="no_recipients")
    if len(people) > MAX_RECIPIENTS:
        raise DmError(
            f"a private message goes to at most {MAX_RECIPIENTS} feeds besides you, not {len(people)}",
            code="too_many_recipients",
        )
    message = Message(text=text, to=tuple(people), reply=answered)
    _box_key(store, key)  # our own slot: the message is in our inbox at once
    entry = store.append(key, message, now=now, rng=os.urandom)
    return {**entry_written(entry, "box"), "to": [feed_id_text(f) for f in people]}


def inbox(store: Store, key: SigningKey, *, requests: bool = False) -> list[dict[str, Any]]:
    """Conversations, newest first (``storage.messages.inbox``); boxes waiting for the key are opened
    first. The key also unseals what was read (kept sealed at rest)."""
    catch_up(store, key)
    return messages.inbox(store, _box_key(store, key), requests=requests)


def conversation(store: Store, key: SigningKey, others: Sequence[bytes]) -> list[dict[str, Any]]:
    """The messages between us and ``others``, oldest first; marks them read."""
    catch_up(store, key)
    return messages.conversation(store, _box_key(store, key), set(others) - {key.public_key})
