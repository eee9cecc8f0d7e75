"""Blobs as content-addressed files under the home (spec/protocol.md §8.5); the only code that writes them.

Layout::

    HOME/blobs/ab/ab12...ef     a blob, named by the 64 hex digits of its id, in the folder of the first two
    HOME/blobs/tmp/*.part       blobs being written
    HOME/blobs/tmp.lock         writers hold it shared; cleaning up and ``gc`` hold it exclusively

and one row per blob in the store's ``blobs`` table (schema migration 9): size, when it was added and
last used, and whether it is pinned.

Theory of operation. A blob is written by a ``BlobWriter``: chunks go to a fresh temporary file
(``O_CREAT | O_EXCL | O_NOFOLLOW``, mode 0600) and into a hash as they come, so a blob is never held
whole in memory; a chunk that would take it past ``max_blob`` fails the writer. ``commit(expected)``
fsyncs the file, compares the hash with the id expected, and only then renames the file to its real
name and fsyncs the folder: a file under a blob's real name is always the whole blob. A writer ends in
one of two states, and each removes its temporary file unless it was renamed into place::

    OPEN --write(chunk)--> OPEN
    OPEN --commit() and the hash matches--> DONE      (file in place, row recorded)
    OPEN --commit() mismatch, write() too large, abort(), any error--> FAILED   (temporary file removed)
    DONE, FAILED --write() or commit()--> BlobError ``blob_state``

A process that dies while writing leaves a ``.part`` file and its shared lock on ``tmp.lock`` goes
with it; whoever next opens the blobs takes the lock exclusively (without waiting: if a writer is at
work, the leftovers wait for the next time) and removes every ``.part`` file. ``gc`` holds the same
lock, so it never sees a half-recorded blob: it drops rows whose file is gone, records files without a
row (a crash between the rename and the row), then evicts unpinned blobs not in ``keep``, least
recently used first, until the blobs fit the quota. Reading a blob touches its ``last_used``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from tidings.protocol.blobs import MAX_BLOB, BlobHasher
from tidings.protocol.identity import BlobId

from .clock import wall_ms
from .database import Database
from .errors import NotFound, StoreError
from .files import FILE_MODE, make_private_dir, sync_folder

__all__ = ["BlobError", "BlobStore", "BlobWriter"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_HEX = re.compile(r"[0-9a-f]{64}")
CHUNK = 1 << 16


class BlobError(StoreError):
    """A blob that cannot be stored or read.

    Codes: ``blob_mismatch`` (the bytes do not hash to the id expected), ``blob_too_large`` (more
    than ``max_blob`` bytes), ``blob_empty`` (no bytes: a blob has at least one), ``blob_corrupt``
    (a stored file no longer hashes to its name; it is removed), ``blob_busy`` (writers kept ``gc``
    waiting too long), ``blob_state`` (a writer used after it ended), ``io`` (the system refused).
    """

    code = "blob_error"


def _as_hash(blob: BlobId | bytes) -> bytes:
    return blob.hash if isinstance(blob, BlobId) else BlobId(blob).hash


class BlobWriter:
    """One blob being written (see the module docstring). Use as a context manager: leaving it
    without ``commit`` aborts."""

    def __init__(self, blobs: BlobStore, *, pinned: bool = False) -> None:
        self._blobs = blobs
        self._pinned = pinned
        self._hasher = BlobHasher()
        self._lock = blobs._lock_fd(fcntl.LOCK_SH)  # held while the temporary file exists
        self._tmp = blobs.tmp_folder / f"{secrets.token_hex(8)}.part"
        try:
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, FILE_MODE)
        except OSError as exc:
            os.close(self._lock)
            raise BlobError(f"cannot write a blob in {blobs.tmp_folder}: {exc.strerror}", code="io") from None
        self._file: BinaryIO | None = os.fdopen(fd, "wb")
        self.state = "OPEN"

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._hasher.size

    def write(self, chunk: bytes) -> None:
        """Add the next bytes; past ``max_blob`` the writer fails (``blob_too_large``)."""
        if self.state != "OPEN" or self._file is None:
            raise BlobError(f"this blob writer is {self.state}", code="blob_state")
        if self._hasher.size + len(chunk) > self._blobs.max_blob:
            self._fail()
            raise BlobError(f"a blob is at most {self._blobs.max_blob} bytes", code="blob_too_large")
        try:
            self._file.write(chunk)
        except OSError as exc:
            self._fail()
            raise BlobError(f"cannot write a blob: {exc.strerror}", code="io") from None
        self._hasher.update(chunk)

    def commit(self, expected: BlobId | bytes | None = None) -> BlobId:
        """Put the blob in place and record it; return its id. With ``expected``, bytes that hash to
        another id are refused (``blob_mismatch``) and nothing is kept."""
        if self.state != "OPEN" or self._file is None:
            raise BlobError(f"this blob writer is {self.state}", code="blob_state")
        got = self._hasher.blob_id()
        try:
            if self._hasher.size == 0:
                raise BlobError("a blob has at least one byte", code="blob_empty")
            if expected is not None and got.hash != _as_hash(expected):
                want = expected if isinstance(expected, BlobId) else BlobId(expected)
                raise BlobError(f"the bytes received are blob {got}, not {want}", code="blob_mismatch")
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            self._blobs._place(self._tmp, got)
        except OSError as exc:
            self._fail()
            raise BlobError(f"cannot store blob {got}: {exc.strerror or exc}", code="io") from None
        except BaseException:
            self._fail()
            raise
        self.state = "DONE"
        self._release()
        self._blobs._record(got, self._hasher.size, pinned=self._pinned)
        return got

    def abort(self) -> None:
        """Give up: the temporary file is removed (nothing if the writer already ended)."""
        if self.state == "OPEN":
            self._fail()

    def _fail(self) -> None:
        self.state = "FAILED"
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        with contextlib.suppress(OSError):
            self._tmp.unlink()
        self._release()

    def _release(self) -> None:
        if self._lock >= 0:
            os.close(self._lock)  # closing the descriptor drops its flock
            self._lock = -1

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


class BlobStore:
    """The blobs of one home: files under ``folder`` (``HOME/blobs``), rows in ``db``.

    ``max_blob``: the largest blob written (at most ``MAX_BLOB``, spec §8.5); ``now``: wall-clock
    milliseconds (tests pass a fake). Opening it removes what crashed writers left behind.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        db: Database,
        *,
        max_blob: int = MAX_BLOB,
        now: Callable[[], int] = wall_ms,
    ) -> None:
        if not 1 <= max_blob <= MAX_BLOB:
            raise BlobError(f"max_blob must be from 1 to {MAX_BLOB} bytes", code="bad_argument")
        self.folder = make_private_dir(folder)
        self.tmp_folder = make_private_dir(self.folder / "tmp")
        self.db = db
        self.max_blob = max_blob
        self.now = now
        self.clean()

    # -- writing ---------------------------------------------------------------------------------------
    def writer(self, *, pinned: bool = False) -> BlobWriter:
        """A ``BlobWriter`` for a new blob; ``pinned`` blobs are never evicted by ``gc``."""
        return BlobWriter(self, pinned=pinned)

    def put_bytes(
        self, data: bytes, *, expected: BlobId | bytes | None = None, pinned: bool = False
    ) -> BlobId:
        """Store ``data`` as a blob; return its id (see ``BlobWriter.commit`` for ``expected``)."""
        with self.writer(pinned=pinned) as w:
            for start in range(0, len(data), CHUNK):
                w.write(data[start : start + CHUNK])
            return w.commit(expected)

    def put_file(self, path: str | os.PathLike[str], *, pinned: bool = False) -> BlobId:
        """Store the file at ``path`` as a blob, read in chunks; return its id."""
        try:
            source = open(path, "rb")  # noqa: SIM115 - closed below, errors typed
        except OSError as exc:
            raise BlobError(f"cannot read {path}: {exc.strerror}", code="io") from None
        with source, self.writer(pinned=pinned) as w:
            while chunk := source.read(CHUNK):
                w.write(chunk)
            return w.commit()

    def _place(self, tmp: Path, blob: BlobId) -> None:
        """Rename a checked temporary file to the blob's name (an existing copy is kept: it is the
        same bytes, never a part of them)."""
        target = self.path_of(blob)
        if target.exists():
            tmp.unlink()
            return
        new_folder = not target.parent.exists()
        make_private_dir(target.parent)
        os.replace(tmp, target)
        sync_folder(target.parent)
        if new_folder:
            sync_folder(self.folder)

    def _record(self, blob: BlobId, size: int, *, pinned: bool) -> None:
        now = self.now()
        with self.db.transaction() as cur:
            cur.execute(
                "INSERT INTO blobs (id, size, added, last_used, pinned) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET last_used = excluded.last_used, "
                "pinned = max(blobs.pinned, excluded.pinned)",
                (blob.hash, size, now, now, int(pinned)),
            )

    def pin(self, blob: BlobId, pinned: bool = True) -> bool:
        """Pin (or unpin) a stored blob; False when there is no such blob."""
        with self.db.transaction() as cur:
            cur.execute("UPDATE blobs SET pinned = ? WHERE id = ?", (int(pinned), blob.hash))
            return cur.rowcount > 0

    # -- reading ---------------------------------------------------------------------------------------
    def path_of(self, blob: BlobId) -> Path:
        """Where the blob's file is (whether or not it is there)."""
        name = blob.hash.hex()
        return self.folder / name[:2] / name

    def has(self, blob: BlobId) -> bool:
        return self.path_of(blob).is_file()

    def size(self, blob: BlobId) -> int | None:
        """The blob's size in bytes, or None when it is not here."""
        try:
            return self.path_of(blob).stat().st_size
        except OSError:
            return None

    def open_blob(self, blob: BlobId) -> BinaryIO:
        """The blob's file, open for reading; ``NotFound`` when it is not here. Touches ``last_used``."""
        try:
            fd = os.open(self.path_of(blob), os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"no blob {blob} here") from None
        except OSError as exc:
            raise BlobError(f"cannot read blob {blob}: {exc.strerror}", code="io") from None
        self._touch(blob)
        return os.fdopen(fd, "rb")

    def read(self, blob: BlobId, *, chunk_size: int = CHUNK) -> Iterator[bytes]:
        """The blob's bytes in chunks, checked against its id as they go: a file that no longer
        hashes to its name is removed and the last step raises ``blob_corrupt``."""
        hasher = BlobHasher()
        with self.open_blob(blob) as fh:
            while chunk := fh.read(chunk_size):
                hasher.update(chunk)
                yield chunk
        if hasher.blob_id() != blob:
            self._forget(blob)
            raise BlobError(f"the file of blob {blob} is damaged; it was removed", code="blob_corrupt")

    def _touch(self, blob: BlobId) -> None:
        with self.db.transaction() as cur:
            cur.execute("UPDATE blobs SET last_used = ? WHERE id = ?", (self.now(), blob.hash))

    def remove(self, blob: BlobId) -> bool:
        """Remove a blob, pinned or not (its post was deleted, spec §8.2.9); False when it was not here.

        The file goes before the row, so a crash between leaves a row without a file, which ``gc``
        drops. Holds ``tmp.lock`` shared, as writers do: it waits for ``gc`` (which must not record a
        file this removes) and never for writers."""
        fd = self._lock_fd(fcntl.LOCK_SH)
        try:
            held = self.has(blob) or bool(self.db.read("SELECT 1 FROM blobs WHERE id = ?", (blob.hash,)))
            self._forget(blob)
        finally:
            os.close(fd)
        return held

    def _forget(self, blob: BlobId) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path_of(blob).unlink()
        with self.db.transaction() as cur:
            cur.execute("DELETE FROM blobs WHERE id = ?", (blob.hash,))

    def listing(self) -> list[dict[str, Any]]:
        """Every recorded blob, most recently used first: ``{"id", "size", "added", "last_used",
        "pinned"}`` (times in ms)."""
        rows = self.db.read(
            "SELECT id, size, added, last_used, pinned FROM blobs ORDER BY last_used DESC, id"
        )
        return [
            {
                "id": str(BlobId(bytes(r[0]))),
                "size": r[1],
                "added": r[2],
                "last_used": r[3],
                "pinned": bool(r[4]),
            }
            for r in rows
        ]

    def usage(self) -> dict[str, int]:
        """``{"blobs", "bytes", "pinned", "pinned_bytes"}`` over the recorded blobs."""
        row = self.db.read(
            "SELECT count(*), coalesce(sum(size), 0), coalesce(sum(pinned), 0), "
            "coalesce(sum(CASE WHEN pinned THEN size ELSE 0 END), 0) FROM blobs"
        )[0]
        return {"blobs": row[0], "bytes": row[1], "pinned": row[2], "pinned_bytes": row[3]}

    # -- upkeep ----------------------------------------------------------------------------------------
    def _lock_fd(self, operation: int) -> int:
        """An open descriptor of ``tmp.lock`` holding ``operation`` (``LOCK_SH``/``LOCK_EX``, maybe
        ``| LOCK_NB``); ``BlockingIOError`` if it would wait. Closing it releases the lock."""
        fd = os.open(self.folder / "tmp.lock", os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC, FILE_MODE)
        try:
            fcntl.flock(fd, operation)
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextlib.contextmanager
    def _exclusive(self, timeout: float) -> Iterator[None]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fd = self._lock_fd(fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise BlobError("blobs are being written; try again later", code="blob_busy") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            os.close(fd)

    def clean(self) -> int:
        """Remove the temporary files of writers that died; return how many. Does nothing (0) while
        a writer is at work: its file is not a leftover."""
        try:
            fd = self._lock_fd(fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0
        removed = 0
        try:
            for leftover in self.tmp_folder.glob("*.part"):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
                    removed += 1
        finally:
            os.close(fd)
        return removed

    def gc(
        self, quota: int, keep: Collection[BlobId | bytes] = (), *, timeout: float = 30.0
    ) -> dict[str, Any]:
        """Evict unpinned blobs not in ``keep``, least recently used first, until the blobs take at
        most ``quota`` bytes (pinned and kept ones stay even past it). Returns ``{"removed": [ids],
        "freed", "blobs", "bytes", "quota"}``; ``blob_busy`` if writers hold it up past ``timeout`` s."""
        kept = {_as_hash(k) for k in keep}
        with self._exclusive(timeout):
            self._reconcile()
            total = self.usage()["bytes"]
            removed: list[str] = []
            freed = 0
            if total > quota:
                rows = self.db.read("SELECT id, size FROM blobs WHERE pinned = 0 ORDER BY last_used, id")
                for raw, size in rows:
                    if total <= quota:
                        break
                    if bytes(raw) in kept:
                        continue
                    blob = BlobId(bytes(raw))
                    self._forget(blob)
                    removed.append(str(blob))
                    total -= size
                    freed += size
        usage = self.usage()
        return {
            "removed": removed,
            "freed": freed,
            "blobs": usage["blobs"],
            "bytes": usage["bytes"],
            "quota": quota,
        }

    def _reconcile(self) -> None:
        """Make the rows match the files (under the exclusive lock): rows of files gone are dropped,
        files without a row are recorded, as last used when they were written."""
        on_disk: dict[bytes, tuple[int, int]] = {}
        for sub in self.folder.iterdir():
            if len(sub.name) != 2 or not sub.is_dir():
                continue
            for path in sub.iterdir():
                if _HEX.fullmatch(path.name) and path.name[:2] == sub.name and path.is_file():
                    st = path.stat()
                    on_disk[bytes.fromhex(path.name)] = (st.st_size, st.st_mtime_ns // 1_000_000)
        rows = {bytes(r[0]) for r in self.db.read("SELECT id FROM blobs")}
        with self.db.transaction() as cur:
            for gone in rows - on_disk.keys():
                cur.execute("DELETE FROM blobs WHERE id = ?", (gone,))
            for new in on_disk.keys() - rows:
                size, written = on_disk[new]
                cur.execute(
                    "INSERT INTO blobs (id, size, added, last_used, pinned) VALUES (?, ?, ?, ?, 0)",
                    (new, size, written, written),
                )
