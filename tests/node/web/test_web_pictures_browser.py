"""Pictures on the web page in a real headless Chromium (issue 18 item 6): a post's picture is shown,
loaded, with its alt text; an avatar beside the post; a file only as a download link; and pictures
attached from the composer, by the file picker and by pasting, appear once posted.

Same rules as test_web_browser.py: the node runs in trio, Selenium in a worker thread, every wait is
bounded, screenshots go to pytest's tmp folder (and ``$TIDINGS_ARTIFACTS`` when set); without Chromium
the test skips in one line, or fails when ``TIDINGS_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio
from PIL import Image
from tidings.node import actions
from tidings.node.clock import SYSTEM_CLOCK
from tidings.node.web import auth
from tidings.protocol import BlobRef, blob_id

from tests.support.browser import (
    WAIT,
    console_errors,
    loaded_picture,
    open_driver,
    view_picture,
)
from tests.support.pictures import SVG, gps_jpeg
from tests.support.web import web_node

pytestmark = pytest.mark.slow

GARDEN = "a grey gradient: the garden at dawn"
FACE = "alice, smiling"
PICKED = "a gradient chosen with the file picker"
PASTED = "a gradient pasted from the clipboard"
AWAITED = "a picture still on its way, its preview here"
ABSENT = "a picture that is not here at all"
OCTET = {"content-type": "application/octet-stream"}

# A paste as a browser makes it when an image is on the clipboard: a File in the event's DataTransfer.
_PASTE = """
const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
const data = new DataTransfer();
data.items.add(new File([bytes], "pasted.png", { type: "image/png" }));
document.getElementById("compose-text").dispatchEvent(
  new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true }));
