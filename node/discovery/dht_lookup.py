"""The lookup driver of the DHT's UDP adapter: runs a sans-IO ``protocol.lookup.Lookup`` over the network.

Theory of operation. ``LookupDriver.lookup`` builds a ``Lookup`` seeded with the k closest contacts of
the routing table, then loops: it starts a query task for each of ``next_queries``, sleeps until the
earlier of a reply and ``get_timer()``, and calls ``handle_timer`` when the timer is due (contacts that
time out count as failed in the routing table). Query tasks ask through the adapter (``Asker``: one
request, one reply or None), feed replies and failures back (a contact that answered is ``heard``:
observed into the routing table) and wake the driver.

- Silence: a contact that left ``SILENT_LIMIT`` queries in a row unanswered within ``SILENT_SECONDS``
  is failed at once by later lookups. After churn, other nodes keep naming dead contacts; waiting out
  their timeouts again in every lookup is what made lookups slow. A query whose resend was answered
  (§13.3) is not silence.
- Extensions degrade: a node that does not answer ``get_members`` within half the query time is asked
  ``find_value`` instead (a stock ``kademlia`` node, ARCHITECTURE.md).
- Timeouts adapt: the adapter's round-trip estimate gives the query timeout and the stall time after
  which a silent query gives up its place among alpha (``DHT.query_timeout``/``query_stall``, §13.7).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Protocol

import trio
from tidings.node.clock import SYSTEM_CLOCK, Clock
from tidings.protocol import RemoteProtocolError
from tidings.protocol.dht_wire import Contact, FindNode, FindValue, GetMembers, Reply, Request, Value
from tidings.protocol.lookup import Lookup, LookupKind, LookupResult
from tidings.protocol.routing import RoutingTable

__all__ = ["SILENT_LIMIT", "SILENT_SECONDS", "Asker", "LookupDriver"]

#: A contact that left this many queries in a row unanswered in the last SILENT_SECONDS is skipped.
SILENT_LIMIT = 2
SILENT_SECONDS = 60.0


class Asker(Protocol):
    """What the driver needs of the adapter's asking side (``dht_requests.Requester``): one request
    and its reply, and the adaptive timeouts."""

    async def request(self, address: tuple[str, int], request: Request, timeout: float) -> Reply | None: ...

    def query_timeout(self) -> float: ...

    def query_stall(self, timeout: float) -> float: ...


class _Wake:
    """The lookup driver sleeps on ``event``; query tasks set it when they fed the lookup something."""

    def __init__(self) -> None:
        self.event = trio.Event()
        #: the contacts that answered a query of this lookup (a resend's twin then is not silence)
        self.answered: set[bytes] = set()


class LookupDriver:
    """Runs iterative lookups for one DHT node (see the module docstring)."""

    def __init__(
        self,
        own_id: bytes,
        table: RoutingTable,
        asker: Asker,
        *,
        heard: Callable[[Contact], None],
        k: int,
        alpha: int,
        paths: int,
        clock: Clock = SYSTEM_CLOCK,
        stats: Counter[str],
    ) -> None:
        self.own_id = own_id
        self.table = table
        self.asker = asker
        self.heard = heard
        self.k = k
        self.alpha = alpha
        self.paths = paths
        self.clock = clock
        self.stats = stats
        self.hops: list[int] = []  # of the last 1000 lookups
        #: node id -> (consecutive unanswered queries, when the last went unanswered)
        self._silent: dict[bytes, tuple[int, float]] = {}

    async def lookup(
        self,
        target: bytes,
        kind: LookupKind,
        *,
        validate: Callable[[Value], bool] | None = None,
        paths: int | None = None,
        quorum: int | None = None,
    ) -> LookupResult:
        """Run one iterative lookup to its end (see ``protocol.lookup``)."""
        clock = self.clock
        started = clock.monotonic()
        seeds = self.table.find_neighbors(target, self.k)
        timeout = self.asker.query_timeout()
        lookup = Lookup(
            own_id=self.own_id,
            target=target,
            kind=kind,
            seeds=seeds,
            k=self.k,
            alpha=self.alpha,
            paths=paths or self.paths,
            timeout=timeout,
            stall=self.asker.query_stall(timeout),
            validate=validate,
            quorum=quorum,
        )
        self.table.touch(target, started)
        wake = _Wake()
        async with trio.open_nursery() as nursery:
            while True:
                for query in lookup.next_queries(clock.monotonic()):
                    nursery.start_soon(
                        self._query, lookup, query.contact, query.request, query.deadline, wake
                    )
                deadline = lookup.get_timer()
                if lookup.done or deadline is None:
                    break
                with trio.move_on_at(deadline):
                    await wake.event.wait()
                wake.event = trio.Event()
                now = clock.monotonic()
                if now >= deadline:
                    for contact in lookup.handle_timer(now):
                        self.table.failed(contact.node_id)
            nursery.cancel_scope.cancel()
        result = lookup.result()
        self.stats["lookups"] += 1
        self.stats["lookups_found"] += int(result.found)
        self.hops.append(result.hops)
        del self.hops[:-1000]
        return result

    async def _query(
        self,
        lookup: Lookup,
        contact: Contact,
        request: FindNode | FindValue | GetMembers,
        deadline: float,
        wake: _Wake,
    ) -> None:
        clock, asker = self.clock, self.asker
        silent, since = self._silent.get(contact.node_id, (0, 0.0))
        if silent >= SILENT_LIMIT and clock.monotonic() - since < SILENT_SECONDS:
            # it let two queries in a row go unanswered just now: count it as failed at once instead
            # of waiting out two more timeouts (lookups after churn stay fast)
            lookup.handle_failure(contact.node_id)
            wake.event.set()
            return
        try:
            remaining = max(deadline - clock.monotonic(), 0.01)
            if isinstance(request, GetMembers):
                # a stock node ignores get_members: ask find_value in the second half of the time
                reply = await asker.request(contact.address, request, remaining / 2)
                if reply is None and not lookup.done:
                    fallback = FindValue(node_id=self.own_id, key=request.key)
                    reply = await asker.request(contact.address, fallback, remaining / 2)
            else:
                reply = await asker.request(contact.address, request, remaining)
        except RemoteProtocolError:
            lookup.handle_failure(contact.node_id)
            self.table.failed(contact.node_id)
        else:
            if reply is None:
                if contact.node_id in wake.answered:
                    return  # it answered a resend of this query (§13.3): not silent
                self._silent[contact.node_id] = (silent + 1, clock.monotonic())
                if len(self._silent) > 10_000:
                    self._silent.clear()
                return  # the lookup's own timer deals with it
            self._silent.pop(contact.node_id, None)
            wake.answered.add(contact.node_id)
            self.heard(contact)
            lookup.handle_reply(contact.node_id, reply)
        wake.event.set()
