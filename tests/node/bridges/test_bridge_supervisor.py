"""Bridges follow their settings while the node runs (``node/bridges/supervisor.py``): a bridge
configured with ``tidings bridge config`` starts, restarts and stops without a node restart."""

from __future__ import annotations

import httpx
import trio
from tidings.node.bridges.supervisor import BridgeSupervisor

from tests.support.bridges import tidings
from tests.support.nodes import make_home, start_node


async def _until(predicate, what: str, timeout: float = 10.0) -> None:
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.05)
        return
    raise AssertionError(f"timed out waiting for {what}")


async def test_bridge_config_takes_effect_while_the_node_runs(tmp_path):
    home, key = make_home(tmp_path, "alice")
    supervisor = BridgeSupervisor(home, check=0.1)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            node = await start_node(nursery, home, key, services=[supervisor], dht=False)

            def atom() -> dict | None:
                return node.statistics()["services"].get("bridge:atom")

            assert atom() is None  # opt-in: nothing configured, nothing runs
            assert node.statistics()["services"]["bridges"]["state"] == "running"

            await trio.to_thread.run_sync(
                lambda: tidings(home.path, "bridge", "config", "atom", "listen", "127.0.0.1:0")
            )
            await _until(  # bound: the port it got, not the 0 of the config (which it shows while starting)
                lambda: (
                    (atom() or {}).get("listen", "").startswith("127.0.0.1:")
                    and atom()["listen"] != "127.0.0.1:0"
                ),  # type: ignore[index]
                "the atom service",
            )
            first = atom()["listen"]
            assert first != "127.0.0.1:0"
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"http://{first}/feed.atom")).status_code == 200

                # a new setting restarts the service with it
                await trio.to_thread.run_sync(
                    lambda: tidings(home.path, "bridge", "config", "atom", "listen", "127.0.0.9:0")
                )
                await _until(lambda: (atom() or {}).get("listen", "").startswith("127.0.0.9:"), "the restart")
                second = atom()["listen"]
                assert (await client.get(f"http://{second}/feed.atom")).status_code == 200
                try:
                    await client.get(f"http://{first}/feed.atom")
                except httpx.ConnectError:
                    pass
                else:
                    raise AssertionError("the old listener still answers")

                # switched off: the service stops and leaves the status
                await trio.to_thread.run_sync(
                    lambda: tidings(home.path, "bridge", "config", "atom", "listen", "off")
                )
                await _until(lambda: atom() is None, "the atom service to stop")
                try:
                    await client.get(f"http://{second}/feed.atom")
                except httpx.ConnectError:
                    pass
                else:
                    raise AssertionError("the stopped listener still answers")
            assert supervisor.state() == {"managed": [], "restarts": 2}
            nursery.cancel_scope.cancel()
