"""Raw byte streams for relays (spec/protocol.md §12.10): the splice a relay runs between two
connections, and the stream an end runs its own connection over once the relay joined it.

Theory of operation. After ``connected`` a relay connection stops carrying frames of the outer Noise
session: the bytes that follow are the two ends' own handshake and frames, which the relay copies
unchanged (``splice``) and the ends read as a fresh stream (``PrefixedStream``). Either side may have
read some of those bytes already, together with the last outer frame, into its frame decoder
(``SecureChannel.take_leftover``): the relay forwards them first, an end reads them first. The relay
counts what it copies both ways together; at ``max_bytes`` or ``seconds`` it cuts both connections.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import trio

__all__ = ["PrefixedStream", "splice"]

_READ = 65536
#: Seconds a relay gives a write to the other end before it cuts the circuit (a reader that stalls).
WRITE_TIMEOUT = 60.0


class PrefixedStream(trio.abc.Stream):
    """``stream``, whose first bytes received are ``prefix`` (bytes already read off it)."""

    def __init__(self, stream: trio.abc.Stream, prefix: bytes = b"") -> None:
        self.stream = stream
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            size = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            return data
        return await self.stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.stream.aclose()


Ended = Literal["closed", "bytes", "seconds", "garbage"]


async def splice(
    a: trio.abc.Stream,
    a_leftover: bytes,
    b: trio.abc.Stream,
    b_leftover: bytes,
    *,
    max_bytes: int,
    seconds: float,
    counted: Callable[[int], None] = lambda n: None,
    first_frame: frozenset[int] = frozenset(),
) -> Ended:
    """Copy bytes both ways between ``a`` and ``b`` until either end closes (``closed``), the total
    would pass ``max_bytes`` (``bytes``) or ``seconds`` have passed (``seconds``). ``a_leftover``
    (read off ``a`` before) goes to ``b`` first, ``b_leftover`` to ``a``; ``counted`` hears every
    chunk copied. The caller closes the streams. ``first_frame``, when given, holds the lengths the
    first frame from ``a`` may announce (a Noise handshake message 1, spec §11.1, §12.10): anything else
    ends the circuit before a byte of it is copied (``garbage``)."""
    ended: list[Ended] = []
    total = 0

    async def copy(
        source: trio.abc.Stream,
        sink: trio.abc.Stream,
        first: bytes,
        scope: trio.CancelScope,
        lengths: frozenset[int] = frozenset(),
    ) -> None:
        nonlocal total
        data = first
        try:
            while lengths and len(data) < 4:  # the first frame's length, before anything is copied
                more = await source.receive_some(_READ)
                if not more:
                    break
                data += more
            if lengths and (len(data) < 4 or int.from_bytes(data[:4], "big") not in lengths):
                ended.append("garbage")
                scope.cancel()
                return
            while True:
                if data:
                    if total + len(data) > max_bytes:
                        ended.append("bytes")
                        break
                    total += len(data)
                    counted(len(data))
                    with trio.fail_after(WRITE_TIMEOUT):
                        await sink.send_all(data)
                data = await source.receive_some(_READ)
                if not data:
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError):
            pass
        scope.cancel()  # one way ended: the circuit is over

    with trio.move_on_after(seconds) as timer:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(copy, a, b, a_leftover, nursery.cancel_scope, first_frame)
            nursery.start_soon(copy, b, a, b_leftover, nursery.cancel_scope)
    if timer.cancelled_caught:
        return "seconds"
    return ended[0] if ended else "closed"
