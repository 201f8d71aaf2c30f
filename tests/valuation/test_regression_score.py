"""A regressor valued with R²: exact Shapley of a Ridge model on generated regression data,
against the Shapley formula brute-forced here with scikit-learn's own r2_score, and the axioms."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_squared_error, r2_score

from lineage_platform.errors import ValuationError
from lineage_platform.valuation import Score, contributor_game, exact_shapley, get_method
from lineage_platform.valuation.choose import efficiency_target, score_details, value_contributors
from lineage_platform.valuation.task import ValuationTask
from tests.valuation.test_exact_shapley import brute_shapley

Part = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]


def regression_data() -> tuple[dict[str, Part], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Targets linear in five features. `east` reports the targets negated (a units bug), so it
    hurts; `copycat` resubmits north's rows, so it adds nothing."""
    rng = np.random.default_rng(11)
    w = np.array([3.0, -2.0, 0.5, 1.5, 0.0])

    def rows(n: int, noise: float) -> Part:
        x = rng.normal(size=(n, 5))
        return x, x @ w + rng.normal(scale=noise, size=n)

    north, south, (xe, ye) = rows(40, 0.5), rows(25, 2.0), rows(30, 0.5)
    parts = {"north": north, "south": south, "east": (xe, -ye),
             "copycat": (north[0].copy(), north[1].copy())}
    x_val, y_val = rows(60, 0.5)
    return parts, x_val, y_val


def brute_utility(parts: dict[str, Part], x_val: npt.NDArray[np.float64],
                  y_val: npt.NDArray[np.float64], score=r2_score, empty: float = 0.0):  # type: ignore[no-untyped-def]
    """u(S) by scikit-learn: Ridge on the union of S's parts (copycat's rows are north's, so
    they count once, for north), scored on the validation rows; u(∅) = `empty`."""

    def u(s: frozenset[str]) -> float:
        members = [p for p in parts if p in s and p != "copycat"]
        if not members:
            return empty
        x = np.concatenate([parts[p][0] for p in members])
        y = np.concatenate([parts[p][1] for p in members])
        return float(score(y_val, Ridge().fit(x, y).predict(x_val)))

    return u


def test_exact_shapley_of_a_ridge_model_with_r2_matches_the_formula_and_the_axioms() -> None:
    parts, x_val, y_val = regression_data()
    result = value_contributors(parts, x_val, y_val, "exact", make_model=Ridge, score="r2",
                                order=list(parts))
    u = brute_utility(parts, x_val, y_val)
    expected = dict(zip(parts, brute_shapley(tuple(parts), u), strict=True))
    assert result.as_dict() == pytest.approx(expected, abs=1e-9)

    values = result.as_dict()
    grand = u(frozenset(parts))
    assert u(frozenset({"north", "south"})) > 0.9 > grand  # east's negated targets hurt
    # Efficiency: the values add up to u(N) − u(∅), with u(∅) = R² of the mean predictor = 0.
    assert math.fsum(values.values()) == pytest.approx(grand - 0.0, abs=1e-9)
    assert efficiency_target(parts, x_val, y_val, result, make_model=Ridge,
                             score="r2") == pytest.approx(grand, abs=1e-12)
    # Null player: resubmitted rows earn exactly nothing; the negated targets earn below zero.
    assert values["copycat"] == 0.0
    assert values["east"] < 0 < min(values["north"], values["south"])
    assert "r2" in result.utility and "validation mean" in result.utility


def test_symmetric_contributors_of_a_regression_get_equal_values() -> None:
    parts, x_val, y_val = regression_data()
    twins = {"a": parts["south"], "b": (parts["south"][0].copy(), parts["south"][1].copy()),
             "c": parts["north"]}
    # Without deduplication the twins' parts are interchangeable in every coalition.
    game = contributor_game(twins, x_val, y_val, Ridge, score="r2", dedup=False)
    values = exact_shapley(game).as_dict()
    assert values["a"] == pytest.approx(values["b"], abs=1e-12)
    assert values["a"] != pytest.approx(values["c"], abs=1e-3)


def test_a_callable_score_and_its_mean_predictor_baseline() -> None:
    parts, x_val, y_val = regression_data()

    def neg_mse(y_true: npt.NDArray[np.float64], y_pred: npt.NDArray[np.float64]) -> float:
        return -float(mean_squared_error(y_true, y_pred))

    result = value_contributors(parts, x_val, y_val, "exact", make_model=Ridge, score=neg_mse)
    # u(∅): always predicting the validation mean, whose MSE is the targets' variance.
    u = brute_utility(parts, x_val, y_val, score=neg_mse, empty=-float(np.var(y_val)))
    expected = dict(zip(parts, brute_shapley(tuple(parts), u), strict=True))
    assert result.as_dict() == pytest.approx(expected, abs=1e-6)
    signed = score_details(neg_mse, y_val, "exact")
    assert signed["name"].endswith("neg_mse") and signed["classification"] is False
    assert signed["u_empty"] == pytest.approx(-np.var(y_val), rel=1e-12)


def test_the_signed_score_details_name_r2_and_its_baseline() -> None:
    _, _, y_val = regression_data()
    assert score_details("r2", y_val, "exact") == {
        "name": "r2", "classification": False, "u_empty": 0.0,
        "baseline": "u(∅) = r2 of always predicting the validation mean",
    }
    labels = np.array([0, 1, 1, 1])
    assert score_details("accuracy", labels, "exact")["u_empty"] == 0.75  # majority label
    assert score_details("accuracy", labels, "knn") == {"name": "accuracy",
                                                         "classification": True}


def test_knn_methods_refuse_a_regression_score() -> None:
    parts, x_val, y_val = regression_data()
    with pytest.raises(ValuationError, match=r"classification only.*'r2'"):
        value_contributors(parts, x_val, y_val, "knn", score="r2")
    task = ValuationTask(parts, x_val, y_val, score=Score.named("r2"))
    with pytest.raises(ValuationError, match="classification only"):
        get_method("knn").efficiency_target(task)
    with pytest.raises(ValuationError, match="unknown score 'rmse'"):
        ValuationTask(parts, x_val, y_val, score="rmse")
    with pytest.raises(ValuationError, match="targets must be numbers"):
        contributor_game({"a": (x_val, y_val.astype(str))}, x_val, y_val.astype(str), Ridge,
                         score="r2")
