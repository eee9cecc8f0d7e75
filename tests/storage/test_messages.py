"""Private messages in the store (storage/messages.py, spec/protocol.md §8.6): opened once on ingest with
the store's key, kept for the participants only, waiting for a key when there is none, dropped with a
delete, undecryptable boxes never read, strangers in requests, and never in search or timelines."""

from __future__ import annotations

import hashlib
import os
import random
import signal

from tidings.protocol import (
    Block,
    Box,
    BoxKey,
    Delete,
    Entry,
    Follow,
    Message,
    Post,
    SigningKey,
    create_entry,
    decode_content,
    encode_content,
    entry_id_text,
    feed_id_text,
    seal,
    skip_target,
)
from tidings.storage import messages
from tidings.storage.store import Store
from tidings.storage.verifier import PROCESS_MIN

from tests.support.entries import raw

KEYS = [SigningKey(hashlib.blake2b(b"storage box %d" % i, digest_size=32).digest()) for i in range(5)]
ALICE, BOB, CAROL, DAVE, ERIN = KEYS
RNG = random.Random(7).randbytes


def log(key: SigningKey, items: list, start: list[tuple[Entry, bytes]] | None = None):
    """Entries of ``key``'s feed: content as it is, messages sealed for their place in the log, a
    callable called with the place (seq, backlink)."""
    out = list(start or [])
    for item in items:
        seq = len(out) + 1
        back = out[-1][0].hash if out else None
        if isinstance(item, Message):
            content = seal(item, author=key.public_key, seq=seq, backlink=back, rng=RNG)
        elif callable(item):
            content = item(seq, back)
        else:
            content = item
        payload = encode_content(content)
        target = skip_target(seq)
        entry = create_entry(
            key,
            seq=seq,
            backlink=back,
            skiplink=out[target - 1][0].hash if target else None,
            timestamp=1_000_000 + seq,
            payload=payload,
        )
        out.append((entry, payload))
    return out[len(start or []) :]


def to(*keys: SigningKey, text: str = "the key is under the mat", reply: bytes | None = None) -> Message:
    return Message(text=text, to=tuple(k.public_key for k in keys), reply=reply)


def opened_store(tmp_path, key: SigningKey) -> Store:
    store = Store(tmp_path / f"{key.public_key.hex()[:6]}.db", box_key=BoxKey(key))
    store.set_meta("self", key.public_key)
    return store


def test_alice_writes_bob_and_carol_read_dave_holds_only_the_box(tmp_path):
    alice_log = log(ALICE, [Post(text="public"), to(BOB, CAROL)])
    stores = {k: opened_store(tmp_path, k) for k in (BOB, CAROL, DAVE)}
    try:
        for reader, store in stores.items():
            store.append(reader, Follow(feed=ALICE.public_key), now=1)
            prepared = store.prepare(raw(alice_log))
            assert list(prepared.opened) == [alice_log[1][0].hash]  # opened off the database thread
            result = store.ingest_prepared(prepared)
            assert len(result.added) == 2
        for reader in (BOB, CAROL):
            (conv,) = messages.inbox(stores[reader], BoxKey(reader))
            others = {feed_id_text(k.public_key) for k in (ALICE, BOB, CAROL)} - {
                feed_id_text(reader.public_key)
            }
            assert set(conv["with"]) == others
            assert (conv["messages"], conv["unread"]) == (1, 1)
            assert conv["last"]["text"] == "the key is under the mat"
            others_keys = {ALICE.public_key, BOB.public_key, CAROL.public_key} - {reader.public_key}
            shown = messages.conversation(stores[reader], BoxKey(reader), others_keys)
            assert [m["text"] for m in shown] == ["the key is under the mat"]
            assert messages.inbox(stores[reader], BoxKey(reader))[0]["unread"] == 0  # read now
        dave = stores[DAVE]
        assert messages.inbox(dave, BoxKey(DAVE)) == []
        assert messages.inbox(dave, BoxKey(DAVE), requests=True) == []
        assert dave.read("SELECT count(*) FROM messages")[0][0] == 0
        assert dave.read("SELECT count(*) FROM box_pending")[0][0] == 0  # tried once, not ours
        ((payload, kind),) = dave.read("SELECT payload, type FROM entries WHERE seq = 2")
        assert kind == "box" and len(payload) == 560  # the padded box, nothing more
        assert b"mat" not in bytes(payload)
    finally:
        for store in stores.values():
            store.close()


