"""The NAT lab itself (``tests/support/natlab.py``): real namespaces, real nftables NAT, checked with small
echo scripts (``tests/support/natlab_echo.py``) and no Tidings code.

On a machine without root, ``ip`` or ``nft`` these tests skip with one line; ``.ci/run`` installs the tools
and sets ``TIDINGS_REQUIRE_NATLAB=1``, which turns that skip into a failure, so CI never skips them.
"""

from __future__ import annotations

import ipaddress
import subprocess

import pytest
from tidings.node.addresses import address_range

from tests.node.natlab.conftest import TCP, UDP, ask, start_echo
from tests.support.natlab import INSTALL, PRESERVING, REQUIRE, SEGMENT, NatLab, require_natlab

pytestmark = pytest.mark.slow

HOMES = ("alice", "bob", "sym", "carol")


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def _target(lab: NatLab, name: str, port: int) -> str:
    return f"{lab.hosts[name].address}:{port}"


@pytest.mark.parametrize("home", HOMES)
def test_every_home_reaches_the_public_hosts_and_is_seen_at_its_public_address(
    world: NatLab, home: str
) -> None:
    public = world.hosts[home].public_address
    for proto, port in (("udp", UDP), ("tcp", TCP)):
        out = ask(world, home, proto, _target(world, "pub", port), _target(world, "pub2", port))
        assert out.returncode == 0, out.stderr
        seen = [line.rsplit(":", 1)[0] for line in out.stdout.split()]
        assert seen == [public, public], (proto, out.stdout)
    assert ipaddress.ip_address(public) in SEGMENT and public != world.hosts[home].address


def test_the_double_nat_home_is_seen_at_the_carrier_routers_address(world: NatLab) -> None:
    carol = world.hosts["carol"]
    # Its own router's WAN is on the carrier's segment, not on the bridge.
    route = world.run("h4", ["ip", "-4", "addr", "show", "wan0"])
    assert "100.64.4.2/24" in route.stdout, route.stdout
    out = ask(world, "carol", "udp", _target(world, "pub", UDP))
    assert out.returncode == 0 and out.stdout.strip().rsplit(":", 1)[0] == carol.public_address


def test_every_internet_side_address_is_in_a_range_of_its_own(world: NatLab) -> None:
    """The node groups peers by /24 (``address_range``): each public host and each home's outermost
    router is alone in its range, all inside the bridge's 198.18.0.0/15, and reach each other on it."""
    public = [host.public_address for host in world.hosts.values()]
    assert len(set(public)) == len(public) == 6
    assert all(ipaddress.ip_address(address) in SEGMENT for address in public)
    assert len({address_range(address) for address in public}) == len(public)
    assert world.hosts["pub"].address == "198.18.1.10" and world.hosts["pub2"].address == "198.18.2.10"
    assert world.hosts["alice"].public_address == "198.18.101.1"
    assert world.hosts["carol"].public_address == "198.18.104.1"  # the carrier's router
    # Two ranges, one segment: pub2 is reached directly from pub, and carol's router from a home.
    out = ask(world, "pub", "udp", _target(world, "pub2", UDP))
    assert out.returncode == 0 and out.stdout.strip().rsplit(":", 1)[0] == "198.18.1.10", out.stderr
    addr = world.run("pub", ["ip", "-4", "addr", "show", "wan0"])
    assert "198.18.1.10/15" in addr.stdout, addr.stdout


@pytest.mark.parametrize("source", ["pub", "bob", "sym", "carol"])
def test_a_home_is_not_reachable_unsolicited(world: NatLab, source: str) -> None:
    alice = world.hosts["alice"]
    # The echo in alice's home answers inside her home (so a silence below is the router's doing) ...
    own = ask(world, "r1", "udp", _target(world, "alice", UDP))
    assert own.returncode == 0 and own.stdout.strip().startswith("10.1.0.1:"), own.stderr
    # ... but neither her router's public address nor her private one answers from outside.
    for proto, port in (("udp", UDP), ("tcp", TCP)):
        for target in (f"{alice.public_address}:{port}", f"{alice.address}:{port}"):
            out = ask(world, source, proto, target, wait=1.0)
            assert out.returncode == 1 and out.stdout == "", (proto, target, out.stdout)


