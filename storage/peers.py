"""Peers the node has met, remembered across restarts (``tidings peers``).

A peer is keyed by its feed (learned in the handshake). ``addresses`` are the ``HOST:PORT`` forms it can
be dialled at: the address we dialled (``--peer``, ``tidings sync``), never the ephemeral port of an
inbound connection. ``source`` says how it was first found: ``peer`` (configured), ``sync``, ``inbound``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from tidings.protocol import feed_id_text

if TYPE_CHECKING:
    from .store import Store

__all__ = ["dial_addresses", "list_peers", "mark_all_disconnected", "note_peer"]

MAX_ADDRESSES = 8


def note_peer(store: Store, feed: bytes, address: str | None, source: str, connected: bool, now: int) -> None:
    """Record that we met ``feed`` (at a dialable ``address`` if given) and whether it is connected now."""
    with store.transaction() as cur:
        row = cur.execute("SELECT addresses FROM peers WHERE feed = ?", (feed,)).fetchone()
        addresses: list[str] = json.loads(row[0]) if row else []
        if address and address not in addresses:
            addresses = [address, *addresses][:MAX_ADDRESSES]
        cur.execute(
            "INSERT INTO peers (feed, addresses, source, first_seen, last_seen, connected) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT (feed) DO UPDATE SET addresses = excluded.addresses, last_seen = excluded.last_seen, "
            "connected = excluded.connected",
            (feed, json.dumps(addresses), source, now, now, int(connected)),
        )


def mark_all_disconnected(store: Store) -> None:
    """At start and stop of a node: nobody is connected (also repairs state after a crash)."""
    with store.transaction() as cur:
        cur.execute("UPDATE peers SET connected = 0 WHERE connected != 0")


def list_peers(store: Store) -> list[dict[str, Any]]:
    """``tidings peers --json`` rows: feed, addresses, last_seen (ms), connected, source."""
    rows = store.read(
        "SELECT feed, addresses, last_seen, connected, source FROM peers ORDER BY connected DESC, last_seen DESC"
    )
    return [
        {
            "feed": feed_id_text(bytes(feed)),
            "addresses": json.loads(addresses),
            "last_seen": last_seen,
            "connected": bool(connected),
            "source": source,
        }
        for feed, addresses, last_seen, connected, source in rows
    ]


def dial_addresses(store: Store, own: bytes) -> list[str]:
    """Addresses of remembered peers to redial when the node starts (most recently seen first)."""
    out: list[str] = []
    for feed, addresses in store.read("SELECT feed, addresses FROM peers ORDER BY last_seen DESC"):
        if bytes(feed) != own:
            out.extend(a for a in json.loads(addresses)[:1] if a not in out)
    return out
