"""Followers the node does not replicate yet: how it learns to fetch their feeds (spec §12.3, *Followers*).

Theory of operation. A node wants the feeds that follow it (``storage.gossip.wanted_feeds``: the
authors of the active follow entries it holds that name its feed), so that their private messages
reach it (spec §8.6) from any node that carries their logs, also while they are offline. To hold such
a follow entry it must first fetch the follower's log once. It learns which log from the follower's own
node: a follower wants the feed it follows, so its node looks that feed up and connects (§13.6) and
names it in a clock. When a peer's clock names our feed and the peer's own feed is neither wanted nor
blocked here, the connection becomes a *candidate*: we name the peer's feed in a clock on this
connection only, and keep its entries (``PeerConnection._filter``). Once stored, a follow entry of it
naming us makes it wanted like any follower; a peer that only replicates us without following us is
not wanted afterwards (its entries stay stored, as those of an unfollowed feed do).

What others learn: the candidate item goes only to the peer it names, which knows it asked for our
feed. Every other peer sees the feed in our clocks only once a stored, public follow entry names us,
which anyone holding the follower's log can see too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from tidings.protocol.replication import ClockItem

    from .host import ConnectionHost

__all__ = ["on_clock"]


class Connection(Protocol):
    """What this needs of a ``PeerConnection``."""

    node: ConnectionHost
    feed: bytes
    once: bool
    candidate: bool

    async def send_wants(self, wants: set[bytes]) -> None: ...


async def on_clock(conn: Connection, items: tuple[ClockItem, ...]) -> None:
    """The peer sent a clock: if it names our feed, ask the peer for its own feed once (above)."""
    node = conn.node
    me = node.key.public_key
    peer = conn.feed
    if conn.candidate or conn.once or peer == me or peer in node.wanted or peer in node.blocked:
        return
    if any(item.feed == me for item in items):
        conn.candidate = True
        await conn.send_wants(node.wanted | {peer})
