"""One bounded HTTP GET for the bridges (spec §14.6), streamed, so no remote can make it unbounded.

Theory of operation. ``fetch`` speaks HTTP/1.1 with h11 over a trio stream that the outbound policy
opened (``outbound.open_checked_stream``: no internal addresses unless the user named one), one
connection per request, and follows redirects itself, each hop a new connection checked again. A 200
answer's body is streamed and counted twice as it arrives: its *wire* bytes (every byte read from the
connection for that answer, headers and transfer framing included) and its *decoded* bytes, decompressed here with a bound on
each step (``zlib`` ``max_length``), so a compression bomb is never inflated past ``max_size``; either
count over ``max_size`` stops the fetch (``too_large``). Time is bounded twice: the whole fetch, every
hop and the body included, ends at ``timeout`` seconds, and once the body has started it must keep an
average of ``min_rate`` bytes/s after a grace of ``grace`` seconds (a server that drips bytes to hold the
poller is cut off: ``too_slow``). The reader may stop early: ``enough(body_so_far)`` returning True
ends the fetch with what was read (the RSS bridge stops after the items it will import). A fetch
that must read its whole body (no ``enough``) is refused before its first body byte when its
``Content-Length`` already says more than ``max_size``. With a ``sink`` (a media download), the
decoded body is handed to it piece by piece as it arrives and never gathered here.

Only ``identity``, ``gzip`` and ``deflate`` content codings are asked for and accepted.
"""

from __future__ import annotations

import functools
import ssl
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urljoin, urlsplit

import h11
import trio
from tidings.node.bridges.base import BridgeError
from tidings.node.bridges.outbound import OutboundPolicy, open_checked_stream

__all__ = ["BodySink", "FetchLimits", "Fetched", "fetch"]

REDIRECTS = frozenset({301, 302, 303, 307, 308})
HEADER_ROOM = 64 * 1024  # bytes of status line and headers allowed beside ``max_size`` (h11 holds them)
READ = 64 * 1024


@dataclass(frozen=True, kw_only=True)
class FetchLimits:
    """The bounds of one fetch (spec §14.6); defaults are the RSS bridge's."""

    timeout: float = 20.0  # seconds for the whole fetch: every hop, headers and body
    max_size: int = 2 * 1024 * 1024  # body bytes on the wire, and decoded
    min_rate: float = 4096.0  # body bytes/s, averaged from the first byte of the body ...
    grace: float = 5.0  # ... once this many seconds of body have passed
    max_redirects: int = 5

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.max_size <= 0 or self.min_rate < 0 or self.grace < 0:
            raise ValueError("fetch limits must be positive")
        if self.max_redirects < 0:
            raise ValueError("max_redirects must not be negative")


@dataclass(frozen=True, kw_only=True)
class Fetched:
    url: str  # the URL that answered (after redirects)
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes  # decoded; empty unless the status is 200, and empty when a sink took it
    wire_bytes: int
    redirects: int
    stopped: bool  # ``enough`` ended the read before the end of the body


class BodySink(Protocol):
    """Where a streamed body goes: ``begin`` sees the 200 answer's headers (lower-cased names) before
    any body byte and may refuse it by raising ``BridgeError``; ``write`` takes each decoded piece."""

    async def begin(self, headers: dict[str, str]) -> None: ...

    async def write(self, data: bytes) -> None: ...


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    import httpx

    return httpx.create_ssl_context()


class _Decoder:
    """Content decoding with a bound on the decoded size, enforced at every step."""

    def __init__(self, coding: str, limit: int, url: str) -> None:
        self.limit = limit
        self.url = url
        self.total = 0
        self.coding = coding
        self._raw_fallback = coding == "deflate"
        if coding in ("gzip", "x-gzip"):
            self._z: zlib._Decompress | None = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif coding == "deflate":
            self._z = zlib.decompressobj(zlib.MAX_WBITS)
        elif coding in ("", "identity"):
            self._z = None
        else:
            raise BridgeError(f"{url}: unsupported content encoding {coding!r}", code="bad_encoding")

    def _count(self, n: int) -> None:
        self.total += n
        if self.total > self.limit:
            raise BridgeError(f"{self.url}: larger than {self.limit} bytes decoded", code="too_large")

    def feed(self, data: bytes) -> bytes:
        if self._z is None:
            self._count(len(data))
            return data
        out: list[bytes] = []
        while data:
            try:
                # never more than one byte past the limit, however much this input inflates to
                chunk = self._z.decompress(data, self.limit - self.total + 1)
            except zlib.error as exc:
                if self._raw_fallback and self.total == 0:  # "deflate" sent as a raw stream
                    self._raw_fallback = False
                    self._z = zlib.decompressobj(-zlib.MAX_WBITS)
                    continue
                raise BridgeError(f"{self.url}: bad {self.coding} data: {exc}", code="bad_encoding") from None
            self._raw_fallback = False
            self._count(len(chunk))
            out.append(chunk)
            data = self._z.unconsumed_tail
            if self._z.eof:
                data = self._z.unused_data
                if data and self.coding != "deflate":  # gzip members may follow each other
                    self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
                else:
                    break
        return b"".join(out)


