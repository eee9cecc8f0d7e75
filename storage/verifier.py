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
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager

from tidings.protocol import Entry
from tidings.protocol.entry import SIGNING_DOMAIN
from tidings.protocol.identity import verify_signature

from .batch import signing_message

log = logging.getLogger("tidings.storage")

__all__ = ["CHUNK", "IDLE_SECONDS", "PARALLEL_MIN", "PROCESS_MIN", "Verdicts", "Verifier", "check_signatures"]

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


def check_signatures(items: list[Signed]) -> list[bool]:
    """Ed25519 check of each ``(key, signature, message)`` (spec §5.2); runs in a worker or here."""
    return [verify_signature(key, signature, message) for key, signature, message in items]


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

    def __init__(self, *, threads: int = 2, processes: int = 0, idle: float = IDLE_SECONDS) -> None:
        self.threads = max(1, threads)
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
                            initializer=_ignore_interrupts,
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
    """Signature verdicts of a batch's entries, computed in chunks on a pool (or here, lazily)."""

    def __init__(self, verifier: Verifier | None, size: int) -> None:
        self._verifier = verifier
        self._pool = verifier.pool_for(size) if verifier is not None else None
        self._chunk: list[Signed] = []
        self._jobs: list[tuple[Future[list[bool]] | None, list[Signed]]] = []
        self._where: dict[bytes, tuple[int, int]] = {}  # entry hash -> (job, position)
        self._done: dict[int, list[bool]] = {}

    def add(self, entry: Entry) -> None:
        self._where[entry.hash] = (len(self._jobs), len(self._chunk))
        self._chunk.append(signed_parts(entry))
        if len(self._chunk) == CHUNK:
            self.submit()

    def submit(self) -> None:
        if self._chunk:
            chunk, self._chunk = self._chunk, []
            future = None
            if self._pool is not None:
                try:
                    with _interrupts_blocked():  # the pool may start a worker process now
                        future = self._pool.submit(check_signatures, chunk)
                except (BrokenProcessPool, RuntimeError):  # broken, or shut down meanwhile
                    self._broken()
                except OSError as exc:  # a worker process could not be started
                    if self._verifier is not None:
                        self._verifier.give_up_processes(exc)
                    self._pool = None
            self._jobs.append((future, chunk))  # no future: checked here when asked

    def _broken(self) -> None:
        if self._pool is not None and self._verifier is not None:
            self._verifier.discard(self._pool)
        self._pool = None

    def ok(self, entry: Entry) -> bool:
        job, pos = self._where[entry.hash]
        done = self._done.get(job)
        if done is None:
            future, chunk = self._jobs[job]
            done = None
            if future is not None:
                try:
                    done = future.result()
                except BrokenProcessPool:
                    self._broken()
            if done is None:
                done = check_signatures(chunk)
            self._done[job] = done
        return done[pos]
