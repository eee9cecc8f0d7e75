"""Store basics: schema and migrations, appending our own log, projections and the reading queries."""

from __future__ import annotations

import sqlite3

import pytest
from tidings.protocol import (
    Block,
    Delete,
    Entry,
    Follow,
    LocalProtocolError,
    Post,
    Profile,
    Reaction,
    Repost,
    SigningKey,
    Unblock,
    Unfollow,
    Unknown,
    create_entry,
    encode_content,
    entry_id_text,
    feed_id_text,
    skip_target,
    verify_entry,
)
from tidings.storage.errors import AmbiguousId, CorruptStore, FeedForked, NotFound, StoreError
from tidings.storage.integrity import verify_store
from tidings.storage.schema import SCHEMA_VERSION
from tidings.storage.store import Store
from tidings.storage.writer import ROWS_PER_INSERT, insert_rows

from tests.support.entries import chain, raw

ME = SigningKey(bytes([1]) * 32)
ALICE = SigningKey(bytes([2]) * 32)
BOB = SigningKey(bytes([3]) * 32)
CAROL = SigningKey(bytes([4]) * 32)
DAVE = SigningKey(bytes([5]) * 32)


# -- schema --------------------------------------------------------------------------------------------
def test_fresh_store_is_at_schema_version_in_wal_mode(tmp_path):
    with Store(tmp_path / "s.db") as s:
        assert s.read("PRAGMA user_version")[0][0] == SCHEMA_VERSION
        assert s.read("PRAGMA journal_mode")[0][0] == "wal"
        tables = {r[0] for r in s.read("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"entries", "feeds", "forks", "posts", "graph", "profiles", "tombstones"} <= tables


def test_store_newer_than_code_is_refused(tmp_path):
    path = tmp_path / "s.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(CorruptStore) as info:
        Store(path)
    assert info.value.code == "store_too_new"


def test_version_1_store_is_migrated_and_keeps_its_data(tmp_path):
    """A store written by schema 1 (profiles without per-field seqs, tombstones keyed by target)."""
    from tidings.storage import schema

    path = tmp_path / "s.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in schema._MIGRATIONS[0].split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO profiles (feed, name, bio, seq) VALUES (?, 'ann', NULL, 3)", (ALICE.public_key,)
    )
    conn.execute("INSERT INTO tombstones VALUES (?, ?, ?)", (b"t" * 32, ALICE.public_key, b"e" * 32))
    conn.close()
    with Store(path) as s:
        assert s.read("PRAGMA user_version")[0][0] == SCHEMA_VERSION
        assert s.profile(ALICE.public_key)["name"] == "ann"
        assert s.read("SELECT name_seq, bio_seq FROM profiles") == [(3, 0)]
        assert s.read("SELECT count(*) FROM tombstones")[0][0] == 1


def test_reopen_keeps_data_and_missing_store_is_refused_without_create(tmp_path):
    with Store(tmp_path / "s.db") as s:
        s.append(ME, Post(text="hi"))
    with Store(tmp_path / "s.db", create=False) as s:
        assert s.feed_info(ME.public_key)["head"] == 1
    with pytest.raises(StoreError) as info:
        Store(tmp_path / "nope.db", create=False)
    assert info.value.code == "no_store"


# -- appending our own log -----------------------------------------------------------------------------
def stored_entries(s, author):
    rows = s.read("SELECT raw, payload FROM entries WHERE author = ? ORDER BY seq", (author,))
    return [(Entry.decode(bytes(r)), None if p is None else bytes(p)) for r, p in rows]


def test_append_chains_seq_backlink_and_skip_links(store):
    made = [store.append(ME, Post(text=f"post {i}"), now=1_000 + i) for i in range(40)]
    got = stored_entries(store, ME.public_key)
    assert [e.hash for e, _ in got] == [e.hash for e in made]
    by_seq = {e.seq: e for e, _ in got}
    assert sorted(by_seq) == list(range(1, 41))
    for entry, payload in got:
        target = skip_target(entry.seq)
        # raises on any broken link, signature or payload
        verify_entry(
            entry,
            previous=by_seq.get(entry.seq - 1),
            skip=by_seq[target] if target else None,
            payload=payload,
        )
        assert (entry.backlink is None) == (entry.seq == 1)
        assert (entry.skiplink is None) == (target is None)
    assert store.feed_info(ME.public_key) == {
        "feed": feed_id_text(ME.public_key),
        "head": 40,
        "entries": 40,
        "forked": False,
        "kind": "own",
    }


def test_timestamps_stay_monotonic_when_the_clock_goes_back(store):
    a = store.append(ME, Post(text="one"), now=5_000)
    b = store.append(ME, Post(text="two"), now=1_000)
    c = store.append_many(ME, [Post(text="three")], now=2_000)[0]
    d = store.append(ME, Post(text="four"), now=9_000)
    assert [a.timestamp, b.timestamp, c.timestamp, d.timestamp] == [5_000, 5_000, 5_000, 9_000]
    assert verify_store(store)["ok"]


def test_append_many_is_all_or_nothing(store):
    store.append(ME, Post(text="before"))
    # the third content cannot be encoded (floats are outside the format): nothing of the batch is kept
    bad = Unknown(kind="x-test", extra={"value": 1.5})
    with pytest.raises(LocalProtocolError):
        store.append_many(ME, [Post(text="a"), Post(text="b"), bad])
    assert store.feed_info(ME.public_key)["head"] == 1
    assert store.read("SELECT count(*) FROM entries")[0][0] == 1
    assert store.search("a OR b") == []
    made = store.append_many(ME, [Post(text="a"), Post(text="b")])
    assert [e.seq for e in made] == [2, 3]


def test_append_to_a_forked_own_feed_is_refused(store):
    first = store.append(ME, Post(text="one"), now=1)
    other = create_entry(
        ME, seq=1, backlink=None, skiplink=None, timestamp=2, payload=encode_content(Post(text="evil"))
    )
    result = store.ingest([(other.raw, None)])
    assert [r.code for r in result.rejected] == ["fork"]
    assert result.forks[0].seq == 1 and {result.forks[0].first.hash, result.forks[0].second.hash} == {
        first.hash,
        other.hash,
    }
    with pytest.raises(FeedForked):
        store.append(ME, Post(text="two"))


# -- projections ---------------------------------------------------------------------------------------
def test_posts_reactions_reposts_are_projected(store):
    post = store.append(ME, Post(text="hello world", tags=("greeting",), lang="en"))
    reply = store.append(ME, Post(text="reply", reply=post.hash, root=post.hash))
    reaction = store.append(ME, Reaction(target=post.hash, emoji="+1"))
    repost = store.append(ME, Repost(target=reply.hash))
    assert store.entry(post.hash)["content"] == {
        "type": "post",
        "text": "hello world",
        "tags": ["greeting"],
        "lang": "en",
    }
    assert store.entry(reaction.hash)["type"] == "reaction"
    assert store.read("SELECT target, emoji FROM reactions") == [(post.hash, "+1")]
    assert store.read("SELECT target FROM reposts") == [(reply.hash,)]
    assert store.read("SELECT text, reply, root FROM posts ORDER BY entry") == [
        ("hello world", None, None),
        ("reply", post.hash, post.hash),
    ]
    assert store.entry(repost.hash)["content"]["target"] == entry_id_text(reply.hash)


def test_follow_state_is_the_highest_seq_whatever_the_arrival_order(store):
    a, b = BOB.public_key, CAROL.public_key
    feed = chain(ALICE, [Follow(feed=a), Follow(feed=b), Unfollow(feed=a), Unfollow(feed=b), Follow(feed=b)])
    for i in (4, 2, 0, 3, 1):
        store.ingest(raw([feed[i]]))
    assert store.graph_targets(ALICE.public_key, "follow") == [b]
    assert [f["feed"] for f in store.following(ALICE.public_key)] == [feed_id_text(b)]


def test_blocks_and_unblocks(store):
    feed = chain(
        ALICE, [Block(feed=BOB.public_key), Block(feed=CAROL.public_key), Unblock(feed=BOB.public_key)]
    )
    store.ingest(raw(feed[::-1]))
    assert store.graph_targets(ALICE.public_key, "block") == [CAROL.public_key]


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
def test_profile_fields_keep_the_value_of_the_highest_seq_that_set_them(store, order):
    feed = chain(ALICE, [Profile(name="ann", bio="first bio"), Profile(name="anna"), Profile(bio="")])
    for i in order:
        store.ingest(raw([feed[i]]))
    assert store.profile(ALICE.public_key) == {
        "feed": feed_id_text(ALICE.public_key),
        "name": "anna",
        "bio": "",
    }
    assert store.names({ALICE.public_key, BOB.public_key}) == {ALICE.public_key: "anna"}


def test_unknown_and_undecodable_payloads_are_stored_but_not_projected(store):
    weird = Unknown(kind="x-poll", extra={"question": "?"})
    feed = chain(ALICE, [weird, Post(text="fine")])
    result = store.ingest(raw(feed))
    assert len(result.added) == 2 and not result.rejected
    info = store.entry(feed[0][0].hash)
    assert info["type"] == "x-poll"
    assert store.read("SELECT count(*) FROM posts")[0][0] == 1


# -- reading -------------------------------------------------------------------------------------------
def test_search_finds_posts_and_forgets_deleted_ones(store):
    keep = store.append(ME, Post(text="the quick brown fox"))
    gone = store.append(ME, Post(text="the lazy brown dog"))
    assert {r["id"] for r in store.search("brown")} == {entry_id_text(keep.hash), entry_id_text(gone.hash)}
    store.append(ME, Delete(target=gone.hash))
    assert [r["id"] for r in store.search("brown")] == [entry_id_text(keep.hash)]
    assert store.search("dog") == []
    assert store.entry(gone.hash)["deleted"] is True
    assert store.entry(gone.hash)["content"] is None
    assert verify_store(store)["ok"]
    with pytest.raises(StoreError) as info:
        store.search('"unbalanced', fts=True)  # as plain words it is a word (test_storage_search.py)
    assert info.value.code == "bad_query"


def test_resolve_entry_full_prefix_ambiguous_unknown(store):
    entry = store.append(ME, Post(text="x"))
    text = entry_id_text(entry.hash)
    assert store.resolve_entry(text) == entry.hash
    assert store.resolve_entry(text[1:]) == entry.hash
    assert store.resolve_entry(text[:5]) == entry.hash
    assert store.resolve_entry(text[:12]) == entry.hash
    # a second row whose hash shares the first 3 bytes (24 bits > the 20 bits of 4 base32 chars)
    twin = entry.hash[:3] + bytes(b ^ 0xFF for b in entry.hash[3:])
    store.run(
        lambda cur: cur.execute(
            "INSERT INTO entries (hash, author, seq, ts, raw, received) VALUES (?, ?, 1, 0, x'00', 0)",
            (twin, BOB.public_key),
        )
    )
    with pytest.raises(AmbiguousId):
        store.resolve_entry(text[:5])
    assert store.resolve_entry(text[:20]) == entry.hash
    assert store.resolve_entry(entry_id_text(twin)[:20]) == twin
    unknown = bytes(b ^ 0x55 for b in entry.hash)
    # a full id names an entry whether or not it is stored here (one may reply to what one lacks)
    assert store.resolve_entry(entry_id_text(unknown)) == unknown
    with pytest.raises(NotFound):
        store.resolve_entry(entry_id_text(unknown)[:10])
    for bad in ("%ab", "%ABCD", "%ab1!", ""):
        with pytest.raises(StoreError) as info:
            store.resolve_entry(bad)
        assert info.value.code == "bad_id"


def test_timeline_own_and_followed_minus_blocked_and_muted_newest_first(store):
    me = ME.public_key
    store.append_many(
        ME,
        [Follow(feed=ALICE.public_key), Follow(feed=BOB.public_key), Follow(feed=CAROL.public_key)],
        now=10,
    )
    store.append(ME, Block(feed=CAROL.public_key), now=11)
    mine = store.append(ME, Post(text="my own post"), now=5_000)
    alice = chain(
        ALICE,
        [Post(text="alice one"), Post(text="alice SPAM"), Post(text="alice two"), Repost(target=mine.hash)],
        ts0=6_000,
    )
    bob = chain(BOB, [Post(text="bob muted")], ts0=7_000)
    carol = chain(CAROL, [Post(text="carol blocked")], ts0=8_000)
    dave = chain(DAVE, [Post(text="dave not followed")], ts0=9_000)
    store.ingest(raw(alice[:3]) + raw(bob) + raw(carol) + raw(dave))
    store.ingest(raw(alice[3:]))
    store.mute("feed", feed_id_text(BOB.public_key))
    store.mute("word", "spam")
    items = store.timeline(me, limit=10)
    assert [(i["feed"], i["seq"]) for i in items] == [
        (feed_id_text(ALICE.public_key), 4),
        (feed_id_text(ALICE.public_key), 3),
        (feed_id_text(ALICE.public_key), 1),
        (feed_id_text(me), 5),
    ]
    assert items[0]["type"] == "repost"
    ts = [i["ts"] for i in items]
    assert ts == sorted(ts, reverse=True)
    assert store.timeline(me, limit=2, before=ts[1])[0]["ts"] == ts[2]
    store.unmute("word", "spam")
    assert len(store.timeline(me, limit=10)) == 5


def test_thread_is_root_then_replies_in_time_order(store):
    root = chain(ALICE, [Post(text="root")], ts0=100)
    store.ingest(raw(root))
    r = root[0][0].hash
    reply_bob = chain(BOB, [Post(text="bob replies", reply=r, root=r)], ts0=200)
    store.ingest(raw(reply_bob))
    mine = store.append(ME, Post(text="me too", reply=reply_bob[0][0].hash, root=r), now=300)
    store.append(ME, Post(text="unrelated"), now=400)
    expected = [entry_id_text(h) for h in (r, reply_bob[0][0].hash, mine.hash)]
    for start in (r, reply_bob[0][0].hash, mine.hash):
        assert [item["id"] for item in store.thread(start)] == expected
    with pytest.raises(NotFound):
        store.thread(b"\x00" * 32)


def fts_consistent(store):
    """FTS5's own check that the index matches the posts table exactly (after catching up)."""
    store.update_search_index()
    store.run(
        lambda cur: cur.execute("INSERT INTO posts_fts (posts_fts, rank) VALUES ('integrity-check', 1)")
    )
    return True


def test_the_search_index_catches_up_in_batches_and_stays_exact(store):
    from tidings.storage.projections import FTS_BATCH

    late = chain(ALICE, [Post(text="payload came late"), Post(text="alice pending")])
    store.ingest([(late[0][0].raw, None)])  # row 1, no payload yet
    kept = store.append(ME, Post(text="indexed early"))
    gone_indexed = store.append(ME, Post(text="indexed then deleted"))
    assert store.search("indexed")  # a search catches the index up first
    assert not store.search_index_behind()
    gone_pending = store.append(ME, Post(text="pending then deleted"))
    assert store.search_index_behind()  # single appends leave the index behind ...
    store.append_many(ME, [Delete(target=gone_indexed.hash), Delete(target=gone_pending.hash)])
    store.ingest(raw(late))  # fills row 1 (below the watermark) and adds seq 2 (above it)
    assert {r["id"] for r in store.search("indexed OR pending OR late", fts=True)} == {
        entry_id_text(h) for h in (kept.hash, late[0][0].hash, late[1][0].hash)
    }
    assert fts_consistent(store)
    # ... and a batch of FTS_BATCH entries brings it up to date in the same transaction
    store.append_many(ME, [Post(text=f"bulk {i}") for i in range(FTS_BATCH)])
    assert not store.search_index_behind()
    assert len(store.search("bulk", limit=FTS_BATCH + 10)) == FTS_BATCH
    assert fts_consistent(store)


@pytest.mark.parametrize(
    "count", [0, 1, ROWS_PER_INSERT - 1, ROWS_PER_INSERT, ROWS_PER_INSERT + 1, 3 * ROWS_PER_INSERT + 7]
)
def test_multi_row_inserts_write_every_row_once_in_order(count: int) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b BLOB, c TEXT)")
    rows: list[tuple[object, ...]] = [
        (i, bytes([i % 256]) * 3, None if i % 7 else f"r{i}") for i in range(count)
    ]
    insert_rows(conn.cursor(), "INSERT INTO t (a, b, c)", rows)
    assert conn.execute("SELECT a, b, c FROM t ORDER BY a").fetchall() == rows


