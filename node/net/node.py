"""The running node: one trio nursery owning the listener, dialers, watcher and connections.

``Node.run`` is started with ``nursery.start`` and reports its listening address through
``task_status.started``. Cancelling the surrounding scope (Ctrl-C, SIGTERM) stops every task; the
store is closed by the database thread's context manager and ``node.json`` is removed.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import json
import logging
import os
import random
import secrets
import time
from typing import Any

import trio
from tidings.node import config
from tidings.node.addresses import parse_address
from tidings.node.discovery.discovery import Discovery
from tidings.node.home import Home
from tidings.node.net.manager import Candidate, ConnectionManager
from tidings.node.net.peer import PeerConnection, describe_error
from tidings.node.net.scoring import Penalties, Scores
from tidings.node.net.transport import SecureChannel
from tidings.node.services import Service, ServiceRunner
from tidings.protocol import SigningKey, feed_id_text
from tidings.storage import gossip, peers
from tidings.storage.clock import wall_ms
from tidings.storage.files import read_private, write_file
from tidings.storage.store import Store
from tidings.storage.thread import DatabaseThread

__all__ = ["DEFAULT_LIMITS", "Node"]

#: Worker processes that check the signatures of bulk batches (storage/verifier.py).
VERIFY_PROCESSES = 2

log = logging.getLogger("tidings.node")

DEFAULT_LIMITS: dict[str, Any] = dict(config.DEFAULT_LIMITS)  # the schema: node/config.py, spec/config.md


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
        bootstrap: list[str] | None = None,
        swarms: list[str] | None = None,
        dht: bool = True,
        services: list[Service] | None = None,
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
        self.scores = Scores(
            half_life=self.limits["score_half_life"], threshold=self.limits["score_threshold"]
        )
        self.manager = ConnectionManager(self)
        #: feed -> ids of connections we asked to push it eagerly (spec §12.7)
        self.eager: dict[bytes, set[int]] = {}
        self.rng = random.Random()
        self.sent_entries = 0  # entries sent to peers, all connections (copies, bench/swarm.py)
        # Rows stored lately, fetched once per change for every pusher (see ``new_rows``).
        self._rows: list[tuple[Any, ...]] = []
        self._rows_base = -1  # the cache holds every row with id > _rows_base (when >= 0)
        self._rows_stale = True
        self._rows_lock = trio.Lock()
        self._heads: dict[bytes, int] = {}
        self.duplicates = 0  # entries received that we held already
        self.repairs = 0  # holes asked for again (spec §12.7)
        self._inbound = 0
        self._inbound_by_host: dict[str, int] = {}
        self.wanted: set[bytes] = {key.public_key}
        self.blocked: set[bytes] = set()
        self.address: str | None = None
        self._changed = trio.Event()
        self._ingested = 0
        self._nursery: trio.Nursery | None = None
        self.services = [ServiceRunner(s) for s in services or []]
        self.syncing: PeerConnection | None = None  # the connection of a one-shot sync
        self.discovery: Discovery | None = (
            Discovery(self, bootstrap=list(bootstrap or []), swarms=list(swarms or [])) if dht else None
        )

    # -- shared state used by connections --------------------------------------------------------------
    async def current_wants(self, extra: set[bytes] | None = None) -> set[bytes]:
        """Feeds to replicate (spec §12.3); ``extra`` (a synced peer's own feed) unless we block it."""
        me = self.key.public_key
        self.wanted = await self.db.call(gossip.wanted_feeds, me, self.limits["hops"])
        self.blocked = set(await self.db.call(Store.graph_targets, me, "block"))
        return self.wanted | ((extra or set()) - self.blocked)

    async def refresh_wants(self) -> None:
        """Recompute the wanted feeds; ask connected peers for the new ones."""
        old = self.wanted
        wants = await self.current_wants()
        if wants - old:
            for conn in list(self.connections.values()):
                with contextlib.suppress(Exception):  # a broken peer ends on its own
                    await conn.send_wants(wants)

    def dial(
        self, address: str, *, feed: bytes | None = None, source: str = "dht", pinned: bool = False
    ) -> None:
        """Offer ``address`` to the connection manager (pinned: always kept connected)."""
        self.manager.offer(address, feed=feed, source=source, pinned=pinned)

    def penalize(self, host: str, event: str, count: float = 1.0) -> None:
        """Lower (or raise) a host's score; below the threshold cut it off (spec §12.8)."""
        score = self.scores.add(host, event, count)
        if score < self.scores.threshold and not self.penalties.banned(host):
            seconds = self.penalties.strike(
                host, "low_score", f"score {score:.0f}", self.limits["ban_seconds"]
            )
            log.warning(
                "cutting off %s: score %.0f after %s; not talking to it for %.0f s",
                host,
                score,
                event,
                seconds,
            )
            for conn in list(self.connections.values()):
                if conn.host == host:
                    conn.cancel()

    def wake(self) -> None:
        """Wake every pusher once (new entries are stored)."""
        self._rows_stale = True
        self._changed.set()
        self._changed = trio.Event()

    async def new_rows(self, after: int) -> list[tuple[Any, ...]]:
        """Rows stored after row ``after`` (``gossip.new_rows``), shared by all pushers.

        Each change wakes every connection's pusher; the first to ask reads the new rows from the
        store, the others get them from memory (the last ``_ROW_CACHE`` rows are kept).
        """
        async with self._rows_lock:
            if self._rows_base < 0 or after < self._rows_base:
                if self._rows_base >= 0:
                    return await self.db.call(gossip.new_rows, after)  # older than the cache
                self._rows_base = after
            if self._rows_stale:
                self._rows_stale = False
                high = self._rows[-1][0] if self._rows else self._rows_base
                while True:
                    fresh = await self.db.call(gossip.new_rows, high)
                    if not fresh:
                        break
                    self._rows.extend(fresh)
                    for row in fresh:
                        if row[2] > self._heads.get(row[1], -1) and row[1] in self._heads:
                            self._heads[row[1]] = row[2]
                    high = fresh[-1][0]
                    if len(fresh) < 2000:
                        break
                if len(self._rows) > _ROW_CACHE:
                    drop = len(self._rows) - _ROW_CACHE
                    self._rows_base = self._rows[drop - 1][0]
                    del self._rows[:drop]
            start = bisect.bisect_right(self._rows, after, key=lambda r: r[0])
            return self._rows[start : start + 2000]

    async def head(self, feed: bytes) -> int:
        """The highest seq held of ``feed`` (cached; raised as rows are stored)."""
        held = self._heads.get(feed)
        if held is None:
            held = (await self.db.call(gossip.heads, {feed}))[feed]
            if len(self._heads) > 100000:
                self._heads.clear()
            self._heads[feed] = max(held, self._heads.get(feed, 0))
        return self._heads[feed]

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
            "sent_entries": self.sent_entries,
            "duplicates": self.duplicates,
            "discovery": None if self.discovery is None else self.discovery.statistics(),
            "services": {r.name: r.state() for r in self.services},
            "manager": self.manager.statistics(),
        }

    def services_changed(self) -> None:
        """A service started, stopped or changed state: refresh ``node.json`` for ``tidings status``."""
        if self.address is not None:
            self._write_node_file()

    # -- running ---------------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        host, port = parse_address(self.listen)
        async with DatabaseThread(self.home.store_path, verify_processes=VERIFY_PROCESSES) as db:
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
                    self._nursery = nursery
                    for listener in listeners:
                        nursery.start_soon(self._accept_loop, listener, nursery)
                    nursery.start_soon(self._watch)
                    nursery.start_soon(self.manager.run, nursery)
                    if self.discovery is not None:
                        try:  # UDP on the TCP port number (ARCHITECTURE.md, Discovery)
                            await nursery.start(self.discovery.run)
                        except OSError as exc:
                            log.warning("no DHT: cannot bind UDP %s: %s", self.address, exc.strerror or exc)
                            self.discovery = None
                    for runner in self.services:
                        await nursery.start(runner.run, self)
                    self.services_changed()  # node.json shows them started, not starting
                    for peer in self.peers:
                        self.dial(peer, source="peer", pinned=True)
                    for peer in await db.call(peers.dial_addresses, self.key.public_key):
                        self.dial(peer, source="remembered")
                    log.info("listening on %s as %s", self.address, feed_id_text(self.key.public_key))
                    task_status.started(self.address)
            finally:
                with trio.CancelScope(shield=True):
                    self._remove_node_file()
                    for listener in listeners:
                        await listener.aclose()
                    await db.call(peers.mark_all_disconnected)

    def _store_signature(self) -> tuple[int, ...]:
        """Sizes and change times of the store's files: any commit, by any process, changes them."""
        out: list[int] = []
        for suffix in ("", "-wal"):
            try:
                st = os.stat(f"{self.home.store_path}{suffix}")
                out += [st.st_mtime_ns, st.st_size]
            except OSError:
                out += [0, 0]
        return tuple(out)

    def _counters(self) -> dict[str, int]:
        return {
            "wanted": len(self.wanted),
            "connections": len(self.connections),
            "ingested": self._ingested,
            "sent_entries": self.sent_entries,
            "duplicates": self.duplicates,
            "repairs": self.repairs,
        }

    def _write_node_file(self) -> None:
        info = {
            "pid": os.getpid(),
            "listen": self.address,
            "feed": feed_id_text(self.key.public_key),
            "peers": [
                {"feed": feed_id_text(c.feed), "address": c.address} for c in self.connections.values()
            ],
            "services": {r.name: r.state() for r in self.services},
            "counters": self._counters(),
        }
        write_file(self.home.node_file, json.dumps(info).encode(), replace=True, sync=False)

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
        seen = self._store_signature()
        next_query = trio.current_time() + 1.0
        shown = self._counters()
        next_show = trio.current_time() + 1.0
        while True:
            await trio.sleep(self.limits["poll_interval"])
            if trio.current_time() >= next_show:  # node.json's counters, for status and benchmarks
                next_show = trio.current_time() + 1.0
                if self._counters() != shown:
                    shown = self._counters()
                    self._write_node_file()
            signature = self._store_signature()
            if signature == seen and not self._rows_stale and trio.current_time() < next_query:
                continue  # no file of the store changed: nobody wrote (a stat, not a query)
            seen = signature
            next_query = trio.current_time() + 1.0  # and a query every second whatever the files say
            now = await self.db.call(gossip.max_row)
            if now != last:
                if await self.db.call(gossip.graph_changed, last):
                    await self.refresh_wants()
                last = now
                self.wake()

    def _keep_new_connection(self, remote: bytes, initiator: bool) -> bool:
        """Two nodes that dialled each other keep the connection the smaller feed key dialled (spec
        §12.8): the node with the larger key lets its outgoing connection to the other give way to
        the other's incoming one. A node only ever closes connections it dialled itself."""
        if self.key.public_key < remote:
            return True
        if initiator:
            return not any(c.feed == remote and not c.initiator for c in self.connections.values())
        for old in list(self.connections.values()):
            if old.feed == remote and old.initiator and not old.once:
                old.cancel()
        return True

    def _local_host(self) -> str | None:
        """Dial from the address we listen on (tests give each node its own 127.x address)."""
        host = parse_address(self.listen)[0]
        return None if host in ("", "0.0.0.0", "::") else host

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno in _ACCEPT_CAPACITY_ERRNOS:
                    # out of file descriptors or memory: wait for connections to close (as trio's
                    # serve_listeners does) instead of dying
                    log.warning("cannot accept connections: %s; pausing 100 ms", os.strerror(exc.errno or 0))
                    await trio.sleep(0.1)
                    continue
                raise
            host = _peer_host(stream)
            refusal = self._refusal(host)
            if refusal:
                await _close(stream)
                continue
            nursery.start_soon(self._handle_inbound, stream, host)

    def _refusal(self, host: str) -> str | None:
        """Why an inbound connection from ``host`` is refused now, or None (limits of spec §12.5)."""
        if self.penalties.banned(host):
            rec = self.penalties.by_host[host]
            if not rec.warned:  # once per ban, so a refused peer shows in the log without flooding it
                rec.warned = True
                log.warning("refusing %s until its ban ends (%s)", host, rec.last_reason)
            return "banned"
        outbound = sum(1 for c in self.connections.values() if c.initiator)
        if self._inbound + outbound >= self.limits["max_connections"]:
            log.info("refusing %s: connection limit reached", host)
            return "full"
        if self._inbound_by_host.get(host, 0) >= self.limits["max_per_host"]:
            log.info("refusing %s: too many connections from it", host)
            return "per_host"
        return None

    async def _handle_inbound(self, stream: trio.abc.Stream, host: str) -> None:
        """Count an inbound connection (handshaking ones too) for the limits while it lives."""
        self._inbound += 1
        self._inbound_by_host[host] = self._inbound_by_host.get(host, 0) + 1
        try:
            await self._handle(stream, host, False, False)
        finally:
            self._inbound -= 1
            left = self._inbound_by_host[host] - 1
            if left:
                self._inbound_by_host[host] = left
            else:
                del self._inbound_by_host[host]

    async def _note_peer(self, conn: PeerConnection, *, connected: bool) -> None:
        address = conn.address if conn.initiator else None  # an inbound port is not dialable
        source = "peer" if conn.initiator else "inbound"
        await self.db.call(peers.note_peer, conn.feed, address, source, connected, wall_ms())

    async def _handle(
        self,
        stream: trio.abc.Stream,
        address: str,
        initiator: bool,
        once: bool,
        expected: Candidate | None = None,
    ) -> PeerConnection | None:
        """Handshake, then replicate until the connection ends; never raises for peer faults."""
        conn: PeerConnection | None = None
        host = address.rpartition(":")[0].strip("[]") if initiator else address
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
                if expected is not None and not expected.pinned:
                    self.manager.candidates.pop(expected.address, None)
                return None
            if expected is not None and expected.feed not in (None, channel.remote_feed):
                self.manager.wrong_identity(expected, channel.remote_feed)
                if expected.source == "pex":
                    return None
            if expected is not None:
                expected.feed = channel.remote_feed  # proven by the handshake
            if not self._keep_new_connection(channel.remote_feed, initiator):
                log.debug(
                    "already connected to %s; closing the second connection",
                    feed_id_text(channel.remote_feed),
                )
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
                seconds = self.penalties.strike(host, code, reason, self.limits["ban_seconds"])
                if code not in Penalties.HANDSHAKE_CODES:  # banned already: the score only remembers
                    self.penalize(host, "flood" if code == "flood" else "invalid")
                log.warning(
                    "dropping peer %s: %s (%s); not talking to it for %.0f s", address, reason, code, seconds
                )
        finally:
            with trio.CancelScope(shield=True):
                if conn is not None and self.connections.pop(id(conn), None) is not None:
                    for holders in self.eager.values():
                        holders.discard(id(conn))
                    if time.time() - conn.connected_at >= 60 and not (conn.received or conn.sent):
                        self.penalize(host, "idle")
                    self.manager.wake()
                    self._write_node_file()
                    await self._note_peer(conn, connected=False)
                await _close(stream)
        return conn

    async def sync_once(self, address: str) -> PeerConnection:
        """Connect to ``address``, replicate both ways until both are caught up, then leave."""
        host, port = parse_address(address)
        async with DatabaseThread(self.home.store_path, verify_processes=VERIFY_PROCESSES) as db:
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
                self.syncing = conn
                await conn.run()
                await db.call(peers.note_peer, conn.feed, address, "sync", False, wall_ms())
                return conn
            finally:
                await _close(stream)


#: Rows ``Node.new_rows`` keeps in memory for the pushers.
_ROW_CACHE = 5000

_ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


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
        data = read_private(path)
        if len(data) == 32:
            return data
    except FileNotFoundError:
        pass
    data = secrets.token_bytes(32)
    write_file(path, data, replace=True)
    return data
