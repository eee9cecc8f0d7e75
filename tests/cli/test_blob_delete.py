"""``tidings delete`` drops the deleted post's blobs unless another live entry names them, and ``tidings
status`` shows what the blobs take (spec/cli.md, spec/protocol.md §8.2.9): whole processes."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from tests.support.processes import tidings


def _blobs(home: Path) -> dict[str, int]:
    lines = tidings(home, "blob", "ls", "--json").stdout.splitlines()
    return {row["id"]: row["size"] for row in map(json.loads, lines)}


def _attachment(home: Path, entry: str) -> dict:
    me = json.loads(tidings(home, "id", "--json").stdout)["feed"]
    for line in tidings(home, "log", me, "--json").stdout.splitlines():
        row = json.loads(line)
        if row["id"] == entry:
            return row["content"]["attachments"][0]
    raise AssertionError(f"{entry} not in the log")


def test_delete_drops_the_blobs_no_other_post_names(tmp_path: Path) -> None:
    home = tmp_path / "home"
    tidings(home, "init")
    (home / "config.toml").write_text("[limits]\nblob_quota = 5000000\n")
    picture = tmp_path / "garden.png"
    Image.linear_gradient("L").resize((120, 80)).convert("RGB").save(picture)
    first = json.loads(tidings(home, "post", "one", "--attach", str(picture), "--json").stdout)["id"]
    second = json.loads(tidings(home, "post", "two", "--attach", str(picture), "--json").stdout)["id"]
    attachment = _attachment(home, first)
    assert _attachment(home, second) == attachment  # the same picture, re-encoded the same: one blob
    held = _blobs(home)
    assert set(held) == {attachment["blob"], attachment["preview"]}
    status = json.loads(tidings(home, "status", "--json").stdout)["blobs"]
    total = sum(held.values())
    assert status == {
        "count": 2,
        "bytes": total,
        "quota": 5_000_000,
        "kept": 2,
        "kept_bytes": total,
        "others": 0,
        "others_bytes": 0,
        "wanted": 0,
    }
    tidings(home, "delete", first)
    assert _blobs(home) == held  # the second post still names them
    tidings(home, "delete", second)
    assert _blobs(home) == {}
    assert not any(p.is_file() for p in (home / "blobs").glob("??/*"))
    text = tidings(home, "status").stdout
    assert "blobs:   0 blobs, 0 B of a quota of 5.0 MB (kept: 0, 0 B; others': 0, 0 B)" in text
