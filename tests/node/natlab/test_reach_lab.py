"""Reachability (spec/protocol.md §12.9) with real ``tidings run`` processes in the NAT lab's ``world``.

pub and pub2 are public hosts, alice and bob homes behind port-preserving routers that drop unsolicited
inbound connections. Every lab host is in an address range of its own, so each node's helpers count as
distinct ranges and the default ``reach_quorum`` (2) applies: pub is dialled back by pub2, alice and bob
and calls itself public; alice's helpers pub and pub2 cannot reach her listen port through her router, so
she calls herself private and learns the address her router gives her connections.
"""

from __future__ import annotations

import pytest

from tests.support.natlab import NatLab
from tests.support.natlab_nodes import PORT, LabNode, LabNodes

pytestmark = pytest.mark.slow

VERDICT = 30.0  # seconds for a verdict (a failed dial-back takes dial_back_timeout, 3 s, plus the hello)


def _reachability(node: LabNode, expected: str) -> dict | None:
    status = node.status()
    return status if status.get("reachability") == expected else None


def test_public_hosts_become_public_and_homes_behind_nat_private(world: NatLab, tmp_path) -> None:
    with LabNodes(world, tmp_path) as nodes:
        pub, pub2 = nodes.add("pub"), nodes.add("pub2")
        alice, bob = nodes.add("alice"), nodes.add("bob")
        pub.start()
        assert pub.status()["reachability"] == "unknown"  # nobody asked yet: no verdict
        pub2.start(bootstrap=[pub.address], peers=[pub.address])
        for home in (alice, bob):
            home.start(bootstrap=[pub.address, pub2.address], peers=[pub.address, pub2.address])
        status = pub.wait_for(lambda: _reachability(pub, "public"), VERDICT, "pub to be public")
        assert status["observed"] == f"{world.hosts['pub'].address}:{status['observed'].rsplit(':', 1)[1]}"
        pub2.wait_for(lambda: _reachability(pub2, "public"), VERDICT, "pub2 to be public")
        for home in (alice, bob):
            status = home.wait_for(lambda h=home: _reachability(h, "private"), VERDICT, f"{home!r} private")
            # the helpers saw her connection come from her router's public address, never from 10.x
            public = world.hosts[home.host.name].public_address
            assert status["observed"].startswith(f"{public}:"), status
            text = home.cli("status").stdout
            assert f"reachability: private (peers see {public}:" in text, text
        # The dial-backs were never taken for peers: pub holds one connection to each of the three.
        pub.wait_for(lambda: pub.status()["peers"] == 3, VERDICT, "pub's three peers")
        assert "dialled" in pub.log() and f"back at {world.hosts['alice'].public_address}:{PORT}" in pub.log()
        for node in (alice, bob, pub2, pub):
            node.stop()
