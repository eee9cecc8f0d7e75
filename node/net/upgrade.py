"""Hole punching (spec/protocol.md §12.11): a relayed connection replaced by a direct one.

``Punching`` runs the ``punch``/``punch_go`` exchange over relayed connections and the TCP simultaneous
open (node/net/punch.py), and hands a direct connection that proves the same feed to the node's session
path (``Sessions.serve(..., replaces=conn)``), which ends the relayed one with ``bye`` ``upgraded``.

Theory of operation. Each relayed connection has at most one **attempt** at a time, kept by the
connection's id while it runs. The side that dialled the relayed connection (``conn.initiator``, the
**dialer**) starts attempts (``start``); the other side (the **answerer**) only answers. An attempt
goes through these phases, and a message is taken only in the phase that waits for it:

| side | phase | waits for | then |
|---|---|---|---|
| dialer | ``answer`` | the peer's ``punch`` (at most ``punch_timeout``) | send ``punch_go``, wait RTT/2, ``open`` |
| answerer | ``go`` | the peer's ``punch_go`` (at most ``punch_timeout``) | ``open`` at once |
| both | ``open`` | the simultaneous open (at most ``punch_timeout``) | ``handshake`` on the direct stream |
| both | ``handshake`` | the direct connection to replace the relayed one | done |

The dialer binds its port and sends ``punch`` when the attempt starts; the answerer binds and answers
``punch`` as soon as the dialer's arrives. Any other ``punch`` or ``punch_go`` — on a direct connection,
a second ``punch`` while an attempt runs, a ``punch`` the dialer did not ask for, a ``punch_go`` nobody
waits for — is ignored. Every message received that no attempt waits for (the ``punch`` that starts an
answer included) is paid from a small bucket per connection (``PUNCHES_PER_MINUTE``): a peer that
sends more is penalized for a ``flood`` (a punch makes us open connections, so it is not free).

Each side opens only to the first address of the peer's ``punch``, and only when it is an IP and port
of a scope no narrower than the IP it announces itself (``_target``): a public node is not sent into a
loopback or private network. A dialer's failed attempt (no answer, ``PunchFailed``, a direct stream that does not prove the feed)
leaves the relayed connection as it is; the dialer tries again after ``punch_retry`` seconds for as long
as the relayed connection lives. Every task runs in the nursery of ``run``, never in a connection's
reader.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import weakref
from typing import Any

import trio
from tidings.node.addresses import SCOPE_RANK, address_scope, format_address, parse_address
from tidings.node.net.budgets import RateLimit
from tidings.node.net.punch import PunchFailed, PunchSocket, bind_punch_socket, simultaneous_open
from tidings.node.net.transport import ChannelClosed
from tidings.protocol import feed_id_text
from tidings.protocol.errors import TidingsError
from tidings.protocol.reach_events import Punch, PunchGo, ReachEvent
from tidings.protocol.replication import Bye

__all__ = ["PUNCHES_PER_MINUTE", "Punching"]

log = logging.getLogger("tidings.punch")

#: ``punch`` and ``punch_go`` messages a connection may bring per minute beyond those an attempt waits
#: for (a burst of as many, refilled over a minute); more is a flood (spec §12.5, §12.11). A peer that
#: retries every 5 s (the least ``punch_retry``) starts fewer.
PUNCHES_PER_MINUTE = 12
#: What an attempt may meet besides cancellation: the peer's mistakes, a socket that cannot be used,
#: a relayed connection that ended under it.
_FAILURES = (PunchFailed, ValueError, OSError, ChannelClosed, TidingsError)


class _Attempt:
    """One punch attempt over one relayed connection (see the module docstring)."""

    def __init__(self, dialer: bool) -> None:
        self.dialer = dialer
        self.phase = "answer" if dialer else "go"
        self.addresses: tuple[str, ...] = ()  # the peer's punch addresses
        self.heard = trio.Event()  # the dialer's answer or the answerer's punch_go arrived


class Punching:
    """Upgrades relayed connections to direct ones (spec §12.11); see the module docstring."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self._nursery: trio.Nursery | None = None
        self._attempts: dict[int, _Attempt] = {}
        self._retrying: set[int] = set()
        self._buckets: weakref.WeakKeyDictionary[Any, RateLimit] = weakref.WeakKeyDictionary()
        self.attempts = 0  # started by us, as the dialer
        self.answered = 0  # started by the peer
        self.successes = 0
        self.failures = 0
        self.ignored = 0

    def statistics(self) -> dict[str, int]:
        """Attempts started and answered, how they ended, messages ignored, attempts running now."""
        return {
            "attempts": self.attempts,
            "answered": self.answered,
            "successes": self.successes,
            "failures": self.failures,
            "ignored": self.ignored,
            "running": len(self._attempts),
        }

    async def run(self) -> None:
        """Own the tasks of every attempt and of the direct connections they open, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def start(self, conn: Any) -> bool:
        """Try to replace the relayed connection ``conn`` (which we dialled, version 3) by a direct one,
        now and, after a failure, every ``punch_retry`` seconds while it lives. False when ``conn`` is
        not such a connection or is being punched already."""
        if (
            self._nursery is None
            or conn.path != "relayed"
            or not conn.initiator
            or 0 < conn.rep.version < 3
            or conn.done.is_set()
            or id(conn) in self._retrying
        ):
            return False
        self._retrying.add(id(conn))
        self._nursery.start_soon(self._keep_punching, conn)
        return True

    async def on_event(self, conn: Any, event: ReachEvent) -> None:
        """A ``punch`` or ``punch_go`` from ``conn``'s reader: taken, or ignored (see the table)."""
        attempt = self._attempts.get(id(conn))
        awaited = attempt is not None and (
            (isinstance(event, Punch) and attempt.dialer and attempt.phase == "answer")
            or (isinstance(event, PunchGo) and not attempt.dialer and attempt.phase == "go")
        )
        if attempt is not None and awaited:  # free: it belongs to an attempt already paid for
            if isinstance(event, Punch):
                attempt.addresses = event.addresses
            attempt.phase = "open"
            attempt.heard.set()
        elif not self._bucket(conn).take():
            log.warning("peer %s sends too many punch messages", conn.address)
            self.node.penalize(conn.host, "flood")
        elif (
            isinstance(event, Punch)
            and attempt is None
            and conn.path == "relayed"
            and not conn.initiator
            and self._nursery is not None
        ):
            attempt = self._attempts[id(conn)] = _Attempt(dialer=False)
            attempt.addresses = event.addresses
            self.answered += 1
            self._nursery.start_soon(self._guarded, conn, attempt)
        else:
            self.ignored += 1
            log.debug("ignoring %s from %s (%s connection)", event.NAME, conn.address, conn.path)

    def _bucket(self, conn: Any) -> RateLimit:
        bucket = self._buckets.get(conn)
        if bucket is None:
            rate = PUNCHES_PER_MINUTE / 60
            bucket = self._buckets[conn] = RateLimit(rate, PUNCHES_PER_MINUTE, self.node.clock)
        return bucket

    async def _keep_punching(self, conn: Any) -> None:
        """The dialer: attempt, and after a failure wait ``punch_retry`` (or the connection's end)."""
        try:
            with trio.move_on_after(self.node.limits["handshake_timeout"]):
                while conn.rep.version == 0 and not conn.done.is_set():  # a new connection: its hello
                    await trio.sleep(0.05)
            if conn.rep.version < 3:
                return
            while not conn.done.is_set():
                attempt = self._attempts[id(conn)] = _Attempt(dialer=True)
                self.attempts += 1
                if await self._guarded(conn, attempt):
                    return
                retry = self.node.limits["punch_retry"]
                log.info("punching %s failed; staying relayed, next try in %g s", conn.address, retry)
                with trio.move_on_after(retry):
                    await conn.done.wait()
        finally:
            self._retrying.discard(id(conn))

    async def _guarded(self, conn: Any, attempt: _Attempt) -> bool:
        """Run one attempt to its end; count how it ended."""
        ok = False
        try:
            ok = await self._attempt(conn, attempt)
        except _FAILURES as exc:
            log.info("punch with %s failed: %s", conn.address, exc)
        except Exception:  # a punch must not take the node down
            log.exception("punch with %s failed", conn.address)
        finally:
            if self._attempts.get(id(conn)) is attempt:
                del self._attempts[id(conn)]
            if ok:
                self.successes += 1
            else:
                self.failures += 1
        return ok

    async def _attempt(self, conn: Any, attempt: _Attempt) -> bool:
        """One attempt of either side (spec §12.11); True once the direct connection replaced ``conn``."""
        stream: trio.SocketStream | None = None
        async with trio.open_nursery() as nursery:  # the punch ends with the relayed connection
            nursery.start_soon(_cancel_when_set, conn.done, nursery.cancel_scope)
            stream = await self._punch(conn, attempt)
            nursery.cancel_scope.cancel()
        if stream is None:
            return False
        attempt.phase = "handshake"
        host, port = parse_address(attempt.addresses[0])
        address = format_address(f"{host}:{port}") if attempt.dialer else host
        finished = trio.Event()
        assert self._nursery is not None  # attempts run in it
        self._nursery.start_soon(self._serve_direct, stream, address, conn, attempt.dialer, finished)
        async with trio.open_nursery() as nursery:  # whichever comes first
            nursery.start_soon(_cancel_when_set, finished, nursery.cancel_scope)
            nursery.start_soon(_cancel_when_set, conn.replaced, nursery.cancel_scope)
        if conn.replaced_by is None:
            return False
        if not attempt.dialer:  # the dialer's bye ends it (spec §12.11); ours only if that does not come
            with trio.move_on_after(self.node.limits["handshake_timeout"]):
                await conn.done.wait()
        await _retire(conn, self.node.limits["write_timeout"])
        return True

    async def _punch(self, conn: Any, attempt: _Attempt) -> trio.SocketStream:
        """Bind, exchange ``punch`` (and ``punch_go``), and open the direct TCP stream (spec §12.11)."""
        timeout = self.node.limits["punch_timeout"]
        if not attempt.dialer:  # no port bound for a punch we would not open to
            _target(attempt.addresses[0], self._announced(self.node.local_host()))
        punch = await self._bind()
        with punch:
            ours = self._announced(punch.host)
            if ours is None or ipaddress.ip_address(ours).is_unspecified:
                raise PunchFailed("no address to announce: not observed yet", code="punch_error")
            # the dialer's first, or the answerer's answer at once
            await conn.send_event(Punch(addresses=(format_address(f"{ours}:{punch.port}"),)))
            sent = trio.current_time()
            with trio.move_on_after(timeout):
                await attempt.heard.wait()
            if not attempt.heard.is_set():
                waited = "punch answer" if attempt.dialer else "punch_go"
                raise PunchFailed(f"no {waited} within {timeout:g} s", code="punch_failed")
            if attempt.dialer:
                rtt = trio.current_time() - sent
                await conn.send_event(PunchGo())
                await trio.sleep(rtt / 2)  # the go reaches the peer about now: both open together
            host, port = _target(attempt.addresses[0], ours)
            return await simultaneous_open(punch, host, port, timeout=timeout)

    async def _bind(self) -> PunchSocket:
        """A fresh port on the address we listen on, of the family of the IP peers see us at."""
        local = self.node.local_host()
        if local is not None:
            return await bind_punch_socket(local)
        observed = self.node.reach.observed
        six = observed is not None and ":" in parse_address(observed)[0]
        return await bind_punch_socket(None, family=socket.AF_INET6 if six else socket.AF_INET)

    def _announced(self, bound: str | None) -> str | None:
        """The IP we announce: the one peers see us at (spec §12.9), else the address we bound."""
        observed = self.node.reach.observed
        return parse_address(observed)[0] if observed is not None else bound

    async def _serve_direct(
        self, stream: trio.SocketStream, address: str, conn: Any, dialer: bool, finished: trio.Event
    ) -> None:
        """The direct connection, through the node's session path, replacing ``conn`` (spec §12.11)."""
        try:
            log.info("punched a direct connection to %s (%s)", feed_id_text(conn.feed), address)
            await self.node.sessions.serve(stream, address, initiator=dialer, replaces=conn)
        finally:
            finished.set()


