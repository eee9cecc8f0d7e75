"""Which contacts the DHT's UDP adapter lets into its routing table, and the pings that decide it.

Theory of operation. ``ContactChecks`` is told of every contact the node heard from. A contact that
answered one of our requests is ``heard`` (spec/protocol.md §13.2): observed into the ``RoutingTable``,
and when its bucket is full the least recently seen contact there is pinged in the background (at most
16 such pings at a time, one per contact), so a silent one gives its place up. A contact that only sent
us a request is ``heard_request``: refreshed if the table holds that id at that address, and otherwise
let in only once it answers a ping of ours (at most 16 such pings at a time, one per address, §13.6).
So a host that sends requests under throwaway ids and never answers, as a flood does, adds no contact
that the node would hand to others or wait for in its lookups. The pings run in the adapter's nursery.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio
from tidings.node.clock import Clock
from tidings.protocol.dht_wire import Contact
from tidings.protocol.routing import Observed, RoutingTable

__all__ = ["MAX_CHECKS", "ContactChecks"]

#: Background pings at a time, of each kind (bucket heads; senders of requests).
MAX_CHECKS = 16


class ContactChecks:
    """Contacts into the routing table, after a ping where one is due (see the module docstring)."""

    def __init__(
        self, table: RoutingTable, ping: Callable[[tuple[str, int]], Awaitable[bytes | None]], clock: Clock
    ) -> None:
        self.table = table
        self.ping = ping
        self.clock = clock
        self.nursery: trio.Nursery | None = None
        self._heads: set[bytes] = set()
        self._senders: set[tuple[str, int]] = set()

    def heard(self, contact: Contact) -> None:
        """``contact`` answered us: observe it, and check the head of its bucket when that is full."""
        outcome = self.table.observe(contact, self.clock.monotonic())
        head = outcome.ping
        if outcome.status is not Observed.PENDING or head is None or self.nursery is None:
            return
        if head.node_id not in self._heads and len(self._heads) < MAX_CHECKS:
            self._heads.add(head.node_id)
            self.nursery.start_soon(self._check_head, head)

    def heard_request(self, contact: Contact) -> None:
        """``contact`` sent us a request: refreshed when known, else pinged first (§13.6)."""
        if self.table.get(contact.node_id) == contact:
            self.heard(contact)
            return
        address = contact.address
        if self.nursery is None or address in self._senders or len(self._senders) >= MAX_CHECKS:
            return
        self._senders.add(address)
        self.nursery.start_soon(self._check_sender, address)

    async def _check_head(self, contact: Contact) -> None:
        """Ping the head of a full bucket; if it stays silent its replacement moves in."""
        try:
            if await self.ping(contact.address) != contact.node_id:
                self.table.failed(contact.node_id)
        finally:
            self._heads.discard(contact.node_id)

    async def _check_sender(self, address: tuple[str, int]) -> None:
        """Ping the sender of a request; its answer (``DHT.ping``) lets it in under the id it answers with."""
        try:
            await self.ping(address)
        finally:
            self._senders.discard(address)
