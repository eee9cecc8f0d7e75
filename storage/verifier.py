"""Signature checks of entry batches, off the thread that decodes and stores them.

Theory of operation. ``Store.prepare`` hands the signatures of a batch to a ``Verifier`` in chunks of
``CHUNK`` as it decodes; ``Verdicts.ok`` later waits for a chunk's answers. Where the chunks run:

- fewer than ``PARALLEL_MIN`` signatures in the batch: on the calling thread, when first asked;
- otherwise on worker threads (libsodium releases the GIL while it verifies), or, for batches of at
  least ``PROCESS_MIN`` signatures when the store was opened with ``verify_processes``, in worker
  processes.

Why processes for bulk ingest: each libsodium call gives up the GIL and must take it back afterwards.
While the ingest's own Python runs on another thread (decoding, link checks, rows), a verifying thread
that finished a signature waits for the GIL until the interpreter's switch interval hands it over, so
two verifying threads beside a busy ingest ran almost one at a time (measured: wall time equal to CPU
time, bench/RESULTS.md). A process has a GIL of its own.

The processes are started (``spawn``) on the first bulk batch and stopped after ``IDLE_SECONDS``
without one, or when the store closes: a node keeps them while it syncs, not for the rest of its life.
They ignore SIGINT from their very start (SIGINT is blocked in the thread that submits, so a worker
started then inherits it blocked): a terminal's Ctrl-C reaches the whole process group, and the node
handles it and closes the store. A job sent to a pool that broke (a worker was killed) is checked on
the calling thread instead: a verdict is never lost or guessed. Where processes cannot be started at
all (no working ``sem_open``, no ``fork``), the store says so once in the log and verifies on threads.

Private messages (spec §8.6) are opened by the same jobs. A store with the home's ``BoxKey`` gives it to
its worker processes once, as they start (``_start_worker``; the key pickles as its X25519 secret, never
the signing key), and a bulk batch's boxes go with the signatures of their chunk (``Verdicts.add_box``):
the one X25519 and the slot opens every box costs then run beside the writer, not on the preparing
thread that shares its GIL (bench/RESULTS.md, private). ``Verdicts.outcomes`` is what they gave, with
the outcomes of boxes opened on the calling thread (``Verdicts.opened``: smaller batches, or a store
whose pool was started before its key was set). A new key stops the pool; the next starts with it.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeAlias

from tidings.protocol import Box, DecodeError, InvalidContent, Opened, Undecryptable, decode_content
from tidings.protocol.box import open_box
from tidings.protocol.entry import SIGNING_DOMAIN
from tidings.protocol.identity import verify_signature

if TYPE_CHECKING:
    from tidings.protocol import BoxKey, Entry

from .batch import signing_message

log = logging.getLogger("tidings.storage")

__all__ = [
    "CHUNK",
    "IDLE_SECONDS",
    "PARALLEL_MIN",
    "PROCESS_MIN",
    "Outcome",
    "Verdicts",
    "Verifier",
    "check_chunk",
    "check_signatures",
    "open_boxes",
]

#: Below this many signatures a batch is verified on the calling thread.
PARALLEL_MIN = 64
#: From this many signatures on, a batch goes to the worker processes (when the store has them).
PROCESS_MIN = 512
#: Signatures per job: small enough that writing starts soon, large enough to amortise a job.
CHUNK = 128
#: Worker processes are stopped after this many seconds without a bulk batch.
IDLE_SECONDS = 60.0

#: (public key, signature, signed bytes)
Signed = tuple[bytes, bytes, bytes]
#: A box to open: (author, seq, backlink, payload) of its entry
Sealed = tuple[bytes, int, "bytes | None", bytes]
#: What opening one box gave (``protocol.box.open_box``): None when it is not ours.
Outcome: TypeAlias = Opened | Undecryptable | None

#: The home's key in a worker process (``_start_worker``)
_worker_key: BoxKey | None = None


def check_signatures(items: list[Signed]) -> list[bool]:
    """Ed25519 check of each ``(key, signature, message)`` (spec §5.2); runs in a worker or here."""
    return [verify_signature(key, signature, message) for key, signature, message in items]


def open_boxes(boxes: list[Sealed], key: BoxKey | None) -> list[Outcome]:
    """Open each box with ``key`` (spec §8.6); a payload that is not a box opens nothing."""
    out: list[Outcome] = []
    for author, seq, backlink, payload in boxes:
        try:
            box = decode_content(payload)
        except (DecodeError, InvalidContent):  # checked before it was sent here: never, but no guess
            box = None
        ours = key is not None and isinstance(box, Box)
        out.append(open_box(box, author=author, seq=seq, backlink=backlink, key=key) if ours else None)  # type: ignore[arg-type]
    return out


def check_chunk(items: list[Signed], boxes: list[Sealed]) -> tuple[list[bool], list[Outcome]]:
    """A worker process's job: the signatures of a chunk, and its boxes opened with the home's key."""
    return check_signatures(items), open_boxes(boxes, _worker_key)


def _start_worker(key: BoxKey | None) -> None:
    global _worker_key
    _ignore_interrupts()
    _worker_key = key


def signed_parts(entry: Entry) -> Signed:
    return entry.author, entry.signature, signing_message(entry, SIGNING_DOMAIN)


def _ignore_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def _interrupts_blocked() -> Iterator[None]:
    """SIGINT blocked in this thread meanwhile (a process started now starts with it blocked)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class Verifier:
    """The worker pools of one store (created on first use, shut down by ``close``)."""

    def __init__(
        self,
        *,
        threads: int = 2,
        processes: int = 0,
        idle: float = IDLE_SECONDS,
        box_key: BoxKey | None = None,
    ) -> None:
        self.threads = max(1, threads)
        self._box_key = box_key
        self.processes = max(0, processes)
        self.idle = idle
        self._threads: ThreadPoolExecutor | None = None
        self._processes: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()  # ``prepare`` may run on another thread than ``ingest``
        self._last_bulk = 0.0
        self._reaper: threading.Timer | None = None
        self.pools_started = 0  # worker-process pools started so far (they stop when idle)

    def pool_for(self, n: int) -> Executor | None:
        """Where a batch of ``n`` signatures is checked (None: on the calling thread)."""
        if n < PARALLEL_MIN:
            return None
        with self._lock:
            if self.processes and n >= PROCESS_MIN:
                if self._processes is None:
                    try:
                        self._processes = ProcessPoolExecutor(
                            self.processes,
                            mp_context=multiprocessing.get_context("spawn"),
                            initializer=_start_worker,
                            initargs=(self._box_key,),
                        )
                        self.pools_started += 1
                    except (OSError, ImportError, ValueError) as exc:  # e.g. no working sem_open here
                        log.warning(
                            "no verify processes (%s: %s); verifying on threads", type(exc).__name__, exc
                        )
                        self.processes = 0
                if self._processes is not None:
                    self._last_bulk = time.monotonic()
                    self._reap_later(self.idle)
                    return self._processes
            if self.threads == 1:
                return None
            if self._threads is None:
                self._threads = ThreadPoolExecutor(self.threads, thread_name_prefix="tidings-verify")
            return self._threads

    @property
    def box_key(self) -> BoxKey | None:
        """The home's key for private messages, given to worker processes as they start."""
        return self._box_key

    @box_key.setter
    def box_key(self, key: BoxKey | None) -> None:
        with self._lock:
            if key is self._box_key or (key is not None and key.same(self._box_key)):
                return
            self._box_key = key
            pool, self._processes = self._processes, None  # its workers hold the old key
        if pool is not None:
            pool.shutdown(wait=False)

    def key_of(self, pool: Executor | None) -> BoxKey | None:
        """The key whose boxes ``pool`` opens: the store's, when ``pool`` is its worker processes
        started with it; else None (boxes are opened by the caller)."""
        with self._lock:
            # the workers were started with the current key: a new key stops them (``box_key``)
            return self._box_key if pool is not None and pool is self._processes else None

    def _reap_later(self, delay: float) -> None:
        """(Under the lock.) Look again in ``delay`` seconds whether the worker processes sit idle."""
        if self._reaper is None:
            self._reaper = threading.Timer(delay, self._reap)
            self._reaper.daemon = True
            self._reaper.start()

    def _reap(self) -> None:
        """Stop the worker processes once no bulk batch came for ``idle`` seconds: a node keeps them
        only while it syncs, not for the rest of its life (each holds its own interpreter's memory)."""
        with self._lock:
            self._reaper = None
            pool = self._processes
            if pool is None:
                return
            quiet = time.monotonic() - self._last_bulk
            if quiet < self.idle:
                self._reap_later(self.idle - quiet)
                return
            self._processes = None
        pool.shutdown(wait=False)  # a job still running finishes first
        log.debug("verify processes stopped after %.0f s without a bulk batch", quiet)

    def give_up_processes(self, exc: BaseException) -> None:
        """Worker processes cannot be started here: verify on threads from now on."""
        log.warning("no verify processes (%s: %s); verifying on threads", type(exc).__name__, exc)
        with self._lock:
            pool, self._processes, self.processes = self._processes, None, 0
        if pool is not None:
            pool.shutdown(wait=False)

    def discard(self, pool: Executor) -> None:
        """Forget a pool that broke (a worker process died); the next bulk batch starts a new one."""
        with self._lock:
            if pool is self._processes:
                self._processes = None
        pool.shutdown(wait=False)

    def verify(self, entries: list[Entry]) -> list[bool]:
        """The signature verdict of each entry, in order."""
        verdicts = Verdicts(self, len(entries))
        for entry in entries:
            verdicts.add(entry)
        verdicts.submit()
        return [verdicts.ok(entry) for entry in entries]

    def close(self) -> None:
        with self._lock:
            pools, self._threads, self._processes = [self._threads, self._processes], None, None
            if self._reaper is not None:
                self._reaper.cancel()
                self._reaper = None
        for pool in pools:
            if pool is not None:
                pool.shutdown()