def test_the_author_reads_its_own_message_and_it_is_read(tmp_path):
    with opened_store(tmp_path, ALICE) as store:
        entry = store.append(ALICE, to(BOB), rng=RNG, now=5)
        box = decode_content(store.raw_entry(entry.hash)[1])
        assert isinstance(box, Box)
        (conv,) = messages.inbox(store, BoxKey(ALICE))
        assert conv["with"] == [feed_id_text(BOB.public_key)] and conv["unread"] == 0
        assert conv["last"]["id"] == entry_id_text(entry.hash)
        # the box is bound to the seq and backlink it was sealed for
        assert messages.open_one(entry, box, BoxKey(BOB)) is not None


def test_without_the_key_boxes_wait_and_are_opened_once_it_comes(tmp_path):
    alice_log = log(ALICE, [to(BOB), to(BOB, text="second")])
    with Store(tmp_path / "bob.db") as store:
        store.ingest(raw(alice_log))
        assert messages.pending_count(store) == 2
        assert store.read("SELECT count(*) FROM messages")[0][0] == 0
        with store.transaction() as cur:
            assert messages.open_pending(cur, BoxKey(BOB)) == 2
        assert messages.pending_count(store) == 0
        assert messages.inbox(store, BoxKey(BOB), requests=True)[0]["messages"] == 2


def test_a_payload_that_comes_late_is_opened(tmp_path):
    alice_log = log(ALICE, [to(BOB)])
    with opened_store(tmp_path, BOB) as store:
        store.ingest([(alice_log[0][0].raw, None)])
        assert store.read("SELECT count(*) FROM messages")[0][0] == 0
        store.ingest(raw(alice_log))
        assert (
            messages.inbox(store, BoxKey(BOB), requests=True)[0]["last"]["text"] == "the key is under the mat"
        )


def test_a_deleted_box_is_dropped_with_what_was_read_of_it(tmp_path):
    first = log(ALICE, [to(BOB)])
    deletion = log(ALICE, [Delete(target=first[0][0].hash)], start=first)
    with opened_store(tmp_path, ALICE) as alice:
        entry = alice.append(ALICE, to(BOB), rng=RNG, now=5)
        alice.append(ALICE, Delete(target=entry.hash), now=6)
        assert messages.inbox(alice, BoxKey(ALICE)) == []
        assert alice.read("SELECT payload FROM entries WHERE seq = 1")[0][0] is None
    with opened_store(tmp_path, BOB) as bob:
        bob.ingest(raw(first))
        assert messages.inbox(bob, BoxKey(BOB), requests=True)
        bob.ingest(raw(deletion))
        assert messages.inbox(bob, BoxKey(BOB), requests=True) == []
        assert bob.read("SELECT count(*) FROM messages")[0][0] == 0
    with opened_store(tmp_path, CAROL) as late:  # the delete first, then the box: never opened
        late.box_key = BoxKey(BOB)
        late.ingest(raw(deletion))
        late.ingest(raw(first))
        assert late.read("SELECT count(*) FROM messages")[0][0] == 0
        assert messages.pending_count(late) == 0


def changed(message: Message):
    """A box of ``message`` whose body its author changed after sealing (for ``log``)."""

    def make(seq: int, back: bytes | None) -> Box:
        box = seal(message, author=ALICE.public_key, seq=seq, backlink=back, rng=RNG)
        body = bytearray(box.body)
        body[10] ^= 0x04
        return Box(eph=box.eph, commit=box.commit, slots=box.slots, body=bytes(body))

    return make


def test_a_changed_box_is_undecryptable_never_altered_text(tmp_path):
    """Alice signs a box whose body she changed after sealing: the entry is valid, the box shown as
    undecryptable to bob, with no text."""
    payload = encode_content(changed(to(BOB))(1, None))
    entry = create_entry(ALICE, seq=1, backlink=None, skiplink=None, timestamp=5, payload=payload)
    with opened_store(tmp_path, BOB) as store:
        store.append(BOB, Follow(feed=ALICE.public_key), now=1)
        assert len(store.ingest([(entry.raw, payload)]).added) == 1
        (line,) = messages.inbox(store, BoxKey(BOB))
        assert line["undecryptable"] is True and "text" not in line
        assert line["feed"] == feed_id_text(ALICE.public_key)


