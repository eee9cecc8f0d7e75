"""Encrypted, authenticated channels over trio streams (spec/protocol.md §11).

``SecureChannel.handshake`` runs the sans-IO ``protocol.handshake.Handshake`` over a stream with a
deadline (a peer that never finishes — slowloris — is cut off), then offers ``send`` and ``receive``
(one plaintext frame).

Theory of operation (receiving). A frame whose first byte has arrived must be complete within
``frame_timeout`` seconds (spec/protocol.md §11.4, §12.5): a peer that declares a 65,535-byte frame
and sends it a byte a second (slowloris after the handshake) is cut off with ``frame_timeout``. The
deadline runs only while ``receive`` waits for bytes of a started frame; waiting for a frame to
start is not bounded here (idle peers are the listener's business, §12.5).

Theory of operation (sending). Each frame uses the next Noise nonce, so frames must reach the stream in
the order they were encrypted, whole, and every encrypted frame must be sent. One **writer task**
(``run_writer``, started in the connection's nursery) is the only code that encrypts and writes.
``send`` only puts plaintext frames on a bounded queue (``QUEUE`` sends; awaiting it is back-pressure):
a sender cancelled while it waits has queued nothing, and one cancelled after has queued everything, so
cancellation can never burn a nonce or tear a frame. The writer takes everything queued at once and
writes it in one ``send_all``. A write the peer does not take within ``write_timeout`` ends the writer
with ``trio.TooSlowError`` (the peer stopped reading: spec/protocol.md §12.5, ``timeout``); once the
writer ends, for any reason, ``send`` raises ``ChannelClosed``, so no task waits on a dead connection.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import AsyncIterator
from typing import Any

import trio
from tidings.protocol import RemoteProtocolError, SigningKey
from tidings.protocol.handshake import FrameDecoder, Handshake, Session

__all__ = ["ChannelClosed", "SecureChannel"]

log = logging.getLogger("tidings.transport")

_READ = 65536
#: Sends (lists of frames) the writer's queue holds before ``send`` waits.
QUEUE = 16
#: Most plaintext bytes the writer gathers into one ``send_all``.
_BATCH = 1 << 20


class ChannelClosed(Exception):
    """The peer closed the connection (or it broke) — not a protocol violation in itself."""


class SecureChannel:
    def __init__(
        self,
        stream: trio.abc.Stream,
        session: Session,
        decoder: FrameDecoder,
        *,
        frame_timeout: float = math.inf,
    ) -> None:
        self.stream = stream
        self.session = session
        self._decoder = decoder
        #: seconds a started frame may take to arrive whole (spec §11.4, §12.5)
        self.frame_timeout = frame_timeout
        self._outbox, self._inbox = trio.open_memory_channel[list[bytes]](QUEUE)
        self._queued = 0  # frames queued so far
        self._written = 0  # frames written so far
        self._wrote = trio.Event()
        self._writer_started = False
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
        frame_timeout: float = math.inf,
    ) -> SecureChannel:
        """Authenticate both sides; raise ``RemoteProtocolError`` (``handshake_timeout`` on deadline).
        ``frame_timeout`` bounds each frame received afterwards (see the module docstring)."""
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
        return cls(stream, hs.session(), decoder, frame_timeout=frame_timeout)

    async def send(self, frames: list[bytes]) -> None:
        """Queue plaintext frames for the writer, to go out in order in one write (see the module
        docstring); waits while the queue is full. ``ChannelClosed`` once the writer has ended."""
        if not frames:
            return
        try:
            await self._outbox.send(list(frames))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ChannelClosed("connection closed for sending") from None
        self._queued += len(frames)

    async def wait_sent(self) -> None:
        """Wait until every frame queued so far is written (before a ``bye`` ends the connection)."""
        target = self._queued
        while self._written < target:
            await self._wrote.wait()

    async def run_writer(
        self,
        write_timeout: float = 60.0,
        *,
        quiet: bool = False,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """The connection's one writer: encrypt queued frames and write them, until the connection's
        nursery is cancelled or ``close_sending`` was called and the queue is empty. ``ChannelClosed``
        when the stream breaks (``quiet``: return instead, and let ``send`` and ``receive`` say so);
        ``trio.TooSlowError`` when the peer takes no write for ``write_timeout`` seconds."""
        self._writer_started = True
        async with self._inbox:
            task_status.started()
            try:
                await self._write_queued(write_timeout)
            except ChannelClosed:
                if not quiet:
                    raise

    async def _write_queued(self, write_timeout: float) -> None:
        async for first in self._inbox:
            frames, size = first, sum(map(len, first))
            while size < _BATCH:
                try:
                    more = self._inbox.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                frames += more
                size += sum(map(len, more))
            data = b"".join(self.session.encrypt(f) for f in frames)
            with trio.fail_after(write_timeout):
                await _send_all(self.stream, data)
            self.bytes_out += len(data)
            self._written += len(frames)
            self._wrote.set()
            self._wrote = trio.Event()

    async def write_now(self, frames: list[bytes], write_timeout: float = 60.0) -> None:
        """Encrypt and write ``frames`` at once, in this task. Only for the opening of a connection,
        **before** any writer runs (``run_writer``): an inbound connection's ``hello`` goes out before
        the node knows whether the connection replicates or is a relay connection (spec §12.10), and a
        relay connection never has a writer task at all. With a writer running two tasks could
        interleave nonces, so it is refused then (``RuntimeError``: our misuse, not the peer's)."""
        if self._writer_started:
            raise RuntimeError("write_now after the writer started")
        data = b"".join(self.session.encrypt(f) for f in frames)
        with trio.fail_after(write_timeout):
            await _send_all(self.stream, data)
        self.bytes_out += len(data)

    def take_leftover(self) -> bytes:
        """Bytes read from the stream after the last frame received, taken out of the decoder: once a
        relay connection is spliced (spec §12.10) they belong to the end-to-end connection."""
        return self._decoder.take_buffered()

    def close_sending(self) -> None:
        """No more sends: the writer writes what is queued, then returns."""
        self._outbox.close()

    @contextlib.asynccontextmanager
    async def writing(self, write_timeout: float = 60.0) -> AsyncIterator[SecureChannel]:
        """Run a quiet writer for the body (a client without a connection nursery of its own): what
        was queued is written before the block ends."""
        error: BaseException | None = None
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(self.run_writer, write_timeout, quiet=True))
            try:
                yield self
            except BaseException as exc:  # raised below, outside the nursery: not in an exception group
                error = exc
                nursery.cancel_scope.cancel()
            else:
                self.close_sending()
        if error is not None:
            raise error

    def statistics(self) -> dict[str, Any]:
        return {
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "queued": self._queued - self._written,
        }

    async def receive(self) -> bytes:
        """The next plaintext frame; ``ChannelClosed`` at end of stream."""
        frame = await _next_frame(self.stream, self._decoder, self.frame_timeout)
        self.bytes_in += len(frame) + 4
        return self.session.decrypt(frame)

    async def aclose(self) -> None:
        self.close_sending()
        with trio.move_on_after(1):
            await self.stream.aclose()


async def _send_all(stream: trio.abc.Stream, data: bytes) -> None:
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        raise ChannelClosed(f"connection lost while sending: {exc}") from None


async def _next_frame(
    stream: trio.abc.Stream, decoder: FrameDecoder, frame_timeout: float = math.inf
) -> bytes:
    """The next frame's body; a frame started (bytes of it buffered) must be whole within
    ``frame_timeout`` seconds of this call or of its first byte, whichever is later (§11.4)."""
    deadline = math.inf
    while True:
        frame = decoder.next_frame()
        if frame is not None:
            return frame
        if decoder.buffered and deadline == math.inf:
            deadline = trio.current_time() + frame_timeout
        try:
            with trio.move_on_at(deadline) as scope:
                data = await stream.receive_some(_READ)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ChannelClosed(f"connection lost: {exc}") from None
        if scope.cancelled_caught:
            raise RemoteProtocolError(
                f"a frame did not arrive whole within {frame_timeout:g} s", code="frame_timeout"
            )
        if not data:
            if decoder.buffered:
                raise RemoteProtocolError("connection closed in the middle of a frame", code="truncated")
            raise ChannelClosed("peer closed the connection")
        decoder.receive_data(data)
