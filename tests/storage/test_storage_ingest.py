"""Ingesting other feeds: order, batches, partial logs, duplicates, refusals, forks and deletes."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tidings.protocol import (
    Delete,
    Entry,
    Follow,
    Post,
    Profile,
    SigningKey,
    Unfollow,
    create_entry,
    encode_content,
    skip_target,
)
from tidings.storage.integrity import verify_store
from tidings.storage.store import Store

from tests.support.entries import chain, posts, raw

ME = SigningKey(bytes([1]) * 32)
ALICE = SigningKey(bytes([2]) * 32)
BOB = SigningKey(bytes([3]) * 32)


def resign(key, entry, **changes):
    """A validly signed copy of ``entry`` with some fields changed."""
    fields = {
        "seq": entry.seq,
        "backlink": entry.backlink,
        "skiplink": entry.skiplink,
        "timestamp": entry.timestamp,
    }
    fields.update(changes)
    payload = fields.pop("payload", encode_content(Post(text="replacement")))
    return create_entry(key, payload=payload, **fields), payload


def state(store):
    """Everything ingest order must not change."""
    return {
        "entries": store.read(
            "SELECT hash, author, seq, ts, type, payload, deleted FROM entries ORDER BY hash"
        ),
        "feeds": store.read(
            "SELECT author, head_seq, head_hash, head_ts, count, forked FROM feeds ORDER BY author"
        ),
        "posts": store.read("SELECT entry, text FROM posts ORDER BY entry"),
        "graph": store.read("SELECT * FROM graph ORDER BY author, kind, target"),
        "profiles": store.read("SELECT feed, name, bio FROM profiles ORDER BY feed"),
    }


def test_in_order(store):
    feed = posts(ALICE, 100)
    result = store.ingest(raw(feed))
    assert [e.hash for e in result.added] == [e.hash for e, _ in feed]
    assert result.duplicates == 0 and not result.rejected and not result.forks
    info = store.feed_info(ALICE.public_key)
    assert (info["head"], info["entries"], info["kind"]) == (100, 100, "remote")
    report = verify_store(store)
    assert report["ok"] and not report["gaps"] and report["entries"] == 100


def test_shuffled_in_several_batches(store):
    feed = posts(ALICE, 120) + posts(BOB, 80)
    items = raw(feed)
    random.Random(7).shuffle(items)
    added = 0
    for i in range(0, len(items), 37):
        result = store.ingest(items[i : i + 37])
        assert not result.rejected
        added += len(result.added)
    assert added == 200
    assert store.feed_info(ALICE.public_key)["head"] == 120
    assert store.feed_info(BOB.public_key)["head"] == 80
    report = verify_store(store)
    assert report["ok"] and not report["gaps"]


def test_partial_newest_entries_then_the_gap_is_filled(store):
    feed = posts(ALICE, 30)
    result = store.ingest(raw(feed[20:]))  # partial sync: newest 10 only
    assert len(result.added) == 10 and not result.rejected
    info = store.feed_info(ALICE.public_key)
    assert (info["head"], info["entries"]) == (30, 10)
    report = verify_store(store)
    assert report["ok"]
    assert report["gaps"] == [{"feed": info["feed"], "from": 1, "to": 20}]
    result = store.ingest(raw(feed[5:12]))
    assert len(result.added) == 7
    assert verify_store(store)["gaps"] == [
        {"feed": info["feed"], "from": 1, "to": 5},
        {"feed": info["feed"], "from": 13, "to": 20},
    ]
    result = store.ingest(raw(feed))
    assert len(result.added) == 13 and result.duplicates == 17
    assert store.feed_info(ALICE.public_key)["entries"] == 30
    report = verify_store(store)
    assert report["ok"] and not report["gaps"]


def test_gap_filler_that_does_not_match_the_stored_next_entry_is_refused(store):
    feed = posts(ALICE, 6)
    store.ingest(raw(feed[3:]))  # seqs 4..6
    # a validly signed seq 3 that the stored seq 4 does not link to
    other = resign(ALICE, feed[2][0], timestamp=feed[2][0].timestamp)
    result = store.ingest(raw([feed[0], feed[1], other]))
    assert [r.code for r in result.rejected] == ["link_conflict"]
    assert len(result.added) == 2


def test_duplicates_are_counted(store):
    feed = posts(ALICE, 10)
    store.ingest(raw(feed))
    again = store.ingest(raw(feed))
    assert again.duplicates == 10 and not again.added and not again.rejected
    fresh = posts(BOB, 3)
    twice = store.ingest(raw(fresh) + raw(fresh[:2]))
    assert len(twice.added) == 3 and twice.duplicates == 2
    assert store.feed_info(BOB.public_key)["entries"] == 3


def test_invalid_entries_are_refused_with_their_code_and_valid_ones_kept(store):
    feed = posts(ALICE, 6)
    good = raw(posts(BOB, 4))
    e3, p3 = feed[2]
    bad_back, bad_back_payload = resign(ALICE, e3, backlink=bytes(32), payload=p3)  # seq 2 is in the batch
    e4, p4 = feed[3]
    bad_sig = bytearray(e4.raw)
    bad_sig[-1] ^= 0x01  # last byte of the signature
    e5, p5 = feed[4]
    items = [
        *raw(feed[:2]),
        (bad_back.raw, bad_back_payload),
        (bytes(bad_sig), p4),
        (e5.raw, feed[0][1]),  # payload of another entry, same size: hash mismatch
        (feed[5][0].raw, p5 + b"\x00"),  # wrong size
        (b"\x93\x01\x02\x03", None),  # an array of 3: not an entry
        (e3.raw + b"\x00", None),  # trailing bytes
        (b"\xc1garbage", None),
        *good,
    ]
    result = store.ingest(items)
    codes = sorted((r.seq, r.code) for r in result.rejected if r.author == ALICE.public_key)
    assert codes == [(3, "bad_backlink"), (4, "bad_signature"), (5, "payload_hash"), (6, "payload_size")]
    assert sorted(r.code for r in result.rejected if r.author is None) == [
        "bad_shape",
        "malformed",
        "trailing_bytes",
    ]
    assert {e.hash for e in result.added} == {Entry.decode(r).hash for r, _ in good} | {
        feed[0][0].hash,
        feed[1][0].hash,
    }
    assert verify_store(store)["ok"]


def test_broken_skip_link_against_a_stored_entry_is_refused(store):
    feed = posts(ALICE, 13)
    store.ingest(raw(feed[:12]))
    e13, p13 = feed[12]
    assert skip_target(13) == 4
    forged, payload = resign(ALICE, e13, skiplink=feed[4][0].hash, payload=p13)
    result = store.ingest([(forged.raw, payload)])
    assert [r.code for r in result.rejected] == ["bad_skiplink"]
    assert store.ingest(raw(feed[12:])).added


def test_timestamp_before_the_previous_entry_is_refused(store):
    feed = posts(ALICE, 3)
    store.ingest(raw(feed[:2]))
    early, payload = resign(ALICE, feed[2][0], timestamp=feed[1][0].timestamp - 1, payload=feed[2][1])
    assert [r.code for r in store.ingest([(early.raw, payload)]).rejected] == ["timestamp_order"]


@pytest.mark.parametrize("same_batch", [False, True])
def test_fork_is_recorded_and_the_feed_refuses_new_entries(store, same_batch):
    feed = posts(ALICE, 8)
    rival, rival_payload = resign(ALICE, feed[4][0])  # a second valid seq 5, same links
    if same_batch:
        result = store.ingest([*raw(feed[:6]), (rival.raw, rival_payload)])
    else:
        store.ingest(raw(feed[:6]))
        result = store.ingest([(rival.raw, rival_payload)])
    assert len(result.forks) == 1
    proof = result.forks[0]
    assert proof.seq == 5 and {proof.first.hash, proof.second.hash} == {feed[4][0].hash, rival.hash}
    # in one batch, seq 6 comes after the fork is found and is refused with it
    want = [(5, "fork"), (6, "feed_forked")] if same_batch else [(5, "fork")]
    assert [(r.seq, r.code) for r in result.rejected] == want
    assert store.feed_info(ALICE.public_key)["forked"] is True
    assert store.read("SELECT seq FROM forks WHERE author = ?", (ALICE.public_key,)) == [(5,)]
    later = store.ingest(raw(feed[6:]))
    assert not later.added and {r.code for r in later.rejected} == {"feed_forked"}
    report = verify_store(store)
    assert report["forks"] == [{"feed": store.feed_info(ALICE.public_key)["feed"], "seq": 5}]
    assert store.ingest(raw(posts(BOB, 2))).added  # other feeds are unaffected


def test_received_delete_drops_the_target_payload(store):
    feed = chain(ALICE, [Post(text="regrettable words"), Post(text="fine words")])
    store.ingest(raw(feed))
    assert store.search("regrettable")
    delete = chain(ALICE, [Delete(target=feed[0][0].hash)], start=feed)
    store.ingest(raw(delete))
    row = store.read("SELECT payload, deleted FROM entries WHERE hash = ?", (feed[0][0].hash,))
    assert row == [(None, 1)]
    assert store.search("regrettable") == []
    assert store.raw_entry(feed[0][0].hash) == (feed[0][0].raw, None)
    report = verify_store(store)
    assert report["ok"] and report["entries"] == 3


def test_delete_arriving_before_its_target_means_the_payload_is_never_stored(store):
    target = chain(ALICE, [Post(text="never seen")])
    full = target + chain(ALICE, [Delete(target=target[0][0].hash)], start=target)
    store.ingest(raw(full[1:]))  # the delete (seq 2) first
    store.ingest(raw(full[:1]))
    assert store.read("SELECT payload, deleted FROM entries WHERE seq = 1") == [(None, 1)]
    assert store.read("SELECT count(*) FROM posts")[0][0] == 0
    assert store.search("seen") == []
    # the payload sent again later (e.g. by another peer) is not taken either
    store.ingest(raw(full[:1]))
    assert store.read("SELECT payload FROM entries WHERE seq = 1") == [(None,)]
    assert verify_store(store)["ok"]


@pytest.mark.parametrize("delete_first", [False, True])
def test_delete_of_someone_elses_entry_has_no_effect(store, delete_first):
    target = chain(ALICE, [Post(text="alice wrote this")])
    bogus = chain(BOB, [Delete(target=target[0][0].hash)])
    own_delete_later = chain(ALICE, [Post(text="filler"), Delete(target=target[0][0].hash)], start=target)
    order = [bogus, target] if delete_first else [target, bogus]
    for part in order:
        assert store.ingest(raw(part)).added
    assert store.read(
        "SELECT payload IS NOT NULL, deleted FROM entries WHERE hash = ?", (target[0][0].hash,)
    ) == [(1, 0)]
    assert store.search("alice")
    # the author's own delete still works after someone else's
    store.ingest(raw(own_delete_later))
    assert store.search("alice") == []


def test_own_delete_arriving_after_a_bogus_one_still_hides_the_target(store):
    target = chain(ALICE, [Post(text="secret")])
    own = chain(ALICE, [Delete(target=target[0][0].hash)], start=target)
    store.ingest(raw(chain(BOB, [Delete(target=target[0][0].hash)])))
    store.ingest(raw(own))  # before the target arrives
    store.ingest(raw(target))
    assert store.read("SELECT payload FROM entries WHERE hash = ?", (target[0][0].hash,)) == [(None,)]


def test_payload_arriving_later_fills_the_entry(store):
    feed = chain(ALICE, [Post(text="late payload"), Follow(feed=BOB.public_key)])
    store.ingest([(e.raw, None) for e, _ in feed])
    assert store.search("late") == [] and store.graph_targets(ALICE.public_key, "follow") == []
    result = store.ingest(raw(feed))
    assert result.duplicates == 2
    assert store.search("late") and store.graph_targets(ALICE.public_key, "follow") == [BOB.public_key]
    assert verify_store(store)["ok"]


def mixed_feed():
    b, m = BOB.public_key, ME.public_key
    alice = chain(
        ALICE,
        [
            Post(text="first"),
            Follow(feed=b),
            Profile(name="ann", bio="hello"),
            Post(text="second"),
            Unfollow(feed=b),
            Follow(feed=m),
            Profile(name="anna"),
            Post(text="third"),
        ],
    )
    alice += chain(ALICE, [Delete(target=alice[3][0].hash), Follow(feed=b)], start=alice)
    return alice + posts(BOB, 12)


MIXED = mixed_feed()


@pytest.fixture(scope="module")
def reference_state(tmp_path_factory):
    with Store(tmp_path_factory.mktemp("ref") / "s.db") as s:
        s.ingest(raw(MIXED))
        return state(s)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.permutations(range(len(MIXED))), cuts=st.lists(st.integers(1, len(MIXED) - 1), max_size=6))
def test_any_arrival_order_and_batching_gives_the_same_state(reference_state, order, cuts):
    items = raw([MIXED[i] for i in order])
    bounds = [0, *sorted(set(cuts)), len(items)]
    with Store(":memory:", verify_threads=1) as s:
        for lo, hi in itertools.pairwise(bounds):
            result = s.ingest(items[lo:hi])
            assert not result.rejected
        got = state(s)
        s.update_search_index()  # FTS5 checks that its index matches the posts table exactly
        s.run(
            lambda cur: cur.execute("INSERT INTO posts_fts (posts_fts, rank) VALUES ('integrity-check', 1)")
        )
    # rowids differ with the order; compare posts by text only
    got["posts"] = sorted(t for _, t in got["posts"])
    want = dict(reference_state, posts=sorted(t for _, t in reference_state["posts"]))
    assert got == want


@settings(max_examples=200, deadline=None)
@given(
    seq=st.integers(1, 2**53 - 1),
    timestamp=st.integers(0, 2**53 - 1),
    size=st.integers(0, 16 * 1024),
    seed=st.binary(min_size=32, max_size=32),
)
def test_signed_bytes_cut_from_raw_equal_the_protocol_encoding(seq, timestamp, size, seed):
    """The ingest hot path cuts the signed bytes out of the raw entry instead of re-encoding them."""
    from tidings.protocol.entry import SIGNING_DOMAIN
    from tidings.storage.batch import signing_message

    key = SigningKey(seed)
    target = skip_target(seq)
    entry = create_entry(
        key,
        seq=seq,
        backlink=None if seq == 1 else bytes(32),
        skiplink=None if target is None else b"\x01" * 32,
        timestamp=timestamp,
        payload=b"\x00" * size,
    )
    assert signing_message(entry, SIGNING_DOMAIN) == entry.signing_bytes()


def test_prepare_on_another_thread_then_ingest_prepared(store):
    """The node's pipeline: batch k+1 is decoded and verified while batch k is written."""
    from concurrent.futures import ThreadPoolExecutor

    feed = posts(ALICE, 300)
    store.ingest([(e.raw, None) for e, _ in feed[:50]])  # held without payloads
    batches = [raw(feed[i : i + 100]) for i in range(0, 300, 100)]
    bad = bytearray(feed[120][0].raw)
    bad[-1] ^= 1
    batches[1][20] = (bytes(bad), feed[120][1])
    added, dups, rejected = 0, 0, []
    with ThreadPoolExecutor(1) as other:
        nxt = other.submit(store.prepare, batches[0])
        for i in range(len(batches)):
            prepared = nxt.result()
            if i + 1 < len(batches):
                nxt = other.submit(store.prepare, batches[i + 1])
            result = store.ingest_prepared(prepared)
            added += len(result.added)
            dups += result.duplicates
            rejected += result.rejected
    assert [(r.seq, r.code) for r in rejected] == [(121, "bad_signature")]
    assert dups == 50 and added == 249
    assert store.read("SELECT count(*) FROM entries WHERE payload IS NULL")[0][0] == 0  # filled
    assert len(store.search("post")) == 50  # search's default limit
    assert verify_store(store)["gaps"] == [
        {"feed": store.feed_info(ALICE.public_key)["feed"], "from": 121, "to": 121}
    ]
