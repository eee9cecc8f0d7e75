"""Protocol version 4: blob transfer (spec §12.1, §12.12): wire form, argument rules, version rules, and
one connection's request bookkeeping (``BlobRequests``)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tidings.protocol.blob_transfer import (
    BLOB_RANGE,
    CHUNK,
    MAX_ABANDONED,
    MAX_OPEN_REQUESTS,
    MAX_SENT_BLOBS,
    MAX_WANT_ITEMS,
    BlobData,
    BlobGet,
    BlobHave,
    BlobNone,
    BlobRequests,
    BlobWant,
)
from tidings.protocol.blobs import MAX_BLOB
from tidings.protocol.encoding import encode
from tidings.protocol.errors import LocalProtocolError, RemoteProtocolError
from tidings.protocol.replication import State

from tests.support.machines import assert_round_trip, pair

B = bytes(range(32))
C = bytes(range(1, 33))

EXAMPLES = [
    (BlobWant(ids=(B, C)), ["blob_want", [B, C]]),
    (BlobHave(items=((B, 14),)), ["blob_have", [[B, 14]]]),
    (BlobHave(items=()), ["blob_have", []]),
    (BlobGet(request=7, blob=B, offset=0, length=14), ["blob_get", 7, B, 0, 14]),
    (BlobData(request=7, offset=0, data=b"hello, tidings"), ["blob_data", 7, 0, b"hello, tidings"]),
    (
        BlobNone(request=7, code="not_found", reason="no such blob here"),
        ["blob_none", 7, "not_found", "no such blob here"],
    ),
]


@pytest.mark.parametrize(("event", "message"), EXAMPLES)
def test_each_message_has_its_wire_form_and_comes_back(event: Any, message: list[Any]) -> None:
    assert_round_trip(event, message)


def test_the_reference_bytes_of_a_blob_get() -> None:
    a, _ = pair()
    frame = a.send(BlobGet(request=1, blob=bytes(32), offset=0, length=BLOB_RANGE))[0]
    assert frame.hex(" ") == (
        "95 a8 62 6c 6f 62 5f 67 65 74 01 c4 20 " + " ".join(["00"] * 32) + " 00 ce 00 10 00 00"
    )


def test_a_full_chunk_fits_one_frame() -> None:
    a, b = pair()
    frames = a.send(BlobData(request=2**32 - 1, offset=MAX_BLOB - 1, data=bytes(CHUNK)))
    assert len(frames) == 1 and len(frames[0]) <= 65519
    assert b.receive(frames[0]) == BlobData(request=2**32 - 1, offset=MAX_BLOB - 1, data=bytes(CHUNK))


@pytest.mark.parametrize(("event", "message"), EXAMPLES)
@pytest.mark.parametrize("older", [(1,), (1, 2), (1, 2, 3)])
def test_version_4_messages_need_version_4(event: Any, message: list[Any], older: tuple[int, ...]) -> None:
    a, b = pair(version_b=older)
    assert a.version == max(older)
    with pytest.raises(LocalProtocolError) as info:
        a.send(event)
    assert info.value.code == "version"
    with pytest.raises(RemoteProtocolError) as remote:
        b.receive(encode(message))
    assert remote.value.code == "bad_message" and b.their_state is State.ERROR


@pytest.mark.parametrize(
    "message",
    [
        ["blob_want", []],
        ["blob_want", [B] * (MAX_WANT_ITEMS + 1)],
        ["blob_want", [B[:31]]],
        ["blob_want", B],
        ["blob_want", [B], 1],
        ["blob_have", [[B]]],
        ["blob_have", [[B, 0]]],
        ["blob_have", [[B, MAX_BLOB + 1]]],
        ["blob_have", [[B, True]]],
        ["blob_have", [[B, 1]] * (MAX_WANT_ITEMS + 1)],
        ["blob_get", -1, B, 0, 1],
        ["blob_get", 2**32, B, 0, 1],
        ["blob_get", 1, B, 0, 0],
        ["blob_get", 1, B, 0, BLOB_RANGE + 1],
        ["blob_get", 1, B, MAX_BLOB, 1],
        ["blob_get", 1, B, MAX_BLOB - 10, 11],
        ["blob_get", 1, "B", 0, 1],
        ["blob_get", 1, B, 0],
        ["blob_data", 1, 0, b""],
        ["blob_data", 1, 0, bytes(CHUNK + 1)],
        ["blob_data", 1, 0, "text"],
        ["blob_data", 1, -1, b"x"],
        ["blob_none", 1, "", "x"],
        ["blob_none", 1, "c" * 51, "x"],
        ["blob_none", 1, "busy", "r" * 201],
        ["blob_none", 1, "busy"],
    ],
)
def test_broken_arguments_are_bad_messages(message: list[Any]) -> None:
    _, b = pair()
    with pytest.raises(RemoteProtocolError) as info:
        b.receive(encode(message))
    assert info.value.code == "bad_message"


# -- one connection's requests ------------------------------------------------------------------------


def test_a_request_is_done_when_its_last_byte_arrives() -> None:
    asker = BlobRequests()
    get = asker.ask(B, 100, 10)
    assert (get.blob, get.offset, get.length) == (B, 100, 10) and asker.asking == 1
    first = asker.received(BlobData(request=get.request, offset=100, data=b"abcd"))
    assert first is not None and not first.done and first.blob == B
    last = asker.received(BlobData(request=get.request, offset=104, data=b"efghij"))
    assert last is not None and last.done and last.offset == 104 and asker.asking == 0
    with pytest.raises(RemoteProtocolError):  # the request is over: more data breaks §12.12
        asker.received(BlobData(request=get.request, offset=110, data=b"k"))


@pytest.mark.parametrize(
    ("offset", "data"),
    [(99, b"x"), (101, b"x"), (100, b"x" * 11)],
    ids=["before", "a gap", "past the range"],
)
def test_data_out_of_its_place_is_a_protocol_error(offset: int, data: bytes) -> None:
    asker = BlobRequests()
    get = asker.ask(B, 100, 10)
    with pytest.raises(RemoteProtocolError) as info:
        asker.received(BlobData(request=get.request, offset=offset, data=data))
    assert info.value.code == "bad_message"


def test_data_never_asked_for_is_a_protocol_error() -> None:
    with pytest.raises(RemoteProtocolError):
        BlobRequests().received(BlobData(request=0, offset=0, data=b"x"))
    with pytest.raises(RemoteProtocolError):
        BlobRequests().refused(BlobNone(request=0, code="busy"))


def test_what_is_in_flight_for_an_abandoned_request_is_dropped() -> None:
    asker = BlobRequests()
    get = asker.ask(B, 0, 10)
    asker.abandon(get.request)
    assert asker.asking == 0
    assert asker.received(BlobData(request=get.request, offset=0, data=b"x")) is None
    assert asker.refused(BlobNone(request=get.request, code="busy")) is None
    with pytest.raises(RemoteProtocolError):  # the blob_none ended it: nothing more may come
        asker.refused(BlobNone(request=get.request, code="busy"))


def test_abandoned_requests_are_remembered_within_a_bound() -> None:
    asker = BlobRequests()
    requests = [asker.ask(B, 0, 1).request for _ in range(MAX_ABANDONED + 1)]
    for request in requests:
        asker.abandon(request)
    assert asker.received(BlobData(request=requests[-1], offset=0, data=b"x")) is None
    with pytest.raises(RemoteProtocolError):
        asker.received(BlobData(request=requests[0], offset=0, data=b"x"))


def test_a_refusal_ends_the_request_and_names_its_blob() -> None:
    asker = BlobRequests()
    get = asker.ask(C, 0, 5)
    assert asker.refused(BlobNone(request=get.request, code="not_found")) == C
    assert asker.asking == 0


def test_a_server_takes_at_most_the_open_requests_allowed() -> None:
    server = BlobRequests()
    gets = [BlobGet(request=n, blob=B, offset=0, length=1) for n in range(MAX_OPEN_REQUESTS + 1)]
    assert [server.serving(get) for get in gets] == [True] * MAX_OPEN_REQUESTS + [False]
    with pytest.raises(RemoteProtocolError):  # a number that is open already
        server.serving(gets[0])
    server.served(0)
    assert server.serving(BlobGet(request=99, blob=B, offset=0, length=1))


@given(st.lists(st.integers(1, CHUNK), min_size=1, max_size=20))
def test_any_split_of_a_range_into_chunks_completes_it_once(sizes: list[int]) -> None:
    asker = BlobRequests()
    total = sum(sizes)
    get = asker.ask(B, 5, total)
    offset, done = 5, []
    for size in sizes:
        got = asker.received(BlobData(request=get.request, offset=offset, data=bytes(size)))
        assert got is not None
        done.append(got.done)
        offset += size
    assert done == [False] * (len(sizes) - 1) + [True]


def test_bytes_asked_for_again_are_counted() -> None:
    server = BlobRequests()

    def get(offset: int, length: int, blob: bytes = B) -> BlobGet:
        return BlobGet(request=0, blob=blob, offset=offset, length=length)

    assert server.resent(get(0, 100)) == 0
    assert server.resent(get(100, 100)) == 0  # the next range: new bytes
    assert server.resent(get(50, 100)) == 100
    assert server.resent(get(0, 10, C)) == 0  # another blob
    assert server.resent(get(150, 100)) == 50
    for n in range(MAX_SENT_BLOBS):
        server.resent(get(0, 1, n.to_bytes(32, "big")))
    assert server.resent(get(0, 100)) == 0  # forgotten past the bound
