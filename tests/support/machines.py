"""Two replication machines that have exchanged their hellos (sans-IO protocol tests)."""

from __future__ import annotations

from typing import Any

from tidings.protocol.encoding import encode
from tidings.protocol.replication import PROTOCOL_VERSIONS, Hello, Replication, State


def pair(
    version_a: tuple[int, ...] = PROTOCOL_VERSIONS, version_b: tuple[int, ...] = PROTOCOL_VERSIONS
) -> tuple[Replication, Replication]:
    """Machines ``a`` and ``b`` whose hellos named ``version_a`` and ``version_b``, each delivered."""
    a, b = Replication(), Replication()
    ha, hb = a.send(Hello(agent="a", versions=version_a)), b.send(Hello(agent="b", versions=version_b))
    b.receive(ha[0])
    a.receive(hb[0])
    return a, b


def assert_round_trip(event: Any, message: list[Any]) -> None:
    """``event`` travels as the canonical encoding of ``message`` and comes back equal, both sides
    staying ACTIVE."""
    a, b = pair()
    frames = a.send(event)
    assert frames == [encode(message)]
    assert b.receive(frames[0]) == event
    assert (a.state, b.state) == (State.ACTIVE, State.ACTIVE)
