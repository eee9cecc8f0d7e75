"""Network commands: ``run``, ``sync``, ``status`` (spec/cli.md, *Network*)."""

from __future__ import annotations

import hashlib
import logging
import sys
from typing import TYPE_CHECKING, Any

import click

from .common import CliError, Session, common_options, emit, emit_lines, json_option, pass_session, run_trio

if TYPE_CHECKING:
    from tidings.node.home import Home
    from tidings.node.net.node import Node

__all__ = ["COMMANDS"]


def network_key(text: str | None) -> bytes | None:
    """A network key: 64 hex characters as is, any other text hashed to 32 bytes (spec §11.3)."""
    if not text:
        return None
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        return bytes.fromhex(text)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=32, person=b"tidings-netkey").digest()


class AddressType(click.ParamType):
    """``HOST:PORT`` (or ``off`` where allowed): a malformed address is a usage error that names the
    option or argument it was given to (``Invalid value for '--listen': ...``)."""

    name = "HOST:PORT"

    def __init__(self, *, allow_off: bool = False) -> None:
        self.allow_off = allow_off

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from tidings.node.addresses import parse_address

        text = str(value).strip()
        if self.allow_off and text.lower() == "off":
            return "off"
        try:
            parse_address(text)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return text


ADDRESS = AddressType()


