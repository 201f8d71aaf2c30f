"""Permutation Monte Carlo Shapley values, with optional truncation (TMC-Shapley).

    result = permutation_shapley(game, seed=7, until=StderrBelow(0.01) | MaxSamples(5000))
    result = permutation_shapley(game, seed=7, truncation=RelativeTruncation(0.01))

Each sampled permutation gives one marginal contribution per player; values are their means,
stderr their standard errors. Without truncation the values of every sample sum exactly to
u(N) - u(∅). Truncation stops walking a permutation once the prefix's utility is within
`rtol` of u(N) (scaled by |u(N) - u(∅)|) and counts the rest as zero: faster, slightly biased.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lineage_platform.errors import ValuationError
from lineage_platform.valuation.accumulator import RunningMean
from lineage_platform.valuation.game import Coalition, Game
from lineage_platform.valuation.result import ValuationResult
from lineage_platform.valuation.stopping import MaxSamples, Monitor, StderrBelow, StoppingRule
from lineage_platform.valuation.task import ValuationTask

METHOD = "permutation-shapley"
TRUNCATED_METHOD = "tmc-shapley"
DEFAULT_UNTIL: StoppingRule = StderrBelow(0.01) | MaxSamples(5000)


@dataclass(frozen=True, slots=True)
class RelativeTruncation:
    """Truncate once |u(N) - u(prefix)| <= rtol * |u(N) - u(∅)|."""

    rtol: float

    def __post_init__(self) -> None:
        if not 0 <= self.rtol < 1:
            raise ValuationError(f"RelativeTruncation needs 0 <= rtol < 1, got {self.rtol}")

    def truncated(self, u: npt.NDArray[np.float64], u_full: float,
                  u_empty: float) -> npt.NDArray[np.bool_]:
        return np.abs(u_full - u) <= self.rtol * abs(u_full - u_empty)

    def __str__(self) -> str:
        return f"RelativeTruncation({self.rtol:g})"


#: The truncation the registered "tmc-shapley" method runs with.
DEFAULT_TRUNCATION = RelativeTruncation(0.01)


def run(task: ValuationTask) -> ValuationResult:
    """Permutation Shapley of the contributor-level game (the registered method)."""
    return permutation_shapley(task.contributor_game(), task.seed, task.until)


def run_truncated(task: ValuationTask) -> ValuationResult:
    """TMC-Shapley of the contributor-level game (the registered method)."""
    return permutation_shapley(task.contributor_game(), task.seed, task.until, DEFAULT_TRUNCATION)


def permutation_shapley(
    game: Game,
    seed: int,
    until: StoppingRule = DEFAULT_UNTIL,
    truncation: RelativeTruncation | None = None,
    *,
    batch_size: int | None = None,
) -> ValuationResult:
    """Shapley values from sampled permutations; deterministic for a seed and a sample-based rule.

    `batch_size` permutations are walked side by side so their cache misses evaluate in
    parallel; it changes speed, never results (the rule is checked after every permutation).
    """
    n = game.n
    rng = np.random.default_rng(seed)
    batch = game.sample_batch(batch_size)
    u_empty, u_full = game.values([frozenset(), game.grand])
    players = np.array(game.players, dtype=object)
    acc = RunningMean(n)
    monitor = Monitor(until)
    while True:
        perms = np.argsort(rng.random((batch, n)), axis=1)
        marginals = _walk(game, players, perms, float(u_empty), float(u_full), truncation)
        for row in marginals:
            acc.add(row)
            stderr = acc.stderr()
            if monitor.done(acc.mean, stderr, acc.count):
                return ValuationResult.from_arrays(
                    game.players,
                    acc.mean,
                    stderr,
                    acc.count,
                    method=METHOD if truncation is None else TRUNCATED_METHOD,
                    seed=seed,
                    utility=game.description,
                    samples=monitor.samples,
                    stopped_by=str(until) + ("" if truncation is None else f"; {truncation}"),
                    discounted=game.discounted,
                )


def _walk(
    game: Game,
    players: npt.NDArray[np.object_],
    perms: npt.NDArray[np.intp],
    u_empty: float,
    u_full: float,
    truncation: RelativeTruncation | None,
) -> npt.NDArray[np.float64]:
    """Marginal contributions (batch × n, by player index) along each permutation."""
    batch, n = perms.shape
    marginals = np.zeros((batch, n))
    if truncation is None:
        # Every prefix is needed: one call, the most parallel work at once.
        prefixes: list[Coalition] = []
        for perm in perms:
            members: Coalition = frozenset()
            for j in perm:
                members = members | {players[j]}
                prefixes.append(members)
        u = game.values(prefixes).reshape(batch, n)
        before = np.concatenate([np.full((batch, 1), u_empty), u[:, :-1]], axis=1)
        np.put_along_axis(marginals, perms, u - before, axis=1)
        return marginals
    current: list[Coalition] = [frozenset()] * batch
    previous = np.full(batch, u_empty)
    active = np.ones(batch, dtype=bool)
    for position in range(n):
        rows = np.flatnonzero(active)
        if rows.size == 0:
            break
        step = [current[r] | {players[perms[r, position]]} for r in rows]
        u = game.values(step)
        marginals[rows, perms[rows, position]] = u - previous[rows]
        previous[rows] = u
        for r, coalition in zip(rows, step, strict=True):
            current[r] = coalition
        active[rows] = ~truncation.truncated(u, u_full, u_empty)
    return marginals
