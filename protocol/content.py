"""Content types carried in payloads (spec/protocol.md §8).

A payload is the canonical encoding of a map with a text ``type``. Known types are validated against
their schema and limits; keys a schema does not name are allowed and kept (newer writers may add
fields). Unknown types are accepted as ``Unknown`` so they are stored and passed on, never shown.
References to entries are 32-byte entry hashes; references to feeds are 32-byte keys; blobs (pictures,
files: a post's ``attachments``, a profile's ``avatar`` and ``banner``) are named by blob references
(``blobs.BlobRef``, spec §8.5). A private message is a ``box`` (``box.Box``, spec §8.6): only its
encrypted form is content; what it says is read with ``box.open_box``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgpack

from .blobs import BlobRef, attachments_from_value, check_attachments, check_blob_ref
from .box import Box
from .content_base import Content
from .encoding import decode, encode
from .entry import MAX_PAYLOAD_SIZE
from .errors import DecodeError, InvalidContent, LocalProtocolError, ProtocolError

__all__ = [
    "MAX_BIO",
    "MAX_NAME",
    "MAX_TEXT",
    "BlobRef",
    "Block",
    "Box",
    "Content",
    "Delete",
    "Follow",
    "Post",
    "Profile",
    "Reaction",
    "Repost",
    "Unblock",
    "Unfollow",
    "Unknown",
    "blob_refs",
    "decode_content",
    "encode_content",
]

#: Limits, in UTF-8 bytes unless said (spec §8.3).
MAX_TEXT = 8192
MAX_NAME = 64
MAX_BIO = 1024
MAX_EMOJI = 32
MAX_TAGS = 16
MAX_TAG = 64
MAX_MENTIONS = 32
MAX_LANG = 16
MAX_TYPE = 64
#: Limits of a post's ``origin`` (spec §8.3, §14.2): where a bridged post came from.
MAX_ORIGIN_NETWORK = 32
MAX_ORIGIN_ID = 512
MAX_ORIGIN_AUTHOR = 256
MAX_ORIGIN_URL = 2048
ORIGIN_KEYS = ("network", "id", "author", "url", "ts")


def _bad(message: str) -> InvalidContent:
    return InvalidContent(message, code="invalid_content")


def _text(value: Any, name: str, limit: int, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise _bad(f"{name} must be text")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates: not text in the sense of spec §2.1
        raise _bad(f"{name} is not valid Unicode text") from None
    if size > limit:
        raise _bad(f"{name} longer than {limit} bytes")
    if not empty and not value.strip():
        raise _bad(f"{name} must not be empty")
    return value


def _ref(value: Any, name: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != 32:
        raise _bad(f"{name} must be a 32-byte reference")
    return value


def _opt_ref(value: Any, name: str) -> bytes | None:
    return None if value is None else _ref(value, name)


def _check_extra(extra: Any, kind: str) -> None:
    """Extra keys must be text and must not shadow ``type`` or a schema field (spec §8.1)."""
    if not isinstance(extra, dict):
        raise _bad("extra must be a map")
    names = _SCHEMA.get(kind, ())
    for key in extra:
        if not isinstance(key, str) or key == "type" or key in names:
            raise _bad(f"extra key {key!r} is not allowed")


@dataclass(frozen=True, slots=True, kw_only=True)
class Post(Content):
    type: ClassVar[str] = "post"
    text: str
    reply: bytes | None = None
    root: bytes | None = None
    mentions: tuple[bytes, ...] = ()
    tags: tuple[str, ...] = ()
    lang: str | None = None
    origin: dict[str, Any] | None = field(default=None, hash=False)
    attachments: tuple[BlobRef, ...] = ()

    def __post_init__(self) -> None:
        _text(self.text, "text", MAX_TEXT)
        _opt_ref(self.reply, "reply")
        _opt_ref(self.root, "root")
        if (self.reply is None) != (self.root is None):
            raise _bad("a reply names both reply and root")
        if not isinstance(self.mentions, tuple) or len(self.mentions) > MAX_MENTIONS:
            raise _bad(f"at most {MAX_MENTIONS} mentions")
        for m in self.mentions:
            _ref(m, "mention")
        if not isinstance(self.tags, tuple) or len(self.tags) > MAX_TAGS:
            raise _bad(f"at most {MAX_TAGS} tags")
        for t in self.tags:
            _text(t, "tag", MAX_TAG)
        if self.lang is not None:
            _text(self.lang, "lang", MAX_LANG)
        if self.origin is not None:
            _check_origin(self.origin)
        check_attachments(self.attachments)  # spec §8.5
        _check_extra(self.extra, self.type)

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text}
        if self.reply is not None:
            out["reply"], out["root"] = self.reply, self.root
        if self.mentions:
            out["mentions"] = list(self.mentions)
        if self.tags:
            out["tags"] = list(self.tags)
        if self.lang is not None:
            out["lang"] = self.lang
        if self.origin is not None:
            out["origin"] = dict(self.origin)
        if self.attachments:
            out["attachments"] = [a.to_map() for a in self.attachments]
        return out


def _check_origin(origin: Any) -> None:
    """A bridged post's origin (spec §14.2): network and original id, optional author, URL and time."""
    if not isinstance(origin, dict) or not origin:
        raise _bad("origin must be a map")
    for key in origin:
        if key not in ORIGIN_KEYS:
            raise _bad(f"origin key {key!r} is not allowed")
    if "network" not in origin or "id" not in origin:
        raise _bad("origin names its network and the original id")
    _text(origin["network"], "origin network", MAX_ORIGIN_NETWORK)
    _text(origin["id"], "origin id", MAX_ORIGIN_ID)
    if "author" in origin:
        _text(origin["author"], "origin author", MAX_ORIGIN_AUTHOR)
    if "url" in origin:
        _text(origin["url"], "origin url", MAX_ORIGIN_URL)
    if "ts" in origin:
        ts = origin["ts"]
        if not isinstance(ts, int) or isinstance(ts, bool) or not 0 <= ts < 2**53:
            raise _bad("origin ts is an integer number of milliseconds")


