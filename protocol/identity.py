"""Identities, hashes and the text forms of ids (spec/protocol.md §3).

A feed is named by its Ed25519 public key. Text forms: a feed id is ``@`` + the 32-byte key in
lowercase base32 without padding; an entry id is ``%`` + the 32-byte entry hash in the same alphabet.
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
    "HASH_SIZE",
    "KEY_SIZE",
    "SIGNATURE_SIZE",
    "EntryId",
    "FeedId",
    "SigningKey",
    "hash_bytes",
    "verify_signature",
]

HASH_SIZE = 32
KEY_SIZE = 32
SIGNATURE_SIZE = 64
FEED_SIGIL = "@"
ENTRY_SIGIL = "%"


def hash_bytes(data: bytes) -> bytes:
    """BLAKE2b-256 of ``data`` (spec §3.1)."""
    return hashlib.blake2b(data, digest_size=HASH_SIZE).digest()


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def _unb32(text: str, size: int, what: str) -> bytes:
    if not text or text != text.strip() or text.lower() != text:
        raise RemoteProtocolError(f"{what} must be lowercase base32", code="bad_id")
    padded = text.upper() + "=" * (-len(text) % 8)
    try:
        raw = base64.b32decode(padded)
    except (ValueError, TypeError):
        raise RemoteProtocolError(f"{what} is not valid base32", code="bad_id") from None
    if len(raw) != size or _b32(raw) != text:
        raise RemoteProtocolError(f"{what} has the wrong length", code="bad_id")
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
