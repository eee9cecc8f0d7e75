"""Hole punching (spec/protocol.md §12.11): a relayed connection replaced by a direct one.

``Punching`` runs the ``punch``/``punch_go`` exchange over relayed connections and the TCP simultaneous
open (node/net/punch.py), and hands a direct connection that proves the same feed to the node.
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from tidings.protocol.reach_events import ReachEvent

__all__ = ["Punching"]

log = logging.getLogger("tidings.punch")


class Punching:
    """Upgrades relayed connections to direct ones (spec §12.11)."""

    def __init__(self, node: Any) -> None:
        self.node = node

    async def run(self) -> None:
        await trio.sleep_forever()

    def start(self, conn: Any) -> None:
        """Try to replace the relayed connection ``conn`` with a direct one (we dialled it)."""

    async def on_event(self, conn: Any, event: ReachEvent) -> None:
        log.debug("punch message %s from %s not handled yet", event.NAME, conn.address)
