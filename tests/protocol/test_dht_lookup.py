"""The iterative lookup state machine, one event at a time (no network)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tidings.protocol import LocalProtocolError
from tidings.protocol.dht_wire import (
    Contact,
    FindNode,
    FindValue,
    GetMembers,
    MembersReply,
    NodesReply,
    PingReply,
    StoreReply,
    ValueReply,
)
from tidings.protocol.lookup import Lookup, LookupKind
from tidings.protocol.routing import distance

OWN = b"\xff" * 20
TARGET = b"\x00" * 20


def c(n: int) -> Contact:
    """Contact n: a larger n is farther from TARGET."""
    return Contact(node_id=n.to_bytes(20, "big"), host=f"127.0.{n // 250}.{n % 250 + 2}", port=9000)


def test_emits_alpha_queries_closest_first_and_converges() -> None:
    seeds = [c(n) for n in (900, 800, 700, 600, 500)]
    lookup = Lookup(own_id=OWN, target=TARGET, kind=LookupKind.FIND_NODE, seeds=seeds, k=3, alpha=2)
    first = lookup.next_queries(now=0.0)
    assert [q.contact for q in first] == [c(500), c(600)]
    assert all(q.request == FindNode(node_id=OWN, key=TARGET) and q.deadline == 2.0 for q in first)
    assert lookup.next_queries(0.0) == []  # alpha in flight
    lookup.handle_reply(c(500).node_id, NodesReply(contacts=(c(10), c(20), c(30))))
    assert [q.contact for q in lookup.next_queries(0.1)] == [c(10)]
    lookup.handle_reply(c(600).node_id, NodesReply(contacts=()))
    lookup.handle_reply(c(10).node_id, NodesReply(contacts=(c(5),)))
    assert [q.contact for q in lookup.next_queries(0.2)] == [c(5), c(20)]
    lookup.handle_reply(c(5).node_id, NodesReply(contacts=()))
    lookup.handle_reply(c(20).node_id, NodesReply(contacts=()))
    # the 3 closest (5, 10, 20) all responded: done, though 30 and 700.. were never asked
    assert lookup.done and lookup.next_queries(0.3) == []
    result = lookup.result()
    assert result.contacts == (c(5), c(10), c(20))
    assert result.hops == 3  # 500 (hop 1) named 10 (hop 2), which named 5 (hop 3)
    assert result.queries == 5 and result.found


def test_timeouts_fail_queries_and_late_replies_are_ignored() -> None:
    lookup = Lookup(
        own_id=OWN, target=TARGET, kind=LookupKind.FIND_NODE, seeds=[c(1), c(2)], k=2, timeout=1.0, retries=1
    )
    lookup.next_queries(now=10.0)
    assert lookup.get_timer() == 10.5  # the resend time: timeout / (1 + retries)
    assert lookup.handle_timer(10.4) == [] and lookup.next_queries(10.4) == []
    assert lookup.handle_timer(10.5) == []  # silent so far: asked once more, within the same deadline
    resent = lookup.next_queries(10.5)
    assert [q.contact for q in resent] == [c(1), c(2)] and {q.deadline for q in resent} == {11.0}
    assert lookup.get_timer() == 11.0 and lookup.next_queries(10.7) == []
    assert lookup.handle_timer(11.0) == [c(1), c(2)]  # one timeout in all, however many resends
    assert lookup.done and lookup.get_timer() is None
    lookup.handle_reply(c(1).node_id, NodesReply(contacts=(c(0),)))  # too late
    result = lookup.result()
    assert result.timeouts == 2 and result.queries == 4 and not result.found and result.contacts == ()


def test_a_resend_makes_up_for_a_lost_datagram() -> None:
    lookup = Lookup(own_id=OWN, target=TARGET, kind=LookupKind.FIND_NODE, seeds=[c(1)], k=2, timeout=1.0)
    lookup.next_queries(0.0)
    lookup.handle_timer(0.5)
    assert [q.contact for q in lookup.next_queries(0.5)] == [c(1)]
    lookup.handle_reply(c(1).node_id, NodesReply(contacts=()))
    assert lookup.done and lookup.result().contacts == (c(1),) and lookup.result().timeouts == 0


def test_a_stalled_query_gives_up_its_slot_and_dead_contacts_cost_one_timeout() -> None:
    # k=3, alpha=2: 100 and 200 are dead, 300.. answer. Without stalls the lookup would wait for the
    # dead pair's deadline (1.0) before asking 300 and 400, and 400 only after 300's dead twin failed.
    seeds = [c(n) for n in (100, 200, 300, 400, 500)]
    lookup = Lookup(
        own_id=OWN,
        target=TARGET,
        kind=LookupKind.FIND_NODE,
        seeds=seeds,
        k=3,
        alpha=2,
        timeout=1.0,
        stall=0.1,
    )
    assert [q.contact for q in lookup.next_queries(0.0)] == [c(100), c(200)]
    assert lookup.get_timer() == 0.1
    assert lookup.handle_timer(0.1) == []  # stalled, not failed: still waited for
    asked = lookup.next_queries(0.1)
    # the stalled pair counts as gone when choosing whom to ask: the next two of the k closest
    assert [q.contact for q in asked] == [c(300), c(400)]
    lookup.handle_reply(c(300).node_id, NodesReply(contacts=()))
    lookup.handle_reply(c(400).node_id, NodesReply(contacts=()))
    assert [q.contact for q in lookup.next_queries(0.15)] == [c(500)]
    lookup.handle_reply(c(500).node_id, NodesReply(contacts=()))
    # 100 and 200 are still among the k closest not FAILED: a late answer from them would count
    assert not lookup.done
    assert lookup.handle_timer(0.5) == [] and {q.contact for q in lookup.next_queries(0.5)} == {
        c(100),
        c(200),
    }
    assert lookup.handle_timer(1.0) == [c(100), c(200)]
    assert lookup.done and lookup.result().contacts == (c(300), c(400), c(500))
    assert lookup.result().timeouts == 2


def test_a_stalled_contact_that_answers_late_still_counts() -> None:
    lookup = Lookup(
        own_id=OWN, target=TARGET, kind=LookupKind.FIND_NODE, seeds=[c(1), c(2)], k=2, alpha=1, stall=0.2
    )
    assert [q.contact for q in lookup.next_queries(0.0)] == [c(1)]
    lookup.handle_timer(0.2)
    assert [q.contact for q in lookup.next_queries(0.2)] == [c(2)]
    lookup.handle_reply(c(2).node_id, NodesReply(contacts=()))
    assert not lookup.done  # 1 is closer and still awaited
    lookup.handle_reply(c(1).node_id, NodesReply(contacts=(c(0),)))
    assert [q.contact for q in lookup.next_queries(0.3)] == [c(0)]
    lookup.handle_reply(c(0).node_id, NodesReply(contacts=()))
    assert lookup.done and lookup.result().contacts == (c(0), c(1))


def test_wrong_shaped_replies_count_as_failures() -> None:
    lookup = Lookup(own_id=OWN, target=TARGET, kind=LookupKind.FIND_NODE, seeds=[c(1), c(2), c(3)], k=3)
    lookup.next_queries(0.0)
    lookup.handle_reply(c(1).node_id, ValueReply(value=b"?"))
    lookup.handle_reply(c(2).node_id, PingReply(node_id=OWN))
    lookup.handle_failure(c(3).node_id)  # e.g. the adapter could not parse the datagram
    lookup.handle_reply(b"\x42" * 20, NodesReply(contacts=()))  # never asked: ignored
    assert lookup.done and lookup.result().rejected == 3


def test_find_value_accepts_only_validated_values() -> None:
    lookup = Lookup(
        own_id=OWN,
        target=TARGET,
        kind=LookupKind.FIND_VALUE,
        seeds=[c(1), c(2), c(3)],
        validate=lambda v: v == b"honest",
    )
    assert all(isinstance(q.request, FindValue) for q in lookup.next_queries(0.0))
    lookup.handle_reply(c(1).node_id, ValueReply(value=b"forged"))
    assert not lookup.done
    lookup.handle_reply(c(2).node_id, NodesReply(contacts=(c(4),)))
    lookup.handle_reply(c(3).node_id, ValueReply(value=b"honest"))
    assert lookup.done
    result = lookup.result()
    assert [f.value for f in result.values] == [b"honest"] and result.found
    assert result.rejected == 1 and result.nearest_without_value == c(2) and result.hops == 1


def test_quorum_waits_for_more_values() -> None:
    lookup = Lookup(own_id=OWN, target=TARGET, kind=LookupKind.FIND_VALUE, seeds=[c(1), c(2), c(3)], quorum=2)
    lookup.next_queries(0.0)
    lookup.handle_reply(c(1).node_id, ValueReply(value=1))
    assert not lookup.done
    lookup.handle_reply(c(2).node_id, ValueReply(value=2))
    assert lookup.done and [f.value for f in lookup.result().values] == [1, 2]


def test_quorum_zero_runs_to_the_end_and_collects_every_value() -> None:
    lookup = Lookup(own_id=OWN, target=TARGET, kind=LookupKind.FIND_VALUE, seeds=[c(1), c(2), c(3)], quorum=0)
    lookup.next_queries(0.0)
    lookup.handle_reply(c(1).node_id, ValueReply(value=b"old"))
    lookup.handle_reply(c(2).node_id, NodesReply(contacts=(c(4),)))
    assert not lookup.done  # no early end at the first value
    lookup.handle_reply(c(3).node_id, ValueReply(value=b"old"))
    (query,) = lookup.next_queries(0.1)
    assert query.contact == c(4)
    lookup.handle_reply(c(4).node_id, ValueReply(value=b"new"))
    assert lookup.done and [f.value for f in lookup.result().values] == [b"old", b"new"]
    with pytest.raises(LocalProtocolError):
        Lookup(own_id=OWN, target=TARGET, kind=LookupKind.FIND_VALUE, seeds=[], quorum=-1)


def test_members_lookup_collects_from_both_reply_shapes() -> None:
    lookup = Lookup(
        own_id=OWN,
        target=TARGET,
        kind=LookupKind.MEMBERS,
        seeds=[c(1), c(2), c(3)],
        validate=lambda v: isinstance(v, bytes) and v.startswith(b"ok"),
    )
    assert all(isinstance(q.request, GetMembers) for q in lookup.next_queries(0.0))
    lookup.handle_reply(c(1).node_id, MembersReply(records=(b"ok-a", b"bad", b"ok-b"), contacts=(c(0),)))
    lookup.handle_reply(c(2).node_id, ValueReply(value=b"ok-c"))  # a stock node asked with find_value
    lookup.handle_reply(c(3).node_id, NodesReply(contacts=()))
    assert not lookup.done  # members lookups converge like find_node
    lookup.next_queries(0.1)
    lookup.handle_reply(c(0).node_id, MembersReply(records=(b"ok-a",), contacts=()))
    assert lookup.done
    assert sorted(f.value for f in lookup.result().values) == [b"ok-a", b"ok-b", b"ok-c"]


def test_disjoint_paths_never_share_a_node() -> None:
    rng = random.Random(3)
    ids = [rng.randbytes(20) for _ in range(300)]
    contacts = [Contact(node_id=i, host=f"127.1.{n // 250}.{n % 250 + 2}", port=1) for n, i in enumerate(ids)]
    lookup = Lookup(own_id=OWN, target=TARGET, kind=LookupKind.FIND_NODE, seeds=contacts[:9], paths=3, k=8)
    path_of: dict[bytes, int] = {}
    now = 0.0
    while not lookup.done:
        queries = lookup.next_queries(now)
        assert queries
        for q in queries:
            assert q.contact.node_id not in path_of  # each node queried once in the whole lookup
            path_of[q.contact.node_id] = q.path
            named = rng.sample(contacts, 10)
            lookup.handle_reply(q.contact.node_id, NodesReply(contacts=tuple(named)))
        now += 0.1
    assert set(path_of.values()) == {0, 1, 2}
    result = lookup.result()
    responded = sorted(path_of, key=lambda i: distance(i, TARGET))[:8]
    assert [x.node_id for x in result.contacts] == responded


def test_query_budget_bounds_the_lookup() -> None:
    lookup = Lookup(
        own_id=OWN, target=TARGET, kind=LookupKind.FIND_NODE, seeds=[c(1000)], k=20, max_queries=5
    )
    n = 999
    while not lookup.done:
        for q in lookup.next_queries(0.0):
            n -= 3
            lookup.handle_reply(q.contact.node_id, NodesReply(contacts=(c(n), c(n + 1), c(n + 2))))
    assert lookup.result().queries == 5


def test_own_id_and_duplicates_are_skipped_and_bad_arguments_refused() -> None:
    me = Contact(node_id=OWN, host="127.0.0.2", port=1)
    lookup = Lookup(own_id=OWN, target=TARGET, kind=LookupKind.FIND_NODE, seeds=[me, c(1), c(1)])
    assert [q.contact for q in lookup.next_queries(0.0)] == [c(1)]
    with pytest.raises(LocalProtocolError):
        Lookup(own_id=OWN, target=b"x", kind=LookupKind.FIND_NODE, seeds=[])
    with pytest.raises(LocalProtocolError):
        Lookup(own_id=OWN, target=TARGET, kind=LookupKind.FIND_NODE, seeds=[], alpha=0)
    with pytest.raises(LocalProtocolError):
        Lookup(own_id=OWN, target=TARGET, kind=LookupKind.FIND_NODE, seeds=[], stall=0)
    assert Lookup(own_id=OWN, target=TARGET, kind=LookupKind.FIND_NODE, seeds=[]).done


_replies = st.one_of(
    st.builds(
        lambda ns: NodesReply(contacts=tuple(c(n) for n in ns)), st.lists(st.integers(0, 60), max_size=8)
    ),
    st.builds(lambda v: ValueReply(value=v), st.binary(max_size=3)),
    st.builds(
        lambda rs: MembersReply(records=tuple(rs), contacts=()), st.lists(st.binary(max_size=3), max_size=3)
    ),
    st.just(StoreReply(stored=True)),
    st.none(),  # no reply: wait for the timer
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(list(LookupKind)), st.integers(1, 3), st.lists(_replies, min_size=1, max_size=40))
def test_any_reply_sequence_terminates_cleanly(kind: LookupKind, paths: int, script: list[object]) -> None:
    lookup = Lookup(
        own_id=OWN,
        target=TARGET,
        kind=kind,
        seeds=[c(n) for n in range(50, 60)],
        k=4,
        paths=paths,
        timeout=1.0,
        validate=lambda v: v == b"\x01",
    )
    now = 0.0
    step = 0
    for _ in range(500):
        if lookup.done:
            break
        for q in lookup.next_queries(now):
            reply = script[step % len(script)]
            step += 1
            if reply is not None:
                lookup.handle_reply(q.contact.node_id, reply)  # type: ignore[arg-type]
        timer = lookup.get_timer()
        if timer is not None:
            now = max(now, timer)
            lookup.handle_timer(now)
    assert lookup.done
    result = lookup.result()
    assert result.queries <= 8 * 4 * paths
    assert list(result.contacts) == sorted(result.contacts, key=lambda x: distance(x.node_id, TARGET))
