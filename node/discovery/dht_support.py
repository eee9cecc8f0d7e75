"""Helpers of the DHT's UDP adapter (``node/discovery/dht.py``): the member-record check cache, the record
store as configured, the per-host request rate limit, the round-trip estimator behind adaptive query timeouts, and name resolution."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any

import trio
from tidings.protocol import RemoteProtocolError
from tidings.protocol.record_store import (
    MAX_PLAIN,
    MAX_RECORDS,
    PER_RANGE,
    PLAIN_PER_RANGE,
    PLAIN_TTL_MS,
    RecordStore,
)
from tidings.protocol.records import MAX_TTL_MS, MemberRecord, decode_record

__all__ = [
    "MIN_QUERY_STALL",
    "MIN_QUERY_TIMEOUT",
    "RateLimiter",
    "RoundTrip",
    "address_text",
    "backoff",
    "member_record",
    "record_store",
    "resolve_address",
]


#: Member records already decoded and verified, by their bytes (the same ones come back every lookup).
_VERIFIED: dict[bytes, MemberRecord | None] = {}
_VERIFIED_MAX = 20000


def member_record(value: Any, key: bytes | None, now_ms: int) -> MemberRecord | None:
    """The valid, unexpired member record in ``value`` under swarm ``key`` (None: any swarm), or None.

    The signature check (the costly part) is done once per distinct record and remembered; the key and
    the expiry are checked every time.
    """
    if type(value) is not bytes:
        return None
    if value in _VERIFIED:
        record = _VERIFIED[value]
    else:
        try:
            decoded = decode_record(value)
        except RemoteProtocolError:
            decoded = None
        record = decoded if isinstance(decoded, MemberRecord) else None
        if len(_VERIFIED) >= _VERIFIED_MAX:
            _VERIFIED.clear()
        _VERIFIED[value] = record
    if (
        record is None
        or key not in (None, record.key)
        or not now_ms < record.expiry_ms <= now_ms + MAX_TTL_MS
    ):
        return None
    return record


def record_store(limits: Mapping[str, Any]) -> RecordStore:
    """The node's DHT record store with the limits of its ``[limits]`` table (spec/protocol.md §13.7)."""
    return RecordStore(
        max_records=int(limits.get("dht_records", MAX_RECORDS)),
        per_range=int(limits.get("dht_records_per_range", PER_RANGE)),
        max_plain=int(limits.get("dht_plain_values", MAX_PLAIN)),
        plain_per_range=int(limits.get("dht_plain_per_range", PLAIN_PER_RANGE)),
        plain_ttl_ms=int(float(limits.get("dht_plain_ttl", PLAIN_TTL_MS / 1000)) * 1000),
    )


class RateLimiter:
    """A token bucket per source host: ``rate`` requests per second, bursts of ``burst``."""

    def __init__(self, rate: float, burst: float, *, max_hosts: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_hosts = max_hosts
        self._buckets: dict[str, tuple[float, float]] = {}  # host -> (tokens, at)

    def allow(self, host: str, now: float) -> bool:
        tokens, at = self._buckets.get(host, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1:
            self._buckets[host] = (tokens, now)
            return False
        if len(self._buckets) >= self.max_hosts and host not in self._buckets:
            self._buckets.clear()  # forget everyone rather than grow without bound
        self._buckets[host] = (tokens - 1, now)
        return True


async def resolve_address(host: str, port: int) -> tuple[str, int]:
    """``(ip, port)`` for a host name or IP literal (the DHT speaks to IP addresses only)."""
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    for family, _, _, _, sockaddr in infos:
        if family == socket.AF_INET:
            return str(sockaddr[0]), int(sockaddr[1])
    family, _, _, _, sockaddr = infos[0]
    return str(sockaddr[0]), int(sockaddr[1])


#: Shortest time a lookup waits for one reply, however fast the network seemed.
MIN_QUERY_TIMEOUT = 0.25
#: Shortest time after which a silent query gives up its place among a lookup's alpha (§13.3).
MIN_QUERY_STALL = 0.05


class RoundTrip:
    """Smoothed round-trip time and variation (RFC 6298's estimator) of answered requests."""

    def __init__(self) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0

    def sample(self, rtt: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt

    def timeout(self, low: float, high: float) -> float:
        if self.srtt is None:
            return high
        return min(high, max(low, self.srtt + 4 * self.rttvar))


def backoff(attempt: int, cap: float) -> float:
    """Seconds to wait after ``attempt`` tries in a row: 2^(attempt+1), at most ``cap`` (spec §13.6)."""
    return float(min(cap, 2.0 ** min(attempt + 1, 30)))


def address_text(address: tuple[str, int]) -> str:
    """``HOST:PORT`` of a record address, an IPv6 host in brackets."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
