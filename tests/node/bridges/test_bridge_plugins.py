"""Third-party bridges: a package in tests/plugins/ is pip-installed, found, run, and its crash contained."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PLUGINS

CLI = [sys.executable, "-m", "tidings.cli.main"]
PLUGIN = PLUGINS / "tidings-demo-bridge"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    """``tidings-demo-bridge`` installed by pip into a target folder put on PYTHONPATH."""
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(PLUGIN)],
        check=True, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TMPDIR": str(build)},
    )  # fmt: skip
    assert list(target.glob("tidings_demo_bridge-*.dist-info/entry_points.txt"))
    env = {k: v for k, v in os.environ.items() if k not in ("TIDINGS_HOME", "TIDINGS_PASSPHRASE")}
    return {**env, "PYTHONPATH": str(target)}


def run(env, home: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [*CLI, "--home", str(home), *args], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == code, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    return out


def jlines(out: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def test_a_plugin_bridge_is_listed_and_its_commands_work(plugin_env, tmp_path):
    home = tmp_path / "h"
    run(plugin_env, home, "init")
    rows = {r["name"]: r for r in jlines(run(plugin_env, home, "bridge", "list", "--json"))}
    assert {"atom", "rss", "nostr", "demo", "crashing", "broken"} <= set(rows)
    demo = rows["demo"]
    assert demo["ok"] and demo["description"] == "A demo bridge that says hello."
    assert demo["origin"] == "tidings-demo-bridge 0.1.0: tidings_demo_bridge:DemoBridge"
    assert demo["settings"] == {"greeting": "hello", "enabled": "off"} and demo["enabled"] is False
    broken = rows["broken"]
    assert broken["ok"] is False and broken["error"].startswith("ModuleNotFoundError")
    text = run(plugin_env, home, "bridge", "list").stdout
    assert "broken: unavailable (tidings-demo-bridge 0.1.0" in text
    assert jlines(run(plugin_env, home, "bridge", "demo", "hello", "you", "--json")) == [
        {"greeting": "hello you"}
    ]
    out = run(plugin_env, home, "bridge", "broken", "anything", code=1)
    assert out.stderr.startswith("error: the broken bridge failed to load: ModuleNotFoundError")
    out = run(plugin_env, home, "bridge", "demo", "fail", code=1)
    assert out.stderr.strip().startswith(
        "error: the demo bridge failed: RuntimeError: the demo bridge failed on purpose"
    )
    run(plugin_env, home, "bridge", "config", "demo", "enabled", "on")
    assert jlines(run(plugin_env, home, "bridge", "config", "demo", "--json")) == [
        {"bridge": "demo", "settings": {"greeting": "hello", "enabled": "on"}}
    ]
    run(plugin_env, home, "bridge", "config", "demo", "enabled", "--reset")
    assert jlines(run(plugin_env, home, "bridge", "list", "--json"))[3]["settings"]["enabled"] == "off"


def test_the_node_runs_plugin_services_and_survives_a_crashing_one(plugin_env, tmp_path):
    home = tmp_path / "h"
    run(plugin_env, home, "init")
    run(plugin_env, home, "bridge", "config", "demo", "enabled", "on")
    run(plugin_env, home, "bridge", "config", "demo", "greeting", "howdy")
    errors = tmp_path / "run.log"
    log = errors.open("w")
    proc = subprocess.Popen(
        [*CLI, "--home", str(home), "run", "--listen", "127.0.0.1:0", "--http", "off"],
        env=plugin_env, stdout=subprocess.DEVNULL, stderr=log, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        services: dict = {}
        while time.monotonic() < deadline:
            assert proc.poll() is None, errors.read_text()
            if (home / "node.json").exists():
                status = jlines(run(plugin_env, home, "status", "--json"))[0]
                services = status["services"]
                if (
                    services.get("bridge:crashing", {}).get("state") == "crashed"
                    and services.get("bridge:demo", {}).get("ticks", 0) > 2
                ):
                    break
            time.sleep(0.2)
        assert status["running"] is True
        assert (
            services["bridge:demo"]["state"] == "running" and services["bridge:demo"]["greeting"] == "howdy"
        )
        assert services["bridge:crashing"] == {"state": "crashed", "error": "RuntimeError: boom"}
        assert services["bridge:broken"]["state"] == "crashed"
        assert "failed to load: ModuleNotFoundError" in services["bridge:broken"]["error"]
        assert "bridge:rss" not in services and "bridge:nostr" not in services  # opt-in: nothing enabled
        text = run(plugin_env, home, "status").stdout
        assert "service: bridge:crashing: crashed (RuntimeError: boom)" in text
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
    assert proc.returncode == 0, errors.read_text()
    assert "RuntimeError: boom" in errors.read_text()  # the crash is logged
    assert not (home / "node.json").exists()
