"""The store: one SQLite file (WAL) holding logs, payloads, forks and projections.

``Store`` is the writing side over ``reads.Reads`` (the queries) and ``database.Database`` (the
connection, transactions and typed errors). Synchronous on purpose: one-shot CLI commands use it directly, and the running node calls it through
one dedicated database thread (``storage.thread``). Several processes may open one home at once;
every write is one ``BEGIN IMMEDIATE`` transaction, so a half-written entry never exists and writers
queue behind SQLite's lock instead of interleaving.

Batched writes go through ``writer.RowWriter`` (multi-row inserts per table); ingest reads what it
needs to check links once per batch (``batch.BatchView``) and verifies signatures on worker threads,
or in worker processes for bulk batches (``verifier``). bench/RESULTS.md has the figures.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import msgpack
from tidings.protocol import (
    Box,
    BoxKey,
    Content,
    DecodeError,
    Entry,
    ForkProof,
    InvalidContent,
    InvalidEntry,
    Message,
    ProtocolError,
    SigningKey,
    check_fork,
    create_entry,
    decode_content,
    encode_content,
    hash_bytes,
    seal,
    type_of,
    verify_links,
    verify_payload,
)

from .batch import BatchView, Stored, skip_target
from .blob_drops import drop_marked, mark_unnamed
from .blob_refs import payload_blobs
from .blobs import BlobStore
from .clock import wall_ms
from .errors import FeedForked, StoreError
from .messages import open_one, open_pending
from .projections import apply_content
from .reads import Reads
from .verifier import Outcome, Verdicts, Verifier
from .writer import RowWriter

__all__ = ["IngestResult", "Prepared", "Rejected", "Store"]

#: ``rng(n)`` returns ``n`` random bytes (for sealing private messages, spec §8.6).
Rng = Callable[[int], bytes]

T = TypeVar("T")


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
    #: (author, seq) of added entries whose predecessor is not held: a hole below them, or the start
    #: of a partial log (the node asks for holes again, spec §12.7)
    gaps: list[tuple[bytes, int]] = field(default_factory=list)


class Store(Reads):
    """A Tidings store at ``path``. Use as a context manager or call ``close()``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        verify_threads: int = 2,
        verify_processes: int = 0,
        blobs_folder: str | os.PathLike[str] | None = None,
        box_key: BoxKey | None = None,
    ) -> None:
        """``verify_threads``: signature checks of a batch run on this many threads;
        ``verify_processes``: bulk batches go to this many worker processes instead (``verifier``);
        ``blobs_folder``: the home's blobs (``HOME/blobs``): the blobs a delete leaves unnamed are
        removed from there once it is committed (``blob_drops``); without it they are only marked;
        ``box_key``: the home's key for private messages: boxes are opened as they are stored
        (storage/messages.py); without it they wait until a process that has it opens them."""
        super().__init__(path, create=create)
        self.verifier = Verifier(threads=verify_threads, processes=verify_processes, box_key=box_key)
        self.blobs_folder = None if blobs_folder is None else Path(blobs_folder)

    # -- plumbing --------------------------------------------------------------------------------------
    @property
    def box_key(self) -> BoxKey | None:
        """The home's key for private messages (boxes stored without it wait in ``box_pending``)."""
        return self.verifier.box_key

    @box_key.setter
    def box_key(self, key: BoxKey | None) -> None:
        self.verifier.box_key = key

    def close(self) -> None:
        self.verifier.close()
        super().close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing our own log ---------------------------------------------------------------------------
    def append(
        self, key: SigningKey, content: Content | Message, *, now: int | None = None, rng: Rng | None = None
    ) -> Entry:
        """Sign ``content`` as the next entry of ``key``'s feed and store it, in one transaction."""
        return self.append_many(key, [content], now=now, rng=rng)[0]

    def append_many(
        self,
        key: SigningKey,
        contents: list[Content | Message],
        *,
        now: int | None = None,
        rng: Rng | None = None,
    ) -> list[Entry]:
        """Append several entries in one transaction (all or none).

        Timestamps never go back: each entry gets ``max(now, previous timestamp)`` (spec §5.3). A
        ``Message`` is sealed as a box (spec §8.6) inside the transaction, where the seq and backlink it
        is bound to are known, with random bytes from ``rng(n)``.
        """
        # refuse unencodable content before writing
        items = [c if isinstance(c, Message) else (c, encode_content(c)) for c in contents]
        stamp = wall_ms() if now is None else now
        author = key.public_key
        made: list[Entry] = []
        # Our own entries are committed with a full sync of the WAL: were a commit lost to a power cut
        # after peers got the entry, the next post would reuse its seq and fork our own feed (spec §7).
        # Other feeds' entries can be fetched again, so ingest keeps synchronous=NORMAL.
        self.conn.execute("PRAGMA synchronous = FULL")
        try:
            marked = self._append_locked(key, items, rng, stamp, author, made)
        finally:
            self.conn.execute("PRAGMA synchronous = NORMAL")
        if marked:
            _drop_marked(self)
        return made

    def _append_locked(
        self,
        key: SigningKey,
        items: list[tuple[Content, bytes] | Message],
        rng: Rng | None,
        stamp: int,
        author: bytes,
        made: list[Entry],
    ) -> int:
        """Write the entries; returns how many blobs their deletes left unnamed (``blob_drops``)."""
        with self.transaction() as cur:
            row = cur.execute(
                "SELECT head_seq, head_hash, head_ts, forked FROM feeds WHERE author = ?", (author,)
            ).fetchone()
            seq, head_hash, head_ts, forked = row if row else (0, None, 0, 0)
            if forked:
                raise FeedForked("your feed is marked forked; resolve the fork before posting")
            if row is None:
                cur.execute("INSERT INTO feeds (author, kind) VALUES (?, 'own')", (author,))
            writer = RowWriter(cur, received=stamp)  # received as stamped: spec/ranking.md §1.1
            recent: dict[int, bytes] = {}
            for item in items:
                seq += 1
                if isinstance(item, Message):  # bound to this seq and backlink (spec §8.6)
                    if rng is None:
                        raise StoreError("a private message needs an rng to be sealed", code="no_rng")
                    content: Content = seal(item, author=author, seq=seq, backlink=head_hash, rng=rng)
                    payload = encode_content(content)
                else:
                    content, payload = item
                skiplink = None
                skip_seq = skip_target(seq)
                if skip_seq is not None:
                    skiplink = recent.get(skip_seq) or _own_hash(cur, author, skip_seq)
                entry = create_entry(
                    key,
                    seq=seq,
                    backlink=head_hash,
                    skiplink=skiplink,
                    timestamp=max(stamp, head_ts),
                    payload=payload,
                )
                # a tombstone can only name an entry that exists: a new own entry has none
                writer.insert(entry, payload, content, deleted=False)
                recent[seq] = head_hash = entry.hash
                head_ts = entry.timestamp
                made.append(entry)
            writer.finish()
            if self.box_key is not None:
                open_pending(cur, self.box_key)
            return mark_unnamed(cur, writer.dropped_blobs)

    # -- ingesting other feeds -------------------------------------------------------------------------
    def ingest(self, items: list[tuple[bytes, bytes | None]], *, kind: str = "remote") -> IngestResult:
        """Verify and store entries of any feeds (``(raw entry, payload or None)`` pairs) in one transaction.

        Every new entry is checked in full: strict decoding, payload size and hash, signature, and its
        links to the stored or batch neighbours that exist (backlink, lipmaa skip link, and the stored
        next entry's backlink to it). Invalid entries are refused with their rule's code; valid ones
        are kept even when others in the batch fail. A second valid entry at a stored seq is a fork:
        the proof is kept and the feed stops accepting entries.

        Entries already stored are recognised (by author, seq and hash) and not decoded again. Signatures are checked
        on worker threads (PyNaCl releases the GIL) in chunks, from the first decoded chunk on, while
        this thread decodes, checks links and writes: both cores work (bench/RESULTS.md). To overlap
        one batch's checks with the previous batch's writes, call ``prepare`` on another thread and
        ``ingest_prepared`` here.
        """
        hashes = [hash_bytes(raw) if isinstance(raw, bytes) else b"" for raw, _ in items]
        known = _known(self, items, hashes)
        return self.ingest_prepared(self.prepare(items, known=known, hashes=hashes), kind=kind)

    def prepare(
        self,
        items: list[tuple[bytes, bytes | None]],
        *,
        known: dict[bytes, bool] | None = None,
        hashes: list[bytes] | None = None,
    ) -> Prepared:
        """Decode entries, check payloads, and start their signature checks; no database access.

        Safe to call from any thread while the store's own thread writes (the node's pipeline: the
        next batch is checked while this one is stored). ``known`` (hash -> stored copy lacks its
        payload) lets ``ingest`` skip entries it holds; without it, ``ingest_prepared`` finds them.
        """
        prepared = Prepared(Verdicts(self.verifier, len(items)))
        result, fresh, verdicts = prepared.result, prepared.fresh, prepared.verdicts
        known = known or {}
        for i, (raw, payload) in enumerate(items):
            if known:
                hash_ = (
                    hashes[i] if hashes is not None else hash_bytes(raw) if isinstance(raw, bytes) else b""
                )
                lacking = known.get(hash_)
                if lacking is False or (lacking and payload is None):
                    result.duplicates += 1  # held already: nothing to decode
                    continue
            else:
                lacking = None
            try:
                entry = Entry.decode(raw)
                if payload is not None:
                    verify_payload(entry, payload)
            except ProtocolError as exc:
                author, seq = _peek(raw)
                result.rejected.append(Rejected(author, seq, exc.code, str(exc.args[0])))
                continue
            if lacking:
                result.duplicates += 1
                prepared.fills.append((entry, payload))  # type: ignore[arg-type]
                continue
            seen = fresh.get(entry.hash)
            if seen is not None:
                result.duplicates += 1
                if seen[1] is not None or payload is None:
                    continue
            else:
                verdicts.add(entry)
            # decoded here, off the database thread (which the pipeline is bound by)
            content = _content_of(payload)
            fresh[entry.hash] = (entry, payload, content)
            if isinstance(content, Box) and self.box_key is not None:  # spec §8.6, opened once:
                if verdicts.box_key is not None:  # by the worker processes, with the signatures
                    verdicts.add_box(entry, payload)  # type: ignore[arg-type]
                else:
                    verdicts.opened[entry.hash] = open_one(entry, content, self.box_key)
        verdicts.submit()
        return prepared

    def ingest_prepared(self, prepared: Prepared, *, kind: str = "remote") -> IngestResult:
        """Check links of prepared entries against the store and write the valid ones (one transaction)."""
        result = prepared.result
        todo = sorted(prepared.fresh.values(), key=lambda epc: (epc[0].author, epc[0].seq))
        dropped: set[bytes] = set()
        with self.transaction() as cur:
            for held, late_payload in prepared.fills:
                dropped |= _fill_payload(cur, held, late_payload)
            if todo:
                view = BatchView(cur, [e for e, _, _ in todo])
                writer = RowWriter(cur, opened=prepared.opened, key=self.box_key)
                for entry, payload, content in todo:
                    if prepared.verdicts.ok(entry):
                        self._ingest_one(cur, view, writer, entry, payload, content, result, kind)
                    else:
                        result.rejected.append(
                            Rejected(entry.author, entry.seq, "bad_signature", "invalid signature")
                        )
                writer.finish()
                dropped |= writer.dropped_blobs
            if self.box_key is not None:  # boxes whose payload came late, or stored without the key
                open_pending(cur, self.box_key)
            marked = mark_unnamed(cur, dropped)
        if marked:
            _drop_marked(self)
        return result

    def _ingest_one(
        self,
        cur: sqlite3.Cursor,
        view: BatchView,
        writer: RowWriter,
        entry: Entry,
        payload: bytes | None,
        content: Content | None,
        result: IngestResult,
        kind: str,
    ) -> None:
        """Link checks and insert of one entry whose signature is valid (batch sorted by author, seq);
        ``content`` is ``payload`` decoded (``_content_of``)."""
        author, seq = entry.author, entry.seq
        forked = view.feeds.get(author)
        if forked:
            result.rejected.append(Rejected(author, seq, "feed_forked", "feed is forked"))
            return
        same = view.at(author, seq)
        if same is not None:
            if same.hash == entry.hash:  # held already (prepared without ``known``, or another process)
                result.duplicates += 1
                if payload is not None and isinstance(same, Stored):
                    writer.dropped_blobs |= _fill_payload(cur, entry, payload)
                return
            stored = same if isinstance(same, Entry) else Entry.decode(bytes(same.raw))
            proof = check_fork(stored, entry)
            assert proof is not None
            _record_fork(cur, proof)
            view.feeds[author] = 1
            result.forks.append(proof)
            result.rejected.append(Rejected(author, seq, "fork", "a different entry is stored at this seq"))
            return
        try:
            previous = view.at(author, seq - 1) if seq > 1 else None
            target = skip_target(seq)
            skip = view.at(author, target) if target is not None else None
            verify_links(entry, previous=previous, skip=skip)  # type: ignore[arg-type]
            following = view.stored.get((author, seq + 1))
            if following is not None and following.backlink != entry.hash:
                raise InvalidEntry("the stored next entry links to another entry", code="link_conflict")
        except InvalidEntry as exc:
            result.rejected.append(Rejected(author, seq, exc.code, str(exc.args[0])))
            return
        if forked is None:
            cur.execute("INSERT OR IGNORE INTO feeds (author, kind) VALUES (?, ?)", (author, kind))
            view.feeds[author] = 0
        writer.insert(entry, payload, content, deleted=(entry.hash, author) in view.tombstones)
        view.accepted[(author, seq)] = entry
        result.added.append(entry)
        if seq > 1 and previous is None:
            result.gaps.append((author, seq))

    def add_fork_proof(self, proof: ForkProof) -> None:
        """Record a fork proof received from elsewhere (spec §7) and mark the feed forked."""
        with self.transaction() as cur:
            cur.execute("INSERT OR IGNORE INTO feeds (author) VALUES (?)", (proof.author,))
            _record_fork(cur, proof)


