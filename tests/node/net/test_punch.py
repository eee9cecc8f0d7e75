"""Hole punching's IO primitive (node/net/punch.py, spec/protocol.md §12.11) over real loopback sockets.

Loopback has no NAT to drop the first SYN, so here the listener and the retries of a refused attempt do
the work; true simultaneous open through home routers is tested in the NAT lab
(tests/node/natlab/test_punch_lab.py).
"""

from __future__ import annotations

import gc
import os
import socket

import pytest
import trio
from tidings.node.net.punch import PunchFailed, PunchSocket, bind_punch_socket, simultaneous_open

from tests.support.nodes import next_host


def _sockets_on(*hosts: str) -> list[tuple[str, int]]:
    """Local addresses of this process's sockets bound to any of ``hosts`` (garbage collected first).
    Each test has hosts of its own (``next_host``), so what other tests left open or reuse cannot count."""
    gc.collect()
    found: list[tuple[str, int]] = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(int(fd)))
        except OSError:
            continue
        try:
            name = sock.getsockname()
        except OSError:
            name = None
        finally:
            sock.close()
        if isinstance(name, tuple) and name[0] in hosts:
            found.append((name[0], name[1]))
    return found


async def _punch(punch: PunchSocket, remote: tuple[str, int], timeout: float = 5.0) -> trio.SocketStream:
    return await simultaneous_open(punch, remote[0], remote[1], timeout=timeout)


async def _pair(delay: float = 0.0) -> tuple[trio.SocketStream, trio.SocketStream, list[PunchSocket]]:
    """Two hosts bind, swap their addresses in memory and open towards each other; the second starts
    ``delay`` seconds after the first."""
    a_host, b_host = next_host(), next_host()
    a, b = await bind_punch_socket(a_host), await bind_punch_socket(b_host)
    assert (a.host, b.host) == (a_host, b_host) and a.port and b.port and not a.closed
    streams: dict[str, trio.SocketStream] = {}

    async def side(name: str, punch: PunchSocket, remote: tuple[str, int], wait: float) -> None:
        await trio.sleep(wait)
        streams[name] = await _punch(punch, remote)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(side, "a", a, (b.host, b.port), 0.0)
        nursery.start_soon(side, "b", b, (a.host, a.port), delay)
    return streams["a"], streams["b"], [a, b]


@pytest.mark.parametrize("delay", [0.0, 0.3])
async def test_two_sides_that_open_at_about_the_same_time_get_one_connection(delay: float) -> None:
    left, right, punches = await _pair(delay)
    a, b = punches
    # One TCP connection between the two bound ports, whichever way it came up.
    assert left.socket.getsockname()[:2] == (a.host, a.port)
    assert left.socket.getpeername()[:2] == (b.host, b.port)
    assert right.socket.getsockname()[:2] == (b.host, b.port)
    assert right.socket.getpeername()[:2] == (a.host, a.port)
    await left.send_all(b"ping from a")
    assert await right.receive_some(100) == b"ping from a"
    await right.send_all(b"pong from b")
    assert await left.receive_some(100) == b"pong from b"
    ways = {p.statistics().way for p in punches}
    assert ways <= {"connect", "accept"} and None not in ways
    if delay:
        # a started alone: b's port refused a until b listened or connected.
        assert a.statistics().refused >= 1
    # Only the two streams are open: the bound sockets, listeners and failed attempts are closed.
    assert a.closed and b.closed
    assert sorted(_sockets_on(a.host, b.host)) == sorted([(a.host, a.port), (b.host, b.port)])
    await left.aclose()
    await right.aclose()
    assert not _sockets_on(a.host, b.host)


async def test_a_punch_nobody_answers_fails_with_a_typed_error_within_the_deadline() -> None:
    silent = await bind_punch_socket(next_host())  # bound, but it never opens
    punch = await bind_punch_socket(next_host())
    start = trio.current_time()
    with pytest.raises(PunchFailed) as failed:
        await _punch(punch, (silent.host, silent.port), timeout=1.0)
    elapsed = trio.current_time() - start
    assert failed.value.code == "punch_failed"
    assert 1.0 <= elapsed < 2.0
    assert f"{silent.host}:{silent.port}" in failed.value.message and "refused" in failed.value.message
    stats = punch.statistics()
    assert stats.way is None and stats.attempts >= 3 and stats.refused == stats.attempts
    assert punch.closed
    silent.close()
    assert not _sockets_on(silent.host, punch.host)


async def test_a_punch_cancelled_from_outside_closes_every_socket() -> None:
    silent = await bind_punch_socket(next_host())
    punch = await bind_punch_socket(next_host())
    with trio.move_on_after(0.3) as scope:
        await _punch(punch, (silent.host, silent.port), timeout=10.0)
    assert scope.cancelled_caught and punch.closed and punch.statistics().attempts >= 2
    silent.close()
    assert not _sockets_on(silent.host, punch.host)


async def test_a_connection_from_another_address_is_not_taken_for_the_punch() -> None:
    remote_host = next_host()
    punch = await bind_punch_socket(next_host())
    outsider_host = next_host()
    outsiders: list[trio.SocketStream] = []

    async def intrude() -> None:
        await trio.sleep(0.1)
        # Connects to the punch's listener from the wrong host: it must be closed, not returned.
        stream = await trio.open_tcp_stream(punch.host, punch.port, local_address=outsider_host)
        outsiders.append(stream)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(intrude)
        with pytest.raises(PunchFailed):
            await _punch(punch, (remote_host, 9), timeout=0.5)
    (stream,) = outsiders
    assert await stream.receive_some(10) == b""  # closed by the punch
    await stream.aclose()
    assert not _sockets_on(punch.host, outsider_host)


async def test_a_bound_punch_socket_that_is_not_used_gives_its_port_back() -> None:
    host = next_host()
    with await bind_punch_socket(host) as punch:
        port = punch.port
    assert punch.closed
    # The port is free again: a plain listener (no SO_REUSEPORT) binds it.
    with socket.socket() as again:
        again.bind((host, port))


async def test_a_bind_cancelled_before_it_binds_closes_its_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """``bind`` checkpoints before it binds: a cancellation there must not leave the new socket to the
    garbage collector (it did, as an unclosed ``0.0.0.0:0`` socket, in a relay test)."""
    unclosed: list[object] = []
    monkeypatch.setattr("sys.unraisablehook", lambda info: unclosed.append(info.exc_value))

    async def bind_cancelled() -> None:
        with trio.CancelScope() as scope:
            scope.cancel()
            await bind_punch_socket(next_host())
        assert scope.cancelled_caught

    async with trio.open_nursery() as nursery:  # a task of its own, so its frames are gone when it ends
        nursery.start_soon(bind_cancelled)
    gc.collect()
    assert not [exc for exc in unclosed if isinstance(exc, ResourceWarning)]


async def test_addresses_must_be_ip_literals_of_one_family() -> None:
    with pytest.raises(ValueError, match="IP address"):
        await bind_punch_socket("localhost")
    punch = await bind_punch_socket(next_host())
    with pytest.raises(ValueError, match="family"):
        await simultaneous_open(punch, "::1", 4000, timeout=1.0)
    assert punch.closed
    with pytest.raises(PunchFailed) as used:
        await simultaneous_open(punch, "127.0.0.1", 4000, timeout=1.0)
    assert used.value.code == "punch_error"