@click.command()
@common_options
@click.option(
    "--listen",
    type=ADDRESS,
    default="0.0.0.0:7433",
    show_default=True,
    help="TCP address to listen on (port 0 picks one).",
)
@click.option(
    "--peer", "peers", multiple=True, type=ADDRESS, help="A peer to keep connected to (repeatable)."
)
@click.option(
    "--bootstrap",
    "bootstrap",
    multiple=True,
    type=ADDRESS,
    help="A DHT node to join through (repeatable; also 'bootstrap' in config.toml).",
)
@click.option("--swarm", "swarms", multiple=True, metavar="NAME", help="Join this swarm (repeatable).")
@click.option("--network-key", metavar="KEY", help="Private network: only nodes with the same key can talk.")
@click.option("--hops", type=click.IntRange(0, 4), default=None, help="Follow hops to replicate (default 2).")
@click.option(
    "--http",
    type=AddressType(allow_off=True),
    default="127.0.0.1:7434",
    show_default=True,
    metavar="HOST:PORT|off",
    help="Serve the local web page and API here ('off' for none).",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@pass_session
def run(
    session: Session,
    listen: str,
    peers: tuple[str, ...],
    bootstrap: tuple[str, ...],
    swarms: tuple[str, ...],
    network_key: str | None,
    hops: int | None,
    http: str,
    verbose: int,
) -> None:
    """Run the node in the foreground until Ctrl-C or SIGTERM."""
    import signal

    import trio
    from tidings.node.addresses import format_address
    from tidings.node.blob_keeper import BlobKeeper
    from tidings.node.bridges.supervisor import BridgeSupervisor
    from tidings.node.net.node import Node
    from tidings.node.web import web_services
    from tidings.storage.dht import check_swarm_name

    http_address = None if http == "off" else http
    for name in swarms:
        try:
            check_swarm_name(name)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--swarm") from None
    logging.basicConfig(
        level=logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    home = session.home
    running = home.running_node()
    if running is not None:
        raise CliError(
            f"a node already runs on {home.path} (pid {running.get('pid')}, listening on {running.get('listen')})",
            code="running",
        )
    config = _checked_config(home)  # every table, before anything is created or started
    if not home.exists():
        key = home.init()
        click.echo(f"created identity {key.feed} in {home.path}", err=True)
    store = session.store()
    key = session.key()
    store.close()
    session.close()
    if http_address is not None:
        from tidings.node.web.auth import load_token

        load_token(home.path)  # a token file others may read stops the node here, not the page later
    limits: dict[str, Any] = dict(config.get("limits", {}))
    if hops is not None:
        limits["hops"] = hops
    configured = config.get("bootstrap", [])
    node = Node(
        home,
        key,
        listen=listen,
        peers=list(peers),
        network_key=_netkey(network_key),
        limits=limits,
        bootstrap=list(dict.fromkeys([*bootstrap, *configured])),
        swarms=list(swarms),
        services=[*web_services(home, http_address), BridgeSupervisor(home), BlobKeeper(home)],
        relay=bool(config.get("relay", True)),  # spec/protocol.md §12.10; checked by node/config.py
    )

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                address = await nursery.start(node.run)
                # the first line, exactly: scripts read it
                click.echo(f"listening on {format_address(address)}")
                web = _web_page(node)
                if web is not None:
                    click.echo(f"web page on {web}: 'tidings open' opens it in your browser")
                sys.stdout.flush()
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    try:
        trio.run(main)
    except BaseExceptionGroup as group:
        found = _first(group, OSError)
        if found is None:
            raise
        raise CliError(f"cannot listen on {listen}: {found.strerror or found}", code="listen") from None
    except OSError as exc:
        raise CliError(f"cannot listen on {listen}: {exc.strerror or exc}", code="listen") from None


def _web_page(node: Node) -> str | None:
    """The URL the web service serves, once started (None with ``--http off``, or when it could not
    bind: its log line on stderr says which address and what to do)."""
    for runner in node.services:
        if runner.name == "web":
            url = runner.state().get("url")
            return url if isinstance(url, str) else None
    return None


def _checked_config(home: Home) -> dict[str, Any]:
    """config.toml with every table checked, the ``[rankers.NAME]`` weights against the installed
    rankers too (node/config.py); one ``bad_config`` line naming the file and key otherwise."""
    from tidings.node.config import ConfigError, check_rankers

    config: dict[str, Any] = home.config()
    try:
        check_rankers(config, home.config_path)
    except ConfigError as exc:
        raise CliError(str(exc), code=exc.code) from None
    return config


def _first(group: BaseExceptionGroup[Any], kind: type[OSError]) -> OSError | None:
    """The first ``kind`` inside a (nested) exception group."""
    for exc in group.exceptions:
        if isinstance(exc, kind):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            inner = _first(exc, kind)
            if inner is not None:
                return inner
    return None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _netkey(text: str | None) -> bytes | None:
    return network_key(text)


@click.command()
@common_options
@click.argument("address", metavar="HOST:PORT", type=ADDRESS)
@click.option("--network-key", metavar="KEY", help="Key of a private network.")
@click.option(
    "--timeout", type=float, default=300.0, show_default=True, help="Give up after this many seconds."
)
@json_option
@pass_session
def sync(session: Session, address: str, network_key: str | None, timeout: float, as_json: bool) -> None:
    """Connect once to a peer, replicate both ways until both are caught up, then exit."""
    import trio
    from tidings.node.net.node import Node
    from tidings.protocol import feed_id_text

    home = session.home
    session.store()  # errors for a missing home come out clean
    key = session.key()
    session.close()
    limits = dict(home.config().get("limits", {}))
    node = Node(home, key, listen="0.0.0.0:0", network_key=_netkey(network_key), limits=limits)
    show = sys.stderr.isatty() and not as_json

    async def main() -> Any:
        with trio.fail_after(timeout):
            if not show:
                return await node.sync_once(address)
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
            )
            with Progress(*columns, transient=True) as progress:
                task = progress.add_task(f"syncing with {address}", total=None)
                async with trio.open_nursery() as nursery:

                    async def ticker() -> None:
                        # the peer announces what it holds first (version 2), so the bar has a total;
                        # with a version-1 peer it only counts
                        while True:
                            conn = node.syncing
                            if conn is not None:
                                total = conn.expected_in
                                received = conn.received
                                progress.update(
                                    task,
                                    completed=received,
                                    total=None if total is None else max(total, received),
                                    description=f"syncing with {address} (sent {conn.sent})",
                                )
                            await trio.sleep(0.1)

                    nursery.start_soon(ticker)
                    conn = await node.sync_once(address)
                    nursery.cancel_scope.cancel()
                return conn

    try:
        conn = run_trio(main)
    except trio.TooSlowError:
        raise CliError(f"sync with {address} did not finish in {timeout:g} s", code="timeout") from None
    except OSError as exc:
        raise CliError(f"cannot reach {address}: {exc.strerror or exc}", code="unreachable") from None
    except Exception as exc:
        from tidings.node.net.peer import describe_error

        code, reason = describe_error(exc)
        started = node.syncing
        if code in ("closed", "handshake", "handshake_timeout") and (
            started is None or started.rep.their_state == "HELLO"
        ):
            # spec §11.3: with another network key one side cannot read the other's handshake
            # messages and hangs up (before or right after the last one), so all the other side
            # sees is a closed connection before the peer's hello
            raise CliError(
                f"sync with {address} failed: the handshake failed ({reason}); the usual cause is "
                "a network key (--network-key) that differs from the peer's; a peer also refuses "
                "an address for a while after such a failure",
                code="handshake",
            ) from None
        raise CliError(f"sync with {address} failed: {reason}", code=code) from None
    summary = {"received": conn.received, "sent": conn.sent, "peer": feed_id_text(conn.feed)}
    if as_json:
        emit(summary)
    else:
        click.echo(f"received {conn.received}, sent {conn.sent} entries with {summary['peer']}")


@click.command()
@common_options
@json_option
@pass_session
def status(session: Session, as_json: bool) -> None:
    """Whether the node runs, where it listens, and what the store holds."""
    from tidings.node.addresses import format_address
    from tidings.protocol import feed_id_text
    from tidings.storage import blob_wants
    from tidings.storage.blob_upkeep import blob_usage

    from .commands_blob import size_text

    store = session.store()
    info = session.home.running_node()
    stats = store.stats()
    quota = int(session.home.limit("blob_quota"))
    out = {
        "running": info is not None,
        "listen": format_address(info["listen"]) if info and info.get("listen") else None,
        "feed": feed_id_text(session.me()),
        "peers": len(info.get("peers", [])) if info else 0,
        "feeds": stats["feeds"],
        "entries": stats["entries"],
        "services": info.get("services", {}) if info else {},
        "counters": info.get("counters", {}) if info else {},
        # spec §12.9: whether others can dial the node, and where they see it (only while it runs)
        "reachability": info.get("reachability", "unknown") if info else None,
        "observed": info.get("observed") if info else None,
        # spec/cli.md: what the blobs take, and how much of it gc may evict (others' blobs)
        "blobs": {
            **blob_usage(session.home.open_blobs(store), store, session.me(), quota),
            "wanted": len(blob_wants.wants(store)),  # spec/protocol.md §12.12
        },
    }
    if as_json:
        emit(out)
        return
    state = f"running, listening on {out['listen']}" if out["running"] else "not running"
    click.echo(
        f"node:    {state}\nfeed:    {out['feed']}\nstore:   {out['feeds']} feeds, {out['entries']} entries"
    )
    used = out["blobs"]
    click.echo(
        f"blobs:   {_count(used['count'], 'blob')}, {size_text(used['bytes'])} of a quota of "
        f"{size_text(used['quota'])} (kept: {used['kept']}, {size_text(used['kept_bytes'])}; "
        f"others': {used['others']}, {size_text(used['others_bytes'])})"
        + (f"; {used['wanted']} wanted from peers" if used["wanted"] else "")
    )
    counted = out["counters"]
    if counted.get("blob_downloads") or counted.get("blob_fetched"):
        click.echo(
            f"fetching: {_count(counted.get('blob_downloads', 0), 'blob')} now, "
            f"{counted.get('blob_fetched', 0)} fetched and {counted.get('blob_failures', 0)} failed tries since start"
        )
    if out["reachability"] is not None:
        seen = f" (peers see {out['observed']})" if out["observed"] else ""
        click.echo(f"reachability: {out['reachability']}{seen}")
    counters = out["counters"]
    if counters:
        click.echo(
            f"gossip:  {_count(counters.get('connections', 0), 'connection')}, "
            f"{_count(counters.get('wanted', 0), 'feed')} wanted, "
            f"{counters.get('ingested', 0)} entries received and {counters.get('sent_entries', 0)} sent since start"
        )
    for name, svc in sorted(out["services"].items()):
        detail = svc.get("error") or ", ".join(
            f"{k}={v}" for k, v in svc.items() if k != "state" and not isinstance(v, (dict, list))
        )
        click.echo(f"service: {name}: {svc.get('state', '?')}{' (' + detail + ')' if detail else ''}")


@click.command()
@common_options
@json_option
@pass_session
def peers(session: Session, as_json: bool) -> None:
    """Peers this node has met: addresses, when last seen, whether connected now."""
    import datetime

    from tidings.storage.peers import list_peers

    store = session.store()
    rows = list_peers(store)
    running = session.home.running_node()
    if running is None:
        for row in rows:
            row["connected"] = False  # a node that crashed cannot have cleared it
    else:  # how each connected peer is reached, from node.json (spec/protocol.md §12.10)
        paths = {p["feed"]: p for p in running.get("peers", []) if isinstance(p, dict) and "feed" in p}
        for row in rows:
            path = paths.get(row["feed"])
            if row["connected"] and path is not None:
                row["path"] = path.get("path", "direct")
                if row["path"] == "relayed":
                    row["relay"] = path.get("relay")
    if as_json:
        emit_lines(rows)
        return
    if not rows:
        click.echo("no peers yet: run 'tidings run --peer HOST:PORT' or 'tidings sync HOST:PORT'")
        return
    for row in rows:
        seen = datetime.datetime.fromtimestamp(row["last_seen"] / 1000).strftime("%Y-%m-%d %H:%M")
        state = "connected" if row["connected"] else f"last seen {seen}"
        if row.get("path") == "relayed":
            state += f", relayed via {row.get('relay')}"
        where = ", ".join(row["addresses"]) or "(inbound only)"
        click.echo(f"{row['feed']}  {where}  {state}  via {row['source']}")


@click.group()
def swarm() -> None:
    """Community swarms: join by name, and replicate the other members' feeds (found through the DHT)."""


@swarm.command("join")
@click.argument("name")
@common_options
@json_option
@pass_session
def swarm_join(session: Session, name: str, as_json: bool) -> None:
    """Join the swarm NAME (a running node announces us and finds the other members)."""
    from tidings.storage import dht
    from tidings.storage.clock import wall_ms

    try:
        dht.check_swarm_name(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    joined = dht.join_swarm(session.store(), name, wall_ms())
    if as_json:
        emit({"swarm": name, "joined": joined})
    else:
        click.echo(f"joined swarm {name}" if joined else f"already in swarm {name}")


@swarm.command("leave")
@click.argument("name")
@common_options
@json_option
@pass_session
def swarm_leave(session: Session, name: str, as_json: bool) -> None:
    """Leave the swarm NAME (its members' feeds are no longer replicated unless you follow them)."""
    from tidings.storage import dht

    left = dht.leave_swarm(session.store(), name)
    if as_json:
        emit({"swarm": name, "left": left})
    elif not left:
        raise CliError(f"not in swarm {name}", code="not_found")
    else:
        click.echo(f"left swarm {name}")


@swarm.command("list")
@common_options
@json_option
@pass_session
def swarm_list(session: Session, as_json: bool) -> None:
    """Swarms joined: name, when joined, members found so far."""
    from tidings.storage import dht

    rows = dht.list_swarms(session.store())
    if as_json:
        emit_lines(rows)
    elif not rows:
        click.echo("no swarms: join one with 'tidings swarm join NAME'")
    else:
        for row in rows:
            click.echo(f"{row['name']}  {row['members']} members found")


COMMANDS = [run, sync, status, peers, swarm]
