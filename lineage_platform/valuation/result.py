"""What a valuation returns: one value per player with its uncertainty, method, seed and digest.

    result = exact_shapley(game)
    result.as_dict(), result.shares(), result.to_details()  # details go into a signed record
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from lineage_platform.errors import ValuationError


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
        clipped = [max(v, 0.0) for v in self.values]
        total = math.fsum(clipped)
        if total <= 0.0:
            return dict.fromkeys(self.players, 0.0)
        return {p: v / total for p, v in zip(self.players, clipped, strict=True)}

    def canonical_json(self) -> str:
        """`{player: value}` as RFC 8785 JSON (sorted keys, no spaces, ECMAScript numbers)."""
        items = sorted(self.as_dict().items(), key=lambda kv: kv[0].encode("utf-16-be"))
        body = ",".join(f"{json.dumps(p, ensure_ascii=False)}:{_es_number(v)}" for p, v in items)
        return "{" + body + "}"

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


def _es_number(x: float) -> str:
    """ECMAScript Number::toString for a finite double, as RFC 8785 requires."""
    if not math.isfinite(x):
        raise ValuationError(f"cannot serialise non-finite value {x!r}")
    if x == 0.0:
        return "0"
    sign = "-" if x < 0 else ""
    mantissa, _, exp_text = repr(abs(x)).partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    digits = (int_part + frac_part).lstrip("0")
    # Position of the decimal point relative to the first significant digit.
    if int_part == "0":
        point = -(len(frac_part) - len(frac_part.lstrip("0")))
    else:
        point = len(int_part) + (int(exp_text) if exp_text else 0)
    digits = digits.rstrip("0") or "0"
    k = len(digits)
    if k <= point <= 21:
        body = digits + "0" * (point - k)
    elif 0 < point <= 21:
        body = digits[:point] + "." + digits[point:]
    elif -6 < point <= 0:
        body = "0." + "0" * (-point) + digits
    else:
        exponent = point - 1
        head = digits[0] + ("." + digits[1:] if k > 1 else "")
        body = f"{head}e{'+' if exponent > 0 else '-'}{abs(exponent)}"
    return sign + body
