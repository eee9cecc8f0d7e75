"""Typed storage errors, each with a short ``code`` the CLI prints and scripts can match."""

from __future__ import annotations

from tidings.protocol.errors import TidingsError

__all__ = [
    "AmbiguousId",
    "CorruptStore",
    "DiskFull",
    "FeedForked",
    "NotFound",
    "NotYours",
    "StoreError",
    "StoreLocked",
]


class StoreError(TidingsError):
    """Base class of every storage error."""

    code = "store_error"


class NotFound(StoreError):
    """An entry, feed or prefix that the store does not hold."""

    code = "not_found"


class AmbiguousId(StoreError):
    """An id prefix that matches more than one entry."""

    code = "ambiguous_id"


class NotYours(StoreError):
    """An operation on someone else's entry that only its author may do (e.g. delete)."""

    code = "not_yours"


class FeedForked(StoreError):
    """The feed has a fork proof; new entries are refused until the user decides."""

    code = "feed_forked"


class CorruptStore(StoreError):
    """The store file is damaged or is not a Tidings store."""

    code = "corrupt_store"


class DiskFull(StoreError):
    """The disk is full; the transaction was rolled back and nothing was written."""

    code = "disk_full"


class StoreLocked(StoreError):
    """Another process held the store too long."""

    code = "store_locked"
