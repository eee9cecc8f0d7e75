"""The web page end to end in a real headless Chromium (Selenium), against two real connected nodes.

The nodes run in trio; the synchronous Selenium steps run in a worker thread. Every wait is bounded;
the browser is quit and the nodes are cancelled whatever happens. Screenshots go to pytest's tmp
folder, and are copied to ``$TIDINGS_ARTIFACTS`` when that is set (CI keeps them).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import trio
from tidings.node.web import auth

from tests.support.nodes import follow, make_home, post, start_node
from tests.support.web import web_node

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT = 15.0

pytestmark = pytest.mark.slow


def _driver(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--window-size=1100,1300",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    return driver


def _browse(link: str, bob_home, bob_key, shots: Path) -> dict[str, object]:
    """The user's steps; returns what the trio side checks afterwards."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver = _driver(shots.parent / "chromium-profile")
    wait = WebDriverWait(driver, WAIT)

    def retry(check):
        """``check(driver)`` until it returns a true value; the page re-renders on live updates,
        so an element found a moment ago may be gone (stale): look it up again."""

        def attempt(d):
            try:
                return check(d)
            except StaleElementReferenceException:
                return False

        return wait.until(attempt)

    def entry_with(text: str):
        xpath = f"//ol[@id='timeline']/li[contains(@class,'entry')][.//p[contains(@class,'text') and text()='{text}']]"
        return wait.until(ec.presence_of_element_located((By.XPATH, xpath)))

    try:
        driver.get(link)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        assert driver.current_url.endswith("/"), driver.current_url  # the code left the address bar
        wait.until(lambda d: d.find_element(By.ID, "live").text == "live")
        driver.save_screenshot(str(shots / "01-logged-in.png"))

        driver.find_element(By.ID, "compose-text").send_keys("hello from the page <b>not bold</b>")
        driver.find_element(By.ID, "compose-send").click()
        mine = "hello from the page <b>not bold</b>"
        retry(lambda d: not entry_with(mine).find_elements(By.TAG_NAME, "b"))  # text, not HTML
        driver.save_screenshot(str(shots / "02-posted.png"))

        retry(
            lambda d: (
                entry_with(mine).find_element(By.CSS_SELECTOR, "button.react[data-emoji='🎉']").click()
                or True
            )
        )
        retry(lambda d: "you reacted 🎉" in entry_with(mine).text)
        driver.save_screenshot(str(shots / "03-reacted.png"))

        Select(driver.find_element(By.ID, "ranker")).select_by_value("engagement")
        retry(lambda d: "points" in d.find_element(By.CSS_SELECTOR, "#timeline .why").text)
        driver.save_screenshot(str(shots / "04-engagement.png"))
        Select(driver.find_element(By.ID, "ranker")).select_by_value("chronological")
        retry(lambda d: "newest first" in d.find_element(By.CSS_SELECTOR, "#timeline .why").text)

        driver.execute_script("window.__sameDocument = 42;")
        post(bob_home, bob_key, "hello from the node of bob")  # another node; it gossips it to ours
        retry(lambda d: "bob (@" in entry_with("hello from the node of bob").text)
        assert driver.execute_script("return window.__sameDocument;") == 42  # live, not reloaded
        driver.save_screenshot(str(shots / "05-live-from-peer.png"))

        severe = [
            e for e in driver.get_log("browser") if e["level"] == "SEVERE" and "favicon" not in e["message"]
        ]
        return {"console_errors": severe}
    finally:
        driver.quit()


async def test_the_page_in_a_real_browser(tmp_path):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                hb, kb = make_home(tmp_path, "bob")
                bob = await start_node(nursery, hb, kb)
                async with web_node(nursery, tmp_path, "alice", peers=[bob.address]) as w:
                    follow(w.home, w.key, kb)
                    follow(hb, kb, w.key)
                    link = f"{w.url}/login?code={auth.new_login_code(w.home.path)}"
                    result = await trio.to_thread.run_sync(_browse, link, hb, kb, shots)
                    assert result["console_errors"] == []
                    log = await w.node.db.call(lambda s: s.log(w.key.public_key))
                    kinds = [e["type"] for e in log]
                    assert "reaction" in kinds and kinds.count("post") == 1
                    nursery.cancel_scope.cancel()
    finally:
        target = os.environ.get("TIDINGS_ARTIFACTS")
        if target:
            dest = Path(target) / "web"
            dest.mkdir(parents=True, exist_ok=True)
            for shot in shots.glob("*.png"):
                shutil.copy2(shot, dest / shot.name)
