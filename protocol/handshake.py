"""Noise XX handshake carrying Tidings identities, and the encrypted frame codec (spec/protocol.md §11).

Theory of operation. Each node has an X25519 *transport* key and its Ed25519 *identity* (feed) key.
The connection runs ``Noise_XX_25519_ChaChaPoly_BLAKE2b`` (or ``Noise_XXpsk3_...`` with a network key
for private swarms). Noise proves each side holds its transport key; the handshake payload proves the
feed owns that transport key: ``{"feed": ed25519 public key, "sig": sign(TRANSPORT_DOMAIN + x25519
public key)}``, as libp2p-noise does. The responder sends its payload in message 2, the initiator in
message 3. States: START -> (msg 1) -> WAIT_2 / WAIT_3 -> DONE, or FAILED on any error.

After the handshake every frame on the wire is ``u32 big-endian length || Noise ciphertext``; the length
is at most ``MAX_FRAME`` (Noise's own 65,535-byte limit), so a peer announcing more is cut off at once.
Handshake messages use the same framing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from noise.connection import Keypair, NoiseConnection

from .encoding import decode, encode
from .errors import DecodeError, LocalProtocolError, RemoteProtocolError
from .identity import KEY_SIZE, SigningKey, verify_signature

__all__ = [
    "MAX_FRAME",
    "MAX_PLAINTEXT",
    "FrameDecoder",
    "Handshake",
    "Session",
    "encode_frame",
]

PROTOCOL_NAME = b"Noise_XX_25519_ChaChaPoly_BLAKE2b"
PSK_PROTOCOL_NAME = b"Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b"
PROLOGUE = b"tidings/transport/v1"
TRANSPORT_DOMAIN = b"tidings/noise-static/v1\x00"
MAX_FRAME = 65535
TAG_SIZE = 16
MAX_PLAINTEXT = MAX_FRAME - TAG_SIZE
_LEN = struct.Struct(">I")


def encode_frame(body: bytes) -> bytes:
    """Length-prefix one frame (handshake message or ciphertext)."""
    if len(body) > MAX_FRAME:
        raise LocalProtocolError("frame larger than the maximum", code="frame_too_large")
    return _LEN.pack(len(body)) + body


class FrameDecoder:
    """Splits a byte stream into frames; refuses a length over ``max_frame`` before buffering it."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buffer = bytearray()
        self._max = max_frame

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """The next complete frame, or None when more bytes are needed."""
        if len(self._buffer) < 4:
            return None
        (size,) = _LEN.unpack_from(self._buffer)
        if size > self._max:
            raise RemoteProtocolError(f"peer announced a {size}-byte frame", code="frame_too_large")
        if len(self._buffer) < 4 + size:
            return None
        frame = bytes(self._buffer[4 : 4 + size])
        del self._buffer[: 4 + size]
        return frame

    @property
    def buffered(self) -> int:
        return len(self._buffer)


def identity_payload(identity: SigningKey, transport_public: bytes) -> bytes:
    """The handshake payload binding ``identity`` to a transport key (spec §11.2)."""
    return encode({"feed": identity.public_key, "sig": identity.sign(TRANSPORT_DOMAIN + transport_public)})


def check_identity_payload(payload: bytes, transport_public: bytes) -> bytes:
    """Return the feed key named by a peer's payload after checking its signature."""
    try:
        value = decode(payload, max_size=1024)
    except DecodeError as exc:
        raise RemoteProtocolError(f"bad handshake payload: {exc.args[0]}", code="bad_identity") from None
    if not isinstance(value, dict) or set(value) != {"feed", "sig"}:
        raise RemoteProtocolError("handshake payload must be {feed, sig}", code="bad_identity")
    feed, sig = value["feed"], value["sig"]
    if not isinstance(feed, bytes) or len(feed) != KEY_SIZE or not isinstance(sig, bytes):
        raise RemoteProtocolError("handshake payload has bad field types", code="bad_identity")
    if not verify_signature(feed, sig, TRANSPORT_DOMAIN + transport_public):
        raise RemoteProtocolError("peer's identity does not sign its transport key", code="bad_identity")
    return feed


