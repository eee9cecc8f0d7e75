"""Ranking on the command line: ``tidings rankers``, and ``ranked_timeline`` for ``tidings timeline``.

``ranked_timeline`` is what ``tidings timeline --ranker NAME --weight k=v --explain --explain-hidden``
calls (spec/ranking.md): it turns ranking errors into CLI errors (a bad ``--weight`` or an unknown
ranker is a usage error, exit 2; a config or plugin failure exit 1). ``ranking_options`` adds those
options to a click command.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .common import CliError, Session, common_options, emit, json_option, pass_session

if TYPE_CHECKING:
    from tidings.node.ranking.registry import Registry
    from tidings.storage.store import Store

__all__ = ["COMMANDS", "ranked_timeline", "rankers", "ranking_options"]

F = TypeVar("F", bound=Callable[..., Any])

_USAGE = {"unknown_ranker", "unknown_weight", "bad_weight", "needs_swarm"}


def _cli_error(exc: Exception) -> click.ClickException:
    code = getattr(exc, "code", "ranking")
    if code in _USAGE:
        return click.UsageError(str(exc))
    return CliError(str(exc), code=code)


def ranked_timeline(
    store: Store,
    me: bytes,
    *,
    ranker: str = "chronological",
    weights: Sequence[str] | Mapping[str, float] = (),
    limit: int = 50,
    explain: bool = False,
    explain_hidden: bool = False,
    now: int | None = None,
    config: Mapping[str, Any] | None = None,
    swarm_members: Collection[bytes] | None = None,
    registry: Registry | None = None,
) -> list[dict[str, Any]]:
    """The ranked timeline as spec/cli.md JSON dicts: ``id, feed, seq, ts, type, content, score`` (+ ``why``).

    ``weights``: the raw ``--weight NAME=VALUE`` strings, or a mapping; they override config.toml's
    ``[rankers.NAME]`` (``config`` is ``Home.config()``), which overrides the ranker's defaults.
    ``now`` (ms; default the clock) fixes the time, so the same store, config and ``now`` give the
    same output. ``swarm_members``: the swarm's member feeds, for ``--ranker swarm``. With
    ``explain_hidden``, filtered entries follow with ``"hidden": true`` and their reasons in ``why``.
    Errors come out as click exceptions (usage errors exit 2).
    """
    from tidings.node.ranking import RankingError, parse_weights
    from tidings.node.ranking.timeline import rank_timeline
    from tidings.storage.clock import wall_ms

    try:
        overrides = dict(weights) if isinstance(weights, Mapping) else parse_weights(weights)
        return rank_timeline(
            store,
            me,
            ranker=ranker,
            weights=overrides,
            limit=limit,
            explain=explain,
            explain_hidden=explain_hidden,
            now=wall_ms() if now is None else now,
            config=config,
            swarm_members=swarm_members,
            registry=registry,
        )
    except RankingError as exc:
        raise _cli_error(exc) from None


def ranking_options(fn: F) -> F:
    """``--ranker``, ``--weight`` (repeatable), ``--explain``, ``--explain-hidden``."""
    fn = click.option("--explain-hidden", is_flag=True, help="Also list the entries filters hid, and why.")(
        fn
    )
    fn = click.option("--explain", is_flag=True, help="Say why each entry is shown.")(fn)
    fn = click.option(
        "--weight",
        "weights",
        metavar="NAME=VALUE",
        multiple=True,
        help="Set one of the ranker's weights (repeatable; see spec/ranking.md).",
    )(fn)
    fn = click.option(
        "--ranker", default="chronological", show_default=True, help="How to order (see: tidings rankers)."
    )(fn)
    return fn


def _warn_problems(registry: Registry) -> None:
    for problem in registry.problems:
        click.echo(f"warning: {problem}", err=True)


@click.command()
@common_options
@json_option
@pass_session
def rankers(session: Session, as_json: bool) -> None:
    """The rankers available here: built-in and installed plugins."""
    from tidings.node.ranking.registry import load_rankers

    registry = load_rankers()
    _warn_problems(registry)
    for item in registry.describe():
        if as_json:
            emit(item)
        else:
            origin = registry.origins[item["name"]]
            tag = "" if origin == "built-in" else f"  [{origin}]"
            click.echo(f"{item['name']:<14} {item['description']}{tag}")


COMMANDS = [rankers]
