"""Canonical msgpack encoding with strict decoding (spec/protocol.md §2).

Canonical form is what ``encode`` produces: msgpack with the shortest form of every integer, length
and string header, ``bin`` for bytes, ``str`` for UTF-8 text, arrays for sequences and maps whose keys
are text sorted by their UTF-8 bytes. Floats, extension types, non-text map keys and duplicate keys are
not part of the format. ``decode`` accepts exactly the canonical encodings: it decodes, re-encodes and
compares, so any second spelling of the same value is refused.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .errors import DecodeError, LocalProtocolError

__all__ = ["MAX_DEPTH", "decode", "encode"]

#: Deepest nesting of arrays and maps accepted (spec §2.3).
MAX_DEPTH = 16

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


def _canonical(value: Any, depth: int) -> Any:
    """Check that ``value`` is encodable and return it with map keys sorted (spec §2.1)."""
    if depth > MAX_DEPTH:
        raise LocalProtocolError("value nested too deeply", code="too_deep")
    if value is None or isinstance(value, bool | str | bytes):
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise LocalProtocolError("integer out of range", code="int_range")
        return value
    if isinstance(value, list | tuple):
        return [_canonical(item, depth + 1) for item in value]
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise LocalProtocolError("map keys must be text", code="bad_key")
            items.append((key.encode("utf-8"), key, _canonical(item, depth + 1)))
        items.sort(key=lambda kv: kv[0])
        return {key: item for _, key, item in items}
    raise LocalProtocolError(f"type {type(value).__name__} cannot be encoded", code="bad_type")


def encode(value: Any) -> bytes:
    """Return the canonical encoding of ``value`` (spec §2.1)."""
    data: bytes = msgpack.packb(_canonical(value, 0), use_bin_type=True)
    return data


def _refuse_ext(code: int, data: bytes) -> Any:
    raise DecodeError("extension types are not allowed", code="bad_type")


def _check_types(value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise DecodeError("value nested too deeply", code="too_deep")
    if isinstance(value, float):
        raise DecodeError("floats are not allowed", code="bad_type")
    if isinstance(value, list):
        for item in value:
            _check_types(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise DecodeError("map keys must be text", code="bad_key")
            _check_types(item, depth + 1)


def decode(data: bytes, *, max_size: int = 1 << 20) -> Any:
    """Decode canonical bytes; raise ``DecodeError`` on anything else (spec §2.2).

    Never raises any other exception, whatever the input.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError("expected bytes", code="bad_type")
    data = bytes(data)
    if len(data) > max_size:
        raise DecodeError(f"encoding larger than {max_size} bytes", code="too_large")
    if not data:
        raise DecodeError("empty input", code="truncated")
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=False,
            use_list=True,
            ext_hook=_refuse_ext,
        )
    except DecodeError:
        raise
    except msgpack.ExtraData:
        raise DecodeError("trailing bytes after the value", code="trailing_bytes") from None
    except UnicodeDecodeError:
        raise DecodeError("text is not valid UTF-8", code="bad_utf8") from None
    except (ValueError, TypeError, OverflowError, RecursionError, msgpack.UnpackException) as exc:
        # msgpack signals truncation and malformed headers with several types; all mean "not valid".
        raise DecodeError(f"malformed msgpack: {type(exc).__name__}", code="malformed") from None
    _check_types(value, 0)
    try:
        again = encode(value)
    except LocalProtocolError as exc:
        raise DecodeError(f"value outside the format: {exc.args[0]}", code=exc.code) from None
    if again != data:
        raise DecodeError("not the canonical encoding", code="non_canonical")
    return value
