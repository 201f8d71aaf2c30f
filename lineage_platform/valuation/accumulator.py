"""Running means with their standard errors (Welford), the bookkeeping every sampling method shares.

    acc = RunningMean(n)
    acc.add(marginals)            # one sample for every player (permutation Shapley)
    acc.add(u, where=mask)        # one sample for the players in `mask` only (MSR Banzhaf)
    acc.mean, acc.stderr(), acc.count

One pass, O(n) memory, no catastrophic cancellation (Welford, 1962). The update order is fixed,
so the same samples give bit-for-bit the same means whatever the batch size.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class RunningMean:
    """Per-player count, mean and sum of squared deviations (`m2`), updated one sample at a time."""

    __slots__ = ("count", "m2", "mean")

    def __init__(self, n: int) -> None:
        self.count = np.zeros(n, dtype=np.int64)
        self.mean = np.zeros(n)
        self.m2 = np.zeros(n)

    def add(self, x: FloatArray | float, where: npt.NDArray[np.bool_] | None = None) -> None:
        """Add one sample: `x` per player, or the scalar `x` to the players `where` is set for."""
        if where is None:
            self.count += 1
            delta = x - self.mean
            self.mean += delta / self.count
            self.m2 += delta * (x - self.mean)
            return
        self.count[where] += 1
        delta = x - self.mean[where]
        self.mean[where] += delta / self.count[where]
        self.m2[where] += delta * (x - self.mean[where])

    def variance_of_mean(self) -> FloatArray:
        """Var(mean) = sample variance / count per player; inf below two samples."""
        out = np.full(self.m2.shape, math.inf)
        ok = self.count >= 2
        out[ok] = np.maximum(self.m2[ok], 0.0) / (self.count[ok] - 1) / self.count[ok]
        return out

    def stderr(self) -> FloatArray:
        """Standard error of each mean; inf below two samples."""
        return np.sqrt(self.variance_of_mean())
