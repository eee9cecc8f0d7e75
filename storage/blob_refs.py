"""The blobs stored entries name (spec/protocol.md §8.5): what ``tidings blob gc`` keeps.

A node keeps the blobs of its own feed and of the feeds it follows, whatever the quota (the design of
issue 18); others' are evicted least recently used first (``blobs.BlobStore.gc``). Which blobs those
are is read from the payloads themselves: a post's ``attachments`` and a profile's ``avatar`` and
``banner``, each blob with its preview. Only payloads that contain one of those key names are decoded
(``instr`` on the stored bytes), so a feed of plain posts costs one index walk and no decoding.

The web page asks the other way round, for one blob: which types it is named with (``blob_mimes``,
before the page serves it as a picture), and which avatar and banner a profile shows now
(``profile_refs``). A blob's id is 32 bytes that appear verbatim in every msgpack payload naming it, so
``instr(payload, id)`` finds the candidates without decoding the others.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

from tidings.protocol import Content, Post, Profile, ProtocolError, blob_refs, decode_content
from tidings.protocol.blobs import BlobRef

from .reads import Reads

__all__ = [
    "attachment_of",
    "blob_mimes",
    "kept_blobs",
    "may_name_blobs",
    "named_blobs",
    "payload_blobs",
    "profile_refs",
    "referenced_blobs",
    "stored_refs",
]

#: Key names whose presence in a payload's bytes makes it worth decoding (msgpack stores keys as
#: their UTF-8 bytes).
_KEYS = (b"attachments", b"avatar", b"banner")
#: The type a preview is named with: a preview is a small picture (spec §8.5), WebP as we write it.
PREVIEW_MIME = "image/webp"
#: At most this many candidate payloads are decoded by ``blob_mimes`` (a blob named by more posts
#: than that is named the same way by the first ones, or the page serves it as a file).
_MAX_CANDIDATES = 64


def named_blobs(content: Content | None) -> set[bytes]:
    """The ids (32-byte hashes) of the blobs and previews ``content`` names: a post's attachments, a
    profile's avatar and banner (spec §8.5)."""
    return {blob for ref in blob_refs(content) for blob in _ids(ref)} if content is not None else set()


def _ids(ref: BlobRef) -> tuple[bytes, ...]:
    return (ref.blob,) if ref.preview is None else (ref.blob, ref.preview)


def may_name_blobs(payload: bytes) -> bool:
    """Whether a payload holds one of the key names a blob reference sits under: one without is not
    worth decoding to look for blobs (msgpack keeps keys as their bytes)."""
    return any(key in payload for key in _KEYS)


def payload_blobs(payload: bytes | None) -> set[bytes]:
    """``named_blobs`` of a stored payload; nothing for one that names none of the key names (not
    decoded) or breaks §8 (not shown)."""
    data = b"" if payload is None else bytes(payload)
    if not may_name_blobs(data):
        return set()
    return named_blobs(_shown(data))


def _shown(payload: bytes) -> Content | None:
    """The content of a stored payload, or None for one that breaks §8 (not shown, §8.4)."""
    try:
        return decode_content(bytes(payload))
    except ProtocolError:
        return None


def stored_refs(store: Reads, authors: Collection[bytes]) -> Iterator[tuple[bytes, BlobRef]]:
    """``(author, reference)`` for every blob reference in the stored, not deleted post and profile
    payloads of ``authors``. Payloads that break §8 are skipped: they are not shown."""
    feeds = sorted(set(authors))
    for start in range(0, len(feeds), 500):
        part = feeds[start : start + 500]
        marks = ",".join("?" * len(part))
        rows = store.read(
            "SELECT author, payload FROM entries WHERE type IN ('post', 'profile') AND deleted = 0 "
            f"AND payload IS NOT NULL AND author IN ({marks}) "
            "AND (instr(payload, ?) > 0 OR instr(payload, ?) > 0 OR instr(payload, ?) > 0)",
            (*part, *_KEYS),
        )
        for author, payload in rows:
            content = _shown(payload)
            for ref in [] if content is None else blob_refs(content):
                yield bytes(author), ref


def referenced_blobs(store: Reads, authors: Collection[bytes]) -> set[bytes]:
    """The ids (32-byte hashes) of every blob and preview named by the stored, not deleted post and
    profile payloads of ``authors``."""
    return {blob for _, ref in stored_refs(store, authors) for blob in _ids(ref)}


def kept_blobs(store: Reads, me: bytes) -> set[bytes]:
    """The blobs gc keeps for the feed ``me``: those its own entries name and those of the feeds it
    follows."""
    return referenced_blobs(store, {me, *store.graph_targets(me, "follow")})


def blob_mimes(store: Reads, blob: bytes) -> set[str]:
    """The types the stored, not deleted post and profile payloads name the blob ``blob`` (32 bytes)
    with: each reference's ``mime``, and ``PREVIEW_MIME`` where it is a reference's ``preview``. Empty
    when no shown payload names it. Payloads that break §8 are skipped (they are not shown, §8.4)."""
    rows = store.read(
        "SELECT payload FROM entries WHERE type IN ('post', 'profile') AND deleted = 0 "
        "AND payload IS NOT NULL AND instr(payload, ?) > 0 LIMIT ?",
        (blob, _MAX_CANDIDATES),
    )
    mimes: set[str] = set()
    for (payload,) in rows:
        content = _shown(payload)
        for ref in [] if content is None else blob_refs(content):
            if ref.blob == blob:
                mimes.add(ref.mime)
            if ref.preview == blob:
                mimes.add(PREVIEW_MIME)
    return mimes


def profile_refs(store: Reads, feed: bytes) -> dict[str, BlobRef]:
    """The ``avatar`` and ``banner`` the profile of ``feed`` shows now (the keys set): each from the
    feed's shown profile payload with the highest seq that sets it (spec §8.2.8)."""
    rows = store.read(
        "SELECT payload FROM entries WHERE author = ? AND type = 'profile' AND deleted = 0 "
        "AND payload IS NOT NULL AND (instr(payload, ?) > 0 OR instr(payload, ?) > 0) ORDER BY seq DESC",
        (feed, b"avatar", b"banner"),
    )
    found: dict[str, BlobRef] = {}
    for (payload,) in rows:
        content = _shown(payload)
        if not isinstance(content, Profile):
            continue
        for key in ("avatar", "banner"):
            ref = getattr(content, key)
            if ref is not None and key not in found:
                found[key] = ref
        if len(found) == 2:
            break
    return found


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
        content = _shown(payload)
        if isinstance(content, Post):
            for ref in content.attachments:
                if ref.blob == blob:
                    return ref
    return None
