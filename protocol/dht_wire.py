"""Datagram codec of the DHT, wire-compatible with the ``kademlia`` PyPI package (2.2.x, rpcudp 5.x).

Theory of operation. One UDP datagram carries one message (docs: REFERENCES.md, *The kademlia package*):

    byte 0      0x00 request, 0x01 response
    bytes 1-20  message id (random; a response echoes the id of its request)
    bytes 21-   msgpack body; a request body is ``[name, [args...]]``, a response body is the bare
                return value of the remote procedure

rpcudp packs with ``umsgpack.packb``, which writes the same bytes as ``msgpack.packb(use_bin_type=True)``
for the types used here (bytes as ``bin``, text as ``str``, tuples as arrays, smallest int forms), and
reads every array back as a list. A response does not name its procedure: only the caller knows which
request an id belongs to, so decoding is two steps: ``decode_datagram`` (framing, msgpack, request
shapes) and ``parse_reply(rpc, body)`` (the reply shape expected for that procedure).

Procedures (the implicit first argument of the package, the sender's address, is the UDP source):

    ping(nodeid)                 -> nodeid of the responder
    store(nodeid, key, value)    -> True when stored (Tidings answers False when it refuses)
    find_node(nodeid, key)       -> [[id, ip, port], ...]
    find_value(nodeid, key)      -> {"value": v} or the find_node list
    stun()                       -> [ip, port] of the requester as the responder sees it
    announce(nodeid, key, rec)   -> bool                (Tidings extension: a signed swarm member record)
    get_members(nodeid, key)     -> {"members": [rec, ...], "nodes": [[id, ip, port], ...]}  (extension)

A stock node ignores unknown procedures (no reply), so callers fall back to ``store``/``find_value`` when
an extension times out. Ids and keys are 20 bytes (SHA-1 digests, ``digest``). Values of ``store`` are the
scalars the package accepts (bool, int, float, text, bytes); Tidings records are bytes.

The messages themselves (``Contact``, the requests and replies, validated in their constructors) are
in ``dht_messages`` and re-exported here. Decoding is strict and bounded: anything malformed, oversized or of the wrong type raises
``RemoteProtocolError`` (with a ``code``) and never any other exception.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import msgpack

from .dht_messages import (
    ID_SIZE,
    MAX_BODY,
    MAX_CONTACTS,
    MAX_MEMBERS,
    MSG_ID_SIZE,
    Announce,
    Contact,
    FindNode,
    FindValue,
    GetMembers,
    MembersReply,
    NodesReply,
    Ping,
    PingReply,
    Reply,
    Request,
    Store,
    StoreReply,
    Stun,
    StunReply,
    Value,
    ValueReply,
)
from .errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "ID_SIZE",
    "MAX_BODY",
    "MAX_CONTACTS",
    "MAX_DATAGRAM",
    "MAX_MEMBERS",
    "MSG_ID_SIZE",
    "REPLY_FACTOR",
    "REPLY_FLOOR",
    "REQUEST",
    "RESPONSE",
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
    "RequestDatagram",
    "ResponseDatagram",
    "Store",
    "StoreReply",
    "Stun",
    "StunReply",
    "Value",
    "ValueReply",
    "decode_datagram",
    "digest",
    "encode_reply",
    "encode_reply_within",
    "encode_request",
    "parse_reply",
    "peek_datagram",
    "reply_limit",
]

REQUEST = 0x00
RESPONSE = 0x01
MAX_DATAGRAM = 1 + MSG_ID_SIZE + MAX_BODY
_HEADER = 1 + MSG_ID_SIZE


def digest(key: str | bytes) -> bytes:
    """The 20-byte key of ``key``, as the ``kademlia`` package computes it (``kademlia.utils.digest``)."""
    data = key if isinstance(key, bytes) else str(key).encode("utf-8")
    return hashlib.sha1(data).digest()


def _bad(message: str, code: str = "bad_rpc") -> RemoteProtocolError:
    return RemoteProtocolError(message, code=code)


# -- datagrams ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestDatagram:
    msg_id: bytes
    request: Request


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseDatagram:
    """A response whose body is not interpreted yet: pass ``body`` to ``parse_reply``."""

    msg_id: bytes
    body: Any


def _check_msg_id(msg_id: object) -> None:
    if type(msg_id) is not bytes or len(msg_id) != MSG_ID_SIZE:
        raise LocalProtocolError(f"a message id is {MSG_ID_SIZE} bytes", code="bad_msg_id")


def _pack(kind: int, msg_id: bytes, body: Any) -> bytes:
    _check_msg_id(msg_id)
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    if len(packed) > MAX_BODY:
        raise LocalProtocolError(f"body larger than {MAX_BODY} bytes", code="too_large")
    return bytes((kind,)) + msg_id + packed


def encode_request(msg_id: bytes, request: Request) -> bytes:
    """The datagram for ``request``: what rpcudp sends for ``protocol.<name>(address, *args)``.

    ``msg_id`` must be unpredictable (the adapter draws it from ``secrets``), since it is all that
    ties a response to its request.
    """
    return _pack(REQUEST, msg_id, [request.NAME, request.args()])


def encode_reply(msg_id: bytes, reply: Reply) -> bytes:
    """The response datagram carrying ``reply`` for the request ``msg_id``."""
    return _pack(RESPONSE, msg_id, reply.body())


#: Anti-amplification (§13.1): a reply datagram is at most max(REPLY_FLOOR, REPLY_FACTOR x the request
#: datagram). The floor (the IPv6 minimum MTU) fits every reply a stock requester expects: k IPv4
#: contacts or one record. The format leaves no room to pad a request, so the factor only matters for
#: requests that are big anyway.
REPLY_FLOOR = 1280
REPLY_FACTOR = 3


def reply_limit(request_size: int) -> int:
    """The largest reply datagram a request datagram of ``request_size`` bytes may get (§13.1)."""
    return max(REPLY_FLOOR, REPLY_FACTOR * request_size)


def encode_reply_within(msg_id: bytes, reply: Reply, limit: int) -> bytes | None:
    """``encode_reply``, cut to at most ``limit`` bytes, or None when it cannot be.

    A node list loses its farthest contacts (the list is closest first), a members reply its last
    records and then its farthest contacts; any other reply that does not fit is None.
    """
    data = encode_reply(msg_id, reply)
    while len(data) > limit:
        if isinstance(reply, NodesReply) and reply.contacts:
            reply = NodesReply(contacts=reply.contacts[:-1])
        elif isinstance(reply, MembersReply) and (reply.records or reply.contacts):
            if reply.records:
                reply = MembersReply(records=reply.records[:-1], contacts=reply.contacts)
            else:
                reply = MembersReply(records=(), contacts=reply.contacts[:-1])
        else:
            return None
        data = encode_reply(msg_id, reply)
    return data


def _refuse_ext(code: int, data: bytes) -> Any:
    raise _bad("extension types are not allowed", "bad_type")


def _unpack(body: bytes) -> Any:
    try:
        return msgpack.unpackb(
            body, raw=False, use_list=True, strict_map_key=False, ext_hook=_refuse_ext, timestamp=0
        )
    except RemoteProtocolError:
        raise
    except (ValueError, TypeError, OverflowError, RecursionError, msgpack.UnpackException) as exc:
        # UnicodeDecodeError, ExtraData, FormatError and StackError are ValueErrors; an unhashable map
        # key is a TypeError.
        raise _bad(f"malformed msgpack body: {type(exc).__name__}", "malformed") from None


def _request_from(name: str, args: list[Any]) -> Request:
    if name == "ping" and len(args) == 1:
        return Ping(node_id=args[0])
    if name == "store" and len(args) == 3:
        return Store(node_id=args[0], key=args[1], value=args[2])
    if name == "find_node" and len(args) == 2:
        return FindNode(node_id=args[0], key=args[1])
    if name == "find_value" and len(args) == 2:
        return FindValue(node_id=args[0], key=args[1])
    if name == "stun" and not args:
        return Stun()
    if name == "announce" and len(args) == 3:
        return Announce(node_id=args[0], key=args[1], record=args[2])
    if name == "get_members" and len(args) == 2:
        return GetMembers(node_id=args[0], key=args[1])
    if name in _REQUEST_NAMES:
        raise _bad(f"wrong number of arguments for {name}", "bad_arity")
    raise _bad("unknown procedure", "unknown_rpc")


_REQUEST_NAMES = frozenset(c.NAME for c in (Ping, Store, FindNode, FindValue, Stun, Announce, GetMembers))


def peek_datagram(data: bytes, *, max_size: int = MAX_DATAGRAM) -> tuple[int, bytes]:
    """The kind (``REQUEST`` or ``RESPONSE``) and message id of a datagram, its body not decoded.

    A receiver charges a datagram by this cheap look (and its source address) before it decodes the
    body (spec/protocol.md §13.6), so a flood of undecodable datagrams costs it no msgpack parsing.
    Raises ``RemoteProtocolError`` (codes ``too_large``, ``truncated``, ``bad_kind``) and nothing else.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _bad("expected bytes", "bad_type")
    if len(data) > max_size:
        raise _bad(f"datagram larger than {max_size} bytes", "too_large")
    if len(data) <= _HEADER:  # rpcudp also drops datagrams shorter than 22 bytes
        raise _bad("datagram too short", "truncated")
    if data[0] not in (REQUEST, RESPONSE):
        raise _bad("unknown datagram kind", "bad_kind")
    return data[0], bytes(data[1:_HEADER])


