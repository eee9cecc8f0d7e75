"""The web port's limits: the ``[web]`` table of ``config.toml``, checked when it is read, and budgeted.

A node is one process: the web port, the gossip port, the DHT socket, the store and the bridges share
its descriptor limit (``RLIMIT_NOFILE``). Web clients are the cheapest to open in bulk, so the web
port may hold at most a quarter of that limit whatever the config says (``budgeted``); the rest stays
for gossip and the store (README, "The web page").
"""

from __future__ import annotations

import ipaddress
import resource
from dataclasses import dataclass, fields, replace
from typing import Any

from tidings.protocol.errors import TidingsError

__all__ = ["WebConfigError", "WebLimits", "client_key", "descriptor_limit"]

#: The share of the process's descriptor limit the web port may hold (1/4).
DESCRIPTOR_SHARE = 4


class WebConfigError(TidingsError):
    """A ``[web]`` value of ``config.toml`` with the wrong type or out of range."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="bad_config")


# key -> (type, minimum, maximum)
_RANGES: dict[str, tuple[type, float, float]] = {
    "max_connections": (int, 1, 100_000),
    "max_per_client": (int, 1, 100_000),
    "max_event_streams": (int, 0, 10_000),
    "max_event_streams_per_client": (int, 0, 10_000),
    "idle_timeout": (float, 0.1, 3600.0),
    "body_timeout": (float, 0.1, 3600.0),
    "write_timeout": (float, 0.1, 3600.0),
    "max_body": (int, 1024, 64 * 1024 * 1024),
    "request_rate": (float, 0.1, 100_000.0),
    "request_burst": (int, 1, 100_000),
    "max_pipelined": (int, 0, 1000),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class WebLimits:
    """What one web client, and all of them together, may hold (config ``[web]``; defaults are safe)."""

    max_connections: int = 128  # open web connections in all (also <= 1/4 of the descriptor limit)
    max_per_client: int = 32  # per client: an IPv4 address or an IPv6 /64
    max_event_streams: int = 32  # open GET /api/events streams in all
    max_event_streams_per_client: int = 8
    idle_timeout: float = 5.0  # seconds to send a request's headers, and a kept-alive connection's idle time
    body_timeout: float = 10.0  # seconds to send a request body
    write_timeout: float = 10.0  # seconds a client may take to accept each 64 KiB of a response
    max_body: int = 256 * 1024  # bytes of a JSON request body
    request_rate: float = 20.0  # requests a second per client; more wait (their connection is not read)
    request_burst: int = 40  # requests a client may make at once before the rate applies
    max_pipelined: int = 0  # answers in a row to requests sent before the previous answer; then paused

    def __post_init__(self) -> None:
        for f in fields(self):
            kind, low, high = _RANGES[f.name]
            value = getattr(self, f.name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not low <= value <= high or (kind is int and not isinstance(value, int)):
                what = "an integer" if kind is int else "a number"
                raise WebConfigError(f"[web] {f.name} must be {what} from {low:g} to {high:g}, not {value!r}")

    @classmethod
    def from_config(cls, table: Any, *, source: str = "config.toml") -> WebLimits:
        """The limits of a ``[web]`` table; WebConfigError names ``source``, the key and its range."""
        if table is None:
            return cls()
        if not isinstance(table, dict):
            raise WebConfigError(f"{source}: [web] must be a table")
        unknown = sorted(set(table) - set(_RANGES))
        if unknown:
            raise WebConfigError(
                f"{source}: [web] has no setting {unknown[0]!r} (known: {', '.join(_RANGES)})"
            )
        values = {k: float(v) if _RANGES[k][0] is float and type(v) is int else v for k, v in table.items()}
        try:
            return cls(**values)
        except WebConfigError as exc:
            raise WebConfigError(f"{source}: {exc.message}") from None

    def budgeted(self, descriptors: int) -> WebLimits:
        """These limits within a process allowed ``descriptors`` open files: the web port's share of it."""
        share = max(1, descriptors // DESCRIPTOR_SHARE)
        total = min(self.max_connections, share)
        streams = min(self.max_event_streams, total)
        return replace(
            self,
            max_connections=total,
            max_per_client=min(self.max_per_client, total),
            max_event_streams=streams,
            max_event_streams_per_client=min(self.max_event_streams_per_client, streams),
        )


def descriptor_limit() -> int:
    """The process's soft limit of open descriptors (``RLIMIT_NOFILE``; 2^20 when unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY or soft >= 1 << 20 else soft


def client_key(host: str) -> str:
    """Who a web client is for the per-client caps: its IPv4 address, or its IPv6 /64 (one host's share)."""
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address.ipv4_mapped or address) if isinstance(address, ipaddress.IPv6Address) else str(address)
