"""Services inside the running node: a crashing one is reported and the node keeps gossiping."""

from __future__ import annotations

import json

import trio

from tests.support.nodes import count, follow, make_home, post, start_node, wait_until


class Crasher:
    def __init__(self, before_start: bool) -> None:
        self.before_start = before_start
        self.name = "early" if before_start else "late"

    async def run(self, node, *, task_status):
        if not self.before_start:
            task_status.started()
            await trio.sleep(0.05)
        raise RuntimeError("plugin bug")


class Counter:
    name = "counter"

    def __init__(self) -> None:
        self.ticks = 0

    def state(self):
        return {"ticks": self.ticks}

    async def run(self, node, *, task_status):
        task_status.started()
        while True:
            self.ticks += 1
            await trio.sleep(0.01)


async def test_crashing_services_are_reported_and_the_node_keeps_running(tmp_path):
    ha, ka = make_home(tmp_path, "a")
    hb, kb = make_home(tmp_path, "b")
    follow(ha, ka, kb)
    counter = Counter()
    async with trio.open_nursery() as nursery:
        b = await start_node(nursery, hb, kb)
        a = await start_node(
            nursery, ha, ka, peers=[b.address], services=[Crasher(True), Crasher(False), counter]
        )
        states = a.statistics()["services"]
        assert states["early"]["state"] == "crashed"
        assert "RuntimeError: plugin bug" in states["early"]["error"]
        await wait_until(lambda: a.statistics()["services"]["late"]["state"] == "crashed")
        post(hb, kb, "still delivered")
        await wait_until(lambda: count(ha, kb.public_key) == 1)
        await wait_until(lambda: counter.ticks > 3)
        on_disk = json.loads(ha.node_file.read_text())["services"]
        assert on_disk["early"]["state"] == on_disk["late"]["state"] == "crashed"
        assert on_disk["counter"]["state"] == "running"
        nursery.cancel_scope.cancel()
