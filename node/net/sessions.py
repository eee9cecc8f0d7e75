"""The life of one connection once it is accepted or dialled: the Noise handshake, the identity checks
(ourselves, the wrong feed at an address, a second connection to the same feed), the bookkeeping while
it runs, and what its end costs the peer (spec §12.5, §12.8).

``Sessions`` works for any host that offers what ``SessionHost`` names (``Node`` is one), so it never
imports the node.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

import trio
from tidings.node.net.host import ConnectionHost
from tidings.node.net.listener import close_stream
from tidings.node.net.manager import Candidate, ConnectionManager
from tidings.node.net.nodefile import NodeFile
from tidings.node.net.peer import PeerConnection, describe_error, open_inbound, relayed_host
from tidings.node.net.scoring import Penalties
from tidings.node.net.transport import SecureChannel
from tidings.protocol import RemoteProtocolError, feed_id_text
from tidings.protocol.reach_events import Accept, Connect
from tidings.protocol.replication import Replication
from tidings.storage import peers

__all__ = ["SessionHost", "Sessions"]

log = logging.getLogger("tidings.node")


class SessionHost(ConnectionHost, Protocol):
    """What a connection's life needs of the node besides what the connection itself needs."""

    transport_private: bytes
    network_key: bytes | None
    manager: ConnectionManager
    penalties: Penalties
    node_file: NodeFile

    @property
    def connections(self) -> Mapping[int, PeerConnection]: ...
    @property
    def relays(self) -> RelayServer: ...


class RelayServer(Protocol):
    """Who takes the relay connections (spec §12.10; ``Relays`` of node/net/relay.py is one)."""

    async def serve_relay_connection(
        self, channel: SecureChannel, first: Connect | Accept, address: str, *, rep: Replication
    ) -> None:
        """Serve a relay connection whose first message was ``first``, until it ends."""


