"""A flood of valid-looking records costs the store a decode and a lookup, not a signature check
(spec/protocol.md §13.5; issue 15 item 6).

Sans-IO: the store is fed what a flood would deliver, with time passed in (a fake clock in ms), and
its signature check is a counting wrapper around the real one.
"""

from __future__ import annotations

from typing import Any

import pytest
from tidings.protocol.record_admission import VerifyBudget, peek_record
from tidings.protocol.record_store import RecordStore
from tidings.protocol.records import InvalidRecord, Record, swarm_key, validate_record

from .test_dht_store_quotas import ATTACKER, NOW, honest_range, member, node_record, signer

SWARM = swarm_key("gardening")


class CountingCheck:
    """``validate_record`` that counts its calls: each is one Ed25519 verification."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, data: Any, **kwargs: Any) -> Record:
        self.calls += 1
        return validate_record(data, **kwargs)


def forged(record_bytes: bytes) -> bytes:
    """The record with its last signature byte flipped: every cheap field still looks right."""
    return record_bytes[:-1] + bytes([record_bytes[-1] ^ 1])


def test_sybil_members_to_a_full_swarm_key_cost_no_signature_check() -> None:
    check = CountingCheck()
    store = RecordStore(validate=check, budget=VerifyBudget(rate=1000, burst=1000))
    for i in range(12):
        assert store.put(SWARM, member(signer()).encode(), NOW, source=honest_range(i)).code == "stored"
    sybils = [member(signer()).encode() for _ in range(300)]
    codes = [store.put(SWARM, s, NOW + i, source=ATTACKER).code for i, s in enumerate(sybils)]
    assert codes == ["stored"] * 52 + ["full"] * 248
    # the 52 that got in were checked; the 248 refused by the member rule never were
    assert check.calls == 12 + 52
    # a replay of a held record, or an older version, is refused before its check too
    assert store.put(SWARM, sybils[0], NOW + 400, source=ATTACKER).code == "not_newer"
    assert check.calls == 12 + 52
    # an honest member from a range never heard from is checked and admitted, evicting a Sybil
    late = member(signer(), now=NOW + 500)
    assert store.put(SWARM, late.encode(), NOW + 500, source=honest_range(99)).code == "stored"
    assert check.calls == 12 + 53 and store.held_by(ATTACKER)[0] == 51


@pytest.mark.parametrize("rate", [10, 50])
def test_a_flood_from_one_range_buys_at_most_its_rate_of_checks_per_second(rate: int) -> None:
    check = CountingCheck()
    store = RecordStore(validate=check, budget=VerifyBudget(rate=rate, burst=rate))
    # forged node records under fresh keys, 100 a second: nothing cheap refuses them, only the check
    flood = [node_record(signer()) for _ in range(400)]
    per_second = []
    for second in range(4):
        before = check.calls
        for i, record in enumerate(flood[second * 100 : (second + 1) * 100]):
            outcome = store.put(
                record.key, forged(record.encode()), NOW + second * 1000 + i * 10, source=ATTACKER
            )
            assert outcome.code in ("bad_signature", "busy")
        per_second.append(check.calls - before)
    # the first second spends the burst, every later one at most what refilled in it
    assert per_second[0] <= 2 * rate and all(n <= rate for n in per_second[1:])
    assert check.calls == store.checks and store.budget.refused == 400 - check.calls
    # meanwhile a node record from another range is checked and stored at once
    honest = node_record(signer(), now=NOW + 3999)
    assert store.put(honest.key, honest.encode(), NOW + 3999, source=honest_range(1)).code == "stored"
    # and the node's own records are never charged
    own = node_record(signer(), now=NOW + 3999)
    assert store.put(own.key, own.encode(), NOW + 3999).code == "stored"


def test_the_budget_refills_with_time_passed_in_and_ignores_a_clock_stepped_back() -> None:
    budget = VerifyBudget(rate=2, burst=2)
    assert [budget.take(ATTACKER, NOW) for _ in range(3)] == [True, True, False]
    assert not budget.take(ATTACKER, NOW - 60_000)  # a step back refills nothing
    assert budget.take(ATTACKER, NOW + 500) and not budget.take(ATTACKER, NOW + 500)
    assert budget.take(honest_range(1), NOW)  # a new range starts with a full bucket
    assert all(budget.take("", NOW) for _ in range(100))  # the node's own values: never charged


def test_cheap_fields_are_refused_with_the_codes_of_the_full_check() -> None:
    record = member(signer())
    data = record.encode()
    for kwargs, code in [
        ({"key": swarm_key("other"), "now_ms": NOW}, "wrong_key"),
        ({"key": SWARM, "now_ms": NOW + 2 * 3_600_000}, "expired"),
        ({"key": SWARM, "now_ms": NOW, "max_ttl_ms": 1000}, "ttl_too_long"),
    ]:
        with pytest.raises(InvalidRecord) as peeked:
            peek_record(data, **kwargs)
        with pytest.raises(InvalidRecord) as checked:
            validate_record(data, **kwargs)
        assert peeked.value.code == checked.value.code == code
    head = peek_record(data, key=SWARM, now_ms=NOW)
    assert (head.member, head.owner, head.seq, head.expiry_ms) == (True, record.member, 1, record.expiry_ms)
    node = node_record(signer())
    assert peek_record(node.encode(), key=node.key, now_ms=NOW).owner == node.feed
