"""Contributor-level utilities: a model trained on the union of a coalition's parts, scored on a
validation split that no contributor supplied.

    game = contributor_game(parts, X_val, y_val, lambda: LogisticRegression(max_iter=300))
    game = contributor_game(parts, X_val, y_val, Ridge, score="r2")   # a regressor
    exact_shapley(game)   # contributor-level Shapley: an explicit choice, see rows.py

The score (`Score`: accuracy for classifiers, the default; R² for regressors; or any callable)
also fixes u(∅), the value of training on nobody's data: the score of the best constant
predictor, which needs no contributor (the majority validation label for a classifier, the
validation mean for a regressor, whose R² is 0 by definition).

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


ScoreFn = Callable[[npt.NDArray[Any], npt.NDArray[Any]], float]


def _accuracy(y_true: npt.NDArray[Any], y_pred: npt.NDArray[Any]) -> float:
    return float(np.mean(y_pred == y_true))


def _r2(y_true: npt.NDArray[Any], y_pred: npt.NDArray[Any]) -> float:
    truth = np.asarray(y_true, dtype=np.float64)
    total = float(np.sum((truth - truth.mean()) ** 2))
    if total == 0.0:
        raise ValuationError("R² is undefined on a validation set whose targets are all equal")
    return 1.0 - float(np.sum((truth - np.asarray(y_pred, dtype=np.float64)) ** 2)) / total


@dataclass(frozen=True, slots=True)
class Score:
    """How a coalition's model is scored on the validation set: `fn(y_true, y_pred)`, higher is
    better. `classification`: u(∅) is the score of predicting the majority validation label
    (and a coalition whose rows share one label predicts it); otherwise of predicting the
    validation mean. Its `name` is signed in a valuation record's details.

        Score.named("r2"); Score.custom(mean_abs_error_negated, name="neg_mae")
    """

    name: str
    fn: ScoreFn
    classification: bool

    @classmethod
    def named(cls, name: str) -> Score:
        """`accuracy` (classifiers) or `r2` (regressors); ValuationError for any other name."""
        if name == "accuracy":
            return cls("accuracy", _accuracy, classification=True)
        if name == "r2":
            return cls("r2", _r2, classification=False)
        raise ValuationError(f"unknown score {name!r:.40}: accuracy (classifiers), r2 "
                             "(regressors), or a callable score(y_true, y_pred)")

    @classmethod
    def custom(cls, fn: ScoreFn, *, name: str | None = None,
               classification: bool = False) -> Score:
        """A callable score; its name (default: the function's) is what the record signs."""
        if not callable(fn):
            raise ValuationError(f"a score must be a name or a callable, got {fn!r:.40}")
        shown = name or str(getattr(fn, "__qualname__", type(fn).__name__))
        return cls(shown, fn, classification)

    def __call__(self, y_true: npt.NDArray[Any], y_pred: npt.NDArray[Any]) -> float:
        """`fn(y_true, y_pred)` as a float; ValuationError when it is not finite."""
        value = float(self.fn(y_true, y_pred))
        if not np.isfinite(value):
            raise ValuationError(f"score {self.name!r} gave {value}: it must be finite")
        return value

    def baseline(self, y_val: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """The constant prediction of the empty coalition, one per validation row."""
        if self.classification:
            labels, counts = np.unique(y_val, return_counts=True)
            return np.full(len(y_val), labels[np.argmax(counts)], dtype=y_val.dtype)
        return np.full(len(y_val), float(np.mean(np.asarray(y_val, dtype=np.float64))))

    def empty_value(self, y_val: npt.ArrayLike) -> float:
        """u(∅): the score of the constant `baseline` (R²: 0; accuracy: the majority share)."""
        truth = np.asarray(y_val)
        return self(truth, self.baseline(truth))

    def baseline_words(self) -> str:
        return ("the majority validation label" if self.classification
                else "the validation mean")

    def to_details(self, empty: float | None) -> dict[str, Any]:
        """What a valuation record signs about the score (`details.score`); `empty` is the
        game's u(∅) (None for a method whose utility is not this model's score)."""
        out: dict[str, Any] = {"name": self.name, "classification": self.classification}
        if empty is not None:
            out |= {"u_empty": empty, "baseline": f"u(∅) = {self.name} of always predicting "
                                                  f"{self.baseline_words()}"}
        return out


def as_score(score: str | ScoreFn | Score) -> Score:
    """A `Score` from a name, a callable or a `Score`: `as_score("r2")`."""
    if isinstance(score, Score):
        return score
    if isinstance(score, str):
        return Score.named(score)
    return Score.custom(score)


@dataclass(frozen=True, slots=True, eq=False)
class ModelUtility:
    """u(S) = `score` on (X_val, y_val) of `make_model()` fitted on the rows of S's parts.

    u(∅) = `empty_score`; for a classification score, a coalition whose rows all share one
    label predicts that label.
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
    score: Score = Score("accuracy", _accuracy, classification=True)

    def __call__(self, coalition: Coalition) -> float:
        members = [name for name in self.parts if name in coalition and len(self.parts[name][1])]
        if not members:
            return self.empty_score
        x = np.concatenate([self.parts[name][0] for name in members])
        y = np.concatenate([self.parts[name][1] for name in members])
        if self.score.classification:
            labels = np.unique(y)
            if len(labels) == 1:
                return self.score(self.y_val, np.full(len(self.y_val), labels[0], dtype=y.dtype))
        try:
            model = self.make_model()
            model.fit(x, y)
            predicted = np.asarray(model.predict(self.X_val))
        except Exception as e:
            raise ValuationError(
                f"model failed on coalition {{{', '.join(sorted(coalition))}}} "
                f"({len(y)} rows): {e}"
            ) from e
        return self.score(self.y_val, predicted)


def classifier_utility(
    parts: Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]],
    X_val: npt.ArrayLike,
    y_val: npt.ArrayLike,
    make_model: Callable[[], Classifier],
    *,
    description: str | None = None,
    score: str | ScoreFn | Score = "accuracy",
) -> ModelUtility:
    """A `ModelUtility` with u(∅) = the score of the best constant predictor (`Score`: the
    majority validation label for accuracy, the validation mean for R², where it is 0)."""
    scoring = as_score(score)
    names = ordered_names(parts, None)
    checked = {name: checked_part(name, *parts[name]) for name in names}
    x_val, y_val_arr = checked_part("validation", X_val, y_val)
    if len(y_val_arr) == 0:
        raise ValuationError("the validation split is empty")
    widths = {x.shape[1] for x, _ in checked.values()} | {x_val.shape[1]}
    if len(widths) != 1:
        raise ValuationError(f"parts and validation disagree on the number of features: "
                             f"{sorted(widths)}")
    if not scoring.classification and not np.issubdtype(y_val_arr.dtype, np.number):
        raise ValuationError(f"score {scoring.name!r} is a regression score: the validation "
                             f"targets must be numbers, got {y_val_arr.dtype}")
    name = getattr(make_model, "__qualname__", type(make_model).__name__)
    empty = scoring.empty_value(y_val_arr)
    return ModelUtility(
        parts=checked,
        X_val=x_val,
        y_val=y_val_arr,
        make_model=make_model,
        empty_score=empty,
        description=description or (
            f"validation {scoring.name} of {name} on the union of the coalition's parts "
            f"({len(y_val_arr)} validation rows; u(∅) = {empty:.4f}, the {scoring.name} of "
            f"always predicting {scoring.baseline_words()})"
        ),
        score=scoring,
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
    score: str | ScoreFn | Score = "accuracy",
) -> Game:
    """A contributor-level game; with `dedup`, repeated rows count once for the earliest part;
    `score` as in `classifier_utility` (e.g. "r2" for a regressor)."""
    names = ordered_names(parts, order)
    if dedup:
        deduped = dedup_parts(parts, names)
        ordered: dict[str, tuple[npt.ArrayLike, npt.ArrayLike]] = dict(deduped.parts)
        discounted = deduped.discounted
    else:
        ordered = {name: parts[name] for name in names}
        discounted = ()
    utility = classifier_utility(ordered, X_val, y_val, make_model, score=score)
    suffix = "; duplicate rows credited once to the earliest part" if dedup else ""
    return Game(tuple(names), utility, description=utility.description + suffix, n_jobs=n_jobs,
                backend=backend, discounted=discounted)
