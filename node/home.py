"""A node's home folder: identity key file, store, config and the running node's ``node.json``.

Layout::

    HOME/secret.pem   Ed25519 secret key, PKCS#8 PEM, mode 0600, optionally passphrase-encrypted
    HOME/store.db     the SQLite store (WAL)
    HOME/config.toml  settings (optional)
    HOME/node.json    written by ``tidings run`` while it runs
    HOME/blobs/       pictures and files, named by their hash (``storage.blobs``)

The folder is created 0700 and every file in it 0600, whatever the umask (``storage.files``). A secret
file (``secret.pem``, ``transport.key``, ``web.token``) that group or others may read or write is
refused with the ``chmod 600`` that fixes it, as ssh refuses such a private key.

The passphrase comes from ``TIDINGS_PASSPHRASE`` or is passed in by the caller (the CLI prompts).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tidings.node.config import DEFAULT_LIMITS, ConfigError, load_config
from tidings.protocol import Profile, SigningKey, TidingsError
from tidings.storage.blobs import BlobStore
from tidings.storage.files import FileError, atomic_writer, make_private_dir, read_private
from tidings.storage.store import Store

__all__ = ["Home", "HomeError", "default_home"]


class HomeError(TidingsError):
    """A problem with the home folder or the identity in it; ``code`` is machine-readable."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message, code=code)


def default_home() -> Path:
    env = os.environ.get("TIDINGS_HOME")
    return Path(env).expanduser() if env else Path.home() / ".tidings"


class Home:
    """Paths and identity of one home folder."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_home()

    @property
    def key_path(self) -> Path:
        return self.path / "secret.pem"

    @property
    def store_path(self) -> Path:
        return self.path / "store.db"

    @property
    def config_path(self) -> Path:
        return self.path / "config.toml"

    @property
    def node_file(self) -> Path:
        return self.path / "node.json"

    @property
    def blobs_path(self) -> Path:
        return self.path / "blobs"

    def exists(self) -> bool:
        return self.key_path.exists()

    # -- identity --------------------------------------------------------------------------------------
    def init(self, *, name: str | None = None, passphrase: str | None = None) -> SigningKey:
        """Create the identity and the store; refuse if an identity exists."""
        if self.key_path.exists():
            raise HomeError(f"an identity already exists in {self.path}", code="exists")
        if self.path.exists() and not self.path.is_dir():
            raise HomeError(f"{self.path} is not a folder", code="bad_home")
        make_private_dir(self.path)
        if self.path.stat().st_mode & 0o077 and self.path.stat().st_uid == os.getuid():
            os.chmod(self.path, 0o700)  # a folder made beforehand: it now holds a secret key
        key = SigningKey(secrets.token_bytes(32))
        private = Ed25519PrivateKey.from_private_bytes(key.seed)
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase.encode("utf-8"))
            if passphrase
            else serialization.NoEncryption()
        )
        pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
        try:
            # the key is linked into place (never over another) only once the store is ready:
            # the identity exists only with its store
            with atomic_writer(self.key_path) as fh:
                fh.write(pem)
                with self.open_store() as store:
                    store.set_meta("self", key.public_key)
                    if name:
                        store.append(key, Profile(name=name))
        except FileError as exc:
            if exc.code == "exists":
                raise HomeError(f"an identity already exists in {self.path}", code="exists") from None
            raise
        return key

    def key_is_encrypted(self) -> bool:
        try:
            return b"ENCRYPTED" in read_private(self.key_path)
        except FileNotFoundError:
            raise self._no_identity() from None

    def _no_identity(self) -> HomeError:
        if not self.path.exists():
            return HomeError(f"no home at {self.path}; run 'tidings init' first", code="no_home")
        return HomeError(f"no identity in {self.path}; run 'tidings init' first", code="no_identity")

    def public_key(self) -> bytes:
        """Our feed key, without needing the passphrase (read from the store)."""
        if not self.key_path.exists():
            raise self._no_identity()
        with self.open_store() as store:
            key = store.own_feed()
        if key is None:
            raise HomeError("the store does not name this home's identity", code="no_identity")
        return key

    def load_key(self, passphrase: str | None = None) -> SigningKey:
        """Load the secret key, decrypting it with ``passphrase`` or ``TIDINGS_PASSPHRASE``."""
        try:
            data = read_private(self.key_path)
        except FileNotFoundError:
            raise self._no_identity() from None
        if passphrase is None:
            passphrase = os.environ.get("TIDINGS_PASSPHRASE")
        password = passphrase.encode("utf-8") if passphrase else None
        try:
            private = serialization.load_pem_private_key(data, password=password)
        except TypeError:
            if password is None:
                raise HomeError(
                    "the secret key is encrypted: set TIDINGS_PASSPHRASE or enter the passphrase",
                    code="passphrase_needed",
                ) from None
            private = serialization.load_pem_private_key(data, password=None)
        except ValueError:
            raise HomeError("wrong passphrase, or the key file is damaged", code="bad_passphrase") from None
        if not isinstance(private, Ed25519PrivateKey):
            raise HomeError("the key file does not hold an Ed25519 key", code="bad_key")
        seed = private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return SigningKey(seed)

    # -- store, config, node file ----------------------------------------------------------------------
    def open_store(self) -> Store:
        if not self.path.is_dir():
            raise self._no_identity()
        return Store(self.store_path, blobs_folder=self.blobs_path)

    def config(self) -> dict[str, Any]:
        """config.toml, every table checked against its schema (node/config.py); ``{}`` if none."""
        try:
            return load_config(self.config_path)
        except ConfigError as exc:
            raise HomeError(str(exc), code=exc.code) from None

    def limit(self, name: str) -> Any:
        """The ``[limits]`` value ``name`` of config.toml, or its default (node/config.py)."""
        return self.config().get("limits", {}).get(name, DEFAULT_LIMITS[name])

    def open_blobs(self, store: Store) -> BlobStore:
        """The home's blobs (``HOME/blobs``, rows in ``store``), written up to the ``max_blob`` limit."""
        return BlobStore(self.blobs_path, store, max_blob=int(self.limit("max_blob")))

    def running_node(self) -> dict[str, Any] | None:
        """The running node's ``node.json`` if its process is alive."""
        try:
            info = json.loads(self.node_file.read_text())
            os.kill(int(info["pid"]), 0)
        except (FileNotFoundError, ValueError, KeyError, TypeError, ProcessLookupError, PermissionError):
            return None
        return info if isinstance(info, dict) else None
