"""A running node that serves the web API, for the web tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio
from tidings.node.home import Home
from tidings.node.net.node import Node
from tidings.node.web import WebService, auth, web_services
from tidings.protocol import SigningKey

from tests.support.nodes import make_home, start_node


@dataclass
class WebNode:
    home: Home
    key: SigningKey
    node: Node
    service: WebService
    url: str
    token: str

    def client(self, **headers: str) -> httpx.AsyncClient:
        """A client that sends the token (as a script would) unless told otherwise."""
        auth_header = {"authorization": f"Bearer {self.token}"}
        return httpx.AsyncClient(base_url=self.url, headers={**auth_header, **headers}, timeout=10)


@contextlib.asynccontextmanager
async def web_node(
    nursery: trio.Nursery,
    tmp: Path,
    name: str,
    *,
    http: str = "127.0.0.1:0",
    web_config: str = "",
    **kwargs: Any,
) -> AsyncIterator[WebNode]:
    """A running node serving the web API on ``http`` (port 0: a free port, reported by state()).

    ``web_config`` is the body of the ``[web]`` table of its config.toml (limits, node/web/limits.py).
    """
    home, key = make_home(tmp, name)
    if web_config:
        home.config_path.write_text(f"[web]\n{web_config}\n")
    services = web_services(home, http)
    node = await start_node(nursery, home, key, services=services, **kwargs)
    service = services[0]
    assert service.url is not None
    yield WebNode(home, key, node, service, service.url, auth.load_token(home.path))
