"""The local web page and JSON API served by ``tidings run`` on 127.0.0.1 (issue: local web UI)."""

from __future__ import annotations

from typing import Any


def web_services(home: Any, http: str | None) -> list[Any]:
    """Services for ``tidings run --http HOST:PORT`` (none when ``http`` is None)."""
    return []
