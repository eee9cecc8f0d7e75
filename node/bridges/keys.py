"""Keys owned by bridges, kept in ``HOME/bridges/NAME/`` (files 0600), never the user's key.

Each bridge has one random 32-byte ``secret``; the Ed25519 key of the bridge feed for a source is derived
from it and the source's name (BLAKE2b keyed by the secret), so one bridge feed per source needs no key
file per source and a source followed again gets the same feed back (spec §14.1).
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from tidings.node.bridges.base import BridgeError
from tidings.protocol import SigningKey
from tidings.storage.files import create_private_file, make_private_dir, read_private, write_file

if TYPE_CHECKING:
    from tidings.node.home import Home

__all__ = ["bridge_dir", "feed_key", "read_secret_file"]


def bridge_dir(home: Home, name: str) -> Path:
    """``HOME/bridges/NAME``, created with mode 0700."""
    return make_private_dir(home.path / "bridges" / name)


def read_secret_file(path: Path, *, make: bool = True) -> bytes:
    """32 secret bytes kept as hex in ``path`` (mode 0600), created at random on first use. A key file
    others may read or write is refused, as the user's own key is (``storage/files.py``)."""
    try:
        text = read_private(path).decode("ascii", "replace").strip()
    except FileNotFoundError:
        if not make:
            raise BridgeError(f"no key at {path}", code="bad_key") from None
        make_private_dir(path.parent)
        create_private_file(path, secrets.token_bytes(32).hex().encode() + b"\n")  # first writer wins
        return read_secret_file(path, make=False)
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != 32:
        raise BridgeError(f"{path} does not hold a 32-byte hex key", code="bad_key")
    return value


def write_secret_file(path: Path, value: bytes) -> None:
    """Write 32 secret bytes as hex (mode 0600), replacing the file atomically."""
    write_file(path, value.hex().encode() + b"\n", replace=True)


def feed_key(home: Home, bridge: str, source: str) -> SigningKey:
    """The signing key of the bridge feed that carries ``source`` for ``bridge``."""
    secret = read_secret_file(bridge_dir(home, bridge) / "secret")
    seed = hashlib.blake2b(
        source.encode("utf-8"), key=secret, digest_size=32, person=b"tidings-bridge"
    ).digest()
    return SigningKey(seed)
