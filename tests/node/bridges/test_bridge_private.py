"""Private messages never leave through a bridge (spec/protocol.md §8.6, §14): the Atom document and the
Nostr events of a feed that wrote boxes hold its posts only, and nothing of what the boxes say."""

from __future__ import annotations

import random
from typing import Any

import feedparser
from tidings.node.bridges import nostr_sync
from tidings.node.bridges.atom import atom_feed
from tidings.protocol import BoxKey, Message, Post, feed_id_text
from tidings.storage.store import Store

from tests.support.nodes import make_home

SECRET = "the spare key is under the third pot"


def _seed(tmp_path) -> tuple[Any, Store, bytes]:
    home, key = make_home(tmp_path, "alice")
    _, bob = make_home(tmp_path, "bob")
    store = Store(home.store_path, box_key=BoxKey(key))
    store.append(key, Post(text="gardens are public"), now=2_000_000_000_000)
    message = Message(text=SECRET, to=(bob.public_key,))
    box = store.append(key, message, rng=random.Random(3).randbytes, now=2_000_000_001_000)
    store.append(key, Post(text="more gardens"), now=2_000_000_002_000)
    assert store.entry(box.hash)["type"] == "box"
    return home, store, key.public_key


def test_atom_out_holds_the_posts_and_not_the_box(tmp_path):
    _, store, me = _seed(tmp_path)
    with store:
        data, count = atom_feed(store, me, now=2_000_000_003_000)
    assert count == 2 and SECRET.encode() not in data
    parsed = feedparser.parse(data)
    assert [e.content[0].value for e in parsed.entries] == ["more gardens", "gardens are public"]
    assert feed_id_text(me)[1:] in parsed.feed.id


async def test_nostr_out_publishes_the_posts_and_not_the_box(tmp_path):
    home, store, _ = _seed(tmp_path)
    published: list[Any] = []

    async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        return fn(store, *args, **kwargs)

    async def send(events: list[Any]) -> dict[str, tuple[bool, str]]:
        published.extend(events)
        return {e.id: (True, "") for e in events}

    with store:
        sent, refused = await nostr_sync.publish_pending(
            call, home, {"source": "wss://relay.example", "cursor": 0}, timeout=5, send=send
        )
    assert (sent, refused) == (2, None)
    assert sorted(e.content for e in published) == ["gardens are public", "more gardens"]
    assert all(SECRET not in repr(e) for e in published)
