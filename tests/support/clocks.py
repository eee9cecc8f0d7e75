"""Clocks for tests of code that takes a ``now`` callable."""

from __future__ import annotations


class TickingMs:
    """Wall-clock milliseconds that move one tick each time they are read: times come in call order."""

    def __init__(self, start: int = 1_000) -> None:
        self.ms = start

    def __call__(self) -> int:
        self.ms += 1
        return self.ms
