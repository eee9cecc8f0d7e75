"""Peer scores (spec §12.8): what each peer host has done for us lately, good and bad.

Theory of operation. A score is a number per host (the IP address of an incoming peer, the host of a
dialled one), 0 for a stranger. Events move it (``SCORE_EVENTS``): entries the peer delivered first
raise it a little, up to a cap per event; entries it sent that we never asked for, connections that
carried nothing, and invalid data, forks of its own feed and floods lower it. The score decays toward 0
with a half-life of ``score_half_life`` seconds, so an old offence (or an old merit) fades.

The connection manager dials candidates with higher scores first; a host whose score falls below
``score_threshold`` is cut off (``Node.penalize``):
every connection to it is closed, it is banned (``Penalties``) for ``ban_seconds`` and not redialled
until the ban ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tidings.node.clock import SYSTEM_CLOCK, Clock

__all__ = ["SCORE_EVENTS", "PeerRecord", "Penalties", "Scores"]

#: Score change per event (per entry for the per-entry events), as documented in spec §12.8.
SCORE_EVENTS: dict[str, float] = {
    "delivered": 0.05,  # per entry the peer delivered to us before anyone else (new to our store)
    "useless": -0.5,  # per entry of a feed we do not want (we never asked for it)
    "idle": -2.0,  # a connection that ended after a minute or more without one useful entry either way
    "never_useful": -6.0,  # an inbound connection cut or evicted having never been useful (§12.5)
    "invalid": -50.0,  # a connection ended for invalid data (bad signatures, chains, frames)
    "flood": -50.0,  # more frames or entries per second than the limits
    "own_fork": -100.0,  # the peer's own feed forked (it signed two entries with one seq)
    "overspent": -5.0,  # work the peer asked for that its work budget could not pay (spec §12.8.6)
    "slow_blob": -5.0,  # a range of a blob that did not arrive within blob_range_timeout (spec §12.12)
    "bad_blob": -10.0,  # a blob whose bytes are not the picture its reference says (spec §12.12)
}
#: Most a single ``delivered`` event adds (a big catch-up is not worth more than steady service).
DELIVERED_CAP = 5.0
#: The score a host cannot rise above.
MAX_SCORE = 100.0


@dataclass
class _Score:
    value: float = 0.0
    stamp: float = 0.0


class Scores:
    """Scores by host with exponential decay (see the module docstring)."""

    def __init__(
        self, *, half_life: float = 600.0, threshold: float = -40.0, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.half_life = half_life
        self.threshold = threshold
        self.clock = clock
        self._by_host: dict[str, _Score] = {}

    def _now(self) -> float:
        return self.clock.monotonic()

    def get(self, host: str) -> float:
        rec = self._by_host.get(host)
        if rec is None:
            return 0.0
        now = self._now()
        rec.value *= math.pow(0.5, (now - rec.stamp) / self.half_life)
        rec.stamp = now
        return rec.value

    def add(self, host: str, event: str, count: float = 1.0) -> float:
        """Apply ``count`` times the event's change; return the new score."""
        delta = SCORE_EVENTS[event] * count
        if event == "delivered":
            delta = min(delta, DELIVERED_CAP)
        value = min(MAX_SCORE, self.get(host) + delta)
        self._by_host[host] = _Score(value, self._now())
        if len(self._by_host) > 10000:  # forget the scores nearest 0 first
            for key in sorted(self._by_host, key=lambda h: abs(self._by_host[h].value))[:1000]:
                del self._by_host[key]
        return value

    def below_threshold(self, host: str) -> bool:
        return self.get(host) < self.threshold

    def snapshot(self) -> dict[str, float]:
        return {host: round(self.get(host), 2) for host in list(self._by_host)}


@dataclass
class PeerRecord:
    address: str
    banned_until: float = 0.0
    last_reason: str = ""
    strikes: int = 0
    last_strike: float = 0.0
    warned: bool = False


class Penalties:
    """Bans by host after misbehaviour (spec §12.5).

    Sending invalid data (bad signatures or chains, floods, oversized or undecryptable frames, forged
    identities) bans the host for ``ban_seconds`` times its number of strikes (at most 8x). A failed or
    stalled handshake, or a frame that stalls (``frame_timeout``), is often an honest mistake (a wrong ``--network-key``, a port scan, a NAT with
    several nodes behind it): it bans for only ``HANDSHAKE_BAN`` seconds, doubling per strike, capped at
    ``ban_seconds``. Strikes are forgotten after ``FORGET`` seconds without a new one.
    """

    HANDSHAKE_CODES = frozenset({"handshake", "handshake_timeout", "truncated", "timeout", "frame_timeout"})
    HANDSHAKE_BAN = 5.0
    FORGET = 3600.0

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self.by_host: dict[str, PeerRecord] = {}

    def strike(self, host: str, code: str, reason: str, ban_seconds: float) -> float:
        """Count an offence; return the seconds the host is now banned for."""
        now = self.clock.monotonic()
        rec = self.by_host.setdefault(host, PeerRecord(host))
        if now - rec.last_strike > self.FORGET:
            rec.strikes = 0
        rec.strikes += 1
        rec.last_strike = now
        rec.last_reason = f"{code}: {reason}"
        rec.warned = False
        if code in self.HANDSHAKE_CODES:
            seconds = min(ban_seconds, self.HANDSHAKE_BAN * 2 ** (rec.strikes - 1))
        else:
            seconds = ban_seconds * min(rec.strikes, 8)
        rec.banned_until = now + seconds
        return seconds

    def banned(self, host: str) -> bool:
        rec = self.by_host.get(host)
        return rec is not None and rec.banned_until > self.clock.monotonic()
