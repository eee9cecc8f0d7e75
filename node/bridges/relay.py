"""A Nostr relay client over trio-websocket (NIP-01): publish events, fetch stored events.

Each call opens one connection, does its work within ``timeout`` seconds and closes it; failures come
out as ``BridgeError`` (``unreachable``, ``relay_error``). Events from the relay are parsed and
verified (``protocol.nostr``); invalid ones are counted in ``Fetched.rejected``, never returned.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

import trio
from tidings.protocol import ProtocolError
from tidings.protocol import nostr as wire

from .base import BridgeError

__all__ = ["Fetched", "check_relay_url", "fetch_events", "publish_events"]

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


def _connect(url: str) -> Any:
    from trio_websocket import open_websocket_url

    return open_websocket_url(url, max_message_size=wire.MAX_MESSAGE)


def _failure(url: str, exc: BaseException) -> BridgeError:
    from trio_websocket import ConnectionClosed, HandshakeError

    if isinstance(exc, trio.TooSlowError):
        return BridgeError(f"{url}: the relay did not answer in time", code="unreachable")
    if isinstance(exc, HandshakeError | OSError):
        return BridgeError(f"{url}: cannot connect: {exc}", code="unreachable")
    if isinstance(exc, ConnectionClosed):
        return BridgeError(f"{url}: the relay closed the connection", code="relay_error")
    return BridgeError(f"{url}: {type(exc).__name__}: {exc}", code="relay_error")


async def publish_events(
    url: str, events: list[wire.Event], *, timeout: float
) -> dict[str, tuple[bool, str]]:
    """Send each event and wait for its ``OK``: event id -> (accepted, message).

    A relay that says ``duplicate:`` holds the event already: that counts as accepted.
    """
    from trio_websocket import ConnectionClosed, HandshakeError

    results: dict[str, tuple[bool, str]] = {}
    try:
        with trio.fail_after(timeout):
            async with _connect(url) as ws:
                for event in events:
                    await ws.send_message(wire.event_message(event))
                    while event.id not in results:
                        try:
                            msg = _parse(await ws.get_message(), url)
                        except ProtocolError as exc:
                            log.warning("relay %s sent a malformed message: %s", url, exc)
                            continue
                        if isinstance(msg, wire.Ok):
                            accepted = msg.accepted or msg.message.startswith("duplicate:")
                            results[msg.event_id] = (accepted, msg.message)
                        elif isinstance(msg, wire.Notice):
                            log.info("relay %s: notice: %s", url, msg.message)
    except (trio.TooSlowError, HandshakeError, ConnectionClosed, OSError) as exc:
        if not results:
            raise _failure(url, exc) from None
        log.warning("relay %s: stopped after %d events: %s", url, len(results), _failure(url, exc))
    return results


@dataclass
class Fetched:
    events: list[wire.Event] = field(default_factory=list)
    rejected: int = 0
    problems: list[str] = field(default_factory=list)


async def fetch_events(url: str, filters: list[dict[str, Any]], *, timeout: float) -> Fetched:
    """Events matching ``filters`` stored by the relay (until ``EOSE``), verified; invalid ones rejected."""
    from trio_websocket import ConnectionClosed, HandshakeError

    out = Fetched()
    sub = "tidings-" + secrets.token_hex(4)
    seen: set[str] = set()
    try:
        with trio.fail_after(timeout):
            async with _connect(url) as ws:
                await ws.send_message(wire.req_message(sub, *filters))
                while True:
                    try:
                        msg = _parse(await ws.get_message(), url)
                    except ProtocolError as exc:
                        out.rejected += 1
                        out.problems.append(f"{exc.code}: {exc.args[0]}")
                        continue
                    if isinstance(msg, wire.Eose | wire.Closed) and msg.subscription == sub:
                        break
                    if isinstance(msg, wire.RelayEvent) and msg.subscription == sub:
                        try:
                            wire.verify_event(msg.event)
                        except ProtocolError as exc:
                            out.rejected += 1
                            out.problems.append(f"{exc.code}: event {msg.event.id}")
                            log.warning("relay %s sent an invalid event %s: %s", url, msg.event.id, exc)
                            continue
                        if msg.event.id not in seen:
                            seen.add(msg.event.id)
                            out.events.append(msg.event)
                await ws.send_message(wire.close_message(sub))
    except (trio.TooSlowError, HandshakeError, ConnectionClosed, OSError) as exc:
        raise _failure(url, exc) from None
    return out


def _parse(text: str | bytes, url: str) -> wire.RelayMessage | None:
    return wire.parse_relay_message(text)