"""


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.linear_gradient("L").resize((width, height)).convert("RGB").save(out, format="PNG")
    return out.getvalue()


def _webp(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (40, 120, 80)).save(out, format="WEBP")
    return out.getvalue()


def _post_elsewhere(home: Any, key: Any, store: Any) -> None:
    """Posts whose pictures are not held here: one with its preview held, one without (as a followed
    feed's post looks before its blobs arrive)."""
    preview = home.open_blobs(store).put_bytes(_webp(40, 30))
    ref = BlobRef(blob=blob_id(b"far away").hash, size=123456, mime="image/jpeg", width=400, height=300)
    now = SYSTEM_CLOCK.wall_ms()
    actions.post(
        store,
        key,
        "on its way",
        attachments=[BlobRef(**{**_fields(ref), "alt": AWAITED, "preview": preview.hash})],
        now=now,
    )
    actions.post(
        store, key, "not here", attachments=[BlobRef(**{**_fields(ref), "alt": ABSENT})], now=now + 1
    )


def _fields(ref: BlobRef) -> dict[str, Any]:
    return {k: getattr(ref, k) for k in ("blob", "size", "mime", "width", "height")}


def _compose(link: str, picked: Path, shots: Path, browser: tuple[Path, Path]) -> dict[str, Any]:
    """The user's steps in the page; returns what the trio side checks."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = open_driver(shots.parent / "chromium-profile", *browser)
    wait = WebDriverWait(driver, WAIT)
    found: dict[str, Any] = {}
    try:
        driver.get(link)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        found["face"] = loaded_picture(driver, FACE)  # the avatar beside alice's posts
        found["preview"] = loaded_picture(driver, AWAITED)
        placeholder = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".attachment.placeholder"))
        found["placeholder"] = placeholder.text
        # the file: a download link, and nothing that renders it
        drawing = "//ol[@id='timeline']/li[.//p[contains(@class,'text') and text()='a drawing']]"
        entry = wait.until(lambda d: d.find_element(By.XPATH, drawing))
        found["download"] = entry.find_element(By.CSS_SELECTOR, ".attachment.file a[download]").get_attribute(
            "href"
        )
        found["rendered"] = len(
            entry.find_elements(By.CSS_SELECTOR, ".attachments img, iframe, object, embed")
        )

        def attach_and_post(text: str, alt: str) -> None:
            item = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#compose-attachments .pending"))
            item.find_element(By.CSS_SELECTOR, "input.alt-text").send_keys(alt)
            driver.find_element(By.ID, "compose-text").send_keys(text)
            driver.find_element(By.ID, "compose-send").click()
            wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#compose-attachments .pending"))

        driver.find_element(By.ID, "compose-files").send_keys(str(picked))
        attach_and_post("picked from the disk", PICKED)
        found["picked"] = loaded_picture(driver, PICKED)
        driver.save_screenshot(str(shots / "03-picked.png"))

        driver.execute_script(_PASTE, base64.b64encode(_png(150, 90)).decode())
        attach_and_post("pasted in", PASTED)
        found["pasted"] = loaded_picture(driver, PASTED)
        driver.save_screenshot(str(shots / "04-pasted.png"))
        found["console"] = console_errors(driver)
        return found
    finally:
        driver.quit()


async def test_pictures_in_a_real_browser(tmp_path, browser):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    picked = tmp_path / "picked.png"
    picked.write_bytes(_png(200, 100))
    try:
        with trio.fail_after(90):
            async with trio.open_nursery() as nursery, web_node(nursery, tmp_path, "alice") as w:
                async with w.client() as c:
                    face = (await c.post("/api/blobs", content=gps_jpeg(48, 48), headers=OCTET)).json()
                    out = await c.post("/api/profile", json={"avatar": {**face, "alt": FACE}})
                    assert out.status_code == 200, out.text
                    drawing = (await c.post("/api/blobs", content=SVG, headers=OCTET)).json()
                    out = await c.post("/api/post", json={"text": "a drawing", "attachments": [drawing]})
                    assert out.status_code == 200, out.text
                    photo = (await c.post("/api/blobs", content=gps_jpeg(320, 240), headers=OCTET)).json()
                    attachments = [{**photo, "alt": GARDEN}]
                    out = await c.post("/api/post", json={"text": "the garden", "attachments": attachments})
                    assert out.status_code == 200, out.text
                await w.node.db.call(lambda store: _post_elsewhere(w.home, w.key, store))

                link = f"{w.url}/login?code={auth.new_login_code(w.home.path)}"
                shot = shots / "01-picture.png"
                size = await trio.to_thread.run_sync(
                    lambda: view_picture(f"{w.url}/", GARDEN, shot, browser=browser, login=link)
                )
                assert size == (320, 240)
                assert shot.stat().st_size > 0 and shot.read_bytes().startswith(b"\x89PNG")

                link = f"{w.url}/login?code={auth.new_login_code(w.home.path)}"
                found = await trio.to_thread.run_sync(_compose, link, picked, shots, browser)
                assert found["face"] == (48, 48)  # the avatar's preview is the picture itself here
                assert found["download"].endswith("/api/blobs/" + drawing["blob"].replace("&", "%26"))
                assert found["rendered"] == 0
                assert found["preview"] == (40, 30)  # the preview stands in for the picture
                assert ABSENT in found["placeholder"] and "120.6 KB, 400×300" in found["placeholder"]
                assert (found["picked"], found["pasted"]) == ((200, 100), (150, 90))
                assert found["console"] == []  # nothing refused by the page's policy, no script error

                async with w.client() as c:
                    items = [e for e in (await c.get("/api/log")).json()["items"] if e["type"] == "post"]
                alts = [a["alt"] for e in items for a in e["attachments"]]
                assert alts[:2] == [PASTED, PICKED]
                nursery.cancel_scope.cancel()
    finally:
        target = os.environ.get("TIDINGS_ARTIFACTS")
        if target:
            dest = Path(target) / "web-pictures"
            dest.mkdir(parents=True, exist_ok=True)
            for shot in shots.glob("*.png"):
                shutil.copy2(shot, dest / shot.name)
