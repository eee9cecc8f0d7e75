"""Taking fork proofs from a peer (spec/protocol.md §7, §12.4, §12.8.6).

Fork proofs are self-verifying: a valid one marks the feed forked, whoever sent it. Checking one costs
two signature checks, so a proof is first only peeked at (``peek_fork``: shape, author, seq, hash) and
ignored when its feed is not wanted or the node knows it already (its ``ProofCache``, then the store);
each step is paid from the sending connection's work budget before it is taken, and the signatures are
checked off the node's thread.
"""

from __future__ import annotations

import logging
from typing import Protocol

import trio
from tidings.protocol import ForkProof, feed_id_text
from tidings.protocol.budget import (
    PROOF_CHECK_COST,
    PROOF_LOOKUP_COST,
    PROOF_PEEK_COST,
    ProofCache,
    WorkBudget,
)
from tidings.protocol.entry import peek_fork
from tidings.storage import gossip
from tidings.storage.store import Store
from tidings.storage.thread import DatabaseThread

__all__ = ["FORKS_PER_FRAME", "take_forks"]

log = logging.getLogger("tidings.peer")

#: Proofs taken from one ``forks`` message, and sent in one (spec §12.4).
FORKS_PER_FRAME = 100


class ForkNode(Protocol):
    """What taking proofs needs of the node."""

    proofs: ProofCache

    @property
    def db(self) -> DatabaseThread: ...
    @property
    def wanted(self) -> set[bytes]: ...

    async def broadcast_forks(self, proofs: list[bytes]) -> None: ...


async def take_forks(node: ForkNode, budget: WorkBudget, address: str, proofs: tuple[bytes, ...]) -> None:
    """Take the proofs of one ``forks`` message from the peer at ``address`` (§12.4); a proof not even
    shaped like one, or one that fails its checks, raises ``RemoteProtocolError``: the peer lied. When
    the budget refuses a charge, the rest of the message is ignored."""
    cache = node.proofs
    taken = proofs[:FORKS_PER_FRAME]
    unique = list(dict.fromkeys(taken))  # copies within one message are looked at once...
    if not budget.charge(PROOF_PEEK_COST * (len(taken) - len(unique))):  # ...but paid for all the same
        return
    fresh = []
    for raw in unique:
        if not budget.charge(PROOF_PEEK_COST):
            break
        author, seq, digest = peek_fork(raw)
        if author not in node.wanted or cache.known(digest, author, seq):
            continue  # forked throwaway feeds, and proofs known already, cost no signature check
        if not budget.charge(PROOF_LOOKUP_COST):
            break
        if seq in await node.db.call(gossip.fork_seqs, author):
            cache.add(digest, author, seq)  # one proof per (feed, seq) is kept and spread, once
            continue
        if not budget.charge(PROOF_CHECK_COST):
            break
        cache.checked += 1
        proof = await trio.to_thread.run_sync(ForkProof.decode, raw)
        cache.add(digest, author, seq)
        await node.db.call(Store.add_fork_proof, proof)
        log.warning("fork proof for %s seq %d from %s", feed_id_text(author), seq, address)
        fresh.append(raw)
    if fresh:
        await node.broadcast_forks(fresh)
