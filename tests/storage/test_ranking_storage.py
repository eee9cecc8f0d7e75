"""The ranking queries walk indexes: their query plans never scan a big table or sort (storage/ranking.py)."""

from __future__ import annotations

import pytest
from tidings.protocol import Follow, Post, Reaction, SigningKey
from tidings.storage import ranking as q
from tidings.storage.store import Store

KEYS = [SigningKey(bytes([i]) * 32) for i in range(1, 6)]


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "store.db") as s:
        for k in KEYS[1:]:
            s.append(KEYS[0], Follow(feed=k.public_key), now=1000)
        for i, k in enumerate(KEYS):
            s.append(k, Post(text=f"post {i}"), now=2000 + i)
        s.conn.execute("ANALYZE")  # as after real use: the planner knows the tables are big
        yield s


def plan(store: Store, sql: str, params=()) -> str:
    return "\n".join(row[3] for row in store.read("EXPLAIN QUERY PLAN " + sql, params))


def test_candidate_query_walks_the_ranked_time_index_without_sorting(store):
    q.set_authors(store, [k.public_key for k in KEYS])
    text = plan(store, q.CANDIDATE_SQL, {"since": 0, "ts": 10**12, "id": 0, "n": 10})
    assert "USING INDEX entries_rank" in text  # the index of min(ts, received + skew), ranking.md §1.1
    assert "TEMP B-TREE" not in text
    assert "SCAN e\n" not in text + "\n"
    rows = q.candidate_page(store, before=None, since=0, n=3)
    assert [r[4] for r in rows] == [2004, 2003, 2002]
    assert [r[9] for r in rows] == [2004, 2003, 2002]  # own entries, received when written: not clamped
    rows = q.candidate_page(store, before=(rows[-1][9], rows[-1][0]), since=2001, n=3)
    assert [r[4] for r in rows] == [2001]


def test_engagement_and_graph_queries_probe_indexes(store, monkeypatch):
    seen: list[str] = []
    real = store.read

    def spy(sql, params=()):
        if sql.lstrip().startswith("SELECT"):
            seen.append(plan(store, sql, params))
        return real(sql, params)

    monkeypatch.setattr(store, "read", spy)
    target = store.log(KEYS[1].public_key)[0]
    from tidings.protocol import EntryId

    h = EntryId.parse(target["id"]).hash
    store.append(KEYS[2], Reaction(target=h, emoji="+1"), now=3000)
    counts = q.engagement_counts(store, {h: KEYS[1].public_key}, [k.public_key for k in KEYS])
    assert counts == {h: (1, 0, 0)}
    assert q.vouches(store, [KEYS[0].public_key]) == {k.public_key: 1 for k in KEYS[1:]}
    assert q.vouchers(store, [KEYS[0].public_key], [KEYS[1].public_key]) == {
        KEYS[1].public_key: [KEYS[0].public_key]
    }
    assert q.blocks_by(store, [KEYS[0].public_key]) == {}
    assert q.entry_authors(store, [h]) == {h: KEYS[1].public_key}
    assert len(seen) == 1 + 3 + 4  # the log read, then ours
    for text in seen:
        for table in ("reactions", "posts", "reposts", "graph", "entries"):
            assert f"SCAN {table}" not in text, text
            assert f"SCAN {table[0]}\n" not in text + "\n", text
        assert "AND author=?)" not in text, text  # no probe per (row, follow) pair
