"""How fast a web client's requests are answered: a request rate per client and a pipelining cap per
connection, both enforced by *not reading* (back-pressure), without any IO.

Theory of operation (README, "The web page"). An answer costs the node about as much as a refusal
(a 429 is an answer too), so an excess request is not refused: it waits. While a request of a
connection waits, hypercorn does not read that connection (HTTP/1.1 answers in order, and its reader
stops until the answer in progress is done), so the client's bytes stay in the kernel's buffers and
a client that keeps sending stalls. Two rules decide how long a request waits:

- ``RequestBudget``: a token bucket per client (``limits.client_key``): ``request_burst`` tokens,
  refilled at ``request_rate`` a second on the node's clock (node/clock.py). A request takes a token;
  when there is none it waits until one is due (the token is reserved, so waiting requests are served
  in order). At most ``max_per_client`` requests of a client wait at once (one per connection).
- ``Pipelining``: per connection. A request is *pipelined* when no byte came from the client since
  the previous request started: it was sent before the client had the previous answer. Browsers and
  ordinary clients never pipeline; a client that does and reads nothing makes the node answer into
  its buffers. So after ``max_pipelined`` pipelined answers in a row, the next is not answered: the
  connection is paused and closed after ``write_timeout`` (a client that does not read, as for a
  write that does not progress). Any byte from the client ends the run of pipelined requests.

node/web/listener.py applies both before handing a request to the app.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Pipelining", "RequestBudget"]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float  # when ``tokens`` was last brought up to date


class RequestBudget:
    """Tokens per client: ``take`` says how long a request must wait (0.0: answer now)."""

    def __init__(self, *, rate: float, burst: int, now: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = burst
        self.now = now
        self._buckets: dict[str, _Bucket] = {}
        self.answered = 0  # requests let through (at once or after waiting)
        self.paced = 0  # of which waited for a token

    def take(self, client: str) -> float:
        """Take one token of ``client`` (reserving a future one if none is left); seconds to wait."""
        now = self.now()
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = _Bucket(tokens=float(self.burst), at=now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        bucket.tokens -= 1.0
        self.answered += 1
        self._forget_full(now)
        if bucket.tokens >= 0.0:
            return 0.0
        self.paced += 1
        return -bucket.tokens / self.rate

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled completely (they equal a new one), so clients do not pile up."""
        if len(self._buckets) <= 1024:
            return
        for client, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.at) * self.rate >= self.burst:
                del self._buckets[client]


class Pipelining:
    """One connection's run of pipelined requests: ``start`` says whether a request may be answered."""

    def __init__(self, max_pipelined: int) -> None:
        self.max_pipelined = max_pipelined
        self._received_at_last: int | None = None  # the connection's read count when the last request started
        self.run = 0  # pipelined requests answered in a row

    def start(self, received: int) -> bool:
        """A request starts after ``received`` reads of the connection: False if it must not be answered."""
        pipelined = self._received_at_last is not None and received == self._received_at_last
        self._received_at_last = received
        self.run = self.run + 1 if pipelined else 0
        return self.run <= self.max_pipelined
