"""Headless Chromium for the web page's tests (Selenium, ``chromium`` and ``chromedriver`` on PATH).

``find_browser`` finds them or skips the test with one line that says how to install them (a failure
instead when ``TIDINGS_REQUIRE_BROWSER=1``, as CI sets it). ``view_picture`` is the whole check a test
needs to say "this page shows that picture": open the page (logged in by a one-time link when given),
wait until an ``<img>`` with the given alt text has loaded, save a screenshot, and return the
picture's natural size. Selenium is synchronous: trio tests call these from a worker thread
(``trio.to_thread.run_sync``). Every wait is bounded and the browser is always quit.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

WAIT = 15.0
REQUIRE = "TIDINGS_REQUIRE_BROWSER"  # "1": a missing browser fails the test instead of skipping it
INSTALL = "apt-get install chromium chromium-driver"

__all__ = [
    "INSTALL",
    "REQUIRE",
    "WAIT",
    "console_errors",
    "find_browser",
    "loaded_picture",
    "open_driver",
    "view_picture",
]

# The size of the first loaded <img> whose alt is arguments[0], or null (not there, or not loaded yet).
_LOADED = """
const img = [...document.images].find((i) => i.alt === arguments[0] && i.isConnected);
return img && img.complete && img.naturalWidth > 0 ? [img.naturalWidth, img.naturalHeight] : null;
"""


def find_browser(
    env: Mapping[str, str] = os.environ, which: Callable[[str], str | None] = shutil.which
) -> tuple[Path, Path]:
    """Chromium and its ChromeDriver on ``PATH``. Without them: a one-line skip that says how to
    install them, or, when ``env`` requires the browser test (CI), a one-line failure."""
    found = {name: which(name) for name in ("chromium", "chromedriver")}
    missing = [name for name, path in found.items() if path is None]
    try:
        import selenium  # noqa: F401  (a test dependency: pip install ".[test]")
    except ImportError:
        missing.append("selenium")
    if missing:
        reason = f"the browser test needs {' and '.join(missing)}: {INSTALL} (and pip install '.[test]')"
        if env.get(REQUIRE) == "1":
            pytest.fail(f"{reason}; {REQUIRE}=1 forbids skipping it", pytrace=False)
        pytest.skip(reason)
    return Path(str(found["chromium"])), Path(str(found["chromedriver"]))


def open_driver(profile: Path, chromium: Path, chromedriver: Path) -> Any:
    """A headless Chromium with its own profile folder ``profile``, its console log kept."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
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
    driver = webdriver.Chrome(service=Service(executable_path=str(chromedriver)), options=options)
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    return driver


def loaded_picture(driver: Any, alt: str, *, wait: float = WAIT) -> tuple[int, int]:
    """Wait until the page shows an ``<img>`` whose alt text is ``alt``, loaded (``naturalWidth > 0``),
    scroll it into view, and return its natural ``(width, height)``."""
    from selenium.webdriver.support.ui import WebDriverWait

    size = WebDriverWait(driver, wait, poll_frequency=0.1).until(
        lambda d: d.execute_script(_LOADED, alt),
        message=f"no loaded picture with alt text {alt!r} within {wait:g} s",
    )
    driver.execute_script(
        "[...document.images].find((i) => i.alt === arguments[0]).scrollIntoView({block: 'center'});", alt
    )
    return int(size[0]), int(size[1])


def view_picture(
    url: str,
    alt: str,
    screenshot: Path,
    *,
    browser: tuple[Path, Path],
    login: str | None = None,
    wait: float = WAIT,
) -> tuple[int, int]:
    """Open ``url`` in headless Chromium (after the one-time ``login`` link of ``tidings open``, when
    the page needs one: it sets the token cookie), wait for the ``<img>`` with alt text ``alt`` to
    load, save a PNG screenshot at ``screenshot`` and return the picture's natural size.

    ``browser`` is what ``find_browser`` returned. Raises on timeout (Selenium's ``TimeoutException``)
    or when the screenshot was not written.
    """
    with tempfile.TemporaryDirectory(prefix="tidings-chromium-") as profile:
        driver = open_driver(Path(profile), *browser)
        try:
            if login is not None:
                driver.get(login)
            if login is None or driver.current_url.rstrip("/") != url.rstrip("/"):
                driver.get(url)
            size = loaded_picture(driver, alt, wait=wait)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            if not driver.save_screenshot(str(screenshot)) or screenshot.stat().st_size == 0:
                raise AssertionError(f"no screenshot written to {screenshot}")
            return size
        finally:
            driver.quit()


def console_errors(driver: Any) -> list[dict[str, Any]]:
    """The page's SEVERE console messages (a missing favicon aside): a script or CSP failure shows here."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and "favicon" not in e["message"]]
