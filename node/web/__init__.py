"""The local web page and JSON API served by ``tidings run`` on 127.0.0.1 (issue: local web UI).

``web_services(home, "HOST:PORT")`` gives the service ``tidings run --http`` starts; the page's
files are in ``static/``; ``auth`` holds the token and one-time login codes ``tidings open`` uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tidings.node.web.service import DEFAULT_HTTP, WebService

if TYPE_CHECKING:
    from tidings.node.home import Home

__all__ = ["DEFAULT_HTTP", "WebService", "web_services"]


def web_services(home: Home, http: str | None) -> list[WebService]:
    """Services for ``tidings run --http HOST:PORT`` (none when ``http`` is None)."""
    return [] if http is None else [WebService(home, http)]
