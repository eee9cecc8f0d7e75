"""Noise XX handshake carrying Tidings identities, and the encrypted frame codec (spec/protocol.md §11).

Theory of operation. Each node has an X25519 *transport* key and its Ed25519 *identity* (feed) key.
The connection runs ``Noise_XX_25519_ChaChaPoly_BLAKE2b`` (or ``Noise_XXpsk3_...`` with a network key
for private swarms). Noise proves each side holds its transport key; the handshake payload proves the
feed owns that transport key: ``{"feed": ed25519 public key, "sig": sign(TRANSPORT_DOMAIN + x25519
public key)}``, as libp2p-noise does. The responder sends its payload in message 2, the initiator in
message 3. Each side has a state (``SEND_n``, ``WAIT_n``, ``DONE``, ``ERROR``): see ``Handshake``.

After the handshake every frame on the wire is ``u32 big-endian length || Noise ciphertext``; the length
is at most ``MAX_FRAME`` (Noise's own 65,535-byte limit), so a peer announcing more is cut off at once.
Handshake messages use the same framing.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import NoReturn

from noise.connection import Keypair, NoiseConnection

from .encoding import decode, encode
from .errors import DecodeError, LocalProtocolError, RemoteProtocolError
from .identity import KEY_SIZE, SigningKey, verify_signature

__all__ = [
    "MAX_FRAME",
    "MAX_PLAINTEXT",
    "TRANSITIONS",
    "FrameDecoder",
    "Handshake",
    "HandshakeState",
    "Role",
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

    def take_buffered(self) -> bytes:
        """The bytes received but not yet split into frames, removed from the decoder: what follows
        the last frame read when the stream stops carrying frames (a relay's splice, spec §12.10)."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


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


class Role(enum.Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


class HandshakeState(enum.StrEnum):
    """Where one side is in the three XX messages (a ``str``, so it logs as its name)."""

    SEND_1 = "SEND_1"  # its turn: message 1
    WAIT_1 = "WAIT_1"  # waiting for message 1
    SEND_2 = "SEND_2"
    WAIT_2 = "WAIT_2"
    SEND_3 = "SEND_3"
    WAIT_3 = "WAIT_3"
    DONE = "DONE"
    ERROR = "ERROR"


_S = HandshakeState

#: spec/protocol.md §11.1: (role, state of that side) -> {message number: next state}. Each side's
#: machine sees every message, its own and the other's; a missing pair is out of turn. ERROR and DONE
#: are not listed: nothing leaves them.
TRANSITIONS: dict[Role, dict[HandshakeState, dict[int, HandshakeState]]] = {
    Role.INITIATOR: {_S.SEND_1: {1: _S.WAIT_2}, _S.WAIT_2: {2: _S.SEND_3}, _S.SEND_3: {3: _S.DONE}},
    Role.RESPONDER: {_S.WAIT_1: {1: _S.SEND_2}, _S.SEND_2: {2: _S.WAIT_3}, _S.WAIT_3: {3: _S.DONE}},
}
#: the message a side sends from each of its sending states
_MESSAGE = {_S.SEND_1: 1, _S.SEND_2: 2, _S.SEND_3: 3}
_START = {Role.INITIATOR: _S.SEND_1, Role.RESPONDER: _S.WAIT_1}


class Handshake:
    """One side of the Noise XX handshake (spec §11.1), with a state per side as in h11.

    Theory of operation. The initiator sends messages 1 and 3, the responder message 2; each side's
    state says whether it sends next (``SEND_n``), waits for the other side (``WAIT_n``) or is ``DONE``
    (table ``TRANSITIONS``). ``send()`` returns the next framed message when it is our turn
    (``our_turn``); ``receive(frame)`` takes the peer's message when it is theirs. Both advance both
    sides' states. The identity payload of message 2 is checked when it is received, so the
    initiator never sends message 3 to a peer that failed it. The handshake is ``finished`` when both
    sides are DONE: for the initiator once it has sent message 3, for the responder once it has
    checked it; ``session()`` then gives the transport ciphers.

    Errors: a ``RemoteProtocolError`` from ``receive`` (``handshake``, ``bad_identity``) puts their
    side in ERROR; a ``LocalProtocolError`` (``handshake_state``: a call out of turn) ours. ERROR is
    final: every later ``send``, ``receive`` and ``session`` raises ``LocalProtocolError``
    (``handshake_state``).
    """

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
        self.our_role = Role.INITIATOR if initiator else Role.RESPONDER
        self.their_role = Role.RESPONDER if initiator else Role.INITIATOR
        self.our_state = _START[self.our_role]
        self.their_state = _START[self.their_role]
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
        self.remote_feed: bytes | None = None

    @property
    def transport_public(self) -> bytes:
        return self._keys.transport_public

    @property
    def finished(self) -> bool:
        return self.our_state is _S.DONE and self.their_state is _S.DONE

    @property
    def failed(self) -> bool:
        return _S.ERROR in (self.our_state, self.their_state)

    @property
    def our_turn(self) -> bool:
        """True when the next message is ours to ``send``."""
        return self.our_state in _MESSAGE

    def send(self) -> bytes:
        """Our next handshake message, framed (§11.4): message 1 or 3 (initiator), 2 (responder)."""
        self._check_not_failed()
        number = _MESSAGE.get(self.our_state)
        if number is None:
            self._misused(f"not our turn to send (we are {self.our_state})")
        # message 1 carries no payload; 2 and 3 the sender's identity (§11.2)
        payload = b"" if number == 1 else identity_payload(self._keys.identity, self._keys.transport_public)
        frame = encode_frame(bytes(self._noise.write_message(payload)))
        self._advance(number)
        return frame

    def receive(self, frame: bytes) -> None:
        """Take the peer's next handshake message (one frame body)."""
        self._check_not_failed()
        number = _MESSAGE.get(self.their_state)
        if number is None:
            self._misused(f"not expecting a handshake message (the peer is {self.their_state})")
        try:
            self._read(number, frame)
        except RemoteProtocolError:
            self.their_state = _S.ERROR
            raise
        self._advance(number)

    def _read(self, number: int, frame: bytes) -> None:
        try:
            payload = bytes(self._noise.read_message(frame))
        except Exception as exc:
            raise RemoteProtocolError(
                f"handshake failed ({type(exc).__name__}): wrong network key or garbage", code="handshake"
            ) from None
        if number == 1:
            if payload:
                raise RemoteProtocolError(
                    "unexpected data in handshake message 1: one side uses a network key and the other"
                    " does not (or the peer is not a Tidings node)",
                    code="handshake",
                )
            return
        # message 2 (e, ee, s, es) or 3 (s, se): the peer's identity, bound to the static key Noise
        # authenticated (§11.2)
        self.remote_feed = check_identity_payload(payload, self._remote_static())

    def _advance(self, number: int) -> None:
        self.our_state = TRANSITIONS[self.our_role][self.our_state][number]
        self.their_state = TRANSITIONS[self.their_role][self.their_state][number]

    def _remote_static(self) -> bytes:
        rs = self._state.rs
        if rs is None:  # pragma: no cover - XX always carries it by then
            raise RemoteProtocolError("peer sent no static key", code="handshake")
        return bytes(rs.public_bytes)

    def _check_not_failed(self) -> None:
        if self.failed:
            raise LocalProtocolError("the handshake failed: drop the connection", code="handshake_state")

    def _misused(self, message: str) -> NoReturn:
        self.our_state = _S.ERROR
        raise LocalProtocolError(message, code="handshake_state")

    def session(self) -> Session:
        """The transport ciphers of a finished handshake."""
        self._check_not_failed()
        if not self.finished or self.remote_feed is None:
            raise LocalProtocolError("handshake not finished", code="handshake_state")
        return Session(self._noise, self.remote_feed)
