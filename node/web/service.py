"""The web service inside ``tidings run``: ``WebApp`` served over HTTP by hypercorn on one address.

We bind the socket ourselves, so that a failed bind raises here (the node reports the service as
crashed and keeps running), port 0 works and ``state()`` reports the real URL, and the socket is
closed whatever happens. Connections are accepted by our own loop (node/web/listener.py), which caps
them by the ``[web]`` limits of ``config.toml`` (node/web/limits.py), read and checked when the
service is made, before the node starts.
"""

from __future__ import annotations

import errno
import functools
import socket
from typing import TYPE_CHECKING, Any

import trio
from tidings.node.addresses import parse_address
from tidings.node.web.app import WebApp
from tidings.node.web.auth import load_token
from tidings.node.web.blobs import clear_uploads
from tidings.node.web.context import WebContext, WebNode
from tidings.node.web.limits import WebLimits, descriptor_limit
from tidings.node.web.listener import WebPort, serve_web
from tidings.node.web.openapi import openapi_document
from tidings.protocol.errors import TidingsError

if TYPE_CHECKING:
    from tidings.node.home import Home

__all__ = ["DEFAULT_HTTP", "WebBindError", "WebService"]

DEFAULT_HTTP = "127.0.0.1:7434"


class WebBindError(TidingsError):
    """The web page's address cannot be bound: it names the address and what to do instead."""

    code = "web_address"


def bind_error(address: str, exc: OSError) -> WebBindError:
    """The one line a user reads when ``address`` cannot be bound (shown by the log, ``tidings status``
    and ``tidings open``): which address, why, and the ``tidings run`` options that avoid it."""
    why = (exc.strerror or str(exc) or type(exc).__name__).lower()
    if exc.errno == errno.EADDRINUSE:
        why += " (another program, or another Tidings node's web page, serves there)"
    return WebBindError(
        f"cannot serve the web page on {address}: {why}; start the node with --http HOST:PORT "
        "for another address (port 0 picks a free one) or --http off for none",
        code="web_address_in_use" if exc.errno == errno.EADDRINUSE else "web_address",
    )


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on exactly ``host:port`` (OSError if it cannot bind)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def url_for(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class WebService:
    """Serves the local page and API at ``address`` (``HOST:PORT``, port 0 picks one).

    ``limits`` default to the home's ``[web]`` table (WebConfigError, code ``bad_config``, if a value
    is wrong); they are budgeted against the process's descriptor limit when the service starts.
    """

    name = "web"

    def __init__(self, home: Home, address: str = DEFAULT_HTTP, *, limits: WebLimits | None = None) -> None:
        parse_address(address)  # ValueError early for a malformed address
        self.home = home
        self.address = address
        if limits is None:
            limits = WebLimits.from_config(home.config().get("web"), source=str(home.config_path))
        self.limits = limits
        self.url: str | None = None
        self.port: WebPort | None = None

    def state(self) -> dict[str, Any]:
        return {"url": self.url} if self.url is not None else {"address": self.address}

    def statistics(self) -> dict[str, Any]:
        """Open, refused and evicted web connections, requests answered and paced, connections stalled
        for pipelining without reading (empty before the service runs)."""
        return self.port.statistics() if self.port is not None else {}

    async def run(
        self, node: WebNode, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
    ) -> None:
        host, port = parse_address(self.address)
        try:
            sock = bind_socket(host, port)
        except OSError as exc:
            raise bind_error(self.address, exc) from None
        try:
            bound_port = sock.getsockname()[1]
            token = load_token(self.home.path)
            clear_uploads(self.home.path)  # files a stopped node was receiving (node/web/blobs.py)
            limits = self.limits.budgeted(descriptor_limit())
            ctx = WebContext(node, self.home, openapi=openapi_document)
            app = WebApp(ctx, token=token, bound_host=host, port=bound_port, limits=limits)
            async with trio.open_nursery() as nursery:
                self.port = await nursery.start(
                    functools.partial(serve_web, app, sock, limits, clock=ctx.clock)
                )
                self.url = url_for(host, bound_port)
                task_status.started(self.url)
                node.services_changed()  # node.json now names the URL (tidings open reads it)
        finally:
            self.url = None
            self.port = None
            sock.close()