class Sessions:
    """Runs connections for ``node``; ``node.connections`` holds the live ones (a dict it owns)."""

    def __init__(self, node: SessionHost, connections: dict[int, PeerConnection]) -> None:
        self.node = node
        self.live = connections

    async def handshake(self, stream: trio.abc.Stream, *, initiator: bool) -> SecureChannel:
        node = self.node
        return await SecureChannel.handshake(
            stream,
            initiator=initiator,
            identity=node.key,
            transport_private=node.transport_private,
            network_key=node.network_key,
            timeout=node.limits["handshake_timeout"],
            frame_timeout=node.limits["frame_timeout"],
        )

    def keep_new_connection(self, remote: bytes, initiator: bool) -> bool:
        """Two nodes that dialled each other keep the connection the smaller feed key dialled (spec
        §12.8): the node with the larger key lets its outgoing connection to the other give way to
        the other's incoming one. A node only ever closes connections it dialled itself."""
        if self.node.key.public_key < remote:
            return True
        if initiator:
            return not any(c.feed == remote and not c.initiator for c in self.live.values())
        for old in list(self.live.values()):
            if old.feed == remote and old.initiator and not old.once:
                old.cancel()
        return True

    async def note_peer(self, conn: PeerConnection, *, connected: bool, dialable: bool = True) -> None:
        # an inbound port is not dialable, nor is a relay's address the peer's, nor a port punched for
        # one connection (spec §12.11)
        address = conn.address if conn.initiator and conn.relay is None and dialable else None
        source = "relayed" if conn.relay is not None else "peer" if conn.initiator else "inbound"
        node = self.node
        await node.db.call(peers.note_peer, conn.feed, address, source, connected, node.clock.wall_ms())

    def _accept_identity(self, remote: bytes, address: str, expected: Candidate | None) -> bool:
        """Whether a handshake that proved ``remote`` at ``address`` may go on (spec §12.8.1)."""
        node = self.node
        if remote == node.key.public_key:
            log.info("connected to ourselves at %s; closing", address)
            if expected is not None and not expected.pinned:
                node.manager.candidates.pop(expected.address, None)
            return False
        if expected is not None and expected.feed not in (None, remote):
            node.manager.wrong_identity(expected, remote)
            if expected.source == "pex":
                return False
        if expected is not None:
            expected.feed = remote  # proven by the handshake
        return True

    async def serve(
        self,
        stream: trio.abc.Stream,
        address: str,
        *,
        initiator: bool,
        expected: Candidate | None = None,
        relay: bytes | None = None,
        feed: bytes | None = None,
        replaces: PeerConnection | None = None,
        task_status: trio.TaskStatus[PeerConnection | None] = trio.TASK_STATUS_IGNORED,
    ) -> PeerConnection | None:
        """Handshake, then replicate until the connection ends; never raises for peer faults. The
        connection is returned once it has ended (None if the handshake failed or it was refused).

        An inbound connection is opened (hellos exchanged, ``open_inbound``) before it is taken for a
        peer: one whose first message is ``connect`` or ``accept`` is a relay connection, handed to
        ``node.relays`` and never registered, kept instead of another or noted (spec §12.10).
        ``relay``: the stream is a relayed connection through that relay (its end-to-end part), and
        ``feed`` the feed its handshake must prove. ``task_status`` is told the connection once it is
        registered (None when it never is).

        ``replaces``: a relayed connection that this direct one (punched, spec §12.11) upgrades. The
        handshake must prove the same feed, else the stream is dropped; the duplicate rule does not
        apply, and once the new connection is live it is noted in ``replaces`` (``replaced_by``,
        ``replaced``), whose owner then ends it."""
        node = self.node
        conn: PeerConnection | None = None
        host = address.rpartition(":")[0].strip("[]") if initiator else address
        if relay is not None and feed is not None:  # a failed handshake costs the peer, not the relay
            host = relayed_host(feed)
        started = False
        try:
            channel = await self.handshake(stream, initiator=initiator)
            if relay is not None:
                host = relayed_host(channel.remote_feed)  # never the relay's address (spec §12.10)
                if feed not in (None, channel.remote_feed) or node.penalties.banned(host):
                    log.info("relayed connection through %s proved another feed or a banned one", address)
                    return None
            if replaces is not None and channel.remote_feed != replaces.feed:
                log.warning(
                    "punched connection %s proved %s, not %s; dropping it",
                    address,
                    feed_id_text(channel.remote_feed),
                    feed_id_text(replaces.feed),
                )
                return None
            if not self._accept_identity(channel.remote_feed, address, expected):
                return None
            opened = None
            if not initiator:
                opened, first = await open_inbound(channel, node.agent, node.limits["handshake_timeout"])
                if isinstance(first, Connect | Accept):
                    if relay is not None or replaces is not None:  # a relay connection inside one: no
                        raise RemoteProtocolError("relay connection over a relay", code="bad_message")
                    await node.relays.serve_relay_connection(channel, first, address, rep=opened)
                    return None
            if replaces is None and not self.keep_new_connection(channel.remote_feed, initiator):
                log.debug(
                    "already connected to %s; closing the second connection",
                    feed_id_text(channel.remote_feed),
                )
                return None
            conn = PeerConnection(node, channel, address, initiator=initiator, opened=opened, relay=relay)
            self.live[id(conn)] = conn
            node.node_file.write()
            await self.note_peer(conn, connected=True, dialable=replaces is None)
            log.info("connected %s %s%s", feed_id_text(conn.feed), address, " (relayed)" if relay else "")
            if replaces is not None:  # its owner ends it (node/net/upgrade.py)
                replaces.replaced_by = conn
                replaces.replaced.set()
            task_status.started(conn)
            started = True
            await conn.run()
        except Exception as exc:  # every peer fault ends here: none may take the node down
            self._punish(host, address, exc)
        finally:
            with trio.CancelScope(shield=True):
                if not started:
                    task_status.started(None)
                if conn is not None and self.live.pop(id(conn), None) is not None:
                    lasted = node.clock.monotonic() - conn.connected_at
                    if lasted >= 60 and not (conn.received or conn.sent) and conn.replaced_by is None:
                        node.penalize(host, "idle")
                    node.manager.wake()
                    node.node_file.write()
                    if not any(c.feed == conn.feed for c in self.live.values()):  # e.g. upgraded (§12.11)
                        await self.note_peer(conn, connected=False, dialable=replaces is None)
                await close_stream(stream)
        return conn

    def _punish(self, host: str, address: str, exc: Exception) -> None:
        """Log how a connection ended and make a faulty peer pay for it (spec §12.5)."""
        node = self.node
        code, reason = describe_error(exc)
        if code == "closed":
            log.info("peer %s disconnected: %s", address, reason)
        elif code == "error":
            log.exception("unexpected error with peer %s", address)
        else:
            seconds = node.penalties.strike(host, code, reason, node.limits["ban_seconds"])
            if code not in Penalties.HANDSHAKE_CODES:  # banned already: the score only remembers
                node.penalize(host, "flood" if code == "flood" else "invalid")
            log.warning(
                "dropping peer %s: %s (%s); not talking to it for %.0f s", address, reason, code, seconds
            )
