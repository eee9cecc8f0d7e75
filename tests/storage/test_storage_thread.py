"""DatabaseThread: the node's one database thread, awaited from trio."""

from __future__ import annotations

import threading
import time

import pytest
import trio
from tidings.protocol import Post, SigningKey
from tidings.storage.errors import CorruptStore, NotFound
from tidings.storage.store import Store
from tidings.storage.thread import DatabaseThread

ME = SigningKey(bytes([1]) * 32)


async def test_calls_run_on_one_thread_and_return_results(tmp_path):
    async with DatabaseThread(tmp_path / "s.db") as db:
        entry = await db.call(Store.append, ME, Post(text="from trio"))
        assert entry.seq == 1
        got = await db.call(Store.entry, entry.hash)
        assert got["content"]["text"] == "from trio"
        names = {await db.call(lambda store: threading.current_thread().name) for _ in range(3)}
        assert names == {"tidings-db"}
        assert db.statistics()["calls"] == 5


async def test_errors_come_out_typed(tmp_path):
    async with DatabaseThread(tmp_path / "s.db") as db:
        with pytest.raises(NotFound):
            await db.call(Store.entry, b"\x00" * 32)
        # the thread survives an error
        assert (await db.call(Store.append, ME, Post(text="still here"))).seq == 1


async def test_open_error_is_raised_by_the_opener(tmp_path):
    path = tmp_path / "s.db"
    path.write_bytes(b"garbage, not a database " * 100)
    with pytest.raises(CorruptStore):
        async with DatabaseThread(path):
            pass  # pragma: no cover


async def test_many_concurrent_tasks_all_complete(tmp_path):
    results: list[int] = []
    async with DatabaseThread(tmp_path / "s.db") as db:

        async def post(i: int) -> None:
            entry = await db.call(Store.append, ME, Post(text=f"task {i}"))
            results.append(entry.seq)

        async with trio.open_nursery() as nursery:
            for i in range(100):
                nursery.start_soon(post, i)
        assert sorted(results) == list(range(1, 101))
        info = await db.call(Store.feed_info, ME.public_key)
        assert info["head"] == 100


async def test_cancellation_while_waiting_does_not_lose_the_write(tmp_path):
    started = threading.Event()

    def slow_append(store: Store) -> int:
        started.set()
        time.sleep(0.3)
        return store.append(ME, Post(text="slow but sure")).seq

    async with DatabaseThread(tmp_path / "s.db") as db:
        seqs: list[int] = []
        with trio.move_on_after(0.05) as scope:
            seqs.append(await db.call(slow_append))
            await trio.sleep(1)  # the next checkpoint delivers the cancellation
        # the call ran to completion (and returned its result) before the cancellation was delivered
        assert scope.cancel_called and scope.cancelled_caught
        assert seqs == [1]
        info = await db.call(Store.feed_info, ME.public_key)
        assert info["head"] == 1
        assert (await db.call(Store.append, ME, Post(text="next"))).seq == 2


async def test_call_after_close_is_refused(tmp_path):
    db = DatabaseThread(tmp_path / "s.db")
    async with db:
        pass
    with pytest.raises(RuntimeError):
        await db.call(Store.stats)


async def test_pipelined_ingest_from_many_tasks(tmp_path):
    from tidings.protocol import create_entry, encode_content, skip_target

    def feed(key: SigningKey, n: int) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        hashes: list[bytes] = []
        for seq in range(1, n + 1):
            payload = encode_content(Post(text=f"{seq}"))
            target = skip_target(seq)
            entry = create_entry(
                key,
                seq=seq,
                backlink=hashes[-1] if hashes else None,
                skiplink=hashes[target - 1] if target else None,
                timestamp=seq,
                payload=payload,
            )
            hashes.append(entry.hash)
            out.append((entry.raw, payload))
        return out

    feeds = [feed(SigningKey(bytes([10 + i]) * 32), 150) for i in range(4)]
    added: list[int] = []
    async with DatabaseThread(tmp_path / "s.db") as db:

        async def peer(items: list[tuple[bytes, bytes]]) -> None:
            for i in range(0, len(items), 50):
                result = await db.ingest(items[i : i + 50])
                assert not result.rejected
                added.append(len(result.added))

        async with trio.open_nursery() as nursery:
            for items in feeds:
                nursery.start_soon(peer, items)
        again = await db.ingest(feeds[0][:10])
        assert again.duplicates == 10 and not again.added
        stats = await db.call(Store.stats)
    assert sum(added) == 600 and stats["entries"] == 600