def decode_datagram(data: bytes, *, max_size: int = MAX_DATAGRAM) -> RequestDatagram | ResponseDatagram:
    """Split a datagram into its kind, message id and body; parse request bodies fully.

    Raises ``RemoteProtocolError`` (codes ``too_large``, ``truncated``, ``bad_kind``, ``malformed``,
    ``bad_type``, ``bad_rpc``, ``bad_arity``, ``unknown_rpc``, ``bad_id``, ``bad_value``) and nothing else.
    A stock node ignores ``unknown_rpc`` requests silently; so should the caller.
    """
    kind, msg_id = peek_datagram(data, max_size=max_size)
    body = _unpack(bytes(data[_HEADER:]))
    if kind == RESPONSE:
        return ResponseDatagram(msg_id=msg_id, body=body)
    if type(body) is not list or len(body) != 2 or type(body[0]) is not str or type(body[1]) is not list:
        raise _bad("a request body is [name, [args...]]")
    try:
        request = _request_from(body[0], body[1])
    except LocalProtocolError as exc:  # a field failed its constructor's checks: the peer's fault
        raise _bad(str(exc.args[0]), exc.code) from None
    return RequestDatagram(msg_id=msg_id, request=request)


def _contact_from(item: Any) -> Contact:
    if type(item) is not list or len(item) != 3:
        raise _bad("a contact is [id, ip, port]")
    return Contact(node_id=item[0], host=item[1], port=item[2])


