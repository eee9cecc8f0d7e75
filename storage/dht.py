"""What the DHT keeps across restarts: routing table contacts, joined swarms and the members found.

- ``dht_contacts``: the live contacts of the routing table, saved by the running node now and then
  and at exit, so a restarted node rejoins through them without its bootstrap node (ARCHITECTURE.md,
  *Discovery*).
- ``swarms``: the swarms this home joined (``tidings swarm join NAME``); the running node polls it, so
  a join or leave by another process takes effect within about a second.
- ``swarm_members``: the members the node found in each joined swarm (from signed member records).
  Their feeds are replicated (``gossip.wanted_feeds`` adds them) and ``tidings timeline --swarm`` shows
  their posts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import Store

__all__ = [
    "MAX_CONTACTS",
    "add_swarm_member",
    "check_swarm_name",
    "feeds_with_address",
    "join_swarm",
    "leave_swarm",
    "list_swarms",
    "load_contacts",
    "save_contacts",
    "swarm_member_feeds",
    "swarm_members",
    "swarm_names",
]

#: Most routing table contacts saved (20 per bucket over the ~25 buckets a big network fills).
MAX_CONTACTS = 500
MAX_SWARM_NAME = 100


def save_contacts(store: Store, contacts: Iterable[tuple[bytes, str, int]], now: int) -> int:
    """Replace the saved contacts with ``contacts`` ((node_id, host, port), most useful first)."""
    rows = [(node_id, host, port, now) for node_id, host, port in list(contacts)[:MAX_CONTACTS]]
    with store.transaction() as cur:
        cur.execute("DELETE FROM dht_contacts")
        cur.executemany(
            "INSERT OR REPLACE INTO dht_contacts (node_id, host, port, saved) VALUES (?,?,?,?)", rows
        )
    return len(rows)


def load_contacts(store: Store) -> list[tuple[bytes, str, int]]:
    """The saved contacts, (node_id, host, port)."""
    return [
        (bytes(n), str(h), int(p)) for n, h, p in store.read("SELECT node_id, host, port FROM dht_contacts")
    ]


def check_swarm_name(name: str) -> str:
    """A swarm name is 1..100 characters of printable text (ValueError otherwise)."""
    if not 1 <= len(name) <= MAX_SWARM_NAME or not name.isprintable():
        raise ValueError(f"a swarm name is 1 to {MAX_SWARM_NAME} printable characters")
    return name


def join_swarm(store: Store, name: str, now: int) -> bool:
    """Join ``name``; False if already joined."""
    check_swarm_name(name)
    with store.transaction() as cur:
        cur.execute("INSERT OR IGNORE INTO swarms (name, joined) VALUES (?, ?)", (name, now))
        return cur.rowcount > 0


def leave_swarm(store: Store, name: str) -> bool:
    """Leave ``name`` (its members are forgotten); False if not joined."""
    with store.transaction() as cur:
        cur.execute("DELETE FROM swarms WHERE name = ?", (name,))
        left = cur.rowcount > 0
        cur.execute("DELETE FROM swarm_members WHERE swarm = ?", (name,))
        return left


def swarm_names(store: Store) -> list[str]:
    return [str(r[0]) for r in store.read("SELECT name FROM swarms ORDER BY name")]


def list_swarms(store: Store) -> list[dict[str, Any]]:
    """``tidings swarm list --json`` rows: name, joined (ms), members (how many found)."""
    rows = store.read(
        "SELECT s.name, s.joined, (SELECT count(*) FROM swarm_members m WHERE m.swarm = s.name) "
        "FROM swarms s ORDER BY s.name"
    )
    return [{"name": name, "joined": joined, "members": members} for name, joined, members in rows]


def add_swarm_member(store: Store, swarm: str, member: bytes, addresses: list[str], now: int) -> bool:
    """Remember ``member`` of a joined ``swarm``; True if it is new (ignored if we left the swarm)."""
    with store.transaction() as cur:
        if cur.execute("SELECT 1 FROM swarms WHERE name = ?", (swarm,)).fetchone() is None:
            return False
        known = cur.execute(
            "SELECT 1 FROM swarm_members WHERE swarm = ? AND member = ?", (swarm, member)
        ).fetchone()
        cur.execute(
            "INSERT INTO swarm_members (swarm, member, addresses, last_seen) VALUES (?,?,?,?) "
            "ON CONFLICT (swarm, member) DO UPDATE SET addresses = excluded.addresses, "
            "last_seen = excluded.last_seen",
            (swarm, member, json.dumps(addresses), now),
        )
        return known is None


def swarm_members(store: Store, swarm: str) -> list[bytes]:
    """Feeds found in ``swarm`` (empty if not joined)."""
    return [bytes(r[0]) for r in store.read("SELECT member FROM swarm_members WHERE swarm = ?", (swarm,))]


def swarm_member_feeds(store: Store) -> set[bytes]:
    """Feeds of the members of every joined swarm (replicated like follows)."""
    return {
        bytes(r[0])
        for r in store.read("SELECT m.member FROM swarm_members m JOIN swarms s ON s.name = m.swarm")
    }


def feeds_with_address(store: Store) -> set[bytes]:
    """Feeds of remembered peers that have a dialable address."""
    return {bytes(r[0]) for r in store.read("SELECT feed FROM peers WHERE addresses != '[]'")}
