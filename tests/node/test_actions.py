"""The use-case layer both front ends call (node/actions.py), over a real SQLite store."""

from __future__ import annotations

import pytest
from tidings.node import actions
from tidings.node.actions import ActionError
from tidings.node.clock import FixedClock
from tidings.protocol import EntryId, Post, SigningKey, TidingsError, entry_id_text, feed_id_text
from tidings.storage.errors import NotFound, NotYours, StoreError
from tidings.storage.store import Store

from tests.support.entries import chain

ME = SigningKey(bytes(range(32)))
OTHER = SigningKey(bytes(range(1, 33)))


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "store.db") as s:
        s.set_meta("self", ME.public_key)
        yield s


@pytest.fixture
def clock():
    return FixedClock(wall_ms=1_700_000_000_000)


def _hash(written: dict) -> bytes:
    return EntryId.parse(written["id"]).hash


def _content(store: Store, written: dict) -> dict:
    return store.entry(_hash(written))["content"]


def test_post_returns_what_both_front_ends_print(store, clock):
    out = actions.post(store, ME, "hello", now=clock.wall_ms())
    assert out == {
        "id": out["id"],
        "feed": feed_id_text(ME.public_key),
        "seq": 1,
        "ts": clock.wall_ms(),
        "type": "post",
    }
    assert _content(store, out)["text"] == "hello"
    assert "reply" not in _content(store, out) and "root" not in _content(store, out)


def test_a_reply_names_the_thread_root(store, clock):
    top = actions.post(store, ME, "top", now=clock.wall_ms())
    first = actions.post(store, ME, "first", reply_to=top["id"], now=clock.wall_ms())
    assert _content(store, first)["reply"] == top["id"] and _content(store, first)["root"] == top["id"]
    # a reply to a reply keeps the parent's root, and a unique prefix names the parent
    second = actions.post(store, ME, "second", reply_to=first["id"][:8], now=clock.wall_ms())
    assert _content(store, second)["reply"] == first["id"]
    assert _content(store, second)["root"] == top["id"]
    assert actions.reply_links(store, second["id"]) == (_hash(second), _hash(top))


def test_resolve_takes_an_id_or_a_unique_prefix_of_a_stored_entry(store, clock):
    out = actions.post(store, ME, "x", now=clock.wall_ms())
    assert actions.resolve(store, out["id"]) == _hash(out)
    assert actions.resolve(store, out["id"][:6]) == _hash(out)
    missing = entry_id_text(bytes(32))
    with pytest.raises(NotFound):
        actions.resolve(store, missing)  # a well-formed id this store does not hold
    with pytest.raises(StoreError) as bad:
        actions.resolve(store, "%!!")
    assert bad.value.code == "bad_id"
    with pytest.raises(NotFound):
        actions.react(store, ME, missing, "👍", now=clock.wall_ms())
    assert store.feed_info(ME.public_key)["head"] == 1  # nothing written


def test_react_and_repost_target_the_resolved_entry(store, clock):
    theirs = chain(OTHER, [Post(text="theirs")])
    store.ingest([(e.raw, p) for e, p in theirs])
    target = entry_id_text(theirs[0][0].hash)
    reacted = actions.react(store, ME, target[:10], "🎉", now=clock.wall_ms())
    assert reacted["type"] == "reaction"
    assert _content(store, reacted) == {"type": "reaction", "target": target, "emoji": "🎉"}
    reposted = actions.repost(store, ME, target, now=clock.wall_ms())
    assert reposted["type"] == "repost" and _content(store, reposted)["target"] == target


def test_delete_only_our_own_entry_and_only_once(store, clock):
    theirs = chain(OTHER, [Post(text="theirs")])
    store.ingest([(e.raw, p) for e, p in theirs])
    with pytest.raises(NotYours) as not_yours:
        actions.delete(store, ME, entry_id_text(theirs[0][0].hash), now=clock.wall_ms())
    assert "someone else's entry" in not_yours.value.message
    mine = actions.post(store, ME, "oops", now=clock.wall_ms())
    tomb = actions.delete(store, ME, mine["id"], now=clock.wall_ms())
    assert tomb["type"] == "delete" and tomb["seq"] == 2
    assert store.entry(_hash(mine))["deleted"]
    with pytest.raises(ActionError) as again:
        actions.delete(store, ME, mine["id"], now=clock.wall_ms())
    assert again.value.code == "already_deleted"
    assert again.value.message == f"{mine['id']} is already deleted"
    assert store.feed_info(ME.public_key)["head"] == 2  # the refusals wrote nothing


def test_graph_actions_and_the_self_guard(store, clock):
    other = OTHER.public_key
    assert actions.follow(store, ME, other, now=clock.wall_ms())["type"] == "follow"
    assert [row["feed"] for row in store.following(ME.public_key)] == [feed_id_text(other)]
    assert actions.unfollow(store, ME, other, now=clock.wall_ms())["type"] == "unfollow"
    assert store.following(ME.public_key) == []
    assert actions.block(store, ME, other, now=clock.wall_ms())["type"] == "block"
    assert actions.unblock(store, ME, other, now=clock.wall_ms())["type"] == "unblock"
    for kind in ("follow", "block"):
        with pytest.raises(ActionError) as refused:
            actions.graph(store, ME, kind, ME.public_key, now=clock.wall_ms())
        assert (refused.value.code, refused.value.message) == ("self", f"you cannot {kind} yourself")
    # undoing is harmless on oneself, as before this layer existed
    assert actions.unfollow(store, ME, ME.public_key, now=clock.wall_ms())["type"] == "unfollow"
    assert store.feed_info(ME.public_key)["head"] == 5


def test_set_profile_returns_the_profile_with_the_entry(store, clock):
    out = actions.set_profile(store, ME, name="alice", bio="hi", now=clock.wall_ms())
    assert out == {
        "feed": feed_id_text(ME.public_key),
        "name": "alice",
        "bio": "hi",
        "id": out["id"],
        "seq": 1,
        "ts": clock.wall_ms(),
    }
    cleared = actions.set_profile(store, ME, name=None, bio="", now=clock.wall_ms())
    assert (cleared["name"], cleared["bio"], cleared["seq"]) == ("alice", "", 2)


def test_the_time_comes_from_the_caller(store, clock):
    first = actions.post(store, ME, "a", now=clock.wall_ms())
    clock.advance(5)
    second = actions.post(store, ME, "b", now=clock.wall_ms())
    assert second["ts"] - first["ts"] == 5000


def test_action_errors_are_tidings_errors():
    assert issubclass(ActionError, TidingsError)