def _contacts_from(items: Any) -> tuple[Contact, ...]:
    if type(items) is not list:
        raise _bad("a node list is an array")
    if len(items) > MAX_CONTACTS:
        raise _bad("too many contacts", "too_large")
    return tuple(_contact_from(item) for item in items)


def _parse(rpc: str, body: Any) -> Reply:
    if rpc == "ping":
        return PingReply(node_id=body)
    if rpc in ("store", "announce"):
        return StoreReply(stored=body)
    if rpc == "find_node":
        return NodesReply(contacts=_contacts_from(body))
    if rpc == "find_value":
        if type(body) is dict:
            if list(body) != ["value"]:
                raise _bad("a value reply is {'value': v}")
            return ValueReply(value=body["value"])
        return NodesReply(contacts=_contacts_from(body))
    if rpc == "get_members":
        if type(body) is not dict or set(body) != {"members", "nodes"}:
            raise _bad("a members reply is {'members': [...], 'nodes': [...]}")
        records = body["members"]
        if type(records) is not list or len(records) > MAX_MEMBERS:
            raise _bad("members is an array of bounded size")
        return MembersReply(records=tuple(records), contacts=_contacts_from(body["nodes"]))
    if rpc == "stun":
        if type(body) is not list or len(body) != 2:
            raise _bad("a stun reply is [ip, port]")
        return StunReply(host=body[0], port=body[1])
    raise LocalProtocolError(f"no procedure named {rpc!r}", code="unknown_rpc")


def parse_reply(rpc: str, body: Any) -> Reply:
    """Interpret a response ``body`` as the reply to the procedure ``rpc`` (a request's ``NAME``).

    Raises ``RemoteProtocolError`` when the body does not have that procedure's reply shape, and
    ``LocalProtocolError`` only if ``rpc`` names no procedure.
    """
    if rpc not in _REQUEST_NAMES:
        raise LocalProtocolError(f"no procedure named {rpc!r}", code="unknown_rpc")
    try:
        return _parse(rpc, body)
    except RemoteProtocolError:
        raise
    except LocalProtocolError as exc:
        raise _bad(str(exc.args[0]), exc.code) from None
