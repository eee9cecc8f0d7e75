"""``tidings bridge ...``: bridges to other networks (spec §14, spec/cli.md *Plugins*).

``bridge list`` and ``bridge config`` are built in; every other sub-command is a bridge's own group
(``tidings bridge atom export``, ``tidings bridge rss follow URL``, ...), loaded from the
``tidings.bridges`` entry points only when asked for. The bridges shipped with Tidings keep their
groups here in ``cli/`` (``commands_bridge_atom``, ``_rss``, ``_nostr``: ``node/`` never imports the
CLI), mounted by bridge type; a plugin's group comes from its ``Bridge.command()``. A plugin that fails to load is reported, not
raised; a bridge's own error is one ``error:`` line like any other command's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from .common import CliError, Session, common_options, emit, emit_lines, json_option, pass_session

if TYPE_CHECKING:
    from tidings.node.bridges import Bridge, Registry

__all__ = ["COMMANDS"]

_BUILTIN = ("list", "config")


def _registry() -> Registry:
    from tidings.node.bridges import load_bridges

    ctx = click.get_current_context()
    root = ctx.find_root()
    cached = root.meta.get("tidings.bridges")
    if cached is None:
        cached = root.meta["tidings.bridges"] = load_bridges()
    return cached  # type: ignore[no-any-return]


def _builtin_command(bridge: Bridge) -> click.Group | None:
    """The group of a bridge shipped with Tidings (by its type, so a plugin that takes one of their
    names does not get their commands), or None."""
    from tidings.node.bridges.atom import AtomBridge
    from tidings.node.bridges.nostr import NostrBridge
    from tidings.node.bridges.rss import RssBridge

    from .commands_bridge_atom import atom_group
    from .commands_bridge_nostr import nostr_group
    from .commands_bridge_rss import rss_group

    groups: dict[type[Bridge], click.Group] = {
        AtomBridge: atom_group,
        NostrBridge: nostr_group,
        RssBridge: rss_group,
    }
    return groups.get(type(bridge))


class BridgeGroup(click.Group):
    """Built-in sub-commands plus one group per installed bridge; bridge errors become one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*_BUILTIN, *sorted(_registry().bridges)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is not None:
            return found
        from tidings.node.bridges import BridgeError

        try:
            bridge = _registry().get(cmd_name)
        except BridgeError as exc:
            if exc.code == "bridge_unavailable":
                raise CliError(str(exc), code=exc.code) from None
            return None
        try:
            command = _builtin_command(bridge) or bridge.command()
        except Exception as exc:
            raise CliError(
                f"the {cmd_name} bridge has no usable commands: {type(exc).__name__}: {exc}",
                code="bridge_failed",
            ) from None
        if command is None:
            raise CliError(f"the {cmd_name} bridge has no commands", code="no_commands")
        command.name = cmd_name
        return command

    def invoke(self, ctx: click.Context) -> Any:
        from tidings.node.bridges import BridgeError

        try:
            return super().invoke(ctx)
        except BridgeError as exc:
            raise CliError(str(exc), code=exc.code) from None
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            name = ctx.invoked_subcommand
            session = ctx.find_object(Session)
            if name in _BUILTIN or (session is not None and session.debug):
                raise
            raise CliError(
                f"the {name} bridge failed: {type(exc).__name__}: {exc} (rerun with --debug for details)",
                code="bridge_failed",
            ) from None


@click.group("bridge", cls=BridgeGroup)
def bridge() -> None:
    """Bridges to other networks: Atom out, RSS/Atom in, Nostr both ways, and plugins."""


@bridge.command("list")
@common_options
@json_option
@pass_session
def bridge_list(session: Session, as_json: bool) -> None:
    """Installed bridges, their settings and sources (last poll, errors), and plugins that failed."""
    registry = _registry()
    store = session.store()
    rows: list[dict[str, Any]] = []
    for name, b in sorted(registry.bridges.items()):
        row: dict[str, Any] = {
            "name": name,
            "description": b.description,
            "origin": registry.origins[name],
            "ok": True,
        }
        try:
            ctx = registry.context(b, session.home, store)
            row["settings"] = ctx.settings
            row.update(b.status(ctx))
        except Exception as exc:  # a plugin's broken status() is shown, not raised
            row["ok"] = False
            row["error"] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
    for p in registry.problems:
        rows.append({"name": p.name, "description": "", "origin": p.origin, "ok": False, "error": p.error})
    rows.sort(key=lambda r: r["name"])
    if as_json:
        emit_lines(rows)
        return
    for row in rows:
        if not row["ok"]:
            click.echo(f"{row['name']}: unavailable ({row['origin']}): {row['error']}")
            continue
        click.echo(f"{row['name']}: {row['description']}  [{row['origin']}]")
        settings = row.get("settings") or {}
        if settings:
            click.echo("  settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
        for src in row.get("sources", []):
            state = (
                "error: " + src["error"]
                if src.get("error")
                else "ok"
                if src.get("last_ok")
                else "not polled yet"
            )
            click.echo(f"  {src['kind']} {src['source']}  {state}")


@bridge.command("config")
@click.argument("name")
@click.argument("key", required=False)
@click.argument("value", required=False)
@click.option("--reset", is_flag=True, help="Reset KEY to its default.")
@common_options
@json_option
@pass_session
def bridge_config(
    session: Session, name: str, key: str | None, value: str | None, reset: bool, as_json: bool
) -> None:
    """Show or change a bridge's settings: NAME shows all, NAME KEY one, NAME KEY VALUE sets it."""
    from tidings.storage import bridges as db

    b = _registry().get(name)
    store = session.store()
    if key is not None:
        setting = b.setting(key)
        if reset:
            db.set_setting(store, name, key, None)
        elif value is not None:
            try:
                normal = setting.parse(value)
            except ValueError as exc:
                raise CliError(f"bad value for {name} {key}: {exc}", code="bad_setting") from None
            db.set_setting(store, name, key, normal)
    current = b.settings_of(store)
    shown = current if key is None else {key: current[key]}
    if as_json:
        emit({"bridge": name, "settings": shown})
        return
    for k, v in shown.items():
        click.echo(f"{k} = {v}    # {b.setting(k).help}")


COMMANDS: list[click.Command] = [bridge]
