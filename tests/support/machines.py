"""Two replication machines that have exchanged their hellos (sans-IO protocol tests)."""

from __future__ import annotations

from tidings.protocol.replication import PROTOCOL_VERSIONS, Hello, Replication


def pair(
    version_a: tuple[int, ...] = PROTOCOL_VERSIONS, version_b: tuple[int, ...] = PROTOCOL_VERSIONS
) -> tuple[Replication, Replication]:
    """Machines ``a`` and ``b`` whose hellos named ``version_a`` and ``version_b``, each delivered."""
    a, b = Replication(), Replication()
    ha, hb = a.send(Hello(agent="a", versions=version_a)), b.send(Hello(agent="b", versions=version_b))
    b.receive(ha[0])
    a.receive(hb[0])
    return a, b
