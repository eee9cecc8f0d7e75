"""The node's TCP listener: accepts inbound connections within the limits of spec §12.5.

Theory of operation. ``accept_loop`` takes every connection the listener accepts and first asks
``refusal`` whether to keep it: a banned host, a full node (``max_connections``: inbound connections,
counting those still in their handshake, plus established outgoing ones) and a host with
``max_per_host`` inbound connections are closed at once. A kept connection is counted for the limits
from before its handshake until it ends, and is handed to the node (``serve_connection``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Mapping
from typing import Any, Protocol

import trio
from tidings.node.net.scoring import Penalties

__all__ = ["InboundHost", "Listener", "close_stream"]

log = logging.getLogger("tidings.node")

_ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


class _Connection(Protocol):
    @property
    def initiator(self) -> bool: ...


class InboundHost(Protocol):
    """What the listener needs from the node (``Node`` is one)."""

    @property
    def limits(self) -> Mapping[str, Any]: ...
    @property
    def penalties(self) -> Penalties: ...
    @property
    def connections(self) -> Mapping[int, _Connection]: ...

    async def serve_connection(
        self, stream: trio.abc.Stream, address: str, *, initiator: bool
    ) -> object | None:
        """Handshake and replicate on ``stream`` until it ends."""
        ...


class Listener:
    """Counts inbound connections and refuses those over the limits (see the module docstring)."""

    def __init__(self, node: InboundHost) -> None:
        self.node = node
        self.inbound = 0
        self.by_host: dict[str, int] = {}

    async def accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno in _ACCEPT_CAPACITY_ERRNOS:
                    # out of file descriptors or memory: wait for connections to close (as trio's
                    # serve_listeners does) instead of dying
                    log.warning("cannot accept connections: %s; pausing 100 ms", os.strerror(exc.errno or 0))
                    await trio.sleep(0.1)
                    continue
                raise
            host = _peer_host(stream)
            if self.refusal(host):
                await close_stream(stream)
                continue
            nursery.start_soon(self._serve, stream, host)

    def refusal(self, host: str) -> str | None:
        """Why an inbound connection from ``host`` is refused now, or None (limits of spec §12.5)."""
        node = self.node
        if node.penalties.banned(host):
            rec = node.penalties.by_host[host]
            if not rec.warned:  # once per ban, so a refused peer shows in the log without flooding it
                rec.warned = True
                log.warning("refusing %s until its ban ends (%s)", host, rec.last_reason)
            return "banned"
        outbound = sum(1 for c in node.connections.values() if c.initiator)
        if self.inbound + outbound >= node.limits["max_connections"]:
            log.info("refusing %s: connection limit reached", host)
            return "full"
        if self.by_host.get(host, 0) >= node.limits["max_per_host"]:
            log.info("refusing %s: too many connections from it", host)
            return "per_host"
        return None

    async def _serve(self, stream: trio.abc.Stream, host: str) -> None:
        """Count an inbound connection (handshaking ones too) for the limits while it lives."""
        self.inbound += 1
        self.by_host[host] = self.by_host.get(host, 0) + 1
        try:
            await self.node.serve_connection(stream, host, initiator=False)
        finally:
            self.inbound -= 1
            left = self.by_host[host] - 1
            if left:
                self.by_host[host] = left
            else:
                del self.by_host[host]


def _peer_host(stream: trio.abc.Stream) -> str:
    try:
        return str(stream.socket.getpeername()[0])  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return "?"


async def close_stream(stream: trio.abc.Stream) -> None:
    """Close ``stream`` within a second, whatever state it is in."""
    with (
        trio.move_on_after(1),
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError),
    ):
        await stream.aclose()
