"""The running node: one trio nursery owning the listener, dialers, watcher and connections.

``Node.run`` is started with ``nursery.start`` and reports its listening address through
``task_status.started``. Cancelling the surrounding scope (Ctrl-C, SIGTERM) stops every task; the
store is closed by the database thread's context manager and ``node.json`` is removed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import trio
from tidings.protocol import SigningKey, feed_id_text
from tidings.storage import gossip, peers
from tidings.storage.store import Store
from tidings.storage.thread import DatabaseThread
from tidings.storage.writer import now_ms

from .home import Home
from .peer import PeerConnection, describe_error
from .transport import SecureChannel

__all__ = ["DEFAULT_LIMITS", "Node", "parse_address"]

log = logging.getLogger("tidings.node")

DEFAULT_LIMITS: dict[str, Any] = {
    "max_connections": 64,
    "handshake_timeout": 10.0,
    "frames_per_second": 2000,
    "entries_per_second": 50000,
    "newest": 0,
    "hops": 2,
    "ban_seconds": 300.0,
    "poll_interval": 0.1,
}


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); raise ValueError with a clear message."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"not a HOST:PORT address: {text!r}")
    return host.strip("[]"), int(port)


@dataclass
class PeerRecord:
    address: str
    failures: int = 0
    banned_until: float = 0.0
    last_reason: str = ""
    strikes: int = 0


@dataclass
class Penalties:
    by_host: dict[str, PeerRecord] = field(default_factory=dict)

    def strike(self, host: str, reason: str, ban_seconds: float) -> None:
        rec = self.by_host.setdefault(host, PeerRecord(host))
        rec.strikes += 1
        rec.last_reason = reason
        rec.banned_until = time.monotonic() + ban_seconds * min(rec.strikes, 8)

    def banned(self, host: str) -> bool:
        rec = self.by_host.get(host)
        return rec is not None and rec.banned_until > time.monotonic()


class Node:
    def __init__(
        self,
        home: Home,
        key: SigningKey,
        *,
        listen: str = "0.0.0.0:7433",
        peers: list[str] | None = None,
        network_key: bytes | None = None,
        limits: dict[str, Any] | None = None,
    ) -> None:
        self.home = home
        self.key = key
        self.listen = listen
        self.peers = list(peers or [])
        self.network_key = network_key
        self.limits = {**DEFAULT_LIMITS, **(limits or {})}
        self.agent = "tidings/0.1"
        self.transport_private = load_transport_key(home)
        self.db: DatabaseThread
        self.connections: dict[int, PeerConnection] = {}
        self.penalties = Penalties()
        self.wanted: set[bytes] = {key.public_key}
        self.blocked: set[bytes] = set()
        self.address: str | None = None
        self._changed = trio.Event()
        self._ingested = 0

    # -- shared state used by connections --------------------------------------------------------------
    async def current_wants(self, extra: set[bytes] | None = None) -> set[bytes]:
        """Feeds to replicate (spec §12.3); ``extra`` (a synced peer's own feed) unless we block it."""
        me = self.key.public_key
        self.wanted = await self.db.call(gossip.wanted_feeds, me, self.limits["hops"])
        self.blocked = set(await self.db.call(Store.graph_targets, me, "block"))
        return self.wanted | ((extra or set()) - self.blocked)

    def wake(self) -> None:
        """Wake every pusher once (new entries are stored)."""
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def note_ingested(self, n: int) -> None:
        if n:
            self._ingested += n
            self.wake()

    async def broadcast_forks(self, proofs: list[bytes]) -> None:
        """Tell every connected peer about new fork proofs (they verify them themselves)."""
        for conn in list(self.connections.values()):
            with contextlib.suppress(Exception):  # a broken peer must not stop the broadcast
                await conn.send_forks(proofs)

    def statistics(self) -> dict[str, Any]:
        return {
            "listen": self.address,
            "feed": feed_id_text(self.key.public_key),
            "connections": [c.statistics() for c in self.connections.values()],
            "ingested": self._ingested,
        }

    # -- running ---------------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        host, port = parse_address(self.listen)
        async with DatabaseThread(self.home.store_path) as db:
            self.db = db
            await self.current_wants()
            await db.call(peers.mark_all_disconnected)
            listeners = await trio.open_tcp_listeners(port, host=host or None)
            sock = listeners[0].socket
            bound_host, bound_port = sock.getsockname()[:2]
            self.address = f"{host or bound_host}:{bound_port}"
            self._write_node_file()
            try:
                async with trio.open_nursery() as nursery:
                    for listener in listeners:
                        nursery.start_soon(self._accept_loop, listener, nursery)
                    nursery.start_soon(self._watch)
                    remembered = await db.call(peers.dial_addresses, self.key.public_key)
                    for peer in dict.fromkeys([*self.peers, *remembered]):
                        nursery.start_soon(self._dial_forever, peer, nursery)
                    log.info("listening on %s as %s", self.address, feed_id_text(self.key.public_key))
                    task_status.started(self.address)
            finally:
                with trio.CancelScope(shield=True):
                    self._remove_node_file()
                    for listener in listeners:
                        await listener.aclose()
                    await db.call(peers.mark_all_disconnected)

    def _write_node_file(self) -> None:
        info = {
            "pid": os.getpid(),
            "listen": self.address,
            "feed": feed_id_text(self.key.public_key),
            "peers": [
                {"feed": feed_id_text(c.feed), "address": c.address} for c in self.connections.values()
            ],
        }
        tmp = self.home.node_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, self.home.node_file)

    def _remove_node_file(self) -> None:
        try:
            info = json.loads(self.home.node_file.read_text())
            if info.get("pid") == os.getpid():
                self.home.node_file.unlink()
        except (OSError, ValueError):
            pass

    async def _watch(self) -> None:
        """Notice entries written by other processes (and ourselves) and wake the pushers."""
        last = await self.db.call(gossip.max_row)
        while True:
            await trio.sleep(self.limits["poll_interval"])
            now = await self.db.call(gossip.max_row)
            if now != last:
                last = now
                old = self.wanted
                wants = await self.current_wants()
                if wants - old:
                    for conn in list(self.connections.values()):
                        await conn.send_wants(wants)
                self.wake()

    def _local_host(self) -> str | None:
        """Dial from the address we listen on (tests give each node its own 127.x address)."""
        host = parse_address(self.listen)[0]
        return None if host in ("", "0.0.0.0", "::") else host

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            stream = await listener.accept()
            host = _peer_host(stream)
            if self.penalties.banned(host):
                log.info("refusing %s: banned (%s)", host, self.penalties.by_host[host].last_reason)
                await stream.aclose()
                continue
            if len(self.connections) >= self.limits["max_connections"]:
                log.info("refusing %s: connection limit reached", host)
                await stream.aclose()
                continue
            nursery.start_soon(self._handle, stream, host, False, False)

    async def _dial_forever(self, address: str, nursery: trio.Nursery) -> None:
        """Keep a connection to a configured peer, redialling with exponential backoff."""
        host, port = parse_address(address)
        delay = 1.0
        while True:
            if not self.penalties.banned(host):
                try:
                    stream = await trio.open_tcp_stream(host, port, local_address=self._local_host())
                except OSError as exc:
                    log.info("cannot reach %s: %s", address, exc.strerror or exc)
                else:
                    started = time.monotonic()
                    await self._handle(stream, address, True, False)
                    if time.monotonic() - started > 30:
                        delay = 1.0
            await trio.sleep(delay)
            delay = min(delay * 2, 60.0)

    async def _note_peer(self, conn: PeerConnection, *, connected: bool) -> None:
        address = conn.address if conn.initiator else None  # an inbound port is not dialable
        source = "peer" if conn.initiator else "inbound"
        await self.db.call(peers.note_peer, conn.feed, address, source, connected, now_ms())

    async def _handle(
        self, stream: trio.abc.Stream, address: str, initiator: bool, once: bool
    ) -> PeerConnection | None:
        """Handshake, then replicate until the connection ends; never raises for peer faults."""
        conn: PeerConnection | None = None
        host = address.rpartition(":")[0] if initiator else address
        try:
            channel = await SecureChannel.handshake(
                stream,
                initiator=initiator,
                identity=self.key,
                transport_private=self.transport_private,
                network_key=self.network_key,
                timeout=self.limits["handshake_timeout"],
            )
            if channel.remote_feed == self.key.public_key:
                log.info("connected to ourselves at %s; closing", address)
                return None
            conn = PeerConnection(self, channel, address, initiator=initiator, once=once)
            self.connections[id(conn)] = conn
            self._write_node_file()
            await self._note_peer(conn, connected=True)
            log.info("connected %s %s", feed_id_text(conn.feed), address)
            await conn.run()
        except Exception as exc:  # every peer fault ends here: none may take the node down
            code, reason = describe_error(exc)
            if code == "closed":
                log.info("peer %s disconnected: %s", address, reason)
            elif code == "error":
                log.exception("unexpected error with peer %s", address)
            else:
                log.warning("dropping peer %s: %s (%s)", address, reason, code)
                self.penalties.strike(host, f"{code}: {reason}", self.limits["ban_seconds"])
        finally:
            with trio.CancelScope(shield=True):
                if conn is not None and self.connections.pop(id(conn), None) is not None:
                    self._write_node_file()
                    await self._note_peer(conn, connected=False)
                await _close(stream)
        return conn

    async def sync_once(self, address: str) -> PeerConnection:
        """Connect to ``address``, replicate both ways until both are caught up, then leave."""
        host, port = parse_address(address)
        async with DatabaseThread(self.home.store_path) as db:
            self.db = db
            await self.current_wants()
            stream = await trio.open_tcp_stream(host, port, local_address=self._local_host())
            try:
                channel = await SecureChannel.handshake(
                    stream,
                    initiator=True,
                    identity=self.key,
                    transport_private=self.transport_private,
                    network_key=self.network_key,
                    timeout=self.limits["handshake_timeout"],
                )
                conn = PeerConnection(self, channel, address, initiator=True, once=True)
                await conn.run()
                await db.call(peers.note_peer, conn.feed, address, "sync", False, now_ms())
                return conn
            finally:
                await _close(stream)


def _peer_host(stream: trio.abc.Stream) -> str:
    try:
        return str(stream.socket.getpeername()[0])  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return "?"


async def _close(stream: trio.abc.Stream) -> None:
    with (
        trio.move_on_after(1),
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError),
    ):
        await stream.aclose()


def load_transport_key(home: Home) -> bytes:
    """The node's X25519 transport key (home/transport.key, created 0600 on first use)."""
    path = home.path / "transport.key"
    try:
        data = path.read_bytes()
        if len(data) == 32:
            return data
    except FileNotFoundError:
        pass
    data = secrets.token_bytes(32)
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(path.with_suffix(".tmp"), path)
    return data
