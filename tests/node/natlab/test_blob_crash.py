"""Issue 18's crash must-hold, as whole processes: bob is killed (SIGKILL) in the middle of fetching
alice's files; after the restart no blob file under a blob's name has wrong bytes, and the transfer goes
on from the bytes already there (spec §12.12).

In the NAT lab (two public hosts) so the link can be slowed with ``tc`` to 40 Mbit/s on alice's side
only, which makes "in the middle" a state that lasts seconds, not milliseconds; nothing leaves the lab.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.support.natlab import NatLab
from tests.support.natlab_nodes import LabNode, LabNodes

pytestmark = pytest.mark.slow

FILES = 3
SIZE = 3_000_000


def blob_files(home: Path) -> dict[str, bytes]:
    """The whole blobs of a home: name (hex id) -> bytes."""
    return {p.name: p.read_bytes() for p in (home / "blobs").glob("??/*") if len(p.name) == 64}


def partials(home: Path) -> dict[str, int]:
    folder = home / "blobs" / "partial"
    return {p.name: p.stat().st_size for p in folder.iterdir()} if folder.is_dir() else {}


def test_a_transfer_killed_midway_resumes_and_never_leaves_a_corrupt_blob(
    natlab: NatLab, lab_nodes: LabNodes, tmp_path: Path
) -> None:
    natlab.add_public("alice")
    natlab.add_public("bob")
    shaped = natlab.run(
        "alice",
        [
            "tc",
            "qdisc",
            "add",
            "dev",
            "wan0",
            "root",
            "tbf",
            "rate",
            "40mbit",
            "burst",
            "64kb",
            "latency",
            "200ms",
        ],
    )
    assert shaped.returncode == 0, shaped.stderr
    alice: LabNode = lab_nodes.add("alice")
    bob: LabNode = lab_nodes.add("bob")
    files = []
    for n in range(FILES):
        path = tmp_path / f"file{n}.bin"
        path.write_bytes(os.urandom(SIZE))
        files.append(path)
    args = [arg for path in files for arg in ("--attach", str(path))]
    alice.cli("post", "three files", *args)
    wanted = {hashlib.blake2b(p.read_bytes(), digest_size=32).hexdigest(): p.read_bytes() for p in files}
    bob.follow(alice.feed)
    address = alice.start()
    bob.start(peers=[address])
    started = bob.wait_for(
        lambda: any(0 < size < SIZE for size in partials(bob.home).values()), 30, "a transfer under way"
    )
    assert started
    assert bob.proc is not None
    bob.proc.kill()  # SIGKILL: no clean-up of any kind
    bob.proc.wait(timeout=10)
    bob.stop(check=False)
    left = partials(bob.home)
    for name, data in blob_files(bob.home).items():  # whatever is under a blob's name is that blob
        assert hashlib.blake2b(data, digest_size=32).hexdigest() == name
    assert any(size > 0 for size in left.values()), left
    bob.start(peers=[address])
    bob.wait_for(lambda: set(wanted) <= set(blob_files(bob.home)), 60, "every file after the restart")
    for name, data in wanted.items():
        assert blob_files(bob.home)[name] == data
    log = bob.stop()
    assert "resuming blob" in log, log[-2000:]
    assert partials(bob.home) == {}
