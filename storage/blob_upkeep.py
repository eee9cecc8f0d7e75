"""Keeping a home's blobs within ``blob_quota`` (spec/protocol.md §8.5, spec/config.md), and telling
how much of it they take.

What stays whatever the quota: pinned blobs and those named by the home's own feed and the feeds it
follows (``blob_refs.kept_blobs``). Everything else is the others' blobs, evicted least recently used
first once the blobs take more than the quota (``BlobStore.gc``). ``upkeep`` is what ``tidings blob
gc`` and the running node's blob keeper (``node/blob_keeper.py``) run: first the blobs that deletes
left marked (``blob_drops``), then gc.
"""

from __future__ import annotations

from typing import Any

from .blob_drops import drop_marked
from .blob_refs import kept_blobs
from .blobs import BlobStore
from .reads import Reads

__all__ = ["blob_usage", "upkeep"]


def upkeep(
    blobs: BlobStore,
    store: Reads,
    me: bytes,
    quota: int,
    *,
    timeout: float = 30.0,
    only_over_quota: bool = False,
) -> dict[str, Any]:
    """Remove the blobs deletes left unnamed, then evict others' blobs, least recently used first,
    until the blobs fit ``quota`` (keeping those of ``me`` and the feeds it follows, and pinned ones).
    ``only_over_quota``: skip gc (its walk over the files) while the blobs fit. Returns ``gc``'s
    ``{"removed", "freed", "blobs", "bytes", "quota"}``, the dropped blobs counted in; ``blob_busy``
    when writers hold gc up past ``timeout`` seconds."""
    dropped = drop_marked(blobs)
    usage = blobs.usage()
    if only_over_quota and usage["bytes"] <= quota:
        result: dict[str, Any] = {
            "removed": [],
            "freed": 0,
            "blobs": usage["blobs"],
            "bytes": usage["bytes"],
            "quota": quota,
        }
    else:
        result = blobs.gc(quota, kept_blobs(store, me), timeout=timeout)
    result["removed"] = dropped["removed"] + result["removed"]
    result["freed"] += dropped["freed"]
    return result


def blob_usage(blobs: BlobStore, store: Reads, me: bytes, quota: int) -> dict[str, int]:
    """What the blobs take (``tidings status``): ``{"count", "bytes", "quota", "kept", "kept_bytes",
    "others", "others_bytes"}``; kept are pinned blobs and those named by ``me`` and the feeds it
    follows (gc never evicts them), others those gc evicts beyond the quota."""
    usage = blobs.usage()
    out = {"count": usage["blobs"], "bytes": usage["bytes"], "quota": quota}
    kept = kept_bytes = 0
    if usage["blobs"]:  # reading the payloads for kept_blobs is for homes that hold blobs
        keep = kept_blobs(store, me)
        for raw, size, pinned in store.read("SELECT id, size, pinned FROM blobs"):
            if pinned or bytes(raw) in keep:
                kept += 1
                kept_bytes += size
    out.update(
        kept=kept,
        kept_bytes=kept_bytes,
        others=usage["blobs"] - kept,
        others_bytes=usage["bytes"] - kept_bytes,
    )
    return out
