"""Helpers shared by the bridge tests (no tests here): the CLI in-process, a local HTTP feed server."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from tidings.cli.main import cli


def tidings(home: Path, *args: str, code: int = 0, env: dict[str, str] | None = None) -> Result:
    """Run ``tidings --home HOME ARGS`` in this process; check the exit status and that no traceback leaked."""
    result = CliRunner().invoke(cli, ["--home", str(home), *args], env=env, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result


def lines(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


class FeedServer:
    """A real HTTP server on ``host`` (a 127.x address) in a thread; each path answers with what
    ``routes`` says.

    A route is a callable ``(headers) -> (status, headers, body)``; every request is logged in
    ``requests`` as ``(path, request headers)``. A body of bytes is sent with its Content-Length; any
    other iterable of bytes is streamed chunk by chunk (a generator may sleep between chunks) and the
    answer ends when the connection closes.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.routes: dict[str, Callable[[dict[str, str]], tuple[int, dict[str, str], Any]]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                server.requests.append((self.path, headers))
                route = server.routes.get(self.path)
                if route is None:
                    status, out, body = 404, {}, b"not found"
                else:
                    status, out, body = route(headers)
                self.send_response(status)
                for k, v in out.items():
                    self.send_header(k, v)
                if isinstance(body, bytes):
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.end_headers()
                for chunk in body:
                    self.wfile.write(chunk)
                    self.wfile.flush()

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up (a timeout under test) is not an error here

        self.httpd = Server((host, 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def hits(self, path: str) -> list[dict[str, str]]:
        return [h for p, h in self.requests if p == path]

    def __enter__(self) -> FeedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
