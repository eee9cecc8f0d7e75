"""Hostile web clients against a real node on 127.x (issue 15 item 7; README, "The web page").

The flood is scaled down from the issue's: there, ~1,100 connections took every descriptor of a node
allowed 1,024. Here the test process (which is the node) is allowed ``NOFILE`` = 512 descriptors
(``resource.setrlimit``, restored after), and the attacker, in its own process so that its sockets do
not count against that limit, opens ``FLOOD`` = 600 connections: more than the node's whole limit, as
in the issue. With 512 descriptors the web port's share is 128 connections (a quarter), 32 per client.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import trio
from tidings.node.net.node import Node

from tests.support.nodes import count, follow, make_home, next_host, post, wait_until
from tests.support.web import web_node

ROOT = Path(__file__).resolve().parents[3]
NOFILE = 512
FLOOD = 600
SOURCES = 8


def descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def low_nofile():
    """Allow this process ``NOFILE`` descriptors for the test, as a default Linux session allows 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(NOFILE, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class Attacker:
    """tests/support/web_attacker.py in its own process."""

    def __init__(self, url: str, connections: int, pipeline: int, sources: list[str]) -> None:
        host, _, port = url.removeprefix("http://").rpartition(":")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.web_attacker",
                host,
                port,
                str(connections),
                str(pipeline),
                *sources,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )

    async def _line(self) -> dict:
        assert self.proc.stdout is not None
        line = await trio.to_thread.run_sync(self.proc.stdout.readline)
        assert line, "the attacker process ended"
        return json.loads(line)

    async def started(self) -> dict:
        with trio.fail_after(30):
            return await self._line()

    async def still_open(self) -> int:
        """How many of its connections the node has not closed."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("?\n")
        self.proc.stdin.flush()
        return (await self._line())["open"]

    def leave(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)
        self.proc.stdout.close()


def closed_by_peer(sock: socket.socket) -> bool:
    """Wait until the node closes ``sock`` (True), reading nothing else (False)."""
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the node sends until it closes ``sock``."""
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


async def honest_requests(url: str, token: str, n: int) -> list[float]:
    """Seconds per ``GET /api/status``, each on a fresh connection (closed by the client) from one fresh 127.x."""
    times = []
    source = next_host()
    for _ in range(n):
        start = time.perf_counter()
        transport = httpx.AsyncHTTPTransport(local_address=source)
        async with httpx.AsyncClient(base_url=url, transport=transport, timeout=5) as client:
            response = await client.get("/api/status", headers={"authorization": f"Bearer {token}"})
        times.append(time.perf_counter() - start)
        assert response.status_code == 200, response.text
    return times


async def honest_sync(tmp_path: Path, victim: Node) -> None:
    home, key = make_home(tmp_path, f"honest-{os.urandom(3).hex()}")
    follow(home, key, victim.key)
    with trio.fail_after(10):
        conn = await Node(home, key, listen=f"{next_host()}:0").sync_once(victim.address)
    assert conn.received >= 20
    assert count(home, victim.key.public_key) == count(victim.home, victim.key.public_key)


