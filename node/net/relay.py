"""Relays by peers (spec/protocol.md §12.10): reservations and relayed connections, both sides.

``Relays`` holds what this node relays for others (reservations, circuits, budgets) and the reservations
it keeps on relays while it is private, and dials feeds through relays.
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from tidings.protocol.reach_events import ReachEvent

__all__ = ["Relays"]

log = logging.getLogger("tidings.relay")


class Relays:
    """This node as a relay and as a user of relays (spec §12.10)."""

    def __init__(self, node: Any) -> None:
        self.node = node

    async def run(self) -> None:
        await trio.sleep_forever()

    def relay_addresses(self) -> list[tuple[bytes, str]]:
        """``(relay feed, "HOST:PORT")`` of the relays that hold a reservation for this node."""
        return []

    async def on_event(self, conn: Any, event: ReachEvent) -> None:
        log.debug("relay message %s from %s not handled yet", event.NAME, conn.address)
