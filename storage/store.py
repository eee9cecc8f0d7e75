"""The store: one SQLite file (WAL) holding logs, payloads, forks and projections.

Synchronous on purpose: one-shot CLI commands use it directly, and the running node calls it through
one dedicated database thread (``storage.thread``). Several processes may open one home at once; every
write is one ``BEGIN IMMEDIATE`` transaction, so a half-written entry never exists and writers queue
behind SQLite's lock instead of interleaving.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgpack
from tidings.protocol import (
    Content,
    DecodeError,
    Entry,
    ForkProof,
    InvalidContent,
    InvalidEntry,
    ProtocolError,
    SigningKey,
    check_fork,
    create_entry,
    decode_content,
    encode_content,
    signature_ok,
    skip_target,
    type_of,
    verify_links,
    verify_payload,
)

from .errors import CorruptStore, DiskFull, FeedForked, StoreError, StoreLocked
from .projections import apply_content
from .reads import ReadMixin
from .schema import migrate

__all__ = ["IngestResult", "Rejected", "Store"]

T = TypeVar("T")

#: Below this many new signatures a batch is verified on the calling thread.
_PARALLEL_MIN = 64


@dataclass(frozen=True, slots=True)
class Rejected:
    """One entry refused by ``ingest``: which, and the rule it broke."""

    author: bytes | None
    seq: int | None
    code: str
    reason: str


@dataclass(slots=True)
class IngestResult:
    """What a batch did: new entries stored, duplicates, refusals and forks found."""

    added: list[Entry] = field(default_factory=list)
    duplicates: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    forks: list[ForkProof] = field(default_factory=list)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _translate(exc: sqlite3.Error) -> StoreError:
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


class Store(ReadMixin):
    """A Tidings store at ``path``. Use as a context manager or call ``close()``."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True, verify_threads: int = 2) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise StoreError(f"no store at {self.path}", code="no_store")
        self._verify_threads = max(1, verify_threads)
        self._pool: ThreadPoolExecutor | None = None
        try:
            self.conn = sqlite3.connect(
                self.path, isolation_level=None, timeout=30.0, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise _translate(exc) from None
        try:
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = NORMAL")
            self.conn.execute("PRAGMA foreign_keys = OFF")
            self.conn.execute("PRAGMA busy_timeout = 30000")
            self.conn.execute("PRAGMA cache_size = -65536")
            migrate(self.conn)
        except sqlite3.Error as exc:
            self.conn.close()
            raise _translate(exc) from None
        except StoreError:
            self.conn.close()
            raise

    # -- plumbing --------------------------------------------------------------------------------------
    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction (``BEGIN IMMEDIATE``); rolled back on any error."""
        cur = self.conn.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _translate(exc) from None
        try:
            yield cur
            cur.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(cur)
            raise _translate(exc) from None
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
            raise _translate(exc) from None

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

    # -- writing our own log ---------------------------------------------------------------------------
    def append(self, key: SigningKey, content: Content, *, now: int | None = None) -> Entry:
        """Sign ``content`` as the next entry of ``key``'s feed and store it, in one transaction."""
        payload = encode_content(content)
        with self.transaction() as cur:
            return self._append_locked(cur, key, content, payload, now_ms() if now is None else now)

    def append_many(self, key: SigningKey, contents: list[Content], *, now: int | None = None) -> list[Entry]:
        """Append several entries in one transaction (all or none)."""
        stamp = now_ms() if now is None else now
        with self.transaction() as cur:
            return [self._append_locked(cur, key, c, encode_content(c), stamp) for c in contents]

    def _append_locked(
        self, cur: sqlite3.Cursor, key: SigningKey, content: Content, payload: bytes, now: int
    ) -> Entry:
        author = key.public_key
        row = cur.execute(
            "SELECT head_seq, head_hash, head_ts, forked FROM feeds WHERE author = ?", (author,)
        ).fetchone()
        head_seq, head_hash, head_ts, forked = row if row else (0, None, 0, 0)
        if forked:
            raise FeedForked("your feed is marked forked; resolve the fork before posting")
        seq = head_seq + 1
        skip_seq = skip_target(seq)
        skiplink = None
        if skip_seq is not None:
            found = cur.execute(
                "SELECT hash FROM entries WHERE author = ? AND seq = ?", (author, skip_seq)
            ).fetchone()
            if found is None:
                raise StoreError(f"own log is missing seq {skip_seq}; restore it before posting", code="gap")
            skiplink = found[0]
        entry = create_entry(
            key,
            seq=seq,
            backlink=head_hash,
            skiplink=skiplink,
            timestamp=max(now, head_ts),
            payload=payload,
        )
        if row is None:
            cur.execute("INSERT INTO feeds (author, kind) VALUES (?, 'own')", (author,))
        self._insert(cur, entry, payload, content)
        return entry

    def _insert(
        self, cur: sqlite3.Cursor, entry: Entry, payload: bytes | None, content: Content | None
    ) -> None:
        """Insert a verified entry with its payload and projections; advance the feed head."""
        tomb = cur.execute("SELECT author FROM tombstones WHERE target = ?", (entry.hash,)).fetchone()
        deleted = tomb is not None and tomb[0] == entry.author
        if deleted:
            payload, content = None, None
        kind = None if content is None else type_of(content)
        cur.execute(
            "INSERT INTO entries (hash, author, seq, ts, type, raw, payload, deleted, received) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            (
                entry.hash,
                entry.author,
                entry.seq,
                entry.timestamp,
                kind,
                entry.raw,
                payload,
                int(deleted),
                now_ms(),
            ),
        )
        rowid = cur.lastrowid
        assert rowid is not None
        # head = highest stored seq (logs may have gaps after partial sync or a damaged import)
        cur.execute(
            "UPDATE feeds SET count = count + 1, "
            "head_hash = CASE WHEN head_seq < ?1 THEN ?2 ELSE head_hash END, "
            "head_ts = CASE WHEN head_seq < ?1 THEN ?3 ELSE head_ts END, "
            "head_seq = max(head_seq, ?1) WHERE author = ?4",
            (entry.seq, entry.hash, entry.timestamp, entry.author),
        )
        if content is not None:
            apply_content(cur, rowid, entry, content)

    # -- ingesting other feeds -------------------------------------------------------------------------
    def _verify_many(self, entries: list[Entry]) -> list[bool]:
        if len(entries) < _PARALLEL_MIN or self._verify_threads == 1:
            return [signature_ok(e) for e in entries]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._verify_threads, thread_name_prefix="tidings-verify")
        step = -(-len(entries) // self._verify_threads)
        chunks = [entries[i : i + step] for i in range(0, len(entries), step)]
        out: list[bool] = []
        for part in self._pool.map(lambda chunk: [signature_ok(e) for e in chunk], chunks):
            out.extend(part)
        return out

    def ingest(self, items: list[tuple[bytes, bytes | None]], *, kind: str = "remote") -> IngestResult:
        """Verify and store entries of any feeds (``(raw entry, payload or None)`` pairs) in one transaction.

        Signatures are checked first (on worker threads), then links against stored and batch
        neighbours, grouped by author in seq order. Invalid entries are refused with their rule's code;
        valid ones are kept even when others in the batch fail. A second valid entry at a stored seq is a
        fork: the proof is kept and the feed stops accepting entries.
        """
        result = IngestResult()
        decoded: list[tuple[Entry, bytes | None]] = []
        for raw, payload in items:
            try:
                entry = Entry.decode(raw)
                if payload is not None:
                    verify_payload(entry, payload)
            except ProtocolError as exc:
                author, seq = _peek(raw)
                result.rejected.append(Rejected(author, seq, exc.code, str(exc.args[0])))
                continue
            decoded.append((entry, payload))
        if not decoded:
            return result
        known = self._known_hashes([e.hash for e, _ in decoded])
        fresh = [(e, p) for e, p in decoded if e.hash not in known]
        ok = self._verify_many([e for e, _ in fresh])
        valid: list[tuple[Entry, bytes | None]] = []
        for (entry, payload), good in zip(fresh, ok, strict=True):
            if good:
                valid.append((entry, payload))
            else:
                result.rejected.append(
                    Rejected(entry.author, entry.seq, "bad_signature", "invalid signature")
                )
        dup_payloads = [(e, p) for e, p in decoded if e.hash in known and p is not None]
        result.duplicates += len(decoded) - len(fresh)
        valid.sort(key=lambda ep: (ep[0].author, ep[0].seq))
        with self.transaction() as cur:
            for entry, payload in dup_payloads:
                self._fill_payload(cur, entry, payload)
            batch: dict[tuple[bytes, int], Entry] = {}
            for entry, payload in valid:
                self._ingest_one(cur, entry, payload, batch, result, kind)
        return result

    def _known_hashes(self, hashes: list[bytes]) -> set[bytes]:
        known: set[bytes] = set()
        for i in range(0, len(hashes), 500):
            part = hashes[i : i + 500]
            marks = ",".join("?" * len(part))
            known.update(r[0] for r in self.read(f"SELECT hash FROM entries WHERE hash IN ({marks})", part))
        return known

    @staticmethod
    def _entry_at(
        cur: sqlite3.Cursor, batch: dict[tuple[bytes, int], Entry], author: bytes, seq: int
    ) -> Entry | _Stored | None:
        """The entry at (author, seq) from this batch, or the link fields of a stored one."""
        got = batch.get((author, seq))
        if got is not None:
            return got
        row = cur.execute(
            "SELECT hash, ts, raw FROM entries WHERE author = ? AND seq = ?", (author, seq)
        ).fetchone()
        return None if row is None else _Stored(author, seq, row[0], row[1], row[2])

    def _ingest_one(
        self,
        cur: sqlite3.Cursor,
        entry: Entry,
        payload: bytes | None,
        batch: dict[tuple[bytes, int], Entry],
        result: IngestResult,
        kind: str,
    ) -> None:
        author, seq = entry.author, entry.seq
        feed = cur.execute("SELECT forked FROM feeds WHERE author = ?", (author,)).fetchone()
        if feed is not None and feed[0]:
            result.rejected.append(Rejected(author, seq, "feed_forked", "feed is forked"))
            return
        same = self._entry_at(cur, batch, author, seq)
        if same is not None:
            if same.hash == entry.hash:
                result.duplicates += 1
                return
            stored = same if isinstance(same, Entry) else Entry.decode(same.raw)
            proof = check_fork(stored, entry)
            assert proof is not None
            self._record_fork(cur, proof)
            result.forks.append(proof)
            result.rejected.append(Rejected(author, seq, "fork", "a different entry is stored at this seq"))
            return
        try:
            previous = self._entry_at(cur, batch, author, seq - 1) if seq > 1 else None
            target = skip_target(seq)
            skip = self._entry_at(cur, batch, author, target) if target is not None else None
            verify_links(entry, previous=previous, skip=skip)  # type: ignore[arg-type]
            following = self._entry_at(cur, batch, author, seq + 1)
            if following is not None and following.backlink != entry.hash:
                raise InvalidEntry("the stored next entry links to another entry", code="link_conflict")
        except InvalidEntry as exc:
            result.rejected.append(Rejected(author, seq, exc.code, str(exc.args[0])))
            return
        content: Content | None = None
        if payload is not None:
            try:
                content = decode_content(payload)
            except (DecodeError, InvalidContent):
                content = None  # kept (the hash matches) but not shown: spec §8.4
        if feed is None:
            cur.execute("INSERT OR IGNORE INTO feeds (author, kind) VALUES (?, ?)", (author, kind))
        self._insert(cur, entry, payload, content)
        batch[(author, seq)] = entry
        result.added.append(entry)

    def _fill_payload(self, cur: sqlite3.Cursor, entry: Entry, payload: bytes) -> None:
        """A known entry arrives with the payload we lacked (e.g. after a partial sync)."""
        row = cur.execute("SELECT id, payload, deleted FROM entries WHERE hash = ?", (entry.hash,)).fetchone()
        if row is None or row[1] is not None or row[2]:
            return
        try:
            content: Content | None = decode_content(payload)
        except (DecodeError, InvalidContent):
            content = None
        kind = None if content is None else type_of(content)
        cur.execute("UPDATE entries SET payload = ?, type = ? WHERE id = ?", (payload, kind, row[0]))
        if content is not None:
            apply_content(cur, row[0], entry, content)

    def _record_fork(self, cur: sqlite3.Cursor, proof: ForkProof) -> None:
        cur.execute(
            "INSERT OR IGNORE INTO forks (author, seq, proof, found) VALUES (?,?,?,?)",
            (proof.author, proof.seq, proof.encode(), now_ms()),
        )
        cur.execute("UPDATE feeds SET forked = 1 WHERE author = ?", (proof.author,))

    def add_fork_proof(self, proof: ForkProof) -> None:
        """Record a fork proof received from elsewhere (spec §7) and mark the feed forked."""
        with self.transaction() as cur:
            cur.execute("INSERT OR IGNORE INTO feeds (author) VALUES (?)", (proof.author,))
            self._record_fork(cur, proof)


@dataclass(frozen=True, slots=True)
class _Stored:
    """The link-relevant fields of a stored entry, read without decoding it (hot path of ingest)."""

    author: bytes
    seq: int
    hash: bytes
    timestamp: int
    raw: bytes

    @property
    def backlink(self) -> bytes | None:
        return Entry.decode(self.raw).backlink


def _peek(raw: bytes) -> tuple[bytes | None, int | None]:
    """Best-effort author and seq of an undecodable entry, for error reports."""
    try:
        value = msgpack.unpackb(raw, raw=False)
        author = value[1] if isinstance(value[1], bytes) else None
        seq = value[2] if isinstance(value[2], int) else None
        return author, seq
    except Exception:
        return None, None
