"""The database under the store: one SQLite connection (WAL), its transactions and typed errors.

``Database`` owns the connection and the plumbing every part of the store shares: opening and
migrating the file, ``BEGIN IMMEDIATE`` write transactions, reads whose SQLite errors come out as
``StoreError`` subclasses, and the ``meta`` table. ``reads.Reads`` adds the read queries on top of it
and ``store.Store`` the writes (own log, ingest); neither needs the other to exist.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from .errors import CorruptStore, DiskFull, StoreError, StoreLocked
from .files import private_store_files
from .projections import index_posts
from .schema import migrate

__all__ = ["Database", "translate"]

T = TypeVar("T")

#: WAL pages between automatic checkpoints.
_WAL_PAGES = 16384


def translate(exc: sqlite3.Error) -> StoreError:
    """A SQLite error as the store's typed error (full disk, busy, damaged file, other)."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and "full" in text:
        return DiskFull("the disk is full: nothing was written")
    if isinstance(exc, sqlite3.OperationalError) and "locked" in text:
        return StoreLocked("the store is busy (locked by another process); try again")
    if isinstance(exc, sqlite3.DatabaseError) and (
        "not a database" in text or "malformed" in text or "corrupt" in text
    ):
        return CorruptStore(f"the store file is damaged: {text}")
    return StoreError(f"database error: {text}")


def _check_file(path: Path, *, create: bool) -> None:
    """Refuse a store file SQLite would open wrongly or without saying which file: one we may not
    read and write (SQLite says only "unable to open database file"), and an existing one of zero
    bytes, which SQLite takes for a new database and would quietly fill with an empty schema. A
    store is never empty once created (its first page is written with the WAL mode), so zero bytes
    is a store lost, unless ``create`` made it just now (``private_store_files``).

    Only ``stat`` and ``access``: opening and closing the file here would drop the POSIX locks
    another connection of this process holds on it, and SQLite would then take itself for the last
    user of the WAL and delete it under that connection."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _cannot_open(path, exc.strerror or str(exc)) from None
    if not stat.S_ISREG(st.st_mode):
        raise _cannot_open(path, "not a file")
    if not os.access(path, os.R_OK | os.W_OK):
        raise _cannot_open(path, f"Permission denied (mode {stat.S_IMODE(st.st_mode):04o})")
    if st.st_size == 0 and not create:
        raise CorruptStore("the store file is empty (0 bytes): its data is gone", code="corrupt_store")


def _cannot_open(path: Path, why: str) -> StoreError:
    return StoreError(
        f"cannot open the store {path}: {why}; it must be a file you may read and write (chmod 600 {path})",
        code="store_access",
    )


class Database:
    """The SQLite file at ``path``, opened in WAL mode and migrated to the current schema."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise StoreError(f"no store at {self.path}", code="no_store")
        if str(self.path) != ":memory:":
            _check_file(self.path, create=create)
        private_store_files(self.path, create=create)
        try:
            self.conn = sqlite3.connect(
                self.path, isolation_level=None, timeout=30.0, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise translate(exc) from None
        try:
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = NORMAL")
            self.conn.execute("PRAGMA foreign_keys = OFF")
            self.conn.execute("PRAGMA busy_timeout = 30000")
            self.conn.execute("PRAGMA cache_size = -65536")
            # Checkpoint every 64 MB of WAL instead of 4 MB: random inserts into the hash index touch
            # ~1 page per entry, and a longer interval writes each page back once for many entries
            # (+25% ingest into a 1M-entry store, bench/RESULTS.md). The file is cut back after each.
            self.conn.execute(f"PRAGMA wal_autocheckpoint = {_WAL_PAGES}")
            self.conn.execute(f"PRAGMA journal_size_limit = {_WAL_PAGES * 4096}")
            migrate(self.conn)
        except sqlite3.Error as exc:
            self.conn.close()
            raise translate(exc) from None
        except StoreError:
            self.conn.close()
            raise

    # -- plumbing --------------------------------------------------------------------------------------
    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction (``BEGIN IMMEDIATE``); rolled back on any error."""
        cur = self.conn.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise translate(exc) from None
        try:
            yield cur
            cur.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(cur)
            raise translate(exc) from None
        except BaseException:
            self._rollback(cur)
            raise

    @staticmethod
    def _rollback(cur: sqlite3.Cursor) -> None:
        with suppress(sqlite3.Error):  # SQLite may have rolled back already (e.g. after SQLITE_FULL)
            cur.execute("ROLLBACK")

    def read(self, sql: str, params: Any = ()) -> list[Any]:
        """Run one read query; storage errors come out typed."""
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise translate(exc) from None

    def run(self, fn: Callable[[sqlite3.Cursor], T]) -> T:
        """Run ``fn(cursor)`` inside one write transaction."""
        with self.transaction() as cur:
            return fn(cur)

    def data_version(self) -> int:
        """Changes when another connection commits (used to notice other processes' writes)."""
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    # -- meta ------------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> Any:
        rows = self.read("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: Any) -> None:
        with self.transaction() as cur:
            cur.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- full-text index -------------------------------------------------------------------------------
    def update_search_index(self) -> int:
        """Add posts not yet in the full-text index (the node may call this when idle); returns how many."""
        with self.transaction() as cur:
            return index_posts(cur)

    def search_index_behind(self) -> bool:
        """True when some stored posts are not in the full-text index yet."""
        mark = self.read("SELECT value FROM meta WHERE key = 'fts_indexed'")
        top = self.read("SELECT coalesce(max(entry), 0) FROM posts")[0][0]
        return bool(top > (int(mark[0][0]) if mark else 0))
