"""Entries dated in the future are stored and verify, but rank as received (spec/ranking.md §1.1).

A real store, entries signed with the real protocol code and ingested as a peer's would be: an honest
feed, and feeds whose clocks say 2^53 − 1 ms, one hour ahead, and two minutes ahead (within the
skew). The clock the store stamps arrivals with (``storage.writer.wall_ms``) is set per ingest, so
an arrival an hour ago needs no hour of waiting.
"""

from __future__ import annotations

import sqlite3

import pytest
from tidings.node.ranking.timeline import rank_timeline, swarm_timeline
from tidings.protocol import (
    Content,
    Entry,
    Follow,
    Post,
    SigningKey,
    create_entry,
    encode_content,
    skip_target,
)
from tidings.storage import schema, writer
from tidings.storage.clock import wall_ms
from tidings.storage.integrity import verify_store
from tidings.storage.store import Store

MIN = 60_000
H = 60 * MIN
FAR = 2**53 - 1  # the largest timestamp an entry may carry (spec/protocol.md §4.2)
ME, HONEST, FAR_OFF, HOUR_AHEAD, SLIGHTLY = (SigningKey(bytes([i]) * 32) for i in range(21, 26))
RANKERS = ("chronological", "engagement", "trust", "swarm")


def signed(key: SigningKey, items: list[tuple[int, Content]]) -> list[tuple[bytes, bytes]]:
    """``(raw, payload)`` of ``key``'s entries seq 1.. with the given timestamps, as a peer sends them."""
    out: list[tuple[Entry, bytes]] = []
    for ts, content in items:
        seq = len(out) + 1
        payload = encode_content(content)
        target = skip_target(seq)
        entry = create_entry(
            key,
            seq=seq,
            backlink=out[-1][0].hash if out else None,
            skiplink=out[target - 1][0].hash if target else None,
            timestamp=ts,
            payload=payload,
        )
        out.append((entry, payload))
    return [(e.raw, p) for e, p in out]


def arrive(store: Store, monkeypatch, at: int, items: list[tuple[bytes, bytes]]) -> None:
    """Ingest ``items`` as if they reached the store at ``at`` (ms)."""
    monkeypatch.setattr(writer, "wall_ms", lambda: at)
    result = store.ingest(items)
    monkeypatch.setattr(writer, "wall_ms", wall_ms)
    assert not result.rejected and len(result.added) == len(items)


@pytest.fixture
def world(tmp_path, monkeypatch):
    """You follow four feeds. An hour ago the three fast clocks' posts arrived; the honest feed's
    posts, two hours to one minute old, arrived just now."""
    now = wall_ms()
    ago = now - H
    with Store(tmp_path / "store.db") as store:
        store.set_meta("self", ME.public_key)
        for key in (HONEST, FAR_OFF, HOUR_AHEAD, SLIGHTLY):
            store.append(ME, Follow(feed=key.public_key), now=now - 3 * H)
        arrive(store, monkeypatch, ago, signed(FAR_OFF, [(FAR, Post(text="forever on top"))]))
        arrive(store, monkeypatch, ago, signed(HOUR_AHEAD, [(ago + H, Post(text="an hour early"))]))
        arrive(store, monkeypatch, ago, signed(SLIGHTLY, [(ago + 2 * MIN, Post(text="two minutes fast"))]))
        honest = signed(
            HONEST,
            [
                (now - 2 * H, Post(text="old")),
                (now - 30 * MIN, Post(text="news")),
                (now - MIN, Post(text="now")),
            ],
        )
        arrive(store, monkeypatch, now, honest)
        yield store, now


def texts(items) -> list[str]:
    return [(i["content"] or {}).get("text") for i in items]


def timeline(store: Store, now: int, ranker: str, **kw):
    members = {HONEST.public_key, FAR_OFF.public_key, HOUR_AHEAD.public_key, SLIGHTLY.public_key}
    return rank_timeline(store, ME.public_key, ranker=ranker, now=now, swarm_members=members, **kw)


def test_future_entries_are_stored_and_verify(world):
    store, _now = world
    stamps = {bytes(a): t for a, t in store.read("SELECT author, ts FROM entries")}
    assert stamps[FAR_OFF.public_key] == FAR  # stored with the author's timestamp, unchanged
    report = verify_store(store)  # what `tidings verify` runs
    assert report["ok"] and report["entries"] == 10


