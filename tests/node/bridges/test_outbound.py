"""The bridges' outbound policy (spec §14.6): which addresses a fetch may reach, checked after DNS."""

from __future__ import annotations

import pytest
import trio
from tidings.node.bridges import outbound
from tidings.node.bridges.base import BridgeError
from tidings.node.bridges.outbound import OutboundPolicy, is_public, open_checked_stream
from tidings.node.bridges.rss import poll_source, rss_config
from tidings.storage import bridges as db
from tidings.storage.store import Store

from tests.support.bridges import FeedServer, tidings
from tests.support.nodes import make_home, next_host


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.10", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # shared (CGNAT)
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("ff0e::1", False),  # global-scope multicast
        ("::ffff:127.0.0.1", False),  # IPv4-mapped
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("64:ff9b::5db8:d822", True),  # NAT64 of 93.184.216.34
        ("not an address", False),
    ],
)
def test_public_addresses(address, public):
    assert is_public(address) is public


def test_only_an_internal_origin_written_by_the_user_may_be_internal():
    assert OutboundPolicy.for_url("http://127.0.0.5:8080/feed").explicit == ("127.0.0.5", 8080)
    assert OutboundPolicy.for_url("http://[::1]/feed").explicit == ("::1", 80)
    assert OutboundPolicy.for_url("https://LocalHost/feed").explicit == ("localhost", 443)
    assert OutboundPolicy.for_url("https://feeds.example/feed").explicit is None
    assert OutboundPolicy.for_url("http://93.184.216.34/feed").explicit is None
    policy = OutboundPolicy.for_url("http://127.0.0.5:8080/feed")
    assert policy.allows_internal("127.0.0.5", 8080)
    assert not policy.allows_internal("127.0.0.5", 8081)
    assert not policy.allows_internal("127.0.0.6", 8080)


async def test_a_name_is_resolved_once_and_the_checked_address_is_dialled(monkeypatch):
    """DNS rebinding: the second answer (internal) is never asked for; the connection goes to the first."""
    answers = [["93.184.216.34"], ["127.0.0.1"]]
    asked: list[str] = []
    dialled: list[tuple[str, int]] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers.pop(0)

    async def dial(address: str, port: int):
        dialled.append((address, port))
        raise OSError("no route (test)")

    monkeypatch.setattr(outbound, "_open_tcp", dial)
    policy = OutboundPolicy.for_url("http://rebind.example/feed", resolve=resolve)
    with pytest.raises(OSError):
        await open_checked_stream(policy, "rebind.example", 80)
    assert asked == ["rebind.example"] and dialled == [("93.184.216.34", 80)]
    # a name with one internal address among its answers is refused before any connection
    answers[:] = [["93.184.216.34", "10.0.0.7"]]
    with pytest.raises(BridgeError) as refused:
        await open_checked_stream(policy, "rebind.example", 80)
    assert refused.value.code == "forbidden_address" and "rebind.example (10.0.0.7):80" in str(refused.value)
    assert dialled == [("93.184.216.34", 80)]


async def test_a_followed_name_that_resolves_to_an_internal_address_is_refused(tmp_path):
    home, _ = make_home(tmp_path, "reader")
    with FeedServer(next_host()) as server:
        server.routes["/feed"] = lambda _h: (
            200,
            {},
            b"<rss version='2.0'><channel><title>x</title></channel></rss>",
        )
        url = f"http://feed.test:{server.port}/feed"
        tidings(home.path, "bridge", "rss", "follow", url)

        async def resolve(host: str, port: int) -> list[str]:
            assert host == "feed.test"
            return [server.host]

        with Store(home.store_path) as store:
            (src,) = db.sources(store, "rss", "in")

            async def call(fn, *args, **kwargs):
                return fn(store, *args, **kwargs)

            out = await poll_source(call, home, src, config=rss_config({}), resolve=resolve)
            assert out.status == "error" and "internal address feed.test" in (out.error or "")
            (src,) = db.sources(store, "rss", "in")
            assert src["failures"] == 1
        assert server.requests == []


async def test_localhost_written_by_the_user_is_allowed(tmp_path):
    home, _ = make_home(tmp_path, "reader")
    rss = b"<rss version='2.0'><channel><title>L</title><item><guid>a</guid><title>A</title></item></channel></rss>"
    with FeedServer("127.0.0.1") as server:
        server.routes["/feed"] = lambda _h: (200, {}, rss)
        url = f"http://localhost:{server.port}/feed"
        tidings(home.path, "bridge", "rss", "follow", url)
        with Store(home.store_path) as store:
            (src,) = db.sources(store, "rss", "in")

            async def call(fn, *args, **kwargs):
                return fn(store, *args, **kwargs)

            with trio.fail_after(10):
                out = await poll_source(call, home, src, config=rss_config({}))
        assert out.error is None and out.new == 1
