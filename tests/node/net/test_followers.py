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
        relay = await carol_visits(nursery, hr, kr, hc, kc, entry_hash)
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


async def carol_visits(nursery, hr, kr, hc, kc, box: bytes):
    """Start the relay; carol's node meets it (only it) until it holds ``box``, then goes away."""
    relay = await start_node(nursery, hr, kr)
    async with trio.open_nursery() as visit:
        await start_node(visit, hc, kc, peers=[relay.address])
        await wait_until(lambda: has_entry(hr, box))
        visit.cancel_scope.cancel()
    return relay


def _carried(tmp_path, *, notes_to: str):
    """carol follows bob and writes to him; only the relay ever meets carol's node, and bob's node
    never meets hers. Returns (bob's home and key, carol's key, the box's hash, relay home and key)."""
    hb, kb = make_home(tmp_path, "bob")
    hc, kc = make_home(tmp_path, "carol")
    hr, kr = make_home(tmp_path, "relay")
    follow(hc, kc, kb)
    follow(hr, kr, kc)  # the relay replicates carol, not bob
    with Store(hc.store_path) as store:
        dm.send(store, kc, [kb.public_key], f"hello bob, {notes_to}", now=SYSTEM_CLOCK.wall_ms())
        (raw,) = store.read("SELECT hash FROM entries WHERE author = ? AND type = 'box'", (kc.public_key,))[0]
    return hb, kb, hc, kc, hr, kr, bytes(raw)


def _inbox_texts(hb, kb) -> tuple[list[str], list]:
    with Store(hb.store_path) as store:
        return [c["last"]["text"] for c in messages.inbox(store, BoxKey(kb))], messages.inbox(
            store, BoxKey(kb), requests=True
        )


async def test_a_node_that_carries_a_followers_log_tells_bob_of_the_follow(tmp_path):
    """Follower notes (spec §12.3, version 5): bob's node and carol's never meet; the relay, which holds
    carol's follow of bob, sends it to bob when his first clock arrives, and bob then fetches her log
    after it, her message among it, and lists it in his inbox (she follows him: not a request)."""
    hb, kb, hc, kc, hr, kr, box = _carried(tmp_path, notes_to="via a carrier")
    async with trio.open_nursery() as nursery:
        relay = await carol_visits(nursery, hr, kr, hc, kc, box)
        bob = await start_node(nursery, hb, kb, peers=[relay.address])
        await wait_until(lambda: has_entry(hb, box))
        assert kc.public_key in bob.wanted
        (conn,) = bob.connections.values()
        assert conn.feed == kr.public_key and conn.notes.looked_at == 1 and conn.useless == 0
        # her follow, now stored, makes her a follower like any other: no longer only noted
        await wait_until(lambda: kc.public_key not in bob.noted and kc.public_key in bob.wanted)
        nursery.cancel_scope.cancel()
    inbox, requests = _inbox_texts(hb, kb)
    assert inbox == ["hello bob, via a carrier"] and requests == []
    assert count(hb, kc.public_key) == count(hc, kc.public_key)  # her whole log, not from the follow on


async def test_follower_notes_reach_a_one_shot_sync_too(tmp_path):
    """bob was offline when carol wrote and she is offline now: a one-shot sync with the relay brings
    him the follow, then her message, in the same sync."""
    hb, kb, hc, kc, hr, kr, box = _carried(tmp_path, notes_to="in one sync")
    async with trio.open_nursery() as nursery:
        relay = await carol_visits(nursery, hr, kr, hc, kc, box)
        from tidings.node.net.node import Node

        bob = Node(hb, kb, listen="127.0.0.1:0")
        with trio.fail_after(20):
            await bob.sync_once(relay.address)
        nursery.cancel_scope.cancel()
    assert has_entry(hb, box) and count(hb, kc.public_key) == count(hc, kc.public_key)
    inbox, _ = _inbox_texts(hb, kb)
    assert inbox == ["hello bob, in one sync"]


async def test_follower_notes_are_bounded_and_only_signed_follows_of_us_are_taken(tmp_path, nursery):
    """A scripted peer sends follower notes: follows of another feed, a follow of the node with a
    broken signature, then ten follows of the node, in two messages. The node looks at
    MAX_FOLLOWER_NOTES of them: the validly signed follows of itself among those make their authors
    wanted (noted, not stored: their whole logs are to be fetched); everything else costs the peer as
    useless entries. Nothing is stored."""
    import os

    from tidings.protocol import Follow, SigningKey, create_entry, encode_content
    from tidings.protocol.replication import Followers, Hello, Replication
    from tidings.protocol.replication_events import MAX_FOLLOWER_NOTES

    from tests.node.net.test_hostile_peers import evil_session
    from tests.support.nodes import next_host

    hv, kv = make_home(tmp_path, "victim")
    victim = await start_node(nursery, hv, kv)
    other = SigningKey(os.urandom(32))

    def follow_entry(key: SigningKey, target: bytes) -> tuple[bytes, bytes]:
        payload = encode_content(Follow(feed=target))
        entry = create_entry(key, seq=1, backlink=None, skiplink=None, timestamp=1_000, payload=payload)
        return entry.raw, payload

    outsiders = [SigningKey(os.urandom(32)) for _ in range(2)]
    strangers = [follow_entry(k, other.public_key) for k in outsiders]
    liar = SigningKey(os.urandom(32))
    raw, payload = follow_entry(liar, kv.public_key)
    forged = (raw[:-1] + bytes([raw[-1] ^ 1]), payload)  # the last byte of its signature
    fans = [SigningKey(os.urandom(32)) for _ in range(10)]
    notes = [*strangers, forged, *(follow_entry(k, kv.public_key) for k in fans)]
    channel = await evil_session(victim.address, SigningKey(os.urandom(32)), next_host(), nursery)
    rep = Replication()
    rep.send(Hello(agent="tidings"))  # evil_session sent it
    rep.receive(Replication().send(Hello(agent="victim"))[0])  # as the victim's, which it read: version 5
    await channel.send(rep.send(Followers(items=tuple(notes[:MAX_FOLLOWER_NOTES]))))
    await channel.send(rep.send(Followers(items=tuple(notes[MAX_FOLLOWER_NOTES:]))))
    taken = MAX_FOLLOWER_NOTES - len(strangers) - 1
    (conn,) = victim.connections.values()
    await wait_until(lambda: conn.useless == len(notes) - taken)
    assert conn.notes.looked_at == MAX_FOLLOWER_NOTES and conn.notes.taken == taken
    assert victim.noted == {f.public_key for f in fans[:taken]} <= victim.wanted
    assert not any(f.public_key in victim.wanted for f in [liar, *fans[taken:], *outsiders])
    assert all(count(hv, k.public_key) == 0 for k in [liar, *fans, *outsiders])  # nothing stored
    await channel.aclose()
