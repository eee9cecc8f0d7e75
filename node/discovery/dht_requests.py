"""The asking side of the DHT's UDP adapter: one request out, its reply back (spec/protocol.md §13).

Theory of operation. ``Requester.request`` sends a request under a fresh random 20-byte message id
and waits, at most ``timeout`` seconds, for the response that ``deliver`` hands it. A response is
matched by the message id *and* the source address, so a third party cannot answer for the node we
asked; anything else is counted as ``unmatched_responses`` and dropped. Message ids come from
``secrets``: a guessable id would let an off-path host forge replies. Answered requests feed a
round-trip estimator (RFC 6298) that gives lookups adaptive timeouts (``query_timeout``,
``query_stall``, §13.7). ``dht.DHT`` owns the socket and gives it to the requester while it runs.
"""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import trio
from tidings.node.clock import SYSTEM_CLOCK, Clock
from tidings.node.discovery.dht_support import MIN_QUERY_STALL, MIN_QUERY_TIMEOUT, RoundTrip
from tidings.protocol import RemoteProtocolError
from tidings.protocol.dht_wire import Reply, Request, ResponseDatagram, encode_request, parse_reply

__all__ = ["Requester"]


@dataclass
class _Pending:
    address: tuple[str, int]
    event: trio.Event = field(default_factory=trio.Event)
    body: Any = None


class Requester:
    """Requests and their replies over the adapter's socket (see the module docstring); ``timeout`` is
    the longest wait for one reply. Counts what it did in ``stats`` (shared with the adapter)."""

    def __init__(self, *, timeout: float, clock: Clock = SYSTEM_CLOCK, stats: Counter[str]) -> None:
        self.timeout = timeout
        self.clock = clock
        self.stats = stats
        self.sock: trio.socket.SocketType | None = None
        self._pending: dict[bytes, _Pending] = {}
        self._rtt = RoundTrip()

    def __len__(self) -> int:
        """Requests waiting for their reply."""
        return len(self._pending)

    async def send(self, data: bytes, address: tuple[str, int]) -> bool:
        """Send one datagram; False when the socket is closed or refuses it."""
        if self.sock is None:
            return False
        try:
            await self.sock.sendto(data, address)
        except OSError:
            self.stats["send_errors"] += 1
            return False
        self.stats["bytes_out"] += len(data)
        return True

    def expects(self, msg_id: bytes, source: tuple[str, int]) -> bool:
        """Whether a response ``msg_id`` from ``source`` would answer a pending request (looked at
        before the response is decoded, §13.6)."""
        pending = self._pending.get(msg_id)
        return pending is not None and pending.address == source

    def deliver(self, datagram: ResponseDatagram, source: tuple[str, int]) -> None:
        """A response arrived from ``source``: wake the request it answers, if any."""
        pending = self._pending.get(datagram.msg_id)
        if pending is None or pending.address != source:
            self.stats["unmatched_responses"] += 1
            return
        del self._pending[datagram.msg_id]
        pending.body = datagram.body
        pending.event.set()

    async def request(self, address: tuple[str, int], request: Request, timeout: float) -> Reply | None:
        """Send ``request`` to ``address``; its reply, or None on timeout.

        Raises ``RemoteProtocolError`` when the reply has the wrong shape for the request.
        """
        msg_id = secrets.token_bytes(20)
        pending = _Pending(address)
        self._pending[msg_id] = pending
        self.stats["requests_out"] += 1
        try:
            if not await self.send(encode_request(msg_id, request), address):
                return None
            sent = self.clock.monotonic()
            with trio.move_on_after(timeout):
                await pending.event.wait()
        finally:
            self._pending.pop(msg_id, None)
        if not pending.event.is_set():
            self.stats["timeouts"] += 1
            return None
        self._rtt.sample(self.clock.monotonic() - sent)
        try:
            return parse_reply(request.NAME, pending.body)
        except RemoteProtocolError:
            self.stats["malformed_replies"] += 1
            raise

    def query_timeout(self) -> float:
        """How long a lookup waits for one reply: adaptive, from the round trips seen (as TCP's RTO),
        between ``MIN_QUERY_TIMEOUT`` and the configured ``timeout``. A dead node then costs a lookup
        a few round trips' worth of waiting, not a whole fixed timeout (spec §13.7)."""
        return self._rtt.timeout(MIN_QUERY_TIMEOUT, self.timeout)

    def query_stall(self, timeout: float) -> float:
        """After how long a silent query counts as stalled in a lookup (§13.3): the same estimator as
        ``query_timeout`` but with the lower floor ``MIN_QUERY_STALL``, and at most half of ``timeout``
        (when the query is resent). The lookup then asks the next contact while the silent one's
        deadline runs, so dead contacts after churn cost it about one timeout in all."""
        return self._rtt.timeout(MIN_QUERY_STALL, timeout / 2)
