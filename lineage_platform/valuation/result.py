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
    """`rows` rows of `contributor` repeat content that the earlier part `credited_to` supplied;
    `near` of them are near-copies (within `NearCopyRule.tolerance`), the rest exact copies."""

    contributor: str
    credited_to: str
    rows: int
    near: int = 0

    def __post_init__(self) -> None:
        if self.rows < 1:
            raise ValuationError(f"discount for {self.contributor!r}: rows must be >= 1")
        if not 0 <= self.near <= self.rows:
            raise ValuationError(f"discount for {self.contributor!r}: near must be in 0..rows")

    def to_dict(self) -> dict[str, Any]:
        out = {"contributor": self.contributor, "credited_to": self.credited_to, "rows": self.rows}
        # Only when there are near-copies: records of exact-only dedup keep their old shape.
        return {**out, "near": self.near} if self.near else out


@dataclass(frozen=True, slots=True)
class NearCopyRule:
    """How near-copies were found, signed with the values so anyone can re-derive them.

        rule.to_dict()   # {"fraction": 0.1, "median_nn_distance": 3.5, "tolerance": 0.35, ...}

    `measured_on` "reference" (the validation rows): features are divided by their std over the
    reference rows (at least `scale_floor` x the median positive std, so a feature constant
    there cannot push a copy apart) and `median_nn` is the median over `sampled` reference rows
    of the distance to their nearest training row; "pooled": both from the training rows
    themselves (a sample's distance to their nearest other row). Two rows with the same label
    whose normalised distance is <= `tolerance` = `fraction` x `median_nn` are one row,
    credited to the earlier. `held_out_tolerance` > 0: the validation rows count as signed
    first, so a training row within it of a validation row with its label is not valued; it is
    `fraction` x the validation rows' own median distance to their nearest other validation row
    (no contributor can move it), and those rows are left out of `median_nn`.
    docs/performance.md ("Near-copies and manipulation") derives the fraction.
    """

    fraction: float
    scale_floor: float
    median_nn: float
    tolerance: float
    sampled: int
    measured_on: str = "reference"
    held_out_tolerance: float = 0.0

    def __post_init__(self) -> None:
        if self.measured_on not in ("reference", "pooled"):
            raise ValuationError(f"near-copy rule: measured_on must be 'reference' or 'pooled', "
                                 f"got {self.measured_on!r}")
        for name in ("fraction", "scale_floor", "median_nn", "tolerance", "held_out_tolerance"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValuationError(f"near-copy rule: {name} must be finite and >= 0, got {v}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "measured_on": ("validation rows: feature std, and distance to the nearest "
                            "training row" if self.measured_on == "reference" else
                            "pooled training rows: feature std, and distance to the nearest "
                            "other row"),
            "distance": "euclidean over features divided by their std (floored at scale_floor "
                        "x the median positive std); same label",
            "fraction": self.fraction,
            "scale_floor": self.scale_floor,
            "median_nn_distance": self.median_nn,
            "sampled_rows": self.sampled,
            "tolerance": self.tolerance,
            "validation_copy_tolerance": self.held_out_tolerance,
        }


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
    near_copies: NearCopyRule | None = None

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
        near_copies: NearCopyRule | None = None,
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
            near_copies=near_copies,
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
        """A JSON-safe summary for a signed `valuation` record (infinite stderr becomes None);
        with a near-copy rule, the rule and how many discounted rows were near-copies."""
        discounted: dict[str, Any] = {
            "rows": sum(d.rows for d in self.discounted),
            "by_contributor": [d.to_dict() for d in self.discounted],
        }
        near: dict[str, Any] = {}
        if self.near_copies is not None:
            discounted["near_rows"] = sum(d.near for d in self.discounted)
            near = {"near_copies": self.near_copies.to_dict()}
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
            "discounted": discounted,
            **near,
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
