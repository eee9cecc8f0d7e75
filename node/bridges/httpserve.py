"""A very small HTTP/1.1 server on trio and h11, enough to serve a few GET routes to local readers.

One request per connection (``Connection: close``), bounded request size and time, so a slow or broken
client cannot hold the node: each connection runs in its own task with a deadline. A handler answers
with a ``Response`` (the whole body) or a ``Streamed`` body of a known length (a blob: never held
whole), sent piece by piece, each piece within ``REQUEST_TIMEOUT`` (a client that stops reading is cut
off). Every answer says ``X-Content-Type-Options: nosniff``: its ``Content-Type`` is what it is.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import h11
import trio

__all__ = ["Body", "Handler", "Response", "Streamed", "serve_http"]

log = logging.getLogger("tidings.bridges.http")


class Body(Protocol):
    """A body read piece by piece: ``read()`` gives the next bytes, ``b""`` at the end."""

    async def read(self) -> bytes: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, kw_only=True)
class Streamed:
    """An answer whose body of ``length`` bytes is read from ``body`` as it is sent (closed after)."""

    status: int
    kind: str  # the Content-Type
    length: int
    body: Body
    headers: tuple[tuple[str, str], ...] = ()


#: (status, content type, body)
Response = tuple[int, str, bytes]
Handler = Callable[[str, str], Awaitable[Response | Streamed]]

MAX_REQUEST = 16384
REQUEST_TIMEOUT = 10.0


async def _read_request(stream: trio.SocketStream, conn: h11.Connection) -> h11.Request | None:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(4096)
            conn.receive_data(data)
            if not data:
                return None
            continue
        if isinstance(event, h11.Request):
            return event
        return None


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
}


def _head(status: int, kind: str, length: int, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
        f"content-type: {kind}",
        f"content-length: {length}",
        "connection: close",
        "cache-control: no-cache",
        "x-content-type-options: nosniff",
        *(f"{name}: {value}" for name, value in headers),
        "",
        "",
    ]
    return "\r\n".join(lines).encode("latin-1")


def _response(status: int, kind: str, body: bytes, *, head: bool = False) -> bytes:
    return _head(status, kind, len(body)) + (b"" if head else body)


async def _answer(stream: trio.SocketStream, handler: Handler) -> bytes | tuple[Streamed, bool]:
    """The whole answer, or a streamed one and whether only its head is asked for (HEAD)."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
    try:
        request = await _read_request(stream, conn)
    except h11.RemoteProtocolError:
        request = None
    text = "text/plain; charset=utf-8"
    if request is None:
        return _response(400, text, b"bad request\n")
    if request.method not in (b"GET", b"HEAD"):
        return _response(405, text, b"only GET\n")
    target = request.target.decode("ascii", "replace")
    try:
        answer = await handler(request.method.decode(), target)
    except Exception as exc:  # a failing handler is a 500, not a dead server
        log.warning("error serving %s: %s: %s", target, type(exc).__name__, exc)
        answer = 500, text, b"internal error\n"
    if isinstance(answer, Streamed):
        return answer, request.method == b"HEAD"
    status, kind, body = answer
    return _response(status, kind, body, head=request.method == b"HEAD")


async def _send(stream: trio.SocketStream, scope: trio.CancelScope, answer: Streamed, head: bool) -> None:
    """Send a streamed answer; each piece read and sent within REQUEST_TIMEOUT. A body that ends
    early or fails ends the connection short of its length, so the client sees it was cut."""
    try:
        await stream.send_all(_head(answer.status, answer.kind, answer.length, answer.headers))
        sent = 0
        while not head and sent < answer.length:
            scope.deadline = trio.current_time() + REQUEST_TIMEOUT
            try:
                piece = (await answer.body.read())[: answer.length - sent]
            except Exception as exc:  # a body that fails (a damaged blob) cuts the answer, not the server
                log.warning("a streamed answer failed at %d bytes: %s: %s", sent, type(exc).__name__, exc)
                return
            if not piece:
                log.warning("a streamed answer ended at %d of %d bytes", sent, answer.length)
                return
            await stream.send_all(piece)
            sent += len(piece)
    finally:
        with trio.CancelScope(shield=True):
            await answer.body.aclose()


async def _handle(stream: trio.SocketStream, handler: Handler) -> None:
    try:
        with trio.move_on_after(REQUEST_TIMEOUT) as scope:
            answer = await _answer(stream, handler)
            if isinstance(answer, bytes):
                await stream.send_all(answer)
            else:
                await _send(stream, scope, *answer)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        await stream.aclose()


async def serve_http(
    host: str, port: int, handler: Handler, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
) -> None:
    """Listen on ``host:port`` and answer each request with ``handler(method, target)``.

    ``task_status.started`` gets the bound ``(host, port)``.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[:2]

    async def one(stream: trio.SocketStream) -> None:
        await _handle(stream, handler)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, one, listeners)
        task_status.started((bound[0], bound[1]))