def _target(address: str, ours: str | None) -> tuple[str, int]:
    """The peer's punch address as ``(IP, port)`` if it is one to open to: an IP (a name is a
    ``ValueError``), a port, and a scope no narrower than that of the IP we announce, as for peer
    exchange (spec §12.8): a peer cannot make a public node open connections into its own loopback or
    private network."""
    host, port = parse_address(address)
    scope = address_scope(host)
    ours_scope = address_scope(ours) if ours is not None else "public"
    if port == 0 or scope == "bad" or SCOPE_RANK[scope] < SCOPE_RANK.get(ours_scope, 2):
        raise PunchFailed(
            f"will not open to {address} ({scope}) from a {ours_scope} address", code="punch_address"
        )
    return host, port


async def _cancel_when_set(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _retire(conn: Any, timeout: float) -> None:
    """End the relayed connection ``conn`` with ``["bye", "upgraded", ""]`` now that a direct one
    replaced it (spec §12.11), unless it has ended already."""
    if conn.rep.state == "ACTIVE":  # not when the peer's bye came first
        with contextlib.suppress(ChannelClosed), trio.move_on_after(timeout):
            await conn.channel.send(conn.rep.send(Bye(code="upgraded", reason="")))
            async with trio.open_nursery() as nursery:  # until written, or the connection ended anyway
                nursery.start_soon(_cancel_when_set, conn.done, nursery.cancel_scope)
                await conn.channel.wait_sent()  # the writer ends with the connection: let it write
                nursery.cancel_scope.cancel()
    conn.cancel()
    log.info(
        "connection to %s upgraded: %s replaces %s",
        feed_id_text(conn.feed),
        conn.replaced_by.address,
        conn.address,
    )
