"""Pick a valuation method by name, the same way for the Dagster asset and `lineage value`.

    result = value_contributors(parts, X_val, y_val, method="knn")   # the settlement default
    result = value_contributors(parts, X_val, y_val, method="exact", make_model=LogisticRegression)

"knn" values rows (identity-independent, the default settlement pays on); "exact",
"permutation" and "banzhaf" value contributors as players: an explicit choice, since splitting
into several identities raises a contributor's total under them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from lineage_platform.errors import ValuationError
from lineage_platform.valuation.banzhaf import banzhaf
from lineage_platform.valuation.dedup import dedup_parts
from lineage_platform.valuation.exact import exact_shapley
from lineage_platform.valuation.game import Game
from lineage_platform.valuation.permutation import permutation_shapley
from lineage_platform.valuation.result import ValuationResult
from lineage_platform.valuation.rows import contributor_knn_values
from lineage_platform.valuation.stopping import MaxSamples, StderrBelow
from lineage_platform.valuation.utility import Classifier, contributor_game

METHODS = ("knn", "exact", "permutation", "banzhaf")


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
) -> ValuationResult:
    if method == "knn":
        return contributor_knn_values(parts, X_val, y_val, k, order=order, n_jobs=n_jobs)
    if method not in METHODS:
        raise ValuationError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if make_model is None:
        raise ValuationError(f"method {method!r} trains a model per coalition: pass make_model")
    game: Game = contributor_game(parts, X_val, y_val, make_model, order=order, n_jobs=n_jobs)
    until = StderrBelow(stderr_below) | MaxSamples(max_samples)
    if method == "exact":
        return exact_shapley(game)
    if method == "permutation":
        return permutation_shapley(game, seed, until)
    return banzhaf(game, seed, until)


def efficiency_target(
    parts: Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]],
    X_val: npt.ArrayLike,
    y_val: npt.ArrayLike,
    result: ValuationResult,
    *,
    k: int = 5,
    make_model: Callable[[], Classifier] | None = None,
) -> float | None:
    """u(N) − u(∅) for the game `result` was computed on (None where efficiency does not apply).

    For the row-level KNN game u(N) is computed directly (share of correct labels among each
    validation row's k nearest distinct rows), not from the recursion, so the comparison checks it.
    """
    if result.method.startswith("banzhaf"):
        return None
    names = list(result.players)
    if result.method.startswith("knn"):
        deduped = dedup_parts(parts, names)
        x = np.concatenate([np.asarray(deduped.parts[n][0], dtype=np.float64) for n in names])
        y = np.concatenate([np.asarray(deduped.parts[n][1]) for n in names])
        hashes = np.array([h for n in names for h in deduped.hashes[n]])
        order = np.argsort(hashes, kind="stable")
        x, y = x[order], y[order]
        xv, yv = np.asarray(X_val, dtype=np.float64), np.asarray(y_val)
        kk = min(k, len(y))
        total = 0.0
        for start in range(0, len(yv), 256):
            d = ((xv[start : start + 256, None, :] - x[None, :, :]) ** 2).sum(axis=2)
            nearest = np.argsort(d, axis=1, kind="stable")[:, :kk]
            total += float((y[nearest] == yv[start : start + 256, None]).sum()) / k
        return total / len(yv)
    if make_model is None:
        raise ValuationError("efficiency of a model-based game needs make_model")
    game = contributor_game(parts, X_val, y_val, make_model, order=names)
    return game.value(frozenset(names)) - game.value(frozenset())