def _own_hash(cur: sqlite3.Cursor, author: bytes, seq: int) -> bytes:
    found = cur.execute("SELECT hash FROM entries WHERE author = ? AND seq = ?", (author, seq)).fetchone()
    if found is None:
        raise StoreError(f"own log is missing seq {seq}; restore it before posting", code="gap")
    return bytes(found[0])


def _record_fork(cur: sqlite3.Cursor, proof: ForkProof) -> None:
    cur.execute(
        "INSERT OR IGNORE INTO forks (author, seq, proof, found) VALUES (?,?,?,?)",
        (proof.author, proof.seq, proof.encode(), wall_ms()),
    )
    cur.execute("UPDATE feeds SET forked = 1 WHERE author = ?", (proof.author,))


def _known(store: Store, items: list[tuple[bytes, bytes | None]], hashes: list[bytes]) -> dict[bytes, bool]:
    """Which items are stored, as hash -> the stored copy lacks its payload (and wants it).

    Looked up by (author, seq), read cheaply from the undecoded bytes, on the ``(author, seq)``
    index: entries of one feed sit together there, while their hashes are spread over the whole
    hash index (a random page read per entry in a large store).
    """
    wanted: dict[bytes, set[int]] = {}
    for raw, _ in items:
        author, seq = _peek(raw)
        if author is not None and seq is not None:
            wanted.setdefault(author, set()).add(seq)
    batch = set(hashes)
    known: dict[bytes, bool] = {}
    for author, seqs in wanted.items():
        for part in _chunks(sorted(seqs), 500):
            marks = ",".join("?" * len(part))
            rows = store.read(
                f"SELECT hash, payload IS NULL AND deleted = 0 FROM entries "
                f"WHERE author = ? AND seq IN ({marks})",
                (author, *part),
            )
            known.update((bytes(h), bool(lacking)) for h, lacking in rows if bytes(h) in batch)
    return known


