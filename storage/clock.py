"""The one wall-clock helper: milliseconds since the Unix epoch.

Entry timestamps and the times rows are stored at (``received``) are wall-clock milliseconds. Every
layer above storage reads them through the node's clock seam (``tidings.node.clock``), which uses
this function, so a test can replace the clock in one place.
"""

from __future__ import annotations

import time

__all__ = ["wall_ms"]


def wall_ms() -> int:
    """Milliseconds since the Unix epoch, now."""
    return time.time_ns() // 1_000_000
