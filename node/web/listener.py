"""The web port's accept loop: caps connections before they cost more than a socket, then hypercorn.

Hypercorn's own loop (``hypercorn.trio.serve``) accepts every connection and holds it for as long as
the client likes: a response is written in a cancel-shielded ``send_all``, so a client that pipelines
requests and never reads pins a descriptor for good, and a thousand of them took every descriptor of
the process (issue 15 item 7). So we accept ourselves and hand each admitted connection to hypercorn's
per-connection server (``TCPServer``), which keeps doing the HTTP:

- ``ConnectionGate`` (node/web/gate.py) decides at accept; a refused connection gets a one-line 503
  written without waiting and is closed at once, an evicted one is closed at once.
- ``_GuardedStream`` gives every write a deadline (``write_timeout`` per 64 KiB): a client that does
  not read is closed, which also ends the shielded write. Idle and slow-header clients are closed by
  hypercorn's ``keep_alive_timeout`` (its idle timer runs from accept until a request's headers are
  complete, and between requests); a slow body by the app's ``body_timeout`` (node/web/app.py).
- Once a read or a write finds the connection broken (reset by the client, or closed by us), its work
  is cancelled: hypercorn would otherwise go on answering every request the client had pipelined,
  each answer failing, holding the descriptor and the slot for seconds after the client left. A
  client that closes its side cleanly is let go at once too (``_Server``), not after the idle timer.
- ``_Paced`` holds each request back by the rules of node/web/pacing.py (a request rate per client,
  a cap on pipelined answers per connection) before the app sees it. Waiting is the back-pressure:
  hypercorn does not read a connection while its request is in progress, so a client that sends
  faster than it may, or pipelines without reading, fills the kernel's buffers and stalls, at no
  cost to the node (an answer, even a 429, costs about as much as the work it would refuse).
- ``EMFILE`` and friends at accept pause the loop briefly instead of spinning.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from dataclasses import dataclass
from typing import Any

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config
from hypercorn.events import Event, Updated
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from tidings.node.clock import SYSTEM_CLOCK, Clock
from tidings.node.web.gate import Admission, ConnectionGate
from tidings.node.web.limits import WebLimits, client_key
from tidings.node.web.pacing import Pipelining, RequestBudget

__all__ = ["WebPort", "serve_web"]

log = logging.getLogger("tidings.web")

WRITE_CHUNK = 64 * 1024
BACKLOG = 128
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_BUSY_BODY = b'{"error":"too many connections: try again later","code":"busy"}'
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"retry-after: 5\r\ncontent-length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY
)


class _GuardedStream(trio.abc.HalfCloseableStream):
    """A socket stream whose writes must progress: ``write_timeout`` per 64 KiB, else it is closed.

    Hypercorn shields its writes from cancellation; a deadline inside the shield still applies.
    ``abort`` closes the socket at once from any task (blocked reads and writes then fail).
    """

    def __init__(self, stream: trio.SocketStream, write_timeout: float) -> None:
        self.stream = stream
        self.write_timeout = write_timeout
        self.scope = trio.CancelScope()  # around hypercorn's work on this connection
        self.received = 0  # reads that brought bytes (node/web/pacing.py: what makes a request pipelined)

    @property
    def socket(self) -> trio.socket.SocketType:  # hypercorn reads the peer's address here
        return self.stream.socket

    def abort(self) -> None:
        """Reset the connection and end hypercorn's work on it (its idle timer and pipelined requests)."""
        with contextlib.suppress(OSError):
            self.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        self.stream.socket.close()  # a reset, not a lingering close: the client is not reading anyway
        self.scope.cancel()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        for start in range(0, len(view), WRITE_CHUNK):
            with trio.move_on_after(self.write_timeout) as waited:
                try:
                    await self.stream.send_all(view[start : start + WRITE_CHUNK])
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self.scope.cancel()  # the client is gone: see the module docstring
                    raise
            if waited.cancelled_caught:
                self.abort()
                raise trio.BrokenResourceError("the client does not read")

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await self.stream.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.scope.cancel()
            raise
        self.received += 1
        return data

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()


