"""Typed protocol errors.

Errors say who broke the rules (spec/protocol.md §1.3): a ``LocalProtocolError`` means our own caller
misused the API; a ``RemoteProtocolError`` means bytes that came from outside (a peer, a file, an archive)
break the protocol. Every error carries a short machine-readable ``code`` that may go on the wire and
into logs; the codes are listed in spec/protocol.md §9.
"""

from __future__ import annotations

__all__ = [
    "DecodeError",
    "InvalidContent",
    "InvalidEntry",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
]


class ProtocolError(Exception):
    """Base class of every error raised by ``tidings.protocol``."""

    code: str = "protocol_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.args[0]} [{self.code}]"


class LocalProtocolError(ProtocolError):
    """We misused the API (bad arguments to a constructor or a signer)."""

    code = "local_error"


class RemoteProtocolError(ProtocolError):
    """Bytes from outside violate the protocol."""

    code = "remote_error"


class DecodeError(RemoteProtocolError):
    """Bytes are not a valid canonical encoding (spec §2)."""

    code = "decode"


class InvalidEntry(RemoteProtocolError):
    """An entry breaks one of the verification rules of spec §5."""

    code = "invalid_entry"


class InvalidContent(RemoteProtocolError):
    """A payload breaks the content rules of spec §8."""

    code = "invalid_content"
