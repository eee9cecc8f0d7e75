"""A running node that serves the web API, for the web tests."""

from __future__ import annotations

import contextlib
import json
import re
import time
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
    yield await start_web_node(nursery, home, key, http=http, **kwargs)


async def start_web_node(
    nursery: trio.Nursery, home: Home, key: SigningKey, *, http: str = "127.0.0.1:0", **kwargs: Any
) -> WebNode:
    """Start a node of an existing ``home`` serving the web API on ``http`` (as ``web_node``)."""
    services = web_services(home, http)
    node = await start_node(nursery, home, key, services=services, **kwargs)
    service = services[0]
    assert service.url is not None
    return WebNode(home, key, node, service, service.url, auth.load_token(home.path))


class EventReader:
    """``GET /api/events`` over a plain TCP stream, read event by event (no async generators left
    suspended when the test ends). Each event is one chunk of the chunked answer, so it is found whole
    between the chunk-size lines."""

    EVENT = re.compile(rb"event: (\w+)\ndata: (.*)\n\n")

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.at = 0

    @classmethod
    async def open(cls, url: str, token: str) -> EventReader:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port))
        request = f"GET /api/events HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n\r\n"
        await stream.send_all(request.encode())
        reader = cls(stream)
        while b"\r\n\r\n" not in reader.buffer:
            reader.buffer += await stream.receive_some()
        head = reader.buffer.split(b"\r\n", 1)[0]
        assert head.startswith(b"HTTP/1.1 200"), reader.buffer
        assert b"content-type: text/event-stream" in reader.buffer.lower()
        return reader

    async def next_event(self) -> tuple[str, dict[str, Any]]:
        while (found := self.EVENT.search(self.buffer, self.at)) is None:
            data = await self.stream.receive_some()
            if not data:
                raise AssertionError("stream ended")
            self.buffer += data
        self.at = found.end()
        return found[1].decode(), json.loads(found[2])

    async def __aenter__(self) -> EventReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stream.aclose()


#: The reads timed: the node's state (the page's first request) and the ranked timeline (its first view).
READS = ("/api/status", "/api/timeline")


async def api_p95(web: WebNode, n: int = 40, paths: tuple[str, ...] = READS) -> float:
    """p95 (s) of authenticated reads of the web API, ``n`` of them taking ``paths`` in turn.

    The issue 15 bound (items 1-3: < 200 ms p95 during an attack). Each read must answer 200 with the
    body it promises, so that a refused or failed request cannot pass for a fast one.
    """
    times = []
    async with web.client() as client:
        for i in range(n):
            path = paths[i % len(paths)]
            start = time.perf_counter()
            response = await client.get(path)
            times.append(time.perf_counter() - start)
            assert response.status_code == 200, (path, response.status_code, response.text)
            assert response.json(), path
            await trio.sleep(0.01)
    return sorted(times)[int(n * 0.95) - 1]