@pytest.mark.parametrize("ranker", RANKERS)
def test_no_ranker_lets_a_future_entry_outrank_the_present(world, ranker):
    store, now = world
    items = timeline(store, now, ranker)
    order = texts(items)
    assert set(order) == {"forever on top", "an hour early", "two minutes fast", "old", "news", "now"}
    # the honest posts of the last hour come first: the fast clocks arrived an hour ago
    assert order[:2] == ["now", "news"], order
    if ranker == "chronological":
        # each ranks as it arrived (+ 5 min of skew; equal scores: by entry id), the one within the
        # skew at its own timestamp
        assert set(order[2:4]) == {"forever on top", "an hour early"}
        assert order[4:] == ["two minutes fast", "old"]
        scores = {(i["content"] or {}).get("text"): i["score"] for i in items}
        assert scores["forever on top"] == scores["an hour early"] == now - H + schema.FUTURE_SKEW_MS
        assert scores["two minutes fast"] == now - H + 2 * MIN
    # the JSON keeps the author's timestamp (spec/cli.md)
    assert {i["ts"] for i in items if texts([i]) == ["forever on top"]} == {FAR}


@pytest.mark.parametrize("ranker", RANKERS)
def test_explain_says_when_an_entry_is_dated_in_the_future(world, ranker):
    store, now = world
    why = {texts([i])[0]: " | ".join(i["why"]) for i in timeline(store, now, ranker, explain=True)}
    for text in ("forever on top", "an hour early"):
        assert "dated in the future: ranked as received at" in why[text], why[text]
        assert "plus 5 min allowed clock skew" in why[text]
    assert f"not at its timestamp {FAR} (after 9999-12-31," in why["forever on top"]
    assert "1.0 h after it arrived" in why["an hour early"]
    for text in ("two minutes fast", "now", "news", "old"):
        assert "dated in the future" not in why[text], why[text]
    if ranker == "chronological":
        assert "score = received time + skew" in why["forever on top"]
        assert f"score = timestamp {now - MIN} " in why["now"]


def test_an_hour_later_the_clamped_entries_are_an_hour_old(world):
    store, now = world
    items = timeline(store, now, "engagement", explain=True)
    why = {texts([i])[0]: i["why"] for i in items}
    # ranked time = arrival + 5 min, 55 min ago: an age, not a brand new entry
    assert "age 0.9 h" in why["forever on top"][1]
    assert "age 0.0 h" in why["now"][1]


def test_plain_chronological_timeline_thread_and_swarm_order_by_ranked_time(world, monkeypatch):
    store, now = world
    assert texts(store.timeline(ME.public_key, limit=10))[:2] == ["now", "news"]
    paged = store.timeline(ME.public_key, limit=2)
    paged += store.timeline(ME.public_key, limit=10, before=now - 30 * MIN)
    assert texts(paged)[:2] == ["now", "news"]
    assert set(texts(paged)[2:4]) == {"forever on top", "an hour early"}
    assert texts(paged)[4:] == ["two minutes fast", "old"]
    # a reply dated in the future sorts where it arrived in its thread, not below every later reply
    root = store.read("SELECT hash FROM entries WHERE author = ? AND seq = 1", (HONEST.public_key,))[0][0]
    root = bytes(root)
    reply_far = signed(
        SigningKey(b"\x30" * 32), [(FAR, Post(text="first reply, from the future", reply=root, root=root))]
    )
    arrive(store, monkeypatch, now - 20 * MIN, reply_far)
    reply_now = signed(
        SigningKey(b"\x31" * 32), [(now - MIN, Post(text="second reply", reply=root, root=root))]
    )
    arrive(store, monkeypatch, now, reply_now)
    thread = [(i["content"] or {}).get("text") for i in store.thread(root)]
    assert thread == ["old", "first reply, from the future", "second reply"]
    # the swarm's chronological timeline (store.timeline): score is the ranked time, and says why
    store.run(
        lambda cur: cur.executemany(
            "INSERT INTO swarm_members (swarm, member, last_seen) VALUES ('s', ?, 0)",
            [(k.public_key,) for k in (HONEST, FAR_OFF)],
        )
    )
    items = swarm_timeline(store, ME.public_key, "s", 10)
    assert texts(items) == ["now", "news", "forever on top", "old"]
    far = items[2]
    assert far["ts"] == FAR and far["score"] == now - H + schema.FUTURE_SKEW_MS
    assert any("dated in the future" in w for w in far["why"])


