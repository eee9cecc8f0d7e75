"""Who stored what in a DHT record store: slots held per source range, oldest first (sans-IO).

Theory of operation. ``Holdings`` remembers, for each slot a ``RecordStore`` holds (a node record's key,
a member record's key and member, a plain value's key), the source range that stored it (the storer's
IPv4 /24 or IPv6 /48, as text; ``LOCAL`` for the node's own values) and in which order slots were
stored. It answers the questions the store's quotas and evictions ask (spec/protocol.md §13.5): how
many slots a range holds, which range holds the most (in O(1), so a flood against a full store costs
no scan), and which of a range's slots was stored least recently. Storing a slot again moves it to the
newest place and to the range that stored it last.
"""

from __future__ import annotations

__all__ = ["LOCAL", "Holdings", "Slot", "fair_victim"]

#: A slot: (DHT key, member) for a member record; (DHT key, b"") for a node record or a plain value.
Slot = tuple[bytes, bytes]

#: The source range of the node's own values (``DHT.put``, ``DHT.announce``): exempt from per-range quotas.
LOCAL = ""


class Holdings:
    """Slots by the source range that stored them, in the order they were stored (module docstring)."""

    def __init__(self) -> None:
        self._source: dict[Slot, str] = {}
        self._stamp: dict[Slot, int] = {}
        self._slots: dict[str, dict[Slot, None]] = {}  # range -> its slots, least recently stored first
        self._by_count: dict[
            int, dict[str, None]
        ] = {}  # n -> ranges holding n slots, first to get there first
        self._top = 0
        self._clock = 0

    def __len__(self) -> int:
        return len(self._source)

    def __contains__(self, slot: object) -> bool:
        return slot in self._source

    def source(self, slot: Slot) -> str | None:
        """The range that stored ``slot`` last, or None when it is not held."""
        return self._source.get(slot)

    def stamp(self, slot: Slot) -> int:
        """When ``slot`` was stored last, as a count of stores (smaller: longer ago)."""
        return self._stamp[slot]

    def count(self, source: str) -> int:
        """How many slots ``source`` holds."""
        return len(self._slots.get(source, ()))

    def ranges(self) -> int:
        """How many ranges hold a slot."""
        return len(self._slots)

    def add(self, slot: Slot, source: str) -> None:
        """``source`` stored ``slot`` (new, or again): it becomes the most recently stored."""
        self.discard(slot)
        self._clock += 1
        self._source[slot] = source
        self._stamp[slot] = self._clock
        slots = self._slots.setdefault(source, {})
        self._move(source, len(slots), len(slots) + 1)
        slots[slot] = None

    def discard(self, slot: Slot) -> None:
        """Forget ``slot`` (dropped, expired or evicted); nothing when it is not held."""
        source = self._source.pop(slot, None)
        if source is None:
            return
        del self._stamp[slot]
        slots = self._slots[source]
        del slots[slot]
        self._move(source, len(slots) + 1, len(slots))
        if not slots:
            del self._slots[source]

    def largest(self) -> str | None:
        """A range holding the most slots (the first to reach that count), or None when empty."""
        ranges = self._by_count.get(self._top)
        return next(iter(ranges)) if ranges else None

    def oldest(self, source: str) -> Slot | None:
        """The slot ``source`` stored least recently, or None when it holds none."""
        slots = self._slots.get(source)
        return next(iter(slots)) if slots else None

    def _move(self, source: str, old: int, new: int) -> None:
        if old:
            ranges = self._by_count[old]
            del ranges[source]
            if not ranges:
                del self._by_count[old]
                if self._top == old and new < old:
                    self._top = new
        if new:
            self._by_count.setdefault(new, {})[source] = None
            self._top = max(self._top, new)


def fair_victim(counts: dict[str, int], source: str) -> str | None:
    """The range to evict from so that ``source`` may store one more: the range holding the most
    (``counts``), if it holds at least two more than ``source`` (so two ranges never take turns evicting
    each other), else None. Ties go to the first range in ``counts`` (spec/protocol.md §13.5)."""
    if not counts:
        return None
    top = max(counts, key=lambda r: counts[r])
    return top if counts[top] >= counts.get(source, 0) + 2 else None
