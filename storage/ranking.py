"""The queries the timeline rankers need (node/ranking/rankers.py, spec/ranking.md).

Every query here is written so the planner walks an index in the order wanted, never sorting a big
table: candidates walk ``entries_rank`` (the index of the ranked time ``min(ts, received + skew)``,
schema.py, spec/ranking.md §1.1) newest first and keep the wanted authors (~0.1 ms over 1M rows,
the measured limits of this machine; ``WHERE author IN (SELECT ...)`` without ``INDEXED BY`` let the planner pick
the author index and sort, 1.3 s). Sets of feeds or entries go into small TEMP
tables (one per role, refilled per call) so each lookup is an index probe per row of the small side;
``CROSS JOIN`` pins that order (SQLite never reorders a CROSS JOIN), whatever the statistics say.
``tests/test_ranking_storage.py`` asserts the plans.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .schema import rank_ts

if TYPE_CHECKING:
    from .store import Store

__all__ = [
    "CANDIDATE_SQL",
    "blocks_by",
    "candidate_page",
    "engagement_counts",
    "entry_authors",
    "rank_times",
    "set_authors",
    "vouchers",
    "vouches",
]

#: The ranked time of an entry row ``e`` (spec/ranking.md §1.1), as the ``entries_rank`` index has it.
_RANK = rank_ts("e")

#: Entry columns of a candidate row: row id, hash, author, seq, ts, type, payload, deleted, received,
#: ranked time.
_COLS = f"e.id, e.hash, e.author, e.seq, e.ts, e.type, e.payload, e.deleted, e.received, {_RANK}"

#: One page of candidates: posts and reposts of the wanted authors, newest ranked time first, before a
#: ``(ranked time, id)`` cursor and not ranked before ``since``. Walks the ranked-time index (rowid is
#: its tail, so ``ORDER BY ... DESC, id DESC`` needs no sort); each row costs one probe of the TEMP
#: author table.
CANDIDATE_SQL = (
    f"SELECT {_COLS} FROM entries e INDEXED BY entries_rank "
    f"WHERE {_RANK} >= :since AND ({_RANK} < :ts OR ({_RANK} = :ts AND e.id < :id)) "
    "AND e.type IN ('post', 'repost') AND e.deleted = 0 "
    "AND e.author IN (SELECT author FROM temp.rk_authors) "
    f"ORDER BY {_RANK} DESC, e.id DESC LIMIT :n"
)

_TABLES = {
    "rk_authors": "(author BLOB PRIMARY KEY) WITHOUT ROWID",
    "rk_by": "(author BLOB PRIMARY KEY) WITHOUT ROWID",
    "rk_targets": "(hash BLOB PRIMARY KEY, author BLOB NOT NULL) WITHOUT ROWID",
    "rk_hashes": "(hash BLOB PRIMARY KEY) WITHOUT ROWID",
}

_MAX_TS = 2**62


def _fill(store: Store, table: str, rows: Iterable[tuple[Any, ...]]) -> None:
    """Replace the contents of one TEMP table (temp tables take no lock on the shared store file)."""
    conn = store.conn
    marks = ",".join("?" * (2 if table == "rk_targets" else 1))
    # One transaction for the lot: in autocommit mode each inserted row would be its own (5 ms per
    # 1,000 rows instead of 0.3). It writes the temp database only, so it takes no lock on the store.
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")
    try:
        conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {table} {_TABLES[table]}")
        conn.execute(f"DELETE FROM temp.{table}")
        conn.executemany(f"INSERT OR IGNORE INTO temp.{table} VALUES ({marks})", rows)
    except BaseException:
        if own:
            conn.execute("ROLLBACK")
        raise
    if own:
        conn.execute("COMMIT")


def set_authors(store: Store, authors: Iterable[bytes]) -> None:
    """The authors ``candidate_page`` keeps (kept until the next call)."""
    _fill(store, "rk_authors", ((a,) for a in authors))


def candidate_page(
    store: Store, *, before: tuple[int, int] | None, since: int, n: int
) -> list[tuple[Any, ...]]:
    """Up to ``n`` posts and reposts of the ``set_authors`` feeds, newest ranked time first (ties: higher
    row id first), strictly before the ``(ranked time, row id)`` cursor ``before`` and ranked at
    ``since`` or later. Rows: ``_COLS``."""
    ts, rowid = before if before is not None else (_MAX_TS, 0)
    return store.read(CANDIDATE_SQL, {"since": since, "ts": ts, "id": rowid, "n": n})


def engagement_counts(
    store: Store, targets: dict[bytes, bytes], by: Iterable[bytes]
) -> dict[bytes, tuple[int, int, int]]:
    """``{target hash: (reactions, replies, reposts)}`` counting distinct people among ``by``.

    ``targets`` maps each entry hash to its author; the author's own reactions, replies and reposts
    of it do not count. A person who reacts three times counts once (spec/ranking.md §2).
    """
    if not targets:
        return {}
    _fill(store, "rk_targets", targets.items())
    _fill(store, "rk_by", ((a,) for a in by))
    out: dict[bytes, list[int]] = {}
    queries = (
        "SELECT t.hash, count(DISTINCT r.author) FROM temp.rk_targets t "
        "CROSS JOIN reactions r ON r.target = t.hash "
        "WHERE r.author != t.author AND r.author IN (SELECT author FROM temp.rk_by) GROUP BY t.hash",
        # CROSS JOIN keeps the small target table outside: otherwise the planner walks all of posts_reply
        "SELECT t.hash, count(DISTINCT p.author) FROM temp.rk_targets t "
        "CROSS JOIN posts p INDEXED BY posts_reply ON p.reply = t.hash AND p.reply IS NOT NULL "
        "WHERE p.author != t.author AND p.author IN (SELECT author FROM temp.rk_by) GROUP BY t.hash",
        "SELECT t.hash, count(DISTINCT r.author) FROM temp.rk_targets t "
        "CROSS JOIN reposts r ON r.target = t.hash "
        "WHERE r.author != t.author AND r.author IN (SELECT author FROM temp.rk_by) GROUP BY t.hash",
    )
    for i, sql in enumerate(queries):
        for hash_, count in store.read(sql):
            out.setdefault(bytes(hash_), [0, 0, 0])[i] = int(count)
    return {k: (v[0], v[1], v[2]) for k, v in out.items()}


def vouches(store: Store, follows: Iterable[bytes]) -> dict[bytes, int]:
    """``{feed: how many of follows follow it}`` over every feed some of ``follows`` follow."""
    _fill(store, "rk_by", ((a,) for a in follows))
    rows = store.read(
        "SELECT g.target, count(*) FROM temp.rk_by f "
        "CROSS JOIN graph g ON g.author = f.author AND g.kind = 'follow' AND g.active = 1 GROUP BY g.target"
    )
    return {bytes(t): int(c) for t, c in rows}


def vouchers(store: Store, follows: Iterable[bytes], feeds: Iterable[bytes]) -> dict[bytes, list[bytes]]:
    """``{feed: [which of follows follow it]}`` for a few ``feeds`` (sorted, for the explanations)."""
    _fill(store, "rk_by", ((a,) for a in follows))
    _fill(store, "rk_hashes", ((f,) for f in feeds))
    # ``+g.author``: filter by the follows; as an index term SQLite would probe (target, kind, author)
    # once per target and follow (1,000 × 1,000 probes, 280 ms at 1M entries).
    rows = store.read(
        "SELECT g.target, g.author FROM temp.rk_hashes h "
        "CROSS JOIN graph g ON g.target = h.hash AND g.kind = 'follow' "
        "WHERE g.active = 1 AND +g.author IN (SELECT author FROM temp.rk_by) ORDER BY g.target, g.author"
    )
    out: dict[bytes, list[bytes]] = {}
    for target, author in rows:
        out.setdefault(bytes(target), []).append(bytes(author))
    return out


def blocks_by(store: Store, blockers: Iterable[bytes]) -> dict[bytes, list[bytes]]:
    """``{blocked feed: [who among blockers blocks it]}`` (active blocks only)."""
    _fill(store, "rk_by", ((a,) for a in blockers))
    rows = store.read(
        "SELECT g.target, g.author FROM temp.rk_by b "
        "CROSS JOIN graph g ON g.author = b.author AND g.kind = 'block' AND g.active = 1 ORDER BY g.target, g.author"
    )
    out: dict[bytes, list[bytes]] = {}
    for target, author in rows:
        out.setdefault(bytes(target), []).append(bytes(author))
    return out


def entry_authors(store: Store, hashes: Iterable[bytes]) -> dict[bytes, bytes]:
    """``{entry hash: author}`` for the stored ones among ``hashes`` (the authors of reposted entries)."""
    _fill(store, "rk_hashes", ((h,) for h in hashes))
    rows = store.read("SELECT e.hash, e.author FROM temp.rk_hashes h CROSS JOIN entries e ON e.hash = h.hash")
    return {bytes(h): bytes(a) for h, a in rows}


def rank_times(store: Store, hashes: Iterable[bytes]) -> dict[bytes, tuple[int, int, int]]:
    """``{entry hash: (ts, received, ranked time)}`` for the stored ones among ``hashes``."""
    _fill(store, "rk_hashes", ((h,) for h in hashes))
    rows = store.read(
        f"SELECT e.hash, e.ts, e.received, {_RANK} FROM temp.rk_hashes h CROSS JOIN entries e ON e.hash = h.hash"
    )
    return {bytes(h): (int(t), int(r), int(k)) for h, t, r, k in rows}
