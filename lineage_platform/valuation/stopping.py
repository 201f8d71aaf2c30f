"""Stopping rules for Monte Carlo valuation, composed with `|` (either) and `&` (both).

    until = StderrBelow(0.01) | MaxSamples(5000) | MaxTime(60)
    permutation_shapley(game, seed=7, until=until)

A rule is a frozen description; the sampler checks it after every sample against a `Progress`
snapshot, so a run stops at exactly the same sample whatever the batch size or job count.
`StderrBelow` or `RankStable` alone may never hold: pair them with `MaxSamples` or `MaxTime`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lineage_platform.errors import ValuationError


@dataclass(frozen=True, slots=True)
class Progress:
    """The state of a Monte Carlo run after `samples` samples."""

    samples: int
    elapsed: float
    values: npt.NDArray[np.float64]
    stderr: npt.NDArray[np.float64]
    counts: npt.NDArray[np.int64]
    rank_stable_for: int


class StoppingRule:
    """Base of all rules: `rule.done(progress)` says whether to stop; `|` and `&` compose."""

    __slots__ = ()

    def done(self, progress: Progress) -> bool:
        raise NotImplementedError

    def __or__(self, other: StoppingRule) -> StoppingRule:
        return AnyOf(_flatten(AnyOf, (self, other)))

    def __and__(self, other: StoppingRule) -> StoppingRule:
        return AllOf(_flatten(AllOf, (self, other)))


@dataclass(frozen=True, slots=True)
class MaxSamples(StoppingRule):
    """Stop after `n` samples (permutations for Shapley, subsets for Banzhaf)."""

    n: int

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValuationError(f"MaxSamples needs n >= 1, got {self.n}")

    def done(self, progress: Progress) -> bool:
        return progress.samples >= self.n

    def __str__(self) -> str:
        return f"MaxSamples({self.n})"


@dataclass(frozen=True, slots=True)
class MaxTime(StoppingRule):
    """Stop once `seconds` of wall time have passed (this rule alone is not reproducible)."""

    seconds: float

    def __post_init__(self) -> None:
        if not self.seconds > 0:
            raise ValuationError(f"MaxTime needs seconds > 0, got {self.seconds}")

    def done(self, progress: Progress) -> bool:
        return progress.elapsed >= self.seconds

    def __str__(self) -> str:
        return f"MaxTime({self.seconds:g})"


@dataclass(frozen=True, slots=True)
class StderrBelow(StoppingRule):
    """Stop when every player's standard error is below `eps`, after `min_samples` samples."""

    eps: float
    min_samples: int = 30

    def __post_init__(self) -> None:
        if not self.eps > 0:
            raise ValuationError(f"StderrBelow needs eps > 0, got {self.eps}")
        if self.min_samples < 2:
            raise ValuationError("StderrBelow needs min_samples >= 2 to estimate a variance")

    def done(self, progress: Progress) -> bool:
        if progress.samples < self.min_samples:
            return False
        return bool(np.all(progress.stderr < self.eps))

    def __str__(self) -> str:
        return f"StderrBelow({self.eps:g})"


@dataclass(frozen=True, slots=True)
class RankStable(StoppingRule):
    """Stop when the players' ranking by value has not changed for the last `samples` samples."""

    samples: int = 100

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValuationError(f"RankStable needs samples >= 1, got {self.samples}")

    def done(self, progress: Progress) -> bool:
        return progress.rank_stable_for >= self.samples

    def __str__(self) -> str:
        return f"RankStable({self.samples})"


@dataclass(frozen=True, slots=True)
class AnyOf(StoppingRule):
    """Stop when any of `rules` says so (what `a | b` builds)."""

    rules: tuple[StoppingRule, ...]

    def done(self, progress: Progress) -> bool:
        return any(rule.done(progress) for rule in self.rules)

    def __str__(self) -> str:
        return " | ".join(_paren(rule, AllOf) for rule in self.rules)


@dataclass(frozen=True, slots=True)
class AllOf(StoppingRule):
    """Stop when all of `rules` say so (what `a & b` builds)."""

    rules: tuple[StoppingRule, ...]

    def done(self, progress: Progress) -> bool:
        return all(rule.done(progress) for rule in self.rules)

    def __str__(self) -> str:
        return " & ".join(_paren(rule, AnyOf) for rule in self.rules)


def _flatten(kind: type[AnyOf] | type[AllOf], rules: tuple[StoppingRule, ...]) -> tuple[
        StoppingRule, ...]:
    flat: list[StoppingRule] = []
    for rule in rules:
        if not isinstance(rule, StoppingRule):
            raise ValuationError(f"cannot compose a stopping rule with {rule!r}")
        flat.extend(rule.rules if isinstance(rule, kind) else (rule,))
    return tuple(flat)


def _paren(rule: StoppingRule, kind: type[AnyOf] | type[AllOf]) -> str:
    return f"({rule})" if isinstance(rule, kind) else str(rule)


class Monitor:
    """Tracks elapsed time and ranking stability for a sampler; builds `Progress` snapshots."""

    __slots__ = ("_last_change", "_last_order", "_start", "_until", "samples")

    def __init__(self, until: StoppingRule) -> None:
        if not isinstance(until, StoppingRule):
            raise ValuationError(f"`until` must be a stopping rule, got {until!r}")
        self._until = until
        self._start = time.monotonic()
        self._last_order: npt.NDArray[np.intp] | None = None
        self._last_change = 0
        self.samples = 0

    def done(self, values: npt.NDArray[np.float64], stderr: npt.NDArray[np.float64],
             counts: npt.NDArray[np.int64]) -> bool:
        """Record one more sample with the current estimates; True when the rule says stop."""
        self.samples += 1
        order = np.argsort(-values, kind="stable")
        if self._last_order is None or not np.array_equal(order, self._last_order):
            self._last_order = order
            self._last_change = self.samples
        progress = Progress(
            samples=self.samples,
            elapsed=time.monotonic() - self._start,
            values=values,
            stderr=stderr,
            counts=counts,
            rank_stable_for=self.samples - self._last_change,
        )
        return self._until.done(progress)

