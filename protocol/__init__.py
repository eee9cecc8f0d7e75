"""Sans-IO core of Tidings: encoding, identities, signed entries, content (spec/protocol.md).

Nothing here performs IO, reads the clock or draws randomness: callers pass ``now``, seeds and bytes in.

The errors and the lipmaa functions (no dependencies) load at once; every other name loads its module
on first use (PEP 562), so the CLI, whose errors derive from ``TidingsError``, starts without loading
cryptography or msgpack. (``lipmaa`` must be bound here eagerly: importing the submodule of the same
name would otherwise leave the module, not the function, as ``tidings.protocol.lipmaa``.)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    DecodeError,
    InvalidContent,
    InvalidEntry,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    TidingsError,
)
from .lipmaa import lipmaa, path_to_first, skip_target

if TYPE_CHECKING:
    from .blobs import MAX_BLOB, BlobHasher, BlobRef, blob_id
    from .box import Box, BoxKey, Message, Opened, Undecryptable, open_box, seal
    from .content import (
        Block,
        Content,
        Delete,
        Follow,
        Post,
        Profile,
        Reaction,
        Repost,
        Unblock,
        Unfollow,
        Unknown,
        blob_refs,
        decode_content,
        encode_content,
        type_of,
    )
    from .encoding import decode, encode
    from .entry import (
        MAX_ENTRY_SIZE,
        MAX_PAYLOAD_SIZE,
        VERSION,
        Entry,
        ForkProof,
        check_fork,
        create_entry,
        signature_ok,
        verify_entry,
        verify_links,
        verify_payload,
        verify_signature,
    )
    from .identity import (
        BlobId,
        EntryId,
        FeedId,
        SigningKey,
        blob_id_text,
        entry_id_text,
        feed_id_text,
        hash_bytes,
    )

#: The module of each lazily loaded name (the names imported above for type checkers).
_LAZY = {
    "blobs": ("MAX_BLOB", "BlobHasher", "BlobRef", "blob_id"),
    "box": ("Box", "BoxKey", "Message", "Opened", "Undecryptable", "open_box", "seal"),
    "content": (
        "Block", "Content", "Delete", "Follow", "Post", "Profile", "Reaction", "Repost", "Unblock",
        "Unfollow", "Unknown", "blob_refs", "decode_content", "encode_content", "type_of",
    ),
    "encoding": ("decode", "encode"),
    "entry": (
        "MAX_ENTRY_SIZE", "MAX_PAYLOAD_SIZE", "VERSION", "Entry", "ForkProof", "check_fork", "create_entry",
        "signature_ok", "verify_entry", "verify_links", "verify_payload", "verify_signature",
    ),
    "identity": (
        "BlobId", "EntryId", "FeedId", "SigningKey", "blob_id_text", "entry_id_text", "feed_id_text",
        "hash_bytes",
    ),
}  # fmt: skip
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> Any:
    """Load the module that defines ``name`` on first use and keep the name here."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "MAX_BLOB",
    "MAX_ENTRY_SIZE",
    "MAX_PAYLOAD_SIZE",
    "VERSION",
    "BlobHasher",
    "BlobId",
    "BlobRef",
    "Block",
    "Box",
    "BoxKey",
    "Content",
    "DecodeError",
    "Delete",
    "Entry",
    "EntryId",
    "FeedId",
    "Follow",
    "ForkProof",
    "InvalidContent",
    "InvalidEntry",
    "LocalProtocolError",
    "Message",
    "Opened",
    "Post",
    "Profile",
    "ProtocolError",
    "Reaction",
    "RemoteProtocolError",
    "Repost",
    "SigningKey",
    "TidingsError",
    "Unblock",
    "Undecryptable",
    "Unfollow",
    "Unknown",
    "blob_id",
    "blob_id_text",
    "blob_refs",
    "check_fork",
    "create_entry",
    "decode",
    "decode_content",
    "encode",
    "encode_content",
    "entry_id_text",
    "feed_id_text",
    "hash_bytes",
    "lipmaa",
    "open_box",
    "path_to_first",
    "seal",
    "signature_ok",
    "skip_target",
    "type_of",
    "verify_entry",
    "verify_links",
    "verify_payload",
    "verify_signature",
]
