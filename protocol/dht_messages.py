"""Messages of the DHT (spec/protocol.md §13): contacts, requests and replies, sans-IO.

Each is a frozen, slotted, keyword-only dataclass that validates its fields in its constructor, so an
invalid message cannot exist: a request knows its procedure ``NAME`` and its wire ``args()``, a reply
its wire ``body()``. How they travel in datagrams, and how bytes from a peer become them, is
``dht_wire``. Constructors raise ``LocalProtocolError``; the decoder turns that into
``RemoteProtocolError`` when the fields came from a peer.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, ClassVar

from .errors import LocalProtocolError

__all__ = [
    "ID_SIZE",
    "MAX_BODY",
    "MAX_CONTACTS",
    "MAX_MEMBERS",
    "MSG_ID_SIZE",
    "Announce",
    "Contact",
    "FindNode",
    "FindValue",
    "GetMembers",
    "MembersReply",
    "NodesReply",
    "Ping",
    "PingReply",
    "Reply",
    "Request",
    "Store",
    "StoreReply",
    "Stun",
    "StunReply",
    "Value",
    "ValueReply",
]

ID_SIZE = 20
MSG_ID_SIZE = 20
#: rpcudp refuses to send a request body larger than 8 KiB; we hold every body (both ways) to it.
MAX_BODY = 8192
#: Most contacts accepted in one reply (a stock node sends at most its k, 20 by default).
MAX_CONTACTS = 64
#: Most member records in one ``get_members`` reply.
MAX_MEMBERS = 64
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1

#: What ``store`` may carry: the scalar types the ``kademlia`` package accepts (``check_dht_value_type``).
Value = bool | int | float | str | bytes


def _check_id(value: object, what: str) -> None:
    if type(value) is not bytes or len(value) != ID_SIZE:
        raise LocalProtocolError(f"{what} must be {ID_SIZE} bytes", code="bad_id")


def _check_value(value: object) -> None:
    if type(value) in (bool, float):
        return
    if type(value) is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise LocalProtocolError("integer value out of range", code="bad_value")
        return
    if type(value) is str or type(value) is bytes:
        if len(value) > MAX_BODY:
            raise LocalProtocolError("value too large", code="too_large")
        return
    raise LocalProtocolError("a value is bool, int, float, text or bytes", code="bad_value")


def _check_host(host: object) -> None:
    if type(host) is not str or not 2 <= len(host) <= 45:
        raise LocalProtocolError("host must be an IP address literal", code="bad_address")
    try:
        canonical = str(ipaddress.ip_address(host))
    except ValueError:
        raise LocalProtocolError("host must be an IP address literal", code="bad_address") from None
    if canonical != host:  # one spelling per address, so per-IP limits cannot be dodged
        raise LocalProtocolError("host must be in canonical form", code="bad_address")


def _check_port(port: object) -> None:
    if type(port) is not int or not 1 <= port <= 65535:
        raise LocalProtocolError("port must be 1..65535", code="bad_address")


@dataclass(frozen=True, slots=True, kw_only=True)
class Contact:
    """A DHT node: its 160-bit id and UDP address (``[id, ip, port]`` on the wire)."""

    node_id: bytes
    host: str
    port: int

    def __post_init__(self) -> None:
        _check_id(self.node_id, "node id")
        _check_host(self.host)
        _check_port(self.port)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def to_wire(self) -> list[Any]:
        return [self.node_id, self.host, self.port]


# -- requests -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping:
    NAME: ClassVar[str] = "ping"
    node_id: bytes

    def __post_init__(self) -> None:
        _check_id(self.node_id, "node id")

    def args(self) -> list[Any]:
        return [self.node_id]


@dataclass(frozen=True, slots=True, kw_only=True)
class Store:
    NAME: ClassVar[str] = "store"
    node_id: bytes
    key: bytes
    value: Value

    def __post_init__(self) -> None:
        _check_id(self.node_id, "node id")
        _check_id(self.key, "key")
        _check_value(self.value)

    def args(self) -> list[Any]:
        return [self.node_id, self.key, self.value]


@dataclass(frozen=True, slots=True, kw_only=True)
class _KeyQuery:
    """A request naming the sender and one key: find_node, find_value, get_members."""

    NAME: ClassVar[str] = ""
    node_id: bytes
    key: bytes

    def __post_init__(self) -> None:
        _check_id(self.node_id, "node id")
        _check_id(self.key, "key")

    def args(self) -> list[Any]:
        return [self.node_id, self.key]


@dataclass(frozen=True, slots=True, kw_only=True)
class FindNode(_KeyQuery):
    NAME: ClassVar[str] = "find_node"


@dataclass(frozen=True, slots=True, kw_only=True)
class FindValue(_KeyQuery):
    NAME: ClassVar[str] = "find_value"


@dataclass(frozen=True, slots=True, kw_only=True)
class Stun:
    NAME: ClassVar[str] = "stun"

    def args(self) -> list[Any]:
        return []


@dataclass(frozen=True, slots=True, kw_only=True)
class Announce:
    """Extension: store a signed swarm member record (several members per key)."""

    NAME: ClassVar[str] = "announce"
    node_id: bytes
    key: bytes
    record: bytes

    def __post_init__(self) -> None:
        _check_id(self.node_id, "node id")
        _check_id(self.key, "key")
        if type(self.record) is not bytes or len(self.record) > MAX_BODY:
            raise LocalProtocolError("a record is bytes of bounded size", code="bad_value")

    def args(self) -> list[Any]:
        return [self.node_id, self.key, self.record]


@dataclass(frozen=True, slots=True, kw_only=True)
class GetMembers(_KeyQuery):
    """Extension: the member records held under ``key``, and the closest nodes to it."""

    NAME: ClassVar[str] = "get_members"


Request = Ping | Store | FindNode | FindValue | Stun | Announce | GetMembers

# -- replies ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PingReply:
    node_id: bytes

    def __post_init__(self) -> None:
        _check_id(self.node_id, "node id")

    def body(self) -> Any:
        return self.node_id


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreReply:
    stored: bool

    def __post_init__(self) -> None:
        if type(self.stored) is not bool:
            raise LocalProtocolError("stored is a bool", code="bad_value")

    def body(self) -> Any:
        return self.stored


def _check_contacts(contacts: object) -> None:
    if type(contacts) is not tuple or len(contacts) > MAX_CONTACTS:
        raise LocalProtocolError(f"contacts is a tuple of at most {MAX_CONTACTS}", code="bad_value")
    if not all(isinstance(c, Contact) for c in contacts):
        raise LocalProtocolError("contacts holds Contact objects", code="bad_value")


@dataclass(frozen=True, slots=True, kw_only=True)
class NodesReply:
    """Reply of ``find_node``, and of ``find_value`` when the responder lacks the value."""

    contacts: tuple[Contact, ...]

    def __post_init__(self) -> None:
        _check_contacts(self.contacts)

    def body(self) -> Any:
        return [c.to_wire() for c in self.contacts]


@dataclass(frozen=True, slots=True, kw_only=True)
class ValueReply:
    value: Value

    def __post_init__(self) -> None:
        _check_value(self.value)

    def body(self) -> Any:
        return {"value": self.value}


@dataclass(frozen=True, slots=True, kw_only=True)
class MembersReply:
    records: tuple[bytes, ...]
    contacts: tuple[Contact, ...]

    def __post_init__(self) -> None:
        _check_contacts(self.contacts)
        if type(self.records) is not tuple or len(self.records) > MAX_MEMBERS:
            raise LocalProtocolError(f"records is a tuple of at most {MAX_MEMBERS}", code="bad_value")
        if not all(type(r) is bytes and len(r) <= MAX_BODY for r in self.records):
            raise LocalProtocolError("records holds bytes", code="bad_value")

    def body(self) -> Any:
        return {"members": list(self.records), "nodes": [c.to_wire() for c in self.contacts]}


@dataclass(frozen=True, slots=True, kw_only=True)
class StunReply:
    host: str
    port: int

    def __post_init__(self) -> None:
        _check_host(self.host)
        _check_port(self.port)

    def body(self) -> Any:
        return [self.host, self.port]


Reply = PingReply | StoreReply | NodesReply | ValueReply | MembersReply | StunReply
