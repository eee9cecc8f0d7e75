"""What the network commands say when something is in the way, through real ``tidings`` processes:
a web page address already taken by another node, a network key that differs, a relay that is down,
a malformed address. Each error says what is wrong, where, and what to do.
"""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from tests.support.nodes import next_host
from tests.support.processes import Running, tidings, wait_for


def _web_state(home: Path) -> dict:
    try:
        info = json.loads((home / "node.json").read_text())
    except (OSError, ValueError):
        return {}
    return info.get("services", {}).get("web", {})


def _next_line(node: Running, timeout: float = 10.0) -> str:
    """The node's next stdout line; an AssertionError (not a hang) when none comes in time."""
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(node.proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)  # killing the node ends a read left waiting
    assert got, f"no line from tidings run within {timeout} s"
    return got[0].strip()


@pytest.mark.slow
def test_a_second_node_whose_web_address_is_taken_says_which_and_what_to_do(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for home in (a, b):
        tidings(home, "init")
    host = next_host()
    nodes: list[Running] = []
    try:
        first = Running(a, "--http", f"{host}:0")
        nodes.append(first)
        # the second line says where the page is, and how to open it
        line = _next_line(first)
        assert line.startswith(f"web page on http://{host}:") and line.endswith(
            ": 'tidings open' opens it in your browser"
        ), line
        url = line.split()[3].removesuffix(":")
        taken = url.removeprefix("http://")
        # a second node on the same machine, on the same web address (as with two default nodes)
        second = Running(b, "--http", taken)
        nodes.append(second)
        wait_for(lambda: _web_state(b).get("state") == "crashed", timeout=10)
        out = tidings(b, "open", "--print", check=False)
        assert out.returncode == 1 and out.stdout == "", out
        (error,) = out.stderr.splitlines()
        assert (
            f"serves no web page: WebBindError: cannot serve the web page on {taken}: address already in use"
            in error
        )
        assert "start the node with --http HOST:PORT" in error and "--http off" in error, error
        assert tidings(a, "open", "--print").stdout.startswith(
            f"{url}/login?code="
        )  # the first one's own page
        err = second.stop()
        nodes.remove(second)
        assert f"cannot serve the web page on {taken}: address already in use" in err, err
        assert "--http HOST:PORT for another address (port 0 picks a free one) or --http off" in err, err
        # as told: another address; 'tidings open' on that home finds the page's real URL in node.json
        second = Running(b, "--http", f"{host}:0")
        nodes.append(second)
        own = _next_line(second).split()[3].removesuffix(":")
        assert own.startswith(f"http://{host}:") and own != url
        assert _web_state(b)["url"] == own
        assert tidings(b, "open", "--print").stdout.startswith(f"{own}/login?code=")
        for node in nodes:
            node.stop()
        nodes.clear()
    finally:
        for node in nodes:
            node.kill()


def test_a_network_key_mismatch_says_the_handshake_failed(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for home in (a, b):
        tidings(home, "init")
    node = Running(a, "--network-key", "our club")
    try:
        out = tidings(b, "sync", node.address, check=False)
        assert out.returncode == 1, out
        (line,) = out.stderr.splitlines()
        assert line.startswith(f"error: sync with {node.address} failed: the handshake failed ("), line
        assert "the usual cause is a network key (--network-key) that differs from the peer's" in line, line
        node.stop()
    finally:
        node.kill()


def _closed_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]  # nothing listens there once it is closed


def test_a_dead_relay_is_named_once_with_the_reason(tmp_path: Path) -> None:
    home = tmp_path / "h"
    tidings(home, "init")
    tidings(home, "post", "hello relays")
    host = next_host()
    relay = f"ws://{host}:{_closed_port(host)}"
    tidings(home, "bridge", "nostr", "relay", "add", relay)
    out = tidings(home, "bridge", "nostr", "publish", check=False)
    assert out.returncode == 1 and out.stderr == "error: 1 of 1 relays failed\n", out
    assert out.stdout == f"{relay}: error: cannot connect: connection refused\n"
    listed = tidings(home, "bridge", "list").stdout
    assert f"relay {relay}  error: cannot connect: connection refused" in listed, listed


@pytest.mark.parametrize("option", ["--listen", "--peer", "--bootstrap", "--http"])
def test_a_malformed_address_names_its_option(tmp_path: Path, option: str) -> None:
    out = tidings(tmp_path / "h", "run", option, "nonsense", check=False)
    assert out.returncode == 2 and out.stdout == "", out
    assert out.stderr == (
        f"error: invalid value for '{option}': not a HOST:PORT address: 'nonsense' (see 'tidings run --help')\n"
    )
    assert not (tmp_path / "h").exists()  # refused before anything was made