def test_strangers_go_to_requests_and_blocked_feeds_nowhere(tmp_path):
    with opened_store(tmp_path, BOB) as store:
        store.ingest(raw(log(ERIN, [to(BOB, text="buy my bees")])))
        assert messages.inbox(store, BoxKey(BOB)) == []
        (request,) = messages.inbox(store, BoxKey(BOB), requests=True)
        assert request["last"]["text"] == "buy my bees"
        # a feed that follows bob is not a stranger
        store.ingest(raw(log(CAROL, [Follow(feed=BOB.public_key), to(BOB, text="hi from carol")])))
        assert [c["last"]["text"] for c in messages.inbox(store, BoxKey(BOB))] == ["hi from carol"]
        # answering a request moves it to the inbox
        store.append(BOB, to(ERIN, text="no thanks"), rng=RNG, now=10_000_000)
        assert [c["last"]["text"] for c in messages.inbox(store, BoxKey(BOB))] == [
            "no thanks",
            "hi from carol",
        ]
        store.append(BOB, Block(feed=CAROL.public_key), now=10_000_001)
        assert [c["last"]["text"] for c in messages.inbox(store, BoxKey(BOB))] == ["no thanks"]


def test_boxes_never_reach_search_timelines_or_the_ranked_candidates(tmp_path):
    from tidings.storage import ranking

    with opened_store(tmp_path, BOB) as store:
        store.append(BOB, Follow(feed=ALICE.public_key), now=1)
        store.ingest(raw(log(ALICE, [Post(text="public gardens"), to(BOB, text="secret gardens")])))
        store.update_search_index()
        assert [r["content"]["text"] for r in store.search("gardens")] == ["public gardens"]
        assert store.search("secret") == []
        timeline = store.timeline(BOB.public_key)
        assert [t["type"] for t in timeline] == ["post"]
        ranking.set_authors(store, [ALICE.public_key, BOB.public_key])
        rows = ranking.candidate_page(store, before=None, since=0, n=100)
        assert [r[5] for r in rows] == ["post"]  # the type column: the box is no candidate


def test_unread_counts_what_the_inbox_and_the_requests_count(tmp_path):
    with opened_store(tmp_path, BOB) as store:
        assert messages.unread(store, BOB.public_key) == {"unread": 0, "requests": 0, "newest": None}
        store.append(BOB, Follow(feed=ALICE.public_key), now=1)
        alice_log = log(ALICE, [to(BOB, text="one"), to(BOB, text="two")])
        erin_log = log(ERIN, [to(BOB, text="buy my bees")])
        store.ingest(raw(alice_log + erin_log))
        badge = messages.unread(store, BOB.public_key)
        inbox, requests = (
            messages.inbox(store, BoxKey(BOB)),
            messages.inbox(store, BoxKey(BOB), requests=True),
        )
        assert (badge["unread"], badge["requests"]) == (2, 1)
        assert (sum(c["unread"] for c in inbox), sum(c["unread"] for c in requests)) == (2, 1)
        assert badge["newest"] == entry_id_text(erin_log[0][0].hash)  # the last to arrive
        messages.conversation(store, BoxKey(BOB), {ALICE.public_key})
        assert messages.unread(store, BOB.public_key)["unread"] == 0
        store.append(BOB, Block(feed=ERIN.public_key), now=2)  # blocked feeds are not shown, nor counted
        assert messages.unread(store, BOB.public_key) == {
            "unread": 0,
            "requests": 0,
            "newest": entry_id_text(alice_log[1][0].hash),
        }


def bulk_with_boxes():
    """A bulk batch of alice's (it goes to worker processes): posts, boxes to bob, to carol, and one
    box to bob whose body was changed."""
    items: list = []
    for i in range(PROCESS_MIN + 40):
        items.append(
            to(BOB, text=f"to bob {i}") if i % 50 == 7 else to(CAROL) if i % 10 == 3 else Post(text=f"{i}")
        )
    items[100] = changed(to(BOB))
    return log(ALICE, items)


