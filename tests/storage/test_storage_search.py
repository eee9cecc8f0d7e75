"""Search (storage/search.py): plain words, FTS5 syntax, profiles, and schema migration 8."""

from __future__ import annotations

import sqlite3

import pytest
from tidings.protocol import Post, Profile, SigningKey, entry_id_text, feed_id_text
from tidings.storage import schema
from tidings.storage.errors import CorruptStore, StoreError
from tidings.storage.search import plain_query
from tidings.storage.store import Store

from tests.support.entries import chain, raw

ME = SigningKey(bytes([1]) * 32)
ALICE = SigningKey(bytes([2]) * 32)
BOB = SigningKey(bytes([3]) * 32)


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "s.db") as s:
        yield s


def ids(rows):
    return [r["id"] for r in rows]


def test_plain_words_are_quoted_so_punctuation_is_never_syntax():
    assert plain_query("don't e-mail") == '"don\'t" "e-mail"'
    assert plain_query('say "hi"') == '"say" """hi"""'
    assert plain_query("garden* *") == '"garden"* "*"'
    assert plain_query("c++ OR NOT near(") == '"c++" "OR" "NOT" "near("'


@pytest.mark.parametrize(
    "query", ["don't", "e-mail", "c++", "#tag", "5:30", "DON'T PANIC", "pani*", '"panic']
)
def test_plain_words_find_the_post(store, query):
    post = store.append(ME, Post(text="don't panic: e-mail c++ folks at 5:30 #tag"))
    store.append(ME, Post(text="something else entirely"))
    assert ids(store.search(query)) == [entry_id_text(post.hash)]


def test_every_plain_word_must_appear_and_punctuation_alone_finds_nothing(store):
    store.append(ME, Post(text="red apples"))
    both = store.append(ME, Post(text="red and green apples"))
    assert ids(store.search("green red")) == [entry_id_text(both.hash)]
    assert store.search("!!!") == [] and store.search("OR") == []


def test_fts_syntax_on_request_and_its_errors(store):
    a = store.append(ME, Post(text="red apples"))
    b = store.append(ME, Post(text="green pears"))
    assert set(ids(store.search("apples OR pears", fts=True))) == {
        entry_id_text(a.hash),
        entry_id_text(b.hash),
    }
    assert ids(store.search("text:pears", fts=True)) == [entry_id_text(b.hash)]  # a column of posts only
    for bad in ('"unbalanced', "e-mail", "AND"):
        with pytest.raises(StoreError) as info:
            store.search(bad, fts=True)
        assert info.value.code == "bad_query" and "FTS5 syntax" in info.value.message


def test_profiles_are_found_by_name_and_bio_and_come_first(store):
    store.append(ME, Profile(name="alice", bio="writes about gardens"))
    post = store.append(ME, Post(text="my gardens in spring"))
    found = store.search("gardens")
    assert [r["type"] for r in found] == ["profile", "post"] and found[1]["id"] == entry_id_text(post.hash)
    hit = found[0]
    assert hit["profile"] == {
        "feed": feed_id_text(ME.public_key),
        "name": "alice",
        "bio": "writes about gardens",
    }
    assert (hit["feed"], hit["seq"]) == (feed_id_text(ME.public_key), 1)  # the newest profile entry
    assert {"id", "feed", "seq", "ts", "type", "content"} <= set(hit)
    assert [r["type"] for r in store.search("alice")] == ["profile"]
    assert [r["type"] for r in store.search("gardens", limit=1)] == ["profile"]
    assert [r["type"] for r in store.search("bio:gardens", fts=True)] == ["profile"]  # profiles' columns


def test_a_changed_profile_is_found_as_it_stands(store):
    store.append(ME, Profile(name="alice", bio="writes about gardens"))
    newest = store.append(ME, Profile(bio="now keeps bees"))
    assert store.search("gardens") == []
    hit = store.search("bees")[0]
    assert hit["profile"]["name"] == "alice" and hit["id"] == entry_id_text(newest.hash)
    assert store.search("alice")[0]["profile"]["bio"] == "now keeps bees"  # the name came from seq 1


def test_profiles_arriving_out_of_order_index_the_newest(store):
    log = chain(ALICE, [Profile(name="ann", bio="old bio"), Profile(bio="new bio")])
    store.ingest(raw(log[1:]))
    store.ingest(raw(log[:1]))  # the older entry last: the bio of seq 2 stays
    assert store.search("old") == []
    assert store.search("new")[0]["profile"] == {
        "feed": feed_id_text(ALICE.public_key),
        "name": "ann",
        "bio": "new bio",
    }
    other = chain(BOB, [Profile(name="bob", bio="new too")])
    store.ingest(raw(other))
    assert {r["feed"] for r in store.search("new")} == {feed_id_text(k.public_key) for k in (ALICE, BOB)}
    store.run(
        lambda cur: cur.execute("INSERT INTO profiles_fts (profiles_fts, rank) VALUES ('integrity-check', 1)")
    )


def test_migration_8_indexes_the_profiles_already_stored(tmp_path):
    path = tmp_path / "old.db"
    with Store(path) as s:  # written at the current version, then taken back to 7 as it was
        s.ingest(raw(chain(ALICE, [Post(text="hello"), Profile(name="ann", bio="keeps bees")])))
        s.ingest(raw(chain(BOB, [Profile(name="bob")])))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TABLE profiles_fts")
    conn.execute("DROP INDEX profiles_fts_row")
    conn.execute("ALTER TABLE profiles DROP COLUMN fts_row")
    conn.execute("PRAGMA user_version = 7")
    conn.close()
    with Store(path) as s:
        assert s.read("PRAGMA user_version")[0][0] == schema.SCHEMA_VERSION == 12
        assert s.search("bees")[0]["profile"]["name"] == "ann"
        assert s.search("bob")[0]["feed"] == feed_id_text(BOB.public_key)
        s.ingest(raw(chain(ME, [Profile(name="me", bio="keeps bees too")])))
        assert len(s.search("bees")) == 2
        rows = s.read("SELECT fts_row FROM profiles")
        assert len({r[0] for r in rows}) == 3  # one row of the index per feed


def test_an_empty_store_file_is_refused_not_rebuilt(tmp_path):
    path = tmp_path / "s.db"
    path.write_bytes(b"")
    with pytest.raises(CorruptStore) as info:
        Store(path, create=False)
    assert info.value.message == "the store file is empty (0 bytes): its data is gone"
    assert path.stat().st_size == 0  # untouched: no empty schema written into it
