"""The messages of protocol version 3 as events: reachability, relays, hole punching (spec §12.9-§12.11).

Like ``replication_events``: one frozen, slotted, keyword-only dataclass per message, used in both
directions, each checking its fields in its constructor (a bad field is a ``LocalProtocolError``,
``bad_message``, which ``Replication.receive`` reports as the peer's ``RemoteProtocolError``). Each class
also knows its wire form: ``fields()`` gives the arguments after the name, ``from_args`` takes them back
by the receiver's rules (exact arity, exact types; nothing is cut or ignored).

Which message is allowed when (version 3 only; ``connect`` and ``accept`` as the first message of a
relay connection, ``connected`` only in answer to them) is ``replication.Replication``'s business.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

from .errors import LocalProtocolError
from .identity import KEY_SIZE

__all__ = [
    "MAX_PUNCH_ADDRESSES",
    "NONCE_SIZE",
    "REACH_EVENTS",
    "Accept",
    "Connect",
    "Connected",
    "DialMe",
    "Dialed",
    "Incoming",
    "Punch",
    "PunchGo",
    "ReachEvent",
    "Refused",
    "Reserve",
    "Reserved",
    "WireMessage",
]

#: Bytes of a dial-back nonce and of a circuit id.
NONCE_SIZE = 16
#: Most addresses in one ``punch`` message.
MAX_PUNCH_ADDRESSES = 4
_MAX_ADDRESS = 100
_MAX_WHAT = 20
_MAX_CODE = 50
_MAX_REASON = 200
_MAX_SECONDS = 2**32 - 1


def _bad(message: str) -> LocalProtocolError:
    return LocalProtocolError(message, code="bad_message")


def _check_bytes(value: object, size: int, what: str) -> None:
    if type(value) is not bytes or len(value) != size:
        raise _bad(f"{what} must be {size} bytes")


def _check_text(value: object, most: int, what: str) -> None:
    if type(value) is not str or not 0 < len(value) <= most:
        raise _bad(f"{what} must be text of 1..{most} characters")


class WireMessage:
    """The wire form every version-3 event shares: ``[name, *fields]`` in field order."""

    __slots__ = ()
    NAME: ClassVar[str]

    def args(self) -> list[Any]:
        """The message's arguments, in order (what follows the name on the wire)."""
        return [list(v) if type(v) is tuple else v for v in (getattr(self, f.name) for f in fields(self))]  # type: ignore[arg-type]

    @classmethod
    def from_args(cls, args: list[Any]) -> Any:
        """The event of ``args`` by the receiver's rules: exactly the fields, each checked."""
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        if len(args) != len(names):
            raise _bad(f"{cls.NAME} has {len(names)} arguments")
        return cls(**dict(zip(names, args, strict=True)))


@dataclass(frozen=True, slots=True, kw_only=True)
class DialMe(WireMessage):
    """``dial_me``: please dial back the IP you see this connection come from, at TCP ``port`` (§12.9)."""

    NAME: ClassVar[str] = "dial_me"
    nonce: bytes
    port: int

    def __post_init__(self) -> None:
        _check_bytes(self.nonce, NONCE_SIZE, "dial_me nonce")
        if type(self.port) is not int or not 0 < self.port < 65536:
            raise _bad("dial_me port must be 1..65535")


@dataclass(frozen=True, slots=True, kw_only=True)
class Dialed(WireMessage):
    """``dialed``: the answer to ``dial_me`` with the same nonce; ``ok`` when the dial reached the asker,
    ``observed`` the address the helper sees the asking connection come from (§12.9)."""

    NAME: ClassVar[str] = "dialed"
    nonce: bytes
    ok: bool
    observed: str

    def __post_init__(self) -> None:
        _check_bytes(self.nonce, NONCE_SIZE, "dialed nonce")
        if type(self.ok) is not bool:
            raise _bad("dialed ok must be a boolean")
        _check_text(self.observed, _MAX_ADDRESS, "dialed observed")


@dataclass(frozen=True, slots=True, kw_only=True)
class Reserve(WireMessage):
    """``reserve``: the sender asks the receiver to relay for it (§12.10)."""

    NAME: ClassVar[str] = "reserve"


