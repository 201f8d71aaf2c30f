"""The game abstraction: validation, cache, parallel evaluation and clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from lineage_platform.errors import ValuationError
from lineage_platform.valuation import (
    Game,
    MaxSamples,
    banzhaf,
    classifier_utility,
    contributor_game,
    exact_shapley,
    permutation_shapley,
)


def test_empty_player_set_is_refused() -> None:
    with pytest.raises(ValuationError, match="at least one player"):
        Game((), lambda s: 0.0)


def test_duplicate_player_ids_are_refused_and_named() -> None:
    with pytest.raises(ValuationError, match=r"duplicate player ids: \['a'\]"):
        Game(("a", "b", "a"), lambda s: 0.0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_utility_names_the_coalition(bad: float) -> None:
    game = Game(("a", "b", "c"), lambda s: bad if s == frozenset({"a", "c"}) else 1.0)
    with pytest.raises(ValuationError, match=r"coalition \{a, c\} is (nan|inf|-inf)"):
        exact_shapley(game)
    with pytest.raises(ValuationError, match=r"\{a, c\}"):
        permutation_shapley(game, seed=1, until=MaxSamples(50))


def test_non_numeric_utility_is_refused() -> None:
    game = Game(("a",), lambda s: "high")  # type: ignore[arg-type,return-value]
    with pytest.raises(ValuationError, match="not a number"):
        game.value({"a"})


def test_unknown_players_in_a_coalition_are_refused() -> None:
    game = Game(("a", "b"), lambda s: float(len(s)))
    with pytest.raises(ValuationError, match=r"unknown players \{z\}"):
        game.value({"a", "z"})


class CountingSize:
    """u(S) = |S|, remembering every call."""

    def __init__(self) -> None:
        self.calls: list[frozenset[str]] = []

    def __call__(self, s: frozenset[str]) -> float:
        self.calls.append(s)
        return float(len(s))


def test_values_are_cached_by_coalition() -> None:
    utility = CountingSize()
    calls = utility.calls
    game = Game(("a", "b"), utility)
    assert game.value(["a", "b"]) == 2.0
    assert game.value(("b", "a")) == 2.0
    assert list(game.values([frozenset(), frozenset({"a"}), frozenset()])) == [0.0, 1.0, 0.0]
    assert len(calls) == 3
    game.clear_cache()
    game.value({"a"})
    assert len(calls) == 4


def _blob_parts() -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(3, 4)) * 3
    def block(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 3, n)
        return centres[y] + rng.normal(size=(n, 4)), y
    parts = {name: block(40) for name in ("a", "b", "c", "d")}
    x_val, y_val = block(60)
    return parts, x_val, y_val


def make_knn() -> KNeighborsClassifier:
    return KNeighborsClassifier(n_neighbors=3)


def test_loky_backend_gives_the_same_values_as_sequential() -> None:
    parts, x_val, y_val = _blob_parts()
    utility = classifier_utility(parts, x_val, y_val, make_knn)
    sequential = Game(tuple(parts), utility)
    parallel = Game(tuple(parts), utility, n_jobs=2, backend="loky")
    assert exact_shapley(parallel).values == exact_shapley(sequential).values
    assert parallel.evaluations == 16
    threads = Game(tuple(parts), utility, n_jobs=2, backend="threading")
    assert permutation_shapley(threads, seed=4, until=MaxSamples(30)).values == \
        permutation_shapley(sequential, seed=4, until=MaxSamples(30)).values
    assert banzhaf(threads, seed=4, until=MaxSamples(30)).values == \
        banzhaf(sequential, seed=4, until=MaxSamples(30)).values


def test_model_utility_empty_and_single_class_coalitions() -> None:
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    parts = {"zeros": (x[:2], np.array([0, 0])), "ones": (x[2:], np.array([1, 1]))}
    x_val = np.array([[0.0], [0.5], [3.0]])
    y_val = np.array([0, 0, 1])
    utility = classifier_utility(parts, x_val, y_val, lambda: KNeighborsClassifier(1))
    assert utility(frozenset()) == pytest.approx(2 / 3)  # always predict the majority label
    assert utility(frozenset({"zeros"})) == pytest.approx(2 / 3)
    assert utility(frozenset({"ones"})) == pytest.approx(1 / 3)
    assert utility(frozenset({"zeros", "ones"})) == pytest.approx(1.0)


def test_model_failure_becomes_a_valuation_error_naming_the_coalition() -> None:
    parts = {"a": (np.zeros((2, 1)), np.array([0, 1])), "b": (np.ones((2, 1)), np.array([0, 1]))}
    utility = classifier_utility(parts, np.zeros((3, 1)), np.array([0, 1, 0]),
                                 lambda: KNeighborsClassifier(n_neighbors=3))
    with pytest.raises(ValuationError, match=r"coalition \{a\} \(2 rows\)"):
        utility(frozenset({"a"}))


def test_contributor_game_bad_inputs() -> None:
    parts, x_val, y_val = _blob_parts()
    with pytest.raises(ValuationError, match="player set is empty"):
        contributor_game({}, x_val, y_val, make_knn)
    with pytest.raises(ValuationError, match="40 feature rows but 39 labels"):
        contributor_game({"a": (parts["a"][0], parts["a"][1][:-1])}, x_val, y_val, make_knn)
    with pytest.raises(ValuationError, match="number of features"):
        contributor_game(parts, x_val[:, :3], y_val, make_knn)
    with pytest.raises(ValuationError, match="duplicate contributor ids"):
        contributor_game(parts, x_val, y_val, make_knn, order=["a", "a", "b", "c", "d"])
