"""A cooperative game: players, a utility of coalitions, and a cache so each coalition runs once.

    game = Game(("alice", "bob"), utility, n_jobs=2, backend="loky")
    game.value({"alice"}), game.values([frozenset(), frozenset({"bob"})])

Utility calls that miss the cache run through joblib, so `backend` may be "loky" (the default
for `n_jobs > 1`), "threading", or a cluster backend registered with joblib (Ray, Dask).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import numpy.typing as npt
from joblib import Parallel, delayed, effective_n_jobs

from lineage_platform.errors import ValuationError
from lineage_platform.valuation.result import Discount

Coalition = frozenset[str]
Utility = Callable[[Coalition], float]


@dataclass(frozen=True, slots=True)
class Game:
    """Players (unique ids) and a utility; `u(∅)` is whatever the utility returns for `frozenset()`.

    `discounted` records rows dropped as duplicates before the game was built; every method
    copies it into its result. The cache lives as long as the game.
    """

    players: tuple[str, ...]
    utility: Utility
    description: str = ""
    n_jobs: int = 1
    backend: str = "loky"
    discounted: tuple[Discount, ...] = ()
    _cache: dict[Coalition, float] = field(default_factory=dict, init=False, repr=False,
                                           compare=False)
    _members: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        players = tuple(self.players)
        if not players:
            raise ValuationError("a game needs at least one player")
        if not all(isinstance(p, str) and p for p in players):
            raise ValuationError("player ids must be non-empty strings")
        if len(set(players)) != len(players):
            dupes = sorted({p for p in players if players.count(p) > 1})
            raise ValuationError(f"duplicate player ids: {dupes}")
        if not callable(self.utility):
            raise ValuationError("the utility must be callable on a frozenset of player ids")
        if self.n_jobs == 0:
            raise ValuationError("n_jobs must be a positive number of jobs or negative (joblib)")
        object.__setattr__(self, "players", players)
        object.__setattr__(self, "_members", frozenset(players))
        if not self.description:
            described = getattr(self.utility, "description", "")
            name = getattr(self.utility, "__qualname__", type(self.utility).__name__)
            object.__setattr__(self, "description", str(described or name))

    @property
    def n(self) -> int:
        return len(self.players)

    def sample_batch(self, batch_size: int | None) -> int:
        """How many samples a sampling method walks side by side: enough to keep every joblib
        worker busy (4 per worker), one when the game runs in this process alone."""
        jobs = effective_n_jobs(self.n_jobs)
        batch = batch_size if batch_size is not None else (1 if jobs == 1 else 4 * jobs)
        if batch < 1:
            raise ValuationError(f"batch_size must be >= 1, got {batch_size}")
        return batch

    @property
    def grand(self) -> Coalition:
        return self._members

    @property
    def cache(self) -> Mapping[Coalition, float]:
        """The utilities computed so far, by coalition (read-only)."""
        return MappingProxyType(self._cache)

    @property
    def evaluations(self) -> int:
        """How many distinct coalitions the utility has been called on."""
        return len(self._cache)

    def value(self, coalition: Iterable[str]) -> float:
        """u(coalition), computed once and cached."""
        return float(self.values([frozenset(coalition)])[0])

    def values(self, coalitions: Sequence[Coalition]) -> npt.NDArray[np.float64]:
        """u of each coalition, in order; cache misses run in parallel when `n_jobs != 1`."""
        cache = self._cache
        missing = list(dict.fromkeys(c for c in coalitions if c not in cache))
        if missing:
            for c in missing:
                if not c <= self._members:
                    raise ValuationError(f"coalition {_show(c)} has unknown players "
                                         f"{_show(c - self._members)}")
            if self.n_jobs == 1 or len(missing) == 1:
                computed = [self.utility(c) for c in missing]
            else:
                run = Parallel(n_jobs=self.n_jobs, backend=self.backend)
                computed = run(delayed(self.utility)(c) for c in missing)
            for c, u in zip(missing, computed, strict=True):
                cache[c] = _checked(c, u)
        return np.fromiter((cache[c] for c in coalitions), dtype=np.float64,
                           count=len(coalitions))

    def clear_cache(self) -> None:
        self._cache.clear()


def _checked(coalition: Coalition, u: object) -> float:
    try:
        value = float(u)  # type: ignore[arg-type]
    except (TypeError, ValueError) as e:
        raise ValuationError(f"utility of coalition {_show(coalition)} is not a number: {u!r}") \
            from e
    if not math.isfinite(value):
        raise ValuationError(f"utility of coalition {_show(coalition)} is {value}; a utility must "
                             "be finite for every coalition")
    return value


def _show(coalition: Iterable[str]) -> str:
    members = sorted(coalition)
    return "{" + ", ".join(members) + "}" if members else "∅"
