"""Followers the node does not replicate yet: how it learns to fetch their feeds (spec §12.3, *Followers*).

Theory of operation. A node wants the feeds that follow it (``storage.gossip.wanted_feeds``: the
authors of the active follow entries it holds that name its feed), so that their private messages
reach it (spec §8.6) from any node that carries their logs, also while they are offline. To hold such
a follow entry it must first get it. Two ways, both of which tell it only what the follower's public
log tells anyone who holds it:

- *From the follower's own node* (any version). A follower wants the feed it follows, so its node looks
  that feed up and connects (§13.6) and names it in a clock. When a peer's clock names our feed and the
  peer's own feed is neither wanted nor blocked here, the connection becomes a *candidate*: we name the
  peer's feed in a clock on this connection only, and keep its entries (``PeerConnection``'s filter).
- *From any node that carries the follower's log* (version 5, **follower notes**). When a peer's first
  clock arrives, before it is answered, we send the peer the active follow entries we hold that name
  its feed, of at most ``MAX_FOLLOWER_NOTES`` feeds its clock did not name, newest first
  (``storage.gossip.follow_entries``). A node keeps such an entry of a feed it does not want when it
  is a follow of its own feed by a feed it does not block, at most ``MAX_FOLLOWER_NOTES`` looked at
  per connection (``keep_note``): stored like any entry (signature and links checked; alone, it starts
  a partial log), it makes its author a follower. A hostile peer cannot forge one (it is signed), and
  what it sends beyond the limit counts as before, as entries nobody asked for.

Once stored, a follow entry naming us makes its author wanted like any follower, named to every peer,
and its log after the follow is fetched from whoever holds it; a peer that only replicates us without
following us is not wanted afterwards (its entries stay stored, as those of an unfollowed feed do).

What others learn: the candidate item goes only to the peer it names, which knows it asked for our
feed; follower notes go only to the feed they name. Every other peer sees a follower in our clocks only
once a stored, public follow entry names us, which anyone holding the follower's log can see too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from tidings.protocol import DecodeError, Follow, InvalidContent, decode_content
from tidings.protocol.replication import Entries
from tidings.protocol.replication_events import MAX_FOLLOWER_NOTES
from tidings.storage import gossip

if TYPE_CHECKING:
    from tidings.protocol.replication import ClockItem, Replication

    from .host import ConnectionHost
    from .transport import SecureChannel

__all__ = ["Notes", "keep_note", "on_clock"]


@dataclass
class Notes:
    """Follower notes on one connection: whether ours went out, how many of the peer's were looked at."""

    sent: bool = False
    looked_at: int = 0


class Connection(Protocol):
    """What this needs of a ``PeerConnection``."""

    node: ConnectionHost
    feed: bytes
    once: bool
    candidate: bool
    notes: Notes
    rep: Replication
    channel: SecureChannel

    async def send_wants(self, wants: set[bytes]) -> None: ...


async def on_clock(conn: Connection, items: tuple[ClockItem, ...]) -> None:
    """The peer sent a clock: on the first, our follower notes (version 5); if it names our feed, ask
    the peer for its own feed once (above)."""
    node = conn.node
    me = node.key.public_key
    peer = conn.feed
    if not conn.notes.sent and conn.rep.version >= 5 and peer != me:
        conn.notes.sent = True
        named = set(conn.rep.peer_wants)
        notes = await node.db.call(gossip.follow_entries, peer, named, MAX_FOLLOWER_NOTES)
        if notes and conn.rep.state == "ACTIVE":
            await conn.channel.send(conn.rep.send(Entries(items=tuple(notes))))
    if conn.candidate or conn.once or peer == me or peer in node.wanted or peer in node.blocked:
        return
    if any(item.feed == me for item in items):
        conn.candidate = True
        await conn.send_wants(node.wanted | {peer})


def keep_note(conn: Connection, author: bytes, payload: bytes | None) -> bool:
    """Whether an entry of ``author``, a feed we do not want, is a follower note to keep (above)."""
    notes = conn.notes
    if conn.rep.version < 5 or payload is None or notes.looked_at >= MAX_FOLLOWER_NOTES:
        return False
    if author in conn.node.blocked:
        return False
    notes.looked_at += 1
    try:
        content = decode_content(payload)
    except (DecodeError, InvalidContent):
        return False
    return isinstance(content, Follow) and content.feed == conn.node.key.public_key