async def test_a_flood_of_never_reading_connections_is_capped_and_the_node_recovers(
    tmp_path, nursery, low_nofile
):
    async with web_node(nursery, tmp_path, "victim") as w:
        for i in range(20):
            post(w.home, w.key, f"honest {i}")
        limits = w.service.limits.budgeted(NOFILE)
        assert (limits.max_connections, limits.max_per_client) == (128, 32)  # the docstring's figures
        await honest_requests(w.url, w.token, 2)  # warm up: the idle level includes what a request opens
        idle = descriptors()

        sources = [f"127.0.{200 + i}.1" for i in range(SOURCES)]
        attacker = Attacker(w.url, FLOOD, 40, sources)
        try:
            opened = await attacker.started()
            assert opened["opened"] + opened["failed"] == FLOOD
            # the excess is refused at accept; what the node holds stays far from its limit. Every
            # connection of the flood was refused, is open, or has ended (a slow machine can take
            # longer than the idle timeout to open them all, and the node closes the idle ones).
            stats = w.service.statistics
            await wait_until(lambda: stats()["admitted"] + stats()["refused"] >= FLOOD)
            assert (
                stats()["open"] <= limits.max_connections
                and stats()["refused"] >= FLOOD - limits.max_connections - stats()["released"]
            )
            assert await attacker.still_open() <= limits.max_connections
            assert descriptors() <= idle + limits.max_connections + 16 < NOFILE

            # during the attack: the web API answers an honest client (every request within the
            # client's 5 s timeout; how fast is a benchmark figure, bench/attack_web.py, not a test's),
            # and an honest sync works
            await honest_requests(w.url, w.token, 20)
            await honest_sync(tmp_path, w.node)
        finally:
            attacker.leave()
        # after it left: the descriptors come back by themselves within seconds
        await wait_until(lambda: descriptors() <= idle + 4, timeout=5)
        await wait_until(lambda: w.service.statistics()["open"] <= 1, timeout=5)
        await honest_requests(w.url, w.token, 2)
        nursery.cancel_scope.cancel()


async def test_a_client_that_closes_its_connections_gets_its_slots_back_at_once(tmp_path, nursery):
    async with web_node(nursery, tmp_path, "victim", web_config="max_per_client = 4") as w:
        # one address, 20 connections one after another: each is let go when the client closes it
        await honest_requests(w.url, w.token, 20)
        assert w.service.statistics()["refused"] == 0
        nursery.cancel_scope.cancel()


async def test_clients_that_never_read_or_never_finish_are_closed_while_they_stay(tmp_path, nursery):
    config = "idle_timeout = 1.0\nwrite_timeout = 1.0"
    async with web_node(nursery, tmp_path, "victim", web_config=config) as w:
        # 8 connections pipelining ~7 MB of responses each: more than the socket buffers hold
        attacker = Attacker(w.url, 8, 400, [next_host()])
        try:
            assert (await attacker.started())["opened"] == 8
            with trio.fail_after(15):
                while await attacker.still_open():
                    await trio.sleep(0.2)
            await wait_until(lambda: w.service.statistics()["open"] == 0, timeout=5)
        finally:
            attacker.leave()

        # slow headers: half a request line, then nothing
        host, port = w.url.removeprefix("http://").rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), source_address=(next_host(), 0))
        try:
            sock.sendall(b"GET /api/status HTTP/1.1\r\nHo")
            start = time.monotonic()
            sock.settimeout(10)
            assert await trio.to_thread.run_sync(closed_by_peer, sock)
            assert time.monotonic() - start < 5  # closed after idle_timeout, not after the client's patience
        finally:
            sock.close()
        nursery.cancel_scope.cancel()


async def test_event_streams_are_capped_per_client_and_in_all(tmp_path, nursery):
    config = "max_event_streams = 3\nmax_event_streams_per_client = 2"
    async with (
        web_node(nursery, tmp_path, "victim", web_config=config) as w,
        contextlib.AsyncExitStack() as stack,
    ):

        async def stream(source: str) -> httpx.Response:
            transport = httpx.AsyncHTTPTransport(local_address=source)
            headers = {"authorization": f"Bearer {w.token}"}
            client = httpx.AsyncClient(base_url=w.url, transport=transport, timeout=5, headers=headers)
            await stack.enter_async_context(client)
            return await stack.enter_async_context(client.stream("GET", "/api/events"))

        async def refused(response: httpx.Response, status: int, code: str) -> None:
            assert response.status_code == status
            body = json.loads(await response.aread())
            assert body["code"] == code and body["error"], body

        one, two = next_host(), next_host()
        first = await stream(one)
        assert first.status_code == 200 and first.headers["content-type"] == "text/event-stream"
        assert (await stream(one)).status_code == 200
        await refused(await stream(one), 429, "too_many_streams")  # the client's third
        assert (await stream(two)).status_code == 200
        await refused(await stream(next_host()), 503, "streams_full")  # the fourth in all
        await first.aclose()
        # the node notices the client left and gives the slot back: that client is served again
        with trio.fail_after(5):
            while (again := await stream(one)).status_code != 200:
                await refused(again, 429, "too_many_streams")
                await trio.sleep(0.1)
        nursery.cancel_scope.cancel()


