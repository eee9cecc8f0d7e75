"""Token buckets for what a peer may send: frames and entries per connection (spec §12.5). The live
budgets per feed (§12.8.5) belong to the gossip machine, ``protocol.gossip.FeedBudgets``."""

from __future__ import annotations

from tidings.node.clock import SYSTEM_CLOCK, Clock

__all__ = ["RateLimit"]


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

    def refund(self, n: float = 1.0) -> None:
        """Give back ``n`` taken for something that turned out not to count (up to the burst)."""
        self.tokens = min(self.burst, self.tokens + n)
