"""``tidings post --attach`` and ``tidings profile --avatar`` as whole processes (spec/cli.md, spec §8.5):
pictures are re-encoded before they are stored, so their metadata never leaves the machine."""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image

from tests.support.pictures import bomb_png, phone_photo
from tests.support.processes import tidings


def _photo(path: Path) -> Path:
    return phone_photo(path)


def _bomb(path: Path) -> Path:
    return bomb_png(path)


def _content(home: Path, entry: str) -> dict:
    me = json.loads(tidings(home, "id", "--json").stdout)["feed"]
    for line in tidings(home, "log", me, "--json").stdout.splitlines():
        row = json.loads(line)
        if row["id"] == entry:
            return row["content"]
    raise AssertionError(f"{entry} not in the log")


def test_a_photo_is_attached_without_its_metadata(tmp_path: Path) -> None:
    home = tmp_path / "home"
    tidings(home, "init")
    photo = _photo(tmp_path / "photo.jpg")
    assert b"SpyCam-9000" in photo.read_bytes()
    posted = json.loads(
        tidings(home, "post", "my garden", "--attach", str(photo), "--alt", "a gradient", "--json").stdout
    )
    (attachment,) = _content(home, posted["id"])["attachments"]
    assert attachment["mime"] == "image/jpeg" and (attachment["width"], attachment["height"]) == (96, 64)
    assert attachment["alt"] == "a gradient" and attachment["blob"].startswith("&")
    assert attachment["preview"].startswith("&")
    out = tmp_path / "out.jpg"
    tidings(home, "blob", "get", attachment["blob"], "-o", str(out))
    data = out.read_bytes()
    assert len(data) == attachment["size"]
    assert b"SpyCam-9000" not in data and b"SECRET-COMMENT" not in data
    with Image.open(io.BytesIO(data)) as stored:
        assert stored.size == (96, 64) and not stored.getexif()
    listed = {json.loads(line)["id"] for line in tidings(home, "blob", "ls", "--json").stdout.splitlines()}
    assert {attachment["blob"], attachment["preview"]} <= listed


def test_keep_metadata_keeps_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    tidings(home, "init")
    photo = _photo(tmp_path / "photo.jpg")
    posted = json.loads(
        tidings(home, "post", "as taken", "--attach", str(photo), "--keep-metadata", "--json").stdout
    )
    (attachment,) = _content(home, posted["id"])["attachments"]
    out = tmp_path / "out.jpg"
    tidings(home, "blob", "get", attachment["blob"], "-o", str(out))
    assert out.read_bytes() == photo.read_bytes()


def test_an_svg_is_attached_as_an_opaque_file_and_a_bomb_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    tidings(home, "init")
    svg = tmp_path / "cat.png"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
    posted = json.loads(tidings(home, "post", "a file", "--attach", str(svg), "--json").stdout)
    (attachment,) = _content(home, posted["id"])["attachments"]
    assert attachment["mime"] == "application/octet-stream" and attachment.get("width") is None
    refused = tidings(home, "post", "boom", "--attach", str(_bomb(tmp_path / "bomb.png")), check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("error:") and "pixels" in refused.stderr
    me = json.loads(tidings(home, "id", "--json").stdout)["feed"]
    assert len(tidings(home, "log", me, "--json").stdout.splitlines()) == 1  # nothing posted
    assert len(tidings(home, "blob", "ls", "--json").stdout.splitlines()) == 1  # nothing stored


def test_more_alt_texts_than_attachments_is_a_usage_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    tidings(home, "init")
    out = tidings(home, "post", "x", "--alt", "nothing to describe", check=False)
    assert out.returncode == 2 and "--alt" in out.stderr


def test_an_avatar_is_a_picture(tmp_path: Path) -> None:
    home = tmp_path / "home"
    tidings(home, "init")
    photo = _photo(tmp_path / "me.jpg")
    tidings(home, "profile", "--avatar", str(photo), "--json")
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    out = tidings(home, "profile", "--avatar", str(text), check=False)
    assert out.returncode == 1 and out.stderr.startswith("error:") and "not a picture" in out.stderr
    assert len(tidings(home, "blob", "ls", "--json").stdout.splitlines()) == 2  # the photo and its preview
