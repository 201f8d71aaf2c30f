"""Banzhaf values by maximum sample reuse (MSR): every sampled coalition informs every player.

    result = banzhaf(game, seed=7, until=StderrBelow(0.01) | MaxSamples(5000))

Coalitions are drawn uniformly (each player in with probability 1/2); player i's value is the
mean utility of samples containing i minus the mean of those without i (Wang & Jia, 2023).
Banzhaf values do not sum to u(N) - u(∅); they weigh all coalition sizes alike.
"""

from __future__ import annotations

import numpy as np

from lineage_platform.valuation.accumulator import RunningMean
from lineage_platform.valuation.game import Coalition, Game
from lineage_platform.valuation.result import ValuationResult
from lineage_platform.valuation.stopping import MaxSamples, Monitor, StderrBelow, StoppingRule
from lineage_platform.valuation.task import ValuationTask

METHOD = "msr-banzhaf"
DEFAULT_UNTIL: StoppingRule = StderrBelow(0.01) | MaxSamples(5000)


def run(task: ValuationTask) -> ValuationResult:
    """MSR Banzhaf of the contributor-level game (the registered method)."""
    return banzhaf(task.contributor_game(), task.seed, task.until)


def banzhaf(
    game: Game,
    seed: int,
    until: StoppingRule = DEFAULT_UNTIL,
    *,
    batch_size: int | None = None,
) -> ValuationResult:
    """MSR Banzhaf values; deterministic for a seed and a sample-based rule."""
    n = game.n
    rng = np.random.default_rng(seed)
    batch = game.sample_batch(batch_size)
    players = game.players
    inside = RunningMean(n)
    outside = RunningMean(n)
    monitor = Monitor(until)
    while True:
        masks = rng.random((batch, n)) < 0.5
        coalitions: list[Coalition] = [
            frozenset(p for p, m in zip(players, row, strict=True) if m) for row in masks
        ]
        utilities = game.values(coalitions)
        for mask, u in zip(masks, utilities, strict=True):
            inside.add(u, where=mask)
            outside.add(u, where=~mask)
            values = np.where((inside.count > 0) & (outside.count > 0),
                              inside.mean - outside.mean, 0.0)
            stderr = np.sqrt(inside.variance_of_mean() + outside.variance_of_mean())
            # Every sample informs every player: once as "with i", or as "without i".
            counts = inside.count + outside.count
            if monitor.done(values, stderr, counts):
                return ValuationResult.from_arrays(
                    players,
                    values,
                    stderr,
                    counts,
                    method=METHOD,
                    seed=seed,
                    utility=game.description,
                    samples=monitor.samples,
                    stopped_by=str(until),
                    discounted=game.discounted,
                )

