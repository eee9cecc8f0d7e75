"""Identities, hashes and the text forms of ids (spec/protocol.md §3).

A feed is named by its Ed25519 public key. Text forms: a feed id is ``@`` + the 32-byte key in
lowercase base32 without padding; an entry id is ``%`` + the 32-byte entry hash in the same alphabet;
a blob id is ``&`` + the 32-byte hash of the blob's bytes (spec §8.5).
Hashes are BLAKE2b with a 32-byte digest. Signatures are verified with libsodium's rules
(``crypto_sign_open``: canonical S, no small-order keys), one rule set for every node.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions

from .errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "BLOB_SIGIL",
    "HASH_SIZE",
    "KEY_SIZE",
    "SIGNATURE_SIZE",
    "BlobId",
    "EntryId",
    "FeedId",
    "SigningKey",
    "blob_id_text",
    "hash_bytes",
    "verify_signature",
]

HASH_SIZE = 32
KEY_SIZE = 32
SIGNATURE_SIZE = 64
FEED_SIGIL = "@"
ENTRY_SIGIL = "%"
BLOB_SIGIL = "&"


def hash_bytes(data: bytes) -> bytes:
    """BLAKE2b-256 of ``data`` (spec §3.1)."""
    return hashlib.blake2b(data, digest_size=HASH_SIZE).digest()


_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def _unb32(text: str, size: int, what: str) -> bytes:
    """The ``size`` bytes whose text form is ``text`` (spec §3.1); the error names what is wrong:
    the first character outside the alphabet, the length, or a last character that cannot end an
    id (its trailing bits must be zero). Positions count from the sigil, as the user sees the id."""
    length = (size * 8 + 4) // 5
    if not text:
        raise RemoteProtocolError(f"{what}: nothing after the sigil", code="bad_id")
    for i, c in enumerate(text):
        if c in _ALPHABET:
            continue
        if c.isspace():
            problem = "whitespace"
        elif c == "=":
            problem = "'=' (ids have no padding)"
        elif c.lower() in _ALPHABET:
            problem = f"an uppercase {c!r} (ids are lowercase)"
        else:
            problem = f"{c!r}, which is not base32 (a-z, 2-7)"
        raise RemoteProtocolError(f"{what}: character {i + 2} is {problem}", code="bad_id")
    if len(text) != length:
        raise RemoteProtocolError(
            f"{what}: {len(text)} characters after the sigil, not {length}", code="bad_id"
        )
    raw = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    if _b32(raw) != text:  # the bits after the last byte must be zero
        ends = " or ".join(repr(c) for c in _ALPHABET[:: 1 << (length * 5 - size * 8)])
        raise RemoteProtocolError(
            f"{what}: cannot end in {text[-1]!r} (a {length}-character id ends in {ends})", code="bad_id"
        )
    return raw


@dataclass(frozen=True, slots=True)
class FeedId:
    """A feed: the 32-byte Ed25519 public key of its author."""

    key: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or len(self.key) != KEY_SIZE:
            raise LocalProtocolError("a feed key is 32 bytes", code="bad_id")

    def __str__(self) -> str:
        return FEED_SIGIL + _b32(self.key)

    @classmethod
    def parse(cls, text: str) -> FeedId:
        """Parse ``@base32``; raise ``RemoteProtocolError`` (code ``bad_id``) if malformed."""
        if not isinstance(text, str) or not text.startswith(FEED_SIGIL):
            raise RemoteProtocolError("a feed id starts with '@'", code="bad_id")
        return cls(_unb32(text[1:], KEY_SIZE, "feed id"))


@dataclass(frozen=True, slots=True)
class EntryId:
    """An entry: the 32-byte hash of its encoding."""

    hash: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.hash, bytes) or len(self.hash) != HASH_SIZE:
            raise LocalProtocolError("an entry hash is 32 bytes", code="bad_id")

    def __str__(self) -> str:
        return ENTRY_SIGIL + _b32(self.hash)

    @classmethod
    def parse(cls, text: str) -> EntryId:
        """Parse ``%base32``; raise ``RemoteProtocolError`` (code ``bad_id``) if malformed."""
        if not isinstance(text, str) or not text.startswith(ENTRY_SIGIL):
            raise RemoteProtocolError("an entry id starts with '%'", code="bad_id")
        return cls(_unb32(text[1:], HASH_SIZE, "entry id"))


@dataclass(frozen=True, slots=True)
class BlobId:
    """A blob: the 32-byte hash of its bytes (spec §8.5)."""

    hash: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.hash, bytes) or len(self.hash) != HASH_SIZE:
            raise LocalProtocolError("a blob hash is 32 bytes", code="bad_id")

    def __str__(self) -> str:
        return BLOB_SIGIL + _b32(self.hash)

    @property
    def hex(self) -> str:
        """The hash in lowercase hex (the blob's file name in a store)."""
        return self.hash.hex()

    @classmethod
    def parse(cls, text: str) -> BlobId:
        """Parse ``&base32``; raise ``RemoteProtocolError`` (code ``bad_id``) if malformed."""
        if not isinstance(text, str) or not text.startswith(BLOB_SIGIL):
            raise RemoteProtocolError("a blob id starts with '&'", code="bad_id")
        return cls(_unb32(text[1:], HASH_SIZE, "blob id"))


def blob_id_text(blob_hash: bytes) -> str:
    """Text form of a blob hash."""
    return BLOB_SIGIL + _b32(blob_hash)


def entry_id_text(entry_hash: bytes) -> str:
    """Text form of an entry hash."""
    return ENTRY_SIGIL + _b32(entry_hash)


def feed_id_text(key: bytes) -> str:
    """Text form of a feed key."""
    return FEED_SIGIL + _b32(key)


class SigningKey:
    """An Ed25519 secret key. The caller supplies the 32-byte seed (no OS randomness here)."""

    __slots__ = ("_public", "_secret", "_seed")

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes) or len(seed) != 32:
            raise LocalProtocolError("an Ed25519 seed is 32 bytes", code="bad_seed")
        self._seed = seed
        self._public, self._secret = nacl.bindings.crypto_sign_seed_keypair(seed)

    @property
    def seed(self) -> bytes:
        """The 32-byte seed (the secret); handle with care."""
        return self._seed

    @property
    def public_key(self) -> bytes:
        return bytes(self._public)

    @property
    def feed(self) -> FeedId:
        return FeedId(self.public_key)

    def sign(self, message: bytes) -> bytes:
        """Detached Ed25519 signature (64 bytes)."""
        signed: bytes = nacl.bindings.crypto_sign(message, self._secret)
        return signed[:SIGNATURE_SIZE]

    def __repr__(self) -> str:
        return f"SigningKey(feed={self.feed})"


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``.

    Releases the GIL while verifying, so callers may verify on several threads.
    """
    if len(public_key) != KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True
