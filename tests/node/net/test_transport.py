"""The secure channel's one writer (node/net/transport.py): senders only queue, so a sender cancelled at
any point never burns a Noise nonce or tears a frame; first over an in-memory stream pair whose sending
side we can hold, then over real loopback sockets whose receiver stops reading."""

from __future__ import annotations

import os

import pytest
import trio
import trio.testing
from tidings.node.net.transport import QUEUE, ChannelClosed, SecureChannel
from tidings.protocol import SigningKey

from tests.support.nodes import next_host


async def pair(left: trio.abc.Stream, right: trio.abc.Stream) -> tuple[SecureChannel, SecureChannel]:
    """Handshake both ends at once; (initiator's channel, responder's channel)."""
    out: dict[bool, SecureChannel] = {}

    async def side(stream: trio.abc.Stream, initiator: bool) -> None:
        out[initiator] = await SecureChannel.handshake(
            stream, initiator=initiator, identity=SigningKey(os.urandom(32)), transport_private=os.urandom(32)
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(side, left, True)
        nursery.start_soon(side, right, False)
    return out[True], out[False]


class Gate:
    """Holds a memory send stream's ``send_all`` after the bytes are buffered (the writer is blocked)."""

    def __init__(self, stream: trio.testing.MemorySendStream) -> None:
        self.stream = stream
        self.pump = stream.send_all_hook
        self.open = trio.Event()
        self.writes = 0
        stream.send_all_hook = self._hook

    async def _hook(self) -> None:
        self.writes += 1
        await self.open.wait()
        assert self.pump is not None
        await self.pump()


def frame(i: int) -> bytes:
    return i.to_bytes(4, "big") * 100


async def receive_all(channel: SecureChannel, n: int) -> list[bytes]:
    with trio.fail_after(10):
        return [await channel.receive() for _ in range(n)]


async def test_a_cancelled_sender_does_not_break_the_stream_in_memory(nursery) -> None:
    left, right = trio.testing.memory_stream_pair()
    a, b = await pair(left, right)
    gate = Gate(left.send_stream)  # type: ignore[attr-defined]
    await nursery.start(a.run_writer)
    await a.send([frame(0)])
    await trio.testing.wait_all_tasks_blocked()  # the writer took frame 0 and is stuck writing it
    assert gate.writes == 1
    sent = [frame(0)]
    for i in range(1, QUEUE + 1):  # fills the queue
        await a.send([frame(i)])
        sent.append(frame(i))

    # a sender cancelled while it waits for room: it has queued nothing, and used no nonce
    waiting = trio.CancelScope()
    nursery.start_soon(_send_in, waiting, a, [frame(999), frame(998)])
    await trio.testing.wait_all_tasks_blocked()
    waiting.cancel()
    await trio.testing.wait_all_tasks_blocked()
    assert a.statistics()["queued"] == QUEUE + 1

    gate.open.set()
    await a.send([frame(100), frame(101)])
    sent += [frame(100), frame(101)]
    assert await receive_all(b, len(sent)) == sent
    await a.wait_sent()
    assert a.statistics()["queued"] == 0
    assert a.bytes_out == b.bytes_in  # every byte written was received, as whole frames
    assert gate.writes <= 3  # the 16 queued sends went out together, not one write each


async def _send_in(scope: trio.CancelScope, channel: SecureChannel, frames: list[bytes]) -> None:
    with scope:
        await channel.send(frames)


async def test_a_sender_cancelled_after_queueing_still_gets_its_frames_written(nursery) -> None:
    left, right = trio.testing.memory_stream_pair()
    a, b = await pair(left, right)
    gate = Gate(left.send_stream)  # type: ignore[attr-defined]
    await nursery.start(a.run_writer)
    with trio.CancelScope() as scope:
        await a.send([frame(1)])
        await trio.testing.wait_all_tasks_blocked()  # the writer is blocked in the middle of the write
        await a.send([frame(2), frame(3)])
        scope.cancel()
        await trio.sleep(0)  # cancelled here, with its frames queued
    gate.open.set()
    await a.send([frame(4)])
    assert await receive_all(b, 4) == [frame(1), frame(2), frame(3), frame(4)]


async def test_a_peer_that_stops_reading_ends_the_writer_and_frees_the_senders(autojump_clock) -> None:
    left, right = trio.testing.memory_stream_pair()
    a, _b = await pair(left, right)
    Gate(left.send_stream)  # type: ignore[attr-defined]  # never opened: the peer takes nothing
    outcome: list[str] = []

    async def writer(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with pytest.raises(trio.TooSlowError):
            await a.run_writer(5.0, task_status=task_status)
        outcome.append("writer timed out")

    async def sender() -> None:
        with pytest.raises(ChannelClosed):
            for i in range(QUEUE + 10):  # more than the queue holds: waits, then learns of the end
                await a.send([frame(i)])
        outcome.append("sender freed")

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(writer)
        nursery.start_soon(sender)
    assert sorted(outcome) == ["sender freed", "writer timed out"]
    assert 5.0 <= trio.current_time() - start < 6.0
    with pytest.raises(ChannelClosed):
        await a.send([frame(0)])


async def test_a_cancelled_sender_does_not_break_the_stream_over_sockets(nursery) -> None:
    host = next_host()
    listeners = await trio.open_tcp_listeners(0, host=host)
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream(host, port)
    server = await listeners[0].accept()
    a, b = await pair(client, server)
    await nursery.start(a.run_writer)
    sent: list[bytes] = []
    big = os.urandom(60000)

    async def flood(scope: trio.CancelScope) -> None:
        with scope:
            while True:  # b does not read: the kernel's buffers fill, then the writer, then the queue
                payload = len(sent).to_bytes(4, "big") + big
                await a.send([payload])
                sent.append(payload)

    scope = trio.CancelScope()
    nursery.start_soon(flood, scope)
    await trio.testing.wait_all_tasks_blocked(cushion=0.05)  # the flooder waits for room in the queue
    scope.cancel()
    await trio.testing.wait_all_tasks_blocked()
    got: list[bytes] = []

    async def read() -> None:
        got.extend(await receive_all(b, len(sent) + 1))

    async with trio.open_nursery() as reading:
        reading.start_soon(read)  # b reads again; "last" waits for room in the queue meanwhile
        await a.send([b"last"])
    assert got[:-1] == sent and got[-1] == b"last"
    assert len(sent) > QUEUE  # the kernel buffers were full: the writer had been blocked
    await a.aclose()
    await b.aclose()
    for listener in listeners:
        await listener.aclose()
