"""DHT datagram codec: round trips, byte-exact compatibility with rpcudp/kademlia, hostile input."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from typing import Any

import msgpack
import pytest
import umsgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kademlia.node import Node as StockNode
from kademlia.protocol import KademliaProtocol
from kademlia.storage import ForgetfulStorage
from kademlia.utils import digest as stock_digest
from tidings.protocol import LocalProtocolError, RemoteProtocolError
from tidings.protocol.dht_wire import (
    MAX_DATAGRAM,
    Announce,
    Contact,
    FindNode,
    FindValue,
    GetMembers,
    MembersReply,
    NodesReply,
    Ping,
    PingReply,
    Request,
    RequestDatagram,
    ResponseDatagram,
    Store,
    StoreReply,
    Stun,
    StunReply,
    ValueReply,
    decode_datagram,
    digest,
    encode_reply,
    encode_request,
    parse_reply,
)

FUZZ = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ME = bytes(range(20))
KEY = digest("some key")
MSG = bytes(range(100, 120))
C1 = Contact(node_id=b"\x01" * 20, host="127.0.0.2", port=8468)
C2 = Contact(node_id=b"\x02" * 20, host="::1", port=9000)

REQUESTS: list[Request] = [
    Ping(node_id=ME),
    Store(node_id=ME, key=KEY, value=b"\x00bytes"),
    Store(node_id=ME, key=KEY, value="text é"),
    Store(node_id=ME, key=KEY, value=-(2**40)),
    Store(node_id=ME, key=KEY, value=1.5),
    Store(node_id=ME, key=KEY, value=True),
    FindNode(node_id=ME, key=KEY),
    FindValue(node_id=ME, key=KEY),
    Stun(),
    Announce(node_id=ME, key=KEY, record=b"rec"),
    GetMembers(node_id=ME, key=KEY),
]


def rpcudp_request(msg_id: bytes, name: str, *args: Any) -> bytes:
    """What rpcudp's RPCProtocol.__getattr__ closure sends for ``proto.<name>(address, *args)``."""
    body: bytes = umsgpack.packb([name, args])
    return b"\x00" + msg_id + body


def rpcudp_response(msg_id: bytes, response: Any) -> bytes:
    """What rpcudp's _accept_request sends back."""
    body: bytes = umsgpack.packb(response)
    return b"\x01" + msg_id + body


def code_of(fn: Any) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        fn()
    return info.value.code


# -- round trips and byte-exact compatibility ---------------------------------------------------------


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: type(r).__name__)
def test_request_round_trip_and_same_bytes_as_rpcudp(request_: Request) -> None:
    data = encode_request(MSG, request_)
    assert data == rpcudp_request(MSG, request_.NAME, *request_.args())
    decoded = decode_datagram(data)
    assert decoded == RequestDatagram(msg_id=MSG, request=request_)
    # and the stock unpacker reads what we wrote as rpcudp expects: [name, [args...]]
    assert umsgpack.unpackb(data[21:]) == [request_.NAME, request_.args()]


REPLIES = [
    ("ping", PingReply(node_id=ME)),
    ("store", StoreReply(stored=True)),
    ("announce", StoreReply(stored=False)),
    ("find_node", NodesReply(contacts=(C1, C2))),
    ("find_node", NodesReply(contacts=())),
    ("find_value", ValueReply(value=b"v" * 300)),
    ("find_value", ValueReply(value=2**64 - 1)),
    ("find_value", NodesReply(contacts=(C1,))),
    ("get_members", MembersReply(records=(b"a", b"b"), contacts=(C2,))),
    ("stun", StunReply(host="127.0.0.9", port=1234)),
]


@pytest.mark.parametrize(("rpc", "reply"), REPLIES, ids=lambda x: x if isinstance(x, str) else "")
def test_reply_round_trip_and_same_bytes_as_rpcudp(rpc: str, reply: Any) -> None:
    data = encode_reply(MSG, reply)
    assert data == rpcudp_response(MSG, reply.body())
    decoded = decode_datagram(data)
    assert isinstance(decoded, ResponseDatagram) and decoded.msg_id == MSG
    assert parse_reply(rpc, decoded.body) == reply


