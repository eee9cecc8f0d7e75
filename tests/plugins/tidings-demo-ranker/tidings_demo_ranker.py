"""A third-party ranker as an ordinary Python package: shortest posts first."""

from typing import ClassVar

from tidings.node.ranking import Ranked, Ranker


class Shortest(Ranker):
    name = "shortest"
    description = "Shortest posts first (a demo plugin)."
    defaults: ClassVar[dict[str, float]] = {"bonus": 0.0}

    def rank(self, candidates, context):
        return [
            Ranked(
                entry=c.entry,
                score=context.weights["bonus"] - len(c.text),
                reasons=[f"{len(c.text)} characters: shorter ranks higher"],
            )
            for c in candidates
        ]
