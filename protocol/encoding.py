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


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates have no UTF-8 form (spec §2.1)
        raise LocalProtocolError("text is not encodable as UTF-8", code="bad_utf8") from None


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
            items.append((_utf8(key), key, _canonical(item, depth + 1)))
        items.sort(key=lambda kv: kv[0])
        return {key: item for _, key, item in items}
    raise LocalProtocolError(f"type {type(value).__name__} cannot be encoded", code="bad_type")


def encode(value: Any) -> bytes:
    """Return the canonical encoding of ``value`` (spec §2.1).

    Raises ``LocalProtocolError`` for values outside the format (spec §2.1, §2.3).
    """
    try:
        data: bytes = msgpack.packb(_canonical(value, 0), use_bin_type=True)
    except UnicodeEncodeError:  # a text value with lone surrogates (spec §2.1)
        raise LocalProtocolError("text is not encodable as UTF-8", code="bad_utf8") from None
    return data


def _refuse_ext(code: int, data: bytes) -> Any:
    raise DecodeError("extension types are not allowed", code="bad_type")


def _check_types(value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise DecodeError("value nested too deeply", code="too_deep")
    if isinstance(value, float):
        raise DecodeError("floats are not allowed", code="bad_type")
    if isinstance(value, msgpack.Timestamp):  # msgpack decodes extension type -1 itself
        raise DecodeError("extension types are not allowed", code="bad_type")
    if isinstance(value, list):
        for item in value:
            _check_types(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise DecodeError("map keys must be text", code="bad_key")
            _check_types(item, depth + 1)


def _parse_error(exc: Exception) -> DecodeError:
    """Map what msgpack raises while parsing to the codes of spec §2.2."""
    if isinstance(exc, msgpack.ExtraData):
        return DecodeError("trailing bytes after the value", code="trailing_bytes")
    if isinstance(exc, UnicodeDecodeError):
        return DecodeError("text is not valid UTF-8", code="bad_utf8")
    if isinstance(exc, msgpack.StackError | RecursionError):
        return DecodeError("value nested too deeply", code="too_deep")
    if isinstance(exc, TypeError):  # an array or map used as a map key is unhashable
        return DecodeError("map keys must be text", code="bad_key")
    text = str(exc)
    # msgpack reports input that ends early as "incomplete input", and a length or count that is
    # larger than the whole input as "exceeds max_..._len": both mean the input is truncated.
    if "incomplete input" in text or "exceeds max_" in text:
        return DecodeError("input ends before the value is complete", code="truncated")
    if "timestamp" in text.lower() or "nanoseconds" in text:  # a malformed extension type -1
        return DecodeError("extension types are not allowed", code="bad_type")
    return DecodeError(f"malformed msgpack: {type(exc).__name__}", code="malformed")


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
    except (ValueError, TypeError, OverflowError, RecursionError, msgpack.UnpackException) as exc:
        raise _parse_error(exc) from None
    _check_types(value, 0)
    try:
        again = encode(value)
    except LocalProtocolError as exc:
        raise DecodeError(f"value outside the format: {exc.args[0]}", code=exc.code) from None
    if again != data:
        raise DecodeError("not the canonical encoding", code="non_canonical")
    return value
