"""The running node's files in its home: ``node.json`` (for ``tidings status`` and the benchmarks) and
the X25519 transport key."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from tidings.node.home import Home
from tidings.storage.files import read_private, write_file

__all__ = ["NodeFile", "load_transport_key"]


class NodeFile:
    """``node.json``: written atomically while the node runs, removed when it stops.

    ``describe`` gives its content (without ``pid``); ``keep_fresh`` rewrites it once a second while
    the counters it is given change, so ``tidings status`` and the benchmarks see progress."""

    def __init__(self, path: Path, describe: Callable[[], dict[str, Any]]) -> None:
        self.path = path
        self.describe = describe

    def write(self) -> None:
        info = {"pid": os.getpid(), **self.describe()}
        # rewritten about once a second while the node runs: atomic, but not worth an fsync
        write_file(self.path, json.dumps(info).encode(), replace=True, sync=False)

    def remove(self) -> None:
        """Remove the file if this process wrote it (another node may have started on this home)."""
        try:
            info = json.loads(self.path.read_text())
            if info.get("pid") == os.getpid():
                self.path.unlink()
        except (OSError, ValueError):
            pass

    async def keep_fresh(self, counters: Callable[[], dict[str, int]]) -> None:
        shown = counters()
        while True:
            await trio.sleep(1.0)
            if counters() != shown:
                shown = counters()
                self.write()


def load_transport_key(home: Home) -> bytes:
    """The node's X25519 transport key (home/transport.key, created 0600 on first use)."""
    path = home.path / "transport.key"
    try:
        data = read_private(path)
        if len(data) == 32:
            return data
    except FileNotFoundError:
        pass
    data = secrets.token_bytes(32)
    write_file(path, data, replace=True)
    return data
