"""What a registered valuation method runs on: the contributors' parts, a validation split, knobs.

    task = ValuationTask(parts, X_val, y_val, seed=7, make_model=lambda: LogisticRegression())
    get_method("exact").run(task)   # see registry.py

`parts` maps contributor id to (features, labels), in signing order unless `order` says otherwise.
Each method takes from it what it needs: the row-level KNN method `k`, the model-based ones
`make_model` (a factory, so every coalition trains a fresh model) and `score` (how a coalition's
model is scored: "accuracy", "r2" or a callable, see utility.Score), the sampling ones `seed` and
`until`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lineage_platform.errors import ValuationError
from lineage_platform.valuation.dedup import NEAR_FRACTION
from lineage_platform.valuation.game import Game
from lineage_platform.valuation.stopping import MaxSamples, StderrBelow, StoppingRule
from lineage_platform.valuation.utility import (
    Classifier,
    Score,
    ScoreFn,
    as_score,
    contributor_game,
)

#: The stopping rule `lineage value` and the example asset have always used.
DEFAULT_UNTIL: StoppingRule = StderrBelow(0.002) | MaxSamples(2000)


@dataclass(frozen=True, slots=True, eq=False)
class ValuationTask:
    """Inputs shared by every method; validated on construction, arrays checked by the methods."""

    parts: Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]]
    X_val: npt.ArrayLike
    y_val: npt.ArrayLike
    order: Sequence[str] | None = None
    seed: int = 7
    k: int = 5
    make_model: Callable[[], Classifier] | None = None
    until: StoppingRule = DEFAULT_UNTIL
    n_jobs: int = 1
    #: The row-level method's near-copy tolerance (fraction of the median nearest-neighbour
    #: distance, see dedup.near_dedup_parts); None: exact copies only (records signed before).
    near_copies: float | None = NEAR_FRACTION
    #: How a coalition's model is scored (model-based methods); the KNN methods value
    #: classification only and refuse any score but accuracy.
    score: str | ScoreFn | Score = "accuracy"

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer):
            raise ValuationError(f"seed must be an integer, got {self.seed!r}")
        if isinstance(self.k, bool) or not isinstance(self.k, int | np.integer) or self.k < 1:
            raise ValuationError(f"k must be an integer >= 1, got {self.k!r}")
        if not isinstance(self.until, StoppingRule):
            raise ValuationError(f"`until` must be a stopping rule, got {self.until!r}")
        if self.make_model is not None and not callable(self.make_model):
            raise ValuationError("make_model must be a callable that returns a fresh model")
        as_score(self.score)  # an unknown name fails here, before any model is trained

    @property
    def scoring(self) -> Score:
        """The task's score as a `Score` (name, function, classification or regression)."""
        return as_score(self.score)

    def contributor_game(self, *, n_jobs: int | None = None) -> Game:
        """The contributor-level game: u(S) = the validation score of a model trained on S."""
        if self.make_model is None:
            raise ValuationError("a contributor-level game trains a model per coalition: "
                                 "pass make_model")
        return contributor_game(self.parts, self.X_val, self.y_val, self.make_model,
                                order=self.order, score=self.score,
                                n_jobs=self.n_jobs if n_jobs is None else n_jobs)


def contributor_gain(task: ValuationTask) -> float:
    """u(N) − u(∅) of the contributor-level game (two model fits, in this process)."""
    game = task.contributor_game(n_jobs=1)
    return game.value(game.grand) - game.value(frozenset())
