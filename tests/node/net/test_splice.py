"""The relay's byte copy (node/net/splice.py, spec §12.10) over in-memory streams."""

from __future__ import annotations

import trio
import trio.testing
from tidings.node.net.splice import PrefixedStream, splice

HANDSHAKE_1 = frozenset({32, 48})


def _pair() -> tuple[trio.abc.Stream, trio.abc.Stream]:
    return trio.testing.memory_stream_pair()


async def _run(first_from_a: bytes, *, max_bytes: int = 1 << 20) -> tuple[str, bytes]:
    """Splice a relay's two ends; the initiator sends ``first_from_a`` then closes. What the target got."""
    initiator, relay_a = _pair()
    relay_b, target = _pair()
    got = bytearray()
    result: list[str] = []
    async with trio.open_nursery() as nursery:

        async def relay() -> None:
            result.append(
                await splice(
                    relay_a, b"", relay_b, b"", max_bytes=max_bytes, seconds=5, first_frame=HANDSHAKE_1
                )
            )
            await relay_b.aclose()

        async def receive() -> None:
            while data := await target.receive_some(65536):
                got.extend(data)

        nursery.start_soon(relay)
        nursery.start_soon(receive)
        for i in range(0, len(first_from_a), 3):  # in small pieces: the length may arrive split
            await initiator.send_all(first_from_a[i : i + 3])
            await trio.sleep(0)
        await initiator.aclose()
    return result[0], bytes(got)


async def test_a_circuit_that_starts_with_a_handshake_message_is_copied_whole() -> None:
    message = (32).to_bytes(4, "big") + bytes(range(32)) + b"then frames"
    ended, got = await _run(message)
    assert (ended, got) == ("closed", message)


async def test_garbage_first_ends_the_circuit_before_a_byte_reaches_the_target() -> None:
    ended, got = await _run(b"GET / HTTP/1.1\r\n\r\n" * 10)
    assert (ended, got) == ("garbage", b"")


async def test_a_circuit_over_its_byte_bound_is_cut() -> None:
    message = (48).to_bytes(4, "big") + bytes(48) + bytes(5000)
    ended, got = await _run(message, max_bytes=1000)
    assert ended == "bytes" and len(got) <= 1000


async def test_a_prefixed_stream_gives_its_prefix_first() -> None:
    a, b = _pair()
    stream = PrefixedStream(b, b"abc")
    await a.send_all(b"def")
    assert await stream.receive_some(2) == b"ab"
    assert await stream.receive_some() == b"c"
    assert await stream.receive_some() == b"def"
