"""Replayed work against a real node (issue 15 items 2 and 3; spec/protocol.md §12.8.6).

A scripted peer with the real handshake replays one fork proof 100 times a frame, or one clock item
again and again. During each attack an honest follower still syncs within twice its unattacked time
(both measured here, each into a fresh home), the victim answers a read through its database thread
and its web API (``GET /api/status`` and ``/api/timeline`` with the token) in < 200 ms p95, the
attacker is cut off and banned, and the bytes the victim sends it stay within 10x the bytes it sent.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import pytest
import trio
from tidings.node.addresses import parse_address
from tidings.node.net.node import Node
from tidings.node.net.transport import ChannelClosed, SecureChannel
from tidings.protocol import Post, SigningKey
from tidings.protocol.entry import ForkProof, create_entry
from tidings.protocol.replication import Clock, ClockItem, Forks, Hello, Replication
from tidings.storage.store import Store

from tests.support.nodes import count, follow, make_home, next_host, start_writer, wait_until
from tests.support.web import WebNode, api_p95, start_web_node

#: The default limits but for the ban, short enough for a test to see, and twice the default work
#: budget (4000 units), so that the attack outlasts the honest syncs on a busy machine.
LIMITS = {"ban_seconds": 60.0, "work_budget": 4000.0}
#: The victim's own feed, which the attacker asks for, and a feed it follows, which makes the honest
#: follower's sync long enough (~0.5 s) to time. Each sync time is the best of three: the machine's other
#: load must not decide the test.
ENTRIES = 600
FOLLOWED = 2500


@dataclass
class Attack:
    host: str
    channel: SecureChannel
    rep: Replication
    #: frames a second while the honest follower syncs, and once it is done
    slow: float
    fast: float
    frames: int = 0
    measured: bool = False
    #: the channel's byte counts when the replay starts (after the first, honest-looking answer)
    start_out: int = 0
    start_in: int = 0
    closed: bool = False


@pytest.fixture
async def served(tmp_path, nursery) -> WebNode:
    """The victim, serving its web API."""
    home, key = make_home(tmp_path, "victim")
    friend = SigningKey(os.urandom(32))
    with Store(home.store_path) as s:
        s.append_many(key, [Post(text=f"honest post {i} " + "lorem ipsum " * 8) for i in range(ENTRIES)])
        s.append_many(friend, [Post(text=f"friend's post {i}") for i in range(FOLLOWED)])
    follow(home, key, friend)
    return await start_web_node(nursery, home, key, limits=LIMITS)


@pytest.fixture
def victim(served: WebNode) -> Node:
    return served.node


async def honest_sync(tmp_path, victim: Node) -> float:
    """Seconds for a fresh follower to sync the victim's feed and the one it follows (all of both)
    with ``sync_once``."""
    home, key = make_home(tmp_path, f"follower-{os.urandom(3).hex()}")
    follow(home, key, victim.key)
    node = Node(home, key, listen=f"{next_host()}:0")
    start = time.perf_counter()
    with trio.fail_after(30):
        await node.sync_once(victim.address)
    took = time.perf_counter() - start
    assert count(home, victim.key.public_key) == count(victim.home, victim.key.public_key) > ENTRIES
    with Store(home.store_path) as store:
        assert store.read("SELECT count(*) FROM entries")[0][0] > ENTRIES + FOLLOWED
    return took


async def best_sync(tmp_path, victim: Node) -> float:
    return min([await honest_sync(tmp_path, victim) for _ in range(3)])


async def local_p95(victim: Node, n: int = 20) -> float:
    """p95 (s) of a read through the victim's database thread, as its web API would make."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        await victim.db.call(Store.read, "SELECT count(*) FROM entries")
        times.append(time.perf_counter() - start)
        await trio.sleep(0.01)
    return sorted(times)[int(n * 0.95) - 1]


async def connect(
    victim: Node, key: SigningKey, nursery: trio.Nursery, *, slow: float, fast: float
) -> Attack:
    host = next_host()
    address, port = parse_address(victim.address)
    stream = await trio.open_tcp_stream(address, port, local_address=host)
    channel = await SecureChannel.handshake(
        stream, initiator=True, identity=key, transport_private=os.urandom(32)
    )
    await start_writer(nursery, channel)
    rep = Replication()
    await channel.send(rep.send(Hello(agent="tidings")))
    rep.receive(await channel.receive())
    return Attack(host=host, channel=channel, rep=rep, slow=slow, fast=fast)


async def drain(attack: Attack) -> None:
    """Read (and count, in the channel) whatever the victim sends, until it closes the connection."""
    try:
        while True:
            await attack.channel.receive()
    except (ChannelClosed, trio.BrokenResourceError, trio.ClosedResourceError):
        attack.closed = True
    finally:
        await attack.channel.stream.aclose()


