"""Hole punching (``tidings.node.net.punch``, spec/protocol.md §12.11) through the NAT lab's home routers.

Each side runs ``tests/support/natlab_punch.py`` in its home: it binds a port and prints it, the test
hands each side the other's observed public IP (asked from the public echo, as a node learns it from
``dialed`` or ``reserved``) with the other's local port (a port-preserving NAT keeps it), and both open at
about the same time. The routers drop unsolicited inbound, so the first SYN to arrive is dropped and the
second one meets a socket in SYN-SENT: a real TCP simultaneous open.
"""

from __future__ import annotations

import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.node.natlab.conftest import TCP, ask
from tests.support.natlab import NatLab

pytestmark = pytest.mark.slow

PUNCH = str(Path(__file__).resolve().parents[2] / "support" / "natlab_punch.py")
READY = 10.0  # seconds for the script to start and bind
TIMEOUT = 4.0  # the punch deadline given to each side
SLACK = 6.0  # seconds beyond the deadline for the scripts to report and end


@dataclass(frozen=True, slots=True, kw_only=True)
class Side:
    name: str
    code: int
    out: str
    err: str


def _observed_ip(lab: NatLab, name: str) -> str:
    """The IP the public side sees ``name`` come from, asked from the echo on ``pub``."""
    out = ask(lab, name, "tcp", f"{lab.hosts['pub'].address}:{TCP}")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().rsplit(":", 1)[0]


def _start(lab: NatLab, name: str) -> tuple[subprocess.Popen[str], int]:
    proc = lab.popen(name, [sys.executable, PUNCH, name, "--timeout", str(TIMEOUT)], stdin=True)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], READY)
    line = proc.stdout.readline() if ready else ""
    assert line.startswith("port "), f"punch script in {name} did not bind: {line!r}"
    return proc, int(line.split()[1])


def _punch(lab: NatLab, first: str, second: str, delay: float = 0.0) -> tuple[Side, Side, float]:
    """Both sides bind, learn the other's public address, and open; ``second`` opens ``delay`` seconds
    after ``first``. Returns what each side reported, and the seconds until both had ended."""
    ips = {name: _observed_ip(lab, name) for name in (first, second)}
    procs = {name: _start(lab, name) for name in (first, second)}
    start = time.monotonic()
    for name, other, wait in ((first, second, 0.0), (second, first, delay)):
        proc, _ = procs[name]
        assert proc.stdin is not None
        proc.stdin.write(f"{ips[other]}:{procs[other][1]} {wait}\n")
        proc.stdin.flush()
    sides = []
    for name in (first, second):
        proc, _ = procs[name]
        out, err = proc.communicate(timeout=TIMEOUT + delay + SLACK)
        sides.append(Side(name=name, code=proc.returncode, out=out.strip(), err=err.strip()))
    return sides[0], sides[1], time.monotonic() - start


def _connected(side: Side, other: str) -> None:
    assert side.code == 0 and side.out.startswith("OK "), (side.out, side.err)
    assert side.out.endswith(f"got=hello from {other}"), side.out


@pytest.mark.parametrize("delay", [0.0, 1.5])
def test_two_port_preserving_homes_punch_a_direct_connection(world: NatLab, delay: float) -> None:
    alice, bob, _ = _punch(world, "alice", "bob", delay)
    _connected(alice, "bob")
    _connected(bob, "alice")
    # Through the routers no SYN is refused (they drop unsolicited inbound): the first connect attempt
    # of each side is the one that connects, by simultaneous open.
    for side in (alice, bob):
        assert " connect attempts=1 refused=0 " in side.out, side.out


def test_a_home_behind_double_nat_punches_with_a_port_preserving_home(world: NatLab) -> None:
    carol, alice, _ = _punch(world, "carol", "alice")
    _connected(carol, "alice")
    _connected(alice, "carol")


def test_a_symmetric_nat_makes_the_punch_fail_cleanly_within_the_deadline(world: NatLab) -> None:
    sym, alice, elapsed = _punch(world, "sym", "alice")
    for side in (sym, alice):
        assert side.code == 1 and side.out.startswith("FAIL punch_failed "), (side.out, side.err)
        assert side.err == ""  # a clean failure, no traceback
    # Each side gives up at its deadline, not later.
    assert TIMEOUT <= elapsed < TIMEOUT + SLACK