def test_a_router_with_a_route_to_the_home_still_forwards_nothing_unsolicited(natlab: NatLab) -> None:
    """The forward chain: even a neighbour that routes the home's private range via its router gets in
    only on connections the home opened."""
    natlab.add_public("pub")
    home = natlab.add_home("home", PRESERVING)
    start_echo(natlab, "home")
    start_echo(natlab, "pub")
    added = natlab.run("pub", ["ip", "route", "add", "10.1.0.0/24", "via", home.public_address])
    assert added.returncode == 0, added.stderr
    out = ask(natlab, "pub", "udp", f"{home.address}:{UDP}", wait=1.0)
    assert out.returncode == 1 and out.stdout == "", out.stdout
    # The way back to the home is open for what the home itself sent.
    back = ask(natlab, "home", "udp", f"{natlab.hosts['pub'].address}:{UDP}")
    assert back.returncode == 0 and back.stdout.startswith(home.public_address), back.stderr


def test_a_stray_inbound_packet_does_not_take_the_homes_port(natlab: NatLab) -> None:
    """The input drop: a packet that reaches the router before the home's own outbound mapping exists (as
    in hole punching) must not be confirmed by conntrack, or the home's mapping loses its port."""
    pub = natlab.add_public("pub")
    home = natlab.add_home("home", PRESERVING)
    early = ask(natlab, "pub", "udp", f"{home.public_address}:40003", local_port=UDP, wait=0.5)
    assert early.returncode == 1
    start_echo(natlab, "pub")
    out = ask(natlab, "home", "udp", f"{pub.address}:{UDP}", local_port=40003)
    assert out.returncode == 0 and out.stdout.strip() == f"{home.public_address}:40003", out.stdout


def test_port_preserving_nat_keeps_one_port_for_every_destination(world: NatLab) -> None:
    out = ask(
        world, "alice", "udp", _target(world, "pub", UDP), _target(world, "pub2", UDP), local_port=40001
    )
    assert out.returncode == 0, out.stderr
    ports = [line.rsplit(":", 1)[1] for line in out.stdout.split()]
    assert ports == ["40001", "40001"], out.stdout


def test_symmetric_nat_shows_a_new_port_per_destination(world: NatLab) -> None:
    out = ask(world, "sym", "udp", _target(world, "pub", UDP), _target(world, "pub2", UDP), local_port=40002)
    assert out.returncode == 0, out.stderr
    first, second = (line.rsplit(":", 1)[1] for line in out.stdout.split())
    assert first != second, out.stdout


def test_every_namespace_is_gone_afterwards_even_when_the_test_fails() -> None:
    require_natlab()
    made: list[str] = []
    with pytest.raises(RuntimeError, match="the test failed"), NatLab() as lab:
        lab.add_public("pub")
        lab.add_home("home", PRESERVING)
        start_echo(lab, "home")
        made = list(lab.namespaces)
        assert set(made) <= _netns() and len(made) == 4  # the bridge, pub, the router, the home
        raise RuntimeError("the test failed")
    assert made and not set(made) & _netns()
    assert not [ns for ns in _netns() if ns.startswith(f"{lab.tag}-")]


def test_nothing_of_the_lab_is_in_the_host_namespace(natlab: NatLab) -> None:
    before = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, timeout=10).stdout
    natlab.add_public("pub")
    natlab.add_home("home", PRESERVING)
    after = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, timeout=10).stdout
    assert before.count("\n") == after.count("\n")
    assert "198.18." not in subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout


def test_a_machine_that_cannot_build_the_lab_skips_unless_required() -> None:
    """The check itself: a skip that says what is missing, and a failure with the switch set."""
    with pytest.raises(pytest.skip.Exception) as skipped:
        require_natlab({}, lambda _: "/usr/sbin/tool", lambda: 1000)
    assert "needs root" in str(skipped.value) and INSTALL in str(skipped.value)
    assert "\n" not in str(skipped.value)
    with pytest.raises(pytest.fail.Exception, match=f"needs nft: .*{REQUIRE}=1"):
        require_natlab({REQUIRE: "1"}, lambda tool: None if tool == "nft" else "/x", lambda: 0)
    with pytest.raises(pytest.skip.Exception, match="needs nft"):
        require_natlab({REQUIRE: "0"}, lambda tool: None if tool == "nft" else "/x", lambda: 0)
