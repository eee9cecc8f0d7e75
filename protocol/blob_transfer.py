"""Blob transfer (spec/protocol.md §12.12, protocol version 4): the messages, and one connection's requests.

The messages are events like those of ``reach_events`` (frozen, slotted, keyword-only, checking their
fields in their constructors, ``WireMessage`` for the wire form)::

    blob_want  [ids]                       the sender wants these blobs: which do you hold?
    blob_have  [[id, size], ...]           the answer to one blob_want: those the sender holds
    blob_get   request, id, offset, length send me bytes offset .. offset+length of blob id
    blob_data  request, offset, data       the next bytes of an open request, in order
    blob_none  request, code, reason       the request is refused or ends early; no more data for it

Theory of operation. ``BlobRequests`` is one connection's bookkeeping, sans-IO like ``Replication``,
for both roles. As the asker it numbers requests and checks every ``blob_data`` against what was asked
(``received``): data for a request that is not open, at another offset than the next one, or past the
asked range breaks §12.12 (``RemoteProtocolError``, ``bad_message``); a request is done when its last
byte arrived. A request the asker gave up on (its deadline passed) is ``abandoned``: data and
``blob_none`` still in flight for it are dropped quietly, for a bounded number of requests. As the
server it counts the peer's open requests (``serving``): at most ``MAX_OPEN_REQUESTS`` at a time, a
further ``blob_get`` is answered ``blob_none`` ``busy``, not served; and it remembers which bytes of
which blobs went out on the connection (``resent``), so bytes asked for again are paid for::

    asker:  (none) --ask--> OPEN --received (all bytes)--> DONE
                            OPEN --blob_none received---> DONE
                            OPEN --abandon------------> ABANDONED --data or blob_none--> (dropped)
    server: (none) --blob_get accepted--> SERVING --served (last data or blob_none sent)--> (none)

What a node holds, serves and keeps is the node's business; this class only keeps both sides honest
about the requests themselves.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

from .blobs import MAX_BLOB
from .errors import LocalProtocolError, RemoteProtocolError
from .identity import HASH_SIZE
from .reach_events import WireMessage

__all__ = [
    "BLOB_EVENTS",
    "BLOB_RANGE",
    "CHUNK",
    "MAX_ABANDONED",
    "MAX_OPEN_REQUESTS",
    "MAX_SENT_BLOBS",
    "MAX_WANT_ITEMS",
    "BlobData",
    "BlobEvent",
    "BlobGet",
    "BlobHave",
    "BlobNone",
    "BlobRequests",
    "BlobWant",
    "Received",
]

#: Most ids in one ``blob_want`` and items in one ``blob_have``.
MAX_WANT_ITEMS = 64
#: Most bytes one ``blob_get`` asks for (1 MiB), and most in one ``blob_data`` (fits a frame, §11.4).
BLOB_RANGE = 1 << 20
CHUNK = 64512
#: Most requests a peer may have open on one connection; and requests an asker remembers as abandoned.
MAX_OPEN_REQUESTS = 4
MAX_ABANDONED = 64
#: Blobs whose sent ranges a connection remembers (for the work budget).
MAX_SENT_BLOBS = 256
_MAX_REQUEST = 2**32 - 1
_MAX_CODE = 50
_MAX_REASON = 200


def _bad(message: str) -> LocalProtocolError:
    return LocalProtocolError(message, code="bad_message")


def _check_id(value: object, what: str) -> None:
    if type(value) is not bytes or len(value) != HASH_SIZE:
        raise _bad(f"{what} must be a {HASH_SIZE}-byte blob id")


def _check_int(value: object, low: int, high: int, what: str) -> None:
    if type(value) is not int or not low <= value <= high:
        raise _bad(f"{what} must be an integer from {low} to {high}")


def _as_tuple(event: object, name: str, value: object, most: int) -> tuple[Any, ...]:
    if type(value) is not tuple:
        if not isinstance(value, list):
            raise _bad(f"{name} is an array")
        value = tuple(value)
        object.__setattr__(event, name, value)
    if len(value) > most:
        raise _bad(f"{name} has at most {most} items")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class BlobWant(WireMessage):
    """``blob_want``: the sender wants these blobs; the receiver answers with one ``blob_have``."""

    NAME: ClassVar[str] = "blob_want"
    ids: tuple[bytes, ...]

    def __post_init__(self) -> None:
        ids = _as_tuple(self, "ids", self.ids, MAX_WANT_ITEMS)
        if not ids:
            raise _bad("blob_want names at least one blob")
        for blob in ids:
            _check_id(blob, "blob_want id")


@dataclass(frozen=True, slots=True, kw_only=True)
class BlobHave(WireMessage):
    """``blob_have``: of the blobs one ``blob_want`` named, those the sender holds, with their sizes
    (possibly none)."""

    NAME: ClassVar[str] = "blob_have"
    items: tuple[tuple[bytes, int], ...]

    def __post_init__(self) -> None:
        items = _as_tuple(self, "items", self.items, MAX_WANT_ITEMS)
        checked = []
        for item in items:
            if not isinstance(item, list | tuple) or len(item) != 2:
                raise _bad("a blob_have item is [id, size]")
            _check_id(item[0], "blob_have id")
            _check_int(item[1], 1, MAX_BLOB, "blob_have size")
            checked.append((item[0], item[1]))
        object.__setattr__(self, "items", tuple(checked))

    def args(self) -> list[Any]:
        return [[[blob, size] for blob, size in self.items]]


@dataclass(frozen=True, slots=True, kw_only=True)
class BlobGet(WireMessage):
    """``blob_get``: send bytes ``offset`` .. ``offset + length`` of blob ``blob`` as ``blob_data`` of
    ``request`` (a number the asker chose, not open on this connection)."""

    NAME: ClassVar[str] = "blob_get"
    request: int
    blob: bytes
    offset: int
    length: int

    def __post_init__(self) -> None:
        _check_int(self.request, 0, _MAX_REQUEST, "blob_get request")
        _check_id(self.blob, "blob_get id")
        _check_int(self.offset, 0, MAX_BLOB - 1, "blob_get offset")
        _check_int(self.length, 1, BLOB_RANGE, "blob_get length")
        if self.offset + self.length > MAX_BLOB:
            raise _bad(f"blob_get asks past {MAX_BLOB} bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class BlobData(WireMessage):
    """``blob_data``: the next ``data`` of ``request``, starting at byte ``offset`` of the blob."""

    NAME: ClassVar[str] = "blob_data"
    request: int
    offset: int
    data: bytes

    def __post_init__(self) -> None:
        _check_int(self.request, 0, _MAX_REQUEST, "blob_data request")
        _check_int(self.offset, 0, MAX_BLOB - 1, "blob_data offset")
        if type(self.data) is not bytes or not 0 < len(self.data) <= CHUNK:
            raise _bad(f"blob_data carries 1..{CHUNK} bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class BlobNone(WireMessage):
    """``blob_none``: ``request`` is refused or ends before its last byte (``code``: ``not_found``,
    ``busy``, ``bad_range``, ``overspent``, ``error``); no more ``blob_data`` of it follows."""

    NAME: ClassVar[str] = "blob_none"
    request: int
    code: str
    reason: str = "refused"

    def __post_init__(self) -> None:
        _check_int(self.request, 0, _MAX_REQUEST, "blob_none request")
        for value, most, what in ((self.code, _MAX_CODE, "code"), (self.reason, _MAX_REASON, "reason")):
            if type(value) is not str or not 0 < len(value) <= most:
                raise _bad(f"blob_none {what} must be text of 1..{most} characters")


BlobEvent = BlobWant | BlobHave | BlobGet | BlobData | BlobNone

#: the version-4 messages by name (spec §12.1, §12.12)
BLOB_EVENTS: dict[str, type[BlobEvent]] = {
    cls.NAME: cls for cls in (BlobWant, BlobHave, BlobGet, BlobData, BlobNone)
}


@dataclass(frozen=True, slots=True)
class Received:
    """What a ``blob_data`` brought: ``data`` of ``blob`` at ``offset``; ``done`` when it completed
    its request (``request`` is then no longer open)."""

    request: int
    blob: bytes
    offset: int
    data: bytes
    done: bool


@dataclass(slots=True)
class _Open:
    blob: bytes
    next: int  # the offset the next blob_data must start at
    end: int  # one past the last byte asked


class BlobRequests:
    """One connection's blob requests, both ways (see the module docstring)."""

    def __init__(self) -> None:
        self._next_request = 0
        self._open: dict[int, _Open] = {}
        self._abandoned: OrderedDict[int, None] = OrderedDict()
        self._serving: set[int] = set()
        self._sent: OrderedDict[bytes, list[tuple[int, int]]] = OrderedDict()

    # -- asking ----------------------------------------------------------------------------------------
    def ask(self, blob: bytes, offset: int, length: int) -> BlobGet:
        """A ``blob_get`` for ``length`` bytes of ``blob`` from ``offset``, under a fresh request number."""
        request = self._next_request
        self._next_request = (self._next_request + 1) & _MAX_REQUEST
        event = BlobGet(request=request, blob=blob, offset=offset, length=length)
        self._open[request] = _Open(blob, offset, offset + length)
        return event

    @property
    def asking(self) -> int:
        """Our requests still open."""
        return len(self._open)

    def received(self, event: BlobData) -> Received | None:
        """Check ``blob_data`` against its request; None for data of an abandoned one (dropped).
        ``RemoteProtocolError`` (``bad_message``) for data no open request allows."""
        state = self._open.get(event.request)
        if state is None:
            if event.request in self._abandoned:
                return None
            raise RemoteProtocolError(f"blob_data for request {event.request}, not open", code="bad_message")
        if event.offset != state.next:
            raise RemoteProtocolError(
                f"blob_data of request {event.request} at {event.offset}, expected {state.next}",
                code="bad_message",
            )
        if event.offset + len(event.data) > state.end:
            raise RemoteProtocolError(
                f"blob_data of request {event.request} past the {state.end} bytes asked", code="bad_message"
            )
        state.next += len(event.data)
        done = state.next == state.end
        if done:
            del self._open[event.request]
        return Received(event.request, state.blob, event.offset, event.data, done)

    def refused(self, event: BlobNone) -> bytes | None:
        """A ``blob_none`` for one of our requests: the blob it was for, or None when the request was
        abandoned (dropped). ``RemoteProtocolError`` for one that was never open."""
        state = self._open.pop(event.request, None)
        if state is not None:
            return state.blob
        if event.request in self._abandoned:
            del self._abandoned[event.request]
            return None
        raise RemoteProtocolError(f"blob_none for request {event.request}, not open", code="bad_message")

    def abandon(self, request: int) -> None:
        """We stopped waiting for ``request``: what is still in flight for it is dropped."""
        if self._open.pop(request, None) is not None:
            self._abandoned[request] = None
            while len(self._abandoned) > MAX_ABANDONED:
                self._abandoned.popitem(last=False)

    # -- serving ---------------------------------------------------------------------------------------
    def serving(self, event: BlobGet) -> bool:
        """The peer's ``blob_get`` may be served now: False when it has ``MAX_OPEN_REQUESTS`` open
        (answer ``blob_none`` ``busy``). ``RemoteProtocolError`` when the number is open already."""
        if event.request in self._serving:
            raise RemoteProtocolError(f"blob_get request {event.request} is open already", code="bad_message")
        if len(self._serving) >= MAX_OPEN_REQUESTS:
            return False
        self._serving.add(event.request)
        return True

    def served(self, request: int) -> None:
        """The last ``blob_data`` or a ``blob_none`` of ``request`` was sent."""
        self._serving.discard(request)

    def resent(self, event: BlobGet) -> int:
        """How many of the bytes ``event`` asks for were sent on this connection before (work asked
        for again: paid from the peer's work budget, spec §12.8.6); notes them all as sent. The
        record covers the last ``MAX_SENT_BLOBS`` blobs served."""
        start, end = event.offset, event.offset + event.length
        ranges = self._sent.pop(event.blob, [])
        again = sum(max(0, min(end, b) - max(start, a)) for a, b in ranges)
        merged: list[tuple[int, int]] = []
        for a, b in sorted([*ranges, (start, end)]):
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        self._sent[event.blob] = merged
        while len(self._sent) > MAX_SENT_BLOBS:
            self._sent.popitem(last=False)
        return again
