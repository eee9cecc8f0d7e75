"""Where bridges may connect (spec §14.6): no internal destinations unless the user named one.

Theory of operation. A bridge fetches what a remote names (an RSS server's redirect, a relay URL in
a setting), so a hostile remote could point the node at an address only the node can reach (its own
loopback services, the LAN, the cloud metadata address) and have the answer imported and published:
server-side request forgery. ``OutboundPolicy`` decides, per connection, after DNS resolution:

- an address is *public* when it is globally routable (``ipaddress`` ``is_global``, not multicast),
  after unwrapping IPv4 carried in IPv6 (mapped ``::ffff:0:0/96``, 6to4 ``2002::/16``, Teredo, NAT64
  ``64:ff9b::/96``); loopback, private, link-local, unspecified, multicast, shared (CGNAT) and reserved
  addresses are *internal*;
- a connection to a public address is allowed;
- a connection to an internal address is allowed only to the origin the user gave explicitly (the
  followed URL's host and port) and only when that host *is* internal as written: an IP literal of an
  internal address, or ``localhost``. A DNS name that resolves to an internal address is refused
  (its owner, not the user, chose that address), and so is every other internal host or port, which is
  where a redirect from the user's own internal server might lead;
- a name is resolved once per connection, every address it gives is checked (one internal address
  in the answer refuses the name), and the connection goes to a checked address, never to the name
  again: a DNS answer that changes between the check and the connection (rebinding) reaches nothing.

``open_checked_stream`` is the one way bridges open a connection (node/bridges/webfetch.py for every
HTTP hop, node/bridges/relay.py for Nostr relays). Refusals are ``BridgeError(code="forbidden_address")``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import trio
from tidings.node.bridges.base import BridgeError

__all__ = ["OutboundPolicy", "Resolver", "is_public", "open_checked_stream", "system_resolver"]

#: ``await resolve(host, port)`` -> the IP addresses (text) of ``host``.
Resolver = Callable[[str, int], Awaitable[list[str]]]

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LOCAL_NAMES = frozenset({"localhost", "localhost."})


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client's address; the server's is public by construction
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(address: str) -> bool:
    """Whether ``address`` (an IP literal) is globally routable; False for anything internal or invalid."""
    try:
        ip = ipaddress.ip_address(address.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None and not is_public(str(inner)):
            return False
    return bool(ip.is_global) and not ip.is_multicast


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives for ``host`` (an IP literal gives itself)."""
    try:
        infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
    except OSError as exc:
        raise BridgeError(f"{host}: cannot resolve: {exc}", code="unreachable") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _origin(url: str) -> tuple[str, int] | None:
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    default = {"http": 80, "https": 443, "ws": 80, "wss": 443}.get(parts.scheme, 0)
    return parts.hostname.lower(), parts.port or default


@dataclass(frozen=True, kw_only=True)
class OutboundPolicy:
    """The check above for one source: ``explicit`` is the user's own internal origin, if any."""

    explicit: tuple[str, int] | None = None
    resolve: Resolver = field(default=system_resolver, compare=False)

    @classmethod
    def for_url(cls, url: str, *, resolve: Resolver | None = None) -> OutboundPolicy:
        """The policy for fetching what the user followed at ``url``: its origin may be internal only
        when its host is written as an internal IP literal or ``localhost``."""
        origin = _origin(url)
        explicit = None
        if origin is not None:
            host = origin[0]
            if host in _LOCAL_NAMES or (_is_literal(host) and not is_public(host)):
                explicit = origin
        return cls(explicit=explicit, resolve=resolve or system_resolver)

    def allows_internal(self, host: str, port: int) -> bool:
        """Whether ``host:port`` is the user's explicit internal origin."""
        return self.explicit is not None and (host.lower().strip("[]"), port) == (
            self.explicit[0].strip("[]"),
            self.explicit[1],
        )

    async def addresses(self, host: str, port: int) -> list[str]:
        """The checked addresses to connect to for ``host:port``, or ``BridgeError("forbidden_address")``."""
        found = await self.resolve(host.strip("[]"), port)
        if not found:
            raise BridgeError(f"{host}: no address", code="unreachable")
        if self.allows_internal(host, port):
            return found
        internal = [a for a in found if not is_public(a)]
        if internal:
            shown = host if internal[0] == host.strip("[]") else f"{host} ({internal[0]})"
            raise BridgeError(
                f"refused to connect to the internal address {shown}:{port}: only the host and port "
                "of a followed URL written as an internal address may be internal",
                code="forbidden_address",
            )
        return found


_open_tcp = trio.open_tcp_stream  # here, so a test can see which address was dialled


async def open_checked_stream(policy: OutboundPolicy, host: str, port: int) -> trio.SocketStream:
    """A TCP connection to ``host:port`` at an address ``policy`` allows (resolved once, see above);
    ``OSError`` when none of them answers."""
    addresses = await policy.addresses(host, port)
    last: OSError | None = None
    for address in addresses:
        try:
            return await _open_tcp(address, port)
        except OSError as exc:
            last = exc
    assert last is not None
    raise last
