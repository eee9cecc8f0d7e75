"""The DHT record store cannot be filled from one source range (spec/protocol.md §13.5; issue 15 item 6).

Sans-IO: the store is fed what a flood would deliver, with time passed in (a fake clock in ms).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from itertools import count

from tidings.protocol import SigningKey
from tidings.protocol.dht_wire import digest
from tidings.protocol.record_quota import Holdings, fair_victim
from tidings.protocol.record_store import PLAIN_PER_RANGE, PLAIN_TTL_MS, RecordStore
from tidings.protocol.records import (
    MemberRecord,
    NodeRecord,
    create_member_record,
    create_node_record,
    swarm_key,
)

NOW = 1_700_000_000_000
HOUR = 3_600_000
ATTACKER = "203.0.113.0/24"  # one address, or all 256 of its /24: the store sees the same range
_seeds = count(1)


def signer() -> SigningKey:
    return SigningKey(next(_seeds).to_bytes(32, "big"))


def node_record(key: SigningKey, now: int = NOW, seq: int = 1) -> NodeRecord:
    return create_node_record(
        key, addresses=[("192.0.2.7", 7433)], transport_key=b"\x09" * 32, seq=seq, expiry_ms=now + HOUR
    )


def member(key: SigningKey, swarm: str = "gardening", now: int = NOW, seq: int = 1) -> MemberRecord:
    return create_member_record(
        key, swarm=swarm, addresses=[("192.0.2.7", 7433)], seq=seq, expiry_ms=now + HOUR
    )


def honest_range(i: int) -> str:
    return f"198.51.{i}.0/24"


def plain_flood(store: RecordStore, *, rate: float = 190.0, seconds: float = 55.0) -> Iterator[int]:
    """Plain values under fresh keys from ``ATTACKER``, as fast as the per-IP rate limit lets; yields
    the time of each store."""
    for i in range(int(rate * seconds)):
        now = NOW + int(i * 1000 / rate)
        store.put(digest(f"junk {i}"), b"x" * 1000, now, source=ATTACKER)
        yield now


def test_a_plain_flood_from_one_range_never_refuses_a_signed_record() -> None:
    store = RecordStore()
    earlier = node_record(signer())
    assert store.put(earlier.key, earlier.encode(), NOW, source=honest_range(1)).code == "stored"
    assert store.put(digest("stock"), "a stock node's value", NOW, source=honest_range(2)).code == "stored"
    for i, now in enumerate(plain_flood(store)):
        if i % 1000 == 999:  # honest records keep coming during the attack: none is refused
            record = node_record(signer(), now)
            assert store.put(record.key, record.encode(), now, source=honest_range(3)).accepted
    assert store.held_by(ATTACKER) == (0, PLAIN_PER_RANGE)  # 10,450 stores: its quota, no more
    assert store.statistics()["plain_values"] == PLAIN_PER_RANGE + 1
    # nothing honest was lost
    assert store.get(earlier.key, NOW + 60_000) == earlier.encode()
    assert store.get(digest("stock"), NOW + 60_000) == "a stock node's value"
    assert store.held_by(honest_range(3)) == (10, 0)
    # an honest stock node from another range may still store plain values
    assert store.put(digest("later"), 7, NOW + 60_000, source=honest_range(4)).code == "stored"


def test_plain_values_are_evicted_first_when_the_store_is_full() -> None:
    # a store the size of the attack, all of it open to plain values from many ranges
    store = RecordStore(max_records=300, max_plain=300, plain_per_range=300)
    for i in range(300):
        assert store.put(digest(f"junk {i}"), i, NOW, source=f"10.0.{i % 3}.0/24").code == "stored"
    assert len(store) == 300
    assert store.put(digest("one more"), 1, NOW, source="10.0.0.0/24").code == "full"  # fair share
    record, swarm_member = node_record(signer()), member(signer())
    assert store.put(record.key, record.encode(), NOW, source="10.0.0.0/24").code == "stored"
    assert store.put(swarm_member.key, swarm_member.encode(), NOW, source="10.0.0.0/24").code == "stored"
    assert len(store) == 300 and store.statistics()["store_evicted"] == 2
    assert store.get(digest("junk 0"), NOW) is None  # the oldest of a range holding the most went


def test_plain_values_live_hours_not_a_day() -> None:
    store = RecordStore()
    store.put(digest("k"), "v", NOW, source=ATTACKER)
    assert PLAIN_TTL_MS < 24 * HOUR
    assert store.get(digest("k"), NOW + PLAIN_TTL_MS - 1) == "v"
    assert store.get(digest("k"), NOW + PLAIN_TTL_MS) is None
    assert store.expire(NOW + PLAIN_TTL_MS) == 1 and store.held_by(ATTACKER) == (0, 0)


def test_signed_records_from_one_range_are_capped_and_ranges_share_a_full_store() -> None:
    store = RecordStore(max_records=40, per_range=10)
    flood = [node_record(signer()) for _ in range(15)]
    codes = [store.put(r.key, r.encode(), NOW, source=ATTACKER).code for r in flood]
    assert codes == ["stored"] * 10 + ["quota"] * 5
    honest = [node_record(signer()) for _ in range(3)]
    for r in honest:
        assert store.put(r.key, r.encode(), NOW, source=honest_range(1)).code == "stored"
    # more attacker ranges fill the store ...
    for n in range(3):
        for _ in range(10):
            r = node_record(signer())
            store.put(r.key, r.encode(), NOW, source=f"203.0.{n}.0/24")
    assert len(store) == 40
    # ... yet a new honest range gets in, evicting from a range that holds the most, and the honest
    # records stored before are all still there
    late = node_record(signer())
    assert store.put(late.key, late.encode(), NOW, source=honest_range(2)).code == "stored"
    assert all(store.get(r.key, NOW) == r.encode() for r in [*honest, late])
    # the ranges filling the store evened out at 9 each; the honest ones lost nothing
    assert [store.held_by(f"203.0.{n}.0/24")[0] for n in range(3)] == [9, 9, 9]
    assert store.held_by(ATTACKER)[0] == 9 and len(store) == 40


def test_a_newer_version_is_taken_from_a_range_at_its_quota() -> None:
    store = RecordStore(per_range=2)
    owner = signer()
    for r in (node_record(owner), node_record(signer())):
        assert store.put(r.key, r.encode(), NOW, source=ATTACKER).code == "stored"
    newer = node_record(owner, seq=2)
    assert store.put(newer.key, newer.encode(), NOW, source=ATTACKER).code == "replaced"
    fresh = node_record(signer())
    assert store.put(fresh.key, fresh.encode(), NOW, source=ATTACKER).code == "quota"


def test_sybil_members_from_one_range_do_not_keep_an_honest_member_out() -> None:
    store = RecordStore()
    key = swarm_key("gardening")
    sybils = [member(signer()) for _ in range(64)]
    assert all(store.put(key, s.encode(), NOW, source=ATTACKER).code == "stored" for s in sybils)
    more = member(signer())
    assert store.put(key, more.encode(), NOW, source=ATTACKER).code == "full"  # it cannot grow
    honest = [member(signer()) for _ in range(63)]
    for i, h in enumerate(honest):
        assert store.put(key, h.encode(), NOW, source=honest_range(i)).code == "stored"
    held = store.members(key, NOW, rng=random.Random(1))
    assert all(h.encode() in held for h in honest) and len(held) == 64
    assert store.held_by(ATTACKER)[0] == 1  # the Sybils' range keeps one slot among 63 others
    # the Sybils cannot win their slots back
    assert store.put(key, member(signer()).encode(), NOW, source=ATTACKER).code == "full"
    # a second honest member of a range already there still gets in while the Sybils hold more
    store2 = RecordStore()
    for s in sybils:
        store2.put(key, s.encode(), NOW, source=ATTACKER)
    for h in honest[:5]:
        assert store2.put(key, h.encode(), NOW, source=honest_range(0)).code == "stored"
    assert store2.held_by(ATTACKER)[0] == 59


def test_a_members_reply_gives_each_range_its_turn() -> None:
    store = RecordStore()
    key = swarm_key("gardening")
    for _ in range(60):
        store.put(key, member(signer()).encode(), NOW, source=ATTACKER)
    honest = [member(signer()) for _ in range(4)]
    for i, h in enumerate(honest):
        store.put(key, h.encode(), NOW, source=honest_range(i))
    rng = random.Random(7)
    for _ in range(20):  # a reply holds about 20 of the 64: always all 4 honest members
        reply = store.members(key, NOW, max_bytes=4000, rng=rng)
        assert 10 < len(reply) < 64 and all(h.encode() in reply for h in honest)


def test_holdings_track_the_largest_range_and_the_oldest_slot() -> None:
    h = Holdings()
    assert h.largest() is None and h.oldest("a") is None
    h.add((b"1", b""), "a")
    h.add((b"2", b""), "b")
    h.add((b"3", b""), "b")
    assert h.largest() == "b" and h.oldest("b") == (b"2", b"") and h.count("b") == 2
    h.add((b"2", b""), "a")  # stored again, by another range: moves
    assert h.count("a") == 2 and h.count("b") == 1 and h.largest() == "a" and h.oldest("a") == (b"1", b"")
    for slot in [(b"1", b""), (b"2", b""), (b"3", b"")]:
        h.discard(slot)
    assert len(h) == 0 and h.largest() is None and h.ranges() == 0
    assert fair_victim({"a": 3, "b": 2}, "b") is None and fair_victim({"a": 3, "b": 1}, "b") == "a"
    assert fair_victim({"a": 1}, "c") is None and fair_victim({"a": 2}, "c") == "a"