@dataclass(frozen=True, slots=True, kw_only=True)
class Reaction(Content):
    type: ClassVar[str] = "reaction"
    target: bytes
    emoji: str

    def __post_init__(self) -> None:
        _ref(self.target, "target")
        _text(self.emoji, "emoji", MAX_EMOJI)
        _check_extra(self.extra, self.type)

    def fields(self) -> dict[str, Any]:
        return {"target": self.target, "emoji": self.emoji}


@dataclass(frozen=True, slots=True, kw_only=True)
class _Targeted(Content):
    target: bytes

    def __post_init__(self) -> None:
        _ref(self.target, "target")
        _check_extra(self.extra, self.type)

    def fields(self) -> dict[str, Any]:
        return {"target": self.target}


@dataclass(frozen=True, slots=True, kw_only=True)
class Repost(_Targeted):
    type: ClassVar[str] = "repost"


@dataclass(frozen=True, slots=True, kw_only=True)
class Delete(_Targeted):
    """Tombstone for one of the author's own payloads (spec §8.2.9)."""

    type: ClassVar[str] = "delete"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Graph(Content):
    feed: bytes

    def __post_init__(self) -> None:
        _ref(self.feed, "feed")
        _check_extra(self.extra, self.type)

    def fields(self) -> dict[str, Any]:
        return {"feed": self.feed}


@dataclass(frozen=True, slots=True, kw_only=True)
class Follow(_Graph):
    type: ClassVar[str] = "follow"


@dataclass(frozen=True, slots=True, kw_only=True)
class Unfollow(_Graph):
    type: ClassVar[str] = "unfollow"


@dataclass(frozen=True, slots=True, kw_only=True)
class Block(_Graph):
    type: ClassVar[str] = "block"


@dataclass(frozen=True, slots=True, kw_only=True)
class Unblock(_Graph):
    type: ClassVar[str] = "unblock"


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile(Content):
    type: ClassVar[str] = "profile"
    name: str | None = None
    bio: str | None = None
    avatar: BlobRef | None = None
    banner: BlobRef | None = None

    def __post_init__(self) -> None:
        if self.name is None and self.bio is None and self.avatar is None and self.banner is None:
            raise _bad("a profile sets a name, a bio, an avatar or a banner")
        if self.name is not None:
            _text(self.name, "name", MAX_NAME)
        if self.bio is not None:
            _text(self.bio, "bio", MAX_BIO, empty=True)
        for name in ("avatar", "banner"):  # spec §8.5
            value = getattr(self, name)
            if value is not None:
                check_blob_ref(value, name)
        _check_extra(self.extra, self.type)

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.name is not None:
            out["name"] = self.name
        if self.bio is not None:
            out["bio"] = self.bio
        if self.avatar is not None:
            out["avatar"] = self.avatar.to_map()
        if self.banner is not None:
            out["banner"] = self.banner.to_map()
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Unknown(Content):
    """A type this version does not know: kept and passed on, not shown (spec §8.4)."""

    kind: str

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or self.kind in KNOWN:
            raise _bad("an unknown type must not be the name of a known one")
        _type_name(self.kind)
        _check_extra(self.extra, self.kind)

    @property
    def type_name(self) -> str:
        return self.kind

    def to_map(self) -> dict[str, Any]:
        out = dict(self.extra)
        out["type"] = self.kind
        return out


