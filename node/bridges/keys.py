"""Keys owned by bridges, kept in ``HOME/bridges/NAME/`` (files 0600), never the user's key.

Each bridge has one random 32-byte ``secret``; the Ed25519 key of the bridge feed for a source is derived
from it and the source's name (BLAKE2b keyed by the secret), so one bridge feed per source needs no key
file per source and a source followed again gets the same feed back (spec §14.1).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from tidings.node.bridges.base import BridgeError
from tidings.protocol import SigningKey

if TYPE_CHECKING:
    from tidings.node.home import Home

__all__ = ["bridge_dir", "feed_key", "read_secret_file"]


def bridge_dir(home: Home, name: str) -> Path:
    """``HOME/bridges/NAME``, created with mode 0700."""
    path = home.path / "bridges" / name
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def read_secret_file(path: Path, *, make: bool = True) -> bytes:
    """32 secret bytes kept as hex in ``path`` (mode 0600), created at random on first use."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        if not make:
            raise BridgeError(f"no key at {path}", code="bad_key") from None
        return _write_new(path)
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != 32:
        raise BridgeError(f"{path} does not hold a 32-byte hex key", code="bad_key")
    return value


def _write_hex(tmp: Path, value: bytes, flags: int) -> None:
    """``value`` as a hex line in ``tmp`` (mode 0600), on disk before it is linked or renamed into place."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | flags, 0o600)
    try:
        os.write(fd, value.hex().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def write_secret_file(path: Path, value: bytes) -> None:
    """Write 32 secret bytes as hex (mode 0600), replacing the file atomically."""
    tmp = path.with_suffix(".tmp")
    _write_hex(tmp, value, os.O_TRUNC)
    os.replace(tmp, path)


def _write_new(path: Path) -> bytes:
    value = secrets.token_bytes(32)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    _write_hex(tmp, value, os.O_EXCL)
    try:
        os.link(tmp, path)  # fails if another process made one meanwhile: use theirs
    except FileExistsError:
        os.unlink(tmp)
        return read_secret_file(path, make=False)
    os.unlink(tmp)
    return value


def feed_key(home: Home, bridge: str, source: str) -> SigningKey:
    """The signing key of the bridge feed that carries ``source`` for ``bridge``."""
    secret = read_secret_file(bridge_dir(home, bridge) / "secret")
    seed = hashlib.blake2b(
        source.encode("utf-8"), key=secret, digest_size=32, person=b"tidings-bridge"
    ).digest()
    return SigningKey(seed)
