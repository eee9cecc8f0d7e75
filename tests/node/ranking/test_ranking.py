"""Built-in rankers and filters on a hand-made store: exact orders and scores (spec/ranking.md)."""

from __future__ import annotations

import click
import pytest
from tidings.cli.commands_rank import ranked_timeline
from tidings.node.ranking import RankingError, load_rankers, parse_weights
from tidings.node.ranking.timeline import rank_timeline
from tidings.protocol import Block, Follow, Post, Profile, Reaction, Repost, SigningKey, feed_id_text
from tidings.storage.store import Store

H = 3_600_000
NOW = 1_800_000_000_000
ME, ALICE, BOB, CAROL, DAVE, EVE, FRANK, MALLORY = (SigningKey(bytes([i]) * 32) for i in range(1, 9))


class Fixture:
    """The store of spec/ranking.md §7's example: who follows whom, posts, engagement, blocks, mutes."""

    def __init__(self, path) -> None:
        self.store = Store(path)
        s = self.store
        self.ids: dict[str, str] = {}
        self.me = ME.public_key
        s.set_meta("self", self.me)
        t0 = NOW - 100 * H
        s.append(ALICE, Profile(name="alice"), now=t0)
        s.append(BOB, Profile(name="bob"), now=t0)
        for who in (ALICE, BOB, EVE, FRANK, MALLORY):
            s.append(ME, Follow(feed=who.public_key), now=t0)
        s.append(ME, Block(feed=EVE.public_key), now=t0)
        s.append(ALICE, Follow(feed=CAROL.public_key), now=t0)
        s.append(ALICE, Follow(feed=DAVE.public_key), now=t0)
        s.append(BOB, Follow(feed=CAROL.public_key), now=t0)
        s.append(BOB, Block(feed=MALLORY.public_key), now=t0)
        self.post("a2", ALICE, "older alice", 10)
        self.post("rp1", BOB, Repost(target=self.hash("a2")), 5)
        self.post("c1", CAROL, "carol says hi", 4)
        self.post("m1", ME, "my own post", 3)
        self.post("b1", BOB, "bob here", 2)
        self.post("r1", ALICE, Post(text="agreed, bob", reply=self.hash("b1"), root=self.hash("b1")), 1.2)
        self.post("a1", ALICE, "hello from alice", 1)
        self.post("y1", MALLORY, "mallory", 0.6)
        self.post("d1", DAVE, "dave post", 0.5)
        self.post("w1", BOB, "I love SPOILERS", 0.4)
        self.post("f1", FRANK, "frank", 0.3)
        self.post("e1", EVE, "eve spam", 0.2)
        self.post("rpe", ALICE, Repost(target=self.hash("e1")), 0.1)
        # engagement (entries the timeline does not show: reactions)
        s.append(ALICE, Reaction(target=self.hash("b1"), emoji="+1"), now=NOW - int(1.5 * H))
        s.append(ME, Reaction(target=self.hash("b1"), emoji="+1"), now=NOW - int(1.5 * H))  # not a follow
        s.append(CAROL, Reaction(target=self.hash("b1"), emoji="+1"), now=NOW - int(1.5 * H))  # not a follow
        s.append(BOB, Reaction(target=self.hash("b1"), emoji="!"), now=NOW - int(1.4 * H))  # the author
        s.append(BOB, Reaction(target=self.hash("a2"), emoji="+1"), now=NOW - 9 * H)
        s.append(BOB, Reaction(target=self.hash("a2"), emoji="+2"), now=NOW - 9 * H)  # the same person
        s.append(DAVE, Reaction(target=self.hash("c1"), emoji="+1"), now=NOW - 3 * H)
        s.mute("feed", feed_id_text(FRANK.public_key))
        s.mute("word", "spoilers")

    def post(self, label: str, key: SigningKey, content, hours: float) -> None:
        if isinstance(content, str):
            content = Post(text=content)
        entry = self.store.append(key, content, now=NOW - int(hours * H))
        self.ids[label] = "%" + entry.hash.hex()  # replaced below by the text id
        from tidings.protocol import entry_id_text

        self.ids[label] = entry_id_text(entry.hash)
        self.hashes = getattr(self, "hashes", {})
        self.hashes[label] = entry.hash

    def hash(self, label: str) -> bytes:
        return self.hashes[label]

    def label_of(self, entry_id: str) -> str:
        return {v: k for k, v in self.ids.items()}[entry_id]

    def run(self, ranker: str, **kw):
        kw.setdefault("now", NOW)
        kw.setdefault("limit", 50)
        return rank_timeline(self.store, self.me, ranker=ranker, **kw)

    def order(self, ranker: str, **kw) -> list[str]:
        return [self.label_of(item["id"]) for item in self.run(ranker, **kw) if not item.get("hidden")]


