"""Signature checks in worker processes (``storage/verifier.py``): same verdicts as in-thread checks,
and a worker that dies costs no verdict."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tidings.protocol import SigningKey
from tidings.storage.store import Store
from tidings.storage.verifier import PARALLEL_MIN, PROCESS_MIN, Verifier

from tests.support.entries import posts, raw

ALICE = SigningKey(bytes([2]) * 32)
BOB = SigningKey(bytes([3]) * 32)
#: a bulk batch: enough signatures to go to the worker processes
BULK = [e for e, _ in posts(BOB, PROCESS_MIN)]


@contextmanager
def _verifier(threads: int = 2, processes: int = 2, idle: float = 60.0) -> Iterator[Verifier]:
    verifier = Verifier(threads=threads, processes=processes, idle=idle)
    try:
        yield verifier
    finally:
        verifier.close()


def _tampered(pairs, *positions):
    items = raw(pairs)
    for i in positions:
        bad = bytearray(items[i][0])
        bad[-1] ^= 1  # the last byte of the signature
        items[i] = (bytes(bad), items[i][1])
    return items


def test_bulk_batches_are_checked_in_worker_processes_with_the_same_verdicts(tmp_path):
    feed = posts(ALICE, PROCESS_MIN + 100)
    items = _tampered(feed, 7, PROCESS_MIN + 50)
    with Store(tmp_path / "s.db", verify_processes=2) as store:
        prepared = store.prepare(items)
        assert type(store.verifier.pool_for(len(items))).__name__ == "ProcessPoolExecutor"
        result = store.ingest_prepared(prepared)
        assert [(r.seq, r.code) for r in result.rejected] == [
            (8, "bad_signature"),
            (PROCESS_MIN + 51, "bad_signature"),
        ]
        assert len(result.added) == len(items) - 2  # the rest is kept, with the two holes as gaps
        assert [seq for _, seq in result.gaps] == [9, PROCESS_MIN + 52]
        workers = store.verifier._processes
        assert workers is not None
    assert store.verifier._processes is None and workers._shutdown_thread  # closed with the store


def test_small_batches_stay_in_process(tmp_path):
    with _verifier() as verifier:
        assert verifier.pool_for(PARALLEL_MIN - 1) is None
        assert type(verifier.pool_for(PROCESS_MIN - 1)).__name__ == "ThreadPoolExecutor"
        assert verifier._processes is None  # not started for a small batch


def test_a_killed_worker_costs_no_verdict_and_a_new_pool_is_started():
    with _verifier(threads=1) as verifier:
        assert verifier.verify(BULK) == [True] * len(BULK)
        pool = verifier._processes
        assert pool is not None
        for pid in list(pool._processes):  # the pool's worker processes
            os.kill(pid, signal.SIGKILL)
        assert verifier.verify(BULK) == [True] * len(BULK)  # checked here, not guessed
        assert verifier.verify(BULK) == [True] * len(BULK)
        assert verifier._processes is not None and verifier._processes is not pool


def test_without_working_processes_signatures_are_checked_on_threads(monkeypatch):
    import tidings.storage.verifier as verifier_module

    def no_processes(*args, **kwargs):
        raise OSError("no sem_open here")

    monkeypatch.setattr(verifier_module, "ProcessPoolExecutor", no_processes)
    with _verifier() as verifier:
        assert verifier.verify(BULK) == [True] * len(BULK)
        assert verifier.processes == 0
        assert type(verifier.pool_for(PROCESS_MIN)).__name__ == "ThreadPoolExecutor"


def test_a_worker_that_cannot_be_started_falls_back_to_threads():
    with _verifier() as verifier:
        pool = verifier.pool_for(PROCESS_MIN)
        assert pool is not None

        def cannot_start(*args, **kwargs):
            raise OSError("fork failed")

        pool.submit = cannot_start  # type: ignore[method-assign]
        assert verifier.verify(BULK) == [True] * len(BULK)  # checked here, not guessed
        assert verifier.processes == 0 and verifier._processes is None


def test_idle_worker_processes_are_stopped_and_started_again_when_needed():
    with _verifier(idle=0.3) as verifier:
        assert verifier.verify(BULK) == [True] * len(BULK)
        pool = verifier._processes
        assert pool is not None
        workers = list(pool._processes)
        assert workers
        deadline = time.monotonic() + 10
        while verifier._processes is not None or any(Path(f"/proc/{pid}").exists() for pid in workers):
            assert time.monotonic() < deadline, "idle workers were not stopped"
            time.sleep(0.05)
        assert verifier.verify(BULK) == [True] * len(BULK)  # a new pool for the next bulk batch
        # (that pool may itself be idle again by now on a loaded machine: count the pools started)
        assert verifier.pools_started == 2 and verifier._processes is not pool
