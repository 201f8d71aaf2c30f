"""The default, identity-independent valuation: KNN-Shapley of rows, summed per contributor.

    result = contributor_knn_values({"alice": (Xa, ya), "bob": (Xb, yb)}, X_val, y_val, k=5)
    result.as_dict()  # {"alice": ..., "bob": ...}

Rows are valued, not identities: each distinct row (by content hash) is credited once, to the
earliest part in signing order, and so is each near-copy (same label, within the signed
`NearCopyRule` tolerance of an earlier row: see dedup.near_dedup_parts); the row-level game is
ordered by content hash (which breaks distance ties), so the same rows get the same values
whoever submitted them and however they are split across identities. Splitting a part into
several identities changes nothing; copying another's rows, exactly or with a little noise,
earns nothing (the copies are discounted); only new rows add value. The validation rows count
as signed before every part, so submitting (near-)copies of them, which would score
themselves, earns nothing either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from lineage_platform.errors import ValuationError
from lineage_platform.valuation.dedup import (
    NEAR_FRACTION,
    Deduplicated,
    dedup_parts,
    near_dedup_parts,
    ordered_names,
)
from lineage_platform.valuation.knn import knn_shapley
from lineage_platform.valuation.result import ValuationResult
from lineage_platform.valuation.task import ValuationTask

METHOD = "knn-shapley-rows"


def run(task: ValuationTask) -> ValuationResult:
    """Row-level KNN-Shapley summed per contributor (the registered method, the default)."""
    return contributor_knn_values(task.parts, task.X_val, task.y_val, task.k, order=task.order,
                                  n_jobs=task.n_jobs, near_copies=task.near_copies)


def contributor_knn_values(
    parts: Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]],
    X_val: npt.ArrayLike,
    y_val: npt.ArrayLike,
    k: int = 5,
    *,
    order: Sequence[str] | None = None,
    n_jobs: int = 1,
    near_copies: float | None = NEAR_FRACTION,
) -> ValuationResult:
    """Per-contributor sums of the row values of `knn_shapley` on the deduplicated rows.

    `parts` maps contributor id to (features, labels) in signing order (or pass `order`).
    `counts` in the result are the rows credited to each contributor; stderr is 0 (exact).
    `near_copies` is the near-copy tolerance's fraction of the median nearest-neighbour
    distance (signed in the result's details); None dedups exact copies only, as records
    signed before near-copy dedup did.
    """
    names = ordered_names(parts, order)
    deduped = deduplicated(parts, names, near_copies, X_val, y_val)
    sizes = [len(deduped.kept[name]) for name in names]
    if sum(sizes) == 0:
        raise ValuationError("no rows to value: every part is empty")
    x = np.concatenate([deduped.parts[name][0] for name in names])
    y = np.concatenate([deduped.parts[name][1] for name in names])
    owner = np.repeat(np.arange(len(names)), sizes)
    hashes = np.array([h for name in names for h in deduped.hashes[name]])
    by_content = np.argsort(hashes, kind="stable")
    row_values = knn_shapley(x[by_content], y[by_content], X_val, y_val, k, n_jobs=n_jobs)
    totals = np.bincount(owner[by_content], weights=row_values, minlength=len(names))
    n_val = np.asarray(y_val).shape[0]
    return ValuationResult.from_arrays(
        names,
        totals,
        np.zeros(len(names)),
        sizes,
        method=METHOD,
        seed=None,
        utility=(f"KNN-Shapley of rows (k={k}; u = share of correct labels among the k nearest "
                 f"rows, mean over {n_val} validation rows), summed per contributor; duplicate "
                 + ("and near-copy " if near_copies is not None else "")
                 + "rows credited once to the earliest part"
                 + ("; copies of validation rows not valued" if near_copies is not None else "")
                 + "; distance ties broken by content hash"),
        samples=int(sum(sizes)),
        stopped_by="closed form",
        discounted=deduped.discounted,
        near_copies=deduped.near_copies,
    )


def deduplicated(
    parts: Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]],
    names: Sequence[str],
    near_copies: float | None,
    X_val: npt.ArrayLike,
    y_val: npt.ArrayLike,
) -> Deduplicated:
    """The rows the default values: exact copies dropped, and unless `near_copies` is None,
    near-copies and copies of the validation rows (which would score themselves)."""
    if near_copies is None:
        return dedup_parts(parts, names)
    labels = np.asarray(y_val)
    # Rows and labels that do not match are refused by knn_shapley, which names both.
    matched = labels.ndim == 1 and np.shape(X_val)[:1] == labels.shape
    return near_dedup_parts(parts, names, reference=X_val,
                            reference_labels=labels if matched else None, fraction=near_copies)


def grand_gain(task: ValuationTask) -> float:
    """u(N) − u(∅) of the row-level KNN game, computed directly rather than from the recursion.

    u(N) is the share of correct labels among each validation row's k nearest distinct rows
    (ties broken by content hash, as the values break them), so comparing it with the sum of the
    values checks `knn_shapley`; u(∅) = 0.
    """
    names = ordered_names(task.parts, task.order)
    deduped = deduplicated(task.parts, names, task.near_copies, task.X_val, task.y_val)
    x = np.concatenate([np.asarray(deduped.parts[n][0], dtype=np.float64) for n in names])
    y = np.concatenate([np.asarray(deduped.parts[n][1]) for n in names])
    hashes = np.array([h for n in names for h in deduped.hashes[n]])
    by_content = np.argsort(hashes, kind="stable")
    x, y = x[by_content], y[by_content]
    xv, yv = np.asarray(task.X_val, dtype=np.float64), np.asarray(task.y_val)
    k = task.k
    kk = min(k, len(y))
    total = 0.0
    for start in range(0, len(yv), 256):
        d = ((xv[start : start + 256, None, :] - x[None, :, :]) ** 2).sum(axis=2)
        nearest = np.argsort(d, axis=1, kind="stable")[:, :kk]
        total += float((y[nearest] == yv[start : start + 256, None]).sum()) / k
    return total / len(yv)