class _Progress:
    """Where the fetch is, for the error message of a deadline."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.answered = False
        self.wire = 0


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        out[key] = f"{out[key]}, {text}" if key in out else text
    return out


def _next_url(url: str, location: str | None) -> str:
    if not location:
        raise BridgeError(f"{url}: a redirect without a Location", code="http_error")
    target = urljoin(url, location.strip())
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BridgeError(f"{url}: redirects to {target!r}, not an http(s) URL", code="bad_url")
    return target.split("#", 1)[0]


@dataclass(frozen=True, kw_only=True)
class _Target:
    scheme: str
    host: str  # as resolved and checked: lower case, IDNA, no brackets
    port: int
    authority: str  # the Host header
    path: str  # path and query

    @classmethod
    def of(cls, url: str) -> _Target:
        try:
            parts = urlsplit(url)
            port = parts.port
            host = (parts.hostname or "").encode("idna").decode("ascii")
        except (ValueError, UnicodeError) as exc:
            raise BridgeError(f"not a fetchable URL: {url!r} ({exc})", code="bad_url") from None
        if parts.scheme not in ("http", "https") or not host:
            raise BridgeError(f"not an http(s) URL: {url!r}", code="bad_url")
        default = 443 if parts.scheme == "https" else 80
        shown = f"[{host}]" if ":" in host else host
        authority = shown if port in (None, default) else f"{shown}:{port}"
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(scheme=parts.scheme, host=host, port=port or default, authority=authority, path=path)


async def fetch(
    url: str,
    *,
    policy: OutboundPolicy,
    limits: FetchLimits | None = None,
    headers: dict[str, str] | None = None,
    enough: Callable[[bytearray], bool] | None = None,
    sink: BodySink | None = None,
) -> Fetched:
    """GET ``url`` within ``limits`` (see the module docstring); failures are ``BridgeError``.

    ``sink``: the body goes to it as it arrives (not with ``enough``)."""
    if sink is not None and enough is not None:
        raise ValueError("a fetch has either a sink or an enough test, not both")
    limits = limits or FetchLimits()
    progress = _Progress(trio.current_time())
    deadline = progress.start + limits.timeout
    reader = _Reader(enough=enough, sink=sink)
    try:
        with trio.CancelScope(deadline=deadline) as scope:
            return await _follow(url, policy, limits, headers or {}, reader, progress, scope, deadline)
    except OSError as exc:
        raise BridgeError(f"{url}: cannot fetch: {exc}", code="unreachable") from None
    except (h11.ProtocolError, ssl.SSLError, trio.BrokenResourceError) as exc:
        raise BridgeError(f"{url}: cannot fetch: {exc or type(exc).__name__}", code="unreachable") from None
    elapsed = trio.current_time() - progress.start
    if not progress.answered:
        raise BridgeError(f"{url}: no answer within {limits.timeout:g} s", code="unreachable")
    raise BridgeError(
        f"{url}: too slow: {progress.wire} bytes in {elapsed:.1f} s (at least {limits.min_rate:g} "
        f"bytes/s after {limits.grace:g} s, all within {limits.timeout:g} s)",
        code="too_slow",
    )


@dataclass(frozen=True, kw_only=True)
class _Reader:
    """What to do with a 200 answer's body: test it with ``enough`` as it grows, or hand it to ``sink``."""

    enough: Callable[[bytearray], bool] | None
    sink: BodySink | None


