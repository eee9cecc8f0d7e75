"""Pillow's work for the web page: checking stored pictures and preparing uploads, off the event loop.

node/media.py is CPU-bound and must run in one thread at a time (its bomb guard changes the process's
warning filters), so every call goes through one ``trio.Lock`` into a worker thread. A blob's bytes
never change (it is named by their hash), so a picture that passed ``inspect_picture`` once is
remembered by id with its type (up to ``cache_size`` of them, least recently used forgotten first):
a file has one format, so it is never a picture of another type. A refusal is not remembered (a blob
that is not a picture now never becomes one), it costs only a header read.
"""

from __future__ import annotations

import functools
import os
from collections import OrderedDict

import trio
from tidings.node import media

__all__ = ["Pictures"]


class Pictures:
    """``inspect`` stored pictures and ``prepare`` uploads, one at a time, in a worker thread."""

    def __init__(self, *, max_pixels: int = media.DEFAULT_MAX_PIXELS, cache_size: int = 1024) -> None:
        self.max_pixels = max_pixels
        self.cache_size = cache_size
        self._lock = trio.Lock()
        self._checked: OrderedDict[bytes, tuple[str, int, int]] = OrderedDict()
        self.inspected = 0  # files whose headers were read (cache misses)

    def known(self, blob: bytes) -> str | None:
        """The picture type the blob ``blob`` passed ``inspect`` as, if remembered."""
        found = self._checked.get(blob)
        return None if found is None else found[0]

    async def inspect(self, blob: bytes, path: str | os.PathLike[str], mime: str) -> tuple[int, int]:
        """``(width, height)`` of the blob ``blob`` (its file at ``path``) as a ``mime`` picture, or
        ``MediaError`` (``media.inspect_picture``)."""
        found = self._checked.get(blob)
        if found is not None:
            self._checked.move_to_end(blob)
            if found[0] != mime:
                raise media.MediaError(f"the file is a {found[0]} picture, not {mime}", code="not_a_picture")
            return found[1], found[2]
        check = functools.partial(media.inspect_picture, path, mime, max_pixels=self.max_pixels)
        async with self._lock:
            width, height = await trio.to_thread.run_sync(check)
        self.inspected += 1
        self._checked[blob] = (mime, width, height)
        while len(self._checked) > self.cache_size:
            self._checked.popitem(last=False)
        return width, height

    async def prepare(self, path: str | os.PathLike[str], *, max_blob: int) -> media.Prepared:
        """``media.prepare`` of the file at ``path``: a picture re-encoded without its metadata, with
        its preview, or an opaque file (``MediaError`` for what cannot be attached)."""
        work = functools.partial(media.prepare, path, max_blob=max_blob, max_pixels=self.max_pixels)
        async with self._lock:
            return await trio.to_thread.run_sync(work)
