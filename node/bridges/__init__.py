"""Bridges to other networks, found through the ``tidings.bridges`` entry point group."""

from __future__ import annotations

from typing import Any


def bridge_services(home: Any) -> list[Any]:
    """Services for the bridges enabled in ``home`` (run inside ``tidings run``)."""
    return []
