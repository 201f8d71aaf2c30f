"""Value contributors with a registered method by name, the same way for the asset and the CLI.

    result = value_contributors(parts, X_val, y_val, method="knn")   # the settlement default
    result = value_contributors(parts, X_val, y_val, method="exact", make_model=LogisticRegression)
    result = value_contributors(parts, X_val, y_val, method="exact", make_model=Ridge, score="r2")
    efficiency_target(parts, X_val, y_val, result, make_model=LogisticRegression)
    score_details("r2", y_val, "exact")   # what the record signs about the score

The methods, their names and what each needs are in registry.py; this module only builds the
`ValuationTask` and looks the method up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy.typing as npt

from lineage_platform.valuation.dedup import NEAR_FRACTION
from lineage_platform.valuation.registry import get_method
from lineage_platform.valuation.result import ValuationResult
from lineage_platform.valuation.stopping import MaxSamples, StderrBelow
from lineage_platform.valuation.task import ValuationTask
from lineage_platform.valuation.utility import Classifier, Score, ScoreFn, as_score


def value_contributors(
    parts: Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]],
    X_val: npt.ArrayLike,
    y_val: npt.ArrayLike,
    method: str = "knn",
    *,
    seed: int = 7,
    k: int = 5,
    order: Sequence[str] | None = None,
    make_model: Callable[[], Classifier] | None = None,
    max_samples: int = 2000,
    stderr_below: float = 0.002,
    n_jobs: int = 1,
    near_copies: float | None = NEAR_FRACTION,
    score: str | ScoreFn | Score = "accuracy",
) -> ValuationResult:
    """Run the method registered as `method` (a signed name or an alias) on the parts;
    `near_copies` is the row-level method's near-copy fraction (None: exact copies only);
    `score` how the model-based methods score a coalition ("accuracy", "r2", a callable)."""
    chosen = get_method(method)
    task = ValuationTask(parts, X_val, y_val, order=order, seed=seed, k=k, make_model=make_model,
                         until=StderrBelow(stderr_below) | MaxSamples(max_samples), n_jobs=n_jobs,
                         near_copies=near_copies, score=score)
    return chosen.run(task)


def efficiency_target(
    parts: Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]],
    X_val: npt.ArrayLike,
    y_val: npt.ArrayLike,
    result: ValuationResult,
    *,
    k: int = 5,
    make_model: Callable[[], Classifier] | None = None,
    score: str | ScoreFn | Score = "accuracy",
) -> float | None:
    """u(N) − u(∅) of the game `result` was computed on, which its values must sum to; None for
    a method that is not efficient (Banzhaf, truncated Monte Carlo). The method is the one
    `result.method` names in the registry."""
    near = result.near_copies.fraction if result.near_copies is not None else None
    task = ValuationTask(parts, X_val, y_val, order=result.players, k=k, make_model=make_model,
                         near_copies=near, score=score)
    return get_method(result.method).efficiency_target(task)


def score_details(
    score: str | ScoreFn | Score, y_val: npt.ArrayLike, method: str
) -> dict[str, Any]:
    """What a valuation record signs about its score (`details.score`): its name, whether it
    is a classification score and, for a model-based method, u(∅) and the baseline it is
    the score of (R²: 0, always predicting the validation mean)."""
    scoring = as_score(score)
    chosen = get_method(method)
    return scoring.to_details(scoring.empty_value(y_val) if chosen.needs_model else None)
