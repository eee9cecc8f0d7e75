"""Every file Tidings writes goes through here: atomic, no-follow, no-overwrite, owner-only.

Theory of operation. A file is written under a fresh temporary name in the target's own folder
(``.NAME.RANDOM.tmp``), opened ``O_CREAT | O_EXCL | O_NOFOLLOW`` with mode 0600, so a symlink or file
planted at a predictable name is never opened, let alone followed; the data is fsynced; then the file
is put in place in one step:

- ``replace=False`` (the default): ``link`` the temporary file to the target, which fails when
  anything, a symlink included, is already there: an existing file is never overwritten, even by a
  race between the check and the write;
- ``replace=True``: ``rename`` over the target. A rename replaces the directory entry, never the
  content of what it named, so a symlink or hard link at the target cannot redirect the write.

The folder is fsynced after, so the new name survives a crash. A reader sees the old file or the
complete new one, never a part. Files that hold secrets (keys, tokens) are read with
``read_private``, which refuses a file that group or others may read or write (as ssh refuses such a
private key), naming the ``chmod 600`` that fixes it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import StoreError

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "FileError",
    "atomic_writer",
    "create_private_file",
    "make_private_dir",
    "private_store_files",
    "read_private",
    "sync_folder",
    "write_file",
]

#: Mode of every file and folder Tidings creates: the owner's only, whatever the umask.
FILE_MODE = 0o600
DIR_MODE = 0o700
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class FileError(StoreError):
    """A file that cannot or must not be written or read.

    Codes: ``exists`` (the target exists and overwriting was not asked for), ``inside_home`` (the
    target is inside the home folder), ``unsafe_permissions`` (a secret readable or writable by
    others), ``io`` (the system refused).
    """

    code = "io"


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` (resolved through every symlink, as the kernel would) lies in ``folder``."""
    try:
        target = path.parent.resolve() / path.name
        return target == folder.resolve() or target.is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop
        return False


@contextlib.contextmanager
def atomic_writer(
    path: str | os.PathLike[str], *, replace: bool = False, outside: Path | None = None, sync: bool = True
) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through, put in place (see the module docstring) on success.

    ``replace``: overwrite an existing target (else ``FileError`` code ``exists``). ``outside``: a
    folder the target must not lie in (the home: its store, keys and tokens are never a target).
    ``sync=False`` skips the fsyncs, for a status file nobody needs after a crash (node.json).
    On any error the temporary file is removed and the target is untouched.
    """
    target = Path(path)
    if outside is not None and _inside(target, outside):
        raise FileError(f"{target} is inside the home {outside}; choose a file elsewhere", code="inside_home")
    if not replace and (target.exists() or target.is_symlink()):
        raise FileError(f"{target} exists; pass --force to replace it", code="exists")
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, FILE_MODE)
    except OSError as exc:
        raise FileError(f"cannot write {target}: {exc.strerror}", code="io") from None
    placed = False
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
        _place(tmp, target, replace=replace)
        placed = True
        if sync:
            sync_folder(target.parent)
    except FileExistsError:
        raise FileError(f"{target} exists; pass --force to replace it", code="exists") from None
    except OSError as exc:
        raise FileError(f"cannot write {target}: {exc.strerror or exc}", code="io") from None
    finally:
        if not placed or not replace:  # after a link the temporary name is left to remove
            with contextlib.suppress(OSError):
                tmp.unlink()


def _place(tmp: Path, target: Path, *, replace: bool) -> None:
    if replace:
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)  # atomic, and fails if anything is at the target
    except FileExistsError:
        raise
    except OSError:
        # a file system without hard links: check, then rename (a narrow race, nothing followed)
        if target.exists() or target.is_symlink():
            raise FileExistsError(str(target)) from None
        os.rename(tmp, target)


def sync_folder(folder: Path) -> None:
    """fsync ``folder``, so the names just put in it survive a crash (best effort)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | _CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_file(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    replace: bool = False,
    outside: Path | None = None,
    sync: bool = True,
) -> None:
    """Write ``data`` to ``path`` atomically, mode 0600 (see ``atomic_writer``)."""
    with atomic_writer(path, replace=replace, outside=outside, sync=sync) as fh:
        fh.write(data)


def create_private_file(path: str | os.PathLike[str], data: bytes) -> bool:
    """Create ``path`` (0600) holding ``data`` unless it exists; True if this call created it.

    Two processes racing to create the same file both succeed, and both then read the one that won.
    """
    try:
        write_file(path, data, replace=False)
    except FileError as exc:
        if exc.code == "exists":
            return False
        raise
    return True


def make_private_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and missing parents) as a 0700 folder; an existing folder is left as it is."""
    folder = Path(path)
    try:
        folder.mkdir(mode=DIR_MODE, parents=True)
    except FileExistsError:
        if not folder.is_dir():
            raise FileError(f"{folder} is not a folder", code="io") from None
        return folder
    except OSError as exc:
        raise FileError(f"cannot create {folder}: {exc.strerror}", code="io") from None
    os.chmod(folder, DIR_MODE)  # mkdir's mode passes through the umask; the folder is ours alone
    return folder


def private_store_files(path: Path, *, create: bool) -> None:
    """Make a SQLite store at ``path`` the owner's only, whatever the umask.

    A new store file is created empty with mode 0600 before SQLite opens it (SQLite gives the ``-wal``
    and ``-shm`` files the mode of the database file); an existing one, or its ``-wal`` or ``-shm``,
    left readable by others (by an older version) is tightened to 0600.
    """
    if str(path) == ":memory:":
        return
    if create:
        with contextlib.suppress(OSError):  # an existing store, or a missing folder SQLite then reports
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, FILE_MODE))
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
        with contextlib.suppress(OSError):
            st = os.stat(path.with_name(name), follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077 and st.st_uid == os.getuid():
                os.chmod(path.with_name(name), FILE_MODE)


def read_private(path: str | os.PathLike[str], *, limit: int = 1 << 16) -> bytes:
    """The content of a secret file (at most ``limit`` bytes); ``FileNotFoundError`` if missing.

    Refused (``FileError`` code ``unsafe_permissions``) when group or others may read or write it:
    a secret others could read is no longer secret, one they could write is no longer ours.
    """
    fd = os.open(path, os.O_RDONLY | _CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode) and mode & 0o077:
            raise FileError(
                f"{path} may be read or changed by other users (mode {stat.S_IMODE(mode):04o}); "
                f"run 'chmod 600 {path}'",
                code="unsafe_permissions",
            )
        with os.fdopen(os.dup(fd), "rb") as fh:
            return fh.read(limit)
    finally:
        os.close(fd)
