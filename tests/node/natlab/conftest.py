"""Fixtures for the NAT lab (``tests/support/natlab.py``): an empty lab per test, one shared world, and the
Tidings nodes of a test (``tests/support/natlab_nodes.py``)."""

from __future__ import annotations

import select
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.natlab import DOUBLE, PRESERVING, SYMMETRIC, NatLab, require_natlab
from tests.support.natlab_nodes import LabNodes

ECHO = str(Path(__file__).resolve().parents[2] / "support" / "natlab_echo.py")
UDP, TCP = 7000, 7001
READY = 10.0  # seconds for an echo server to bind


def start_echo(lab: NatLab, name: str) -> None:
    """A UDP and a TCP "what address do you see" echo in host ``name``; returns once both are bound."""
    for proto, port in (("udp", UDP), ("tcp", TCP)):
        proc = lab.popen(name, [sys.executable, ECHO, "serve", proto, str(port)])
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], READY)
        line = proc.stdout.readline() if ready else ""
        assert line.strip() == "ready", f"echo {proto} in {name} did not start: {line!r}"


def ask(lab: NatLab, name: str, proto: str, *targets: str, local_port: int = 0, wait: float = 2.0):
    """Ask each target (``host:port``) from one socket in host ``name``: the run, answers a line."""
    argv = [sys.executable, ECHO, "ask", proto, str(local_port), *targets, "--wait", str(wait)]
    return lab.run(name, argv, timeout=wait * len(targets) + 10)


@pytest.fixture
def natlab() -> Iterator[NatLab]:
    """An empty lab, deleted after the test whatever happens."""
    require_natlab()
    with NatLab() as lab:
        yield lab


@pytest.fixture
def lab_nodes(natlab: NatLab, tmp_path: Path) -> Iterator[LabNodes]:
    """Real ``tidings`` nodes in the test's lab, homes under ``tmp_path``; every one still running is
    stopped when the test ends, before the lab is deleted."""
    with LabNodes(natlab, tmp_path) as nodes:
        yield nodes


@pytest.fixture(scope="module")
def world() -> Iterator[NatLab]:
    """Two public hosts running echoes, and one home of every kind (alice and bob port-preserving, sym
    symmetric, carol behind a carrier-grade NAT); alice runs echoes too."""
    require_natlab()
    with NatLab() as lab:
        lab.add_public("pub")
        lab.add_public("pub2")
        lab.add_home("alice", PRESERVING)
        lab.add_home("bob", PRESERVING)
        lab.add_home("sym", SYMMETRIC)
        lab.add_home("carol", DOUBLE)
        for name in ("pub", "pub2", "alice"):
            start_echo(lab, name)
        yield lab