def test_stock_reply_shapes_are_understood() -> None:
    """Exactly the Python values the stock handlers return, packed as rpcudp packs them."""
    stock_nodes = [StockNode(b"\x05" * 20, "127.0.0.3", 8468), StockNode(b"\x06" * 20, "127.0.0.4", 1)]
    find_node = list(map(tuple, stock_nodes))  # KademliaProtocol.rpc_find_node
    body = decode_datagram(rpcudp_response(MSG, find_node))
    assert isinstance(body, ResponseDatagram)
    assert parse_reply("find_node", body.body) == NodesReply(
        contacts=(
            Contact(node_id=b"\x05" * 20, host="127.0.0.3", port=8468),
            Contact(node_id=b"\x06" * 20, host="127.0.0.4", port=1),
        )
    )
    for value in (b"x", "x", 3, 2.5, False):
        body = decode_datagram(rpcudp_response(MSG, {"value": value}))
        assert isinstance(body, ResponseDatagram)
        assert parse_reply("find_value", body.body) == ValueReply(value=value)
    body = decode_datagram(rpcudp_response(MSG, ("127.0.0.5", 4000)))  # rpc_stun returns the sender tuple
    assert isinstance(body, ResponseDatagram)
    assert parse_reply("stun", body.body) == StunReply(host="127.0.0.5", port=4000)


def test_digest_is_the_packages() -> None:
    for key in ("hello", "@abc", b"\x00\xff", 12345):
        assert digest(key if isinstance(key, str | bytes) else str(key)) == stock_digest(key)


class _FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, address: tuple[str, int]) -> None:
        self.sent.append((data, address))


async def _stock_exchange() -> None:
    """Drive a real stock KademliaProtocol with our datagrams, and decode what it sends."""
    stock_id = stock_digest("stock")
    proto = KademliaProtocol(StockNode(stock_id), ForgetfulStorage(), 20)
    transport = _FakeTransport()
    proto.connection_made(transport)
    sender = ("127.0.0.2", 5000)

    async def ask(request: Request, rpc: str, source: tuple[str, int] = sender) -> Any:
        transport.sent.clear()
        proto.datagram_received(encode_request(MSG, request), source)
        for _ in range(5):
            await asyncio.sleep(0)
        # only the response to our message id (the stock node may also push stores to a new contact)
        [(data, address)] = [(d, a) for d, a in transport.sent if d[:21] == b"\x01" + MSG]
        assert address == source
        decoded = decode_datagram(data)
        assert isinstance(decoded, ResponseDatagram) and decoded.msg_id == MSG
        return parse_reply(rpc, decoded.body)

    assert await ask(Ping(node_id=ME), "ping") == PingReply(node_id=stock_id)
    assert await ask(Store(node_id=ME, key=KEY, value=b"hello"), "store") == StoreReply(stored=True)
    assert await ask(FindValue(node_id=ME, key=KEY), "find_value") == ValueReply(value=b"hello")
    other = Contact(node_id=b"\x07" * 20, host="127.0.0.7", port=7)
    assert await ask(Ping(node_id=other.node_id), "ping", other.address) == PingReply(node_id=stock_id)
    reply = await ask(FindNode(node_id=ME, key=KEY), "find_node")
    assert isinstance(reply, NodesReply) and other in reply.contacts
    # an extension RPC: the stock node stays silent (a caller falls back on timeout)
    transport.sent.clear()
    proto.datagram_received(encode_request(MSG, GetMembers(node_id=ME, key=KEY)), sender)
    for _ in range(5):
        await asyncio.sleep(0)
    assert transport.sent == []
    # and a request the stock node sends decodes with our codec
    future = proto.find_value(("127.0.0.9", 1), stock_id, KEY)
    data, _ = transport.sent[-1]
    decoded = decode_datagram(data)
    assert isinstance(decoded, RequestDatagram)
    assert decoded.request == FindValue(node_id=stock_id, key=KEY)
    for pending, timer in proto._outstanding.values():
        timer.cancel()
        pending.cancel()
    assert future.cancelled()
    await asyncio.sleep(0)


