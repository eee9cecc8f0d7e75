"""Real ``tidings`` processes in the NAT lab (``tests/support/natlab.py``): one home per node, every command
run inside the namespace of the lab host the node lives on.

Theory of operation. A ``LabNode`` is a home directory (under the test's tmp path) bound to one lab host.
Every command for it, ``init`` and ``run`` as well as ``post``, ``follow``, ``status --json`` and the rest,
runs as ``ip netns exec <namespace> <python> -m tidings.cli.main --home HOME ...`` through ``NatLab.run``
and ``NatLab.popen`` (the same interpreter and module as ``tests/support/processes.py``), so the node sees
only the lab's network: its own address, its router, the bridge.

- ``start`` writes ``config.toml`` when given a config, starts ``tidings run --http off`` with its stdout
  and stderr in files next to the home (a full pipe would stall a node that logs much), and returns the
  address once the node printed its first line, ``listening on HOST:PORT`` (spec/cli.md, ``run``).
- ``stop`` sends SIGTERM, waits, then kills; with ``check`` it also asserts a clean exit.
- ``wait_for`` polls a predicate until it holds or a deadline passes, and then fails naming what it waited
  for, with the end of the node's log.
- ``LabNodes`` makes the nodes of one test and stops every one still running when the test ends, also when
  it failed, before the lab deletes the namespaces; the lab in turn stops every process it started, so no
  node outlives its lab.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from tests.support.natlab import NatLab
from tests.support.processes import TIDINGS

PORT = 7433  # each lab host has its own network namespace, so every node can listen on the usual port
READY = 20.0  # seconds for ``tidings run`` to print its listening line
CLI = 30.0  # seconds for any one short ``tidings`` command
STOP = 10.0  # seconds for a node to end after SIGTERM before it is killed
POLL = 0.1  # seconds between two looks of ``wait_for``
LOG_TAIL = 3000  # characters of a node's log shown when a wait fails

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str = "the condition") -> T:
    """Call ``predicate`` every ``POLL`` seconds until it returns something true, and return that; after
    ``timeout`` seconds fail with ``AssertionError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(POLL)


def toml_text(config: Mapping[str, Any]) -> str:
    """``config`` as TOML text: top-level keys first, then one ``[table]`` (or ``[table.sub]``) per nested
    mapping; values are booleans, integers, finite floats, strings and lists of those. Round-tripped
    through ``tomllib`` so a value this writer gets wrong fails here, not in the node."""
    lines: list[str] = []
    _toml_table(config, (), lines)
    text = "\n".join(lines) + "\n"
    if tomllib.loads(text) != config:
        raise ValueError(f"natlab_nodes: config does not survive TOML: {config!r}")
    return text


def _toml_table(table: Mapping[str, Any], path: tuple[str, ...], lines: list[str]) -> None:
    if path:
        lines.append(f"[{'.'.join(_toml_key(part) for part in path)}]")
    for key, value in table.items():
        if not isinstance(value, Mapping):
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in table.items():
        if isinstance(value, Mapping):
            _toml_table(value, (*path, key), lines)


def _toml_key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "-_" for c in key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise ValueError(f"natlab_nodes: no TOML for {value!r}")


