"""A very small HTTP/1.1 server on trio and h11, enough to serve a few GET routes to local readers.

One request per connection (``Connection: close``), bounded request size and time, so a slow or broken
client cannot hold the node: each connection runs in its own task with a deadline.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import h11
import trio

__all__ = ["Handler", "Response", "serve_http"]

log = logging.getLogger("tidings.bridges.http")

#: (status, content type, body)
Response = tuple[int, str, bytes]
Handler = Callable[[str, str], Awaitable[Response]]

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


def _response(status: int, kind: str, body: bytes, *, head: bool = False) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
        f"content-type: {kind}",
        f"content-length: {len(body)}",
        "connection: close",
        "cache-control: no-cache",
        "",
        "",
    ]
    return "\r\n".join(lines).encode("ascii") + (b"" if head else body)


async def _answer(stream: trio.SocketStream, handler: Handler) -> bytes:
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
        status, kind, body = await handler(request.method.decode(), target)
    except Exception as exc:  # a failing handler is a 500, not a dead server
        log.warning("error serving %s: %s: %s", target, type(exc).__name__, exc)
        status, kind, body = 500, text, b"internal error\n"
    return _response(status, kind, body, head=request.method == b"HEAD")


async def _handle(stream: trio.SocketStream, handler: Handler) -> None:
    try:
        with trio.move_on_after(REQUEST_TIMEOUT):
            await stream.send_all(await _answer(stream, handler))
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
