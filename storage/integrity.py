"""Whole-store verification and the self-verifying export archive.

``verify_store`` re-checks every stored entry from its raw bytes: signature, links to the stored
neighbours, payload hash and size; and SQLite's own ``quick_check``. Gaps (entries not held, e.g.
after a partial sync) are reported as information, not problems.

Archive format (spec/protocol.md §10): the magic line ``TIDINGS-ARCHIVE 1\n`` followed by a stream of
canonical msgpack records ``["entry", raw, payload or nil]`` per entry in (author, seq) order,
``["fork", proof]`` per fork proof, and a final ``["end", entries, forks]``. Every record carries its own
signatures, so import trusts nothing in the file: it verifies each entry exactly as if a peer had sent it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import msgpack
from tidings.protocol import (
    DecodeError,
    Entry,
    ForkProof,
    InvalidEntry,
    ProtocolError,
    encode,
    feed_id_text,
    skip_target,
    verify_links,
    verify_payload,
)

from .errors import StoreError
from .files import atomic_writer
from .store import Rejected, Store

__all__ = ["ARCHIVE_MAGIC", "LISTED", "export_archive", "import_archive", "verify_store"]

ARCHIVE_MAGIC = b"TIDINGS-ARCHIVE 1\n"
_BATCH = 5000
#: Refused records an import report details; the rest are only counted (by code).
LISTED = 100

Progress = Callable[[int], None]


def verify_store(store: Store, feed: bytes | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Re-verify stored logs; returns ``{"feeds", "entries", "ok", "problems", "gaps", "forks"}``."""
    problems: list[dict[str, Any]] = []
    gaps: list[dict[str, Any]] = []
    if feed is None:
        check = store.read("PRAGMA quick_check")
        if [r[0] for r in check] != ["ok"]:
            problems.append(
                {"feed": None, "seq": None, "code": "sqlite", "reason": "; ".join(r[0] for r in check)}
            )
    feeds = [feed] if feed is not None else store.feeds()
    total = 0
    for author in feeds:
        by_seq: dict[int, Entry] = {}
        rows = store.read("SELECT seq, raw, payload FROM entries WHERE author = ? ORDER BY seq", (author,))
        if feed is not None and not rows and store.feed_info(author) is None:
            raise StoreError(f"no feed {feed_id_text(author)} in this store", code="not_found")
        decoded: list[tuple[int, Entry, bytes | None]] = []
        for seq, raw, payload in rows:
            try:
                entry = Entry.decode(bytes(raw))
                if entry.author != author or entry.seq != seq:
                    raise InvalidEntry("stored under the wrong author or seq", code="misfiled")
            except ProtocolError as exc:
                problems.append(_problem(author, seq, exc))
                continue
            decoded.append((seq, entry, payload))
            by_seq[seq] = entry
        good = store.verifier.verify([e for _, e, _ in decoded])
        expected = 1
        for (seq, entry, payload), sig_ok in zip(decoded, good, strict=True):
            total += 1
            if seq != expected:
                gaps.append({"feed": feed_id_text(author), "from": expected, "to": seq - 1})
            expected = seq + 1
            try:
                if not sig_ok:
                    raise InvalidEntry("invalid signature", code="bad_signature")
                target = skip_target(seq)
                verify_links(
                    entry,
                    previous=by_seq.get(seq - 1),
                    skip=by_seq.get(target) if target is not None else None,
                )
                if payload is not None:
                    verify_payload(entry, bytes(payload))
            except ProtocolError as exc:
                problems.append(_problem(author, seq, exc))
        if progress is not None:
            progress(len(rows))
    forks = [
        {"feed": feed_id_text(r[0]), "seq": r[1]}
        for r in store.read("SELECT author, seq FROM forks ORDER BY author, seq")
        if feed is None or r[0] == feed
    ]
    return {
        "feeds": len(feeds),
        "entries": total,
        "ok": not problems,
        "problems": problems,
        "gaps": gaps,
        "forks": forks,
    }


def _problem(author: bytes, seq: int, exc: ProtocolError) -> dict[str, Any]:
    return {"feed": feed_id_text(author), "seq": seq, "code": exc.code, "reason": str(exc.args[0])}


