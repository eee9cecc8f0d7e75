"""Encrypted, authenticated channels over trio streams (spec/protocol.md §11).

``SecureChannel.handshake`` runs the sans-IO ``protocol.handshake.Handshake`` over a stream with a
deadline (a peer that never finishes — slowloris — is cut off), then offers ``send`` (several frames per
``send_all``) and ``receive`` (one plaintext frame).
"""

from __future__ import annotations

import logging

import trio
from tidings.protocol import RemoteProtocolError, SigningKey
from tidings.protocol.handshake import FrameDecoder, Handshake, Session

__all__ = ["ChannelClosed", "SecureChannel"]

log = logging.getLogger("tidings.transport")

_READ = 65536


class ChannelClosed(Exception):
    """The peer closed the connection (or it broke) — not a protocol violation in itself."""


class SecureChannel:
    def __init__(self, stream: trio.abc.Stream, session: Session, decoder: FrameDecoder) -> None:
        self.stream = stream
        self.session = session
        self._decoder = decoder
        self._send_lock = trio.Lock()
        self.bytes_in = 0
        self.bytes_out = 0

    @property
    def remote_feed(self) -> bytes:
        return self.session.remote_feed

    @classmethod
    async def handshake(
        cls,
        stream: trio.abc.Stream,
        *,
        initiator: bool,
        identity: SigningKey,
        transport_private: bytes,
        network_key: bytes | None = None,
        timeout: float = 10.0,
        max_frame: int = 65535,
    ) -> SecureChannel:
        """Authenticate both sides; raise ``RemoteProtocolError`` (``handshake_timeout`` on deadline)."""
        hs = Handshake(
            initiator=initiator,
            identity=identity,
            transport_private=transport_private,
            network_key=network_key,
        )
        decoder = FrameDecoder(max_frame)
        with trio.move_on_after(timeout) as scope:
            while not hs.finished:
                if hs.our_turn:
                    await _send_all(stream, hs.send())
                else:
                    hs.receive(await _next_frame(stream, decoder))
        if scope.cancelled_caught:
            raise RemoteProtocolError("handshake did not finish in time", code="handshake_timeout")
        return cls(stream, hs.session(), decoder)

    async def send(self, frames: list[bytes]) -> None:
        """Encrypt and send plaintext frames in one write."""
        if not frames:
            return
        data = b"".join(self.session.encrypt(f) for f in frames)
        async with self._send_lock:
            await _send_all(self.stream, data)
        self.bytes_out += len(data)

    async def receive(self) -> bytes:
        """The next plaintext frame; ``ChannelClosed`` at end of stream."""
        frame = await _next_frame(self.stream, self._decoder)
        self.bytes_in += len(frame) + 4
        return self.session.decrypt(frame)

    async def aclose(self) -> None:
        with trio.move_on_after(1):
            await self.stream.aclose()


async def _send_all(stream: trio.abc.Stream, data: bytes) -> None:
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        raise ChannelClosed(f"connection lost while sending: {exc}") from None


async def _next_frame(stream: trio.abc.Stream, decoder: FrameDecoder) -> bytes:
    while True:
        frame = decoder.next_frame()
        if frame is not None:
            return frame
        try:
            data = await stream.receive_some(_READ)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ChannelClosed(f"connection lost: {exc}") from None
        if not data:
            if decoder.buffered:
                raise RemoteProtocolError("connection closed in the middle of a frame", code="truncated")
            raise ChannelClosed("peer closed the connection")
        decoder.receive_data(data)