def test_the_boxes_of_a_bulk_batch_are_opened_in_the_worker_processes(tmp_path):
    """A store with the key and worker processes opens the boxes of a bulk batch there, with the
    signatures, and records the same as opening them here: bob's messages, the changed one
    undecryptable, carol's nothing. A new key stops the pool; the next one opens with the new key."""
    alice_log = bulk_with_boxes()
    expected = sorted(f"to bob {i}" for i in range(len(alice_log)) if i % 50 == 7)
    with Store(tmp_path / "bob.db", verify_processes=2, box_key=BoxKey(BOB)) as store:
        store.append(BOB, Follow(feed=ALICE.public_key), now=1)
        prepared = store.prepare(raw(alice_log))
        assert prepared.verdicts.box_key is not None and prepared.verdicts.box_key.feed == BOB.public_key
        assert prepared.verdicts.opened == {}  # nothing opened on this thread
        boxes = [i for i in range(len(alice_log)) if i % 10 == 3 or i % 50 == 7 or i == 100]
        assert len(prepared.opened) == len(boxes)
        assert len(store.ingest_prepared(prepared).added) == len(alice_log)
        (conv, odd) = messages.inbox(store, BoxKey(BOB))
        shown = messages.conversation(store, BoxKey(BOB), {ALICE.public_key})
        assert sorted(m["text"] for m in shown) == expected and conv["messages"] == len(expected)
        assert odd["undecryptable"] is True and "text" not in odd
        assert store.read("SELECT count(*) FROM messages")[0][0] == len(expected) + 1
        assert messages.pending_count(store) == 0
        pool = store.verifier._processes
        assert pool is not None
        store.box_key = BoxKey(BOB)  # the same key: the pool stays
        assert store.verifier._processes is pool
        store.box_key = BoxKey(CAROL)  # another: its workers hold the old one, so they stop
        assert store.verifier._processes is None
        prepared = store.prepare(raw(log(ALICE, [Post(text="more")] * PROCESS_MIN, start=alice_log)))
        assert prepared.verdicts.box_key is not None and prepared.verdicts.box_key.feed == CAROL.public_key


def test_boxes_sent_to_a_pool_that_broke_are_opened_here(tmp_path):
    """A worker killed under a bulk batch costs neither a verdict nor a box: both are done here."""
    alice_log = bulk_with_boxes()
    with Store(tmp_path / "bob.db", verify_processes=2, box_key=BoxKey(BOB)) as store:
        store.append(BOB, Follow(feed=ALICE.public_key), now=1)
        store.verifier.verify([e for e, _ in alice_log])  # starts the pool
        pool = store.verifier._processes
        assert pool is not None
        for pid in list(pool._processes):
            os.kill(pid, signal.SIGKILL)
        prepared = store.prepare(raw(alice_log))
        assert len(store.ingest_prepared(prepared).added) == len(alice_log)
        shown = messages.conversation(store, BoxKey(BOB), {ALICE.public_key})
        assert len(shown) == len([i for i in range(len(alice_log)) if i % 50 == 7])


