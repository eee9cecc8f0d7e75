"""Hole punching: a direct TCP connection between two nodes behind NATs by simultaneous open.

The IO primitive of spec/protocol.md §12.11; which port each side announces (``punch``), and when each
side opens (``punch_go``, the RTT/2 wait), is the replication protocol's business, not this module's.

Theory of operation. Each side first **binds** a fresh local TCP port p (``bind_punch_socket``) and
announces its observed IP with p; the socket holds p from then on, so no other program takes it. A NAT
that preserves ports maps p to the same public port for every destination, so the announcement is where
the peer must aim. Then both sides **open** (``simultaneous_open``) from p to the other's announced
address at about the same time:

- Each side's SYN leaves through its own NAT, which creates the outbound mapping. The first SYN to
  arrive at the other NAT usually finds no mapping there yet and is dropped (a home router drops
  unsolicited inbound); the second one finds the mapping the first side's SYN made on its way out and
  gets through to a socket that is itself still in SYN-SENT. That is a TCP simultaneous open (RFC 9293
  §3.5, figure 8): the SYNs cross, each side answers with a SYN-ACK, and both ``connect`` calls succeed.
  The side whose SYN was dropped keeps waiting in SYN-SENT (the kernel retransmits it), so no retry is
  needed for this.
- Some paths answer a SYN with a reset instead (no NAT in between, as on loopback, or a NAT that
  rejects): ``connect`` fails with ``ECONNREFUSED`` because the other side's SYN has not left yet. Then a
  fresh socket is bound to the **same** port p and connects again, after a short backoff (``BACKOFF``
  doubling up to ``MAX_BACKOFF``), until the deadline.
- Between two such attempts the port has no connecting socket, and a SYN of the other side arriving then
  would be reset by our kernel. So, where the platform has ``SO_REUSEPORT``, the bound socket also
  **listens** on p for the duration of the punch: a SYN from the expected remote address that finds no
  socket in SYN-SENT is accepted by it (an ordinary handshake; connections from anybody else are closed
  at once). A SYN that finds a connecting socket goes to that socket first, so the listener only catches
  what would otherwise be reset.

Whichever way the connection came up (``connect`` or ``accept``), it is one TCP connection between the
two announced addresses; the roles on it (the dialler is the Noise initiator, §12.11) do not depend on
the way. The first connection wins; every other socket (attempts, the listener, a second connection won
in the same instant) is closed before ``simultaneous_open`` returns. On the deadline it raises
``PunchFailed`` (code ``punch_failed``): a symmetric NAT, for instance, maps p to another port per
destination, so neither SYN ever finds a mapping, and the punch fails cleanly.

All timing is trio's clock (``trio.move_on_after``, ``trio.sleep``), so tests can run it under a
``MockClock``.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from dataclasses import dataclass

import trio
from tidings.protocol.errors import TidingsError

__all__ = [
    "BACKOFF",
    "MAX_BACKOFF",
    "PunchFailed",
    "PunchSocket",
    "PunchStatistics",
    "bind_punch_socket",
    "simultaneous_open",
]

log = logging.getLogger("tidings.punch")

#: First pause (seconds) before a refused attempt is retried; doubled per refusal up to ``MAX_BACKOFF``.
BACKOFF = 0.02
MAX_BACKOFF = 0.25
#: Connections the listener keeps waiting; a punch expects one.
_BACKLOG = 4
#: Errors of an attempt that a later attempt may not meet (the other side was not ready yet, or its
#: SYN already made a connection for this address pair through the listener).
_RETRY = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.ETIMEDOUT,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EADDRNOTAVAIL,
    errno.EADDRINUSE,
}
_REUSEPORT: int | None = getattr(socket, "SO_REUSEPORT", None)


class PunchFailed(TidingsError):
    """No direct connection came up before the deadline (spec/protocol.md §12.11); ``code`` says why:
    ``punch_failed`` (the deadline passed) or ``punch_error`` (the local socket could not be used)."""

    code = "punch_failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class PunchStatistics:
    """What one punch did: its local port, the ``connect`` attempts made and how many of them failed
    and were retried (refused, reset, unreachable), the way the connection came up (``"connect"``, ``"accept"``, or ``None`` while none has), and the
    seconds from the start of ``simultaneous_open`` to then."""

    port: int
    attempts: int
    refused: int
    way: str | None
    seconds: float | None


def _family(host: str) -> socket.AddressFamily:
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise ValueError(f"hole punching needs an IP address, not {host!r}") from None
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


def _same_host(a: str, b: str) -> bool:
    return ipaddress.ip_address(a.split("%")[0]) == ipaddress.ip_address(b.strip("[]").split("%")[0])


def _reusable(family: socket.AddressFamily) -> trio.socket.SocketType:
    """A TCP socket that may share its local port with the other sockets of one punch."""
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if _REUSEPORT is not None:
            sock.setsockopt(socket.SOL_SOCKET, _REUSEPORT, 1)
    except OSError:
        sock.close()
        raise
    return sock


class PunchSocket:
    """A local TCP port held for one punch (see the module docstring): ``host`` and ``port`` are what to
    announce (with the observed IP in place of a private ``host``). Close it (or use it as a context
    manager) when no punch follows; ``simultaneous_open`` closes it itself."""

    def __init__(self, sock: trio.socket.SocketType, family: socket.AddressFamily) -> None:
        self._sock = sock
        self.family = family
        self.host, self.port = sock.getsockname()[:2]
        self.attempts = 0
        self.refused = 0
        self.way: str | None = None
        self.seconds: float | None = None
        self.last_error: OSError | None = None
        self._used = False

    @property
    def closed(self) -> bool:
        return self._sock.fileno() == -1

    def close(self) -> None:
        """Give the port back; idempotent."""
        self._sock.close()

    def __enter__(self) -> PunchSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def statistics(self) -> PunchStatistics:
        return PunchStatistics(
            port=self.port, attempts=self.attempts, refused=self.refused, way=self.way, seconds=self.seconds
        )


async def bind_punch_socket(local_host: str | None = None, *, family: int = socket.AF_INET) -> PunchSocket:
    """Bind a fresh local TCP port for a punch, on ``local_host`` (``None``: every address of
    ``family``) with ``SO_REUSEADDR`` and, where the platform has it, ``SO_REUSEPORT``; not connected.
    Raises ``PunchFailed`` (code ``punch_error``) when no port can be bound."""
    fam = _family(local_host) if local_host is not None else socket.AddressFamily(family)
    host = (
        local_host.strip("[]") if local_host is not None else ("::" if fam == socket.AF_INET6 else "0.0.0.0")
    )
    try:
        sock = _reusable(fam)
    except OSError as exc:
        raise PunchFailed(f"cannot make a socket to punch from: {exc}", code="punch_error") from None
    try:
        await sock.bind((host, 0))
    except OSError as exc:
        sock.close()
        raise PunchFailed(f"cannot bind a port on {host} to punch from: {exc}", code="punch_error") from None
    except BaseException:  # cancelled while binding: the socket is ours to close
        sock.close()
        raise
    return PunchSocket(sock, fam)


class _Race:
    """The first connection of one punch; any later one is closed."""

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.stream: trio.SocketStream | None = None

    def won(self, sock: trio.socket.SocketType) -> bool:
        if self.stream is not None:
            sock.close()
            return False
        self.stream = trio.SocketStream(sock)
        self.scope.cancel()
        return True


async def simultaneous_open(
    punch: PunchSocket, remote_host: str, remote_port: int, *, timeout: float
) -> trio.SocketStream:
    """Open a TCP connection from ``punch``'s port to ``remote_host:remote_port`` while the other side
    does the same towards us (spec/protocol.md §12.11; see the module docstring): connect, retry refused
    attempts from the same port with a short backoff, and accept the remote's SYN where it arrives between
    attempts. Returns the connected stream, or raises ``PunchFailed`` (``punch_failed``) once ``timeout``
    seconds have passed. ``punch`` is closed when this returns or raises; no other socket stays open but
    the returned stream's."""
    if _family(remote_host) != punch.family:
        punch.close()
        raise ValueError(f"cannot punch from {punch.host} to {remote_host}: not the same address family")
    if punch._used or punch.closed:
        punch.close()
        raise PunchFailed("this punch socket was already used", code="punch_error")
    punch._used = True
    remote = (remote_host.strip("[]"), remote_port)
    start = trio.current_time()
    race = _Race()
    try:
        with trio.move_on_after(timeout), race.scope:
            async with trio.open_nursery() as nursery:
                if _listen(punch):
                    nursery.start_soon(_accept, punch, remote, race)
                await _connect(punch, remote, race)
                await trio.sleep_forever()  # the accept may still win; the deadline ends the wait
        if race.stream is None:
            last = punch.last_error
            why = f" (last error: {last.strerror})" if last is not None else ""
            raise PunchFailed(
                f"no direct connection to {remote[0]}:{remote_port} from port {punch.port} within "
                f"{timeout:g} s after {punch.attempts} connect attempt{'' if punch.attempts == 1 else 's'}{why}"
            )
        punch.seconds = trio.current_time() - start
        log.debug(
            "punched %s:%d from port %d by %s after %d attempts (%d refused) in %.3f s",
            *remote,
            punch.port,
            punch.way,
            punch.attempts,
            punch.refused,
            punch.seconds,
        )
        return race.stream
    except BaseException:
        if race.stream is not None:  # won, then cancelled from outside before it was returned
            race.stream.socket.close()
        raise
    finally:
        punch.close()


