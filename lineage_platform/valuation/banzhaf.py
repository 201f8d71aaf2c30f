"""Banzhaf values by maximum sample reuse (MSR): every sampled coalition informs every player.

    result = banzhaf(game, seed=7, until=StderrBelow(0.01) | MaxSamples(5000))

Coalitions are drawn uniformly (each player in with probability 1/2); player i's value is the
mean utility of samples containing i minus the mean of those without i (Wang & Jia, 2023).
Banzhaf values do not sum to u(N) - u(∅); they weigh all coalition sizes alike.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from lineage_platform.valuation.game import Coalition, Game
from lineage_platform.valuation.result import ValuationResult
from lineage_platform.valuation.stopping import MaxSamples, Monitor, StderrBelow, StoppingRule

DEFAULT_UNTIL: StoppingRule = StderrBelow(0.01) | MaxSamples(5000)


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
    inside = _Welford(n)
    outside = _Welford(n)
    monitor = Monitor(until)
    while True:
        masks = rng.random((batch, n)) < 0.5
        coalitions: list[Coalition] = [
            frozenset(p for p, m in zip(players, row, strict=True) if m) for row in masks
        ]
        utilities = game.values(coalitions)
        for mask, u in zip(masks, utilities, strict=True):
            inside.add(mask, u)
            outside.add(~mask, u)
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
                    method="msr-banzhaf",
                    seed=seed,
                    utility=game.description,
                    samples=monitor.samples,
                    stopped_by=str(until),
                    discounted=game.discounted,
                )


class _Welford:
    """Running mean and variance of u per player, over the samples where `mask` is set."""

    __slots__ = ("count", "m2", "mean")

    def __init__(self, n: int) -> None:
        self.count = np.zeros(n, dtype=np.int64)
        self.mean = np.zeros(n)
        self.m2 = np.zeros(n)

    def add(self, mask: npt.NDArray[np.bool_], u: float) -> None:
        self.count[mask] += 1
        delta = u - self.mean[mask]
        self.mean[mask] += delta / self.count[mask]
        self.m2[mask] += delta * (u - self.mean[mask])

    def variance_of_mean(self) -> npt.NDArray[np.float64]:
        out = np.full(self.count.shape, np.inf)
        ok = self.count >= 2
        out[ok] = self.m2[ok] / (self.count[ok] - 1) / self.count[ok]
        return out
