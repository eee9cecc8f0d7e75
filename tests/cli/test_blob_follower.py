"""Issue 18's first must-hold, as whole processes: alice posts a phone photo carrying GPS EXIF with alt
text; bob, following her, gets the post and the picture (spec §12.12); its hash matches, its EXIF is
gone, its pixels are the same size; and bob's web page shows it in headless Chromium with the alt text."""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path

from PIL import Image
from tidings.node.web import auth
from tidings.protocol import BlobId

from tests.support.browser import find_browser, view_picture
from tests.support.nodes import next_host
from tests.support.pictures import has_gps, phone_photo
from tests.support.processes import Running, feed, tidings, wait_for

ALT = "the harbour at dawn, three boats"


def page_url(home: Path, timeout: float = 20.0) -> str:
    """The URL of a running node's web page, from its node.json."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            services = json.loads((home / "node.json").read_text()).get("services", {})
        except (OSError, ValueError):
            services = {}
        for state in services.values():
            if isinstance(state, dict) and state.get("url"):
                return str(state["url"])
        time.sleep(0.1)
    raise AssertionError("the web page did not start")


def test_a_follower_gets_the_photo_without_its_metadata_and_its_page_shows_it(tmp_path: Path) -> None:
    browser = find_browser()
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    tidings(alice, "init", "--name", "alice")
    tidings(bob, "init", "--name", "bob")
    tidings(bob, "follow", feed(alice))
    photo = phone_photo(tmp_path / "harbour.jpg", (640, 480))
    assert has_gps(photo.read_bytes())
    a = Running(alice)
    host = next_host()
    b = Running(bob, "--peer", a.address, "--http", f"{host}:0", listen=f"{host}:0")
    try:
        posted = json.loads(
            tidings(alice, "post", "morning", "--attach", str(photo), "--alt", ALT, "--json").stdout
        )
        (row,) = [
            json.loads(line)
            for line in tidings(alice, "log", feed(alice), "--json").stdout.splitlines()
            if json.loads(line)["id"] == posted["id"]
        ]
        (ref,) = row["content"]["attachments"]
        blob = BlobId.parse(ref["blob"])
        path = bob / "blobs" / blob.hash.hex()[:2] / blob.hash.hex()
        wait_for(path.is_file, 20)
        data = path.read_bytes()
        assert hashlib.blake2b(data, digest_size=32).digest() == blob.hash
        assert data == (alice / "blobs" / blob.hash.hex()[:2] / blob.hash.hex()).read_bytes()
        assert not has_gps(data)
        with Image.open(io.BytesIO(data)) as picture:
            assert picture.size == (640, 480) and (ref["width"], ref["height"]) == (640, 480)
        assert ref["alt"] == ALT

        def fetched() -> bool:
            status = json.loads(tidings(bob, "status", "--json").stdout)
            return status["counters"].get("blob_fetched", 0) >= 2 and status["blobs"]["wanted"] == 0

        wait_for(fetched, 10)  # the picture and its preview; nothing left to fetch
        assert "fetching: 0 blobs now, 2 fetched" in tidings(bob, "status").stdout

        url = page_url(bob)
        login = f"{url}/login?code={auth.new_login_code(bob)}"
        shot = tmp_path / "bob-sees-the-harbour.png"
        size = view_picture(f"{url}/", ALT, shot, browser=browser, login=login)
        assert size == (640, 480)
        assert shot.read_bytes().startswith(b"\x89PNG")
    finally:
        try:
            b.stop()
            a.stop()
        finally:  # a node that failed to stop cleanly is not left running for the tests after this one
            b.kill()
            a.kill()
