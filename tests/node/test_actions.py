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
    # undoing is harmless on oneself; as it changes nothing, it writes nothing (a repeat, below)
    undone = actions.unfollow(store, ME, ME.public_key, now=clock.wall_ms())
    assert (undone["type"], undone["changed"], undone["id"]) == ("unfollow", False, None)
    assert store.feed_info(ME.public_key)["head"] == 4


def test_a_repeated_graph_action_writes_nothing_and_says_so(store, clock):
    other, name = OTHER.public_key, feed_id_text(OTHER.public_key)
    for kind, note in (
        ("follow", f"you already follow {name}"),
        ("unfollow", f"you do not follow {name}"),
        ("block", f"{name} is already blocked"),
        ("unblock", f"{name} is not blocked"),
    ):
        head = store.feed_info(ME.public_key)["head"] if store.feed_info(ME.public_key) else 0
        if kind in ("follow", "block"):
            first = actions.graph(store, ME, kind, other, now=clock.wall_ms())
            assert first["changed"] is True and first["seq"] == head + 1
            head += 1
        again = actions.graph(store, ME, kind, other, now=clock.wall_ms())
        assert again["changed"] is False and again["note"] == note and again["type"] == kind
        if kind in ("follow", "block"):  # the entry that already decides
            assert {k: again[k] for k in ("id", "seq", "ts")} == {k: first[k] for k in ("id", "seq", "ts")}
        assert (store.feed_info(ME.public_key) or {"head": 0})["head"] == head
        if kind == "follow":
            actions.unfollow(store, ME, other, now=clock.wall_ms())
        if kind == "block":
            actions.unblock(store, ME, other, now=clock.wall_ms())


def test_follow_of_a_blocked_feed_is_refused_and_block_of_a_followed_one_warns(store, clock):
    other, name = OTHER.public_key, feed_id_text(OTHER.public_key)
    actions.follow(store, ME, other, now=clock.wall_ms())
    blocked = actions.block(store, ME, other, now=clock.wall_ms())
    assert blocked["changed"] is True and blocked["warning"].startswith(
        f"you follow {name}: it stays followed"
    )
    assert store.following(ME.public_key) == [{"feed": name, "name": None, "blocked": True}]
    actions.unfollow(store, ME, other, now=clock.wall_ms())
    with pytest.raises(ActionError) as refused:
        actions.follow(store, ME, other, now=clock.wall_ms())
    assert refused.value.code == "blocked"
    assert refused.value.message == f"{name} is blocked: unblock it first (tidings unblock {name})"
    assert store.feed_info(ME.public_key)["head"] == 3  # follow, block, unfollow: the refusal wrote nothing
    actions.unblock(store, ME, other, now=clock.wall_ms())
    assert "warning" not in actions.follow(store, ME, other, now=clock.wall_ms())
    assert store.following(ME.public_key) == [{"feed": name, "name": None}]


def test_mute_refuses_yourself_and_says_whether_it_changed_anything(store):
    me, other = feed_id_text(ME.public_key), feed_id_text(OTHER.public_key)
    with pytest.raises(ActionError) as refused:
        actions.mute(store, ME.public_key, "feed", me)
    assert (refused.value.code, refused.value.message) == ("self", "you cannot mute yourself")
    assert store.mutes() == []
    assert actions.mute(store, ME.public_key, "feed", other)["changed"] is True
    assert actions.mute(store, ME.public_key, "feed", other)["changed"] is False
    assert actions.unmute(store, "feed", other) == {
        "kind": "feed",
        "value": other,
        "muted": False,
        "changed": True,
    }


@pytest.mark.parametrize(
    "emoji", ["🎉", "👍", "👍🏽", "❤️", "❤", "🇫🇷", "1️⃣", "#⃣", "‼️", "👩‍👩‍👧", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "🎉🎉", " 🎉 "]
)
def test_an_emoji_is_a_reaction(store, clock, emoji):
    target = actions.post(store, ME, "x", now=clock.wall_ms())["id"]
    out = actions.react(store, ME, target, emoji, now=clock.wall_ms())
    assert _content(store, out)["emoji"] == emoji.strip()


@pytest.mark.parametrize("text", ["hello world", "x", "+1", ":)", "1", "🎉 🎉", "a\u200d", "^"])
def test_text_is_not_a_reaction(store, clock, text):
    target = actions.post(store, ME, "x", now=clock.wall_ms())["id"]
    with pytest.raises(ActionError) as refused:
        actions.react(store, ME, target, text, now=clock.wall_ms())
    assert refused.value.code == "not_emoji" and refused.value.message.startswith(
        f"{text.strip()!r} is not an emoji"
    )
    assert store.feed_info(ME.public_key)["head"] == 1


def test_an_entry_id_is_read_as_people_paste_it(store, clock):
    out = actions.post(store, ME, "x", now=clock.wall_ms())
    full, want = out["id"], _hash(out)
    for pasted in (
        full,
        full.upper(),
        full[1:],
        full[:14] + "…",
        full[:14].upper() + "...",
        f"  {full[:6]}\n",
    ):
        assert actions.resolve(store, pasted) == want, pasted
    cases = {
        "%s": "'%s' is too short: give at least 4 characters of the entry id after %",
        "%7s!x": "'%7s!x' is not an entry id: '!' (character 4) is not base32 (a-z, 2-7)",
        full + "a": f"{full + 'a'!r} is too long: an entry id has 52 characters after %, this has 53",
        full[:-1]
        + "b": f"{full[:-1] + 'b'!r} is not an entry id: cannot end in 'b' (a 52-character id ends in 'a' or 'q')",
        "@" + "a" * 52: f"{'@' + 'a' * 52!r} is a feed id; give an entry id (%...)",
    }
    for text, message in cases.items():
        with pytest.raises(StoreError) as bad:
            actions.resolve(store, text)
        assert (bad.value.code, bad.value.message) == ("bad_id", message)
    absent = "%vkoe" if not full.startswith("%vkoe") else "%aaaa"
    with pytest.raises(NotFound) as missing:
        actions.resolve(store, absent.upper())
    assert missing.value.message == f"no entry {absent}… in this store"


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
