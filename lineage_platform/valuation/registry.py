"""The registered valuation methods: what each is called, whether it is efficient, what it needs.

    method = get_method("banzhaf")   # an alias; method.name == "msr-banzhaf", the signed name
    result = method.run(ValuationTask(parts, X_val, y_val, make_model=LogisticRegression))

A method's `name` is what its results carry in `ValuationResult.method` and what a valuation
record signs, so a registered name never changes; `aliases` are the short names people type.
Adding a method: write its module (the algorithm and a `run(task)`), add one entry to `METHODS`.
The CLI's `--method`, the example asset's config and the efficiency check all read this table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from lineage_platform.errors import UnknownMethodError, ValuationError, shown
from lineage_platform.valuation.banzhaf import run as msr_banzhaf
from lineage_platform.valuation.exact import run as exact_shapley
from lineage_platform.valuation.permutation import run as permutation_shapley
from lineage_platform.valuation.permutation import run_truncated as tmc_shapley
from lineage_platform.valuation.result import ValuationResult
from lineage_platform.valuation.rows import grand_gain as knn_rows_gain
from lineage_platform.valuation.rows import run as knn_shapley_rows
from lineage_platform.valuation.task import ValuationTask, contributor_gain

Algorithm = Callable[[ValuationTask], ValuationResult]
Gain = Callable[[ValuationTask], float]


class Players(StrEnum):
    """Who the players are. Row-level values do not depend on identities (splitting a part into
    several identities changes nothing); contributor-level values do: an explicit choice."""

    ROWS = "rows"
    CONTRIBUTORS = "contributors"


@dataclass(frozen=True, slots=True)
class ValuationMethod:
    """One valuation method; `run(task)` checks what it needs, runs it and checks its name.

    `efficient`: the values sum to u(N) − u(∅) of the game valued, which `gain` computes
    (sampled methods: up to their standard errors). `needs_model`: a model factory must be
    passed (the method trains one model per coalition).
    """

    name: str
    algorithm: Algorithm
    players: Players
    efficient: bool
    needs_model: bool
    gain: Gain | None = None
    aliases: tuple[str, ...] = ()
    summary: str = ""

    def __post_init__(self) -> None:
        if self.efficient and self.gain is None:
            raise ValuationError(f"efficient method {self.name!r} needs a gain (u(N) − u(∅))")

    def run(self, task: ValuationTask) -> ValuationResult:
        if self.needs_model and task.make_model is None:
            raise ValuationError(f"method {self.name!r} trains a model per coalition: "
                                 "pass make_model")
        result = self.algorithm(task)
        if result.method != self.name:
            raise ValuationError(f"method {self.name!r} returned a result named "
                                 f"{result.method!r}: the signed name must match the registry")
        return result

    def efficiency_target(self, task: ValuationTask) -> float | None:
        """u(N) − u(∅) that the values must sum to; None for a method that is not efficient."""
        if not self.efficient or self.gain is None:
            return None
        return self.gain(task)


ROWS, CONTRIBUTORS = Players.ROWS, Players.CONTRIBUTORS

METHODS: tuple[ValuationMethod, ...] = (
    ValuationMethod("knn-shapley-rows", knn_shapley_rows, ROWS, efficient=True, needs_model=False,
                    gain=knn_rows_gain, aliases=("knn",), summary="KNN-Shapley of rows, default"),
    ValuationMethod("exact-shapley", exact_shapley, CONTRIBUTORS, efficient=True, needs_model=True,
                    gain=contributor_gain, aliases=("exact",), summary="all 2^n coalitions"),
    ValuationMethod("permutation-shapley", permutation_shapley, CONTRIBUTORS, efficient=True,
                    needs_model=True, gain=contributor_gain, aliases=("permutation",),
                    summary="Monte Carlo Shapley"),
    ValuationMethod("tmc-shapley", tmc_shapley, CONTRIBUTORS, efficient=False, needs_model=True,
                    aliases=("tmc",), summary="truncated Monte Carlo Shapley: faster, biased"),
    ValuationMethod("msr-banzhaf", msr_banzhaf, CONTRIBUTORS, efficient=False, needs_model=True,
                    aliases=("banzhaf",), summary="Banzhaf values, maximum sample reuse"),
)


def _index(methods: tuple[ValuationMethod, ...]) -> dict[str, ValuationMethod]:
    by_name: dict[str, ValuationMethod] = {}
    for method in methods:
        for key in (method.name, *method.aliases):
            if key in by_name:
                raise ValuationError(f"valuation method name {key!r} is registered twice")
            by_name[key] = method
    return by_name


_BY_NAME = _index(METHODS)


def known_names() -> tuple[str, ...]:
    """The names `get_method` accepts: each method's short alias (or name), in registry order."""
    return tuple((m.aliases or (m.name,))[0] for m in METHODS)


def get_method(name: str) -> ValuationMethod:
    """The method registered under `name` (its signed name or an alias)."""
    method = _BY_NAME.get(name)
    if method is None:
        raise UnknownMethodError(
            f"unknown valuation method {shown(repr(name))}; known: "
            + ", ".join(f"{m.aliases[0]} ({m.name})" if m.aliases else m.name for m in METHODS)
        )
    return method
