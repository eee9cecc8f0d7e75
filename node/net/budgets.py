"""Token buckets for what a peer may send: frames and entries per connection, and live entries per
feed (spec §12.8)."""

from __future__ import annotations

from tidings.node.clock import SYSTEM_CLOCK, Clock

__all__ = ["FeedBudgets", "RateLimit"]


class RateLimit:
    """Token bucket: ``rate`` per second, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self.rate, self.burst = rate, burst
        self.clock = clock
        self.tokens = burst
        self.stamp = clock.monotonic()

    def take(self, n: float = 1.0) -> bool:
        now = self.clock.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < n:
            return False
        self.tokens -= n
        return True


class FeedBudgets:
    """A token bucket per feed (spec §12.8): live entries of one feed from one peer."""

    def __init__(self, rate: float, burst: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self.rate, self.burst = rate, burst
        self.clock = clock
        self._buckets: dict[bytes, RateLimit] = {}

    def take(self, feed: bytes) -> bool:
        bucket = self._buckets.get(feed)
        if bucket is None:
            if len(self._buckets) > 10000:
                self._buckets.clear()
            bucket = self._buckets[feed] = RateLimit(self.rate, self.burst, self.clock)
        return bucket.take()
