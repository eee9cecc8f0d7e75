"""A blob being fetched from peers, kept across dropped connections and restarts (spec §12.12).

``HOME/blobs/partial/<64 hex digits>`` holds the first bytes of a blob the node is fetching, in order.
Opening it again (``PartialBlob``) hashes what is there and goes on from its end, so a transfer cut by
a dropped connection, or by the process being killed, resumes at the byte where it stopped, from
whichever peer has the blob. The file is never the blob: only ``finish`` puts bytes under the blob's
real name, after the whole blob hashed to its id (and an optional check of the file, such as "is this
really a picture"), through ``BlobStore._place`` (fsync, rename, fsync the folder). So a crash at any
moment leaves either a partial file, whose bytes are checked again when the transfer ends, or the
whole blob; never a blob file with wrong bytes::

    OPEN (offset = bytes on file) --write--> OPEN
    OPEN --finish, offset = size, hash and check pass--> DONE       (blob in place; partial gone)
    OPEN --finish fails, or discard------------------> DISCARDED  (partial gone: start again from 0)
    OPEN --close------------------------------------> CLOSED     (partial kept for the next try)

A partial file is locked (``flock``) while open, so two fetchers never append to one file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from tidings.protocol.blobs import BlobHasher
from tidings.protocol.identity import BlobId

from .blobs import BlobError, BlobStore
from .files import FILE_MODE, make_private_dir

__all__ = ["PartialBlob", "partial_folder", "remove_partials"]

_FLAGS = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_READ = 1 << 16


def partial_folder(blobs: BlobStore) -> Path:
    return make_private_dir(blobs.folder / "partial")


class PartialBlob:
    """The partial file of ``blob`` of ``size`` bytes (see the module docstring). ``blob_busy`` when
    another fetcher holds it; a file longer than ``size`` is started again."""

    def __init__(self, blobs: BlobStore, blob: BlobId, size: int) -> None:
        if not 1 <= size <= blobs.max_blob:
            raise BlobError(f"a blob is at most {blobs.max_blob} bytes", code="blob_too_large")
        self.blobs = blobs
        self.blob = blob
        self.size = size
        self.path = partial_folder(blobs) / blob.hash.hex()
        try:
            fd = os.open(self.path, _FLAGS, FILE_MODE)
        except OSError as exc:
            raise BlobError(f"cannot write {self.path}: {exc.strerror}", code="io") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BlobError(f"blob {blob} is being fetched already", code="blob_busy") from None
        self._file: BinaryIO | None = os.fdopen(fd, "r+b")
        self._hasher = BlobHasher()
        self.state = "OPEN"
        try:
            self._resume()
        except BaseException:
            self.close()
            raise

    def _resume(self) -> None:
        assert self._file is not None
        if os.fstat(self._file.fileno()).st_size > self.size:
            self._file.truncate(0)
        while chunk := self._file.read(_READ):
            self._hasher.update(chunk)
        self._file.seek(self._hasher.size)

    @property
    def offset(self) -> int:
        """Bytes held so far: where the transfer goes on."""
        return self._hasher.size

    def write(self, chunk: bytes) -> None:
        """Append the next bytes (past ``size``: ``blob_too_large``, and the partial is discarded)."""
        if self.state != "OPEN" or self._file is None:
            raise BlobError(f"this partial blob is {self.state}", code="blob_state")
        if self._hasher.size + len(chunk) > self.size:
            self.discard()
            raise BlobError(f"blob {self.blob} has {self.size} bytes, not more", code="blob_too_large")
        try:
            self._file.write(chunk)
        except OSError as exc:
            raise BlobError(f"cannot write {self.path}: {exc.strerror}", code="io") from None
        self._hasher.update(chunk)

    def finish(self, check: Callable[[Path], None] | None = None) -> BlobId:
        """Put the whole blob in place and return its id. Bytes that hash to another id
        (``blob_mismatch``) or fail ``check(path)`` (its own typed error) discard the partial: nothing
        of them is kept. The caller records the blob's row (``BlobStore._record``, on the database's
        thread)."""
        if self.state != "OPEN" or self._file is None:
            raise BlobError(f"this partial blob is {self.state}", code="blob_state")
        if self.offset != self.size:
            raise BlobError(f"blob {self.blob} has {self.offset} of {self.size} bytes", code="blob_state")
        try:
            got = self._hasher.blob_id()
            if got != self.blob:
                raise BlobError(f"the bytes received are blob {got}, not {self.blob}", code="blob_mismatch")
            self._file.flush()
            os.fsync(self._file.fileno())
            if check is not None:
                check(self.path)
            self.blobs._place(self.path, self.blob)
        except OSError as exc:
            self.discard()
            raise BlobError(f"cannot store blob {self.blob}: {exc.strerror or exc}", code="io") from None
        except BaseException:
            self.discard()
            raise
        self.state = "DONE"
        self._close_file()
        return got

    def discard(self) -> None:
        """Drop the partial: the next try starts from byte 0."""
        if self.state == "OPEN":
            self.state = "DISCARDED"
            with contextlib.suppress(OSError):
                self.path.unlink()
            self._close_file()

    def close(self) -> None:
        """Stop writing; the partial stays for the next try (``resume``)."""
        if self.state == "OPEN":
            self.state = "CLOSED"
            if self._file is not None:
                with contextlib.suppress(OSError):
                    self._file.flush()
            self._close_file()

    def _close_file(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()  # closing the descriptor drops its flock
            self._file = None

    def __enter__(self) -> PartialBlob:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def remove_partials(blobs: BlobStore, keep: set[bytes]) -> int:
    """Remove partial files of blobs not in ``keep`` (wants that ended) that no fetcher holds; return
    how many."""
    removed = 0
    for path in partial_folder(blobs).iterdir():
        try:
            blob = bytes.fromhex(path.name)
        except ValueError:
            blob = b""
        if blob in keep:
            continue
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink()
            removed += 1
        except OSError:
            pass  # held by a fetcher, or gone already
        finally:
            os.close(fd)
    return removed
