"""Nostr keys (spec §14.5): the x-only secp256k1 public key of a secret, and NIP-19 ``npub`` text.

A Nostr public key is the 32-byte x coordinate of a secp256k1 point (BIP-340), written as 64 lowercase
hex characters, or for people as bech32 with the human-readable part ``npub`` (NIP-19). Sans-IO.
"""

from __future__ import annotations

import coincurve

from .errors import LocalProtocolError

__all__ = ["decode_key", "is_hex", "npub", "public_key"]

_HEX = frozenset("0123456789abcdef")
#: The bech32 alphabet (BIP-173).
_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def is_hex(value: object, size: int) -> bool:
    """Whether ``value`` is ``size`` bytes written as lowercase hex."""
    return isinstance(value, str) and len(value) == size * 2 and set(value) <= _HEX


def public_key(secret: bytes) -> str:
    """The x-only public key (hex) of a 32-byte secp256k1 secret."""
    try:
        return coincurve.PublicKeyXOnly.from_secret(secret).format().hex()
    except ValueError:
        raise LocalProtocolError("not a valid secp256k1 secret key", code="bad_key") from None


def _polymod(values: list[int]) -> int:
    gen = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if (top >> i) & 1 else 0
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert(data: bytes | list[int], frm: int, to: int, pad: bool) -> list[int]:
    acc = bits = 0
    out: list[int] = []
    for value in data:
        acc = (acc << frm) | value
        bits += frm
        while bits >= to:
            bits -= to
            out.append((acc >> bits) & ((1 << to) - 1))
    if pad and bits:
        out.append((acc << (to - bits)) & ((1 << to) - 1))
    elif not pad and (bits >= frm or (acc << (to - bits)) & ((1 << to) - 1)):
        raise ValueError("bad padding")
    return out


def npub(pubkey: str) -> str:
    """The NIP-19 ``npub1...`` form of a hex public key."""
    if not is_hex(pubkey, 32):
        raise LocalProtocolError("a public key is 64 lowercase hex characters", code="bad_key")
    data = _convert(bytes.fromhex(pubkey), 8, 5, True)
    checksum = _polymod([*_hrp_expand("npub"), *data, 0, 0, 0, 0, 0, 0]) ^ 1
    data += [(checksum >> 5 * (5 - i)) & 31 for i in range(6)]
    return "npub1" + "".join(_CHARSET[d] for d in data)


def decode_key(text: str) -> str:
    """A public key given as ``npub1...`` or 64 hex characters, as lowercase hex.

    Raises ``LocalProtocolError(code="bad_key")`` for anything else (a typo, an ``nsec``, a wrong checksum).
    """
    value = text.strip()
    if is_hex(value.lower(), 32):
        return value.lower()
    low = value.lower()
    if not low.startswith("npub1") or len(low) != 63 or not set(low[5:]) <= set(_CHARSET):
        raise LocalProtocolError(f"not a Nostr public key (npub1... or 64 hex): {text!r}", code="bad_key")
    data = [_CHARSET.index(c) for c in low[5:]]
    if _polymod([*_hrp_expand("npub"), *data]) != 1:
        raise LocalProtocolError(f"bad npub checksum: {text!r}", code="bad_key")
    try:
        key = bytes(_convert(data[:-6], 5, 8, False))
    except ValueError:
        raise LocalProtocolError(f"bad npub: {text!r}", code="bad_key") from None
    if len(key) != 32:
        raise LocalProtocolError(f"bad npub length: {text!r}", code="bad_key")
    return key.hex()
