"""Real nodes: a follower's private message reaches a node that did not replicate the follower
(spec §12.3 *Followers*, §8.6; node/net/followers.py)."""

from __future__ import annotations

import trio
from tidings.node import dm
from tidings.node.clock import SYSTEM_CLOCK
from tidings.protocol import BoxKey
from tidings.storage import messages
from tidings.storage.store import Store

from tests.support.nodes import count, follow, has_entry, make_home, start_node, wait_until


async def test_a_followers_message_reaches_bob_through_a_node_that_carries_it(tmp_path):
    hb, kb = make_home(tmp_path, "bob")
    hc, kc = make_home(tmp_path, "carol")
    hr, kr = make_home(tmp_path, "relay")
    follow(hc, kc, kb)  # carol follows bob; bob follows nobody
    follow(hr, kr, kc)  # the relay replicates carol (and, two hops away, bob)
    bob_feed, carol_feed = kb.public_key, kc.public_key
    async with trio.open_nursery() as nursery:
        # carol's node meets bob's once: her clock names his feed, so bob fetches hers and finds the follow
        bob = await start_node(nursery, hb, kb)
        assert carol_feed not in bob.wanted
        async with trio.open_nursery() as meeting:
            await start_node(meeting, hc, kc, peers=[bob.address])
            await wait_until(lambda: carol_feed in bob.wanted)
            meeting.cancel_scope.cancel()
        nursery.cancel_scope.cancel()
    # carol writes to bob while no node runs; only the relay carries it from her
    with Store(hc.store_path) as store:
        dm.send(store, kc, [bob_feed], "hello bob, from a follower", now=SYSTEM_CLOCK.wall_ms())
        (raw,) = store.read("SELECT hash FROM entries WHERE author = ? AND type = 'box'", (carol_feed,))[0]
    entry_hash = bytes(raw)
    async with trio.open_nursery() as nursery:
        relay = await start_node(nursery, hr, kr)
        async with trio.open_nursery() as visit:
            await start_node(visit, hc, kc, peers=[relay.address])
            await wait_until(lambda: has_entry(hr, entry_hash))
            visit.cancel_scope.cancel()
        assert not has_entry(hb, entry_hash)
        # bob comes back while carol is offline: the relay has her log, and bob wants it as a follower's
        bob = await start_node(nursery, hb, kb, peers=[relay.address])
        await wait_until(lambda: has_entry(hb, entry_hash))
        assert all(conn.feed != carol_feed for conn in bob.connections.values())
        assert kr.public_key not in bob.wanted  # the relay replicates bob but does not follow him
        nursery.cancel_scope.cancel()
    with Store(hb.store_path) as store:
        inbox = messages.inbox(store, BoxKey(kb))
        requests = messages.inbox(store, BoxKey(kb), requests=True)
    # a follower is not a stranger: the conversation is in the inbox, not among the requests
    assert [c["last"]["text"] for c in inbox] == ["hello bob, from a follower"]
    assert requests == []
    assert count(hb, carol_feed) == count(hc, carol_feed)  # her whole log: profile, follow, message
