"""What a replication connection (``PeerConnection``) needs from the node that runs it: a narrow
interface, so the connection does not depend on ``Node`` itself (``Node`` is one such host)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, Protocol

from tidings.node.clock import Clock
from tidings.protocol import SigningKey
from tidings.protocol.budget import ProofCache
from tidings.protocol.gossip import Gossip
from tidings.protocol.reach_events import ReachEvent
from tidings.storage.thread import DatabaseThread

__all__ = ["ConnectionHost", "Peer"]


class Peer(Protocol):
    """Another connection of the node, as far as one connection looks at the others."""

    @property
    def feed(self) -> bytes: ...
    @property
    def address(self) -> str: ...
    @property
    def initiator(self) -> bool: ...
    @property
    def once(self) -> bool: ...

    async def send_members(self, records: list[bytes]) -> None: ...


class _Scores(Protocol):
    def add(self, host: str, event: str, count: float = 1.0) -> float: ...


class _Members(Protocol):
    """Swarm member gossip (``Discovery``, spec §13.6)."""

    async def offer_members(self, conn: Peer) -> None: ...

    async def receive_members(self, data: tuple[bytes, ...], conn: Peer) -> None: ...


class ConnectionHost(Protocol):
    """What a connection needs from the node that runs it (``Node`` is one)."""

    agent: str
    sent_entries: int
    #: the gossip rules over all connections (spec §12.7, §12.8.5)
    gossip: Gossip
    #: fork proofs the node has checked or holds (spec §12.8.6)
    proofs: ProofCache

    @property
    def db(self) -> DatabaseThread: ...
    @property
    def key(self) -> SigningKey: ...
    @property
    def limits(self) -> Mapping[str, Any]: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def rng(self) -> random.Random: ...
    @property
    def wanted(self) -> set[bytes]: ...
    @property
    def blocked(self) -> set[bytes]: ...
    @property
    def scores(self) -> _Scores: ...
    @property
    def discovery(self) -> _Members | None: ...
    @property
    def connections(self) -> Mapping[int, Peer]: ...

    async def current_wants(self, extra: set[bytes] | None = None) -> set[bytes]: ...
    def dial(
        self, address: str, *, feed: bytes | None = None, source: str = "dht", pinned: bool = False
    ) -> None: ...
    def penalize(self, host: str, event: str, count: float = 1.0) -> None: ...
    async def new_rows(self, after: int) -> list[tuple[Any, ...]]: ...
    async def head(self, feed: bytes) -> int: ...
    async def wait_changed(self) -> None: ...
    def note_ingested(self, n: int) -> None: ...
    async def broadcast_forks(self, proofs: list[bytes]) -> None: ...
    def wake_gossip(self) -> None: ...
    async def on_reach_event(self, conn: Any, event: ReachEvent) -> None:
        """A version-3 message (reachability, relays, hole punching; spec §12.9-§12.11) from ``conn``."""
