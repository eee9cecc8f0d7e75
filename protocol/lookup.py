"""Iterative Kademlia lookups as a sans-IO state machine, with optional disjoint paths (S/Kademlia).

Theory of operation. A ``Lookup`` looks for the nodes closest to a 160-bit ``target`` (``FIND_NODE``),
for a value stored under it (``FIND_VALUE``), or for the swarm member records held around it
(``MEMBERS``). It sends nothing itself: ``next_queries(now)`` returns the queries to send, the caller
feeds back ``handle_reply``, ``handle_failure`` (malformed reply, or its own timeout) and, at
``get_timer()``, ``handle_timer(now)``, as with aioquic's ``get_timer``/``handle_timer``.

Every contact the lookup learns of is a candidate with a state::

    NEW --next_queries--> WAITING --handle_reply (usable)------------------------> RESPONDED
                            |  ^  --failure, unusable reply, deadline ---------> FAILED
                            +--+ resend due (handle_timer), sent again (next_queries)

A reply is unusable when it has the wrong shape for the query, or (``FIND_VALUE``) when it carries a
value the ``validate`` callback refuses: a node serving a forged value is treated as a failed node and
the lookup goes on. A query has one deadline, ``timeout`` after it was first sent; a node silent for
``timeout / (1 + retries)`` since the last send is sent the query again (UDP loses datagrams), up to
``retries`` times, within that same deadline. A dead node thus costs a lookup one timeout, not
``1 + retries`` of them (after churn the closest contacts hold dead ones), and a lost datagram is
still made up for. Late replies (once FAILED, or once the lookup is done) are ignored.

A query silent for ``stall`` (at most the resend time) is *stalled*: its candidate stays WAITING, but it
gives up its place among the ``alpha`` and is passed over when choosing whom to ask, so the next
contact is asked while the silent one's deadline runs. After churn the closest contacts hold dead
ones; without this each dead one would be found only after the previous one failed, one timeout after
another.

The candidates are split into ``paths`` disjoint paths (S/Kademlia §4.4): the seeds are dealt out in
turn by distance, a contact learned from a reply joins the path of the node that named it, and a node
already on one path never joins another, so each node is queried at most once in the whole lookup and
bad nodes that lead one path astray (naming only each other) cannot hold up the others. Per path, classic Kademlia with parallelism ``alpha``:
query the closest NEW candidates among the ``k`` closest neither FAILED nor stalled, at most ``alpha``
unstalled at a time;
the path is finished when those ``k`` have all RESPONDED (or the query budget is spent and none of them
is awaited).

The lookup is done when every path is finished, or (``FIND_VALUE``) as soon as ``quorum`` accepted
values have arrived (``quorum=0``: never early; the lookup collects every value the nodes around the
target serve, so the caller can keep the newest version of a record rather than the first one). ``result()`` then gives the closest responding contacts, the accepted values, and
the hop count: a seed is hop 1, a contact named by a hop-n node is hop n+1; ``hops`` is the hop of the
first accepted value (``FIND_VALUE``), else of the closest responding contact.
"""

from __future__ import annotations

import bisect
import enum
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .dht_wire import (
    ID_SIZE,
    Contact,
    FindNode,
    FindValue,
    GetMembers,
    MembersReply,
    NodesReply,
    Reply,
    Value,
    ValueReply,
)
from .errors import LocalProtocolError

__all__ = ["Found", "Lookup", "LookupKind", "LookupResult", "Query"]


class LookupKind(enum.Enum):
    FIND_NODE = "find_node"
    FIND_VALUE = "find_value"
    MEMBERS = "get_members"


class _State(enum.Enum):
    NEW = "new"
    WAITING = "waiting"
    RESPONDED = "responded"
    FAILED = "failed"


