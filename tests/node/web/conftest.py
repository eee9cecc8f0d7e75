"""Fixtures of the web page's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.browser import find_browser


@pytest.fixture
def browser() -> tuple[Path, Path]:
    """Chromium and ChromeDriver (``find_browser``); a synchronous fixture, since a skip raised inside
    a trio test would lose its reason."""
    return find_browser()
