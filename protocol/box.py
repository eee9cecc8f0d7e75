"""Private messages: the ``box`` content type (spec/protocol.md §8.6).

Theory of operation. A box is the payload of an ordinary entry in its author's log, so it is signed,
replicated, carried by any node that replicates the log and deleted like any payload (spec §8.2.9). It
holds a message (``Message``: text, the recipients, an optional reply) encrypted so that only the
author and the recipients can read it, and so that a node that holds the box learns neither who the
recipients are, nor how many there are, nor the exact length of the text:

- **Content key.** A fresh random 32-byte key ``K`` seals the message with ChaCha20-Poly1305 (IETF,
  libsodium). The body is padded (ISO/IEC 7816-4: ``80`` then zeros) to a size bucket, 256 … 8192
  bytes of ciphertext, so only the bucket shows.
- **Slots.** ``K`` is wrapped once for every participant (the recipients and the author) in a
  48-byte slot; the slot list is filled up with random 48-byte slots to a bucket of 4, 8, 16 or 32
  and put in random order. A slot is ``K`` and a tag under a per-recipient wrap key, so every slot,
  real or not, is 48 bytes that look random.
- **Keys.** Recipients are feeds: their X25519 keys are their Ed25519 feed keys converted
  (libsodium ``crypto_sign_ed25519_pk_to_curve25519``). One ephemeral X25519 key pair per box; the
  wrap key of a recipient is BLAKE2b keyed by the X25519 shared secret over the ephemeral and the
  recipient's public key. It does not depend on the slot's position, so a reader computes one X25519
  per box and tries one AEAD open per slot: no slot says whose it is.
- **Binding.** Every AEAD has as associated data the *context*: the author's feed key, the entry's
  ``seq`` and ``backlink`` (the entry hash cannot be bound: the payload is hashed into the entry), the
  ephemeral key and a commitment to ``K``; the body's also has every slot. So a box opens only under
  the entry it was written for (not under another author's, nor at another place in its author's
  log), a slot moved between boxes opens nothing, any changed byte fails, and the commitment makes
  every reader that opens a slot read the same text (ChaCha20-Poly1305 alone does not commit to its
  key).

Sealing is deterministic given the random bytes, which the caller passes in (``rng``), so the
vectors of ``spec/vectors/box.json`` are reproducible; nothing here draws randomness itself. Opening
gives ``Opened`` (the message, its author and participants), ``Undecryptable`` (a slot opened for us
but the rest fails: shown as such, never as altered text), or None (not ours). A box that breaks the
structure rules is ``InvalidContent`` code ``bad_box``; like any invalid payload its entry is still
kept (spec §8.4).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import nacl.bindings as sodium
import nacl.exceptions
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .content_base import Content
from .encoding import decode, encode
from .errors import DecodeError, InvalidContent, LocalProtocolError
from .identity import KEY_SIZE, SigningKey

__all__ = [
    "BODY_BUCKETS",
    "LOCAL_OVERHEAD",
    "MAX_BOX_TEXT",
    "MAX_PARTICIPANTS",
    "SLOT_BUCKETS",
    "SLOT_SIZE",
    "Box",
    "BoxKey",
    "Message",
    "Opened",
    "Rng",
    "Undecryptable",
    "box_context",
    "open_box",
    "seal",
]

#: ``rng(n)`` returns ``n`` random bytes (``os.urandom`` in a node; a seeded stream in tests).
Rng = Callable[[int], bytes]

DOMAIN = b"tidings/box/v1"
#: A slot: the 32-byte content key and a 16-byte tag (spec §8.6).
SLOT_SIZE = 48
TAG_SIZE = 16
SLOT_BUCKETS = (4, 8, 16, 32)
#: Participants of a box: the author and up to 31 recipients.
MAX_PARTICIPANTS = SLOT_BUCKETS[-1]
MAX_RECIPIENTS = MAX_PARTICIPANTS - 1
#: Sizes of the sealed body, tag included: powers of two from 256 to 8192 bytes.
BODY_BUCKETS = (256, 512, 1024, 2048, 4096, 8192)
#: The longest text, in UTF-8 bytes: with 31 recipients and a reply it still fits the largest bucket.
MAX_BOX_TEXT = 7000
_NONCE = bytes(12)  # every key seals exactly one thing (spec §8.6): a constant nonce is safe
_WRAP = b"tidings-box-wrap"
_BODY = b"tidings-box-body"
_COMMIT = b"tidings-box-cmt"
_CONVERSATION = b"tidings-convers"
_LOCAL = b"tidings-box-home"  # the key of what a home keeps of its opened messages (``BoxKey.seal_local``)
#: Bytes ``BoxKey.seal_local`` adds: the nonce and the tag
LOCAL_OVERHEAD = 12 + 16


def _bad(message: str) -> InvalidContent:
    return InvalidContent(message, code="bad_box")


def _kdf(key: bytes, person: bytes, data: bytes = b"") -> bytes:
    return hashlib.blake2b(data, digest_size=32, key=key, person=person).digest()


# -- the payload ------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Box(Content):
    """A sealed private message as it travels (spec §8.6): ``eph`` the ephemeral X25519 public key,
    ``commit`` the commitment to the content key, ``slots`` the wrapped keys (a bucket of them),
    ``body`` the sealed, padded message (a bucket of bytes). Nothing else: no extra keys."""

    type: ClassVar[str] = "box"
    KEYS: ClassVar[tuple[str, ...]] = ("body", "commit", "eph", "slots")
    eph: bytes
    commit: bytes
    slots: tuple[bytes, ...]
    body: bytes

    def __post_init__(self) -> None:
        for name in ("eph", "commit"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != KEY_SIZE:
                raise _bad(f"a box's {name} is 32 bytes")
        if not isinstance(self.slots, tuple) or len(self.slots) not in SLOT_BUCKETS:
            count = len(self.slots) if isinstance(self.slots, tuple | list) else "no array of"
            raise _bad(f"a box has 4, 8, 16 or 32 slots, not {count}")
        for i, slot in enumerate(self.slots):
            if not isinstance(slot, bytes) or len(slot) != SLOT_SIZE:
                raise _bad(f"slot {i} of the box is not {SLOT_SIZE} bytes")
        if not isinstance(self.body, bytes) or len(self.body) not in BODY_BUCKETS:
            size = len(self.body) if isinstance(self.body, bytes) else "no bytes"
            raise _bad(f"a box's body is 256, 512, ... or 8192 bytes, not {size}")
        if self.extra:
            raise _bad(f"a box has no keys but {', '.join(self.KEYS)} and type")

    def fields(self) -> dict[str, Any]:
        return {"body": self.body, "commit": self.commit, "eph": self.eph, "slots": list(self.slots)}

    @classmethod
    def from_map(cls, value: dict[str, Any]) -> Box:
        """A decoded payload map of type ``box`` (spec §8.6); any rule broken is ``bad_box``."""
        extra = [k for k in value if k not in cls.KEYS and k != "type"]
        if extra:
            raise _bad(f"a box has no key {extra[0]!r}: nothing may travel beside the ciphertext")
        for key in cls.KEYS:
            if value.get(key) is None:
                raise _bad(f"a box has no {key}")
        slots = value["slots"]
        if not isinstance(slots, list):
            raise _bad("a box's slots are an array")
        return cls(eph=value["eph"], commit=value["commit"], slots=tuple(slots), body=value["body"])


# -- the message inside -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """What a box says (spec §8.6): ``text``, the recipients ``to`` (feed keys, not the author), and
    the message it answers, ``reply`` (an entry id). ``extra`` keeps keys this version does not name."""

    KEYS: ClassVar[tuple[str, ...]] = ("reply", "text", "to")
    text: str
    to: tuple[bytes, ...]
    reply: bytes | None = None
    extra: dict[str, Any] = field(default_factory=dict, hash=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise InvalidContent("a message's text is text", code="bad_message")
        try:
            size = len(self.text.encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidContent("the text is not valid Unicode text", code="bad_message") from None
        if size > MAX_BOX_TEXT:
            raise InvalidContent(
                f"a private message is at most {MAX_BOX_TEXT} bytes of text, this one {size}",
                code="message_too_long",
            )
        if not self.text.strip():
            raise InvalidContent("a message's text must not be empty", code="bad_message")
        if not isinstance(self.to, tuple) or not self.to:
            raise InvalidContent("a message names at least one recipient", code="bad_message")
        if len(self.to) > MAX_RECIPIENTS:
            raise InvalidContent(
                f"a private message goes to at most {MAX_RECIPIENTS} feeds besides you, not {len(self.to)}",
                code="too_many_recipients",
            )
        if any(not isinstance(k, bytes) or len(k) != KEY_SIZE for k in self.to):
            raise InvalidContent("a recipient is a 32-byte feed key", code="bad_message")
        if len(set(self.to)) != len(self.to):
            raise InvalidContent("a recipient is named twice", code="bad_message")
        if self.reply is not None and (not isinstance(self.reply, bytes) or len(self.reply) != 32):
            raise InvalidContent("reply is a 32-byte entry id", code="bad_message")
        extra = self.extra
        if not isinstance(extra, dict) or any(not isinstance(k, str) or k in self.KEYS for k in extra):
            raise InvalidContent("extra keys are text and not a field's name", code="bad_message")

    def to_map(self) -> dict[str, Any]:
        out = dict(self.extra)
        out.update(text=self.text, to=list(self.to))
        if self.reply is not None:
            out["reply"] = self.reply
        return out

    @classmethod
    def from_map(cls, value: Any) -> Message:
        """A decoded body (spec §8.6); a rule broken is ``InvalidContent``."""
        if not isinstance(value, dict) or not isinstance(value.get("to"), list):
            raise InvalidContent("a message is a map with text and to", code="bad_message")
        extra = {k: v for k, v in value.items() if k not in cls.KEYS}
        text: Any = value.get("text")
        return cls(text=text, to=tuple(value["to"]), reply=value.get("reply"), extra=extra)


# -- keys -------------------------------------------------------------------------------------------------
def x25519_public(feed: bytes) -> bytes:
    """The X25519 key of a feed: its Ed25519 key converted (spec §8.6). A key that is not a valid
    point of prime order is ``LocalProtocolError`` code ``bad_recipient``."""
    try:
        return bytes(sodium.crypto_sign_ed25519_pk_to_curve25519(feed))
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise LocalProtocolError("not a feed key a message can be sealed for", code="bad_recipient") from None


class BoxKey:
    """What a reader needs to open boxes: its feed key and the X25519 keys converted from its
    Ed25519 identity (spec §8.6)."""

    __slots__ = ("_exchange", "_local", "_names", "_secret", "feed", "public")

    def __init__(self, key: SigningKey) -> None:
        _, secret = sodium.crypto_sign_seed_keypair(key.seed)
        self._set(bytes(sodium.crypto_sign_ed25519_sk_to_curve25519(secret)), key.public_key)

    def _set(self, x25519: bytes, feed: bytes) -> None:
        # Converted once per key, not per box. The per-box X25519 and slot opens use ``cryptography``,
        # which keeps the GIL for these microsecond calls: PyNaCl (cffi) gives it up on every call, and
        # a node opens boxes on the thread that prepares a batch while another thread writes the last
        # one, so each call waited for the writer to hand the GIL back (bench/RESULTS.md, private).
        self._secret = x25519
        self._exchange = X25519PrivateKey.from_private_bytes(x25519).exchange
        self._local = ChaCha20Poly1305(_kdf(x25519, _LOCAL))
        self._names = _kdf(x25519, _LOCAL, b"names")
        self.feed = feed
        self.public = x25519_public(feed)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its X25519 secret and feed (not the signing key): what a store's own verify
        worker processes are given once, when they start, to open boxes (storage/verifier.py)."""
        return (_box_key, (self._secret, self.feed))

    def same(self, other: BoxKey | None) -> bool:
        """Whether ``other`` is this key (the same feed)."""
        return other is not None and other.feed == self.feed

    def shared(self, eph: bytes) -> bytes | None:
        """X25519 with the box's ephemeral key; None for a point that gives no secret (low order)."""
        try:
            return self._exchange(X25519PublicKey.from_public_bytes(eph))
        except ValueError:
            return None

    # What a home keeps of the messages it opened is sealed with a key of its own, derived from the
    # X25519 secret (so from the identity, and behind its passphrase when the key file has one): the
    # database alone tells neither what was written nor to whom (storage/messages.py). Not on the wire.
    def seal_local(self, data: bytes, *, ad: bytes, nonce: bytes) -> bytes:
        """``data`` sealed for this home only, bound to ``ad``: ``nonce`` (12 random bytes, never
        used twice) then the ChaCha20-Poly1305 ciphertext and tag."""
        if len(nonce) != 12:
            raise LocalProtocolError("a local seal needs a 12-byte nonce", code="bad_nonce")
        return nonce + self._local.encrypt(nonce, data, ad)

    def open_local(self, sealed: bytes, *, ad: bytes) -> bytes | None:
        """What ``seal_local`` sealed with this key and ``ad``; None when it was not, or was changed."""
        try:
            return self._local.decrypt(sealed[:12], sealed[12:], ad)
        except (InvalidTag, ValueError):
            return None

    def local_name(self, participants: Sequence[bytes]) -> bytes:
        """A name for the conversation of ``participants`` that only this key can compute (a plain
        hash of the keys could be matched against every pair of known feeds)."""
        return _kdf(self._names, _CONVERSATION, b"".join(sorted(set(participants))))

    def __repr__(self) -> str:
        return f"BoxKey(feed={self.feed.hex()[:16]}…)"