@pytest.fixture
def fx(tmp_path):
    f = Fixture(tmp_path / "store.db")
    yield f
    f.store.close()


def age(label_hours: float) -> float:
    return label_hours


def hn(points: float, hours: float, gravity: float = 1.8) -> float:
    """spec/ranking.md §3: points / (age_h + 2) ** gravity."""
    return points / (hours + 2) ** gravity


def scores(items) -> dict[str, float]:
    return {item["id"]: item["score"] for item in items}


# -- chronological ----------------------------------------------------------------------------------------
def test_chronological_order_and_scores(fx):
    items = fx.run("chronological", explain=True)
    # rp1 reposts a2: the post and its repost are one subject, shown once, where the first ranks
    assert [fx.label_of(i["id"]) for i in items] == ["y1", "a1", "r1", "b1", "m1", "rp1"]
    for item in items:
        assert item["score"] == item["ts"]
        assert set(item) == {"id", "feed", "seq", "ts", "type", "content", "score", "why"}
    why = {fx.label_of(i["id"]): i["why"] for i in items}
    assert why["m1"][1] == "your own entry"
    assert why["rp1"][-1].startswith("also posted by alice (@")
    assert why["a1"][1].startswith("you follow alice (@")
    assert why["a1"][0].startswith(f"newest first: score = timestamp {NOW - H} (")
    assert items[0]["content"] == {"type": "post", "text": "mallory"}


def test_limit_and_no_explain(fx):
    items = fx.run("chronological", limit=3)
    assert [fx.label_of(i["id"]) for i in items] == ["y1", "a1", "r1"]
    assert all("why" not in i for i in items)


# -- engagement ---------------------------------------------------------------------------------------------
def test_engagement_exact_scores_and_order(fx):
    items = fx.run("engagement", explain=True)
    got = {fx.label_of(k): v for k, v in scores(items).items()}
    expected = {
        "b1": hn(
            1 + 1 * 1 + 2 * 1, 2
        ),  # alice reacted and replied; me, carol (not follows) and bob (author) not
        "a2": hn(1 + 1 * 1 + 3 * 1, 10),  # bob reacted twice (counts once) and reposted
        "rp1": hn(1 + 1 * 1 + 3 * 1, 5),  # a repost is scored by the reposted entry's engagement
        "a1": hn(1, 1),
        "r1": hn(1, 1.2),
        "m1": hn(1, 3),
        "y1": hn(1, 0.6),
    }
    del expected["a2"]  # reposted by rp1, which ranks higher (newer): shown once, as rp1
    assert got == pytest.approx(expected, rel=1e-12)
    assert [fx.label_of(i["id"]) for i in items] == sorted(expected, key=lambda k: -expected[k])
    assert [fx.label_of(i["id"]) for i in items] == ["b1", "y1", "rp1", "a1", "r1", "m1"]
    why = {fx.label_of(i["id"]): i["why"] for i in items}
    assert why["b1"][0] == (
        "1 reaction, 1 reply and 0 reposts on it from people you follow (weights 1, 2, 3): points 4"
    )
    assert why["b1"][1] == f"age 2.0 h: divided by (2.0 + 2)^1.8 = {4**1.8:.4g}"
    assert why["rp1"][0].startswith("1 reaction, 0 replies and 1 repost on the reposted entry")


def test_engagement_weights_from_config_and_command(fx):
    config = {"rankers": {"engagement": {"reply": 10, "gravity": 1.0}}}
    got = {fx.label_of(k): v for k, v in scores(fx.run("engagement", config=config)).items()}
    assert got["b1"] == pytest.approx((1 + 1 + 10) / (2 + 2))
    got = {
        fx.label_of(k): v
        for k, v in scores(fx.run("engagement", config=config, weights={"reply": 0.0})).items()
    }
    assert got["b1"] == pytest.approx((1 + 1 + 0) / (2 + 2))


def test_unknown_and_bad_weights_are_clear_errors(fx):
    with pytest.raises(
        RankingError, match=r"has no weight 'replies'.*its weights: gravity, pool, reaction"
    ) as e:
        fx.run("engagement", weights={"replies": 1.0})
    assert e.value.code == "unknown_weight"
    with pytest.raises(
        RankingError, match=r"config.toml \[rankers.trust\]: the trust ranker has no weight 'x'"
    ):
        fx.run("trust", config={"rankers": {"trust": {"x": 1}}})
    with pytest.raises(RankingError, match="not a number"):
        parse_weights(["reply=lots"])
    with pytest.raises(RankingError, match="NAME=VALUE"):
        parse_weights(["reply"])
    with pytest.raises(RankingError, match="must be greater than 0"):
        fx.run("trust", weights={"half_life_hours": 0})
    with pytest.raises(RankingError, match="no ranker named 'nope'") as e:
        fx.run("nope")
    assert e.value.code == "unknown_ranker"
    # the CLI helper: usage errors (exit 2) with the same message
    with pytest.raises(click.UsageError, match="has no weight 'replies'"):
        ranked_timeline(fx.store, fx.me, ranker="engagement", weights=["replies=2"], now=NOW)
    items = ranked_timeline(fx.store, fx.me, ranker="engagement", weights=["reply=0"], now=NOW, limit=1)
    assert len(items) == 1


