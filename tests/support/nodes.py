"""Helpers for tests that run real nodes (real sockets on 127.x, real SQLite files)."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import trio
from tidings.node.home import Home
from tidings.node.net.node import Node
from tidings.node.net.transport import SecureChannel
from tidings.protocol import Entry, Follow, Post, SigningKey
from tidings.storage.store import Store

_hosts = itertools.count(2)


def next_host() -> str:
    """A fresh loopback address per node, so per-IP rules apply as on a real network."""
    n = next(_hosts)
    return f"127.0.{n // 250}.{n % 250 + 2}"


def make_home(tmp: Path, name: str) -> tuple[Home, SigningKey]:
    home = Home(tmp / name)
    return home, home.init(name=name)


def post(home: Home, key: SigningKey, text: str) -> Entry:
    with Store(home.store_path) as s:
        return s.append(key, Post(text=text))


def follow(home: Home, key: SigningKey, other: SigningKey) -> None:
    with Store(home.store_path) as s:
        s.append(key, Follow(feed=other.public_key))


def has_entry(home: Home, entry_hash: bytes) -> bool:
    with Store(home.store_path) as s:
        return bool(s.read("SELECT 1 FROM entries WHERE hash = ?", (entry_hash,)))


def count(home: Home, author: bytes) -> int:
    with Store(home.store_path) as s:
        return int(s.read("SELECT count(*) FROM entries WHERE author = ?", (author,))[0][0])


async def wait_until(predicate, timeout: float = 10.0, step: float = 0.05) -> float:
    """Poll ``predicate`` until true; return the seconds it took; fail the test on timeout."""
    start = trio.current_time()
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(step)
    return trio.current_time() - start


async def start_node(nursery: trio.Nursery, home: Home, key: SigningKey, **kwargs) -> Node:
    node = Node(home, key, listen=f"{next_host()}:0", **kwargs)
    await nursery.start(node.run)
    return node


async def start_writer(nursery: trio.Nursery, channel: SecureChannel) -> None:
    """Run ``channel``'s writer in ``nursery`` for a scripted peer; a connection the node closes ends it
    quietly (``send`` and ``receive`` then raise ``ChannelClosed``)."""
    await nursery.start(functools.partial(channel.run_writer, quiet=True))
