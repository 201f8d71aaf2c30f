"""The registered valuation methods: what each is called, whether it is efficient, what it needs.

    method = get_method("banzhaf")   # an alias; method.name == "msr-banzhaf", the signed name
    result = method.run(ValuationTask(parts, X_val, y_val, make_model=LogisticRegression))

A method's `name` is what its results carry in `ValuationResult.method` and what a valuation
record signs, so a registered name never changes; `aliases` are the short names people type.
Adding a method: write its module (the algorithm and a `run(task)`), add one entry to `METHODS`.
The CLI's `--method`, the example asset's config and the efficiency check all read this table;
it imports nothing heavy, so the CLI can list the methods without loading NumPy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from importlib import import_module
from typing import TYPE_CHECKING, Any

from lineage_platform.errors import UnknownMethodError, ValuationError, shown

if TYPE_CHECKING:
    from lineage_platform.valuation.result import ValuationResult
    from lineage_platform.valuation.task import ValuationTask


class Players(StrEnum):
    """Who the players are. Row-level values do not depend on identities (splitting a part into
    several identities changes nothing); contributor-level values do: an explicit choice."""

    ROWS = "rows"
    CONTRIBUTORS = "contributors"


@dataclass(frozen=True, slots=True)
class ValuationMethod:
    """One valuation method; `run(task)` checks what it needs, runs it and checks its name.

    `runs` and `gain` name functions as "module:function" (a module of this package, or a full
    dotted path), imported on first use so that listing the methods imports no NumPy.
    `runs(task)` returns the `ValuationResult`; `gain(task)` is u(N) − u(∅) of the game valued.
    `efficient`: the values sum to that gain (sampled methods: up to their standard errors).
    `needs_model`: the task must carry a model factory (one model is trained per coalition).
    `classification_only`: the method's utility is classification accuracy by construction
    (KNN-Shapley), so a task with another score (e.g. "r2") is refused, never silently valued
    by accuracy.
    """

    name: str
    runs: str
    players: Players
    efficient: bool
    needs_model: bool
    gain: str | None = None
    aliases: tuple[str, ...] = ()
    summary: str = ""
    classification_only: bool = False

    def __post_init__(self) -> None:
        if self.efficient and self.gain is None:
            raise ValuationError(f"efficient method {self.name!r} needs a gain (u(N) − u(∅))")

    def check(self, task: ValuationTask) -> None:
        """None if the method can value `task`, else ValuationError saying why."""
        if self.needs_model and task.make_model is None:
            raise ValuationError(f"method {self.name!r} trains a model per coalition: "
                                 "pass make_model")
        scoring = task.scoring
        if self.classification_only and scoring.name != "accuracy":
            raise ValuationError(
                f"method {self.name!r} values classification only (its utility is KNN "
                f"accuracy), not score {scoring.name!r}: use a model-based method such as "
                "exact or permutation with make_model for a regressor"
            )

    def run(self, task: ValuationTask) -> ValuationResult:
        self.check(task)
        result: ValuationResult = _function(self.runs)(task)
        if result.method != self.name:
            raise ValuationError(f"method {self.name!r} returned a result named "
                                 f"{result.method!r}: the signed name must match the registry")
        return result

    def efficiency_target(self, task: ValuationTask) -> float | None:
        """u(N) − u(∅) that the values must sum to; None for a method that is not efficient."""
        if not self.efficient or self.gain is None:
            return None
        self.check(task)
        return float(_function(self.gain)(task))


ROWS, CONTRIBUTORS = Players.ROWS, Players.CONTRIBUTORS

METHODS: tuple[ValuationMethod, ...] = (
    ValuationMethod("knn-shapley-rows", "rows:run", ROWS, efficient=True, needs_model=False,
                    gain="rows:grand_gain", aliases=("knn",), summary="KNN-Shapley of rows",
                    classification_only=True),
    ValuationMethod("exact-shapley", "exact:run", CONTRIBUTORS, efficient=True, needs_model=True,
                    gain="task:contributor_gain", aliases=("exact",), summary="all coalitions"),
    ValuationMethod("permutation-shapley", "permutation:run", CONTRIBUTORS, efficient=True,
                    needs_model=True, gain="task:contributor_gain", aliases=("permutation",),
                    summary="Monte Carlo Shapley"),
    ValuationMethod("tmc-shapley", "permutation:run_truncated", CONTRIBUTORS, efficient=False,
                    needs_model=True, aliases=("tmc",), summary="truncated Monte Carlo Shapley"),
    ValuationMethod("msr-banzhaf", "msr_banzhaf:run", CONTRIBUTORS, efficient=False,
                    needs_model=True, aliases=("banzhaf",), summary="MSR Banzhaf values"),
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


def _function(ref: str) -> Callable[..., Any]:
    module, _, name = ref.partition(":")
    path = module if "." in module else f"{__package__}.{module}"
    found: Callable[..., Any] = getattr(import_module(path), name)
    return found


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
