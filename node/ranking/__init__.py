"""Local ranking: the ranker interface, the built-in rankers, filters and the timeline pipeline.

The public API for ranker plugins is ``Ranker``, ``Ranked``, ``Candidate`` and ``RankContext``
(spec/ranking.md §1); ``load_rankers`` and ``rank_timeline`` are what the CLI and web API use.
"""

from tidings.node.ranking.base import Candidate, RankContext, Ranked, Ranker, RankingError
from tidings.node.ranking.registry import (
    ENTRY_POINT_GROUP,
    PluginProblem,
    Registry,
    load_rankers,
    parse_weights,
    resolve_weights,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "Candidate",
    "PluginProblem",
    "RankContext",
    "Ranked",
    "Ranker",
    "RankingError",
    "Registry",
    "load_rankers",
    "parse_weights",
    "resolve_weights",
]