@dataclass(slots=True)
class _Candidate:
    contact: Contact
    distance: int
    path: int
    hop: int
    state: _State = _State.NEW
    deadline: float = math.inf
    resend_at: float = math.inf
    resend_due: bool = False
    stall_at: float = math.inf
    #: silent for ``stall`` since its first query: still WAITING, but no longer holds an alpha slot
    stalled: bool = False
    had_value: bool = False
    attempts: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Query:
    """Send ``request`` to ``contact``; report the outcome by ``contact.node_id``."""

    contact: Contact
    request: FindNode | FindValue | GetMembers
    deadline: float
    path: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Found:
    """A value the ``validate`` callback accepted, and who served it."""

    contact: Contact
    value: Value
    hop: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LookupResult:
    target: bytes
    kind: LookupKind
    #: FIND_VALUE/MEMBERS: at least one accepted value; FIND_NODE: at least one contact responded
    found: bool
    #: up to k responding contacts, closest first
    contacts: tuple[Contact, ...]
    values: tuple[Found, ...]
    hops: int
    queries: int
    timeouts: int
    #: replies refused: wrong shape, or a value ``validate`` refused
    rejected: int
    #: FIND_VALUE: the closest node that answered without the value (the stock package stores the
    #: value there afterwards, as a cache)
    nearest_without_value: Contact | None


def _accept_all(value: Value) -> bool:
    return True