def _box_key(x25519: bytes, feed: bytes) -> BoxKey:
    key = BoxKey.__new__(BoxKey)
    key._set(x25519, feed)
    return key


def box_context(author: bytes, seq: int, backlink: bytes | None, eph: bytes, commit: bytes) -> bytes:
    """The associated data of every slot (spec §8.6): the place of the entry and the box's header."""
    return DOMAIN + b"\x00" + encode([author, seq, backlink, eph, commit])


def _draw(rng: Rng, n: int) -> bytes:
    data = rng(n)
    if not isinstance(data, bytes) or len(data) != n:
        raise LocalProtocolError(f"the rng must return {n} bytes", code="bad_rng")
    return data


def _bucket(size: int, buckets: tuple[int, ...]) -> int | None:
    return next((b for b in buckets if b >= size), None)


# -- sealing ----------------------------------------------------------------------------------------------
def seal(message: Message, *, author: bytes, seq: int, backlink: bytes | None, rng: Rng) -> Box:
    """Seal ``message`` from ``author`` as the payload of the entry at ``seq`` after ``backlink``
    (spec §8.6). Draws, in order: the ephemeral secret (32), the content key (32), a random slot
    (48) for each slot beyond the participants, then 8 bytes per slot to order them."""
    if author in message.to:
        raise LocalProtocolError(
            "the author is always a participant: do not name it in to", code="bad_recipient"
        )
    recipients = [x25519_public(feed) for feed in (author, *message.to)]
    plain = encode(message.to_map())
    size = _bucket(len(plain) + 1 + TAG_SIZE, BODY_BUCKETS)
    if size is None:
        raise LocalProtocolError("the message does not fit the largest box", code="message_too_long")
    eph_secret = _draw(rng, 32)
    eph = bytes(sodium.crypto_scalarmult_base(eph_secret))
    content_key = _draw(rng, 32)
    commit = _kdf(content_key, _COMMIT)
    context = box_context(author, seq, backlink, eph, commit)
    slots = []
    for public in recipients:
        try:
            shared = bytes(sodium.crypto_scalarmult(eph_secret, public))
        except (nacl.exceptions.CryptoError, nacl.exceptions.RuntimeError):
            raise LocalProtocolError("a recipient key gives no shared secret", code="bad_recipient") from None
        wrap = _kdf(shared, _WRAP, eph + public)
        slots.append(
            bytes(sodium.crypto_aead_chacha20poly1305_ietf_encrypt(content_key, context, _NONCE, wrap))
        )
    count = _bucket(len(slots), SLOT_BUCKETS)
    assert count is not None  # at most 32 participants: Message checks ``to``
    slots += [_draw(rng, SLOT_SIZE) for _ in range(count - len(slots))]
    order = [_draw(rng, 8) for _ in slots]
    slots = [slot for _, _, slot in sorted(zip(order, range(count), slots, strict=True))]
    padded = plain + b"\x80" + bytes(size - TAG_SIZE - len(plain) - 1)
    body = sodium.crypto_aead_chacha20poly1305_ietf_encrypt(
        padded, context + b"".join(slots), _NONCE, _kdf(content_key, _BODY)
    )
    return Box(eph=eph, commit=commit, slots=tuple(slots), body=bytes(body))