async def replay(attack: Attack, frames: list[bytes]) -> None:
    """Send ``frames`` again and again, under the frame rate limit, until the victim hangs up."""
    try:
        while not attack.closed:
            await attack.channel.send(frames)
            attack.frames += 1
            await trio.sleep(1 / (attack.fast if attack.measured else attack.slow))
    except (ChannelClosed, trio.BrokenResourceError, trio.ClosedResourceError):
        attack.closed = True


async def under_attack(tmp_path, served: WebNode, attack: Attack, frames: list[bytes]):
    """Run the replay; meanwhile sync an honest follower, time local reads and the web API, then replay
    faster until the attacker is cut off. Returns (sync seconds, local p95, web API p95).

    The web API is timed after the syncs, not during them: the honest follower runs in this process,
    on this event loop, and its own work would be counted against the victim."""
    victim = served.node
    async with trio.open_nursery() as inner:
        inner.start_soon(replay, attack, frames)
        await wait_until(lambda: attack.frames >= 20)
        synced = await best_sync(tmp_path, victim)
        p95 = await local_p95(victim)
        web_p95 = await api_p95(served)
        assert not attack.closed, "the attack ended before the measurements: they measured nothing"
        attack.measured = True
        await wait_until(lambda: attack.closed, timeout=30)
    return synced, p95, web_p95


def assert_cut_off(victim: Node, attack: Attack) -> None:
    assert victim.penalties.banned(attack.host)
    assert "low_score" in victim.penalties.by_host[attack.host].last_reason
    assert victim.scores.get(attack.host) < victim.scores.threshold
    assert not any(c.host == attack.host for c in victim.connections.values())


def amplification(attack: Attack) -> tuple[float, float]:
    """(victim bytes / attacker bytes) over the whole connection, and over the replay alone."""
    channel = attack.channel
    whole = channel.bytes_in / channel.bytes_out
    replayed = (channel.bytes_in - attack.start_in) / (channel.bytes_out - attack.start_out)
    return whole, replayed


async def test_replayed_clocks_are_answered_once_and_the_replayer_cut_off(tmp_path, served, victim, nursery):
    """Issue 15 item 3: ``clock [[victim_feed, 0, 0]]`` again and again."""
    base = await best_sync(tmp_path, victim)
    attack = await connect(victim, SigningKey(os.urandom(32)), nursery, slow=200, fast=1000)
    nursery.start_soon(drain, attack)
    clock = attack.rep.send(Clock(items=[ClockItem(victim.key.public_key, 0, 0)]))
    await attack.channel.send(clock)  # the first time, it gets the whole feed, as any follower would
    conn = next(c for c in victim.connections.values() if c.host == attack.host)
    held = count(victim.home, victim.key.public_key)
    await wait_until(lambda: conn.sent == held)
    first = attack.channel.bytes_in
    attack.start_out, attack.start_in = attack.channel.bytes_out, first
    synced, p95, web_p95 = await under_attack(tmp_path, served, attack, clock)
    assert_cut_off(victim, attack)
    assert conn.sent == held  # not one entry went out twice
    assert conn.work.repeats >= 100 and conn.work.budget.refusals >= 1
    whole, replayed = amplification(attack)
    assert whole < 10 and replayed < 1, (whole, replayed)
    assert synced < 2 * base, (base, synced)
    assert p95 < 0.2, p95
    assert web_p95 < 0.2, web_p95


def fork_of(key: SigningKey) -> bytes:
    one = create_entry(key, seq=1, backlink=None, skiplink=None, timestamp=1, payload=b"\x80")
    two = create_entry(key, seq=1, backlink=None, skiplink=None, timestamp=2, payload=b"\x80")
    return ForkProof(first=one, second=two).encode()


@pytest.mark.parametrize("wanted", [False, True], ids=["throwaway_feed", "followed_feed"])
async def test_replayed_fork_proofs_cost_no_signature_checks_and_the_sender_is_cut_off(
    tmp_path, served, victim, nursery, wanted
):
    """Issue 15 item 2: one valid fork proof, 100 copies a frame, again and again."""
    base = await best_sync(tmp_path, victim)
    forker = SigningKey(os.urandom(32))
    if wanted:  # the victim follows the forked feed: the proof is checked once, then known
        follow(victim.home, victim.key, forker)
        await victim.current_wants()
        assert forker.public_key in victim.wanted
    checked = victim.proofs.checked
    attack = await connect(victim, SigningKey(os.urandom(32)), nursery, slow=20, fast=100)
    nursery.start_soon(drain, attack)
    frames = attack.rep.send(Forks(proofs=[fork_of(forker)] * 100))
    synced, p95, web_p95 = await under_attack(tmp_path, served, attack, frames)
    assert_cut_off(victim, attack)
    assert victim.proofs.checked - checked == (1 if wanted else 0)
    assert attack.frames >= 20
    whole, _ = amplification(attack)
    assert whole < 1, whole  # the victim sends next to nothing back
    assert synced < 2 * base, (base, synced)
    assert p95 < 0.2, p95
    assert web_p95 < 0.2, web_p95