class Lookup:
    """One iterative lookup (see the module docstring)."""

    def __init__(
        self,
        *,
        own_id: bytes,
        target: bytes,
        kind: LookupKind,
        seeds: Iterable[Contact],
        k: int = 20,
        alpha: int = 3,
        paths: int = 1,
        timeout: float = 2.0,
        retries: int = 1,
        stall: float | None = None,
        validate: Callable[[Value], bool] | None = None,
        quorum: int | None = None,
        max_queries: int | None = None,
    ) -> None:
        for name, raw in (("own id", own_id), ("target", target)):
            if type(raw) is not bytes or len(raw) != ID_SIZE:
                raise LocalProtocolError(f"{name} must be {ID_SIZE} bytes", code="bad_id")
        if stall is None:
            stall = timeout / (1 + retries)
        if k < 1 or alpha < 1 or paths < 1 or timeout <= 0 or retries < 0 or (quorum or 0) < 0 or stall <= 0:
            raise LocalProtocolError("k, alpha, paths, timeout, stall are positive", code="bad_argument")
        self.own_id = own_id
        self.target = target
        self.kind = kind
        self.k = k
        self.alpha = alpha
        self.timeout = timeout
        self.retries = retries
        self.stall = stall
        self.validate = validate or _accept_all
        if quorum is None:
            quorum = 1 if kind is LookupKind.FIND_VALUE else 0
        #: end as soon as this many values were accepted; None: run until every path is finished
        self.quorum = quorum or None
        self.max_queries = 8 * k * paths if max_queries is None else max_queries
        self._target_int = int.from_bytes(target, "big")
        self._candidates: dict[bytes, _Candidate] = {}
        self._paths: list[list[_Candidate]] = [[] for _ in range(paths)]
        self._found: list[Found] = []
        self._found_values: set[Value] = set()
        self._queries = 0
        self._timeouts = 0
        self._rejected = 0
        self._done = False
        ordered = sorted({c.node_id: c for c in seeds}.values(), key=self._distance)
        for i, contact in enumerate(ordered):
            self._add(contact, path=i % paths, hop=1)
        self._update()

    # -- queries out --------------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self._done

    def next_queries(self, now: float) -> list[Query]:
        """Queries to send now (none when the lookup is done or waits for replies)."""
        queries: list[Query] = []
        if self._done:
            return queries
        for index, path in enumerate(self._paths):
            for candidate in path:  # resends first: they are due, and hold an alpha slot already
                due = candidate.resend_due and candidate.state is _State.WAITING
                if due and self._queries < self.max_queries:
                    queries.append(self._send(candidate, index, now))
            in_flight = sum(1 for c in path if c.state is _State.WAITING and not c.stalled)
            for candidate in self._closest(path, skip_stalled=True):
                if in_flight >= self.alpha or self._queries >= self.max_queries:
                    break
                if candidate.state is _State.NEW:
                    candidate.state = _State.WAITING
                    candidate.deadline = now + self.timeout
                    candidate.stall_at = now + self.stall
                    in_flight += 1
                    queries.append(self._send(candidate, index, now))
        self._update()
        return queries

    def _send(self, candidate: _Candidate, path: int, now: float) -> Query:
        candidate.attempts += 1
        candidate.resend_due = False
        spacing = self.timeout / (1 + self.retries)
        candidate.resend_at = now + spacing if candidate.attempts <= self.retries else math.inf
        self._queries += 1
        return Query(
            contact=candidate.contact, request=self._request(), deadline=candidate.deadline, path=path
        )

    def get_timer(self) -> float | None:
        """When ``handle_timer`` must run next (the earliest query deadline), or None."""
        if self._done:
            return None
        deadlines = [
            min(c.deadline, c.resend_at, c.stall_at)
            for c in self._candidates.values()
            if c.state is _State.WAITING
        ]
        return min(deadlines) if deadlines else None

    # -- events in ----------------------------------------------------------------------------------------
    def handle_timer(self, now: float) -> list[Contact]:
        """Expire the queries whose deadline has passed; returns their contacts (for ``RoutingTable.failed``).

        An expired candidate is FAILED; one silent since its resend time is due a resend (``next_queries``
        sends it; datagrams get lost); one silent since its stall time gives up its alpha slot, so the
        next candidate is asked while its deadline runs.
        """
        waiting = [c for c in self._candidates.values() if c.state is _State.WAITING]
        expired = [c for c in waiting if c.deadline <= now]
        for candidate in waiting:
            if candidate.deadline <= now:
                candidate.state = _State.FAILED
                candidate.deadline = candidate.resend_at = candidate.stall_at = math.inf
                candidate.resend_due = False
                self._timeouts += 1
                continue
            if candidate.resend_at <= now:
                candidate.resend_at = math.inf
                candidate.resend_due = True
            if candidate.stall_at <= now:
                candidate.stall_at = math.inf
                candidate.stalled = True
        self._update()
        return [c.contact for c in expired]

    def handle_failure(self, node_id: bytes) -> None:
        """The query to ``node_id`` failed (a malformed reply, or a timeout the caller measured)."""
        candidate = self._waiting(node_id)
        if candidate is not None:
            candidate.state = _State.FAILED
            self._rejected += 1
            self._update()

    def handle_reply(self, node_id: bytes, reply: Reply) -> None:
        """The decoded reply of ``node_id`` to its query (``dht_wire.parse_reply``)."""
        candidate = self._waiting(node_id)
        if candidate is None:
            return
        usable = False
        if isinstance(reply, NodesReply) and self.kind is not LookupKind.MEMBERS:
            usable = True
            self._learn(candidate, reply.contacts)
        elif isinstance(reply, NodesReply | MembersReply) and self.kind is LookupKind.MEMBERS:
            # a stock node asked with find_value instead of get_members answers a plain node list
            usable = True
            self._learn(candidate, reply.contacts)
            for record in reply.records if isinstance(reply, MembersReply) else ():
                self._offer(candidate, record)
        elif isinstance(reply, ValueReply) and self.kind is not LookupKind.FIND_NODE:
            accepted = self._offer(candidate, reply.value)
            candidate.had_value = accepted
            usable = accepted or self.kind is LookupKind.MEMBERS
        if usable:
            candidate.state = _State.RESPONDED
        else:
            candidate.state = _State.FAILED
            self._rejected += 1
        self._update()

    # -- outcome ------------------------------------------------------------------------------------------
    def result(self) -> LookupResult:
        """What the lookup found so far (final once ``done``)."""
        responded = sorted(
            (c for c in self._candidates.values() if c.state is _State.RESPONDED), key=lambda c: c.distance
        )
        closest = responded[: self.k]
        without = [c for c in responded if not c.had_value]
        if self.kind is LookupKind.FIND_VALUE and self._found:
            hops = self._found[0].hop
        else:
            hops = closest[0].hop if closest else 0
        found = bool(self._found) if self.kind is not LookupKind.FIND_NODE else bool(closest)
        return LookupResult(
            target=self.target,
            kind=self.kind,
            found=found,
            contacts=tuple(c.contact for c in closest),
            values=tuple(self._found),
            hops=hops,
            queries=self._queries,
            timeouts=self._timeouts,
            rejected=self._rejected,
            nearest_without_value=(
                without[0].contact if without and self.kind is LookupKind.FIND_VALUE else None
            ),
        )

    def statistics(self) -> dict[str, int]:
        states = [c.state for c in self._candidates.values()]
        return {
            "candidates": len(states),
            "waiting": states.count(_State.WAITING),
            "responded": states.count(_State.RESPONDED),
            "failed": states.count(_State.FAILED),
            "queries": self._queries,
            "values": len(self._found),
        }

    # -- internals ----------------------------------------------------------------------------------------
    def _distance(self, contact: Contact) -> int:
        return int.from_bytes(contact.node_id, "big") ^ self._target_int

    def _request(self) -> FindNode | FindValue | GetMembers:
        if self.kind is LookupKind.FIND_NODE:
            return FindNode(node_id=self.own_id, key=self.target)
        if self.kind is LookupKind.FIND_VALUE:
            return FindValue(node_id=self.own_id, key=self.target)
        return GetMembers(node_id=self.own_id, key=self.target)

    def _waiting(self, node_id: bytes) -> _Candidate | None:
        candidate = self._candidates.get(node_id)
        if self._done or candidate is None or candidate.state is not _State.WAITING:
            return None
        return candidate

    def _add(self, contact: Contact, *, path: int, hop: int) -> None:
        if contact.node_id == self.own_id or contact.node_id in self._candidates:
            return  # disjointness: a node belongs to the first path that learned of it
        candidate = _Candidate(contact=contact, distance=self._distance(contact), path=path, hop=hop)
        self._candidates[contact.node_id] = candidate
        bisect.insort(self._paths[path], candidate, key=lambda c: c.distance)

    def _learn(self, source: _Candidate, contacts: tuple[Contact, ...]) -> None:
        # At most k per reply, the closest: a peer cannot flood the lookup with far-away contacts.
        for contact in sorted(contacts, key=self._distance)[: self.k]:
            self._add(contact, path=source.path, hop=source.hop + 1)

    def _offer(self, source: _Candidate, value: Value) -> bool:
        if not self.validate(value):
            return False
        if value not in self._found_values:
            self._found_values.add(value)
            self._found.append(Found(contact=source.contact, value=value, hop=source.hop))
        return True

    def _closest(self, path: list[_Candidate], *, skip_stalled: bool = False) -> list[_Candidate]:
        # skip_stalled: whom to ask next counts a stalled candidate as gone already, so the one that
        # would replace it among the k closest is asked while the stalled one's deadline runs
        closest: list[_Candidate] = []
        for candidate in path:
            if candidate.state is not _State.FAILED and not (skip_stalled and candidate.stalled):
                closest.append(candidate)
                if len(closest) == self.k:
                    break
        return closest

    def _path_finished(self, path: list[_Candidate]) -> bool:
        closest = self._closest(path)
        if all(c.state is _State.RESPONDED for c in closest):
            return True
        budget_spent = self._queries >= self.max_queries
        return budget_spent and not any(c.state is _State.WAITING for c in closest)

    def _update(self) -> None:
        if self._done:
            return
        quorum_met = self.quorum is not None and len(self._found) >= self.quorum
        self._done = quorum_met or all(self._path_finished(path) for path in self._paths)
