"""The blobs stored entries name (spec/protocol.md §8.5): what ``tidings blob gc`` keeps.

A node keeps the blobs of its own feed and of the feeds it follows, whatever the quota (the design of
issue 18); others' are evicted least recently used first (``blobs.BlobStore.gc``). Which blobs those
are is read from the payloads themselves: a post's ``attachments`` and a profile's ``avatar`` and
``banner``, each blob with its preview. Only payloads that contain one of those key names are decoded
(``instr`` on the stored bytes), so a feed of plain posts costs one index walk and no decoding.
"""

from __future__ import annotations

from collections.abc import Collection

from tidings.protocol import BlobRef, Post, ProtocolError, blob_refs, decode_content

from .reads import Reads

__all__ = ["attachment_of", "kept_blobs", "referenced_blobs"]

#: Key names whose presence in a payload's bytes makes it worth decoding (msgpack stores keys as
#: their UTF-8 bytes).
_KEYS = (b"attachments", b"avatar", b"banner")


def referenced_blobs(store: Reads, authors: Collection[bytes]) -> set[bytes]:
    """The ids (32-byte hashes) of every blob and preview named by the stored, not deleted post and
    profile payloads of ``authors``. Payloads that break §8 are skipped: they are not shown."""
    found: set[bytes] = set()
    feeds = sorted(set(authors))
    for start in range(0, len(feeds), 500):
        part = feeds[start : start + 500]
        marks = ",".join("?" * len(part))
        rows = store.read(
            "SELECT payload FROM entries WHERE type IN ('post', 'profile') AND deleted = 0 "
            f"AND payload IS NOT NULL AND author IN ({marks}) "
            "AND (instr(payload, ?) > 0 OR instr(payload, ?) > 0 OR instr(payload, ?) > 0)",
            (*part, *_KEYS),
        )
        for (payload,) in rows:
            try:
                content = decode_content(bytes(payload))
            except ProtocolError:
                continue
            for ref in blob_refs(content):
                found.add(ref.blob)
                if ref.preview is not None:
                    found.add(ref.preview)
    return found


def kept_blobs(store: Reads, me: bytes) -> set[bytes]:
    """The blobs gc keeps for the feed ``me``: those its own entries name and those of the feeds it
    follows."""
    return referenced_blobs(store, {me, *store.graph_targets(me, "follow")})


def attachment_of(store: Reads, author: bytes, blob: bytes) -> BlobRef | None:
    """The attachment naming ``blob`` (a 32-byte id) in a stored, not deleted post of ``author``, or None:
    what the Atom server checks before it serves a blob of a feed (spec §14.3), so it serves only
    those. Only payloads holding the id's bytes are decoded (msgpack stores them as they are)."""
    rows = store.read(
        "SELECT payload FROM entries WHERE author = ? AND type = 'post' AND deleted = 0 "
        "AND payload IS NOT NULL AND instr(payload, ?) > 0 ORDER BY seq DESC LIMIT 100",
        (author, blob),
    )
    for (payload,) in rows:
        try:
            content = decode_content(bytes(payload))
        except ProtocolError:
            continue
        if isinstance(content, Post):
            for ref in content.attachments:
                if ref.blob == blob:
                    return ref
    return None
