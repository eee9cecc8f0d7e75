"""Network addresses as the node handles them: ``HOST:PORT`` text, IP ranges and scopes.

Shared by the network stack, discovery, the web service and the bridges, so none of them has to
import another room for a helper.
"""

from __future__ import annotations

import ipaddress

__all__ = ["SCOPE_RANK", "address_range", "address_scope", "format_address", "host_key", "parse_address"]


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); raise ValueError with a clear message."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"not a HOST:PORT address: {text!r}")
    return host.strip("[]"), int(port)


def format_address(text: str) -> str:
    """``HOST:PORT`` as people and ``parse_address`` read it: an IPv6 host in brackets
    (``::1:7433`` -> ``[::1]:7433``, RFC 3986 §3.2.2), anything else unchanged."""
    host, port = parse_address(text)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def address_range(host: str) -> str:
    """The IP range a host belongs to for diversity: IPv4 /24, IPv6 /48 (a name is its own range)."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def host_key(host: str) -> str:
    """The unit of per-host limits (spec/protocol.md §12.5): an IPv4 address, or the /64 of an IPv6
    one (one machine or home network gets a whole /64, so its addresses are one host); an
    IPv4-mapped IPv6 address counts as its IPv4 address; a name is its own key."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


#: Address scopes for peer exchange, from the most local up.
SCOPE_RANK = {"loopback": 0, "private": 1, "public": 2}


def address_scope(host: str) -> str:
    """``loopback``, ``private`` (RFC 1918, link-local, unique local) or ``public``; ``bad`` for
    addresses nobody should be dialled at (unspecified, multicast, reserved). Raises ValueError for
    a name."""
    ip = ipaddress.ip_address(host.strip("[]"))
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        return "bad"
    if ip.is_private or ip.is_link_local:
        return "private"
    return "public"
