"""A Nostr relay client over trio-websocket (NIP-01): publish events, fetch stored events, stay subscribed.

``fetch_events`` and ``publish_events`` open one connection each, do their work within ``timeout``
seconds and close it (``tidings bridge nostr pull``/``publish``). ``open_relay`` keeps one connection
open for the node's live subscription (node/bridges/nostr_live.py). All three speak through
``protocol.nostr.RelaySession``, which parses and verifies what the relay sends: invalid messages and
events are counted as rejected, never returned. Failures come out as ``BridgeError`` (``unreachable``,
``relay_error``, ``forbidden_address``). Every connection goes through the outbound policy (spec §14.6,
node/bridges/outbound.py).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
from tidings.node.bridges.base import BridgeError
from tidings.node.bridges.outbound import OutboundPolicy, open_checked_stream
from tidings.protocol import nostr as wire

__all__ = [
    "Fetched",
    "RelayConnection",
    "check_relay_url",
    "fetch_events",
    "open_relay",
    "publish_events",
    "relay_failure",
]

log = logging.getLogger("tidings.bridges.nostr")


def check_relay_url(url: str) -> str:
    """A ``ws://`` or ``wss://`` URL with a host, or ``BridgeError(code="bad_url")``."""
    from urllib.parse import urlsplit

    url = url.strip()
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("ws", "wss") and bool(parts.hostname)
        _ = parts.port
    except ValueError:
        ok = False
    if not ok:
        raise BridgeError(f"not a relay URL (ws:// or wss://): {url!r}", code="bad_url")
    return url


def _connect(url: str, timeout: float) -> Any:
    """A websocket to the relay at ``url`` (an async context manager), through the outbound policy."""
    return _open_websocket(url, timeout)


def _errors() -> tuple[type[BaseException], ...]:
    from trio_websocket import ConnectionClosed, HandshakeError

    return (trio.TooSlowError, HandshakeError, ConnectionClosed, OSError)


def relay_failure(url: str, exc: BaseException) -> BridgeError:
    """The ``BridgeError`` for a failed connection to ``url`` (a ``BridgeError`` stays as it is).

    The message does not repeat ``url``: every place that shows it (``tidings bridge nostr publish``
    and ``pull``, ``tidings bridge list``, the log) already names the relay beside it."""
    from trio_websocket import ConnectionClosed, HandshakeError

    if isinstance(exc, BridgeError):
        return exc
    if isinstance(exc, trio.TooSlowError):
        return BridgeError("the relay did not answer in time", code="unreachable")
    if isinstance(exc, HandshakeError | OSError):
        return BridgeError(f"cannot connect: {_why(exc)}", code="unreachable")
    if isinstance(exc, ConnectionClosed):
        return BridgeError("the relay closed the connection", code="relay_error")
    return BridgeError(f"{type(exc).__name__}: {exc}", code="relay_error")


def _why(exc: BaseException) -> str:
    """Why a connection failed, in words: the OS's reason ("connection refused") rather than trio's
    "all attempts to connect to HOST:PORT failed", whose reasons are in the group it was raised from."""
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        reasons = dict.fromkeys(_why(leaf) for leaf in _leaves(cause))
        if reasons:
            return "; ".join(reasons)
    if isinstance(exc, OSError) and (exc.errno or exc.strerror):
        # trio's strerror repeats the address ("Error connecting to (...): Connection refused")
        text = os.strerror(exc.errno) if exc.errno else str(exc.strerror)
        return text[:1].lower() + text[1:]
    from trio_websocket import ConnectionRejected, ConnectionTimeout

    if isinstance(exc, ConnectionRejected):  # its str() is empty
        return f"the relay answered HTTP {exc.status_code} instead of opening a websocket"
    if isinstance(exc, ConnectionTimeout):
        return "the websocket handshake timed out"
    return str(exc).strip() or f"the websocket handshake failed ({type(exc).__name__})"


def _new_subscription() -> str:
    return "tidings-" + secrets.token_hex(4)


def _note_refused(url: str, refused: wire.Refused) -> None:
    log.warning("relay %s sent something invalid: %s: %s", url, refused.code, refused.detail)


async def publish_events(
    url: str, events: list[wire.Event], *, timeout: float
) -> dict[str, tuple[bool, str]]:
    """Send each event and wait for its ``OK``: event id -> (accepted, message).

    A relay that says ``duplicate:`` holds the event already: that counts as accepted.
    """
    session = wire.RelaySession()
    results: dict[str, tuple[bool, str]] = {}
    try:
        with trio.fail_after(timeout):
            async with _connect(url, timeout) as ws:
                for event in events:
                    await ws.send_message(session.publish(event))
                    while event.id not in results:
                        for out in session.receive_data(await ws.get_message()):
                            if isinstance(out, wire.Ok):
                                results[out.event_id] = (out.accepted, out.message)
                            elif isinstance(out, wire.Notice):
                                log.info("relay %s: notice: %s", url, out.message)
                            elif isinstance(out, wire.Refused):
                                _note_refused(url, out)
    except _errors() as exc:
        if not results:
            raise relay_failure(url, exc) from None
        log.warning("relay %s: stopped after %d events: %s", url, len(results), relay_failure(url, exc))
    return results


@dataclass
class Fetched:
    events: list[wire.Event] = field(default_factory=list)
    rejected: int = 0
    problems: list[str] = field(default_factory=list)


