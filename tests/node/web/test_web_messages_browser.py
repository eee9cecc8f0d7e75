"""The Messages view in a real headless Chromium (Selenium), against two real connected nodes.

alice's page writes to bob (a known feed) and sees the message in the conversation; bob's node answers
and the answer appears live in the open conversation; while alice looks at her timeline another
message arrives and the navigation's unread badge says so, without a reload; opening the conversation
reads it and the badge goes. The timeline never shows a message. Screenshots go to pytest's tmp
folder (and to ``$TIDINGS_ARTIFACTS`` when set). Skipped without Chromium, failed instead when
``TIDINGS_REQUIRE_BROWSER=1`` (tests/support/browser.py), like the page's other browser tests.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import trio
from tidings.node import dm
from tidings.node.clock import SYSTEM_CLOCK
from tidings.node.home import Home
from tidings.node.web import auth
from tidings.protocol import SigningKey, feed_id_text
from tidings.storage.store import Store

from tests.support.browser import WAIT, console_errors
from tests.support.browser import open_driver as _driver
from tests.support.nodes import follow, make_home, post, start_node
from tests.support.web import start_web_node

pytestmark = pytest.mark.slow

WRITTEN = "hello bob, <b>not bold</b>: the mill at noon?"


def _write(home: Home, key: SigningKey, to: SigningKey, text: str) -> None:
    """What ``tidings dm`` does in bob's home while his node runs (the node carries it)."""
    with Store(home.store_path) as store:
        dm.send(store, key, [to.public_key], text, now=SYSTEM_CLOCK.wall_ms())


def _browse(link: str, bob: str, hb: Home, kb: SigningKey, ka: SigningKey, shots: Path, browser) -> dict:
    """The user's steps; returns what the trio side checks afterwards."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _driver(shots.parent / "chromium-profile", *browser)
    wait = WebDriverWait(driver, WAIT, poll_frequency=0.1)

    def retry(check):
        """``check(driver)`` until true; an element re-rendered meanwhile (stale) is looked up again."""

        def attempt(d):
            try:
                return check(d)
            except StaleElementReferenceException:
                return False

        return wait.until(attempt)

    def message(text: str) -> list:
        xpath = f"//ol[@id='conversation']/li[contains(@class,'message')][.//p[contains(@class,'text') and text()='{text}']]"
        return driver.find_elements(By.XPATH, xpath)

    def badge() -> str:
        element = driver.find_element(By.ID, "unread-badge")
        return element.text if element.is_displayed() else ""

    try:
        driver.get(link)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        wait.until(lambda d: d.find_element(By.ID, "live").text == "live")
        driver.find_element(By.ID, "tab-messages").click()
        wait.until(lambda d: d.find_element(By.ID, "view-messages").is_displayed())
        retry(lambda d: "No conversations yet" in d.find_element(By.ID, "inbox").text)

        driver.find_element(By.ID, "dm-to").send_keys(bob)
        driver.find_element(By.ID, "dm-new-text").send_keys(WRITTEN)
        driver.find_element(By.ID, "dm-new-send").click()
        # the conversation opens with the message in it, as text (no <b> element)
        retry(lambda d: d.find_element(By.ID, "conversation-view").is_displayed() and message(WRITTEN))
        mine = message(WRITTEN)[0]
        assert "mine" in mine.get_attribute("class") and not mine.find_elements(By.TAG_NAME, "b")
        assert "bob" in driver.find_element(By.ID, "conversation-with").text
        driver.save_screenshot(str(shots / "01-written.png"))

        driver.execute_script("window.__sameDocument = 42;")
        _write(hb, kb, ka, "yes, at noon")  # bob answers from his node's home
        retry(lambda d: message("yes, at noon"))
        assert "bob" in message("yes, at noon")[0].text
        driver.save_screenshot(str(shots / "02-answer-live.png"))

        driver.find_element(By.CSS_SELECTOR, "button.tab[data-view='timeline']").click()
        _write(hb, kb, ka, "are you still there?")
        retry(lambda d: badge() == "1")  # the badge, live, while the timeline shows
        retry(lambda d: "a public post of bob" in d.find_element(By.ID, "timeline").text)
        timeline = driver.find_element(By.ID, "timeline").text
        assert "noon" not in timeline and "still there" not in timeline  # never in the timeline
        driver.save_screenshot(str(shots / "03-unread-badge.png"))

        driver.find_element(By.ID, "tab-messages").click()
        item = retry(lambda d: d.find_elements(By.CSS_SELECTOR, "#inbox li.conversation.unread"))[0]
        assert (
            "are you still there?" in item.text and item.find_element(By.CSS_SELECTOR, ".badge").text == "1"
        )
        driver.save_screenshot(str(shots / "04-inbox.png"))
        item.find_element(By.CSS_SELECTOR, "button.open").click()
        retry(lambda d: message("are you still there?"))
        retry(lambda d: badge() == "")  # read
        assert driver.execute_script("return window.__sameDocument;") == 42  # live, never reloaded
        driver.save_screenshot(str(shots / "05-read.png"))
        texts = [
            m.find_element(By.CSS_SELECTOR, "p.text").text
            for m in driver.find_elements(By.CSS_SELECTOR, "#conversation li.message")
        ]
        severe = console_errors(driver)
        return {"texts": texts, "console_errors": severe}
    finally:
        driver.quit()


async def test_the_messages_view_in_a_real_browser(tmp_path, browser):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        with trio.fail_after(90):
            async with trio.open_nursery() as nursery:
                (ha, ka), (hb, kb) = make_home(tmp_path, "alice"), make_home(tmp_path, "bob")
                follow(ha, ka, kb)
                follow(hb, kb, ka)
                post(hb, kb, "a public post of bob")
                node_b = await start_node(nursery, hb, kb)
                w = await start_web_node(nursery, ha, ka, peers=[node_b.address])
                link = f"{w.url}/login?code={auth.new_login_code(w.home.path)}"
                bob = feed_id_text(kb.public_key)
                result = await trio.to_thread.run_sync(_browse, link, bob, hb, kb, ka, shots, browser)
                assert result["console_errors"] == []
                assert result["texts"] == [WRITTEN, "yes, at noon", "are you still there?"]
                # the page wrote one box in alice's log, which bob's node opened
                log = await w.node.db.call(lambda s: s.log(ka.public_key))
                assert [e["type"] for e in log].count("box") == 1
                with Store(hb.store_path) as s:
                    got = dm.conversation(s, kb, [ka.public_key])
                assert got[0]["text"] == WRITTEN
                assert len(list(shots.glob("*.png"))) == 5 and all(
                    p.stat().st_size for p in shots.glob("*.png")
                )
                nursery.cancel_scope.cancel()
    finally:
        target = os.environ.get("TIDINGS_ARTIFACTS")
        if target:
            dest = Path(target) / "web"
            dest.mkdir(parents=True, exist_ok=True)
            for shot in shots.glob("*.png"):
                shutil.copy2(shot, dest / f"messages-{shot.name}")
