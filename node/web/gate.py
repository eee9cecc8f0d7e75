"""Who may hold the web port's connections and event streams: the admission rules, without any IO.

Theory of operation (README, "The web page"):

- A connection is admitted when its client (``limits.client_key``: an IPv4 address or an IPv6 /64)
  holds fewer than ``max_per_client`` connections and the port holds fewer than ``max_connections``.
- When the port is full, a client that holds *fewer* connections than the client holding the most
  still gets in: the oldest connection of that heaviest client is evicted to make room. So one client
  (or a few) filling the port cannot lock out a newcomer, while a client that already holds as many
  as the heaviest is refused. Every other excess connection is refused at once.
- ``StreamSlots`` counts open event streams the same way, without eviction: the N+1th stream of a
  client is refused with 429, the N+1th in all with 503.

``ConnectionGate`` only decides; node/web/listener.py closes what it refuses or evicts.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from tidings.node.web.routes import ApiError

__all__ = ["Admission", "ConnectionGate", "StreamSlots"]


@dataclass(slots=True, eq=False)
class Admission:
    """One admitted connection; ``close`` (set by the listener) drops it at once when it is evicted."""

    client: str
    order: int
    close: Callable[[], None] = field(default=lambda: None)


class ConnectionGate:
    """The admitted connections by client, with the caps of the module docstring."""

    def __init__(self, *, max_connections: int, max_per_client: int) -> None:
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self._by_client: dict[str, list[Admission]] = defaultdict(list)
        self._count = 0
        self._order = itertools.count()
        self.admitted = 0
        self.refused = 0
        self.evicted = 0
        self.released = 0  # connections that ended or were evicted

    def __len__(self) -> int:
        return self._count

    def admit(self, client: str) -> tuple[Admission | None, Admission | None]:
        """``(admission, evicted)``: ``admission`` None if refused; ``evicted`` is to be closed now."""
        held = len(self._by_client.get(client, ()))
        if held >= self.max_per_client:
            self.refused += 1
            return None, None
        evicted = None
        if self._count >= self.max_connections:
            heaviest = max(self._by_client.values(), key=len)
            if len(heaviest) <= held + 1:  # evicting would leave that client no lighter than this one
                self.refused += 1
                return None, None
            evicted = heaviest[0]  # the oldest: lists are kept in admission order
            self.release(evicted)
            self.evicted += 1
        admission = Admission(client=client, order=next(self._order))
        self._by_client[client].append(admission)
        self._count += 1
        self.admitted += 1
        return admission, evicted

    def release(self, admission: Admission) -> None:
        """Forget a connection that ended (or was evicted); releasing twice is harmless."""
        held = self._by_client.get(admission.client)
        if held is None or admission not in held:
            return
        held.remove(admission)
        self._count -= 1
        self.released += 1
        if not held:
            del self._by_client[admission.client]

    def admissions(self) -> list[Admission]:
        """Every admitted connection (to close them all at shutdown)."""
        return [a for held in self._by_client.values() for a in held]

    def statistics(self) -> dict[str, int]:
        return {
            "open": self._count,
            "clients": len(self._by_client),
            "admitted": self.admitted,
            "refused": self.refused,
            "evicted": self.evicted,
            "released": self.released,
        }


class StreamSlots:
    """Open event streams by client: ``take`` raises ApiError 429/503 when a cap is reached."""

    def __init__(self, *, max_streams: int, max_per_client: int) -> None:
        self.max_streams = max_streams
        self.max_per_client = max_per_client
        self._by_client: dict[str, int] = defaultdict(int)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def take(self, client: str) -> None:
        """Count one more stream of ``client``, or refuse it (call ``give_back`` when it ends)."""
        if self._by_client.get(client, 0) >= self.max_per_client:
            raise ApiError(
                f"too many event streams from this client (at most {self.max_per_client})",
                status=429,
                code="too_many_streams",
            )
        if self._count >= self.max_streams:
            raise ApiError(
                f"the node serves at most {self.max_streams} event streams: try again later",
                status=503,
                code="streams_full",
            )
        self._by_client[client] += 1
        self._count += 1

    def give_back(self, client: str) -> None:
        self._by_client[client] -= 1
        self._count -= 1
        if self._by_client[client] <= 0:
            del self._by_client[client]