class Session:
    """Encrypts and decrypts frames after a finished handshake."""

    def __init__(self, noise: NoiseConnection, remote_feed: bytes) -> None:
        self._noise = noise
        self.remote_feed = remote_feed

    def encrypt(self, plaintext: bytes) -> bytes:
        """One framed ciphertext for ``plaintext`` (at most ``MAX_PLAINTEXT`` bytes)."""
        if len(plaintext) > MAX_PLAINTEXT:
            raise LocalProtocolError("frame payload too large", code="frame_too_large")
        return encode_frame(bytes(self._noise.encrypt(plaintext)))

    def decrypt(self, frame: bytes) -> bytes:
        try:
            return bytes(self._noise.decrypt(frame))
        except Exception as exc:
            raise RemoteProtocolError(
                f"cannot decrypt frame ({type(exc).__name__})", code="decrypt"
            ) from None


@dataclass(slots=True)
class _Keys:
    identity: SigningKey
    transport_private: bytes
    transport_public: bytes


class Handshake:
    """One side of the Noise XX handshake. Feed it frames with ``receive``; send what it returns."""

    def __init__(
        self,
        *,
        initiator: bool,
        identity: SigningKey,
        transport_private: bytes,
        network_key: bytes | None = None,
    ) -> None:
        if len(transport_private) != 32:
            raise LocalProtocolError("transport key is 32 bytes", code="bad_key")
        if network_key is not None and len(network_key) != 32:
            raise LocalProtocolError("network key is 32 bytes", code="bad_key")
        self.initiator = initiator
        name = PSK_PROTOCOL_NAME if network_key is not None else PROTOCOL_NAME
        self._noise = NoiseConnection.from_name(name)
        if initiator:
            self._noise.set_as_initiator()
        else:
            self._noise.set_as_responder()
        self._noise.set_keypair_from_private_bytes(Keypair.STATIC, transport_private)
        self._noise.set_prologue(PROLOGUE)
        if network_key is not None:
            self._noise.set_psks(psk=network_key)
        self._noise.start_handshake()
        state = self._noise.noise_protocol.handshake_state
        self._state = state  # kept: the library drops it when the handshake ends, we still need rs
        public = bytes(state.s.public_bytes)
        self._keys = _Keys(identity, transport_private, public)
        self._step = 0
        self.remote_feed: bytes | None = None
        self.failed = False

    @property
    def transport_public(self) -> bytes:
        return self._keys.transport_public

    @property
    def finished(self) -> bool:
        return self.remote_feed is not None and bool(self._noise.handshake_finished)

    def start(self) -> bytes | None:
        """The first framed message (initiator), or None (responder waits)."""
        if not self.initiator:
            return None
        self._step = 1
        return encode_frame(bytes(self._noise.write_message(b"")))

    def _remote_static(self) -> bytes:
        rs = self._state.rs
        if rs is None:  # pragma: no cover - XX always carries it by then
            raise RemoteProtocolError("peer sent no static key", code="handshake")
        return bytes(rs.public_bytes)

    def receive(self, frame: bytes) -> bytes | None:
        """Take one handshake frame; return the framed reply to send, if any."""
        if self.failed or self.finished:
            raise LocalProtocolError("handshake is not expecting data", code="handshake_state")
        try:
            payload = bytes(self._noise.read_message(frame))
        except Exception as exc:
            self.failed = True
            raise RemoteProtocolError(
                f"handshake failed ({type(exc).__name__}): wrong network key or garbage", code="handshake"
            ) from None
        own = identity_payload(self._keys.identity, self._keys.transport_public)
        try:
            if self.initiator:
                # message 2 from the responder: e, ee, s, es + its identity
                self.remote_feed = check_identity_payload(payload, self._remote_static())
                return encode_frame(bytes(self._noise.write_message(own)))
            if self._step == 0:
                if payload:
                    raise RemoteProtocolError(
                        "unexpected data in handshake message 1: one side uses a network key and the other"
                        " does not (or the peer is not a Tidings node)",
                        code="handshake",
                    )
                self._step = 2
                return encode_frame(bytes(self._noise.write_message(own)))
            # message 3 from the initiator: s, se + its identity
            self.remote_feed = check_identity_payload(payload, self._remote_static())
            return None
        except RemoteProtocolError:
            self.failed = True
            raise

    def session(self) -> Session:
        if not self.finished or self.remote_feed is None:
            raise LocalProtocolError("handshake not finished", code="handshake_state")
        return Session(self._noise, self.remote_feed)