class Verdicts:
    """Signature verdicts of a batch's entries, computed in chunks on a pool (or here, lazily), and
    what opening its boxes gave (``outcomes``)."""

    def __init__(self, verifier: Verifier | None, size: int) -> None:
        self._verifier = verifier
        self._pool = verifier.pool_for(size) if verifier is not None else None
        #: the key the pool opens boxes with (None: ``add_box`` is not to be used, open them here)
        self.box_key = verifier.key_of(self._pool) if verifier is not None else None
        self._chunk: list[Signed] = []
        self._boxes: list[Sealed] = []
        self._jobs: list[
            tuple[Future[tuple[list[bool], list[Outcome]]] | None, list[Signed], list[Sealed]]
        ] = []
        self._where: dict[bytes, tuple[int, int]] = {}  # entry hash -> (job, position)
        self._box_where: dict[bytes, tuple[int, int]] = {}  # entry hash -> (job, position of its box)
        self._done: dict[int, tuple[list[bool], list[Outcome]]] = {}
        #: boxes opened by the caller, by entry hash
        self.opened: dict[bytes, Outcome] = {}
        self.outcomes: Mapping[bytes, Outcome] = _Outcomes(self)

    def add(self, entry: Entry) -> None:
        self._where[entry.hash] = (len(self._jobs), len(self._chunk))
        self._chunk.append(signed_parts(entry))
        if len(self._chunk) == CHUNK:
            self.submit()

    def add_box(self, entry: Entry, payload: bytes) -> None:
        """Open the box ``payload`` of ``entry`` with the pool's key, with the current chunk."""
        self._box_where[entry.hash] = (len(self._jobs), len(self._boxes))
        self._boxes.append((entry.author, entry.seq, entry.backlink, payload))

    def submit(self) -> None:
        if self._chunk or self._boxes:
            chunk, boxes, self._chunk, self._boxes = self._chunk, self._boxes, [], []
            future = None
            if self._pool is not None:
                try:
                    with _interrupts_blocked():  # the pool may start a worker process now
                        if boxes:
                            future = self._pool.submit(check_chunk, chunk, boxes)
                        else:
                            future = self._pool.submit(_signatures_only, chunk)
                except (BrokenProcessPool, RuntimeError):  # broken, or shut down meanwhile
                    self._broken()
                except OSError as exc:  # a worker process could not be started
                    if self._verifier is not None:
                        self._verifier.give_up_processes(exc)
                    self._pool = None
            self._jobs.append((future, chunk, boxes))  # no future: checked here when asked

    def _broken(self) -> None:
        if self._pool is not None and self._verifier is not None:
            self._verifier.discard(self._pool)
        self._pool = None

    def _job(self, job: int) -> tuple[list[bool], list[Outcome]]:
        done = self._done.get(job)
        if done is None:
            future, chunk, boxes = self._jobs[job]
            if future is not None:
                try:
                    done = future.result()
                except BrokenProcessPool:
                    self._broken()
            if done is None:
                done = check_signatures(chunk), open_boxes(boxes, self.box_key)
            self._done[job] = done
        return done

    def ok(self, entry: Entry) -> bool:
        job, pos = self._where[entry.hash]
        return self._job(job)[0][pos]

    def outcome(self, entry_hash: bytes) -> Outcome:
        """What opening the box of the entry ``entry_hash`` gave (KeyError: no box of it was opened)."""
        if entry_hash in self.opened:
            return self.opened[entry_hash]
        job, pos = self._box_where[entry_hash]
        return self._job(job)[1][pos]


def _signatures_only(items: list[Signed]) -> tuple[list[bool], list[Outcome]]:
    return check_signatures(items), []


class _Outcomes(Mapping[bytes, Outcome]):
    """``Verdicts.outcomes``: the boxes of a batch that were opened, by entry hash (waits for a job)."""

    def __init__(self, verdicts: Verdicts) -> None:
        self._verdicts = verdicts

    def __getitem__(self, entry_hash: bytes) -> Outcome:
        return self._verdicts.outcome(entry_hash)

    def __contains__(self, entry_hash: object) -> bool:
        v = self._verdicts
        return entry_hash in v.opened or entry_hash in v._box_where

    def __iter__(self) -> Iterator[bytes]:
        v = self._verdicts
        return iter({**dict.fromkeys(v.opened), **dict.fromkeys(v._box_where)})

    def __len__(self) -> int:
        return sum(1 for _ in self)
