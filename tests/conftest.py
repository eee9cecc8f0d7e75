"""Fixtures shared by every test; helper functions live in ``tests/support/``.

The test folders mirror the packages: ``tests/protocol``, ``tests/storage``, ``tests/node/<room>``
and ``tests/cli``.
"""

from pathlib import Path

import pytest

#: Installable demo plugins (a bridge and a ranker) used by the plugin tests.
PLUGINS = Path(__file__).resolve().parent / "plugins"


@pytest.fixture
def plugins_dir() -> Path:
    return PLUGINS
