"""Reachability: whether others can dial this node (spec/protocol.md §12.9).

``Reachability`` asks peers in distinct address ranges to dial this node back (``dial_me``), answers
their requests (dials the IP it sees them at), and keeps the verdict ``state`` (``public``, ``private`` or
``unknown``) and ``observed`` (the address peers see). The verdict decides whether the DHT runs as a
client and whether the node keeps relay reservations (node/net/relay.py), through
``node.reachability_changed``.

Theory of operation.

- **Asking.** ``run`` looks at the node's connections every ``LOOK`` seconds. A *helper* is a direct,
  version-3 connection that is not a one-shot sync; helpers are grouped by the address range of their
  host (node/addresses.address_range: an IPv4 /24, an IPv6 /48). Ranges are only grouped, never judged
  by scope: the NAT lab's "internet" (198.18.0.0/15) is private space to Python's ``ipaddress``. A
  **round** starts as soon as one helper is connected, then every ``reach_recheck`` seconds, and when a
  helper reports an observed IP that differs from the last one (the address changed). A round asks one
  helper of every range (``dial_me`` with our listen port and a fresh nonce), at most ``MAX_ASKING``
  questions at a time; while the verdict is ``unknown``, a helper from a range the round has not asked
  yet is asked as soon as it connects. A host asked less than ``dial_back_interval`` seconds ago is not
  asked again (it would refuse, and count it as a flood).
- **Answers.** A ``dialed`` with the nonce of an open question answers it; an unknown nonce is ignored; a
  ``refused`` (what ``dial_me``) or no answer within ``dial_back_timeout`` + ``MARGIN`` seconds is no
  answer. ``answers`` keeps the latest answer of each range asked (None: none yet), and after every
  question the verdict (``verdict``, §12.9) is computed again; a change calls
  ``node.reachability_changed(old, new)``.
- **The helper's dial arriving** is an inbound connection that ends right after its handshake. The
  inbound opening (``Sessions.serve``, ``open_inbound``) reads a connection's first message before it
  takes the connection for a peer, so this one is never registered: it neither counts as a peer nor
  displaces our connection to the helper (spec §12.8), whichever of the two feeds is the larger.
- **Helping.** A ``dial_me`` on a direct connection is served at most once per ``dial_back_interval``
  per connection (else ``refused`` ``busy``, and the host pays ``flood``) and ``HOST_DIALS`` times per
  host (else ``refused`` ``busy`` without a penalty: several nodes may share a home router's address); the dial goes to the IP the
  connection comes from (``conn.remote_address``), never anywhere else, from ``node.local_host()``,
  runs the Noise handshake as initiator and is ``ok`` when the responder proves the asker's feed; it
  is closed right after the handshake. Dials run in this object's nursery, so the connection's reader
  is never blocked by one.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import trio
from tidings.node.addresses import address_range, format_address, parse_address
from tidings.node.net.listener import close_stream
from tidings.node.net.transport import ChannelClosed
from tidings.protocol import ProtocolError
from tidings.protocol.reach_events import NONCE_SIZE, Dialed, DialMe, ReachEvent, Refused

__all__ = ["LOOK", "MARGIN", "MAX_ASKING", "Reachability", "verdict"]

log = logging.getLogger("tidings.reach")

#: Seconds between two looks for helpers to ask.
LOOK = 0.25
#: Questions open at once.
MAX_ASKING = 4
#: Seconds an asker waits for ``dialed`` beyond the helper's ``dial_back_timeout``.
MARGIN = 2.0
#: Seconds the helper waits for its ``refused`` to be written before it cuts a flooding asker off.
_REFUSE_WRITE = 1.0
#: Dial-backs one host (an IP address: maybe a home router with several nodes behind it) gets per
#: ``dial_back_interval`` (spec §12.9).
HOST_DIALS = 8
#: What a failed dial-back may raise: the dial, the handshake, the stream.
_DIAL_ERRORS = (OSError, ProtocolError, ChannelClosed, trio.BrokenResourceError, trio.ClosedResourceError)


def verdict(answers: Mapping[str, bool | None], quorum: int) -> str:
    """The verdict of spec §12.9 from ``answers``: address range -> its latest answer (True: dialled
    back, False: not, None: asked but no answer). ``public`` when at least ``quorum`` ranges answered
    ok, or none answered not ok and at least min(``quorum``, ranges asked) answered ok (a network with
    fewer helpers than the quorum still gives a verdict); ``private`` the other way round; else
    ``unknown``."""
    ok = sum(1 for answer in answers.values() if answer is True)
    failed = sum(1 for answer in answers.values() if answer is False)
    if ok >= quorum or (failed == 0 and ok and ok >= min(quorum, len(answers))):
        return "public"
    if ok == 0 and failed and failed >= min(quorum, len(answers)):
        return "private"
    return "unknown"


@dataclass
class _Question:
    """One open ``dial_me``."""

    conn: Any
    range: str
    answered: trio.Event = field(default_factory=trio.Event)
    answer: Dialed | None = None


class Reachability:
    """The node's reachability (spec §12.9); see the module docstring."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.state = "unknown"
        self.observed: str | None = None
        #: the port helpers are asked to dial (None: the port we listen on); tests point it elsewhere
        self.port: int | None = None
        self.pinned = False  # ``pin``: the verdict is fixed
        #: address range -> its latest answer (None: asked, no answer yet)
        self.answers: dict[str, bool | None] = {}
        self._questions: dict[bytes, _Question] = {}  # by nonce
        self._round: set[str] = set()  # ranges asked in this round
        self._round_due = True
        self._next_round = 0.0
        self._round_started = -math.inf  # when the last round began
        self._asked_at: dict[str, float] = {}  # host -> when we last asked it
        self._helped_at: dict[int, float] = {}  # connection -> when we last dialled it back
        self._host_dials: dict[str, list[float]] = {}  # host -> our recent dial-backs to it
        self._limiter = trio.CapacityLimiter(MAX_ASKING)
        self._nursery: trio.Nursery | None = None
        self.counts = {"asked": 0, "answered": 0, "helped": 0, "refused": 0}

    def statistics(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "observed": self.observed,
            "answers": dict(self.answers),
            "open": len(self._questions),
            **self.counts,
        }

    async def run(self) -> None:
        """Ask helpers (module docstring) until cancelled; dial-backs for others run in here too."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            while True:
                self._look(nursery)
                await trio.sleep(LOOK)

    # -- asking ----------------------------------------------------------------------------------------
    def _helpers(self, now: float) -> dict[str, Any]:
        """One connection per address range that may be asked now (module docstring)."""
        interval = self.node.limits["dial_back_interval"]
        busy = {q.range for q in self._questions.values()}
        helpers: dict[str, Any] = {}
        for conn in list(self.node.connections.values()):
            rep = conn.rep
            if rep.state != "ACTIVE" or rep.version < 3 or conn.once or conn.path != "direct":
                continue
            rng = address_range(conn.host)
            if rng in busy or rng in helpers:
                continue
            if now - self._asked_at.get(conn.host, -interval) < interval:
                continue
            helpers[rng] = conn
        return helpers

    def pin(self, state: str) -> None:
        """Fix the verdict at ``state`` and ask no more (tests that need a private or public node on
        loopback, where every node is reachable); helping others goes on."""
        self.pinned = True
        old, self.state = self.state, state
        if old != state:
            self.node.reachability_changed(old, state)

    def _look(self, nursery: trio.Nursery) -> None:
        if self.pinned:
            return
        now = self.node.clock.monotonic()
        retry = self._round_started + self.node.limits["dial_back_interval"]
        unanswered = self.state == "unknown" and None in self.answers.values() and not self._questions
        if now >= self._next_round or (unanswered and now >= retry):
            self._round_due = True  # due; or no verdict for want of answers (helpers busy or silent)
        helpers = self._helpers(now)
        if self._round_due and helpers:
            self._round_due = False
            self._round.clear()
            self._round_started = now
            self._next_round = now + self.node.limits["reach_recheck"]
        elif self.state != "unknown" or not self._round:
            return  # no round yet, or a verdict: new ranges wait for the next round
        for rng, conn in helpers.items():
            if rng not in self._round:
                self._round.add(rng)
                self._asked_at[conn.host] = now
                self.answers.setdefault(rng, None)
                nursery.start_soon(self._ask, conn, rng)

    def _listen_port(self) -> int:
        if self.port is not None:
            return self.port
        return parse_address(self.node.address)[1]

    async def _ask(self, conn: Any, rng: str) -> None:
        """One ``dial_me`` to ``conn``; its answer (or none) goes into ``answers``."""
        limits = self.node.limits
        async with self._limiter:
            wait = limits["dial_back_timeout"] + MARGIN
            nonce = self.node.rng.randbytes(NONCE_SIZE)
            question = _Question(conn, rng)
            self._questions[nonce] = question
            self.counts["asked"] += 1
            try:
                await conn.send_event(DialMe(nonce=nonce, port=self._listen_port()))
                with trio.move_on_after(wait):
                    await question.answered.wait()
            except ChannelClosed:
                pass  # the helper left: no answer
            finally:
                del self._questions[nonce]
        answer = question.answer
        if answer is None:
            log.info("no dial-back answer from %s (%s)", conn.address, rng)
        else:
            self.answers[rng] = answer.ok
            self.counts["answered"] += 1
            log.info(
                "%s dialled us back: %s; sees us at %s",
                conn.address,
                "ok" if answer.ok else "failed",
                answer.observed,
            )
            self._note_observed(answer.observed)
        self._decide()

    def seen_at(self, observed: str) -> None:
        """Another peer (a relay's ``connected``, spec §12.10) says where it sees us: kept while no
        helper has said so, so that a node can punch (§12.11) before its first dial-back answer."""
        if self.observed is None:
            self._note_observed(observed)

    def _note_observed(self, observed: str) -> None:
        old, self.observed = self.observed, observed
        if old == observed:
            return
        if old is not None and _host(old) != _host(observed):
            log.info("peers see us at %s now, not %s; checking reachability again", observed, old)
            self._round_due = True  # spec §12.9: the address changed
        self.node.node_file.write()

    def _decide(self) -> None:
        if self.pinned:
            return
        old, new = self.state, verdict(self.answers, self.node.limits["reach_quorum"])
        if new != old:
            self.state = new
            log.info(
                "reachability: %s (was %s; answers by range: %s)",
                new,
                old,
                ", ".join(f"{r} {a}" for r, a in sorted(self.answers.items())) or "none",
            )
            self.node.reachability_changed(old, new)

    # -- messages --------------------------------------------------------------------------------------
    async def on_event(self, conn: Any, event: ReachEvent) -> None:
        """``dial_me`` (help), ``dialed`` (an answer), ``refused`` what ``dial_me`` (no answer)."""
        if isinstance(event, DialMe):
            await self._on_dial_me(conn, event)
        elif isinstance(event, Dialed):
            question = self._questions.get(event.nonce)
            if question is None or question.conn is not conn:
                log.debug("dialed with an unknown nonce from %s; ignored", conn.address)
                return
            question.answer = event
            question.answered.set()
        elif isinstance(event, Refused):
            log.info("%s refused to dial us back: %s %s", conn.address, event.code, event.reason)
            for question in self._questions.values():
                if question.conn is conn:
                    question.answered.set()  # no answer from this helper

    async def _on_dial_me(self, conn: Any, event: DialMe) -> None:
        node = self.node
        now = node.clock.monotonic()
        interval = node.limits["dial_back_interval"]
        if self._nursery is None:  # not running (a one-shot sync)
            await conn.send_event(Refused(what="dial_me", code="busy", reason="not helping now"))
            return
        if conn.path != "direct" or not _has_port(conn.remote_address):
            # the IP of a relayed connection is the relay's: dialling it proves nothing (§12.9)
            await conn.send_event(Refused(what="dial_me", code="relayed", reason="not a direct connection"))
            return
        last = self._helped_at.get(id(conn))
        recent = [t for t in self._host_dials.get(conn.host, []) if now - t < interval]
        if (last is not None and now - last < interval) or len(recent) >= HOST_DIALS:
            self.counts["refused"] += 1
            again = last is not None and now - last < interval
            log.info("%s asked for a dial-back %s; refusing", conn.address, "again" if again else "too often")
            await conn.send_event(
                Refused(what="dial_me", code="busy", reason=f"one dial-back per {interval:.0f} s")
            )
            if again:  # the same connection again: abuse; others of its host may share a NAT's address
                with trio.move_on_after(_REFUSE_WRITE):
                    await conn.channel.wait_sent()  # before a cut-off closes the connection
                node.penalize(conn.host, "flood")  # spec §12.9, §12.8.4
            return
        if len(self._helped_at) > 4096:  # forget what no longer limits anybody
            self._helped_at = {k: t for k, t in self._helped_at.items() if now - t < interval}
            self._host_dials = {h: ts for h, ts in self._host_dials.items() if now - ts[-1] < interval}
        self._helped_at[id(conn)] = now
        self._host_dials[conn.host] = [*recent, now]
        self._nursery.start_soon(self._dial_back, conn, event)

    async def _dial_back(self, conn: Any, event: DialMe) -> None:
        """Dial the IP ``conn`` comes from at ``event.port`` and answer ``dialed`` (spec §12.9)."""
        node = self.node
        host, _ = parse_address(conn.remote_address)
        ok = False
        self.counts["helped"] += 1
        with trio.move_on_after(node.limits["dial_back_timeout"]):
            try:
                stream = await trio.open_tcp_stream(host, event.port, local_address=node.local_host())
            except OSError as exc:
                log.debug("dial-back to %s:%d failed: %s", host, event.port, exc)
            else:
                try:
                    channel = await node.sessions.handshake(stream, initiator=True)
                    ok = channel.remote_feed == conn.feed
                except _DIAL_ERRORS as exc:
                    log.debug("dial-back handshake with %s:%d failed: %s", host, event.port, exc)
                finally:
                    with trio.CancelScope(shield=True):
                        await close_stream(stream)
        log.info("dialled %s back at %s:%d: %s", conn.address, host, event.port, "ok" if ok else "failed")
        observed = format_address(conn.remote_address)
        with contextlib.suppress(ChannelClosed):  # the asker left meanwhile
            await conn.send_event(Dialed(nonce=event.nonce, ok=ok, observed=observed))


def _host(address: str) -> str:
    return address.rpartition(":")[0].strip("[]")


def _has_port(address: str) -> bool:
    try:
        parse_address(address)
    except ValueError:
        return False
    return True