def _fill_payload(cur: sqlite3.Cursor, entry: Entry, payload: bytes) -> set[bytes]:
    """A known entry arrives with the payload we lacked (e.g. after a partial sync); returns the
    blobs named by a payload it dropped (it is a delete, ``blob_drops``)."""
    row = cur.execute("SELECT id, payload, deleted FROM entries WHERE hash = ?", (entry.hash,)).fetchone()
    if row is None or row[1] is not None or row[2]:
        return set()
    content = _content_of(payload)
    kind = None if content is None else type_of(content)
    cur.execute("UPDATE entries SET payload = ?, type = ? WHERE id = ?", (payload, kind, row[0]))
    return set() if content is None else payload_blobs(apply_content(cur, row[0], entry, content))


def _drop_marked(store: Store) -> None:
    """Once the transaction that marked them has committed, remove the blobs its deletes left unnamed.
    The entries are stored whatever happens here: a blob that cannot be removed now stays marked for
    the next pass, and ``gc`` evicts it first meanwhile (``blob_drops``)."""
    if store.blobs_folder is not None:
        with contextlib.suppress(OSError, StoreError):
            drop_marked(BlobStore(store.blobs_folder, store))


def _content_of(payload: bytes | None) -> Content | None:
    """The decoded payload; None without one, or when it does not decode: such an entry is kept (its
    hash matches) but not shown (spec §8.4)."""
    if payload is None:
        return None
    try:
        return decode_content(payload)
    except (DecodeError, InvalidContent):
        return None


@dataclass(slots=True)
class Prepared:
    """A batch decoded and being signature-checked by ``Store.prepare``; store it with ``ingest_prepared``."""

    verdicts: Verdicts
    result: IngestResult = field(default_factory=IngestResult)
    #: entry hash -> (entry, payload, decoded payload)
    fresh: dict[bytes, tuple[Entry, bytes | None, Content | None]] = field(default_factory=dict)
    fills: list[tuple[Entry, bytes]] = field(default_factory=list)

    @property
    def opened(self) -> Mapping[bytes, Outcome]:
        """Entry hash -> what opening its box gave (None: not ours), for the boxes of the batch."""
        return self.verdicts.outcomes


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _peek(raw: bytes) -> tuple[bytes | None, int | None]:
    """Best-effort author and seq of an undecodable entry, for error reports."""
    try:
        value = msgpack.unpackb(raw, raw=False)
        author = value[1] if isinstance(value[1], bytes) else None
        seq = value[2] if isinstance(value[2], int) and not isinstance(value[2], bool) else None
        return author, seq
    except Exception:
        return None, None
