"""config.toml (issue 15, item 9): every table checked when the file is loaded, before the node starts.

A bad value makes ``tidings run`` exit 1 with one line naming the file, the key and what is allowed,
never a traceback and never a node that crashes, spins or refuses every peer later.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from tidings.node.config import DEFAULT_LIMITS, LIMITS

from tests.support.nodes import next_host
from tests.support.processes import TIDINGS, Running, tidings

ROOT = Path(__file__).resolve().parents[2]

CASES = [
    # (config.toml, what the one error line must say after "FILE: ")
    ("[limits]\npoll_interval = -1\n", "[limits] poll_interval = -1: must be a number from 0.01 to 60 (s)"),
    ("[limits]\npoll_interval = 0\n", "[limits] poll_interval = 0: must be a number from 0.01 to 60 (s)"),
    (
        '[limits]\nmax_per_host = "eight"\n',
        "[limits] max_per_host = 'eight': must be an integer from 1 to 1000",
    ),
    ("[limits]\nmax_connections = 0\n", "[limits] max_connections = 0: must be an integer from 1 to 10000"),
    ("[limits]\nmax_connections = -3\n", "[limits] max_connections = -3: must be an integer from 1 to 10000"),
    (
        "[limits]\nhandshake_timeout = 0\n",
        "[limits] handshake_timeout = 0: must be a number from 0.5 to 120 (s)",
    ),
    ("[limits]\nhops = 1000000\n", "[limits] hops = 1000000: must be an integer from 0 to 4"),
    ('[limits]\nhops = "two"\n', "[limits] hops = 'two': must be an integer from 0 to 4"),
    ("[limits]\nhops = 2.5\n", "[limits] hops = 2.5: must be an integer from 0 to 4"),
    ("[limits]\nhops = true\n", "[limits] hops = true: must be an integer from 0 to 4"),
    ("[limits]\nban_seconds = nan\n", "[limits] ban_seconds = nan: must be a number from 1 to 86400 (s)"),
    ("[limits]\nhopz = 2\n", "[limits] has no key 'hopz' (did you mean 'hops'?)"),
    ("limits = 3\n", "limits must be a table ([limits])"),
    (
        "[limts]\nhops = 2\n",
        "unknown key 'limts' (did you mean 'limits'?); config.toml holds limits, bootstrap,",
    ),
    ('bootstrap = "10.0.0.1:7433"\n', 'bootstrap must be a list of "HOST:PORT" strings'),
    ('bootstrap = ["10.0.0.1"]\n', "bootstrap: not a HOST:PORT address: '10.0.0.1'"),
    ('[filters]\nhide_replies = "yes"\n', "[filters] hide_replies must be true or false"),
    ("[filters]\nhide_reply = true\n", "[filters] has no setting 'hide_reply'"),
    (
        '[rankers.engagement]\ngravity = "steep"\n',
        "[rankers.engagement] gravity = 'steep': must be a finite number",
    ),
    (
        "[rankers.engagement]\ngravty = 1.5\n",
        "[rankers.engagement]: the engagement ranker has no weight 'gravty'",
    ),
    ("[rankers.popular]\ngravity = 1.5\n", "[rankers.popular]: no ranker named 'popular'"),
    ("[limits]\nhops = \n", "Invalid value"),
]


def text(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def start(home: Path) -> subprocess.CompletedProcess[str]:
    """``tidings run``, which must end by itself (a node that started would run until the timeout)."""
    argv = [*TIDINGS, "--home", str(home), "run", "--listen", f"{next_host()}:0", "--http", "off"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[1].split(":")[0][:40] for c in CASES])
def test_a_bad_config_stops_run_before_the_node_starts(tmp_path: Path, text: str, expected: str) -> None:
    home = tmp_path / "home"
    home.mkdir()
    config = home / "config.toml"
    config.write_text(text)
    proc = start(home)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"error: {config}: {expected}"), line
    assert proc.stdout == "" and not (home / "secret.pem").exists()  # nothing was created or started


def test_a_config_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    home = tmp_path / "home"
    tidings(home, "init")
    config = home / "config.toml"
    config.write_bytes(b"[limits]\nhops = 2 # caf\xe9\n")
    proc = start(home)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines() == [f"error: {config}: not UTF-8 text (byte 0xe9 at offset 23)"]
    # every command that reads the file says the same
    timeline = tidings(home, "timeline", check=False)
    assert timeline.returncode == 1 and timeline.stderr.startswith(f"error: {config}: not UTF-8"), (
        timeline.stderr
    )


def test_every_limit_at_its_default_and_its_bounds_is_accepted(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    keys = "".join(f"{limit.name} = {limit.default!r}\n" for limit in LIMITS)
    rankers = "[rankers.engagement]\ngravity = 1.5\n[filters]\nhide_replies = true\nlanguages = ['en']\n"
    (home / "config.toml").write_text(f'bootstrap = ["127.0.0.1:9"]\n[limits]\n{keys}{rankers}')
    node = Running(home)
    node.stop()
    for edge in ("low", "high"):
        keys = "".join(f"{limit.name} = {getattr(limit, edge)!r}\n" for limit in LIMITS)
        (home / "config.toml").write_text(f"[limits]\n{keys}")
        assert tidings(home, "timeline").returncode == 0  # the file loads


def test_the_schema_is_the_one_source_of_the_defaults_and_is_documented() -> None:
    from tidings.node.net.node import DEFAULT_LIMITS as NODE_DEFAULTS

    assert NODE_DEFAULTS == DEFAULT_LIMITS == {limit.name: limit.default for limit in LIMITS}
    doc = (ROOT / "spec" / "config.md").read_text()
    readme = (ROOT / "README.md").read_text()
    for limit in LIMITS:
        row = re.search(rf"^\| `{limit.name}` \|([^\n]*)$", doc, re.MULTILINE)
        assert row is not None, f"spec/config.md has no row for {limit.name}"
        cells = [c.strip() for c in row.group(1).split("|")]
        assert cells[0] == ("integer" if limit.kind is int else "number"), (limit.name, cells)
        assert cells[1] == text(limit.default), (limit.name, cells)
        assert cells[2] == f"{text(limit.low)} – {text(limit.high)}", (limit.name, cells)
        assert re.search(rf"^{limit.name} = ", readme, re.MULTILINE), (
            f"README's config.toml lacks {limit.name}"
        )
