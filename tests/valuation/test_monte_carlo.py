"""Permutation Shapley and MSR Banzhaf: unbiased within their standard errors, seeded, stoppable."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest

from lineage_platform.errors import ValuationError
from lineage_platform.valuation import (
    Game,
    MaxSamples,
    MaxTime,
    RankStable,
    RelativeTruncation,
    StderrBelow,
    ValuationResult,
    banzhaf,
    exact_shapley,
    permutation_shapley,
)

PLAYERS = tuple(f"p{i}" for i in range(10))


def interaction_game(seed: int) -> Game:
    """A 10-player game with additive terms, pairwise synergies and a threshold bonus."""
    rng = np.random.default_rng(seed)
    weight = dict(zip(PLAYERS, rng.uniform(0, 1, 10).tolist(), strict=True))
    pairs = {frozenset(p): float(rng.normal(scale=0.5))
             for p in itertools.combinations(PLAYERS, 2) if rng.random() < 0.3}

    def u(s: frozenset[str]) -> float:
        total = sum(weight[p] for p in s) + sum(v for pair, v in pairs.items() if pair <= s)
        return float(total) + (2.0 if len(s) >= 6 else 0.0)

    return Game(PLAYERS, u)


def brute_banzhaf(game: Game) -> list[float]:
    n = game.n
    values = []
    for i in game.players:
        others = [p for p in game.players if p != i]
        total = 0.0
        for size in range(n):
            for subset in itertools.combinations(others, size):
                s = frozenset(subset)
                total += game.value(s | {i}) - game.value(s)
        values.append(total / 2 ** (n - 1))
    return values


def z_scores(result: ValuationResult, truth: list[float]) -> np.ndarray:
    z: np.ndarray = (np.array(result.values) - np.array(truth)) / np.array(result.stderr)
    return z


@pytest.mark.parametrize("seed", [11, 12])
def test_permutation_shapley_within_three_standard_errors_of_exact(seed: int) -> None:
    game = interaction_game(seed)
    exact = exact_shapley(game)
    estimate = permutation_shapley(game, seed=seed, until=MaxSamples(1500))
    assert np.all(np.abs(z_scores(estimate, list(exact.values))) < 3)
    assert estimate.counts == (1500,) * 10
    assert estimate.samples == 1500
    # Every permutation's marginals sum to u(N) - u(∅), so the means do too.
    assert math.fsum(estimate.values) == pytest.approx(math.fsum(exact.values), abs=1e-9)


@pytest.mark.parametrize("seed", [21, 22])
def test_banzhaf_within_three_standard_errors_of_brute_force(seed: int) -> None:
    game = interaction_game(seed)
    truth = brute_banzhaf(game)
    estimate = banzhaf(game, seed=seed, until=MaxSamples(3000))
    assert np.all(np.abs(z_scores(estimate, truth)) < 3)
    assert estimate.method == "msr-banzhaf"


Method = Callable[..., ValuationResult]


@pytest.mark.parametrize("run", [permutation_shapley, banzhaf])
def test_stderr_shrinks_as_samples_grow(run: Method) -> None:
    game = interaction_game(5)
    few = run(game, seed=3, until=MaxSamples(100))
    many = run(game, seed=3, until=MaxSamples(1600))
    ratio = np.array(few.stderr) / np.array(many.stderr)
    # 16x the samples: about 4x smaller, by the square root law.
    assert np.all(ratio > 2.5)
    assert np.median(ratio) == pytest.approx(4.0, rel=0.3)


@pytest.mark.parametrize("run", [permutation_shapley, banzhaf])
def test_same_seed_same_result_and_batch_size_does_not_matter(run: Method) -> None:
    game = interaction_game(7)
    a = run(game, seed=9, until=MaxSamples(77))
    b = run(game, seed=9, until=MaxSamples(77), batch_size=16)
    c = run(game, seed=10, until=MaxSamples(77))
    assert a.values == b.values and a.stderr == b.stderr
    assert a.digest() == b.digest() != c.digest()
    assert a.seed == 9 and a.samples == 77


def test_stderr_rule_stops_once_precise_enough() -> None:
    game = interaction_game(3)
    result = permutation_shapley(game, seed=1, until=StderrBelow(0.05) | MaxSamples(100_000))
    assert max(result.stderr) < 0.05
    assert result.samples < 100_000
    # One sample earlier the rule did not hold yet (or min_samples was not reached).
    earlier = permutation_shapley(game, seed=1, until=MaxSamples(result.samples - 1))
    assert max(earlier.stderr) >= 0.05 or earlier.samples < 30
    assert result.stopped_by == "StderrBelow(0.05) | MaxSamples(100000)"


def test_stderr_rule_alone_stops_on_a_deterministic_game() -> None:
    game = Game(PLAYERS[:4], lambda s: float(len(s)))  # additive: every marginal is 1
    result = permutation_shapley(game, seed=0, until=StderrBelow(1e-6, min_samples=5))
    assert result.samples == 5
    assert result.values == (1.0,) * 4


def test_and_needs_both_rules() -> None:
    game = interaction_game(4)
    result = permutation_shapley(game, seed=2, until=MaxSamples(50) & RankStable(40))
    assert result.samples >= 50
    assert result.stopped_by == "MaxSamples(50) & RankStable(40)"


def test_rank_stable_and_max_time() -> None:
    game = interaction_game(6)
    stable = banzhaf(game, seed=1, until=RankStable(25) | MaxSamples(5000))
    assert stable.samples < 5000
    timed = permutation_shapley(game, seed=1, until=MaxTime(0.2))
    assert timed.samples >= 1


def test_rules_compose_and_print() -> None:
    rule = (StderrBelow(0.01) | MaxSamples(10)) & (MaxTime(5) | RankStable(3))
    assert str(rule) == "(StderrBelow(0.01) | MaxSamples(10)) & (MaxTime(5) | RankStable(3))"
    assert str(MaxSamples(1) | MaxSamples(2) | MaxSamples(3)) == \
        "MaxSamples(1) | MaxSamples(2) | MaxSamples(3)"


@pytest.mark.parametrize("bad", [lambda: MaxSamples(0), lambda: MaxTime(0), lambda: StderrBelow(0),
                                 lambda: RankStable(0), lambda: RelativeTruncation(1.0)])
def test_bad_rules_are_refused(bad: Callable[[], object]) -> None:
    with pytest.raises(ValuationError):
        bad()


def test_until_must_be_a_rule_and_batches_positive() -> None:
    with pytest.raises(ValuationError, match="stopping rule"):
        permutation_shapley(interaction_game(1), seed=1, until=100)  # type: ignore[arg-type]
    with pytest.raises(ValuationError, match="batch_size must be >= 1"):
        banzhaf(interaction_game(1), seed=1, batch_size=0)


def test_truncation_saves_evaluations_and_stays_close() -> None:
    # Saturating game: after a few players the utility barely moves, so walks truncate early.
    weights = dict(zip(PLAYERS, np.linspace(1.0, 2.0, 10), strict=True))
    game = Game(PLAYERS, lambda s: 1.0 - math.exp(-sum(weights[p] for p in s)))
    exact = exact_shapley(Game(PLAYERS, game.utility))
    truncated = Game(PLAYERS, game.utility)
    result = permutation_shapley(truncated, seed=5, until=MaxSamples(400),
                                 truncation=RelativeTruncation(0.01))
    full = Game(PLAYERS, game.utility)
    permutation_shapley(full, seed=5, until=MaxSamples(400))
    assert truncated.evaluations < 0.8 * full.evaluations
    assert result.method == "tmc-shapley"
    assert result.stopped_by.endswith("RelativeTruncation(0.01)")
    # Truncation drops at most rtol * (u(N) - u(∅)) per walk.
    assert math.fsum(result.values) == pytest.approx(math.fsum(exact.values), abs=0.011)
    assert np.all(np.abs(np.array(result.values) - np.array(exact.values)) <
                  3 * np.array(result.stderr) + 0.01)