def test_what_was_read_is_sealed_at_rest_with_the_home_key(tmp_path):
    """A row holds the author, the time and the read flag in the open, and the recipients, text and
    reply sealed under the home's key, bound to the entry; the conversation is a name only that key
    computes. Under another key (or changed at rest) a row is shown undecryptable, never as text."""
    alice_log = log(ALICE, [to(BOB, CAROL, text="sealed here"), to(BOB, text="and here")])
    with opened_store(tmp_path, BOB) as store:
        store.append(BOB, Follow(feed=ALICE.public_key), now=1)
        store.ingest(raw(alice_log))
        rows = store.read("SELECT * FROM messages")
        on_disk = b"".join(v if isinstance(v, bytes) else str(v).encode() for row in rows for v in row)
        assert len(rows) == 2 and b"sealed here" not in on_disk and CAROL.public_key not in on_disk
        names = {bytes(r[0]) for r in store.read("SELECT conversation FROM messages")}
        plain_name = hashlib.blake2b(b"".join(sorted([ALICE.public_key, BOB.public_key])), digest_size=32)
        assert len(names) == 2 and plain_name.digest() not in names
        assert BoxKey(BOB).local_name([BOB.public_key, ALICE.public_key]) in names
        assert BoxKey(CAROL).local_name([BOB.public_key, ALICE.public_key]) not in names
        # the same database read with another key: undecryptable lines, no text
        lines = [*messages.inbox(store, BoxKey(CAROL)), *messages.inbox(store, BoxKey(CAROL), requests=True)]
        assert lines and all(line.get("undecryptable") and "text" not in line for line in lines)
        assert messages.conversation(store, BoxKey(CAROL), {ALICE.public_key}) == []
        # a seal changed at rest, or moved to another entry's row, does not open
        ((first, sealed),) = store.read("SELECT entry, sealed FROM messages ORDER BY entry LIMIT 1")
        changed = bytearray(sealed)
        changed[-1] ^= 1
        with store.transaction() as cur:
            cur.execute("UPDATE messages SET sealed = ? WHERE entry = ?", (bytes(changed), first))
        texts = [m.get("text") for m in messages.conversation(store, BoxKey(BOB), {ALICE.public_key})]
        assert texts == ["and here"]
        (odd,) = [line for line in messages.inbox(store, BoxKey(BOB)) if line.get("undecryptable")]
        assert "at rest" in odd["reason"]
        with store.transaction() as cur:  # the second row's seal put in the first row
            cur.execute(
                "UPDATE messages SET sealed = (SELECT sealed FROM messages WHERE entry != ?1) WHERE entry = ?1",
                (first,),
            )
        assert len([line for line in messages.inbox(store, BoxKey(BOB)) if line.get("undecryptable")]) == 1


def test_schema_12_seals_the_messages_read_before_and_keeps_their_read_flags(tmp_path):
    """A store of schema 11 kept opened messages in plain: the migration drops the plain columns,
    keeps who wrote them, when and whether they were read, and the next process with the key opens
    and seals them again."""
    import sqlite3

    from tidings.storage import schema

    path = tmp_path / "bob.db"
    alice_log = log(ALICE, [to(BOB, text="read before"), to(BOB, text="not read yet")])
    with Store(path, box_key=BoxKey(BOB)) as store:
        store.set_meta("self", BOB.public_key)
        store.append(BOB, Follow(feed=ALICE.public_key), now=1)
        store.ingest(raw(alice_log))
        rows = store.read("SELECT m.entry, m.author, m.ts FROM messages m ORDER BY m.entry")
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        DROP TABLE messages;
        CREATE TABLE messages (entry INTEGER PRIMARY KEY REFERENCES entries (id), conversation BLOB,
            author BLOB NOT NULL, recipients BLOB, text TEXT, reply BLOB, ts INTEGER NOT NULL,
            read INTEGER NOT NULL DEFAULT 0, problem TEXT);
        CREATE INDEX messages_conversation ON messages (conversation, ts);
        PRAGMA user_version = 11;
        """
    )
    for (entry, author, ts), text, read in zip(rows, ("read before", "not read yet"), (1, 0), strict=True):
        conn.execute(
            "INSERT INTO messages VALUES (?, ?, ?, ?, ?, NULL, ?, ?, NULL)",
            (entry, b"c" * 32, author, BOB.public_key, text, ts, read),
        )
    conn.commit()
    conn.close()
    with Store(path) as store:  # a process without the key: migrated, the plain text gone
        assert store.read("PRAGMA user_version")[0][0] == schema.SCHEMA_VERSION == 12
        columns = [r[1] for r in store.read("PRAGMA table_info(messages)")]
        assert "text" not in columns and "recipients" not in columns
        assert messages.pending_count(store) == 2
        assert messages.unread(store, BOB.public_key)["unread"] == 0  # nothing shown until opened again
    with Store(path, box_key=BoxKey(BOB)) as store:
        with store.transaction() as cur:
            assert messages.open_pending(cur, BoxKey(BOB)) == 2
        shown = messages.conversation(store, BoxKey(BOB), {ALICE.public_key}, mark_read=False)
        assert [(m["text"], m["read"]) for m in shown] == [("read before", True), ("not read yet", False)]