async def fetch_events(url: str, filters: list[dict[str, Any]], *, timeout: float) -> Fetched:
    """Events matching ``filters`` stored by the relay (until ``EOSE``), verified; invalid ones rejected."""
    out = Fetched()
    session = wire.RelaySession()
    try:
        with trio.fail_after(timeout):
            async with _connect(url, timeout) as ws:
                for message in session.subscribe(_new_subscription(), *filters):
                    await ws.send_message(message)
                done = False
                while not done:
                    for got in session.receive_data(await ws.get_message()):
                        if isinstance(got, wire.Refused):
                            out.rejected += 1
                            out.problems.append(f"{got.code}: {got.detail}")
                            _note_refused(url, got)
                        elif isinstance(got, wire.Received):
                            out.events.append(got.event)
                        elif isinstance(got, wire.Caught | wire.Closed):
                            done = True
                for message in session.unsubscribe():
                    await ws.send_message(message)
    except _errors() as exc:
        raise relay_failure(url, exc) from None
    return out


class RelayConnection:
    """One open connection to a relay for as long as its owner keeps it (``open_relay``).

    One task must call ``receive`` in a loop: it returns events, ``EOSE``, notices and rejections, and
    hands the relay's ``OK`` answers to ``publish``, which may run in another task at the same time.
    """

    def __init__(self, url: str, ws: Any, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self.session = wire.RelaySession()
        self._ws = ws
        self._answers: dict[str, tuple[bool, str]] = {}
        self._answered = trio.Event()

    async def _send(self, messages: list[str]) -> None:
        try:
            for message in messages:
                await self._ws.send_message(message)
        except _errors() as exc:
            raise relay_failure(self.url, exc) from None

    async def subscribe(self, *filters: dict[str, Any]) -> str:
        """Replace the open subscription (CLOSE, then REQ under a new id); the new id."""
        sub = _new_subscription()
        await self._send(self.session.subscribe(sub, *filters))
        return sub

    async def unsubscribe(self) -> None:
        await self._send(self.session.unsubscribe())

    async def receive(self) -> list[wire.SessionEvent]:
        """Wait for the relay's next message; what it means (``OK`` answers go to ``publish``)."""
        try:
            text = await self._ws.get_message()
        except _errors() as exc:
            raise relay_failure(self.url, exc) from None
        out: list[wire.SessionEvent] = []
        for got in self.session.receive_data(text):
            if isinstance(got, wire.Ok):
                self._answers[got.event_id] = (got.accepted, got.message)
                self._answered.set()
                self._answered = trio.Event()
            else:
                out.append(got)
        return out

    async def publish(self, events: list[wire.Event]) -> dict[str, tuple[bool, str]]:
        """Send each event and wait (``timeout`` each) for its ``OK``, as ``publish_events`` does.

        A relay that stops answering raises ``BridgeError`` when nothing was answered, else the
        answers so far are returned (the rest is sent again later).
        """
        results: dict[str, tuple[bool, str]] = {}
        for event in events:
            await self._send([self.session.publish(event)])
            try:
                with trio.fail_after(self.timeout):
                    while event.id not in self._answers:
                        await self._answered.wait()
            except trio.TooSlowError as exc:
                if not results:
                    raise relay_failure(self.url, exc) from None
                log.warning("relay %s: no answer after %d events", self.url, len(results))
                return results
            results[event.id] = self._answers.pop(event.id)
        return results


def _address(url: str) -> tuple[str, int, str, bool]:
    """(host, port, resource, tls) of a relay URL checked by ``check_relay_url``."""
    from urllib.parse import urlsplit

    parts = urlsplit(check_relay_url(url))
    tls = parts.scheme == "wss"
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return str(parts.hostname), parts.port or (443 if tls else 80), resource, tls


@asynccontextmanager
async def open_relay(url: str, *, timeout: float) -> AsyncIterator[RelayConnection]:
    """A connection to ``url`` kept open until the block ends (connecting takes at most ``timeout``)."""
    async with _open_websocket(url, timeout) as ws:
        yield RelayConnection(url, ws, timeout)


@asynccontextmanager
async def _open_websocket(url: str, timeout: float) -> AsyncIterator[Any]:
    """A websocket to ``url`` open until the block ends (connecting takes at most ``timeout``).

    The TCP stream is ours and closed when the block ends, also after the relay dropped it without a
    websocket goodbye (``open_websocket_url`` leaves the socket open then). It is opened through the
    outbound policy (spec §14.6): a relay's name is resolved once and checked, and only a relay URL
    written as an internal address (or ``localhost``) may be internal. An error raised inside the
    block comes out as itself, not wrapped in a group by the websocket reader task's nursery.
    """
    import ssl

    from trio_websocket import wrap_client_stream

    host, port, resource, tls = _address(url)
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
    try:
        with trio.fail_after(timeout):
            tcp = await open_checked_stream(OutboundPolicy.for_url(url), host, port)
            if tls:
                stream = trio.SSLStream(
                    tcp, ssl.create_default_context(), server_hostname=host, https_compatible=True
                )
            else:
                stream = tcp
    except (trio.TooSlowError, OSError) as exc:
        raise relay_failure(url, exc) from None
    try:
        async with trio.open_nursery() as nursery:  # the websocket's reader task
            try:
                with trio.fail_after(timeout):
                    ws = await wrap_client_stream(
                        nursery,
                        stream,
                        host if port in (80, 443) else f"{host}:{port}",
                        resource,
                        max_message_size=wire.MAX_MESSAGE,
                    )
            except _errors() as exc:
                raise relay_failure(url, exc) from None
            if ws.closed is not None:
                raise BridgeError("cannot connect: the relay refused the websocket", code="unreachable")
            try:
                yield ws
            finally:
                with trio.move_on_after(timeout):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) == 1 and isinstance(leaves[0], Exception):
            raise leaves[0] from None  # one task failed: its own error, not a group of one
        raise
    finally:
        await trio.aclose_forcefully(stream)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]
