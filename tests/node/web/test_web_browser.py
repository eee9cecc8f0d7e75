"""The web page end to end in a real headless Chromium (Selenium), against two real connected nodes.

The nodes run in trio; the synchronous Selenium steps run in a worker thread. Every wait is bounded;
the browser is quit and the nodes are cancelled whatever happens. Screenshots go to pytest's tmp
folder, and are copied to ``$TIDINGS_ARTIFACTS`` when that is set (CI keeps them).

On a machine without Chromium and its driver the test skips with one line that says how to install
them; ``.ci/run`` installs them and sets ``TIDINGS_REQUIRE_BROWSER=1``, which turns that skip into a
failure, so CI never skips it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from tidings.node.web import auth

from tests.support.browser import INSTALL, REQUIRE, WAIT, console_errors, find_browser
from tests.support.browser import open_driver as _driver
from tests.support.nodes import follow, make_home, post, start_node
from tests.support.web import web_node

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.slow


def _browse(link: str, bob_home, bob_key, shots: Path, browser: tuple[Path, Path]) -> dict[str, object]:
    """The user's steps; returns what the trio side checks afterwards."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver = _driver(shots.parent / "chromium-profile", *browser)
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

        severe = console_errors(driver)
        return {"console_errors": severe}
    finally:
        driver.quit()


async def test_the_page_in_a_real_browser(tmp_path, browser):
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
                    result = await trio.to_thread.run_sync(_browse, link, hb, kb, shots, browser)
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


# -- without a browser --------------------------------------------------------------------------------
def _nothing(name: str) -> str | None:
    return None


def _only_chromium(name: str) -> str | None:
    return "/usr/bin/chromium" if name == "chromium" else None


def test_a_missing_browser_skips_unless_required() -> None:
    """The lookup itself: no driver found is a skip that says how to install it, and a failure with
    the switch set."""
    with pytest.raises(pytest.skip.Exception) as skipped:
        find_browser({}, _nothing)
    assert INSTALL in str(skipped.value) and "\n" not in str(skipped.value)
    with pytest.raises(pytest.fail.Exception) as failed:
        find_browser({REQUIRE: "1"}, _nothing)
    assert INSTALL in str(failed.value) and f"{REQUIRE}=1" in str(failed.value)
    with pytest.raises(pytest.fail.Exception, match="needs chromedriver: "):
        find_browser({REQUIRE: "1"}, _only_chromium)
    with pytest.raises(pytest.skip.Exception, match="needs chromedriver: "):
        find_browser({REQUIRE: "0"}, _only_chromium)  # only "1" requires it


def _pytest_without_chromium(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The README's test command for this test, on a machine whose PATH has no Chromium."""
    clean = {k: v for k, v in os.environ.items() if k not in (REQUIRE, "TIDINGS_ARTIFACTS")}
    empty = tmp_path / "bin"
    empty.mkdir(exist_ok=True)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"{__file__}::test_the_page_in_a_real_browser",
        ],
        cwd=ROOT,
        env={**clean, "PATH": str(empty), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_without_chromium_the_test_command_skips_in_one_line_and_ci_fails(tmp_path: Path) -> None:
    out = _pytest_without_chromium(tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 skipped" in out.stdout and "NoSuchDriverException" not in out.stdout, out.stdout
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("SKIPPED")]
    assert INSTALL in line, out.stdout
    # CI's switch (.ci/run sets it): the same machine fails, again with one line and no trace
    out = _pytest_without_chromium(tmp_path, **{REQUIRE: "1"})
    assert out.returncode == 1 and "1 error" in out.stdout, out.stdout + out.stderr  # in its fixture
    assert "NoSuchDriverException" not in out.stdout and "Traceback" not in out.stdout, out.stdout
    assert f"{INSTALL} (and pip install '.[test]'); {REQUIRE}=1 forbids skipping it" in out.stdout
    assert len(out.stdout.splitlines()) < 15, out.stdout


def test_ci_requires_the_browser_test() -> None:
    """``.ci/run`` sets the switch before it runs the tests, so CI can never skip the browser test."""
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    switch = next(i for i, line in enumerate(lines) if line.startswith(f"export {REQUIRE}=1 "))
    tests = next(i for i, line in enumerate(lines) if "-m pytest" in line)
    assert switch < tests