def test_own_entries_rank_at_their_timestamp_when_the_clock_was_right(tmp_path):
    """Your own entries are received when written: never clamped below their timestamp, unless an
    earlier entry's timestamp was in the future (timestamps never go back, spec/protocol.md §5.3)."""
    with Store(tmp_path / "store.db") as store:
        store.set_meta("self", ME.public_key)
        t = 1_800_000_000_000
        store.append(ME, Post(text="mine"), now=t)
        assert store.read(f"SELECT ts, {schema.rank_ts()} FROM entries")[0] == (t, t)
        store.append(ME, Post(text="clock jumped ahead"), now=t + 10 * H)
        store.append(ME, Post(text="clock set right again"), now=t + H)  # stamped t + 10 h: monotonic
        items = rank_timeline(store, ME.public_key, now=t + 2 * H, explain=True)
        assert texts(items) == ["clock jumped ahead", "clock set right again", "mine"]
        assert items[1]["ts"] == t + 10 * H and items[1]["score"] == t + H + schema.FUTURE_SKEW_MS
        assert "dated in the future" in " ".join(items[1]["why"])
        assert not any("dated in the future" in " ".join(i["why"]) for i in (items[0], items[2]))


def test_migration_7_indexes_the_ranked_time_of_stored_rows(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for version in range(6):  # a store as the version before this one left it
        for statement in schema._MIGRATIONS[version].split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute("PRAGMA user_version = 6")
    conn.execute(
        "INSERT INTO entries (hash, author, seq, ts, type, raw, received) VALUES (?, ?, 1, ?, 'post', x'00', 5000)",
        (b"h" * 32, b"a" * 32, FAR),
    )
    conn.close()
    with Store(path) as store:
        assert store.read("PRAGMA user_version")[0][0] == schema.SCHEMA_VERSION
        names = {r[0] for r in store.read("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "entries_rank" in names and "entries_ts" not in names
        plan = store.read(
            f"EXPLAIN QUERY PLAN SELECT id FROM entries ORDER BY {schema.rank_ts()} DESC LIMIT 1"
        )
        assert "entries_rank" in plan[0][3]
        assert store.read(f"SELECT {schema.rank_ts()} FROM entries")[0][0] == 5000 + schema.FUTURE_SKEW_MS


async def test_future_entries_through_a_real_sync_rank_as_received(tmp_path):
    """Two real nodes on loopback: B's clock says an hour ahead, then 2^53 − 1. A stores B's entries
    as they are, they verify (``tidings verify``), and ten minutes later A's own post tops every
    ranker's timeline, B's future posts ranked as received (``tidings timeline --explain`` says so)."""
    import json
    import subprocess
    import sys

    import trio

    from tests.support.nodes import count, follow, make_home, post, start_node, wait_until

    ha, ka = make_home(tmp_path, "a")
    hb, kb = make_home(tmp_path, "b")
    follow(ha, ka, kb)
    start = wall_ms()
    post(hb, kb, "honest")
    with Store(hb.store_path) as s:
        s.append(kb, Post(text="an hour early"), now=start + H)
        s.append(kb, Post(text="forever on top"), now=FAR)
    async with trio.open_nursery() as nursery:
        b = await start_node(nursery, hb, kb)
        await start_node(nursery, ha, ka, peers=[b.address])
        await wait_until(lambda: count(ha, kb.public_key) == count(hb, kb.public_key) == 4)  # + profile
        nursery.cancel_scope.cancel()
    synced = wall_ms()
    later = synced + 10 * MIN
    with Store(ha.store_path) as s:
        row = s.read("SELECT ts, received FROM entries WHERE author = ? AND seq = 4", (kb.public_key,))[0]
        assert row[0] == FAR and start <= row[1] <= synced  # stored as signed, received on arrival
        s.append(ka, Post(text="ten minutes later"), now=later)
        for ranker in RANKERS:
            items = rank_timeline(
                s, ka.public_key, ranker=ranker, now=later, swarm_members={kb.public_key}, explain=True
            )
            assert texts(items)[0] == "ten minutes later", (ranker, texts(items))
            assert texts(items)[-1] == "honest"
            far = next(i for i in items if texts([i]) == ["forever on top"])
            assert far["ts"] == FAR and any("dated in the future" in w for w in far["why"])

    def tidings(*args: str) -> str:
        cmd = [sys.executable, "-m", "tidings.cli.main", "--home", str(ha.path), *args]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
        return out.stdout

    assert json.loads(tidings("verify", "--json"))["ok"] is True
    shown = [json.loads(line) for line in tidings("timeline", "--json", "--now", str(later)).splitlines()]
    assert shown[0]["content"]["text"] == "ten minutes later"
    assert FAR in {i["ts"] for i in shown}  # the JSON keeps the author's timestamp
    explained = tidings("timeline", "--explain", "--now", str(later))
    assert "dated in the future: ranked as received at" in explained