class _Server(TCPServer):
    """Hypercorn's per-connection server, which lets go of a connection as soon as its client closed it.

    Hypercorn keeps such a connection until its idle timer runs out (its task group waits for the
    timer), holding the descriptor and a slot for ``keep_alive_timeout``: a client opening connection
    after connection filled its slots.
    """

    _client_closed = False

    async def _read_data(self) -> None:
        await super()._read_data()  # returns when the client closed its side (or is gone)
        self._client_closed = True
        await self.idle_task.stop()

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, Updated) and self._client_closed:
            return  # no idle timer for a connection whose client closed it
        await super().protocol_send(event)


@dataclass(slots=True)
class WebPort:
    """What ``serve_web`` holds, for statistics: the connection gate and the request budget."""

    gate: ConnectionGate
    budget: RequestBudget
    stalled: int = 0  # connections paused and closed for pipelining without reading

    def statistics(self) -> dict[str, int]:
        """The gate's counts, requests answered and paced, connections stalled."""
        return {
            **self.gate.statistics(),
            "answered": self.budget.answered,
            "paced": self.budget.paced,
            "stalled": self.stalled,
        }


class _Paced:
    """The ASGI app of one connection, each request held back by the pacing rules until it may go."""

    def __init__(
        self, app: Any, stream: _GuardedStream, client: str, port: WebPort, limits: WebLimits
    ) -> None:
        self.app = app
        self.stream = stream
        self.client = client
        self.port = port
        self.pipelining = Pipelining(limits.max_pipelined)
        self.stall_timeout = limits.write_timeout

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            if not self.pipelining.start(self.stream.received):
                # pipelined without reading: answer nothing more and let the buffers fill; close it
                # after the write timeout, or at once when the client leaves (or sends still more)
                self.port.stalled += 1
                with trio.move_on_after(self.stall_timeout), contextlib.suppress(trio.ClosedResourceError):
                    await trio.lowlevel.wait_readable(self.stream.socket)  # closed: evicted, or shutdown
                self.stream.abort()
                return
            wait = self.port.budget.take(self.client)
            if wait > 0:
                await trio.sleep(wait)
        await self.app(scope, receive, send)


def _refuse(sock: socket.socket) -> None:
    """Answer 503 if the kernel takes it without waiting, and close (the excess costs nothing more)."""
    with contextlib.suppress(OSError):
        sock.setblocking(False)
        sock.send(BUSY)
    sock.close()


async def serve_web(
    app: Any,
    sock: socket.socket,
    limits: WebLimits,
    *,
    clock: Clock = SYSTEM_CLOCK,
    task_status: trio.TaskStatus[WebPort] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI ``app`` on the bound ``sock`` within ``limits`` until cancelled.

    Starts with the ``WebPort`` whose ``statistics()`` count connections and answers.
    """
    config = Config()
    config.accesslog = None
    config.errorlog = log
    config.keep_alive_timeout = limits.idle_timeout
    context = WorkerContext(None)
    gate = ConnectionGate(max_connections=limits.max_connections, max_per_client=limits.max_per_client)
    budget = RequestBudget(rate=limits.request_rate, burst=limits.request_burst, now=clock.monotonic)
    port = WebPort(gate=gate, budget=budget)
    sock.listen(BACKLOG)

    async def serve_one(stream: _GuardedStream, admission: Admission) -> None:
        paced = _Paced(app, stream, admission.client, port, limits)
        try:
            with stream.scope:
                wrapped = ASGIWrapper(paced)
                await _Server(wrapped, config, context, ConnectionState({}), stream).run()  # type: ignore[arg-type]
        finally:
            gate.release(admission)
            stream.stream.socket.close()  # if hypercorn did not get to close it (a plain close, no reset)

    async def accept_loop(nursery: trio.Nursery) -> None:
        while True:
            await trio.lowlevel.wait_readable(sock)
            try:
                conn, address = sock.accept()
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                log.warning("web: cannot accept connections: %s; pausing 100 ms", exc.strerror)
                await trio.sleep(0.1)
                continue
            admission, evicted = gate.admit(client_key(address[0]))
            if evicted is not None:
                evicted.close()
            if admission is None:
                _refuse(conn)
                continue
            stream = _GuardedStream(
                trio.SocketStream(trio.socket.from_stdlib_socket(conn)), limits.write_timeout
            )
            admission.close = stream.abort  # from now on: evicted before its task starts, it is closed too
            nursery.start_soon(serve_one, stream, admission)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_loop, nursery)
        task_status.started(port)
        try:
            await trio.sleep_forever()
        finally:
            # hypercorn's writes are shielded: closing the sockets is what ends them promptly
            for admission in gate.admissions():
                admission.close()
