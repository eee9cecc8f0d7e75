"""Typed protocol errors.

Every error of Tidings that carries a ``code`` derives from ``TidingsError``, defined here at the bottom
layer so storage, node and the front ends can share it: the CLI and the web API each turn it into one
message and its code in one place.

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
    "TidingsError",
]


class TidingsError(Exception):
    """Base class of every Tidings error that has a machine-readable ``code``.

    ``message`` is the sentence people read; ``code`` is short, stable, and what scripts and peers
    match. Subclasses set a default ``code`` as a class attribute; ``code=`` overrides it per instance.
    """

    code: str = "error"
    message: str

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ProtocolError(TidingsError):
    """Base class of every error raised by ``tidings.protocol``."""

    code: str = "protocol_error"

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
