"""Queries the replication layer needs: which feeds we want, what we hold, what to send.

Kept apart from ``reads.py`` (what people read) because these run on the node's hot path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import Store

__all__ = ["entries_after", "heads", "new_rows", "wanted_feeds"]


def wanted_feeds(store: Store, me: bytes, hops: int) -> set[bytes]:
    """Our feed, follows up to ``hops`` away (1: our follows; 2: also theirs), the feeds that follow us,
    swarm members, never blocked feeds (spec §12.3).

    Blocks: our own blocks always; a feed blocked by us is neither wanted nor walked through.
    Followers are the authors of the active follow entries held that name our feed (also with
    ``hops`` 0), so that their private messages reach us (spec §8.6); they are not walked through.
    """
    blocked = {
        bytes(r[0])
        for r in store.read(
            "SELECT target FROM graph WHERE author = ? AND kind = 'block' AND active = 1", (me,)
        )
    }
    wanted = {me}
    frontier = {me}
    for _ in range(max(hops, 0)):
        nxt: set[bytes] = set()
        items = list(frontier)
        for i in range(0, len(items), 500):
            part = items[i : i + 500]
            marks = ",".join("?" * len(part))
            for (target,) in store.read(
                f"SELECT target FROM graph WHERE kind = 'follow' AND active = 1 AND author IN ({marks})", part
            ):
                target = bytes(target)
                if target not in wanted and target not in blocked:
                    nxt.add(target)
        wanted |= nxt
        frontier = nxt
        if not frontier:
            break
    # our followers, on the graph_target index (spec §12.3, node/net/followers.py)
    wanted |= {
        bytes(r[0])
        for r in store.read(
            "SELECT author FROM graph WHERE target = ? AND kind = 'follow' AND active = 1", (me,)
        )
    }
    # the members of our swarms are replicated like follows (storage/dht.py)
    wanted |= {
        bytes(r[0])
        for r in store.read("SELECT m.member FROM swarm_members m JOIN swarms s ON s.name = m.swarm")
    }
    return wanted - blocked


def heads(store: Store, feeds: set[bytes]) -> dict[bytes, int]:
    """Highest stored seq of each feed (0 when none is held)."""
    out = dict.fromkeys(feeds, 0)
    items = list(feeds)
    for i in range(0, len(items), 500):
        part = items[i : i + 500]
        marks = ",".join("?" * len(part))
        for author, head in store.read(f"SELECT author, head_seq FROM feeds WHERE author IN ({marks})", part):
            out[bytes(author)] = int(head)
    return out


def follow_entries(store: Store, target: bytes, skip: set[bytes], limit: int) -> list[tuple[bytes, bytes]]:
    """The active follow entries held that name ``target`` (with their payloads), of at most ``limit``
    authors not in ``skip``, newest first: follower notes (spec §12.3, version 5)."""
    out: list[tuple[bytes, bytes]] = []
    for author, raw, payload in store.read(
        "SELECT g.author, e.raw, e.payload FROM graph g JOIN entries e ON e.author = g.author AND e.seq = g.seq "
        "WHERE g.target = ? AND g.kind = 'follow' AND g.active = 1 AND e.payload IS NOT NULL "
        "ORDER BY e.ts DESC LIMIT ?",
        (target, limit + len(skip)),
    ):
        if bytes(author) not in skip and bytes(author) != target:
            out.append((bytes(raw), bytes(payload)))
    return out[:limit]


def entries_after(
    store: Store, feed: bytes, after: int, *, limit: int = 1000, newest: int = 0
) -> list[tuple[bytes, bytes | None]]:
    """Entries of ``feed`` with seq > ``after``, oldest first; with ``newest``, only the last N of them.

    Deleted payloads are never sent (spec §12.3).
    """
    if newest and after == 0:
        head = store.read("SELECT head_seq FROM feeds WHERE author = ?", (feed,))
        if head:
            after = max(after, int(head[0][0]) - newest)
    rows = store.read(
        "SELECT raw, CASE WHEN deleted THEN NULL ELSE payload END FROM entries "
        "WHERE author = ? AND seq > ? ORDER BY seq LIMIT ?",
        (feed, after, limit),
    )
    return [(bytes(raw), None if payload is None else bytes(payload)) for raw, payload in rows]


def new_rows(store: Store, after_id: int, *, limit: int = 2000) -> list[tuple[Any, ...]]:
    """Entries stored after local row ``after_id``: (id, author, seq, type, raw, payload)."""
    rows = store.read(
        "SELECT id, author, seq, type, raw, CASE WHEN deleted THEN NULL ELSE payload END "
        "FROM entries WHERE id > ? ORDER BY id LIMIT ?",
        (after_id, limit),
    )
    return [(r[0], bytes(r[1]), r[2], r[3], bytes(r[4]), None if r[5] is None else bytes(r[5])) for r in rows]


def held_below(store: Store, author: bytes, seq: int) -> int:
    """The highest seq of ``author`` held below ``seq`` (0 when none is)."""
    row = store.read("SELECT max(seq) FROM entries WHERE author = ? AND seq < ?", (author, seq))
    return int(row[0][0] or 0)


def max_row(store: Store) -> int:
    return int(store.read("SELECT coalesce(max(id), 0) FROM entries")[0][0])


#: Entry types that can change which feeds a node wants (spec §12.3).
GRAPH_TYPES = ("follow", "unfollow", "block", "unblock")


def graph_changed(store: Store, after_row: int) -> bool:
    """Whether an entry stored after row ``after_row`` may change the wanted feeds."""
    marks = ",".join("?" * len(GRAPH_TYPES))
    sql = f"SELECT 1 FROM entries WHERE id > ? AND type IN ({marks}) LIMIT 1"
    return bool(store.read(sql, (after_row, *GRAPH_TYPES)))


def fork_proofs(store: Store, feeds: set[bytes]) -> list[bytes]:
    """Stored fork proofs (spec §7.2 encoding) of the given feeds."""
    out: list[bytes] = []
    items = list(feeds)
    for i in range(0, len(items), 500):
        part = items[i : i + 500]
        marks = ",".join("?" * len(part))
        out.extend(
            bytes(r[0]) for r in store.read(f"SELECT proof FROM forks WHERE author IN ({marks})", part)
        )
    return out


def fork_seqs(store: Store, feed: bytes) -> set[int]:
    """Seqs of ``feed`` for which a fork proof is stored."""
    return {int(r[0]) for r in store.read("SELECT seq FROM forks WHERE author = ?", (feed,))}