# -- trust ----------------------------------------------------------------------------------------------------
def test_trust_exact_scores_and_reasons(fx):
    items = fx.run("trust", explain=True)

    def decay(hours: float) -> float:
        return 0.5 ** (hours / 24)

    expected = {
        "a2": decay(10),
        "rp1": decay(5),
        "c1": 0.8 * 2 / (2 + 2) * decay(4),  # carol: followed by alice and bob
        "m1": decay(3),
        "b1": decay(2),
        "a1": decay(1),
        "r1": decay(1.2),
        "y1": decay(0.6),
        "d1": 0.8 * 1 / (1 + 2) * decay(0.5),  # dave: followed by alice only
    }
    del expected["a2"]  # reposted by rp1, which ranks higher: shown once, as rp1
    got = {fx.label_of(k): v for k, v in scores(items).items()}
    assert got == pytest.approx(expected, rel=1e-12)
    assert [fx.label_of(i["id"]) for i in items] == ["y1", "a1", "r1", "b1", "m1", "rp1", "c1", "d1"]
    why = {fx.label_of(i["id"]): i["why"] for i in items}
    assert (
        why["c1"][0].startswith("@") and "is followed by 2 of the people you follow (alice (@" in why["c1"][0]
    )
    assert why["c1"][0].endswith("trust 0.8 × 2/(2 + 2) = 0.4")
    assert why["c1"][1] == f"age 4.0 h, half-life 24 h: × {decay(4):.4g}"
    assert why["b1"][0] == f"you follow bob (@{feed_id_text(BOB.public_key)[1:9]}…): trust 1"
    # min_vouches 2 leaves dave (one vouch) out of the candidates
    assert "d1" not in fx.order("trust", weights={"min_vouches": 2})


# -- swarm ---------------------------------------------------------------------------------------------------
def test_swarm_ranks_members_by_engagement_among_members(fx):
    members = {ALICE.public_key, CAROL.public_key, DAVE.public_key}
    items = fx.run("swarm", swarm_members=members, explain=True)
    got = {fx.label_of(k): v for k, v in scores(items).items()}
    expected = {
        "c1": hn(1 + 1, 4),  # dave (a member) reacted
        "d1": hn(1, 0.5),
        "a1": hn(1, 1),
        "r1": hn(1, 1.2),
        "a2": hn(1, 10),  # bob's reaction and repost do not count: bob is not a member
        "m1": hn(1, 3),  # your own posts are in your swarm timelines
    }
    assert got == pytest.approx(expected, rel=1e-12)
    assert [fx.label_of(i["id"]) for i in items] == ["d1", "a1", "r1", "c1", "m1", "a2"]
    assert any("from swarm members" in r for r in items[3]["why"])
    with pytest.raises(RankingError, match="needs a swarm") as e:
        fx.run("swarm")
    assert e.value.code == "needs_swarm"


# -- filters --------------------------------------------------------------------------------------------------
def test_blocked_and_muted_never_appear_and_explain_hidden_says_why(fx):
    hidden_labels = {"e1", "f1", "w1", "rpe"}
    for name in ("chronological", "engagement", "trust"):
        items = fx.run(name)
        assert not hidden_labels & {fx.label_of(i["id"]) for i in items}, name
        assert all(not i.get("hidden") for i in items)
    items = fx.run("chronological", explain_hidden=True)
    hidden = {fx.label_of(i["id"]): i for i in items if i.get("hidden")}
    assert set(hidden) == hidden_labels
    for item in hidden.values():
        assert item["content"] is None  # blocked and muted content never appears
        assert "score" not in item
    assert hidden["e1"]["why"] == [f"@{feed_id_text(EVE.public_key)[1:13]}… is blocked by you"]
    assert hidden["f1"]["why"] == [f"@{feed_id_text(FRANK.public_key)[1:13]}… is muted"]
    assert hidden["w1"]["why"] == ["contains the muted word 'spoilers'"]
    assert hidden["rpe"]["why"] == [
        f"reposts a post of @{feed_id_text(EVE.public_key)[1:13]}… is blocked by you"
    ]
    # shown entries come first, then the hidden ones
    flags = [bool(i.get("hidden")) for i in items]
    assert flags == sorted(flags)


