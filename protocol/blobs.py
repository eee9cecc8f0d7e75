"""Blobs and the blob references content carries (spec/protocol.md §8.5).

A blob is a byte string of 1 … ``MAX_BLOB`` bytes (a picture, a file) named by its BLAKE2b-256 hash,
the same ``hash`` as everywhere else (spec §3): ``BlobId``, text form ``&`` + base32. Blobs are stored
and travel beside the logs, never inside an entry or a payload; content names them with a *blob
reference*, a map ``{blob, size, mime, width?, height?, alt?, preview?}``: a post's ``attachments``
(1 … 4 of them), a profile's ``avatar`` and ``banner``.

Nothing here reads a file: ``blob_id`` hashes bytes in memory and ``BlobHasher`` hashes a blob fed in
chunks, so a store can name a blob without ever holding all of it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidContent
from .identity import HASH_SIZE, BlobId

__all__ = [
    "BLOB_REF_KEYS",
    "IMAGE_MIMES",
    "MAX_ALT",
    "MAX_ATTACHMENTS",
    "MAX_BLOB",
    "MAX_DIMENSION",
    "MAX_MIME",
    "MAX_PREVIEW",
    "OPAQUE_MIME",
    "BlobHasher",
    "BlobRef",
    "attachments_from_value",
    "blob_id",
    "check_attachments",
    "check_blob_ref",
]

#: Limits of spec §8.5: a blob's size, in bytes; attachments per post; ``mime`` and ``alt`` in UTF-8
#: bytes; ``width`` and ``height`` in pixels.
MAX_BLOB = 8 * 1024 * 1024
#: Most bytes of a preview (the ``preview`` of a reference, §8.5).
MAX_PREVIEW = 32 * 1024
MAX_ATTACHMENTS = 4
MAX_MIME = 100
MAX_ALT = 1000
MAX_DIMENSION = 65535
#: The keys of a blob reference (spec §8.5); other keys are kept as ``extra``.
BLOB_REF_KEYS = ("blob", "size", "mime", "width", "height", "alt", "preview")
#: The only types a reader may show as a picture (spec §8.5); any other blob is an opaque file.
IMAGE_MIMES = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif"})
OPAQUE_MIME = "application/octet-stream"

# RFC 6838 §4.2 restricted names, lowercase, no parameters: ``type/subtype``.
_MIME = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")


def blob_id(data: bytes) -> BlobId:
    """The id of the blob ``data`` (spec §8.5): its BLAKE2b-256 hash."""
    return BlobId(hashlib.blake2b(data, digest_size=HASH_SIZE).digest())


class BlobHasher:
    """The id of a blob fed in chunks (``update``), and how many bytes it has seen (``size``)."""

    __slots__ = ("_hash", "size")

    def __init__(self) -> None:
        self._hash = hashlib.blake2b(digest_size=HASH_SIZE)
        self.size = 0

    def update(self, chunk: bytes) -> None:
        """Add the next bytes of the blob."""
        self._hash.update(chunk)
        self.size += len(chunk)

    def blob_id(self) -> BlobId:
        """The id of the bytes fed so far."""
        return BlobId(self._hash.digest())


def _bad(message: str) -> InvalidContent:
    return InvalidContent(message, code="bad_attachment")


def _int(value: Any, name: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _bad(f"{name} must be an integer from {low} to {high}")
    return value


def _hash_ref(value: Any, name: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise _bad(f"{name} must be a 32-byte blob id")
    return value


def _check_alt(value: Any) -> None:
    """``alt`` is text of at most ``MAX_ALT`` UTF-8 bytes, not blank (spec §8.1 text rules)."""
    if not isinstance(value, str):
        raise _bad("alt must be text")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise _bad("alt is not valid Unicode text") from None
    if size > MAX_ALT:
        raise _bad(f"alt longer than {MAX_ALT} bytes")
    if not value.strip():
        raise _bad("alt must not be blank (leave it out instead)")


def _check_mime(value: Any) -> None:
    if not isinstance(value, str):
        raise _bad("mime must be text")
    if len(value.encode("utf-8")) > MAX_MIME:
        raise _bad(f"mime longer than {MAX_MIME} bytes")
    if not _MIME.fullmatch(value):
        raise _bad(f"mime {value!r} is not a lowercase type/subtype (such as image/png)")


@dataclass(frozen=True, slots=True, kw_only=True)
class BlobRef:
    """A reference to a blob in content (spec §8.5): its id, size and type, and for a picture its
    size in pixels, a description and a small preview blob. ``extra`` keeps keys this version does
    not name (a newer writer may add some); they must not shadow the named ones."""

    blob: bytes
    size: int
    mime: str
    width: int | None = None
    height: int | None = None
    alt: str | None = None
    preview: bytes | None = None
    extra: dict[str, Any] = field(default_factory=dict, hash=False, repr=False)

    def __post_init__(self) -> None:
        _hash_ref(self.blob, "blob")
        _int(self.size, "size", 1, MAX_BLOB)
        _check_mime(self.mime)
        if (self.width is None) != (self.height is None):
            raise _bad("width and height are given together or not at all")
        if self.width is not None:
            _int(self.width, "width", 1, MAX_DIMENSION)
            _int(self.height, "height", 1, MAX_DIMENSION)
        if self.alt is not None:
            _check_alt(self.alt)
        if self.preview is not None:
            _hash_ref(self.preview, "preview")
        if not isinstance(self.extra, dict):
            raise _bad("extra must be a map")
        for key in self.extra:
            if not isinstance(key, str) or key in BLOB_REF_KEYS:
                raise _bad(f"extra key {key!r} is not allowed")

    @property
    def id(self) -> BlobId:
        return BlobId(self.blob)

    @property
    def preview_id(self) -> BlobId | None:
        return None if self.preview is None else BlobId(self.preview)

    @property
    def is_image(self) -> bool:
        """Whether a reader may show it as a picture (``mime`` one of ``IMAGE_MIMES``, spec §8.5)."""
        return self.mime in IMAGE_MIMES

    def to_map(self) -> dict[str, Any]:
        """The map a writer puts in content: fields that are set, extra keys kept."""
        out = dict(self.extra)
        out.update(blob=self.blob, size=self.size, mime=self.mime)
        for key in ("width", "height", "alt", "preview"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def from_map(cls, value: Any, what: str = "blob reference") -> BlobRef:
        """Validate a decoded map (nil fields count as absent, spec §8.1); errors name ``what``
        (``attachment 2``, ``avatar``) and have code ``bad_attachment``."""
        if not isinstance(value, dict):
            raise _bad(f"{what} must be a map")
        args = {k: value[k] for k in BLOB_REF_KEYS if value.get(k) is not None}
        extra = {k: v for k, v in value.items() if k not in BLOB_REF_KEYS}
        for key in ("blob", "size", "mime"):
            if key not in args:
                raise _bad(f"{what} has no {key}")
        try:
            return cls(extra=extra, **args)
        except InvalidContent as exc:
            raise _bad(f"{what}: {exc.message}") from None


def attachments_from_value(value: Any) -> tuple[BlobRef, ...]:
    """A post's ``attachments``: an array of at most ``MAX_ATTACHMENTS`` blob references (spec §8.5);
    an empty array counts as absent (spec §8.1)."""
    if not isinstance(value, list):
        raise _bad("attachments must be an array")
    if len(value) > MAX_ATTACHMENTS:
        raise _bad(f"at most {MAX_ATTACHMENTS} attachments")
    return tuple(BlobRef.from_map(item, f"attachment {i}") for i, item in enumerate(value, 1))


def check_attachments(value: Any) -> None:
    """Check a post's ``attachments`` as constructed (a tuple of ``BlobRef``, at most four)."""
    if not isinstance(value, tuple) or len(value) > MAX_ATTACHMENTS:
        raise _bad(f"attachments are a tuple of at most {MAX_ATTACHMENTS} blob references")
    for item in value:
        if not isinstance(item, BlobRef):
            raise _bad("an attachment is a BlobRef")


def check_blob_ref(value: Any, name: str) -> None:
    """Check a profile's ``avatar`` or ``banner`` as constructed (a ``BlobRef``)."""
    if not isinstance(value, BlobRef):
        raise _bad(f"{name} is a BlobRef")
