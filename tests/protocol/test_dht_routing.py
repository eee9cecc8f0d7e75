"""Routing table rules: k-buckets, XOR order, replacement cache, per-IP limit, failures, refresh."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tidings.protocol import LocalProtocolError
from tidings.protocol.dht_wire import Contact
from tidings.protocol.routing import Observed, RoutingTable, bucket_index, distance

OWN = b"\x00" * 20


def far_id(n: int) -> bytes:
    """Ids in bucket 0 (first bit differs from OWN)."""
    return (0x80 << 152 | n).to_bytes(20, "big")


def contact(node_id: bytes, n: int, port: int = 8468) -> Contact:
    return Contact(node_id=node_id, host=f"127.0.{n // 250}.{n % 250 + 2}", port=port)


def test_bucket_index_is_the_shared_prefix_length() -> None:
    assert bucket_index(OWN, far_id(1)) == 0
    assert bucket_index(OWN, (1).to_bytes(20, "big")) == 159
    assert bucket_index(OWN, OWN) == 160
    assert distance(b"\x01" * 20, b"\x03" * 20) == int.from_bytes(b"\x02" * 20, "big")


def test_full_bucket_asks_for_a_ping_and_keeps_the_newcomer_as_replacement() -> None:
    table = RoutingTable(OWN, k=20)
    contacts = [contact(far_id(i), i) for i in range(21)]
    for c in contacts[:20]:
        assert table.observe(c, now=float(c.port)).status is Observed.ADDED
    result = table.observe(contacts[20], now=1.0)
    assert result.status is Observed.PENDING
    assert result.ping == contacts[0]  # least recently seen
    assert contacts[20].node_id not in table
    # the ping goes unanswered max_failures times: the replacement moves in
    assert table.failed(contacts[0].node_id) is False
    assert table.failed(contacts[0].node_id) is False
    assert table.failed(contacts[0].node_id) is True
    assert contacts[0].node_id not in table and contacts[20].node_id in table
    assert len(table) == 20


def test_a_failing_contact_is_evicted_at_once_when_a_newcomer_arrives() -> None:
    table = RoutingTable(OWN, k=2)
    a, b, c = (contact(far_id(i), i) for i in range(3))
    table.observe(a, 0.0)
    table.observe(b, 0.0)
    table.failed(b.node_id)
    assert table.observe(c, 1.0).status is Observed.ADDED
    assert b.node_id not in table and {a.node_id, c.node_id} <= set(x.node_id for x in table.contacts())


def test_hearing_from_a_contact_resets_failures_and_moves_it_last() -> None:
    table = RoutingTable(OWN, k=2)
    a, b, c = (contact(far_id(i), i) for i in range(3))
    table.observe(a, 0.0)
    table.observe(b, 1.0)
    table.failed(a.node_id)
    assert table.observe(a, 2.0).status is Observed.UPDATED
    assert table.observe(c, 3.0).ping == b  # a was seen more recently now


def test_per_ip_limit_in_each_bucket() -> None:
    table = RoutingTable(OWN, k=20, per_ip=2)
    same_host = [Contact(node_id=far_id(i), host="127.0.0.9", port=1000 + i) for i in range(5)]
    results = [table.observe(c, 0.0) for c in same_host]
    assert [r.status for r in results] == [Observed.ADDED] * 2 + [Observed.REFUSED] * 3
    assert results[2].reason == "per_ip"
    # another bucket has its own allowance
    near = Contact(node_id=(1).to_bytes(20, "big"), host="127.0.0.9", port=2000)
    assert table.observe(near, 0.0).status is Observed.ADDED
    # distinct addresses are fine
    for i in range(10):
        assert table.observe(contact(far_id(100 + i), 10 + i), 0.0).status is Observed.ADDED


def test_per_ip_limit_also_bounds_the_replacement_cache() -> None:
    table = RoutingTable(OWN, k=2, per_ip=2)
    table.observe(contact(far_id(0), 0), 0.0)
    table.observe(contact(far_id(1), 1), 0.0)
    for i in range(10):
        table.observe(Contact(node_id=far_id(10 + i), host="127.0.0.99", port=3000 + i), 0.0)
    assert table.statistics()["replacements"] == 2


def test_no_takeover_of_working_ids_or_addresses() -> None:
    table = RoutingTable(OWN)
    a = contact(far_id(1), 1)
    table.observe(a, 0.0)
    moved = Contact(node_id=a.node_id, host="127.0.0.50", port=1)
    assert table.observe(moved, 1.0).reason == "id_conflict"
    impostor = Contact(node_id=far_id(2), host=a.host, port=a.port)
    assert table.observe(impostor, 1.0).reason == "address_conflict"
    assert table.observe(Contact(node_id=OWN, host="127.0.0.3", port=1), 1.0).reason == "self"
    # once the contact fails, the id may move
    table.failed(a.node_id)
    assert table.observe(moved, 2.0).status is Observed.UPDATED
    assert table.get(a.node_id) == moved


def test_find_neighbors_returns_the_k_closest_in_order_and_excludes() -> None:
    rng = random.Random(7)
    own = rng.randbytes(20)
    table = RoutingTable(own, k=20, per_ip=2)
    added = []
    for i in range(400):
        c = contact(rng.randbytes(20), i)
        if table.observe(c, 0.0).status is Observed.ADDED:
            added.append(c)
    key = rng.randbytes(20)
    expected = sorted(added, key=lambda c: distance(c.node_id, key))
    assert table.find_neighbors(key) == expected[:20]
    assert table.find_neighbors(key, k=5, exclude={expected[0].node_id}) == expected[1:6]
    table.failed(expected[1].node_id)  # a failing contact is not handed out
    assert expected[1] not in table.find_neighbors(key)
    assert len(table.find_neighbors(key, k=1000)) == len(added) - 1  # never fewer than it could


def test_stale_and_refresh_targets() -> None:
    table = RoutingTable(OWN)
    a, b = contact(far_id(1), 1), contact((1 << 100).to_bytes(20, "big"), 2)
    table.observe(a, 0.0)
    table.observe(b, 50.0)
    assert table.stale(now=100.0, max_age=60.0) == [a]
    rng = random.Random(1)
    targets = table.refresh_targets(now=100.0, max_age=60.0, rng=rng)
    # buckets 0..59 are due, except b's bucket 59, touched at 50 (within the last 60 s)
    indexes = [bucket_index(OWN, t) for t in targets]
    assert indexes == [i for i in range(60) if i != 59]
    table.touch(a.node_id, 100.0)
    assert 0 not in [bucket_index(OWN, t) for t in table.refresh_targets(100.0, 60.0, rng)]


def test_bad_arguments() -> None:
    with pytest.raises(LocalProtocolError):
        RoutingTable(b"short")
    with pytest.raises(LocalProtocolError):
        RoutingTable(OWN, k=0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 40), st.integers(0, 5)), max_size=120))
def test_invariants_hold_under_any_sequence(ops: list[tuple[int, int, int]]) -> None:
    table = RoutingTable(OWN, k=4, per_ip=2, max_failures=2)
    ids = [bytes([i % 8 * 32]) + bytes([i]) * 19 for i in range(41)]
    for now, (op, n, host) in enumerate(ops):
        node_id = ids[n]
        if op <= 1:
            table.observe(Contact(node_id=node_id, host=f"127.0.0.{host + 2}", port=1000 + n), float(now))
        elif op == 2:
            table.failed(node_id)
        else:
            table.remove(node_id)
        per_bucket: dict[int, list[Contact]] = {}
        for c in table.contacts():
            per_bucket.setdefault(bucket_index(OWN, c.node_id), []).append(c)
        for members in per_bucket.values():
            assert len(members) <= 4
            hosts = [c.host for c in members]
            assert all(hosts.count(h) <= 2 for h in hosts)
        addresses = [c.address for c in table.contacts()]
        assert len(addresses) == len(set(addresses)) == len(table)