KNOWN: dict[str, type[Content]] = {
    c.type: c for c in (Post, Reaction, Repost, Delete, Follow, Unfollow, Block, Unblock, Profile, Box)
}
_SCHEMA: dict[str, tuple[str, ...]] = {
    "post": ("text", "reply", "root", "mentions", "tags", "lang", "origin", "attachments"),
    "reaction": ("target", "emoji"),
    "repost": ("target",),
    "delete": ("target",),
    "follow": ("feed",),
    "unfollow": ("feed",),
    "block": ("feed",),
    "unblock": ("feed",),
    "profile": ("name", "bio", "avatar", "banner"),
    "box": Box.KEYS,
}


def _type_name(kind: Any) -> str:
    """A ``type`` is text of 1 to ``MAX_TYPE`` UTF-8 bytes (spec §8.1)."""
    if not isinstance(kind, str) or not kind:
        raise _bad(f"a payload has a text 'type' of 1 to {MAX_TYPE} bytes")
    _text(kind, "type", MAX_TYPE, empty=True)
    return kind


def type_of(content: Content) -> str:
    """The wire ``type`` of a content object (unknown types keep theirs)."""
    return content.kind if isinstance(content, Unknown) else content.type


def from_map(value: Any) -> Content:
    """Validate a decoded map and build its content object (spec §8.1)."""
    if not isinstance(value, dict):
        raise _bad("a payload is a map")
    kind = _type_name(value.get("type"))
    if kind == Box.type:  # spec §8.6: no extra keys, and its own error code
        return Box.from_map(value)
    cls = KNOWN.get(kind)
    if cls is None:
        return Unknown(kind=kind, extra={k: v for k, v in value.items() if k != "type"})
    names = _SCHEMA[kind]
    args = {k: value[k] for k in names if k in value and value[k] is not None}
    extra = {k: v for k, v in value.items() if k not in names and k != "type"}
    for key in ("mentions", "tags"):
        if key in args:
            if not isinstance(args[key], list):
                raise _bad(f"{key} must be an array")
            args[key] = tuple(args[key])
    if "attachments" in args:  # spec §8.5
        args["attachments"] = attachments_from_value(args["attachments"])
    for key in ("avatar", "banner"):
        if key in args and kind == "profile":
            args[key] = BlobRef.from_map(args[key], key)
    try:
        return cls(extra=extra, **args)
    except TypeError:
        raise _bad(f"a {kind} is missing a required field") from None


def blob_refs(content: Content) -> tuple[BlobRef, ...]:
    """The blob references of ``content`` (spec §8.5): a post's attachments, a profile's avatar and
    banner; none for other types."""
    if isinstance(content, Post):
        return content.attachments
    if isinstance(content, Profile):
        return tuple(r for r in (content.avatar, content.banner) if r is not None)
    return ()


def encode_content(content: Content) -> bytes:
    """Canonical payload bytes for ``content`` (spec §8.1)."""
    data = encode(content.to_map())
    if len(data) > MAX_PAYLOAD_SIZE:
        raise LocalProtocolError("payload larger than the maximum", code="payload_too_large")
    return data


def decode_content(payload: bytes) -> Content:
    """Strictly decode and validate a payload; raise ``DecodeError`` or ``InvalidContent``."""
    if len(payload) > MAX_PAYLOAD_SIZE:
        raise DecodeError("payload larger than the maximum", code="too_large")
    fast = _decode_fast(payload)
    if fast is not None:
        return fast
    # Slow path: every check in turn, so a defect gets its precise code (spec §1.3).
    return from_map(decode(payload, max_size=MAX_PAYLOAD_SIZE))


def _decode_fast(payload: bytes) -> Content | None:
    """Hot path for a known type with only schema fields (the common case on ingest).

    ``from_map`` types every field (text, 32-byte references, arrays of those), so no float or
    extension can hide inside; keys in UTF-8 order plus a byte-exact re-pack then mean the payload is
    canonical (spec §2.1). Anything else returns None and takes the slow path; results are equal.
    """
    try:
        value = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception:
        return None
    if type(value) is not dict:
        return None
    kind = value.get("type")
    names = _SCHEMA.get(kind) if type(kind) is str else None
    if names is None:
        return None
    keys = list(value)
    if any(k != "type" and k not in names for k in keys):
        return None
    if keys != sorted(keys, key=lambda k: k.encode("utf-8")):
        return None
    try:
        content = from_map(value)
    except ProtocolError:
        return None
    if any(ref.extra for ref in blob_refs(content)):
        return None  # extra keys of a blob reference are not typed: a float could hide there
    if msgpack.packb(value, use_bin_type=True) != payload:
        return None
    return content
