"""Relays by peers (spec/protocol.md §12.10): this node as a relay for others.

Theory of operation. A node with ``relay = true`` that is not ``private`` (§12.9) relays:

- **Reservations.** ``reserve`` over an ordinary connection gets ``reserved`` (``relay_reservation_seconds``
  and where we see the connection come from) or ``refused`` (``relay_off``, ``relay_full`` beyond
  ``relay_reservations``, ``busy``). A reservation lives while its connection lives and until it expires.
  A second ``reserve`` within the flood window (a minute, or half the reservation's time when that is
  shorter, so a renewal at three quarters of it is never a flood) costs the peer ``flood``.
- **Circuits.** A relay connection is an inbound connection whose first message is ``connect`` or
  ``accept`` (``Sessions.serve`` hands it here, never registered as a peer). ``connect`` names a target
  that must hold a reservation (else ``refused`` ``no_reservation``, and ``invalid`` for the initiator's
  host); with room in ``relay_circuits`` and ``relay_circuits_per_peer`` the relay sends ``incoming`` with
  a fresh random circuit id on the target's reservation connection and waits ``ACCEPT_SECONDS`` for a
  relay connection of the target with ``accept`` of that id. Then both get ``connected`` and the relay
  copies raw bytes both ways (node/net/splice.py) within ``relay_circuit_bytes`` (both ways together; a
  circuit cut at that bound costs its initiator ``invalid``) and ``relay_circuit_seconds``. The relay
  stores, reads and replicates nothing of what it carries: it sees the two ends' Noise ciphertext only.
- A host cut off by its score (``Node.penalize``) loses its relay connections too (``cut_host``).

What this node does as a *user* of relays (reservations it keeps while private, ``incoming``, dialling
through a relay) is ``RelayClient`` (node/net/relay_client.py); ``Relays`` hands it those messages.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

import trio
from tidings.node.addresses import format_address
from tidings.node.net.relay_client import RelayClient
from tidings.node.net.splice import splice
from tidings.node.net.transport import ChannelClosed, SecureChannel
from tidings.protocol import feed_id_text
from tidings.protocol.reach_events import (
    NONCE_SIZE,
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

__all__ = ["ACCEPT_SECONDS", "Relays", "observed_address"]

log = logging.getLogger("tidings.relay")

#: Seconds the target of a ``connect`` has to open its ``accept`` connection (spec §12.10).
ACCEPT_SECONDS = 10.0
#: The flood window of ``reserve``: one a minute (spec §12.10).
RESERVE_WINDOW = 60.0
#: Seconds between two looks for expired reservations.
_STEP = 1.0


def observed_address(stream: trio.abc.Stream, fallback: str) -> str:
    """``HOST:PORT`` of the remote end of ``stream`` as this node sees it (``observed``, spec §12.9)."""
    try:
        host, port = stream.socket.getpeername()[:2]  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return fallback
    return format_address(f"{host}:{port}")


#: Lengths of a Noise handshake message 1 (spec §11.1: 32 bytes, 48 with a network key): what the
#: connect side of a circuit must send first (spec §12.10).
_HANDSHAKE_1 = frozenset({32, 48})


@dataclass(eq=False)
class Reservation:
    """A reservation this node holds for a private node: its connection, and when it ends."""

    conn: Any  # the PeerConnection the ``reserve`` came over
    expires: float


@dataclass(eq=False)
class Circuit:
    """One ``connect`` from its arrival until its splice ends."""

    circuit: bytes
    initiator: bytes
    target: bytes
    host: str  # the initiator's host: what pays for its faults
    joined: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)
    #: the target's ``accept`` connection, once it came: (channel, machine, observed)
    accepted: tuple[SecureChannel, Replication, str] | None = None
    spliced: bool = False


class Relays:
    """This node as a relay (module docstring) and, through ``client``, as a user of relays."""

    def __init__(self, node: Any, *, enabled: bool = True) -> None:
        self.node = node
        #: ``relay`` of config.toml (spec §12.10)
        self.enabled = enabled
        self.client = RelayClient(node)
        self.reservations: dict[bytes, Reservation] = {}
        self._reserve_asked: dict[bytes, float] = {}  # feed -> its latest ``reserve``
        self.circuits: dict[bytes, Circuit] = {}  # by circuit id: waiting for accept, or spliced
        self._open: set[tuple[str, trio.CancelScope]] = set()  # relay connections: (host, scope)
        self.granted = 0
        self.circuits_total = 0
        self.bytes_relayed = 0
        self.circuits_cut = 0
        self.refused: dict[str, int] = {}

    @property
    def serving(self) -> bool:
        """Whether this node relays now: ``relay = true`` and not ``private`` (spec §12.9)."""
        return self.enabled and self.node.reach.state != "private"

    async def run(self) -> None:
        """Keep the client's reservations; forget expired reservations and old ``reserve`` times."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.client.run)
            while True:
                await trio.sleep(_STEP)
                self._expire()

    def relay_addresses(self) -> list[tuple[bytes, str]]:
        """``(relay feed, "HOST:PORT")`` of the relays that hold a reservation for this node."""
        return self.client.relay_addresses()

    async def dial_via(self, feed: bytes, relays: list[tuple[bytes, str]]) -> Any:
        """Connect to ``feed`` through the first of ``relays`` that joins us (``RelayClient.dial_via``)."""
        return await self.client.dial_via(feed, relays)

    async def on_event(self, conn: Any, event: ReachEvent) -> None:
        """A relay message over an ordinary connection: ``reserve`` is ours, the rest the client's."""
        if isinstance(event, Reserve):
            await self._reserve(conn)
        else:
            await self.client.on_event(conn, event)

    # -- reservations ------------------------------------------------------------------------------------
    def _window(self) -> float:
        return min(RESERVE_WINDOW, self.node.limits["relay_reservation_seconds"] / 2)

    async def _reserve(self, conn: Any) -> None:
        node, now = self.node, self.node.clock.monotonic()
        last = self._reserve_asked.get(conn.feed)
        self._reserve_asked[conn.feed] = now
        if last is not None and now - last < self._window():
            log.info("%s asks for reservations too often", conn.address)
            await self._refuse(conn, "busy", "one reserve a minute")
            await conn.channel.wait_sent()  # the answer first: the penalty may cut the connection
            node.penalize(conn.host, "flood")  # spec §12.10, §12.8.4
            return
        if not self.serving:
            await self._refuse(conn, "relay_off", "this node does not relay")
            return
        if conn.path != "direct" or conn.once:
            await self._refuse(conn, "busy", "reserve over a direct connection")
            return
        live = self._live()
        if conn.feed not in live and len(live) >= node.limits["relay_reservations"]:
            await self._refuse(conn, "relay_full", "no room for another reservation")
            return
        seconds = int(node.limits["relay_reservation_seconds"])
        self.reservations[conn.feed] = Reservation(conn, now + seconds)
        self.granted += 1
        log.info("reservation for %s (%d s)", feed_id_text(conn.feed), seconds)
        observed = observed_address(conn.channel.stream, conn.address)
        await conn.send_event(Reserved(seconds=seconds, observed=observed))

    async def _refuse(self, conn: Any, code: str, reason: str) -> None:
        self.refused[code] = self.refused.get(code, 0) + 1
        await conn.send_event(Refused(what="reserve", code=code, reason=reason))

    def reserved_feeds(self) -> set[bytes]:
        """Feeds holding a live reservation on us: their connections are never evicted (spec §12.5)."""
        return set(self._live())

    def _live(self) -> dict[bytes, Reservation]:
        """Reservations whose connection is still open and whose time has not run out."""
        now, connections = self.node.clock.monotonic(), self.node.connections
        return {
            feed: r
            for feed, r in self.reservations.items()
            if id(r.conn) in connections and r.conn.rep.state == "ACTIVE" and now < r.expires
        }

    def _expire(self) -> None:
        self.reservations = self._live()
        now, window = self.node.clock.monotonic(), self._window()
        self._reserve_asked = {f: t for f, t in self._reserve_asked.items() if now - t < window}

    # -- relay connections -------------------------------------------------------------------------------
    async def serve_relay_connection(
        self, channel: SecureChannel, first: Connect | Accept, address: str, *, rep: Replication
    ) -> None:
        """Serve a relay connection (first message ``connect`` or ``accept``) from ``address`` (its
        host) until its circuit ends; ``Sessions.serve`` closes the stream afterwards."""
        entry = (address, trio.CancelScope())
        self._open.add(entry)
        try:
            with entry[1]:
                if isinstance(first, Connect):
                    await self._connect(channel, first, address, rep)
                else:
                    await self._accept(channel, first, address, rep)
        finally:
            self._open.discard(entry)

    def cut_host(self, host: str) -> None:
        """End every relay connection from ``host`` (cut off by its score, spec §12.10): its circuits
        end, the relay's other circuits go on."""
        for where, scope in list(self._open):
            if where == host:
                scope.cancel()

    async def _answer(
        self, channel: SecureChannel, rep: Replication, what: str, code: str, reason: str
    ) -> None:
        """``refused`` on a relay connection (which then closes)."""
        self.refused[code] = self.refused.get(code, 0) + 1
        with contextlib.suppress(ChannelClosed, trio.TooSlowError):
            await channel.write_now(rep.send(Refused(what=what, code=code, reason=reason)), 10.0)

    async def _connect(self, channel: SecureChannel, first: Connect, host: str, rep: Replication) -> None:
        node, me, limits = self.node, channel.remote_feed, self.node.limits
        if not self.serving:
            await self._answer(channel, rep, "connect", "relay_off", "this node does not relay")
            return
        reservation = self._live().get(first.target)
        if reservation is None:
            await self._answer(
                channel, rep, "connect", "no_reservation", "the target holds no reservation here"
            )
            node.penalize(host, "invalid")  # spec §12.10
            return
        mine = sum(1 for c in self.circuits.values() if c.initiator == me)
        if len(self.circuits) >= limits["relay_circuits"] or mine >= limits["relay_circuits_per_peer"]:
            await self._answer(channel, rep, "connect", "relay_full", "no room for another circuit")
            return
        circuit = Circuit(secrets.token_bytes(NONCE_SIZE), me, first.target, host)
        self.circuits[circuit.circuit] = circuit
        try:
            await reservation.conn.send_event(Incoming(circuit=circuit.circuit, initiator=me))
            with trio.move_on_after(ACCEPT_SECONDS):
                await circuit.joined.wait()
            if circuit.accepted is None:
                log.info("%s did not accept a circuit in time", feed_id_text(first.target))
                return
            await self._splice(channel, rep, host, circuit, circuit.accepted)
        finally:
            del self.circuits[circuit.circuit]
            circuit.done.set()

    async def _splice(
        self,
        channel: SecureChannel,
        rep: Replication,
        host: str,
        circuit: Circuit,
        accepted: tuple[SecureChannel, Replication, str],
    ) -> None:
        other, other_rep, other_observed = accepted
        limits = self.node.limits
        observed = observed_address(channel.stream, host)
        await channel.write_now(rep.send(Connected(peer=other.remote_feed, observed=observed)), 10.0)
        await other.write_now(
            other_rep.send(Connected(peer=circuit.initiator, observed=other_observed)), 10.0
        )
        circuit.spliced = True
        self.circuits_total += 1
        log.info("circuit %s -> %s", feed_id_text(circuit.initiator), feed_id_text(circuit.target))
        ended = await splice(
            channel.stream,
            channel.take_leftover(),
            other.stream,
            other.take_leftover(),
            max_bytes=int(limits["relay_circuit_bytes"]),
            seconds=float(limits["relay_circuit_seconds"]),
            counted=self._count,
            first_frame=_HANDSHAKE_1,
        )
        if ended != "closed":
            self.circuits_cut += 1
            log.info("circuit of %s cut at its %s bound", feed_id_text(circuit.initiator), ended)
        if ended in ("bytes", "garbage"):  # spec §12.10: cut at its byte bound, or no handshake in it
            self.node.penalize(host, "invalid")
        elif ended == "seconds":  # an endless circuit costs a little: a few stay far above the threshold
            self.node.penalize(host, "idle")

    def _count(self, n: int) -> None:
        self.bytes_relayed += n

    async def _accept(self, channel: SecureChannel, first: Accept, host: str, rep: Replication) -> None:
        circuit = self.circuits.get(first.circuit)
        if circuit is None or circuit.accepted is not None or channel.remote_feed != circuit.target:
            log.info("closing an accept from %s: unknown circuit", host)
            return
        circuit.accepted = (channel, rep, observed_address(channel.stream, host))
        circuit.joined.set()
        await circuit.done.wait()  # the connect side splices; this stream stays open until it ends

    # -- reporting ---------------------------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        """For ``node.json`` (``tidings status``)."""
        return {
            "relay_reservations": len(self._live()),
            "relay_circuits": sum(1 for c in self.circuits.values() if c.spliced),
            "relay_bytes": self.bytes_relayed,
        }

    def statistics(self) -> dict[str, Any]:
        return {
            "serving": self.serving,
            "reservations": len(self._live()),
            "granted": self.granted,
            "circuits": sum(1 for c in self.circuits.values() if c.spliced),
            "circuits_total": self.circuits_total,
            "circuits_cut": self.circuits_cut,
            "bytes_relayed": self.bytes_relayed,
            "refused": dict(self.refused),
            "client": self.client.statistics(),
        }
