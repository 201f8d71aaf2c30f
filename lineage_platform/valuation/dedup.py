"""Content hashes of rows, and duplicate rows credited once to the earliest signed part.

    hashes = row_hashes(X, y)                       # sha256 hex per (features, label) row
    kept = dedup_parts({"dave": (X1, y1), "frank": (X2, y2)})   # frank's copies of dave drop

A row's content is its features as float64 and its label, so a copy is caught whatever the
contributor called it; order of `parts` is signing order, earliest first.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lineage_platform.errors import ValuationError
from lineage_platform.valuation.result import Discount

Part = tuple[npt.NDArray[np.float64], npt.NDArray[np.generic]]


def row_hashes(X: npt.ArrayLike, y: npt.ArrayLike) -> list[str]:
    """sha256 hex of each row: little-endian float64 features, then the label.

    Numeric labels hash as float64 (3 and 3.0 are the same label); others as UTF-8 text.
    -0.0 and 0.0 hash alike.
    """
    x, labels = checked_part("rows", X, y)
    features = np.ascontiguousarray(x + 0.0, dtype="<f8")  # + 0.0 turns -0.0 into 0.0
    if labels.dtype.kind in "biuf":
        label_bytes = [v.tobytes() for v in np.asarray(labels, dtype="<f8") + 0.0]
    else:
        label_bytes = [b"s" + str(v).encode("utf-8") for v in labels]
    return [
        hashlib.sha256(row.tobytes() + b"|" + lab).hexdigest()
        for row, lab in zip(features, label_bytes, strict=True)
    ]


@dataclass(frozen=True, slots=True, eq=False)
class Deduplicated:
    """Parts with repeated rows removed; `kept[c]` are the row indices of c's part that remain."""

    parts: dict[str, Part]
    kept: dict[str, npt.NDArray[np.intp]]
    hashes: dict[str, list[str]]
    discounted: tuple[Discount, ...]

    @property
    def rows_discounted(self) -> int:
        return sum(d.rows for d in self.discounted)


def dedup_parts(
    parts: Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]],
    order: Sequence[str] | None = None,
) -> Deduplicated:
    """Keep each distinct row once, in the earliest part (in `order`, default: mapping order).

    Repeats inside one part also count once (a `Discount` credited to the part itself).
    Parts may end up empty.
    """
    names = ordered_names(parts, order)
    first_owner: dict[str, str] = {}
    out_parts: dict[str, Part] = {}
    kept: dict[str, npt.NDArray[np.intp]] = {}
    hashes: dict[str, list[str]] = {}
    discounted: list[Discount] = []
    for name in names:
        x, y = checked_part(name, *parts[name])
        row_ids = row_hashes(x, y)
        keep: list[int] = []
        here: set[str] = set()
        credited: Counter[str] = Counter()
        for i, h in enumerate(row_ids):
            owner = first_owner.setdefault(h, name)
            if owner == name and h not in here:
                here.add(h)
                keep.append(i)
            else:
                credited[owner] += 1
        index = np.asarray(keep, dtype=np.intp)
        out_parts[name] = (x[index], y[index])
        kept[name] = index
        hashes[name] = [row_ids[i] for i in keep]
        discounted += [Discount(name, owner, n) for owner, n in sorted(credited.items())]
    return Deduplicated(out_parts, kept, hashes, tuple(discounted))


def ordered_names(parts: Mapping[str, object], order: Sequence[str] | None) -> list[str]:
    """The contributors in signing order, checked against the parts given."""
    if not parts:
        raise ValuationError("no parts to value: the player set is empty")
    names = list(parts) if order is None else [str(n) for n in order]
    if len(set(names)) != len(names):
        dupes = sorted(n for n, c in Counter(names).items() if c > 1)
        raise ValuationError(f"duplicate contributor ids in order: {dupes}")
    if set(names) != set(parts):
        raise ValuationError(
            f"order does not match parts: missing {sorted(set(parts) - set(names))}, "
            f"unknown {sorted(set(names) - set(parts))}"
        )
    return names


def checked_part(name: str, X: npt.ArrayLike, y: npt.ArrayLike) -> Part:
    try:
        x = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValuationError(f"{name}: features must be numeric: {e}") from e
    labels = np.asarray(y)
    if x.ndim != 2:
        raise ValuationError(f"{name}: features must be 2-dimensional, got shape {x.shape}")
    if labels.ndim != 1:
        raise ValuationError(f"{name}: labels must be 1-dimensional, got shape {labels.shape}")
    if x.shape[0] != labels.shape[0]:
        raise ValuationError(f"{name}: {x.shape[0]} feature rows but {labels.shape[0]} labels")
    if not np.isfinite(x).all():
        raise ValuationError(f"{name}: features contain NaN or infinite values")
    return x, labels