@dataclass(frozen=True, slots=True, kw_only=True)
class Reserved(WireMessage):
    """``reserved``: a reservation for ``seconds``, renewed by a new ``reserve`` before it ends;
    ``observed`` as in ``dialed`` (§12.10)."""

    NAME: ClassVar[str] = "reserved"
    seconds: int
    observed: str

    def __post_init__(self) -> None:
        if type(self.seconds) is not int or not 0 < self.seconds <= _MAX_SECONDS:
            raise _bad("reserved seconds must be 1..2^32-1")
        _check_text(self.observed, _MAX_ADDRESS, "reserved observed")


@dataclass(frozen=True, slots=True, kw_only=True)
class Incoming(WireMessage):
    """``incoming``: relay to reserving node: ``initiator`` asks for you; answer with a relay connection
    whose first message is ``accept`` with this ``circuit`` (§12.10)."""

    NAME: ClassVar[str] = "incoming"
    circuit: bytes
    initiator: bytes

    def __post_init__(self) -> None:
        _check_bytes(self.circuit, NONCE_SIZE, "incoming circuit")
        _check_bytes(self.initiator, KEY_SIZE, "incoming initiator")


@dataclass(frozen=True, slots=True, kw_only=True)
class Refused(WireMessage):
    """``refused``: the request named by ``what`` (``reserve``, ``dial_me``, ``connect``, ``accept``) is
    refused, with a short ``code`` (§1.3) and a ``reason`` for people (§12.10)."""

    NAME: ClassVar[str] = "refused"
    what: str
    code: str
    reason: str = "refused"

    def __post_init__(self) -> None:
        _check_text(self.what, _MAX_WHAT, "refused what")
        _check_text(self.code, _MAX_CODE, "refused code")
        _check_text(self.reason, _MAX_REASON, "refused reason")


@dataclass(frozen=True, slots=True, kw_only=True)
class Connect(WireMessage):
    """``connect``: the first message of a relay connection: reach ``target`` through the receiver (§12.10)."""

    NAME: ClassVar[str] = "connect"
    target: bytes

    def __post_init__(self) -> None:
        _check_bytes(self.target, KEY_SIZE, "connect target")


@dataclass(frozen=True, slots=True, kw_only=True)
class Accept(WireMessage):
    """``accept``: the first message of a relay connection that answers ``incoming`` (§12.10)."""

    NAME: ClassVar[str] = "accept"
    circuit: bytes

    def __post_init__(self) -> None:
        _check_bytes(self.circuit, NONCE_SIZE, "accept circuit")


@dataclass(frozen=True, slots=True, kw_only=True)
class Connected(WireMessage):
    """``connected``: the relay joined this connection to ``peer``'s; from the next byte on it carries
    the two ends' own Noise handshake (§12.10). ``observed`` as in ``dialed``."""

    NAME: ClassVar[str] = "connected"
    peer: bytes
    observed: str

    def __post_init__(self) -> None:
        _check_bytes(self.peer, KEY_SIZE, "connected peer")
        _check_text(self.observed, _MAX_ADDRESS, "connected observed")


@dataclass(frozen=True, slots=True, kw_only=True)
class Punch(WireMessage):
    """``punch``: over a relayed connection, the addresses the sender will open a direct connection
    from (its observed IP and the local port it bound, §12.11)."""

    NAME: ClassVar[str] = "punch"
    addresses: tuple[str, ...]

    def __post_init__(self) -> None:
        value = self.addresses
        if type(value) is not tuple:
            if not isinstance(value, list):
                raise _bad("punch addresses is an array")
            value = tuple(value)
            object.__setattr__(self, "addresses", value)
        if not 0 < len(value) <= MAX_PUNCH_ADDRESSES:
            raise _bad(f"punch has 1..{MAX_PUNCH_ADDRESSES} addresses")
        for address in value:
            _check_text(address, _MAX_ADDRESS, "punch address")


@dataclass(frozen=True, slots=True, kw_only=True)
class PunchGo(WireMessage):
    """``punch_go``: the side that started punching says: open now (§12.11)."""

    NAME: ClassVar[str] = "punch_go"


ReachEvent = (
    DialMe | Dialed | Reserve | Reserved | Incoming | Refused | Connect | Accept | Connected | Punch | PunchGo
)

#: the version-3 messages by name (spec §12.1)
REACH_EVENTS: dict[str, type[ReachEvent]] = {
    cls.NAME: cls
    for cls in (
        DialMe,
        Dialed,
        Reserve,
        Reserved,
        Incoming,
        Refused,
        Connect,
        Accept,
        Connected,
        Punch,
        PunchGo,
    )
}
