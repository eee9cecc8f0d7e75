"""Local files (issue 15, item 8): real ``tidings`` commands on temporary homes, attacked through files.

Each attack ends with ``tidings verify`` passing: nothing stored is lost or damaged.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.nodes import next_host
from tests.support.processes import TIDINGS, Running

ARCHIVE_MAGIC = b"TIDINGS-ARCHIVE 1\n"


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    """Processes started inside inherit ``value`` as their umask."""
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def run(home: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    """``tidings --home HOME ARGS``: check the exit status, no traceback, and one ``error:`` line on 1."""
    proc = subprocess.run(
        [*TIDINGS, "--home", str(home), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == code, f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    if code == 1:
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return proc


def error(home: Path, *args: str) -> str:
    return run(home, *args, code=1).stderr.strip()


def verified(home: Path) -> dict:
    out = json.loads(run(home, "verify", "--json").stdout)
    assert out["ok"] is True, out
    return out


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    run(home, "init", "--name", "carol")
    for text in ("one", "two", "three"):
        run(home, "post", text)
    return home


def test_export_never_follows_a_symlink_planted_beside_the_file(tmp_path: Path, home: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    backup = tmp_path / "backup.tid"
    (tmp_path / "backup.tid.partial").symlink_to(victim)  # the old fixed temporary name
    run(home, "export", str(backup))
    assert victim.read_bytes() == b"precious"
    assert backup.read_bytes().startswith(ARCHIVE_MAGIC) and not backup.is_symlink()
    assert mode(backup) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    verified(home)


def test_export_keeps_an_existing_file_unless_forced(tmp_path: Path, home: Path) -> None:
    backup = tmp_path / "backup.tid"
    run(home, "export", str(backup))
    first = backup.read_bytes()
    run(home, "post", "four")
    message = error(home, "export", str(backup))
    assert message == f"error: {backup} exists; pass --force to replace it"
    assert backup.read_bytes() == first
    run(home, "export", str(backup), "--force")
    assert backup.read_bytes() != first and backup.read_bytes().startswith(ARCHIVE_MAGIC)
    # a symlink at the target is replaced itself, never written through, even with --force
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    link = tmp_path / "link.tid"
    link.symlink_to(victim)
    assert "exists" in error(home, "export", str(link))
    run(home, "export", str(link), "--force")
    assert victim.read_bytes() == b"precious" and not link.is_symlink()
    verified(home)


def test_export_refuses_the_home_own_files(tmp_path: Path, home: Path) -> None:
    before = verified(home)
    store = home / "store.db"
    for target in (store, home / "secret.pem", home / "backup.tid"):
        for force in ((), ("--force",)):
            message = error(home, "export", str(target), *force)
            assert f"inside the home {home}" in message, message
    # the same files reached through a symlink to the home
    alias = tmp_path / "alias"
    alias.symlink_to(home)
    assert "inside the home" in error(home, "export", str(alias / "store.db"), "--force")
    assert not (home / "backup.tid").exists()
    assert verified(home) == before
    assert len(run(home, "log", "--json").stdout.splitlines()) == 4  # the profile and three posts


def test_import_of_a_million_bad_records_is_bounded(tmp_path: Path, home: Path) -> None:
    archive = tmp_path / "bad.tid"
    archive.write_bytes(ARCHIVE_MAGIC + b"\x01" * 1_000_000)  # a million one-byte records
    # peak memory of the import process alone, measured by a parent that has no other child
    probe = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True)\n"
        "sys.stdout.buffer.write(b'%d %d\\n' % (resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,"
        " p.returncode))\n"
        "sys.stdout.buffer.write(p.stdout)\n"
    )
    argv = [sys.executable, "-c", probe, *TIDINGS, "--home", str(home), "import", str(archive), "--json"]
    out = subprocess.run(argv, capture_output=True, timeout=120, check=True).stdout
    head, _, report_line = out.partition(b"\n")
    peak_kb, code = map(int, head.split())
    assert code == 1
    assert len(report_line) < 100_000, len(report_line)
    report = json.loads(report_line)
    assert report["refused"] == 1_000_000 and report["refused_codes"] == {"bad_record": 1_000_000}
    assert len(report["rejected"]) == 100 and report["added"] == 0 and report["complete"] is False
    assert peak_kb < 200_000, f"peak RSS {peak_kb} kB"
    # on the terminal: a bounded list, then the rest summed up
    text = run(home, "import", str(archive), code=1)
    lines = text.stdout.splitlines()
    assert len(lines) == 1 + 20 + 1, lines[:3]
    assert lines[-1] == "  ... and 999980 more refused (bad_record 1000000)"
    assert (
        text.stderr.strip()
        == f"error: 1000000 record(s) of {archive} failed verification and were not imported"
    )
    verified(home)


@pytest.mark.parametrize("name", ["secret.pem", "transport.key", "web.token"])
def test_secret_files_others_may_read_are_refused(tmp_path: Path, home: Path, name: str) -> None:
    node = Running(home, "--http", f"{next_host()}:0")  # creates transport.key and web.token
    node.stop()
    secret = home / name
    assert mode(secret) == 0o600
    secret.chmod(0o644)
    expected = f"run 'chmod 600 {secret}'"
    argv = ["run", "--listen", f"{next_host()}:0", "--http", f"{next_host()}:0"]
    proc = subprocess.run([*TIDINGS, "--home", str(home), *argv], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines() == [
        f"error: {secret} may be read or changed by other users (mode 0644); {expected}"
    ]
    if name == "secret.pem":
        assert expected in error(home, "post", "not with a key others can read")
    secret.chmod(0o600)
    run(home, "post", "fixed")
    verified(home)


def test_the_home_and_every_file_in_it_are_private_whatever_the_umask(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)  # made beforehand by the user
    home.chmod(0o755)
    argv = [
        *TIDINGS,
        "--home",
        str(home),
        "run",
        "--listen",
        f"{next_host()}:0",
        "--http",
        f"{next_host()}:0",
    ]
    with umask(0):
        run(home, "init", "--name", "dora")
        run(home, "post", "hello")
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("listening on ")
        node_file = home / "node.json"
        for _ in range(200):
            if node_file.exists() and "web" in json.loads(node_file.read_text()).get("services", {}):
                break
            time.sleep(0.05)
        with umask(0):
            run(home, "post", "while running")
        assert mode(home) == 0o700
        files = sorted(p.name for p in home.iterdir() if p.is_file())
        assert {
            "store.db",
            "store.db-wal",
            "store.db-shm",
            "secret.pem",
            "transport.key",
            "web.token",
        } <= set(files), files
        loose = {name: oct(mode(home / name)) for name in files if mode(home / name) != 0o600}
        assert loose == {}
    finally:
        proc.terminate()
        proc.communicate(timeout=15)
    verified(home)


def test_an_older_store_left_readable_is_tightened(tmp_path: Path, home: Path) -> None:
    for name in ("store.db", "store.db-wal", "store.db-shm"):
        if (home / name).exists():
            (home / name).chmod(0o644)
    run(home, "log")
    assert {mode(home / n) for n in ("store.db", "store.db-wal", "store.db-shm") if (home / n).exists()} == {
        0o600
    }
    verified(home)
