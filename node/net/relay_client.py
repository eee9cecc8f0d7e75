"""Relays by peers (spec/protocol.md §12.10): this node as a user of relays.

Theory of operation. While ``node.reach.state`` is ``private`` (§12.9) the node keeps reservations on
up to ``relay_keep`` peers it dialled itself (outbound, direct, version 3: they can be dialled, so
others can reach them) by sending ``reserve``; a ``reserved`` holds for its ``seconds``, renewed at
three quarters of them; a ``refused`` one is not asked again for ``RETRY_SECONDS``. A reservation ends
with its connection. ``relay_addresses()`` are the relays held, each at the address we dialled it at;
when that list changes the node hears it (``node.relays_changed()``, which republishes the node record).

``incoming`` on a held relay's connection means somebody wants us: the node opens a new TCP connection
to the relay, runs the Noise handshake as initiator, sends ``accept`` as its first message, reads the
relay's ``hello`` (ignored) and then ``connected`` (or ``refused``), and from then on runs the relayed
end-to-end connection over the same TCP stream through ``Sessions.serve`` as its responder.
``dial_via`` is the other end: ``connect`` instead of ``accept``, and ``Sessions.serve`` as initiator,
whose handshake must prove the target's feed. A relayed connection's faults are charged to the peer's
feed (``relayed_host``), never to the relay's address.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass
from typing import Any

import trio
from tidings.node.addresses import parse_address
from tidings.node.net.listener import close_stream
from tidings.node.net.splice import PrefixedStream
from tidings.node.net.transport import ChannelClosed
from tidings.protocol import feed_id_text
from tidings.protocol.errors import TidingsError
from tidings.protocol.reach_events import (
    Accept,
    Connect,
    Connected,
    Incoming,
    ReachEvent,
    Refused,
    Reserve,
    Reserved,
)
from tidings.protocol.replication import Replication

__all__ = ["RelayClient", "RelayFailed"]

log = logging.getLogger("tidings.relay")

#: Seconds before a relay that refused a reservation is asked again.
RETRY_SECONDS = 300.0
#: Seconds a ``reserve`` waits for its answer before it counts as lost.
_ANSWER_SECONDS = 10.0
#: Seconds a relay gets to join a circuit after our handshake with it (its target's 10 s, and some).
_JOIN_SECONDS = 15.0
#: Seconds between two looks at the reservations.
_STEP = 0.5
#: Relays a node record lists at most (spec §13.4).
MAX_RELAYS = 4


#: seconds between the tries of a background relayed dial (``dial_soon``)
_REDIAL = (2.0, 5.0, 15.0)


class RelayFailed(TidingsError):
    """A relay did not join us to the peer (refused, wrong feed, gone); ``code`` says why."""


@dataclass(eq=False)
class Held:
    """A reservation a relay holds for this node."""

    conn: Any  # our connection to the relay (a PeerConnection we dialled)
    address: str  # where we dialled it
    expires: float
    renew_at: float


class RelayClient:
    """Reservations this node keeps, ``incoming`` answered, and dialling through relays (module
    docstring)."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.held: dict[bytes, Held] = {}
        self._asked: dict[bytes, float] = {}  # relay feed -> when our unanswered ``reserve`` went
        self._refused: dict[bytes, float] = {}  # relay feed -> not asked again before
        self._published: list[tuple[bytes, str]] = []
        self._nursery: trio.Nursery | None = None
        self.accepted = 0  # relayed connections we answered
        self.dialled = 0  # relayed connections we opened
        self._dialling: set[bytes] = set()  # feeds a background ``dial_via`` is reaching

    async def run(self) -> None:
        """Keep reservations while private; answer ``incoming`` in this task's nursery."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            while True:
                await self._keep()
                await trio.sleep(_STEP)

    def relay_addresses(self) -> list[tuple[bytes, str]]:
        """``(relay feed, "HOST:PORT")`` of the relays that hold a reservation for this node."""
        return sorted((feed, held.address) for feed, held in self.held.items())[:MAX_RELAYS]

    # -- reservations ------------------------------------------------------------------------------------
    async def _keep(self) -> None:
        node = self.node
        now, private = node.clock.monotonic(), node.reach.state == "private"
        for feed, held in list(self.held.items()):
            if not private or id(held.conn) not in node.connections or now >= held.expires:
                del self.held[feed]
        self._asked = {f: t for f, t in self._asked.items() if now - t < _ANSWER_SECONDS}
        if private:
            for feed, held in list(self.held.items()):
                if now >= held.renew_at and feed not in self._asked:
                    await self._ask(held.conn)
            room = int(node.limits["relay_keep"]) - len(self.held) - len(self._asked)
            for conn in self._candidates(now)[: max(0, room)]:
                await self._ask(conn)
        self._publish()

    def _candidates(self, now: float) -> list[Any]:
        """Peers we may ask: dialled by us, directly, speaking version 3, not held, asked or refusing."""
        return [
            c
            for c in self.node.connections.values()
            if c.initiator
            and not c.once
            and c.path == "direct"
            and c.rep.state == "ACTIVE"
            and c.rep.version >= 3
            and c.feed not in self.held
            and c.feed not in self._asked
            and self._refused.get(c.feed, 0.0) <= now
        ]

    async def _ask(self, conn: Any) -> None:
        self._asked[conn.feed] = self.node.clock.monotonic()
        with contextlib.suppress(ChannelClosed):
            await conn.send_event(Reserve())

    def _publish(self) -> None:
        addresses = self.relay_addresses()
        if addresses != self._published:
            self._published = addresses
            log.info("relays: %s", ", ".join(f"{feed_id_text(f)} {a}" for f, a in addresses) or "none")
            self.node.relays_changed()

    async def on_event(self, conn: Any, event: ReachEvent) -> None:
        """``reserved``, ``refused`` (of a ``reserve``) and ``incoming`` from a relay."""
        now = self.node.clock.monotonic()
        if isinstance(event, Reserved) and self._asked.pop(conn.feed, None) is not None:
            self.held[conn.feed] = Held(conn, conn.address, now + event.seconds, now + event.seconds * 0.75)
            self._publish()
        elif isinstance(event, Refused) and event.what == "reserve":
            self._asked.pop(conn.feed, None)
            self.held.pop(conn.feed, None)
            self._refused[conn.feed] = now + RETRY_SECONDS
            log.info("%s refused a reservation: %s (%s)", conn.address, event.reason, event.code)
            self._publish()
        elif isinstance(event, Incoming):
            held = self.held.get(conn.feed)
            if held is None or self._nursery is None:
                log.info("incoming from %s, which holds no reservation of ours", conn.address)
                return
            self._nursery.start_soon(self._answer, held, conn.feed, event)
        else:
            log.debug("relay message %s from %s ignored", event.NAME, conn.address)

    # -- relayed connections -----------------------------------------------------------------------------
    async def _answer(self, held: Held, relay: bytes, incoming: Incoming) -> None:
        """Join the circuit ``incoming`` offers, then run the relayed connection as its responder."""
        try:
            stream = await self._join(
                relay, held.address, Accept(circuit=incoming.circuit), incoming.initiator
            )
        except (OSError, TidingsError, ChannelClosed, trio.TooSlowError) as exc:
            log.info("cannot accept a circuit through %s: %s", held.address, exc)
            return
        self.accepted += 1
        await self.node.sessions.serve(
            stream, held.address, initiator=False, relay=relay, feed=incoming.initiator
        )

    def dial_soon(self, feed: bytes, relays: list[tuple[bytes, str]]) -> None:
        """Reach ``feed`` through ``relays`` in the background (a node record listed them, spec §13.4),
        unless it is connected or being reached already; a few tries, further apart each time. The
        dialler of a relayed connection then tries to punch a direct one (spec §12.11)."""
        connected = any(c.feed == feed for c in self.node.connections.values())
        if connected or feed in self._dialling or self._nursery is None or not relays:
            return
        self._dialling.add(feed)
        self._nursery.start_soon(self._dial_in_background, feed, list(relays))

    async def _dial_in_background(self, feed: bytes, relays: list[tuple[bytes, str]]) -> None:
        """Keep ``feed`` connected through ``relays`` while we want it: dial, let punching replace the
        relayed connection, and when the connection ends (a relay's budget, spec §12.10; a dropped
        direct one) dial again; give up after the tries of ``_REDIAL`` fail one after another."""
        node = self.node
        try:
            failures = 0
            while failures < len(_REDIAL) and feed in node.wanted:
                if any(c.feed == feed for c in node.connections.values()):
                    return  # connected otherwise: the connection manager or the peer dialled
                conn = await self.dial_via(feed, relays)
                if conn is None:
                    await trio.sleep(_REDIAL[failures])
                    failures += 1
                    continue
                failures = 0
                node.punching.start(conn)
                await conn.done.wait()
                if conn.replaced_by is not None:
                    await conn.replaced_by.done.wait()
                await trio.sleep(_REDIAL[0])
            if failures:
                log.info("gave up reaching %s through its relays", feed_id_text(feed))
        finally:
            self._dialling.discard(feed)

    async def dial_via(self, feed: bytes, relays: list[tuple[bytes, str]]) -> Any:
        """Connect to ``feed`` through the first of ``relays`` (``(relay feed, "HOST:PORT")``) that joins
        us; the relayed connection then runs in the background. Returns its ``PeerConnection`` once it
        is registered, or None when no relay joined us or the handshake did not prove ``feed``."""
        if self._nursery is None:
            raise RuntimeError("dial_via needs a running node")
        for relay, address in relays:
            try:
                stream = await self._join(relay, address, Connect(target=feed), feed)
            except (OSError, TidingsError, ChannelClosed, trio.TooSlowError) as exc:
                log.info("cannot reach %s through %s: %s", feed_id_text(feed), address, exc)
                continue
            self.dialled += 1
            serve = functools.partial(
                self.node.sessions.serve, stream, address, initiator=True, relay=relay, feed=feed
            )
            conn = await self._nursery.start(serve)
            if conn is not None:
                return conn
        return None

    async def _join(self, relay: bytes, address: str, first: Connect | Accept, peer: bytes) -> PrefixedStream:
        """A new connection to the relay at ``address`` with ``first`` as its first message, up to the
        relay's ``connected`` naming ``peer``: the stream the end-to-end connection runs over (bytes
        read past ``connected`` first). ``RelayFailed`` (or a transport error) otherwise."""
        node = self.node
        host, port = parse_address(address)
        stream = await trio.open_tcp_stream(host, port, local_address=node.local_host())
        try:
            channel = await node.sessions.handshake(stream, initiator=True)
            if channel.remote_feed != relay:
                raise RelayFailed(f"{address} is not the relay", code="wrong_feed")
            rep = Replication()
            with trio.fail_after(node.limits["handshake_timeout"] + _JOIN_SECONDS):
                await channel.write_now(rep.send(first))
                while True:  # the relay's hello first (spec §12.10: read and ignored)
                    event = rep.receive(await channel.receive())
                    if isinstance(event, Refused):
                        raise RelayFailed(f"refused: {event.reason}", code=event.code)
                    if isinstance(event, Connected):
                        break
            if event.peer != peer:
                raise RelayFailed("the relay joined us to another feed", code="wrong_feed")
            node.reach.seen_at(event.observed)  # where we punch from, if no helper said so yet
            return PrefixedStream(stream, channel.take_leftover())
        except BaseException:
            with trio.CancelScope(shield=True):
                await close_stream(stream)
            raise

    def statistics(self) -> dict[str, Any]:
        return {
            "relays": [[feed_id_text(f), a] for f, a in self.relay_addresses()],
            "accepted": self.accepted,
            "dialled": self.dialled,
        }
