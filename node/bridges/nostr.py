"""Nostr both ways (spec §14.5): publish the user's posts as kind-1 events, import followed authors.

Out (opt-in: ``tidings bridge nostr publish`` once, or ``bridge config nostr publish on`` for the node):
own posts become kind-1 events signed by the bridge's own secp256k1 key. In (opt-in per author:
``follow NPUB``): kind-1 events of followed keys are imported into one bridge feed per author, which
the user follows. One round each way is ``nostr_sync``; inside ``tidings run`` each relay is followed
live over one long-lived connection (``nostr_live.NostrService``). The ``tidings bridge nostr ...``
commands are in ``cli/commands_bridge_nostr.py``.
"""

from __future__ import annotations

from typing import Any

from tidings.node.bridges.base import Bridge, BridgeContext, Setting, parse_bool, parse_seconds
from tidings.node.bridges.nostr_live import NostrService
from tidings.node.bridges.nostr_sync import (
    NAME,
    import_events,
    nostr_secret,
    publish_pending,
    pull_follows,
)
from tidings.protocol import nostr as wire

__all__ = ["NostrBridge", "import_events", "nostr_secret", "publish_pending", "pull_follows"]


class NostrBridge(Bridge):
    """Nostr both ways over NIP-01 relays."""

    name = NAME
    description = "Nostr: publish your posts as kind-1 events; follow Nostr authors as bridge feeds."
    settings = (
        Setting(
            name="publish",
            default="off",
            help="publish your posts to the relays from the node",
            parse=parse_bool,
        ),
        Setting(
            name="interval",
            default="60",
            help="longest time between full re-subscriptions to a relay (events arrive live in between)",
            parse=parse_seconds,
        ),
        Setting(
            name="retry",
            default="10",
            help="first retry delay after a relay failure (doubles)",
            parse=parse_seconds,
        ),
        Setting(name="timeout", default="10", help="seconds to wait for a relay", parse=parse_seconds),
    )

    def service(self, ctx: BridgeContext) -> NostrService | None:
        from tidings.storage import bridges as db

        if not db.sources(ctx.store, NAME, "relay"):
            return None
        if ctx.settings.get("publish") != "on" and not db.sources(ctx.store, NAME, "in"):
            return None  # opt-in: neither direction is enabled
        return NostrService(ctx.home, ctx.settings, clock=ctx.clock)

    def status(self, ctx: BridgeContext) -> dict[str, Any]:
        out = super().status(ctx)
        key = ctx.home.path / "bridges" / NAME / "nostr.key"
        out["npub"] = wire.npub(wire.public_key(nostr_secret(ctx.home))) if key.exists() else None
        return out
