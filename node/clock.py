"""The node's clock and randomness seams: one for deadlines, one for timestamps, one RNG.

Theory of operation. Everything in the running node that measures time asks a ``Clock``:
``monotonic()`` (seconds, for deadlines, rates, bans and scores) and ``wall_ms()`` (milliseconds since
the Unix epoch, for entry timestamps and "last seen" times). ``SystemClock`` reads
``trio.current_time()`` inside a trio run (so tests that run under ``trio.testing.MockClock`` move
every deadline with the mock clock) and ``time.monotonic()`` outside one. Randomness comes from one
``random.Random`` made by ``make_rng``: seeded in tests and the lab, from the OS otherwise. Nothing in
``node/`` calls ``time.time``, ``time.monotonic`` or the ``random`` module's global functions on its
own.
"""

from __future__ import annotations

import random
import time
from typing import Protocol

from tidings.storage.clock import wall_ms

__all__ = ["SYSTEM_CLOCK", "Clock", "FixedClock", "SystemClock", "make_rng"]


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (deadlines, rates, bans)."""
        ...

    def wall_ms(self) -> int:
        """Milliseconds since the Unix epoch (entry timestamps, last-seen times)."""
        ...


class SystemClock:
    """The real clock; ``monotonic`` is trio's clock inside a trio run (``MockClock`` in tests)."""

    def monotonic(self) -> float:
        import trio  # here, so a CLI command that only needs wall_ms() does not load trio

        try:
            return trio.current_time()
        except RuntimeError:  # outside a trio run (a CLI command, a worker thread)
            return time.monotonic()

    def wall_ms(self) -> int:
        return wall_ms()


class FixedClock:
    """A clock that moves only when told to (sans-trio unit tests)."""

    def __init__(self, monotonic: float = 0.0, wall_ms: int = 1_700_000_000_000) -> None:
        self.now = monotonic
        self.wall = wall_ms

    def monotonic(self) -> float:
        return self.now

    def wall_ms(self) -> int:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += int(seconds * 1000)


SYSTEM_CLOCK = SystemClock()


def make_rng(seed: int | None = None) -> random.Random:
    """The node's one source of non-cryptographic randomness (shuffles, jitter, choices): seeded when
    ``seed`` is given (tests, the lab), from the OS otherwise. Keys and nonces never come from it."""
    return random.Random(seed)
