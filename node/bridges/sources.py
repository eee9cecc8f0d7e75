"""Inbound sources of a bridge, and the user's follows of their bridge feeds (spec §14.1).

Following a source records it for its bridge and appends a Follow of its bridge feed (signed by a key
the bridge owns, ``keys.feed_key``) to the user's own log, exactly as ``tidings follow`` does, so the
timeline shows it like any followed feed; unfollowing forgets the source and appends the Unfollow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tidings.node.bridges.keys import feed_key
from tidings.protocol import Follow, Unfollow
from tidings.storage import bridges as db

if TYPE_CHECKING:
    from tidings.node.home import Home
    from tidings.protocol import SigningKey
    from tidings.storage.store import Store

__all__ = ["follow_source", "unfollow_source"]


def follow_source(
    store: Store, home: Home, me: SigningKey, bridge: str, source: str, now: int
) -> tuple[bytes, bool]:
    """Record ``source`` as an inbound source of ``bridge`` and follow its bridge feed from the user's
    own log (as ``tidings follow`` does). Returns the bridge feed and whether a Follow was appended."""
    feed = feed_key(home, bridge, source).public_key
    db.add_source(store, bridge, "in", source, feed=feed, now=now)
    if feed in store.graph_targets(me.public_key, "follow"):
        return feed, False
    store.append(me, Follow(feed=feed))
    return feed, True


def unfollow_source(store: Store, me: SigningKey, bridge: str, source: str) -> dict[str, Any] | None:
    """Forget an inbound source of ``bridge`` and unfollow its bridge feed; its row, or None if unknown."""
    src = db.remove_source(store, bridge, "in", source)
    if src is not None and src["feed"] and src["feed"] in store.graph_targets(me.public_key, "follow"):
        store.append(me, Unfollow(feed=src["feed"]))
    return src