def test_blocks_of_follows_hide_replies_and_languages(fx):
    config = {"filters": {"follows_blocks": True}}
    items = fx.run("chronological", config=config, explain_hidden=True)
    hidden = {fx.label_of(i["id"]): i["why"] for i in items if i.get("hidden")}
    assert hidden["y1"] == [
        f"@{feed_id_text(MALLORY.public_key)[1:13]}… is blocked by bob (@{feed_id_text(BOB.public_key)[1:9]}…), "
        "whom you follow"
    ]
    assert "r1" in fx.order("chronological")
    assert "r1" not in fx.order("chronological", config={"filters": {"hide_replies": True}})
    fx.store.append(ALICE, Post(text="bonjour", lang="fr"), now=NOW)
    fx.store.append(ALICE, Post(text="hi", lang="en"), now=NOW)
    items = fx.run("chronological", config={"filters": {"languages": ["en"]}}, explain_hidden=True)
    texts = [(i["content"] or {}).get("text") for i in items if not i.get("hidden")]
    assert "hi" in texts and "bonjour" not in texts
    assert ["in language 'fr', not one of yours (en)"] in [i["why"] for i in items if i.get("hidden")]
    with pytest.raises(RankingError, match="no setting 'hide'"):
        fx.run("chronological", config={"filters": {"hide": True}})


# -- determinism ----------------------------------------------------------------------------------------------
def test_deterministic_and_ties_broken_by_entry_id(fx, tmp_path):
    # three posts at the same time with the same engagement: equal scores
    for i in (20, 21, 22):  # new feeds you follow (an older entry would push the timestamp forward)
        key = SigningKey(bytes([i]) * 32)
        fx.store.append(ME, Follow(feed=key.public_key), now=NOW - 8 * H)
        fx.store.append(key, Post(text="same time"), now=NOW - 7 * H)
    for name in ("chronological", "engagement", "trust"):
        first = fx.run(name, explain=True, explain_hidden=True)
        assert fx.run(name, explain=True, explain_hidden=True) == first
        ties = [i for i in first if (i.get("content") or {}).get("text") == "same time"]
        ids = [i["id"] for i in ties]
        assert len(ids) == 3 and ids == sorted(ids), name
        assert len({i["score"] for i in ties}) == 1, name
    # a second store built from the same entries gives the same timelines
    other = Fixture(tmp_path / "other.db")
    try:
        for name in ("chronological", "engagement", "trust"):
            assert other.run(name, explain=True) == Fixture.run(other, name, explain=True)
            assert [i["id"] for i in other.run(name)] == [
                i["id"] for i in fx.run(name) if "same time" not in str(i["content"])
            ]
    finally:
        other.store.close()


def test_registry_lists_builtins():
    registry = load_rankers(entry_points=[])
    assert [r["name"] for r in registry.describe()] == ["chronological", "engagement", "swarm", "trust"]
    assert all(r["description"] for r in registry.describe())
    assert registry.problems == []


def test_timeline_command_reads_config_and_weights(tmp_path):
    """``tidings timeline``: config.toml's ``[rankers.NAME]``, then ``--weight``, then usage errors."""
    import json

    from click.testing import CliRunner
    from tidings.cli.commands_read import timeline
    from tidings.node.home import Home

    home = Home(tmp_path / "home")
    me = home.init()
    with home.open_store() as s:
        s.append(me, Follow(feed=ALICE.public_key), now=NOW - 3 * H)
        s.append(ALICE, Post(text="one"), now=NOW - 2 * H)
        s.append(ALICE, Post(text="two"), now=NOW - H)
    (tmp_path / "home" / "config.toml").write_text("[rankers.engagement]\ngravity = 1.0\n")
    args = ["--home", str(home.path), "--now", str(NOW), "--json"]
    run = CliRunner().invoke(
        timeline, [*args, "--ranker", "engagement", "--weight", "reaction=2", "--explain"]
    )
    assert run.exit_code == 0, run.output
    items = [json.loads(line) for line in run.stdout.splitlines()]
    assert [i["content"]["text"] for i in items] == ["two", "one"]
    assert items[0]["score"] == pytest.approx(1 / (1 + 2))  # gravity 1 from config.toml
    assert items[0]["why"]
    bad = CliRunner().invoke(timeline, [*args, "--ranker", "engagement", "--weight", "bogus=1"])
    assert bad.exit_code == 2 and "has no weight 'bogus'" in bad.output
    bad = CliRunner().invoke(timeline, [*args, "--ranker", "nope"])
    assert bad.exit_code == 2 and "no ranker named 'nope'" in bad.output
