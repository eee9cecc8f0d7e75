"""Row inserts beside threads that verify signatures: ``executemany`` against multi-row ``INSERT``.

    python bench/insert_contention.py             # 100,000 rows shaped like ``entries``
    python bench/insert_contention.py --rows 20000

Why ``storage/writer.py`` writes multi-row statements: the sqlite3 module releases the GIL around every
``sqlite3_step``, and ``executemany`` steps once per row, so beside threads that keep taking the GIL
(ingest verifies signatures on two worker threads, each call giving up and taking back the GIL) every
row waits for it again. Prints the time of each way alone, then with two threads verifying Ed25519
signatures (PyNaCl) all the time.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import threading
import time
from collections.abc import Callable

import nacl.bindings
from tidings.protocol import SigningKey
from tidings.storage.writer import insert_rows

COLUMNS = "id, hash, author, seq, ts, type, raw, payload, deleted, received"


def table() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute(
        "CREATE TABLE entries (id INTEGER PRIMARY KEY, hash BLOB NOT NULL UNIQUE, author BLOB NOT NULL, "
        "seq INTEGER NOT NULL, ts INTEGER NOT NULL, type TEXT, raw BLOB NOT NULL, payload BLOB, "
        "deleted INTEGER NOT NULL DEFAULT 0, received INTEGER NOT NULL, UNIQUE (author, seq))"
    )
    conn.execute("CREATE INDEX entries_ts ON entries (ts)")
    return conn


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    authors = [os.urandom(32) for _ in range(100)]
    rows: list[tuple[object, ...]] = [
        (i + 1, os.urandom(32), authors[i % 100], i // 100 + 1, 1_700_000_000_000 + i, "post", os.urandom(230),
         os.urandom(120), 0, 1)
        for i in range(args.rows)
    ]  # fmt: skip

    def many(conn: sqlite3.Connection) -> None:
        for start in range(0, len(rows), 1000):
            conn.executemany(
                f"INSERT INTO entries ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)", rows[start : start + 1000]
            )

    def multi(conn: sqlite3.Connection) -> None:
        for start in range(0, len(rows), 1000):
            insert_rows(conn.cursor(), f"INSERT INTO entries ({COLUMNS})", rows[start : start + 1000])

    key = SigningKey(bytes(32))
    signed = key.sign(b"x" * 150) + b"x" * 150
    stop = threading.Event()

    def verify() -> None:
        while not stop.is_set():
            nacl.bindings.crypto_sign_open(signed, key.public_key)

    def timed(way: Callable[[sqlite3.Connection], None]) -> float:
        conn = table()
        start = time.perf_counter()
        conn.execute("BEGIN")
        way(conn)
        conn.execute("COMMIT")
        return time.perf_counter() - start

    for busy in (False, True):
        threads = [threading.Thread(target=verify) for _ in range(2 if busy else 0)]
        stop.clear()
        for thread in threads:
            thread.start()
        try:
            for name, way in (("executemany", many), ("multi-row INSERT", multi)):
                took = timed(way)
                beside = "beside 2 verifying threads" if busy else "alone"
                print(f"{name:>17}, {beside:>26}: {took:.2f} s ({len(rows) / took:,.0f} rows/s)")
        finally:
            stop.set()
            for thread in threads:
                thread.join()


if __name__ == "__main__":
    main()