def _listen(punch: PunchSocket) -> bool:
    """Let the punch's own socket catch the remote's SYN between attempts, where the platform lets a
    listener share its port with the connecting sockets (``SO_REUSEPORT``)."""
    if _REUSEPORT is None:
        return False
    try:
        punch._sock.listen(_BACKLOG)
    except OSError as exc:
        log.debug("punch port %d cannot listen: %s", punch.port, exc)
        return False
    return True


async def _connect(punch: PunchSocket, remote: tuple[str, int], race: _Race) -> None:
    """Connect from the punch's port until connected; a refusal is retried after a backoff. Returns
    early only when an attempt cannot be made at all (then the listener or the deadline decides)."""
    pause = BACKOFF
    while True:
        try:
            sock = _reusable(punch.family)
        except OSError as exc:
            punch.last_error = exc
            return
        punch.attempts += 1
        try:
            await sock.bind((punch.host, punch.port))
            await sock.connect(remote)
        except OSError as exc:
            sock.close()
            punch.last_error = exc
            if exc.errno not in _RETRY:
                log.debug("punch to %s:%d from port %d: %s", *remote, punch.port, exc)
                return
            punch.refused += 1
        except BaseException:
            sock.close()
            raise
        else:
            if race.won(sock):
                punch.way = "connect"
            return
        await trio.sleep(pause)
        pause = min(pause * 2, MAX_BACKOFF)


async def _accept(punch: PunchSocket, remote: tuple[str, int], race: _Race) -> None:
    """Take the remote's SYN when it arrives between two attempts (see the module docstring); close
    connections from anywhere else."""
    while True:
        try:
            sock, address = await punch._sock.accept()
        except OSError as exc:
            log.debug("punch listener on port %d: %s", punch.port, exc)
            return
        if address[1] == remote[1] and _same_host(address[0], remote[0]):
            if race.won(sock):
                punch.way = "accept"
            return
        sock.close()
