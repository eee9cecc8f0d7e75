"""The base class of every content type (spec/protocol.md §8.1), below the modules that define types.

``content`` defines the public types and decodes payloads; ``box`` (spec §8.6) defines the private
message type. Both build on ``Content``, which lives here so neither has to import the other's module
to name it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = ["Content"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Content:
    """Base of every content type; ``extra`` keeps keys the schema does not name."""

    type: ClassVar[str] = ""
    # Compared (two payloads that differ only in extra keys are different) but not hashed: a dict is
    # not hashable.
    extra: dict[str, Any] = field(default_factory=dict, hash=False, repr=False)

    def fields(self) -> dict[str, Any]:
        """The schema fields that are set (None values left out)."""
        return {}

    def to_map(self) -> dict[str, Any]:
        out = dict(self.extra)
        out.update(self.fields())
        out["type"] = self.type
        return out