def export_archive(
    store: Store,
    path: str | os.PathLike[str],
    progress: Progress | None = None,
    *,
    replace: bool = False,
    outside: Path | None = None,
) -> dict[str, int]:
    """Write every stored entry (with its payload unless deleted) and fork proof to ``path`` atomically.

    An existing ``path`` is replaced only with ``replace``; ``outside`` is a folder (the home) the file
    must not be in. ``storage.files`` writes it: no name is followed, nothing is half-written.
    """
    entries = forks = 0
    with atomic_writer(path, replace=replace, outside=outside) as fh:
        fh.write(ARCHIVE_MAGIC)
        for author in store.feeds():
            rows = store.read("SELECT raw, payload FROM entries WHERE author = ? ORDER BY seq", (author,))
            for raw, payload in rows:
                fh.write(encode(["entry", bytes(raw), None if payload is None else bytes(payload)]))
                entries += 1
            if progress is not None:
                progress(len(rows))
        for (proof,) in store.read("SELECT proof FROM forks ORDER BY author, seq"):
            fh.write(encode(["fork", bytes(proof)]))
            forks += 1
        fh.write(encode(["end", entries, forks]))
    return {"entries": entries, "forks": forks}


class _Damaged:
    """Marks where an archive stops being readable (what came before is still imported)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _records(fh: BinaryIO) -> Iterator[Any]:
    unpacker = msgpack.Unpacker(fh, raw=False, strict_map_key=True, max_buffer_size=1 << 20)
    try:
        yield from unpacker
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        yield _Damaged(f"archive is damaged after the last good record ({type(exc).__name__})")


class _Refusals:
    """Refused records of an import: all counted (by code), only the first ``LISTED`` kept in detail.

    So an archive of millions of bad records costs constant memory and a bounded report.
    """

    def __init__(self) -> None:
        self.total = 0
        self.codes: dict[str, int] = {}
        self.listed: list[Rejected] = []

    def add(self, rejected: Rejected) -> None:
        self.total += 1
        self.codes[rejected.code] = self.codes.get(rejected.code, 0) + 1
        if len(self.listed) < LISTED:
            self.listed.append(rejected)

    def extend(self, items: list[Rejected]) -> None:
        for item in items:
            self.add(item)


def import_archive(
    store: Store, path: str | os.PathLike[str], progress: Progress | None = None
) -> dict[str, Any]:
    """Verify and add every valid entry of an archive; report the ones refused.

    The archive is read as a stream (at most one batch of entries in memory). ``refused`` counts every
    refused record and ``refused_codes`` counts them by code; ``rejected`` details the first ``LISTED``.
    """
    added = duplicates = forks_added = 0
    refusals = _Refusals()
    complete = False
    batch: list[tuple[bytes, bytes | None]] = []

    def flush() -> None:
        nonlocal added, duplicates
        if batch:
            result = store.ingest(batch)
            added += len(result.added)
            duplicates += result.duplicates
            refusals.extend(result.rejected)
            if progress is not None:
                progress(len(batch))
            batch.clear()

    try:
        fh = Path(path).open("rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror}", code="io") from None
    with fh:
        if fh.read(len(ARCHIVE_MAGIC)) != ARCHIVE_MAGIC:
            raise StoreError(f"{path} is not a Tidings archive", code="bad_archive")
        for record in _records(fh):
            if isinstance(record, _Damaged):
                refusals.add(Rejected(None, None, "bad_archive", record.reason))
                break
            if complete:
                refusals.add(Rejected(None, None, "trailing_data", "records after the end record"))
                break
            kind = record[0] if isinstance(record, list) and record else None
            if (
                kind == "entry"
                and len(record) == 3
                and isinstance(record[1], bytes)
                and (record[2] is None or isinstance(record[2], bytes))
            ):
                batch.append((record[1], record[2]))
                if len(batch) >= _BATCH:
                    flush()
            elif kind == "fork" and len(record) == 2 and isinstance(record[1], bytes):
                flush()  # the feed's entries first: once marked forked, it takes no more
                try:
                    store.add_fork_proof(ForkProof.decode(record[1]))
                    forks_added += 1
                except (ProtocolError, DecodeError) as exc:
                    refusals.add(Rejected(None, None, exc.code, f"fork proof: {exc.args[0]}"))
            elif kind == "end":
                complete = True
            else:
                refusals.add(Rejected(None, None, "bad_record", "unknown or malformed archive record"))
        flush()
    return {
        "added": added,
        "duplicates": duplicates,
        "forks": forks_added,
        "complete": complete,
        "refused": refusals.total,
        "refused_codes": refusals.codes,
        "rejected": [
            {
                "feed": feed_id_text(r.author) if r.author else None,
                "seq": r.seq,
                "code": r.code,
                "reason": r.reason,
            }
            for r in refusals.listed
        ],
    }