# -- opening ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Opened:
    """A box opened: its message, its author and every participant (author included, sorted)."""

    message: Message
    author: bytes
    participants: tuple[bytes, ...]

    @property
    def recipients(self) -> tuple[bytes, ...]:
        return self.message.to


@dataclass(frozen=True, slots=True, kw_only=True)
class Undecryptable:
    """A slot of the box opened for us but the rest did not: shown as undecryptable, never read."""

    reason: str


def _unpad(data: bytes) -> bytes | None:
    end = len(data.rstrip(b"\x00"))
    if end == 0 or data[end - 1] != 0x80:
        return None
    return data[: end - 1]


def open_box(
    box: Box, *, author: bytes, seq: int, backlink: bytes | None, key: BoxKey
) -> Opened | Undecryptable | None:
    """Open ``box``, the payload of ``author``'s entry at ``seq`` after ``backlink``, with ``key``
    (spec §8.6): one X25519, then one AEAD open per slot until one opens. None when no slot opens
    (the box is not ours, or was changed where we cannot tell)."""
    shared = key.shared(box.eph)
    if shared is None:
        return None
    context = box_context(author, seq, backlink, box.eph, box.commit)
    wrap = _kdf(shared, _WRAP, box.eph + key.public)
    content_key = None
    aead = ChaCha20Poly1305(wrap)  # the same AEAD as sealing (RFC 8439): see BoxKey on why this library
    for slot in box.slots:
        try:
            content_key = aead.decrypt(_NONCE, slot, context)
            break
        except InvalidTag:
            continue
    if content_key is None:
        return None
    if not hmac.compare_digest(_kdf(content_key, _COMMIT), box.commit):
        return Undecryptable(reason="the content key does not match its commitment")
    try:
        padded = sodium.crypto_aead_chacha20poly1305_ietf_decrypt(
            box.body, context + b"".join(box.slots), _NONCE, _kdf(content_key, _BODY)
        )
    except nacl.exceptions.CryptoError:
        return Undecryptable(reason="the body fails authentication")
    plain = _unpad(bytes(padded))
    if plain is None:
        return Undecryptable(reason="the body is not padded as it should be")
    try:
        message = Message.from_map(decode(plain, max_size=len(plain)))
    except (DecodeError, InvalidContent) as exc:
        return Undecryptable(reason=f"the body is not a message: {exc.message}")
    if author in message.to or (key.feed != author and key.feed not in message.to):
        return Undecryptable(reason="the message does not name its participants as they are")
    return Opened(message=message, author=author, participants=tuple(sorted({author, *message.to})))
