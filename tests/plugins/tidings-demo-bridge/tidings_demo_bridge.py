"""A tiny third-party bridge: a sub-command, a setting, a service with a state, and one that crashes."""

from __future__ import annotations

import json

import click
import trio
from tidings.node.bridges import Bridge, Setting


class DemoService:
    name = "bridge:demo"

    def __init__(self, greeting: str) -> None:
        self.greeting = greeting
        self.ticks = 0

    def state(self) -> dict:
        return {"ticks": self.ticks, "greeting": self.greeting}

    async def run(self, node, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            self.ticks += 1
            node.services_changed()
            await trio.sleep(0.1)


class DemoBridge(Bridge):
    name = "demo"
    description = "A demo bridge that says hello."
    settings = (
        Setting(name="greeting", default="hello", help="what to say"),
        Setting(name="enabled", default="off", help="run the demo service inside the node"),
    )

    def command(self) -> click.Group:
        @click.group("demo")
        def group() -> None:
            """The demo bridge."""

        @group.command("hello")
        @click.option("--json", "as_json", is_flag=True)
        @click.argument("who", default="world")
        def hello(as_json: bool, who: str) -> None:
            if as_json:
                click.echo(json.dumps({"greeting": f"hello {who}"}))
            else:
                click.echo(f"hello {who}")

        @group.command("fail")
        def fail() -> None:
            raise RuntimeError("the demo bridge failed on purpose")

        return group

    def service(self, ctx):
        if ctx.settings["enabled"] != "on":
            return None
        return DemoService(ctx.settings["greeting"])

    def status(self, ctx) -> dict:
        return {"enabled": ctx.settings["enabled"] == "on"}


class CrashingService:
    name = "bridge:crashing"

    async def run(self, node, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep(0.2)
        raise RuntimeError("boom")


class CrashingBridge(Bridge):
    name = "crashing"
    description = "A bridge whose service crashes."

    def service(self, ctx):
        return CrashingService()
