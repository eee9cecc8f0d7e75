"""What every answer of the web port carries, and the small helpers that send a whole answer.

Every response, page, API or blob, gets ``SECURITY_HEADERS``: a Content-Security-Policy that lets the
page run only its own script and style files (no inline script, no ``eval``, no plugins, no frames,
not framed itself, no ``<base>``), load pictures only from this origin and from the ``blob:`` URLs of
files the user is about to attach, and talk only to this origin; ``nosniff`` so a browser never guesses
a type the node did not name (an SVG or HTML file served as a download stays a download). Blobs get a
stricter policy still (``BLOB_CSP``): a picture opened on its own is a sandboxed document that may
load nothing at all.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from tidings.node.web.routes import ApiError

__all__ = [
    "BLOB_CSP",
    "PAGE_CSP",
    "SECURITY_HEADERS",
    "Receive",
    "Send",
    "body_chunks",
    "respond",
    "respond_error",
    "respond_json",
    "security_headers",
]

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]

#: The page's policy: its own files only. ``blob:`` pictures are the previews of files being attached
#: (``URL.createObjectURL`` in static/media.js); DOM sinks that parse HTML refuse plain strings.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; manifest-src 'self'; object-src 'none'; frame-src 'none'; "
    "worker-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
    "require-trusted-types-for 'script'"
)
#: A blob's policy: nothing may run or load, even when a picture is opened as a page of its own.
BLOB_CSP = "default-src 'none'; sandbox; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

_OTHERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]

SECURITY_HEADERS = [(b"content-security-policy", PAGE_CSP.encode()), *_OTHERS]


def security_headers(csp: str = PAGE_CSP) -> list[tuple[bytes, bytes]]:
    """The headers of the module docstring, with the policy ``csp``."""
    return [(b"content-security-policy", csp.encode()), *_OTHERS]


async def respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """A whole answer: ``body`` with its type and length, never cached, with the security headers."""
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *SECURITY_HEADERS,
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def respond_json(
    send: Send, status: int, obj: Any, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    """``obj`` as compact JSON (UTF-8, not ASCII-escaped)."""
    body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    await respond(send, status, body, "application/json", extra)


async def respond_error(send: Send, status: int, code: str, message: str) -> None:
    """An error as the API answers them: ``{"error": message, "code": code}``."""
    await respond_json(send, status, {"error": message, "code": code})


async def body_chunks(
    receive: Receive, limit: int, too_large: Callable[[], Exception]
) -> AsyncIterator[bytes]:
    """The request body's chunks as they arrive: ``too_large()`` is raised past ``limit`` bytes (before
    the chunk that passes it is used), ``disconnected`` when the client goes away."""
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError("the client went away", code="disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large()
        if chunk:
            yield chunk
        if not message.get("more_body"):
            return
