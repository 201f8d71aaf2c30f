"""Exact Shapley values on games with known answers, and against the formula brute-forced here."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest

from lineage_platform.errors import ValuationError
from lineage_platform.valuation import DEFAULT_MAX_PLAYERS, Game, exact_shapley

Table = dict[frozenset[str], float]


def names(n: int) -> tuple[str, ...]:
    return tuple(f"p{i}" for i in range(n))


def brute_shapley(players: tuple[str, ...], u: Callable[[frozenset[str]], float]) -> list[float]:
    """The Shapley formula, summed over subsets with factorial weights."""
    n = len(players)
    values = []
    for i in players:
        others = [p for p in players if p != i]
        total = 0.0
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for subset in itertools.combinations(others, size):
                s = frozenset(subset)
                total += weight * (u(s | {i}) - u(s))
        values.append(total)
    return values


def random_table(players: tuple[str, ...], seed: int) -> Table:
    rng = np.random.default_rng(seed)
    return {
        frozenset(c): float(rng.normal())
        for size in range(len(players) + 1)
        for c in itertools.combinations(players, size)
    }


def test_additive_game_gives_each_player_its_weight() -> None:
    weights = {"a": 1.5, "b": -0.25, "c": 4.0, "d": 0.0}
    game = Game(tuple(weights), lambda s: sum(weights[p] for p in s))
    assert exact_shapley(game).as_dict() == pytest.approx(weights, abs=1e-12)


def test_symmetric_players_share_equally() -> None:
    players = names(6)
    game = Game(players, lambda s: len(s) ** 2 + 3.0)
    values = exact_shapley(game).values
    assert values == pytest.approx([36 / 6] * 6, abs=1e-12)


def test_null_player_gets_zero_and_others_unchanged() -> None:
    base = {"a": 2.0, "b": 5.0}
    game = Game(("a", "b", "null"), lambda s: sum(base.get(p, 0.0) for p in s) + 10 * (
        "a" in s and "b" in s))
    result = exact_shapley(game).as_dict()
    assert result["null"] == pytest.approx(0.0, abs=1e-12)
    assert result["a"] == pytest.approx(2.0 + 5.0)
    assert result["b"] == pytest.approx(5.0 + 5.0)


def test_weighted_majority_voting() -> None:
    # Quota 51 with weights 50, 49, 1: the large party is pivotal in 4 of 6 orders.
    weights = {"big": 50, "mid": 49, "small": 1}
    game = Game(tuple(weights), lambda s: float(sum(weights[p] for p in s) >= 51))
    result = exact_shapley(game).as_dict()
    assert result == pytest.approx({"big": 2 / 3, "mid": 1 / 6, "small": 1 / 6}, abs=1e-12)


def test_simple_majority_voting_is_symmetric() -> None:
    players = names(5)
    game = Game(players, lambda s: float(len(s) >= 3))
    assert exact_shapley(game).values == pytest.approx([0.2] * 5, abs=1e-12)


def test_airport_game() -> None:
    # Runway costs: each plane pays an equal share of every segment it uses (Littlechild-Owen).
    costs = {"a": 1.0, "b": 3.0, "c": 6.0, "d": 10.0}
    game = Game(tuple(costs), lambda s: max((costs[p] for p in s), default=0.0))
    expected = {
        "a": 1 / 4,
        "b": 1 / 4 + 2 / 3,
        "c": 1 / 4 + 2 / 3 + 3 / 2,
        "d": 1 / 4 + 2 / 3 + 3 / 2 + 4 / 1,
    }
    assert exact_shapley(game).as_dict() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("n", "seed"), [(1, 0), (2, 1), (3, 2), (5, 3), (7, 4), (10, 5)])
def test_random_games_match_brute_force_and_are_efficient(n: int, seed: int) -> None:
    players = names(n)
    table = random_table(players, seed)
    game = Game(players, table.__getitem__)
    result = exact_shapley(game)
    assert result.values == pytest.approx(brute_shapley(players, table.__getitem__), abs=1e-10)
    efficiency = math.fsum(result.values) - (table[frozenset(players)] - table[frozenset()])
    assert abs(efficiency) < 1e-9
    assert result.method == "exact-shapley"
    assert result.stderr == (0.0,) * n
    assert result.samples == 2**n


def test_each_coalition_is_evaluated_once() -> None:
    calls: list[frozenset[str]] = []

    def utility(s: frozenset[str]) -> float:
        calls.append(s)
        return float(len(s))

    game = Game(names(8), utility)
    exact_shapley(game)
    exact_shapley(game)  # second run: all from the cache
    assert len(calls) == 2**8
    assert len(set(calls)) == 2**8
    assert game.evaluations == 2**8


def test_refuses_too_many_players_and_names_the_alternative() -> None:
    game = Game(names(DEFAULT_MAX_PLAYERS + 1), lambda s: float(len(s)))
    with pytest.raises(ValuationError, match="permutation_shapley"):
        exact_shapley(game)
    with pytest.raises(ValuationError, match="limit of 4"):
        exact_shapley(Game(names(5), lambda s: 0.0), max_players=4)


def test_sixteen_players_are_allowed() -> None:
    weights = np.linspace(0.0, 1.5, DEFAULT_MAX_PLAYERS)
    index = {p: i for i, p in enumerate(names(DEFAULT_MAX_PLAYERS))}
    game = Game(names(DEFAULT_MAX_PLAYERS), lambda s: float(sum(weights[index[p]] for p in s)))
    assert exact_shapley(game).values == pytest.approx(weights.tolist(), abs=1e-9)
