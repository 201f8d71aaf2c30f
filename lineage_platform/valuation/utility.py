"""Contributor-level utilities: a model trained on the union of a coalition's parts, scored on a
validation split that no contributor supplied.

    game = contributor_game(parts, X_val, y_val, lambda: LogisticRegression(max_iter=300))
    exact_shapley(game)   # contributor-level Shapley: an explicit choice, see rows.py

Contributor-level values depend on identities (a contributor who splits into several identities
gains); settlement pays on the row-level default, `contributor_knn_values`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from lineage_platform.errors import ValuationError
from lineage_platform.valuation.dedup import Part, checked_part, dedup_parts, ordered_names
from lineage_platform.valuation.game import Coalition, Game


class Classifier(Protocol):
    def fit(self, X: Any, y: Any) -> Any: ...

    def predict(self, X: Any) -> Any: ...


@dataclass(frozen=True, slots=True, eq=False)
class ModelUtility:
    """u(S) = accuracy on (X_val, y_val) of `make_model()` fitted on the rows of S's parts.

    u(∅) = `empty_score`; a coalition whose rows all share one label predicts that label.
    Parts are concatenated in `parts` order, so a coalition always trains on the same array.
    Results are reproducible only if the model is: e.g. `KNeighborsClassifier(algorithm=
    "brute")` breaks distance ties differently with different thread counts (so in a loky
    worker and in the parent), a tree search does not.
    """

    parts: Mapping[str, Part]
    X_val: npt.NDArray[np.float64]
    y_val: npt.NDArray[np.generic]
    make_model: Callable[[], Classifier]
    empty_score: float
    description: str

    def __call__(self, coalition: Coalition) -> float:
        members = [name for name in self.parts if name in coalition and len(self.parts[name][1])]
        if not members:
            return self.empty_score
        x = np.concatenate([self.parts[name][0] for name in members])
        y = np.concatenate([self.parts[name][1] for name in members])
        labels = np.unique(y)
        if len(labels) == 1:
            return float(np.mean(self.y_val == labels[0]))
        try:
            model = self.make_model()
            model.fit(x, y)
            predicted = np.asarray(model.predict(self.X_val))
        except Exception as e:
            raise ValuationError(
                f"model failed on coalition {{{', '.join(sorted(coalition))}}} "
                f"({len(y)} rows): {e}"
            ) from e
        return float(np.mean(predicted == self.y_val))


def classifier_utility(
    parts: Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]],
    X_val: npt.ArrayLike,
    y_val: npt.ArrayLike,
    make_model: Callable[[], Classifier],
    *,
    description: str | None = None,
) -> ModelUtility:
    """A `ModelUtility` with u(∅) = the accuracy of always predicting the most common
    validation label (the best constant predictor)."""
    names = ordered_names(parts, None)
    checked = {name: checked_part(name, *parts[name]) for name in names}
    x_val, y_val_arr = checked_part("validation", X_val, y_val)
    if len(y_val_arr) == 0:
        raise ValuationError("the validation split is empty")
    widths = {x.shape[1] for x, _ in checked.values()} | {x_val.shape[1]}
    if len(widths) != 1:
        raise ValuationError(f"parts and validation disagree on the number of features: "
                             f"{sorted(widths)}")
    _, label_counts = np.unique(y_val_arr, return_counts=True)
    empty = float(label_counts.max() / len(y_val_arr))
    name = getattr(make_model, "__qualname__", type(make_model).__name__)
    return ModelUtility(
        parts=checked,
        X_val=x_val,
        y_val=y_val_arr,
        make_model=make_model,
        empty_score=empty,
        description=description or (
            f"validation accuracy of {name} on the union of the coalition's parts "
            f"({len(y_val_arr)} validation rows; u(∅) = majority-label accuracy {empty:.4f})"
        ),
    )


def contributor_game(
    parts: Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]],
    X_val: npt.ArrayLike,
    y_val: npt.ArrayLike,
    make_model: Callable[[], Classifier],
    *,
    order: Sequence[str] | None = None,
    dedup: bool = True,
    n_jobs: int = 1,
    backend: str = "loky",
) -> Game:
    """A contributor-level game; with `dedup`, repeated rows count once for the earliest part."""
    names = ordered_names(parts, order)
    if dedup:
        deduped = dedup_parts(parts, names)
        ordered: dict[str, tuple[npt.ArrayLike, npt.ArrayLike]] = dict(deduped.parts)
        discounted = deduped.discounted
    else:
        ordered = {name: parts[name] for name in names}
        discounted = ()
    utility = classifier_utility(ordered, X_val, y_val, make_model)
    suffix = "; duplicate rows credited once to the earliest part" if dedup else ""
    return Game(tuple(names), utility, description=utility.description + suffix, n_jobs=n_jobs,
                backend=backend, discounted=discounted)
