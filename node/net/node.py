"""The running node: one trio nursery owning the listener, dialers, watcher and connections.

``Node.run`` is started with ``nursery.start`` and reports its listening address through
``task_status.started``. Cancelling the surrounding scope (Ctrl-C, SIGTERM) stops every task; the
store is closed by the database thread's context manager and ``node.json`` is removed.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Sequence
from typing import Any

import trio
from tidings.node import config
from tidings.node.addresses import address_scope, parse_address
from tidings.node.clock import SYSTEM_CLOCK, Clock, make_rng
from tidings.node.discovery.discovery import Discovery
from tidings.node.home import Home
from tidings.node.net.blob_fetch import BlobService
from tidings.node.net.changes import Changes
from tidings.node.net.gossip_link import GossipLink, GossipTimer, gossip_limits
from tidings.node.net.listener import Listener, close_stream
from tidings.node.net.manager import Candidate, ConnectionManager
from tidings.node.net.nodefile import NodeFile, load_transport_key
from tidings.node.net.peer import PeerConnection
from tidings.node.net.reach import Reachability
from tidings.node.net.relay import Relays
from tidings.node.net.scoring import Penalties, Scores
from tidings.node.net.sessions import Sessions
from tidings.node.net.upgrade import Punching
from tidings.node.services import Service, ServiceRunner
from tidings.protocol import BoxKey, SigningKey, feed_id_text
from tidings.protocol.budget import ProofCache
from tidings.protocol.gossip import Gossip
from tidings.protocol.reach_events import Dialed, DialMe, Punch, PunchGo, ReachEvent, Refused, Reserve
from tidings.storage import gossip, peers
from tidings.storage.store import Store
from tidings.storage.thread import DatabaseThread

__all__ = ["DEFAULT_LIMITS", "Node", "counters", "describe", "load_transport_key"]

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
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        relay: bool = True,
    ) -> None:
        self.home = home
        self.key = key
        self.listen = listen
        self.peers = list(peers or [])
        self.bootstrap = list(bootstrap or [])
        self.network_key = network_key
        self.limits = {**DEFAULT_LIMITS, **(limits or {})}
        self.clock = clock
        self.rng = rng if rng is not None else make_rng()
        self.agent = "tidings/0.1"
        self.transport_private = load_transport_key(home)
        self.db: DatabaseThread
        self.connections: dict[int, PeerConnection] = {}
        self.sessions = Sessions(self, self.connections)
        self.penalties = Penalties(clock)
        self.scores = Scores(
            half_life=self.limits["score_half_life"], threshold=self.limits["score_threshold"], clock=clock
        )
        self.manager = ConnectionManager(self, clock=clock, rng=self.rng)
        self.listener = Listener(self)
        self.changes = Changes(home.store_path, clock)
        self.node_file = NodeFile(home.node_file, lambda: describe(self))
        #: the gossip rules over all connections (eager/lazy, graft, prune, holes, budgets; spec §12.7)
        self.gossip = Gossip(own=key.public_key, limits=gossip_limits(self.limits))
        self._gossip_timer = GossipTimer(self.gossip, clock, self._gossip_link)
        self.sent_entries = 0  # entries sent to peers, all connections (copies, bench/swarm.py)
        self.proofs = ProofCache(int(self.limits["proof_cache"]))  # checked before signatures (§12.4)
        self.wanted: set[bytes] = {key.public_key}
        self.followed: set[bytes] = set()
        self.blocked: set[bytes] = set()
        self.noted: set[bytes] = set()  # followers told of by follower notes (node/net/followers.py)
        self.address: str | None = None
        self._ingested = 0
        #: reachability, relays and hole punching (spec §12.9-§12.11)
        self.reach = Reachability(self)
        self.relays = Relays(self, enabled=relay)  # ``relay`` of config.toml (spec §12.10)
        self.punching = Punching(self)
        self.blobs = BlobService(self)  # blobs, and fetching them from peers (spec §12.12)
        self.services = [ServiceRunner(s) for s in services or []]
        self.syncing: PeerConnection | None = None  # the connection of a one-shot sync
        self.discovery: Discovery | None = (
            Discovery(
                self, bootstrap=list(bootstrap or []), swarms=list(swarms or []), clock=clock, rng=self.rng
            )
            if dht
            else None
        )
        if self.discovery is not None and _private_listen(listen):  # a DHT client until reachable (§12.9)
            self.discovery.set_client_mode(True)

    # -- shared state used by connections --------------------------------------------------------------
    async def current_wants(self, extra: set[bytes] | None = None) -> set[bytes]:
        """Feeds to replicate (spec §12.3); ``extra`` (a synced peer's own feed) unless we block it."""
        me = self.key.public_key
        self.blocked = set(await self.db.call(Store.graph_targets, me, "block"))
        found = await self.db.call(gossip.wanted_feeds, me, self.limits["hops"])
        self.noted -= found | self.blocked  # a stored follow makes a follower like any other
        self.wanted = found | self.noted
        self.followed = set(await self.db.call(Store.graph_targets, me, "follow"))
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

    def dial_via_relays(self, feed: bytes, relays: Sequence[tuple[bytes, str]]) -> None:
        """Reach ``feed`` through one of ``relays`` (``(relay feed, "HOST:PORT")`` from its node record,
        spec §13.4), in the background (``RelayClient.dial_soon``; spec §12.10)."""
        self.relays.client.dial_soon(feed, list(relays))

    def relay_addresses(self) -> list[tuple[bytes, str]]:
        """The relays we hold a reservation on, ``(relay feed, "HOST:PORT")``, for our node record;
        when they change, ``relays_changed`` republishes it."""
        return self.relays.relay_addresses()

    def offered_feeds(self) -> set[bytes]:
        """Feeds whose address the connection manager holds (discovery need not look them up)."""
        return {c.feed for c in self.manager.candidates.values() if c.feed is not None}

    def kept_feeds(self) -> set[bytes]:
        """Feeds whose inbound connections are never evicted nor cut for idleness (spec §12.5)."""
        return self.followed | self.manager.pinned_feeds() | self.relays.reserved_feeds()

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
            self.relays.cut_host(host)  # its relay connections and circuits too (spec §12.10)

    def wake(self) -> None:
        """Wake every pusher once (new entries are stored)."""
        self.changes.wake()

    async def new_rows(self, after: int) -> list[tuple[Any, ...]]:
        """Rows stored after row ``after``, shared by all pushers (``Changes.new_rows``)."""
        return await self.changes.new_rows(after)

    async def head(self, feed: bytes) -> int:
        """The highest seq held of ``feed`` (``Changes.head``)."""
        return await self.changes.head(feed)

    async def wait_changed(self) -> None:
        await self.changes.wait_changed()

    @property
    def duplicates(self) -> int:
        """Entries received that we held already, all connections."""
        return self.gossip.duplicates

    def wake_gossip(self) -> None:
        """The gossip machine may have an earlier timer now (spec §12.7)."""
        self._gossip_timer.wake()

    def _gossip_link(self, conn_id: int) -> GossipLink | None:
        conn = self.connections.get(conn_id)
        return None if conn is None else conn.gossip

    def note_ingested(self, n: int) -> None:
        if n:
            self._ingested += n
            self.wake()

    async def broadcast_forks(self, proofs: list[bytes]) -> None:
        """Tell every connected peer about new fork proofs (they verify them themselves)."""
        for conn in list(self.connections.values()):
            with contextlib.suppress(Exception):  # a broken peer must not stop the broadcast
                await conn.send_forks(proofs)

    async def on_reach_event(self, conn: PeerConnection, event: ReachEvent) -> None:
        """A version-3 message: to reachability, relays or punching (spec §12.9-§12.11). A peer that asks
        us for a dial-back or a reservation is one we serve: its connection is not cut as idle (§12.5)."""
        if isinstance(event, DialMe | Reserve):
            conn.helped = True
        if isinstance(event, DialMe | Dialed) or (isinstance(event, Refused) and event.what == "dial_me"):
            await self.reach.on_event(conn, event)
        elif isinstance(event, Punch | PunchGo):
            await self.punching.on_event(conn, event)
        else:
            await self.relays.on_event(conn, event)

    def statistics(self) -> dict[str, Any]:
        return {
            "listen": self.address,
            "reachability": self.reach.state,
            "observed": self.reach.observed,
            "feed": feed_id_text(self.key.public_key),
            "connections": [c.statistics() for c in self.connections.values()],
            "ingested": self._ingested,
            "sent_entries": self.sent_entries,
            "duplicates": self.duplicates,
            "discovery": None if self.discovery is None else self.discovery.statistics(),
            "services": {r.name: r.state() for r in self.services},
            "manager": self.manager.statistics(),
            "listener": self.listener.statistics(),
            "relay": self.relays.statistics(),
            "punching": self.punching.statistics(),
        }

    def reachability_changed(self, old: str, new: str) -> None:
        """The reachability verdict changed (spec §12.9): ``tidings status`` shows it, and a private node
        runs the DHT as a client (§13.6: nobody's routing table holds a contact nobody can reach);
        the relay client follows ``reach.state`` by itself (§12.10)."""
        self.node_file.write()
        if self.discovery is not None:
            self.discovery.set_client_mode(new == "private")

    def relays_changed(self) -> None:
        """The relays holding a reservation for this node changed (``relays.relay_addresses()``): show
        them in ``node.json``; the node record that lists them (spec §13.4) is republished from here."""
        if self.address is not None:
            self.node_file.write()
        if self.discovery is not None:
            self.discovery.relays_changed()

    def services_changed(self) -> None:
        """A service started, stopped or changed state: refresh ``node.json`` for ``tidings status``."""
        if self.address is not None:
            self.node_file.write()

    # -- running ---------------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        host, port = parse_address(self.listen)
        async with DatabaseThread(self.home.store_path, **store_options(self)) as db:
            self.db = self.changes.db = db
            await self.current_wants()
            await db.call(peers.mark_all_disconnected)
            listeners = await trio.open_tcp_listeners(port, host=host or None)
            sock = listeners[0].socket
            bound_host, bound_port = sock.getsockname()[:2]
            self.address = f"{host or bound_host}:{bound_port}"
            self.node_file.write()
            try:
                async with trio.open_nursery() as nursery:
                    for listener in listeners:
                        nursery.start_soon(self.listener.accept_loop, listener, nursery)
                    nursery.start_soon(self.changes.watch, self.limits["poll_interval"], self.refresh_wants)
                    nursery.start_soon(self.node_file.keep_fresh, lambda: counters(self))
                    nursery.start_soon(self._gossip_timer.run)
                    nursery.start_soon(self.manager.run, nursery)
                    nursery.start_soon(self.listener.watch_idle)
                    nursery.start_soon(self.reach.run)
                    nursery.start_soon(self.relays.run)
                    nursery.start_soon(self.punching.run)
                    await nursery.start(self.blobs.run)
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
                    for peer in self.bootstrap:  # peers to learn our reachability from, and relays (§12.8.1)
                        self.dial(peer, source="bootstrap")
                    for peer in await db.call(peers.dial_addresses, self.key.public_key):
                        self.dial(peer, source="remembered")
                    log.info("listening on %s as %s", self.address, feed_id_text(self.key.public_key))
                    task_status.started(self.address)
            finally:
                with trio.CancelScope(shield=True):
                    self.node_file.remove()
                    for listener in listeners:
                        await listener.aclose()
                    await db.call(peers.mark_all_disconnected)

    def local_host(self) -> str | None:
        """Dial from the address we listen on (tests give each node its own 127.x address)."""
        host = parse_address(self.listen)[0]
        return None if host in ("", "0.0.0.0", "::") else host

    async def serve_connection(
        self, stream: trio.abc.Stream, address: str, *, initiator: bool, expected: Candidate | None = None
    ) -> PeerConnection | None:
        """Handshake, then replicate until the connection ends (``Sessions.serve``)."""
        return await self.sessions.serve(stream, address, initiator=initiator, expected=expected)

    async def sync_once(self, address: str) -> PeerConnection:
        """Connect to ``address``, replicate both ways until both are caught up, then leave."""
        host, port = parse_address(address)
        async with DatabaseThread(self.home.store_path, **store_options(self)) as db:
            self.db = self.changes.db = db
            await self.current_wants()
            stream = await trio.open_tcp_stream(host, port, local_address=self.local_host())
            try:
                channel = await self.sessions.handshake(stream, initiator=True)
                conn = PeerConnection(self, channel, address, initiator=True, once=True)
                self.syncing = conn
                await conn.run()
                await db.call(peers.note_peer, conn.feed, address, "sync", False, self.clock.wall_ms())
                return conn
            finally:
                await close_stream(stream)


def store_options(node: Node) -> dict[str, Any]:
    """How the node opens its store: signature checks in worker processes, the home's blobs, and the
    key that opens the private messages addressed to it as they are stored (spec/protocol.md §8.6)."""
    return {
        "verify_processes": VERIFY_PROCESSES,
        "blobs_folder": node.home.blobs_path,
        "box_key": BoxKey(node.key),
    }


def _private_listen(listen: str) -> bool:
    """Whether ``listen`` names an address in private space (RFC 1918, unique local): a home computer."""
    try:
        return address_scope(parse_address(listen)[0]) == "private"
    except ValueError:  # a name, or no host at all
        return False


def counters(node: Node) -> dict[str, int]:
    """The counters of ``node.json``, refreshed while the node runs."""
    return {
        "wanted": len(node.wanted),
        "connections": len(node.connections),
        "ingested": node._ingested,
        "sent_entries": node.sent_entries,
        "duplicates": node.duplicates,
        "repairs": node.gossip.repairs,
        **node.listener.counters(),
        **node.relays.counters(),
        **({} if node.discovery is None else node.discovery.counters()),
        **{f"punch_{k}": v for k, v in node.punching.statistics().items() if k != "running"},
        **{f"blob_{k}": v for k, v in node.blobs.fetcher.statistics().items()},
    }


def describe(node: Node) -> dict[str, Any]:
    """The content of ``node.json`` (``NodeFile`` adds the pid)."""
    return {
        "listen": node.address,
        "feed": feed_id_text(node.key.public_key),
        "reachability": node.reach.state,
        "observed": node.reach.observed,
        "peers": [
            {
                "feed": feed_id_text(c.feed),
                "address": c.address,
                "path": c.path,
                "relay": None if c.relay is None else feed_id_text(c.relay),
            }
            for c in node.connections.values()
        ],
        "relays": [[feed_id_text(f), a] for f, a in node.relays.relay_addresses()],
        "services": {r.name: r.state() for r in node.services},
        "counters": counters(node),
    }
