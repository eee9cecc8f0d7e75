"""Fixtures shared by the storage tests."""

import pytest
from tidings.storage.store import Store


@pytest.fixture
def store(tmp_path):
    """A fresh store in a temporary folder, closed after the test."""
    with Store(tmp_path / "store.db") as s:
        yield s
