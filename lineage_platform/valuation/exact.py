"""Exact Shapley values: every one of the 2^n coalitions is evaluated once.

    result = exact_shapley(game)                    # refuses more than 16 players
    result = exact_shapley(game, max_players=20)    # if you can afford 2^20 utility calls
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from lineage_platform.errors import ValuationError
from lineage_platform.valuation.game import Coalition, Game
from lineage_platform.valuation.result import ValuationResult
from lineage_platform.valuation.task import ValuationTask

METHOD = "exact-shapley"
DEFAULT_MAX_PLAYERS = 16


def run(task: ValuationTask) -> ValuationResult:
    """Exact Shapley of the contributor-level game (the registered method)."""
    return exact_shapley(task.contributor_game())


def exact_shapley(game: Game, *, max_players: int = DEFAULT_MAX_PLAYERS) -> ValuationResult:
    """phi_i = sum over S not containing i of |S|!(n-|S|-1)!/n! * (u(S ∪ {i}) - u(S))."""
    n = game.n
    if n > max_players:
        raise ValuationError(
            f"exact_shapley evaluates 2^{n} coalitions for {n} players, above the limit of "
            f"{max_players}; use permutation_shapley(game, seed=..., until=...) (Monte Carlo) "
            "or raise max_players"
        )
    u = game.values(all_coalitions(game.players))
    phi = shapley_from_table(u, n)
    return ValuationResult.from_arrays(
        game.players,
        phi,
        np.zeros(n),
        np.full(n, 2 ** (n - 1)),
        method=METHOD,
        seed=None,
        utility=game.description,
        samples=2**n,
        stopped_by="all coalitions",
        discounted=game.discounted,
    )


def all_coalitions(players: tuple[str, ...]) -> list[Coalition]:
    """All subsets of `players`, indexed by bitmask: bit i set means players[i] is in."""
    subsets: list[Coalition] = [frozenset()]
    for player in players:
        subsets += [s | {player} for s in subsets]
    return subsets


def shapley_from_table(u: npt.NDArray[np.float64], n: int) -> npt.NDArray[np.float64]:
    """Shapley values from u indexed by bitmask (len 2^n)."""
    masks = np.arange(2**n, dtype=np.int64)
    size = np.bitwise_count(masks).astype(np.int64)
    # 1 / (n * C(n-1, s)) = s!(n-s-1)!/n!, the chance that a random order puts S before i.
    weight = np.array([1.0 / (n * math.comb(n - 1, s)) for s in range(n)])
    phi = np.empty(n)
    for i in range(n):
        bit = np.int64(1) << i
        without = masks[(masks & bit) == 0]
        phi[i] = np.sum(weight[size[without]] * (u[without | bit] - u[without]))
    return phi