class LabNode:
    """One Tidings home on lab host ``host``, driven by real ``tidings`` processes inside its namespace
    (see the module docstring)."""

    def __init__(self, lab: NatLab, host: str, home: Path) -> None:
        self.lab = lab
        self.host = lab.hosts[host]
        self.home = home
        self.address = ""  # HOST:PORT while running, as ``tidings run`` printed it
        self.proc: subprocess.Popen[str] | None = None
        self._feed = ""
        self._out = home.parent / f"{home.name}.out"
        self._err = home.parent / f"{home.name}.log"

    def __repr__(self) -> str:
        return f"LabNode({self.host.name!r}, {self.home.name!r}, address={self.address!r})"

    # -- commands -----------------------------------------------------------------------------------

    def cli(self, *args: str, check: bool = True, timeout: float = CLI) -> subprocess.CompletedProcess[str]:
        """Run ``tidings --home HOME ARGS...`` inside the node's namespace to the end; with ``check`` a
        non-zero exit fails the test with the command's stderr."""
        out = self.lab.run(self.host.name, [*TIDINGS, "--home", str(self.home), *args], timeout=timeout)
        if check and out.returncode != 0:
            raise AssertionError(f"tidings {' '.join(args)} in {self.host.name} failed: {out.stderr.strip()}")
        return out

    def cli_json(self, *args: str) -> Any:
        """``tidings ARGS... --json``: its one JSON object."""
        return json.loads(self.cli(*args, "--json").stdout)

    def cli_lines(self, *args: str) -> list[Any]:
        """``tidings ARGS... --json``: its JSON Lines, one value a line."""
        out = self.cli(*args, "--json").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def init(self, name: str | None = None) -> str:
        """``tidings init``: create the identity and store; returns the feed id."""
        self.home.parent.mkdir(parents=True, exist_ok=True)
        self._feed = self.cli_json("init", *(("--name", name) if name else ()))["feed"]
        return self._feed

    @property
    def feed(self) -> str:
        """The node's feed id (``@...``)."""
        if not self._feed:
            self._feed = self.cli_json("id")["feed"]
        return self._feed

    def post(self, text: str) -> str:
        """``tidings post TEXT``; returns the entry id."""
        return str(self.cli_json("post", text)["id"])

    def follow(self, feed: str) -> None:
        """``tidings follow FEED``."""
        self.cli("follow", feed)

    def status(self) -> dict[str, Any]:
        """``tidings status --json``."""
        return dict(self.cli_json("status"))

    def peers(self) -> list[dict[str, Any]]:
        """``tidings peers --json``."""
        return self.cli_lines("peers")

    def log_ids(self, feed: str) -> set[str]:
        """The ids of the entries of ``feed`` stored in this home (empty while it has none of them)."""
        out = self.cli("log", feed, "--json", check=False)
        if out.returncode != 0:
            assert "no feed" in out.stderr, out.stderr  # nothing of that feed received yet
            return set()
        return {json.loads(line)["id"] for line in out.stdout.splitlines() if line.strip()}

    # -- the running node ---------------------------------------------------------------------------

    def start(
        self,
        listen: str | None = None,
        *,
        bootstrap: Iterable[str] = (),
        peers: Iterable[str] = (),
        config: Mapping[str, Any] | None = None,
        args: Sequence[str] = (),
        timeout: float = READY,
    ) -> str:
        """Start ``tidings run`` (listening on ``listen``, default the host's address at ``PORT``) with
        ``--bootstrap``/``--peer`` for each address given and ``config`` written to config.toml; returns
        the address it listens on, once it printed so."""
        if self.running():
            raise RuntimeError(f"natlab_nodes: {self!r} already runs")
        if config is not None:
            (self.home / "config.toml").write_text(toml_text(config), encoding="utf-8")
        argv = [
            *TIDINGS,
            "--home",
            str(self.home),
            "run",
            "--listen",
            listen or f"{self.host.address}:{PORT}",
        ]
        argv += ["--http", "off", "-v"]
        for address in bootstrap:
            argv += ["--bootstrap", address]
        for address in peers:
            argv += ["--peer", address]
        argv += args
        with self._out.open("w") as out, self._err.open("w") as err:
            self.proc = self.lab.popen(self.host.name, argv, stdout=out, stderr=err)
        line = wait_for(self._listening, timeout, f"{self!r} to print its listening line")
        self.address = line.split()[-1]
        return self.address

    def _listening(self) -> str:
        first = self._out.read_text().partition("\n")
        if first[1]:
            assert first[0].startswith("listening on "), first[0] + self.log()
            return first[0]
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(
                f"{self!r} ended with {self.proc.returncode} before listening:\n{self.log()}"
            )
        return ""

    def running(self) -> bool:
        """Whether the ``tidings run`` process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, *, check: bool = True, timeout: float = STOP) -> str:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns the node's log. With ``check``, fail
        unless the node ended by itself with status 0, no traceback, and removed its node.json."""
        proc, self.proc, self.address = self.proc, None, ""
        if proc is None:
            return self.log()
        killed = False
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
                killed = True
        log = self.log()
        if check:
            assert not killed, f"{self!r} did not end within {timeout} s of SIGTERM:\n{log}"
            assert proc.returncode == 0 and "Traceback" not in log, log
            assert not (self.home / "node.json").exists()
        return log

    def log(self, tail: int | None = None) -> str:
        """What the node wrote to stderr (its log), or the last ``tail`` characters of it."""
        text = self._err.read_text() if self._err.exists() else ""
        return text if tail is None else text[-tail:]

    def wait_for(self, predicate: Callable[[], T], timeout: float, what: str = "the condition") -> T:
        """``wait_for`` that, when it fails, also shows the end of this node's log."""
        try:
            return wait_for(predicate, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc} ({self!r}); its log ends:\n{self.log(LOG_TAIL)}") from None


class LabNodes:
    """The nodes of one test in one lab, each with a home under ``root``; closing stops every node still
    running (SIGTERM, then SIGKILL), whatever the test did."""

    def __init__(self, lab: NatLab, root: Path) -> None:
        self.lab = lab
        self.root = root
        self.nodes: list[LabNode] = []

    def __enter__(self) -> LabNodes:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def add(self, host: str, *, name: str | None = None, init: bool = True) -> LabNode:
        """A node on lab host ``host`` with a fresh home (``root/NAME``, default the host's name); with
        ``init`` its identity is created (``tidings init --name NAME``)."""
        label = name or host
        if any(node.home.name == label for node in self.nodes):
            raise ValueError(f"natlab_nodes: a node named {label!r} already exists")
        node = LabNode(self.lab, host, self.root / label)
        self.nodes.append(node)
        if init:
            node.init(label)
        return node

    def close(self) -> None:
        """Stop every node that still runs, without checks (the test may have failed already)."""
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)  # all first, so they end side by side
        for node in self.nodes:
            node.stop(check=False)
