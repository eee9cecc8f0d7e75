"""Third-party rankers: installed as a real distribution with a ``tidings.rankers`` entry point."""

from __future__ import annotations

import sys
import textwrap

import pytest
from click.testing import CliRunner
from tidings.cli.commands_rank import rankers
from tidings.node.ranking import RankingError, load_rankers
from tidings.node.ranking.timeline import rank_timeline
from tidings.protocol import Follow, Post, SigningKey
from tidings.storage.store import Store

NOW = 1_800_000_000_000
ME, ALICE = SigningKey(bytes([1]) * 32), SigningKey(bytes([2]) * 32)

PLUGIN = '''
"""A tiny third-party ranker package: shortest posts first, and two faulty ones."""
from tidings.node.ranking import Ranked, Ranker


class Shortest(Ranker):
    name = "shortest"
    description = "Shortest posts first."
    defaults = {"bonus": 0.0}

    def rank(self, candidates, context):
        return [
            Ranked(entry=c.entry, score=context.weights["bonus"] - len(c.text), reasons=[f"{len(c.text)} characters"])
            for c in candidates
        ]


class Crashing(Ranker):
    name = "crashing"
    description = "Raises."

    def rank(self, candidates, context):
        raise RuntimeError("boom")


class Liar(Ranker):
    name = "liar"
    description = "Returns an entry that was not a candidate."

    def rank(self, candidates, context):
        entry = dict(candidates[0].entry, id="%" + "a" * 52)
        return [Ranked(entry=entry, score=1.0)]


def make_shortest():
    return Shortest()


class Impostor(Shortest):
    name = "chronological"
'''

ENTRY_POINTS = """
[tidings.rankers]
shortest = demo_rankers:make_shortest
crashing = demo_rankers:Crashing
liar = demo_rankers:Liar
broken = demo_rankers_broken:Thing
impostor = demo_rankers:Impostor
"""


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """``demo-rankers 0.1`` installed into a directory on sys.path, as pip would lay it out."""
    site = tmp_path / "site"
    info = site / "demo_rankers-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-rankers\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(ENTRY_POINTS))
    (info / "RECORD").write_text("")
    (site / "demo_rankers.py").write_text(PLUGIN)
    (site / "demo_rankers_broken.py").write_text(
        "raise ImportError('needs a library that is not installed')\n"
    )
    monkeypatch.syspath_prepend(str(site))
    yield
    for name in ("demo_rankers", "demo_rankers_broken"):
        sys.modules.pop(name, None)


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "store.db") as s:
        s.set_meta("self", ME.public_key)
        s.append(ME, Follow(feed=ALICE.public_key), now=NOW - 10_000)
        for i, text in enumerate(["a medium post", "tiny", "the longest post of them all"]):
            s.append(ALICE, Post(text=text), now=NOW - 5_000 + i)
        yield s


def test_plugin_is_found_and_used(installed, store):
    registry = load_rankers()
    assert "shortest" in registry.rankers
    assert registry.origins["shortest"] == "demo-rankers 0.1: demo_rankers:make_shortest"
    items = rank_timeline(store, ME.public_key, ranker="shortest", now=NOW, explain=True, registry=registry)
    assert [i["content"]["text"] for i in items] == ["tiny", "a medium post", "the longest post of them all"]
    assert [i["score"] for i in items] == [-4, -13, -28]
    assert items[0]["why"] == ["4 characters"]
    # its weights are configurable like a built-in's
    config = {"rankers": {"shortest": {"bonus": 100}}}
    items = rank_timeline(store, ME.public_key, ranker="shortest", now=NOW, config=config, registry=registry)
    assert items[0]["score"] == 96
    with pytest.raises(RankingError, match="the shortest ranker has no weight 'x'"):
        rank_timeline(store, ME.public_key, ranker="shortest", now=NOW, weights={"x": 1}, registry=registry)


def test_broken_plugins_are_reported_and_the_rest_work(installed, store):
    registry = load_rankers()
    problems = {p.name: p for p in registry.problems}
    assert set(problems) == {"broken", "impostor"}
    assert "ImportError: needs a library that is not installed" in str(problems["broken"])
    assert "demo-rankers 0.1" in str(problems["broken"])
    assert "the name 'chronological' is taken by built-in" in problems["impostor"].error
    assert registry.origins["chronological"] == "built-in"
    with pytest.raises(RankingError, match=r"no ranker named 'broken' \(ImportError"):
        registry.get("broken")
    # a ranker that raises is a clear error naming it; the others keep working
    with pytest.raises(
        RankingError, match=r"ranker 'crashing' \(demo-rankers 0.1: .*\) failed: RuntimeError: boom"
    ) as e:
        rank_timeline(store, ME.public_key, ranker="crashing", now=NOW, registry=registry)
    assert e.value.code == "ranker_failed"
    with pytest.raises(RankingError, match="returned an entry that was not a candidate"):
        rank_timeline(store, ME.public_key, ranker="liar", now=NOW, registry=registry)
    for name in ("chronological", "engagement", "trust", "shortest"):
        assert len(rank_timeline(store, ME.public_key, ranker=name, now=NOW, registry=registry)) == 3


def test_rankers_command_lists_plugins_and_warns_about_broken_ones(installed):
    result = CliRunner().invoke(rankers, ["--json"])
    assert result.exit_code == 0, result.output
    import json

    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [x["name"] for x in lines] == [
        "chronological",
        "crashing",
        "engagement",
        "liar",
        "shortest",
        "swarm",
        "trust",
    ]
    assert all(set(x) == {"name", "description"} for x in lines)
    assert "warning: ranker plugin 'broken'" in result.stderr
    text = CliRunner().invoke(rankers, [])
    assert "shortest" in text.stdout and "[demo-rankers 0.1: demo_rankers:make_shortest]" in text.stdout
