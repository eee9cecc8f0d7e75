"""`tidings timeline --ranker/--weight/--explain/--explain-hidden` and `tidings rankers`, as processes."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import PLUGINS

TIDINGS = [sys.executable, "-m", "tidings.cli.main"]


def run(home, *args, code=0):
    out = subprocess.run([*TIDINGS, "--home", str(home), *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == code, out.stderr
    assert "Traceback" not in out.stderr
    return out


def lines(out):
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def test_rankers_and_ranked_timelines(tmp_path):
    home = tmp_path / "h"
    run(home, "init", "--name", "me")
    first = json.loads(run(home, "post", "about gardens", "--json").stdout)
    run(home, "post", "about spoilers", "--json")
    run(home, "react", first["id"], "🌱")
    run(home, "mute", "--word", "spoilers")
    names = {item["name"] for item in lines(run(home, "rankers", "--json"))}
    assert {"chronological", "engagement", "trust", "swarm"} <= names
    for ranker in ("chronological", "engagement", "trust"):
        items = lines(run(home, "timeline", "--ranker", ranker, "--explain", "--json"))
        assert [i["id"] for i in items] == [first["id"]]  # the muted post is absent
        assert isinstance(items[0]["score"], int | float) and items[0]["why"]
        assert {"id", "feed", "seq", "ts", "type", "content", "score", "why"} <= set(items[0])
    hidden = [i for i in lines(run(home, "timeline", "--explain-hidden", "--json")) if i.get("hidden")]
    assert len(hidden) == 1 and "spoilers" in " ".join(hidden[0]["why"]) and hidden[0]["content"] is None
    plain = lines(run(home, "timeline", "--json"))
    assert "why" not in plain[0]
    base = lines(run(home, "timeline", "--ranker", "engagement", "--json"))
    steeper = lines(run(home, "timeline", "--ranker", "engagement", "--weight", "gravity=3", "--json"))
    assert steeper[0]["id"] == base[0]["id"] and steeper[0]["score"] < base[0]["score"]  # the weight applies
    out = run(home, "timeline", "--ranker", "engagement", "--weight", "nonsense=1", code=2)
    assert "no weight 'nonsense'" in out.stderr
    out = run(home, "timeline", "--ranker", "engagement", "--weight", "reaction=abc", code=2)
    run(home, "timeline", "--ranker", "nope", code=2)


def test_a_ranker_installed_with_pip_is_used(tmp_path):
    """The package in tests/plugins/ is installed by pip (into a target folder) and used by the CLI."""
    import os

    plugin = PLUGINS / "tidings-demo-ranker"
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(plugin),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert list(target.glob("tidings_demo_ranker-*.dist-info/entry_points.txt"))
    env = {**os.environ, "PYTHONPATH": str(target)}
    home = tmp_path / "h"

    def run_env(*args):
        out = subprocess.run(
            [*TIDINGS, "--home", str(home), *args], capture_output=True, text=True, env=env, timeout=60
        )
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
        return out

    run_env("init")
    for text in ("a rather long post about many things", "short", "medium post"):
        run_env("post", text)
    names = {item["name"] for item in lines(run_env("rankers", "--json"))}
    assert "shortest" in names
    items = lines(run_env("timeline", "--ranker", "shortest", "--explain", "--json"))
    assert [i["content"]["text"] for i in items] == [
        "short",
        "medium post",
        "a rather long post about many things",
    ]
    assert items[0]["score"] == -5 and "5 characters" in items[0]["why"][0]
