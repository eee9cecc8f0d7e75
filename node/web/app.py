"""A small hand-written ASGI application: the page, the login link, the JSON API and its event stream.

Theory of operation: every HTTP request first has its ``Host`` checked (node/web/auth.py). Then:

- ``GET /`` and ``GET /static/NAME`` serve the files shipped in ``static/`` (no data in them);
- ``GET /login?code=CODE`` trades a one-time code from ``tidings open`` for the token cookie;
- everything under ``/api/`` needs the token (cookie or ``Authorization: Bearer``), is refused when
  another site made the browser send it, and is then looked up in ``api.ROUTES`` by method and exact
  path; ``GET /api/events`` is a server-sent event stream woken by ``node.wait_changed()``: ``hello``
  (with the unread private messages), ``changed`` after new entries, and ``messages`` when the unread
  messages or the newest one changed (node/web/messages.py), so the page hears of a message for us;
- ``GET /api/blobs/&ID`` streams a blob's bytes, as a checked picture or as a download, and
  ``POST /api/blobs`` takes a file to attach as its raw body (node/web/blobs.py).

Within the ``[web]`` limits (node/web/limits.py; README, "The web page"): a JSON body is at most
``max_body`` bytes, arrives within ``body_timeout`` and nests at most ``MAX_JSON_DEPTH`` deep (checked
before it is parsed, so no input reaches the parser's recursion limit); event streams are counted per
client and in all (``StreamSlots``). Connections themselves are capped by node/web/listener.py.

Errors are ``{"error": message, "code": code}`` with 400 (bad input), 401 (no token), 403 (another
origin), 404 (unknown id or path), 405, 408 (a body too slow), 413 (a body or file too large), 429
(too many streams of one client), 500 or 503 (too many streams in all). Every response carries the
security headers of node/web/responses.py.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from importlib import resources
from typing import Any

import trio
from tidings.node.web.api import ROUTES
from tidings.node.web.auth import (
    AuthError,
    check_host,
    check_same_origin,
    cookie_name,
    redeem_login_code,
    token_matches,
)
from tidings.node.web.blobs import BLOB_PREFIX, UPLOAD_PATH, UPLOAD_TYPE, open_answer, send_answer, upload
from tidings.node.web.context import WebContext
from tidings.node.web.gate import StreamSlots
from tidings.node.web.limits import WebLimits, client_key
from tidings.node.web.messages import unread_state
from tidings.node.web.responses import (
    SECURITY_HEADERS,
    Receive,
    body_chunks,
    respond,
    respond_error,
    respond_json,
)
from tidings.node.web.routes import ApiError, Route, parse_args
from tidings.protocol.errors import TidingsError

__all__ = ["WebApp"]

log = logging.getLogger("tidings.web")

Scope = MutableMapping[str, Any]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_STREAMED = object()  # what _route returns for an event stream: answered already
MAX_JSON_DEPTH = 32
KEEPALIVE_SECONDS = 15.0
EVENT_COALESCE_SECONDS = 0.1

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

#: The HTTP status of an error by its ``code``: what is missing (404) or not yours (403), and the
#: node's own trouble (500: a damaged, locked or full store, a broken ranker or config). Every other
#: code of a ``TidingsError`` is a request the rules refuse (400); an ``ApiError`` carries its own.
STATUS_BY_CODE = {
    "not_found": 404,
    "not_yours": 403,
    "store_error": 500,
    "corrupt_store": 500,
    "store_too_new": 500,
    "disk_full": 500,
    "store_locked": 500,
    "no_store": 500,
    "store_access": 500,
    "gap": 500,
    "io": 500,
    "bad_archive": 500,
    "ranker_failed": 500,
    "bad_config": 500,
    "too_big": 413,  # a file to attach, once prepared (node/media.py)
    "blob_too_large": 413,
    "blob_corrupt": 500,
    "blob_busy": 503,
    "unreadable": 500,
}


def _load_static() -> dict[str, tuple[bytes, str]]:
    """The shipped page files by name (a flat folder: package data ``static/*``)."""
    files: dict[str, tuple[bytes, str]] = {}
    folder = resources.files("tidings.node.web") / "static"
    for item in folder.iterdir():
        suffix = "." + item.name.rpartition(".")[2]
        if item.is_file() and suffix in _CONTENT_TYPES:
            files[item.name] = (item.read_bytes(), _CONTENT_TYPES[suffix])
    return files


# -1/+1 for each closing/opening bracket; every other byte counts 0
_DEPTH_STEP = [0] * 256
_DEPTH_STEP[ord("[")] = _DEPTH_STEP[ord("{")] = 1
_DEPTH_STEP[ord("]")] = _DEPTH_STEP[ord("}")] = -1
_BRACKETS_ONLY = bytes(b for b in range(256) if b not in b"[]{}")
_STRING = re.compile(rb'"[^"]*"')


def json_depth(data: bytes, limit: int) -> int:
    """How deep the arrays and objects of a JSON text nest (counted up to ``limit + 1``), without recursion.

    Escaped backslashes and quotes are dropped first, so the quotes left delimit strings exactly and
    brackets inside strings do not count; the scan is linear. For a text that is not valid JSON the
    count may be off, but the parser refuses that text anyway.
    """
    text = _STRING.sub(b"", data.replace(b"\\\\", b"").replace(b'\\"', b""))
    depth = deepest = 0
    for step in map(_DEPTH_STEP.__getitem__, text.translate(None, _BRACKETS_ONLY)):
        depth += step
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                break
    return deepest


def error_status(exc: Exception) -> tuple[int, str, str]:
    """``(status, code, message)`` for an exception raised by a handler."""
    if isinstance(exc, TidingsError):
        status = exc.status if isinstance(exc, ApiError) else STATUS_BY_CODE.get(exc.code, 400)
        return status, exc.code, exc.message
    return 500, "internal", f"internal error: {type(exc).__name__}"


class _Request:
    """The parts of an ASGI http scope the app looks at."""

    def __init__(self, scope: Scope) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query = urllib.parse.parse_qs(
            scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True
        )
        headers: dict[str, str] = {}
        for name, value in scope.get("headers", []):
            headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        self.headers = headers

    def cookie(self, name: str) -> str | None:
        for part in self.headers.get("cookie", "").split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return value
        return None

    def bearer(self) -> str | None:
        kind, _, value = self.headers.get("authorization", "").partition(" ")
        return value.strip() if kind.lower() == "bearer" else None


class WebApp:
    """The ASGI callable. ``bound_host``/``port`` are where it listens (for Host checks, cookie name)."""

    def __init__(
        self, ctx: WebContext, *, token: str, bound_host: str, port: int, limits: WebLimits | None = None
    ) -> None:
        self.ctx = ctx
        self.limits = limits or WebLimits()
        self.streams = StreamSlots(
            max_streams=self.limits.max_event_streams,
            max_per_client=self.limits.max_event_streams_per_client,
        )
        self.token = token
        self.bound_host = bound_host
        self.port = port
        self.cookie = cookie_name(port)
        self.static = _load_static()
        self.routes: dict[tuple[str, str], Route] = {(r.method, r.path): r for r in ROUTES}
        self.paths = {r.path for r in ROUTES}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    @staticmethod
    async def _lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- dispatch --------------------------------------------------------------------------------------
    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        req = _Request(scope)
        try:
            check_host(req.headers.get("host"), self.bound_host, self.port)
        except AuthError as exc:
            await respond_error(send, exc.status, exc.code, str(exc))
            return
        if req.path.startswith("/api/"):
            await self._api(req, scope, receive, send)
        elif req.path == "/login":
            await self._login(req, send)
        else:
            await self._static(req, send)

    async def _static(self, req: _Request, send: Send) -> None:
        name = "index.html" if req.path == "/" else req.path.removeprefix("/static/")
        if req.method not in ("GET", "HEAD"):
            await respond_error(send, 405, "method_not_allowed", f"{req.method} is not allowed here")
            return
        if (req.path != "/" and not req.path.startswith("/static/")) or name not in self.static:
            await respond_error(send, 404, "not_found", f"no page {req.path}")
            return
        body, content_type = self.static[name]
        await respond(send, 200, body, content_type)

    async def _login(self, req: _Request, send: Send) -> None:
        code = (req.query.get("code") or [""])[-1]
        if req.method != "GET" or not redeem_login_code(self.ctx.home.path, code):
            page = b"<!doctype html><title>Tidings</title><p>This login link is used up or expired: run <code>tidings open</code> again."
            await respond(send, 403, page, "text/html; charset=utf-8")
            return
        cookie = f"{self.cookie}={self.token}; Path=/; HttpOnly; SameSite=Strict"
        headers = [(b"set-cookie", cookie.encode()), (b"location", b"/")]
        await respond(send, 303, b"", "text/plain", headers)

    def _check(self, req: _Request, body_type: str = "application/json") -> None:
        """Token and same-origin checks of an API request (AuthError if refused)."""
        if not (
            token_matches(self.token, req.cookie(self.cookie)) or token_matches(self.token, req.bearer())
        ):
            raise AuthError(
                "no valid token: open the page with 'tidings open'", status=401, code="unauthorized"
            )
        check_same_origin(
            method=req.method,
            origin=req.headers.get("origin"),
            fetch_site=req.headers.get("sec-fetch-site"),
            content_type=req.headers.get("content-type"),
            host=req.headers.get("host"),
            body_type=body_type,
        )

    async def _api(self, req: _Request, scope: Scope, receive: Receive, send: Send) -> None:
        answer = None
        try:
            if req.path.startswith(BLOB_PREFIX):  # a blob's bytes (node/web/blobs.py)
                self._check(req)
                if req.method not in ("GET", "HEAD"):
                    raise ApiError(
                        f"{req.method} is not allowed on a blob", status=405, code="method_not_allowed"
                    )
                answer = await open_answer(self.ctx, req.path)
            elif req.path == UPLOAD_PATH and req.method == "POST":  # a file to attach
                self._check(req, UPLOAD_TYPE)
                limit = self.limits.body_timeout
                result = await upload(self.ctx, req.headers, receive, body_timeout=limit)
            else:
                self._check(req)
                result = await self._route(req, scope, receive, send)
                if result is _STREAMED:
                    return
        except Exception as exc:
            status, code, message = error_status(exc)
            if status >= 500:
                log.error("%s %s failed", req.method, req.path, exc_info=exc)
            await respond_error(send, status, code, message)
            return
        if answer is not None:
            await send_answer(answer, send, head=req.method == "HEAD")
        else:
            await respond_json(send, 200, result)

    async def _route(self, req: _Request, scope: Scope, receive: Receive, send: Send) -> Any:
        """The JSON endpoint of ``api.ROUTES`` the request names: its result (``_STREAMED`` when it was
        an event stream, already answered)."""
        route = self.routes.get((req.method, req.path))
        if route is None:
            if req.path in self.paths:
                raise ApiError(
                    f"{req.method} is not allowed on {req.path}", status=405, code="method_not_allowed"
                )
            raise ApiError(f"no endpoint {req.path}", status=404, code="not_found")
        body = await self._read_json(receive) if req.method == "POST" else None
        args = parse_args(route, req.query, body)
        if route.stream:
            client = client_key((scope.get("client") or ("?", 0))[0])
            self.streams.take(client)  # ApiError 429/503 when full (README, "The web page")
            try:
                await self._events(receive, send)
            finally:
                self.streams.give_back(client)
            return _STREAMED
        return await route.handler(self.ctx, args)

    async def _read_json(self, receive: Receive) -> Any:
        limit = self.limits.max_body
        chunks: list[bytes] = []
        too_large = ApiError(f"the request body is over {limit} bytes", status=413, code="too_large")
        with trio.move_on_after(self.limits.body_timeout) as waited:
            chunks = [chunk async for chunk in body_chunks(receive, limit, lambda: too_large)]
        if waited.cancelled_caught:
            raise ApiError(
                f"the request body took over {self.limits.body_timeout:g} s", status=408, code="slow_body"
            )
        data = b"".join(chunks) or b"null"
        if json_depth(data, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
            raise ApiError(f"the request body nests deeper than {MAX_JSON_DEPTH}", code="bad_json")
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise ApiError("the request body is not valid JSON", code="bad_json") from None

    async def _events(self, receive: Receive, send: Send) -> None:
        """Server-sent events: ``hello`` at once, ``changed`` after new entries, then ``messages`` when
        what the badges show changed (``unread_state``), comments as keepalive. A consumer that knows
        only ``hello`` and ``changed`` sees what it always saw: ``messages`` is an event of its own."""
        headers = [
            (b"content-type", b"text/event-stream"),
            (b"cache-control", b"no-store"),
            *SECURITY_HEADERS,
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        node = self.ctx.node

        async def emit(event: str, data: dict[str, Any]) -> None:
            text = f"event: {event}\ndata: {json.dumps(data)}\n\n"
            await send({"type": "http.response.body", "body": text.encode(), "more_body": True})

        async def until_disconnect(scope: trio.CancelScope) -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(until_disconnect, nursery.cancel_scope)
            await send({"type": "http.response.body", "body": b"retry: 2000\n\n", "more_body": True})
            badges = await unread_state(self.ctx)
            await emit("hello", {"ingested": node.statistics()["ingested"], "messages": badges})
            while True:
                with trio.move_on_after(KEEPALIVE_SECONDS) as waited:
                    await node.wait_changed()
                if waited.cancelled_caught:
                    await send({"type": "http.response.body", "body": b": keepalive\n\n", "more_body": True})
                    continue
                await trio.sleep(EVENT_COALESCE_SECONDS)  # one event for a burst of entries
                await emit("changed", {"ingested": node.statistics()["ingested"]})
                now = await unread_state(self.ctx)
                if now != badges:  # a message for us arrived (or was read or deleted meanwhile)
                    badges = now
                    await emit("messages", badges)
