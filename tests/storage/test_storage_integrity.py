"""Integrity: verify_store, export/import, atomic writes, a full disk and damaged files."""

from __future__ import annotations

import sqlite3

import pytest
from tidings.protocol import (
    Delete,
    Follow,
    Post,
    SigningKey,
    create_entry,
    encode,
    encode_content,
)
from tidings.storage import store as store_module
from tidings.storage import writer as writer_module
from tidings.storage.errors import CorruptStore, DiskFull, StoreError
from tidings.storage.integrity import ARCHIVE_MAGIC, export_archive, import_archive, verify_store
from tidings.storage.store import Store

from tests.support.entries import posts, raw

ME = SigningKey(bytes([1]) * 32)
ALICE = SigningKey(bytes([2]) * 32)
BOB = SigningKey(bytes([3]) * 32)


def chain(key, n, ts0=1_000_000):
    return posts(key, n, ts0, text="entry {i} of {feed}")


# -- verify_store --------------------------------------------------------------------------------------
def test_verify_store_is_ok_on_a_sound_store(store):
    store.append_many(ME, [Post(text=f"p{i}") for i in range(20)])
    store.ingest(raw(chain(ALICE, 15)))
    report = verify_store(store)
    assert report == {"feeds": 2, "entries": 35, "ok": True, "problems": [], "gaps": [], "forks": []}
    progress: list[int] = []
    assert verify_store(store, ALICE.public_key, progress=progress.append)["entries"] == 15
    assert progress == [15]


def test_verify_store_detects_a_tampered_raw_entry(store):
    store.ingest(raw(chain(ALICE, 10)))
    (raw5,) = store.read("SELECT raw FROM entries WHERE author = ? AND seq = 5", (ALICE.public_key,))[0]
    tampered = bytearray(raw5)
    tampered[-3] ^= 0x40
    store.run(
        lambda cur: cur.execute(
            "UPDATE entries SET raw = ? WHERE author = ? AND seq = 5", (bytes(tampered), ALICE.public_key)
        )
    )
    report = verify_store(store)
    assert not report["ok"]
    assert [(p["seq"], p["code"]) for p in report["problems"]] == [(5, "bad_signature"), (6, "bad_backlink")]


def test_verify_store_detects_a_tampered_payload_and_a_misfiled_row(store):
    store.ingest(raw(chain(ALICE, 4)))
    store.run(
        lambda cur: cur.execute(
            "UPDATE entries SET payload = x'82a474657874a3626164a474797065a4706f7374' WHERE seq = 2"
        )
    )
    store.run(lambda cur: cur.execute("UPDATE entries SET seq = 40 WHERE seq = 4"))
    report = verify_store(store)
    assert sorted((p["seq"], p["code"]) for p in report["problems"]) == [
        (2, "payload_size"),
        (40, "misfiled"),
    ]


def test_verify_store_reports_gaps_and_unknown_feeds(store):
    feed = chain(ALICE, 12)
    store.ingest(raw(feed[2:5] + feed[8:]))
    report = verify_store(store)
    assert report["ok"]
    name = store.feed_info(ALICE.public_key)["feed"]
    assert report["gaps"] == [{"feed": name, "from": 1, "to": 2}, {"feed": name, "from": 6, "to": 8}]
    with pytest.raises(StoreError) as info:
        verify_store(store, BOB.public_key)
    assert info.value.code == "not_found"


# -- export / import -----------------------------------------------------------------------------------
def test_export_import_round_trip(tmp_path, store):
    posts = store.append_many(ME, [Post(text=f"mine {i}") for i in range(5)])
    store.append(ME, Delete(target=posts[1].hash))
    alice = chain(ALICE, 8)
    store.ingest(raw(alice))
    rival = create_entry(
        ALICE,
        seq=3,
        backlink=alice[1][0].hash,
        skiplink=None,
        timestamp=alice[2][0].timestamp,
        payload=encode_content(Post(text="rival")),
    )
    assert store.ingest([(rival.raw, None)]).forks
    store.ingest(raw(chain(BOB, 30)[20:]))  # a partial feed
    path = tmp_path / "out.tidings"
    counts = export_archive(store, path)
    assert counts == {"entries": 24, "forks": 1}
    assert path.read_bytes().startswith(ARCHIVE_MAGIC)
    assert not (tmp_path / "out.tidings.partial").exists()

    with Store(tmp_path / "copy.db") as copy:
        result = import_archive(copy, path)
        assert result["added"] == 24 and result["forks"] == 1 and result["complete"]
        assert result["rejected"] == []
        query = "SELECT hash, raw, payload, deleted FROM entries ORDER BY hash"
        assert copy.read(query) == store.read(query)
        assert copy.read("SELECT proof FROM forks") == store.read("SELECT proof FROM forks")
        assert copy.feed_info(ALICE.public_key)["forked"]
        assert copy.search("mine") and len(copy.search("mine")) == 4
        report = verify_store(copy)
        assert report["ok"] and report["entries"] == 24
        again = import_archive(copy, path)
        assert again["added"] == 0 and again["duplicates"] == 24