def test_multi_row_inserts_stay_under_the_parameter_limit() -> None:
    conn = sqlite3.connect(":memory:")
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)  # as older SQLite builds have it
    columns = [f"c{i}" for i in range(200)]  # 200 x 250 = 50,000 parameters would be refused
    conn.execute(f"CREATE TABLE w ({', '.join(columns)})")
    rows: list[tuple[object, ...]] = [tuple(range(200)) for _ in range(400)]
    insert_rows(conn.cursor(), f"INSERT INTO w ({', '.join(columns)})", rows)
    assert conn.execute("SELECT count(*), sum(c199) FROM w").fetchone() == (400, 400 * 199)


def test_multi_row_inserts_use_few_distinct_statements() -> None:
    # every distinct statement stays in the connection's cache (~220 KB for 250 rows of entries)
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b BLOB)")
    sizes: set[int] = set()

    class Recording:
        connection = conn

        def execute(self, sql: str, params: list[object]) -> sqlite3.Cursor:
            sizes.add(sql.count("(?"))
            return conn.execute(sql, params)

    start = 0
    for count in range(1, 700):
        insert_rows(Recording(), "INSERT INTO t (a, b)", [(start + i, b"x") for i in range(count)])  # type: ignore[arg-type]
        start += count
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == start
    assert sizes == {ROWS_PER_INSERT} | {1 << k for k in range(8)}
