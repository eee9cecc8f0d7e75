"""Real ``tidings run`` processes in the NAT lab (``tests/support/natlab_nodes.py``): public hosts and homes
behind NAT routers, each node driven by ``tidings`` commands run inside its own namespace.

Like the lab's own tests these skip on a machine without root, ``ip`` or ``nft`` unless
``TIDINGS_REQUIRE_NATLAB=1``, which CI sets.
"""

from __future__ import annotations

import os
import subprocess
import tomllib

import pytest

from tests.support.natlab import PRESERVING, NatLab, require_natlab
from tests.support.natlab_nodes import PORT, LabNodes, toml_text

pytestmark = pytest.mark.slow

ARRIVE = (
    30.0  # seconds for a post to reach a follower (it takes a few seconds; the bound keeps a test < 60 s)
)


def _connected(peers: list[dict], feed: str) -> bool:
    return any(peer["feed"] == feed and peer["connected"] for peer in peers)


def _seen_from(lab: NatLab, host: str, port: int) -> set[str]:
    """The IP addresses TCP connections to ``port`` of lab host ``host`` come from, as ``ss`` shows them
    there: what the network really delivered, not what a node says."""
    out = lab.run(host, ["ss", "-Htn", "state", "established", "sport", f"= :{port}"])
    assert out.returncode == 0, out.stderr
    return {line.split()[-1].rsplit(":", 1)[0] for line in out.stdout.splitlines() if line.strip()}


def test_a_public_node_follows_another_by_feed_id_and_gets_its_post(
    natlab: NatLab, lab_nodes: LabNodes
) -> None:
    natlab.add_public("pub")
    natlab.add_public("pub2")
    bob = lab_nodes.add("pub", name="bob")
    alice = lab_nodes.add("pub2", name="alice")
    assert bob.start() == f"198.18.1.10:{PORT}"
    alice.follow(bob.feed)  # by feed id only: bob's address is given as the DHT node to join through
    alice.start(bootstrap=[bob.address])
    posted = bob.post("hello from the first public host")
    alice.wait_for(lambda: posted in alice.log_ids(bob.feed), ARRIVE, "bob's post at alice")
    # They met across the bridge, each at its own address: bob sees alice's connection come from hers.
    assert _connected(alice.peers(), bob.feed)
    assert bob.wait_for(lambda: _connected(bob.peers(), alice.feed), ARRIVE, "alice among bob's peers")
    assert _seen_from(natlab, "pub", PORT) == {"198.18.2.10"}
    for node in (alice, bob):
        node.stop()


def test_a_home_behind_a_port_preserving_nat_follows_a_public_node_and_gets_its_post(
    natlab: NatLab, lab_nodes: LabNodes
) -> None:
    natlab.add_public("pub")
    natlab.add_home("home", PRESERVING)
    pub = lab_nodes.add("pub")
    home = lab_nodes.add("home")
    pub.start()
    home.follow(pub.feed)
    # The home dials out through its router; the bootstrap address comes from its config.toml this time.
    assert home.start(config={"bootstrap": [pub.address]}) == f"10.1.0.2:{PORT}"
    posted = pub.post("hello from the public host")
    home.wait_for(lambda: posted in home.log_ids(pub.feed), ARRIVE, "the public node's post at home")
    assert pub.wait_for(lambda: _connected(pub.peers(), home.feed), ARRIVE, "the home among pub's peers")
    # The home's connection reaches the public host from its router's public address, never from 10.1.0.2.
    assert _seen_from(natlab, "pub", PORT) == {"198.18.101.1"}
    status = home.status()
    assert status["running"] is True and status["feed"] == home.feed and status["peers"] >= 1
    for node in (home, pub):
        node.stop()


def test_every_node_is_stopped_with_the_lab_even_when_the_test_fails(tmp_path) -> None:
    require_natlab()
    with (
        pytest.raises(RuntimeError, match="the test failed"),
        NatLab() as lab,
        LabNodes(lab, tmp_path) as nodes,
    ):
        lab.add_public("pub")
        node = nodes.add("pub")
        node.start()
        proc = node.proc
        assert proc is not None and node.status()["running"] is True
        raise RuntimeError("the test failed")
    assert proc.poll() is not None  # ended (and reaped), not left behind
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)
    assert node.log() and not node.running()


def test_a_lab_node_runs_in_its_namespace_and_writes_its_config(natlab: NatLab, lab_nodes: LabNodes) -> None:
    natlab.add_home("home", PRESERVING)
    home = lab_nodes.add("home")
    config = {"bootstrap": ["198.18.1.10:7433"], "limits": {"hops": 1, "poll_interval": 0.2}}
    home.start(config=config)
    assert tomllib.loads((home.home / "config.toml").read_text()) == config
    # Its commands see the lab, not the machine: the home's only routes go through its router.
    routes = natlab.run("home", ["ip", "-4", "route"]).stdout
    assert "default via 10.1.0.1" in routes, routes
    assert home.status()["listen"] == f"10.1.0.2:{PORT}"
    with pytest.raises(AssertionError, match="tidings log @nosuchfeed in home failed: "):
        home.cli("log", "@nosuchfeed")
    assert isinstance(home.cli("id"), subprocess.CompletedProcess)
    home.stop()


def test_toml_text_writes_what_tomllib_reads() -> None:
    config = {"relay": False, "bootstrap": ["198.18.1.10:7433"], "limits": {"hops": 1, "graft_delay": 0.3}}
    text = toml_text(config)
    assert tomllib.loads(text) == config
    assert text.index("relay") < text.index("[limits]")
    with pytest.raises(ValueError, match="no TOML"):
        toml_text({"limits": {"hops": None}})