def test_a_real_stock_protocol_answers_our_datagrams() -> None:
    asyncio.run(_stock_exchange())


# -- strictness ---------------------------------------------------------------------------------------


def test_malformed_datagrams_are_refused_with_codes() -> None:
    assert code_of(lambda: decode_datagram(b"")) == "truncated"
    assert code_of(lambda: decode_datagram(b"\x00" + MSG)) == "truncated"
    assert code_of(lambda: decode_datagram(b"\x02" + MSG + b"\xc0")) == "bad_kind"
    assert code_of(lambda: decode_datagram(b"\x00" + MSG + b"\xc1")) == "malformed"
    assert code_of(lambda: decode_datagram(b"\x00" + MSG + b"\x92\xa4ping")) == "malformed"
    assert code_of(lambda: decode_datagram(b"\x00" + MSG + b"\xc0\xc0")) == "malformed"  # trailing bytes
    assert code_of(lambda: decode_datagram(b"\x00" + MSG + b"\xa3\xff\xfe\xfd")) == "malformed"  # utf-8
    assert code_of(lambda: decode_datagram(b"\x00" + MSG + b"\xd4\x01\x00")) == "bad_type"  # ext type
    assert code_of(lambda: decode_datagram(b"\x01" + MSG + b"\x00" * MAX_DATAGRAM)) == "too_large"
    assert code_of(lambda: decode_datagram(rpcudp_request(MSG, "ping", b"short"))) == "bad_id"
    assert code_of(lambda: decode_datagram(rpcudp_request(MSG, "ping"))) == "bad_arity"
    assert code_of(lambda: decode_datagram(rpcudp_request(MSG, "steal", b"x"))) == "unknown_rpc"
    assert code_of(lambda: decode_datagram(rpcudp_request(MSG, "store", ME, KEY, [1]))) == "bad_value"
    assert code_of(lambda: decode_datagram(b"\x00" + MSG + umsgpack.packb({"a": 1}))) == "bad_rpc"
    assert code_of(lambda: decode_datagram(b"\x01" + MSG + b"\x91" * 8000 + b"\xc0")) == "malformed"  # depth
    assert (
        code_of(lambda: decode_datagram(b"\x01" + MSG + b"\xdd\xff\xff\xff\xff")) == "malformed"
    )  # 4G items
    assert code_of(lambda: decode_datagram(b"\x01" + MSG + b"\x81\x91\xc0\xc0")) == "malformed"  # list as key


def test_malformed_replies_are_refused() -> None:
    bad = [
        ("ping", b"short"),
        ("store", 1),
        ("find_node", [[ME, "127.0.0.1"]]),
        ("find_node", [[ME, "localhost", 1]]),
        ("find_node", [[ME, "127.000.0.1", 1]]),
        ("find_node", [[ME, "127.0.0.1", 0]]),
        ("find_node", [[ME, "127.0.0.1", True]]),
        ("find_node", [[ME, "127.0.0.1", 1]] * 65),
        ("find_node", {"value": 1}),
        ("find_value", {"value": [1]}),
        ("find_value", {"value": None}),
        ("find_value", {"value": 1, "extra": 2}),
        ("get_members", {"members": [1], "nodes": []}),
        ("get_members", {"members": []}),
        ("stun", ["127.0.0.1"]),
    ]
    for rpc, body in bad:
        with pytest.raises(RemoteProtocolError):
            parse_reply(rpc, body)
    with pytest.raises(LocalProtocolError):
        parse_reply("nonsense", None)


def test_our_messages_refuse_bad_fields_and_oversize() -> None:
    with pytest.raises(LocalProtocolError):
        Ping(node_id=b"x")
    with pytest.raises(LocalProtocolError):
        Store(node_id=ME, key=KEY, value=None)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        Contact(node_id=ME, host="example.org", port=1)
    with pytest.raises(LocalProtocolError):
        encode_request(MSG, Store(node_id=ME, key=KEY, value=b"x" * 8190))
    with pytest.raises(LocalProtocolError):
        encode_request(b"short", Ping(node_id=ME))


