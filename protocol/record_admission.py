"""What a DHT record store decides before a record's signature is checked (sans-IO).

Theory of operation. An Ed25519 check costs the verifier about four times what the signature cost its
signer, so a store that checks every record it is sent can be kept busy by one range signing throwaway
records (spec/protocol.md §13.5). The store therefore charges before the work, in two steps:

- ``peek_record`` reads a record's cheap fields (kind, key, owner, seq, expiry) from its msgpack without
  building the record, so the store can refuse on them (its key, the expiry, a swarm key full of the
  source's range, a version it holds already) at the cost of a decode and a lookup;
- ``VerifyBudget`` then caps the signature checks each source range may cause: a token bucket per range,
  ``rate`` checks a second and bursts of ``burst``, with time passed in. A new range starts with a full
  bucket, so an honest node from a range never heard from is checked at once; a range that spends its
  bucket is refused (``busy``) without a check until it refills. The node's own values (``LOCAL``) are
  never charged.
"""

from __future__ import annotations

from dataclasses import dataclass

from .dht_wire import ID_SIZE, Value
from .identity import KEY_SIZE, FeedId
from .record_quota import LOCAL
from .records import MAX_SEQ, MAX_TTL_MS, MEMBER_TAG, InvalidRecord, node_key, record_items

__all__ = ["VERIFY_BURST", "VERIFY_RATE", "RecordHead", "VerifyBudget", "peek_record"]

#: spec/protocol.md §13.5: signature checks a source range may cause per second, and in one burst: one
#: host's request rate (dht_support.RateLimiter), so more hosts of a range buy no more checks.
VERIFY_RATE = 200.0
VERIFY_BURST = 400.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordHead:
    """The fields of a record read without checking its signature: not yet to be trusted."""

    member: bool  # a member record (else a node record)
    key: bytes
    owner: bytes  # the member, or the node record's feed
    seq: int
    expiry_ms: int


def peek_record(data: Value, *, key: bytes, now_ms: int, max_ttl_ms: int = MAX_TTL_MS) -> RecordHead:
    """The cheap fields of the record in ``data`` stored under ``key`` at ``now_ms``.

    Raises ``RemoteProtocolError`` with the codes ``validate_record`` gives for the same broken rule
    (``not_a_record``, ``too_large``, ``bad_key``, ``bad_seq``, ``bad_expiry``, ``wrong_key``,
    ``expired``, ``ttl_too_long``, a ``DecodeError`` code); passing proves nothing about the signature.
    """
    items = record_items(data)
    member = items[0] == MEMBER_TAG
    # [tag, swarm_key, member, addresses, seq, expiry, sig], [tag, feed, addresses, transport, seq, ...]
    # or (version 2) [tag, feed, addresses, transport, relays, seq, expiry, sig]: seq and expiry come
    # right before the signature in every kind
    owner = items[2] if member else items[1]
    seq, expiry_ms = items[-3], items[-2]
    if type(owner) is not bytes or len(owner) != KEY_SIZE:
        raise InvalidRecord(f"owner must be {KEY_SIZE} bytes", code="bad_key")
    if type(seq) is not int or not 1 <= seq <= MAX_SEQ:
        raise InvalidRecord("seq must be 1..2^53-1", code="bad_seq")
    if type(expiry_ms) is not int or expiry_ms < 0:
        raise InvalidRecord("expiry_ms must be 0..2^63-1", code="bad_expiry")
    if member and (type(items[1]) is not bytes or len(items[1]) != ID_SIZE):
        raise InvalidRecord(f"swarm key must be {ID_SIZE} bytes", code="bad_key")
    if (items[1] if member else node_key(FeedId(owner))) != key:
        raise InvalidRecord("record stored under someone else's key", code="wrong_key")
    if expiry_ms <= now_ms:
        raise InvalidRecord("record expired", code="expired")
    if expiry_ms > now_ms + max_ttl_ms:
        raise InvalidRecord("record claims too long a lifetime", code="ttl_too_long")
    return RecordHead(member=member, key=key, owner=owner, seq=seq, expiry_ms=expiry_ms)


class VerifyBudget:
    """Signature checks per source range: a token bucket each (see the module docstring)."""

    def __init__(self, *, rate: float = VERIFY_RATE, burst: float = VERIFY_BURST, max_ranges: int = 10_000):
        self.rate = rate
        self.burst = burst
        self.max_ranges = max_ranges
        self._buckets: dict[str, tuple[float, int]] = {}  # range -> (tokens, at now_ms)
        self.refused = 0

    def take(self, source: str, now_ms: int) -> bool:
        """Whether ``source`` may cause one more signature check at ``now_ms`` (one token taken)."""
        if source == LOCAL:
            return True
        tokens, at = self._buckets.get(source, (self.burst, now_ms))
        # a wall clock stepped back refills nothing (and never drains a bucket)
        tokens = min(self.burst, tokens + max(0, now_ms - at) * self.rate / 1000)
        if tokens < 1:
            self._buckets[source] = (tokens, max(at, now_ms))
            self.refused += 1
            return False
        if len(self._buckets) >= self.max_ranges and source not in self._buckets:
            self._buckets.clear()  # forget every range rather than grow without bound
        self._buckets[source] = (tokens - 1, max(at, now_ms))
        return True
