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
- *From any node that carries the follower's log* (version 5, **follower notes**). When a peer's
  first clock arrives, before it is answered, we send the peer, in a ``followers`` message, the active
  follow entries we hold that name its feed, of at most ``MAX_FOLLOWER_NOTES`` feeds its clock did not
  name, newest first (``storage.gossip.follow_entries``). The receiver looks at most
  ``MAX_FOLLOWER_NOTES`` notes per connection (``on_notes``): one that is a validly signed follow of its
  own feed, by a feed it neither blocks nor wants yet, *notes* its author (``node.noted``, at most
  ``MAX_NOTED``), which makes it wanted, so the whole log is fetched from whoever holds it, the follow
  among it. Notes are never stored as they come: alone, an entry would start a partial log, and the
  entries before it, posts included, would never be asked for. A hostile peer cannot forge a note (it
  is signed); each note that is not a good one, or beyond the limit, costs it as an entry nobody asked
  for (``useless``).

Once stored, a follow entry naming us makes its author wanted like any follower, named to every peer
(and no longer noted); a peer that only replicates us without following us is not wanted afterwards
(its entries stay stored, as those of an unfollowed feed do).

What others learn: the candidate item goes only to the peer it names, which knows it asked for our
feed; follower notes go only to the feed they name. Every other peer sees a follower in our clocks only
once a stored, public follow entry names us, which anyone holding the follower's log can see too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from tidings.protocol import Entry, Follow, ProtocolError, decode_content, signature_ok, verify_payload
from tidings.protocol.replication import Followers
from tidings.protocol.replication_events import MAX_FOLLOWER_NOTES
from tidings.storage import gossip

if TYPE_CHECKING:
    from tidings.protocol.replication import ClockItem, Replication

    from .host import ConnectionHost
    from .transport import SecureChannel

__all__ = ["MAX_NOTED", "Notes", "on_clock", "on_notes"]

#: Most followers a node remembers from notes until their logs arrive (each is a wanted feed).
MAX_NOTED = 256


@dataclass
class Notes:
    """Follower notes on one connection: whether ours went out, how many of the peer's were looked at."""

    sent: bool = False
    looked_at: int = 0
    taken: int = 0  # notes whose authors were noted


class Connection(Protocol):
    """What this needs of a ``PeerConnection``."""

    node: ConnectionHost
    feed: bytes
    once: bool
    candidate: bool
    notes: Notes
    rep: Replication
    channel: SecureChannel
    host: str
    useless: int

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
            await conn.channel.send(conn.rep.send(Followers(items=tuple(notes))))
    if conn.candidate or conn.once or peer == me or peer in node.wanted or peer in node.blocked:
        return
    if any(item.feed == me for item in items):
        conn.candidate = True
        await conn.send_wants(node.wanted | {peer})


async def on_notes(conn: Connection, items: tuple[tuple[bytes, bytes], ...]) -> None:
    """The peer sent follower notes (version 5, above): note the authors of the good ones and ask
    every peer for their logs; the rest costs the peer as useless entries."""
    node, notes, me = conn.node, conn.notes, conn.node.key.public_key
    bad, taken = 0, notes.taken
    for raw, payload in items:
        if notes.looked_at >= MAX_FOLLOWER_NOTES:
            bad += 1
            continue
        notes.looked_at += 1
        try:
            entry = Entry.decode(raw)
            verify_payload(entry, payload)
            content = decode_content(payload)
        except ProtocolError:
            bad += 1
            continue
        author = entry.author
        if not (isinstance(content, Follow) and content.feed == me and signature_ok(entry)):
            bad += 1
        elif author not in node.wanted and author not in node.blocked and len(node.noted) < MAX_NOTED:
            node.noted.add(author)
            notes.taken += 1
    if bad:
        conn.useless += bad
        node.penalize(conn.host, "useless", bad)
    if notes.taken > taken:
        await node.refresh_wants()