# -- Hypothesis: garbage in, RemoteProtocolError out ------------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.binary(max_size=30),
    st.sampled_from([ME, KEY, "127.0.0.1", 8468, "ping", "store", "value", "find_node", "members", "nodes"]),
)
_values = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_scalars, inner, max_size=4)
)
_names = st.sampled_from(["ping", "store", "find_node", "find_value", "stun", "announce", "get_members"])
_RPCS = ["ping", "store", "find_node", "find_value", "stun", "announce", "get_members"]


def _survives(data: bytes) -> None:
    try:
        decoded = decode_datagram(data)
    except RemoteProtocolError:
        return
    if isinstance(decoded, ResponseDatagram):
        for rpc in _RPCS:
            try:
                parse_reply(rpc, decoded.body)
            except RemoteProtocolError:
                pass


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_remote_protocol_error(data: bytes) -> None:
    _survives(data)
    _survives(b"\x00" + MSG + data)
    _survives(b"\x01" + MSG + data)


@settings(FUZZ, max_examples=300)
@given(_names, st.lists(_values, max_size=4), st.booleans())
def test_structured_garbage_only_raises_remote_protocol_error(name: str, args: list[Any], flip: bool) -> None:
    try:
        body = msgpack.packb([name, args] if flip else args, use_bin_type=True)
    except (ValueError, TypeError, OverflowError):
        return
    _survives(b"\x00" + MSG + body)
    _survives(b"\x01" + MSG + body)


@FUZZ
@given(st.sampled_from([encode_request(MSG, r) for r in REQUESTS]), st.data())
def test_mutated_valid_datagrams_only_raise_remote_protocol_error(data: bytes, draw: Any) -> None:
    position = draw.draw(st.integers(min_value=0, max_value=len(data) - 1))
    byte = draw.draw(st.integers(min_value=0, max_value=255))
    cut = draw.draw(st.integers(min_value=0, max_value=len(data)))
    mutated = data[:position] + bytes([byte]) + data[position + 1 :]
    _survives(mutated)
    _survives(mutated[:cut])


def test_new_protocol_modules_load_no_io_modules() -> None:
    """STYLE.md 1: the DHT core imports no trio, socket, sqlite3 or asyncio."""
    script = textwrap.dedent(
        """
        import sys
        import tidings.protocol.dht_wire, tidings.protocol.routing, tidings.protocol.lookup
        import tidings.protocol.records
        names = ("trio", "socket", "sqlite3", "asyncio", "secrets")
        print(",".join(name for name in names if name in sys.modules))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_replies_are_cut_to_the_amplification_limit() -> None:
    from tidings.protocol.dht_wire import REPLY_FLOOR, encode_reply_within, reply_limit

    assert reply_limit(30) == REPLY_FLOOR and reply_limit(1000) == 3000
    contacts = tuple(
        Contact(node_id=bytes([i]) * 20, host=f"2001:db8:{i + 1:x}:ffff:ffff:ffff:ffff:ffff", port=65535)
        for i in range(20)
    )
    msg = b"m" * 20
    data = encode_reply_within(msg, NodesReply(contacts=contacts), 600)
    assert data is not None and len(data) <= 600
    kept = parse_reply("find_node", decode_datagram(data).body).contacts
    assert kept == contacts[: len(kept)] and len(kept) >= 8  # the farthest (last) are dropped
    members = MembersReply(records=(b"r" * 300,) * 4, contacts=contacts[:2])
    data = encode_reply_within(msg, members, 800)
    assert data is not None and len(data) <= 800
    assert parse_reply("get_members", decode_datagram(data).body) == MembersReply(
        records=(b"r" * 300,) * 2, contacts=contacts[:2]
    )
    assert encode_reply_within(msg, ValueReply(value=b"v" * 2000), 1280) is None
    assert encode_reply_within(msg, ValueReply(value=b"v" * 1000), 1280) == encode_reply(
        msg, ValueReply(value=b"v" * 1000)
    )
