"""``tidings demo``: watch a swarm of real nodes on loopback spread posts (node/lab/demo.py does the work)."""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Any

import click

from .common import CliError, Session, emit, json_option

if TYPE_CHECKING:
    from tidings.node.lab.demo import Snapshot, Summary

__all__ = ["COMMANDS", "demo"]


@click.command()
@click.option(
    "--nodes",
    "n",
    type=click.IntRange(2, 50),
    default=6,
    show_default=True,
    help="How many nodes to run (2 to 50).",
)
@click.option(
    "--seconds",
    type=click.FloatRange(0, 3600),
    default=30.0,
    show_default=True,
    help="How long the nodes post (start-up and a drain of at most 5 s come on top).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@json_option
def demo(n: int, seconds: float, debug: bool, as_json: bool) -> None:
    """Run N real nodes on loopback in one process and watch posts spread.

    Each node gets a temporary home (removed at the end) and its own 127.x address; the first node is
    the DHT bootstrap of the others, all join swarm "demo", and each follows one or two others. About
    every 0.5 s a random node posts. A table shows, per node, the posts it holds out of all posted so
    far and its connected peers. After the posting time (or Ctrl-C) the demo waits up to 5 s for the
    last posts to arrive, stops every node, removes the homes and prints a summary.

    Delivered ratio: copies of posts held by nodes other than their author, divided by
    posts x (N - 1); 1.0 means every node holds every post.

    Without a terminal, or with --json, it prints a JSON line a second
    {"t", "dir", "phase", "nodes": [{"node", "held", "peers"}], "posted"} and finally
    {"nodes", "posted", "delivered_ratio", "seconds"}. TIDINGS_DEMO_DIR sets where the temporary
    folder is made.
    """
    import trio

    session = click.get_current_context().find_object(Session)
    debug = debug or (session is not None and session.debug)
    live = sys.stdout.isatty() and not as_json
    logging.basicConfig(  # the nodes' warnings would tear the live table; errors still show
        level=logging.DEBUG if debug else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    parent = os.environ.get("TIDINGS_DEMO_DIR") or None
    if parent is not None and not os.path.isdir(parent):
        raise CliError(f"TIDINGS_DEMO_DIR {parent} is not a folder", code="bad_dir")
    try:
        summary = _run_live(n, seconds) if live else trio.run(_main, n, seconds, _print_line, 1.0)
    except CliError:
        raise
    except BaseException as exc:
        if debug or isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise CliError(_describe(exc), code="demo_failed") from None
    if summary is None:
        raise CliError("interrupted twice: stopped at once (temporary homes removed)", code="interrupted")
    if as_json or not live:
        emit(summary.as_dict())
        return
    stopped = " (stopped early)" if summary.interrupted else ""
    click.echo(
        f"{summary.nodes} nodes, {summary.posted} posts in {summary.seconds:.1f} s{stopped}: "
        f"delivered {summary.delivered_ratio:.1%} ({summary.delivered} of {summary.expected} copies); "
        "temporary homes removed"
    )


async def _main(n: int, seconds: float, on_tick: Any, tick: float) -> Summary | None:
    """Run the demo; the first SIGINT/SIGTERM ends it early (cleanly), a second one at once."""
    import signal

    import trio
    from tidings.node.lab.demo import run_demo

    stop = trio.Event()
    parent = os.environ.get("TIDINGS_DEMO_DIR") or None
    result: list[Summary] = []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for _ in signals:
                    if stop.is_set():
                        nursery.cancel_scope.cancel()  # the homes are still removed on the way out
                        return
                    stop.set()

            nursery.start_soon(watch)
            result.append(await run_demo(n, seconds, on_tick, tick=tick, stop=stop, parent=parent))
            nursery.cancel_scope.cancel()
    return result[0] if result else None


def _print_line(snap: Snapshot) -> None:
    if snap.phase == "done":
        return  # the summary follows
    emit(
        {
            "t": round(snap.t, 1),
            "dir": snap.dir,
            "phase": snap.phase,
            "nodes": [{"node": r.node, "held": r.held, "peers": r.peers} for r in snap.nodes],
            "posted": snap.posted,
        }
    )


def _run_live(n: int, seconds: float) -> Summary | None:
    import trio
    from rich.console import Console
    from rich.live import Live

    console = Console()
    with Live(console=console, auto_refresh=False, transient=False) as live:

        def show(snap: Snapshot) -> None:
            live.update(_table(snap), refresh=True)

        return trio.run(_main, n, seconds, show, 0.25)


def _table(snap: Snapshot) -> Any:
    from rich.table import Table

    caption = {
        "setup": "creating homes",
        "starting": "starting nodes and finding each other",
        "posting": "posting (Ctrl-C stops)",
        "draining": "waiting for the last posts",
        "done": "all nodes stopped",
    }.get(snap.phase, snap.phase)
    table = Table(
        title=f'tidings demo: {len(snap.nodes)} nodes in swarm "demo", {snap.t:.0f} s',
        caption=f"{snap.posted} posted, {snap.delivered_ratio:.0%} delivered; {caption}",
    )
    table.add_column("node", justify="right")
    table.add_column("name")
    table.add_column("posts held / posted", justify="right")
    table.add_column("peers", justify="right")
    for row in snap.nodes:
        style = "green" if snap.posted and row.held >= snap.posted else None
        table.add_row(str(row.node), row.name, f"{row.held} / {snap.posted}", str(row.peers), style=style)
    return table


def _describe(exc: BaseException) -> str:
    """One line for an error of the demo (exception groups from the nursery included)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, OSError):
        return f"demo failed: {exc.strerror or exc}"
    return f"demo failed: {type(exc).__name__}: {exc}"


COMMANDS = [demo]