async def test_deep_json_and_slow_bodies_are_refused_without_a_traceback(tmp_path, nursery, caplog):
    caplog.set_level(logging.DEBUG)
    async with web_node(nursery, tmp_path, "victim", web_config="body_timeout = 1.0") as w, w.client() as c:
        deep = b"[" * 100_000 + b"]" * 100_000  # 200 KB: under the body cap, 100,000 deep
        for body in (deep, b'{"text": ' + b"[" * 33 + b"]" * 33 + b"}"):
            response = await c.post("/api/post", content=body, headers={"content-type": "application/json"})
            assert response.status_code == 400, response.text
            assert response.json()["code"] == "bad_json" and "deeper than 32" in response.json()["error"]
        # 32 deep passes the depth check (and is refused for what it is: not a string)
        shallow = b'{"text": ' + b"[" * 31 + b"]" * 31 + b"}"
        response = await c.post("/api/post", content=shallow, headers={"content-type": "application/json"})
        assert response.status_code == 400 and response.json()["code"] == "bad_parameter"
        response = await c.post("/api/post", json={"text": "still fine"})
        assert response.status_code == 200

        # a body that stops arriving: 408 after body_timeout, then closed
        host, port = w.url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), source_address=(next_host(), 0)) as sock:
            head = (
                f"POST /api/post HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {w.token}\r\n"
                'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"text"'
            )
            sock.sendall(head.encode())
            sock.settimeout(10)
            start = time.monotonic()
            answer = await trio.to_thread.run_sync(read_until_closed, sock)
            assert answer.startswith(b"HTTP/1.1 408") and b'"slow_body"' in answer, answer
            assert time.monotonic() - start < 5
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert "RecursionError" not in caplog.text and "Traceback" not in caplog.text
    nursery.cancel_scope.cancel()


async def test_a_client_pipelining_without_reading_costs_a_bounded_number_of_answers(tmp_path, nursery):
    async with web_node(nursery, tmp_path, "victim", web_config="write_timeout = 1.0") as w:
        limits = w.service.limits
        stats = w.service.statistics
        host, _, port = w.url.removeprefix("http://").rpartition(":")
        request = f"GET /static/app.js HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
        sock = trio.socket.socket()
        await sock.bind((next_host(), 0))
        await sock.connect((host, int(port)))
        try:
            # 100 answers of app.js (~2 MB) fit in loopback buffers: without the cap all would be sent
            await sock.send(request * 100)
            await wait_until(lambda: stats()["stalled"] == 1)
            assert stats()["answered"] == 1 + limits.max_pipelined
            # it is closed after the write timeout, having cost no further answer
            with trio.fail_after(5):
                while True:
                    try:
                        if not await sock.recv(65536):
                            break
                    except ConnectionResetError:
                        break
            assert stats()["answered"] == 1 + limits.max_pipelined
        finally:
            sock.close()

        # an honest client on one kept-alive connection (it reads each answer first) is never held back
        async with httpx.AsyncClient(base_url=w.url, timeout=5) as client:
            for _ in range(10):
                assert (await client.get("/static/app.js")).status_code == 200
        assert stats()["stalled"] == 1 and stats()["answered"] == 1 + limits.max_pipelined + 10
        nursery.cancel_scope.cancel()


async def test_a_client_over_its_request_rate_waits_instead_of_being_refused(tmp_path, nursery):
    async with web_node(
        nursery, tmp_path, "victim", web_config="request_rate = 10.0\nrequest_burst = 5"
    ) as w:
        start = time.perf_counter()
        async with httpx.AsyncClient(base_url=w.url, timeout=5) as client:
            for _ in range(15):
                assert (await client.get("/static/app.js")).status_code == 200
        # 5 at once, then 10 at 10 a second
        assert time.perf_counter() - start >= 0.8
        assert w.service.statistics()["paced"] >= 9
        nursery.cancel_scope.cancel()
