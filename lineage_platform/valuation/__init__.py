"""Valuation: how much each contributor's data is worth to a model, with its uncertainty.

    result = contributor_knn_values(parts, X_val, y_val, k=5)        # default, identity-free
    kept = near_dedup_parts(parts, reference=X_val)   # copies and near-copies credited once
    result = permutation_shapley(game, seed=7, until=StderrBelow(0.01) | MaxSamples(5000))
    result = get_method("banzhaf").run(ValuationTask(parts, X_val, y_val, make_model=factory))

Pure core: NumPy, scikit-learn and joblib only. One algorithm per module; registry.py lists the
methods by their signed names. Names load on first use, so `lineage` (which lists the methods in
its help) starts without importing NumPy.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lineage_platform.valuation.accumulator import RunningMean
    from lineage_platform.valuation.dedup import (
        Deduplicated,
        dedup_parts,
        near_dedup_parts,
        row_hashes,
    )
    from lineage_platform.valuation.exact import DEFAULT_MAX_PLAYERS, exact_shapley
    from lineage_platform.valuation.game import Coalition, Game, Utility
    from lineage_platform.valuation.knn import knn_shapley
    from lineage_platform.valuation.msr_banzhaf import banzhaf
    from lineage_platform.valuation.permutation import RelativeTruncation, permutation_shapley
    from lineage_platform.valuation.registry import (
        METHODS,
        Players,
        ValuationMethod,
        get_method,
        known_names,
    )
    from lineage_platform.valuation.result import (
        Discount,
        NearCopyRule,
        ValuationResult,
        clip,
        shares_of,
    )
    from lineage_platform.valuation.rows import contributor_knn_values
    from lineage_platform.valuation.stopping import (
        AllOf,
        AnyOf,
        MaxSamples,
        MaxTime,
        Progress,
        RankStable,
        StderrBelow,
        StoppingRule,
    )
    from lineage_platform.valuation.task import ValuationTask
    from lineage_platform.valuation.utility import (
        Classifier,
        ModelUtility,
        Score,
        as_score,
        classifier_utility,
        contributor_game,
    )

_MODULE_OF = {
    "RunningMean": "accumulator",
    "Deduplicated": "dedup",
    "dedup_parts": "dedup",
    "near_dedup_parts": "dedup",
    "row_hashes": "dedup",
    "DEFAULT_MAX_PLAYERS": "exact",
    "exact_shapley": "exact",
    "Coalition": "game",
    "Game": "game",
    "Utility": "game",
    "knn_shapley": "knn",
    "banzhaf": "msr_banzhaf",
    "RelativeTruncation": "permutation",
    "permutation_shapley": "permutation",
    "METHODS": "registry",
    "Players": "registry",
    "ValuationMethod": "registry",
    "get_method": "registry",
    "known_names": "registry",
    "Discount": "result",
    "NearCopyRule": "result",
    "ValuationResult": "result",
    "clip": "result",
    "shares_of": "result",
    "contributor_knn_values": "rows",
    "AllOf": "stopping",
    "AnyOf": "stopping",
    "MaxSamples": "stopping",
    "MaxTime": "stopping",
    "Progress": "stopping",
    "RankStable": "stopping",
    "StderrBelow": "stopping",
    "StoppingRule": "stopping",
    "ValuationTask": "task",
    "Classifier": "utility",
    "ModelUtility": "utility",
    "Score": "utility",
    "as_score": "utility",
    "classifier_utility": "utility",
    "contributor_game": "utility",
}

__all__ = [
    "DEFAULT_MAX_PLAYERS",
    "METHODS",
    "AllOf",
    "AnyOf",
    "Classifier",
    "Coalition",
    "Deduplicated",
    "Discount",
    "Game",
    "MaxSamples",
    "MaxTime",
    "ModelUtility",
    "NearCopyRule",
    "Players",
    "Progress",
    "RankStable",
    "RelativeTruncation",
    "RunningMean",
    "Score",
    "StderrBelow",
    "StoppingRule",
    "Utility",
    "ValuationMethod",
    "ValuationResult",
    "ValuationTask",
    "as_score",
    "banzhaf",
    "classifier_utility",
    "clip",
    "contributor_game",
    "contributor_knn_values",
    "dedup_parts",
    "exact_shapley",
    "get_method",
    "knn_shapley",
    "known_names",
    "near_dedup_parts",
    "permutation_shapley",
    "row_hashes",
    "shares_of",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULE_OF))
