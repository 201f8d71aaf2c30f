"""What a valuation returns: one value per player with its uncertainty, method, seed and digest.

    result = exact_shapley(game)
    result.as_dict(), result.shares(), result.to_details()  # details go into a signed record
    shares_of({"alice": 0.3, "bob": -0.1})   # the one clip rule, for values read from records
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from lineage_platform.canonical import canonical_json
from lineage_platform.errors import RecordError, ValuationError


@dataclass(frozen=True, slots=True)
class Discount:
    """`rows` rows of `contributor` repeat content that the earlier part `credited_to` supplied."""

    contributor: str
    credited_to: str
    rows: int

    def __post_init__(self) -> None:
        if self.rows < 1:
            raise ValuationError(f"discount for {self.contributor!r}: rows must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return {"contributor": self.contributor, "credited_to": self.credited_to, "rows": self.rows}


@dataclass(frozen=True, slots=True)
class ValuationResult:
    """Values and their standard errors, in the order of `players`.

    `counts[i]` is how many samples player i's value averages (marginal contributions for
    Monte Carlo, coalitions for exact, rows credited for the row-level KNN method); `samples`
    is the run's total (permutations, subsets, coalitions or rows). A stderr of `inf` means
    too few samples to estimate it; exact methods report 0.
    """

    players: tuple[str, ...]
    values: tuple[float, ...]
    stderr: tuple[float, ...]
    counts: tuple[int, ...]
    method: str
    seed: int | None
    utility: str
    samples: int
    stopped_by: str = ""
    discounted: tuple[Discount, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.players)
        if n == 0:
            raise ValuationError("a valuation result needs at least one player")
        if len(set(self.players)) != n:
            raise ValuationError(f"duplicate player ids in result: {_duplicates(self.players)}")
        for name, column in (
            ("values", self.values),
            ("stderr", self.stderr),
            ("counts", self.counts),
        ):
            if len(column) != n:
                raise ValuationError(f"result has {n} players but {len(column)} {name}")
        bad = [p for p, v in zip(self.players, self.values, strict=True) if not math.isfinite(v)]
        if bad:
            raise ValuationError(f"non-finite value for player(s) {bad}")
        if any(math.isnan(s) or s < 0 for s in self.stderr):
            raise ValuationError("standard errors must be >= 0 (inf allowed, NaN not)")

    @classmethod
    def from_arrays(
        cls,
        players: Sequence[str],
        values: npt.ArrayLike,
        stderr: npt.ArrayLike,
        counts: npt.ArrayLike,
        *,
        method: str,
        seed: int | None,
        utility: str,
        samples: int,
        stopped_by: str = "",
        discounted: Sequence[Discount] = (),
    ) -> ValuationResult:
        """Build from NumPy arrays or lists, converting to plain Python floats and ints."""
        return cls(
            players=tuple(str(p) for p in players),
            values=tuple(float(v) for v in np.asarray(values, dtype=np.float64).ravel()),
            stderr=tuple(float(s) for s in np.asarray(stderr, dtype=np.float64).ravel()),
            counts=tuple(int(c) for c in np.asarray(counts, dtype=np.int64).ravel()),
            method=method,
            seed=seed,
            utility=utility,
            samples=int(samples),
            stopped_by=stopped_by,
            discounted=tuple(discounted),
        )

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.players, self.values, strict=True))

    def stderr_dict(self) -> dict[str, float]:
        return dict(zip(self.players, self.stderr, strict=True))

    def shares(self) -> dict[str, float]:
        """Values with negatives clipped to 0, normalised to sum to 1 (all 0 if none positive)."""
        return shares_of(self.as_dict())

    def canonical_json(self) -> str:
        """`{player: value}` as RFC 8785 JSON (sorted keys, no spaces, ECMAScript numbers)."""
        try:
            return canonical_json(self.as_dict()).decode("utf-8")
        except RecordError as e:
            raise ValuationError(f"valuation result cannot be serialised: {e}") from None

    def digest(self) -> str:
        """sha256 hex of `canonical_json()`: identical values give identical digests."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()

    def to_details(self) -> dict[str, Any]:
        """A JSON-safe summary for a signed `valuation` record (infinite stderr becomes None)."""
        return {
            "method": self.method,
            "seed": self.seed,
            "samples": self.samples,
            "stopped_by": self.stopped_by,
            "utility": self.utility,
            "digest": f"sha256:{self.digest()}",
            "values": self.as_dict(),
            "stderr": {
                p: (s if math.isfinite(s) else None)
                for p, s in zip(self.players, self.stderr, strict=True)
            },
            "counts": dict(zip(self.players, self.counts, strict=True)),
            "discounted": {
                "rows": sum(d.rows for d in self.discounted),
                "by_contributor": [d.to_dict() for d in self.discounted],
            },
        }


def _duplicates(items: Sequence[str]) -> list[str]:
    return sorted(p for p, n in Counter(items).items() if n > 1)


def clip(value: float | None) -> float:
    """The clip rule: a negative (or missing) value counts as zero; nothing earns below zero."""
    return max(value or 0.0, 0.0)


def shares_of(values: Mapping[str, float | None]) -> dict[str, float]:
    """`values` clipped by `clip`, normalised to sum to 1 (all 0 if none is positive)."""
    clipped = {p: clip(v) for p, v in values.items()}
    total = math.fsum(clipped.values())
    if total <= 0.0:
        return dict.fromkeys(clipped, 0.0)
    return {p: v / total for p, v in clipped.items()}