async def _follow(
    url: str,
    policy: OutboundPolicy,
    limits: FetchLimits,
    headers: dict[str, str],
    reader: _Reader,
    progress: _Progress,
    scope: trio.CancelScope,
    deadline: float,
) -> Fetched:
    current = url
    for hop in range(limits.max_redirects + 1):
        target = _Target.of(current)
        stream: trio.abc.Stream = await open_checked_stream(policy, target.host, target.port)
        try:
            if target.scheme == "https":
                stream = trio.SSLStream(
                    stream, _ssl_context(), server_hostname=target.host, https_compatible=True
                )
            exchange = _Exchange(stream, limits, progress, current)
            response = await exchange.request(target, headers)
            progress.answered = True
            got = _headers(response.headers)
            if response.status_code in REDIRECTS:
                current = _next_url(current, got.get("location"))
                continue
            if response.status_code != 200:
                return Fetched(
                    url=current, status=response.status_code, headers=got, body=b"", wire_bytes=exchange.wire,
                    redirects=hop, stopped=False,
                )  # fmt: skip
            if reader.sink is not None:
                await reader.sink.begin(got)
            body, stopped = await exchange.body(got, reader, scope, deadline)
            return Fetched(
                url=current, status=200, headers=got, body=body, wire_bytes=exchange.wire, redirects=hop,
                stopped=stopped,
            )  # fmt: skip
        finally:
            await trio.aclose_forcefully(stream)
    raise BridgeError(f"{url}: more than {limits.max_redirects} redirects", code="too_many_redirects")


class _Exchange:
    """One request and its answer over one connection, h11 driving the bytes (spec §14.6)."""

    def __init__(self, stream: trio.abc.Stream, limits: FetchLimits, progress: _Progress, url: str) -> None:
        self.stream = stream
        self.limits = limits
        self.progress = progress
        self.url = url
        self.wire = 0
        self.conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=HEADER_ROOM)

    async def request(self, target: _Target, headers: dict[str, str]) -> h11.Response:
        sent = [
            ("host", target.authority),
            *(
                (k, v)
                for k, v in headers.items()
                if k.lower() not in ("host", "accept-encoding", "connection")
            ),
            ("accept-encoding", "gzip, deflate"),
            ("connection", "close"),
        ]
        await self.stream.send_all(
            self.conn.send(h11.Request(method="GET", target=target.path, headers=sent))
        )
        await self.stream.send_all(self.conn.send(h11.EndOfMessage()) or b"")
        while True:
            event = await self._next()
            if isinstance(event, h11.Response):
                return event
            if not isinstance(event, h11.InformationalResponse):
                raise BridgeError(f"{self.url}: the server closed the connection", code="unreachable")

    async def _next(self) -> h11.Event | type[h11.PAUSED]:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await self.stream.receive_some(READ)
            self.wire += len(data)
            self.progress.wire = self.wire
            if self.wire > self.limits.max_size + HEADER_ROOM:
                raise BridgeError(f"{self.url}: larger than {self.limits.max_size} bytes", code="too_large")
            self.conn.receive_data(data)

    async def body(
        self,
        got: dict[str, str],
        reader: _Reader,
        scope: trio.CancelScope,
        deadline: float,
    ) -> tuple[bytes, bool]:
        limits, url = self.limits, self.url
        enough, sink = reader.enough, reader.sink
        # A declared Content-Length is never trusted to be small: the counts below are what hold. One
        # over the cap refuses a body that must be read whole before a byte of it is read.
        declared = got.get("content-length", "").strip()
        if enough is None and declared.isdigit() and int(declared) > limits.max_size:
            raise BridgeError(
                f"{url}: larger than {limits.max_size} bytes (Content-Length {int(declared)})",
                code="too_large",
            )
        codings = [c.strip().lower() for c in got.get("content-encoding", "").split(",") if c.strip()]
        if len(codings) > 1:
            raise BridgeError(
                f"{url}: unsupported content encoding {got['content-encoding']!r}", code="bad_encoding"
            )
        decoder = _Decoder(codings[0] if codings else "", limits.max_size, url)
        start, at_start = trio.current_time(), self.wire
        if limits.min_rate > 0:
            scope.deadline = min(deadline, start + limits.grace)
        body = bytearray()
        data = 0
        while True:
            event = await self._next()
            if isinstance(event, h11.EndOfMessage):
                return bytes(body), False
            if not isinstance(event, h11.Data):
                raise BridgeError(f"{url}: the server closed the connection", code="unreachable")
            data += len(event.data)
            if data > limits.max_size:
                raise BridgeError(f"{url}: larger than {limits.max_size} bytes", code="too_large")
            if limits.min_rate > 0:  # the least rate moves the deadline with every read
                scope.deadline = min(
                    deadline, start + limits.grace + (self.wire - at_start) / limits.min_rate
                )
            decoded = decoder.feed(bytes(event.data))
            if sink is not None:
                if decoded:
                    await sink.write(decoded)
                continue
            body += decoded
            if enough is not None and decoded and enough(body):
                return bytes(body), True