def test_import_refuses_damaged_archives(tmp_path, store):
    store.ingest(raw(chain(ALICE, 5)))
    path = tmp_path / "a.tidings"
    export_archive(store, path)
    data = path.read_bytes()
    (tmp_path / "cut").write_bytes(data[:-40])
    with Store(tmp_path / "x.db") as other:
        result = import_archive(other, tmp_path / "cut")
        assert not result["complete"] and result["added"] == 4
    # unreadable bytes in the middle: everything before them is still imported, and the damage reported
    first_two = len(ARCHIVE_MAGIC) + sum(len(encode(["entry", r, p])) for r, p in raw(chain(ALICE, 2)))
    (tmp_path / "torn").write_bytes(data[:first_two] + b"\xc1" + data[first_two:])
    with Store(tmp_path / "w.db") as other:
        result = import_archive(other, tmp_path / "torn")
        assert result["added"] == 2 and not result["complete"]
        assert [r["code"] for r in result["rejected"]] == ["bad_archive"]
    (tmp_path / "junk").write_bytes(b"not an archive at all")
    with Store(tmp_path / "y.db") as other, pytest.raises(StoreError) as info:
        import_archive(other, tmp_path / "junk")
    assert info.value.code == "bad_archive"
    with Store(tmp_path / "z.db") as other, pytest.raises(StoreError) as info:
        import_archive(other, tmp_path / "missing")
    assert info.value.code == "io"


# -- atomicity -----------------------------------------------------------------------------------------
def head(store, author):
    return store.read("SELECT head_seq, head_hash, count FROM feeds WHERE author = ?", (author,))


def test_an_error_inside_the_transaction_leaves_no_half_written_entry(store, monkeypatch):
    store.append(ME, Post(text="first"))
    before = head(store, ME.public_key)
    real_flush = writer_module.RowWriter.flush

    def flush_then_crash(self):
        real_flush(self)  # the rows are written inside the transaction ...
        raise RuntimeError("crash after writing")  # ... and then something fails

    monkeypatch.setattr(writer_module.RowWriter, "flush", flush_then_crash)
    with pytest.raises(RuntimeError):
        store.append(ME, Post(text="second"))
    with pytest.raises(RuntimeError):
        store.ingest(raw(chain(ALICE, 3)))
    monkeypatch.undo()

    def boom(*args, **kwargs):
        raise RuntimeError("crash while projecting")

    # a follow is projected after the posts before it were written
    monkeypatch.setattr(writer_module, "apply_content", boom)
    with pytest.raises(RuntimeError):
        store.append_many(ME, [Post(text="second"), Post(text="third"), Follow(feed=BOB.public_key)])
    monkeypatch.undo()

    assert head(store, ME.public_key) == before
    assert store.read("SELECT count(*) FROM entries")[0][0] == 1
    assert store.read("SELECT count(*) FROM posts")[0][0] == 1
    assert store.feed_info(ALICE.public_key) is None
    assert store.search("second") == []
    assert store.graph_targets(ME.public_key, "follow") == []
    assert store.append(ME, Post(text="second")).seq == 2
    assert verify_store(store)["ok"]


def test_append_many_failing_midway_writes_nothing(store, monkeypatch):
    store.append(ME, Post(text="first"))
    calls = []
    real = store_module.create_entry

    def third_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("signer failed")
        return real(*args, **kwargs)

    monkeypatch.setattr(store_module, "create_entry", third_fails)
    with pytest.raises(RuntimeError):
        store.append_many(ME, [Post(text=f"batch {i}") for i in range(5)])
    assert store.read("SELECT count(*) FROM entries")[0][0] == 1
    assert store.feed_info(ME.public_key)["head"] == 1


def test_a_full_disk_is_disk_full_and_the_data_stays_intact(store):
    store.append_many(ME, [Post(text=f"kept {i}") for i in range(10)])
    before = store.read("SELECT hash, payload FROM entries ORDER BY id")
    pages = store.read("PRAGMA page_count")[0][0]
    store.conn.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(DiskFull) as info:
        store.append_many(ME, [Post(text="x" * 8000) for _ in range(20)])
    assert info.value.code == "disk_full"
    with pytest.raises(DiskFull):
        store.ingest(raw(chain(ALICE, 50)))
    assert store.read("SELECT hash, payload FROM entries ORDER BY id") == before
    assert head(store, ME.public_key)[0][0] == 10
    store.conn.execute("PRAGMA max_page_count = 1073741823")
    assert store.append(ME, Post(text="room again")).seq == 11
    assert verify_store(store)["ok"]


def test_a_garbage_file_is_a_corrupt_store(tmp_path):
    path = tmp_path / "store.db"
    path.write_bytes(b"this is not a database, just some garbage bytes " * 100)
    with pytest.raises(CorruptStore) as info:
        Store(path)
    assert info.value.code == "corrupt_store"


def test_a_store_with_damaged_pages_is_a_corrupt_store(tmp_path):
    path = tmp_path / "store.db"
    with Store(path) as s:
        s.append_many(ME, [Post(text=f"p{i}") for i in range(200)])
        s.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    data[100:] = bytes((i * 7 + 3) % 256 for i in range(len(data) - 100))  # keep the 100-byte header
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptStore), Store(path) as s:
        s.read("SELECT count(*) FROM entries")


def test_migration_failure_rolls_back(tmp_path, monkeypatch):
    from tidings.storage import schema

    path = tmp_path / "s.db"
    monkeypatch.setattr(schema, "_MIGRATIONS", [*schema._MIGRATIONS, "CREATE TABLE broken (", "SELECT 1"])
    monkeypatch.setattr(schema, "SCHEMA_VERSION", len(schema._MIGRATIONS))
    with pytest.raises(StoreError):
        Store(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(schema._MIGRATIONS) - 2
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'broken'").fetchone()[0] == 0
    conn.close()
