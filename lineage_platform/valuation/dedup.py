"""Content hashes of rows, and duplicate rows credited once to the earliest signed part.

    hashes = row_hashes(X, y)                       # sha256 hex per (features, label) row
    kept = dedup_parts({"dave": (X1, y1), "frank": (X2, y2)})   # frank's copies of dave drop
    kept = near_dedup_parts({"dave": (X1, y1), "frank": (X1 + noise, y1)},
                            reference=X_val, reference_labels=y_val)   # so do near-copies

A row's content is its features as float64 and its label, so a copy is caught whatever the
contributor called it; order of `parts` is signing order, earliest first. `near_dedup_parts`
also merges rows a little noise apart: same label, normalised distance within a tolerance
derived from the data's own nearest-neighbour distances, and (given the validation labels)
drops copies of the validation rows (`NearCopyRule`; docs/performance.md, "Near-copies and
manipulation", derives the fraction).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from lineage_platform.errors import ValuationError
from lineage_platform.valuation.result import Discount, NearCopyRule

Part = tuple[npt.NDArray[np.float64], npt.NDArray[np.generic]]
FloatArray = npt.NDArray[np.float64]
# Rows per block of the pair search, and elements per distance matrix (4M float64 = 32 MB).
_BLOCK = 256
_CHUNK = 4_000_000

#: Tolerance = NEAR_FRACTION x the median nearest-neighbour distance (docs/performance.md,
#: "Near-copies and manipulation"). Genuine distinct rows lie at >= 0.25x that median from their
#: nearest neighbour in the datasets measured (digits, breast_cancer, wine, 50k Gaussian), so 0.1
#: keeps them apart with a margin of 2.5x or more; noise of 1% of each feature's std moves a row
#: 0.16-0.25x of the tolerance (caught), noise of 5% 0.8-1.3x (at the edge: beyond it a row counts
#: as new data).
NEAR_FRACTION = 0.1
#: A feature's scale is at least this times the median positive feature std: without a floor, a
#: copier's tiny noise in a feature that is constant in honest data would be normalised to huge.
SCALE_FLOOR = 0.1
#: Rows whose nearest-neighbour distance is measured for the median (evenly spaced, signing order).
NN_SAMPLE = 1000
#: `Discount.credited_to` of training rows that copy a validation (reference) row: no one is
#: paid for them; a part may not use this id when reference labels are given.
HELD_OUT = "(validation rows)"


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
    near_copies: NearCopyRule | None = None

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


def near_dedup_parts(
    parts: Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]],
    order: Sequence[str] | None = None,
    *,
    reference: npt.ArrayLike | None = None,
    reference_labels: npt.ArrayLike | None = None,
    fraction: float = NEAR_FRACTION,
    scale_floor: float = SCALE_FLOOR,
) -> Deduplicated:
    """`dedup_parts`, then near-copies credited once: a row with the same label as an earlier row
    (signing order, then row order) within `NearCopyRule.tolerance` of it is dropped and credited
    to the part that signed the earliest row of its chain, as an exact copy is.

        d = near_dedup_parts(parts, order, reference=X_val)   # d.kept[c]: c's rows still valued
        d.discounted   # Discount(copier, credited_to, rows, near=...); d.near_copies: the rule

    `reference` (the validation rows: the model owner's, not a contributor's) sets the scale:
    features are divided by their std over it, and the tolerance is `fraction` x the median
    distance from a reference row to its nearest training row, which copies of training rows,
    however many, do not shrink. Without `reference` both come from the pooled training rows
    (a sample's distances to their nearest other row), which a copier of more than about half
    the rows can shrink. With `reference_labels` too, the reference rows count as signed before
    every part: a training row within the tolerance of a reference row with its label (a copy
    of the validation rows, which would score itself) is not valued, a `Discount` credited to
    `HELD_OUT`. `fraction` 0 keeps exact dedup only. Bulk NumPy: pairs are searched in a band
    along each label's first principal axis, which a pair within the tolerance cannot leave, so
    no pair is missed and no per-row Python loop runs.
    """
    if not (np.isfinite(fraction) and fraction >= 0):
        raise ValuationError(f"near-copy fraction must be finite and >= 0, got {fraction}")
    if not (np.isfinite(scale_floor) and scale_floor >= 0):
        raise ValuationError(f"scale floor must be finite and >= 0, got {scale_floor}")
    names = ordered_names(parts, order)
    exact = dedup_parts(parts, names)
    ref = None if reference is None else _reference(reference)
    ref_y = None if reference_labels is None else np.asarray(reference_labels)
    if ref_y is not None and (ref is None or ref_y.shape != (ref.shape[0],)):
        raise ValuationError("reference_labels need reference rows, one label per row")
    measured_on = "pooled" if ref is None else "reference"
    if ref_y is not None and HELD_OUT in names:
        raise ValuationError(f"contributor id {HELD_OUT!r} is reserved for validation copies")
    sizes = [len(exact.kept[n]) for n in names]
    n = sum(sizes)
    if n == 0:
        rule = NearCopyRule(float(fraction), float(scale_floor), 0.0, 0.0, 0, measured_on)
        return Deduplicated(exact.parts, exact.kept, exact.hashes, exact.discounted, rule)
    x = np.concatenate([exact.parts[c][0] for c in names])
    y = np.concatenate([np.asarray(exact.parts[c][1]) for c in names])
    if ref is not None and ref.shape[1] != x.shape[1]:
        raise ValuationError(f"reference rows have {ref.shape[1]} features, the parts "
                             f"{x.shape[1]}")
    owner = np.repeat(np.arange(len(names)), sizes)
    scale = feature_scale(x if ref is None else ref, scale_floor)
    z = x / scale
    if ref is None:
        held = held_exact = np.zeros(n, dtype=bool)
        held_tolerance = 0.0
        median_nn, sampled = _median_nn(z)
    else:
        # Copies of the validation rows are found with a tolerance from the validation rows'
        # own spacing (nothing a contributor submits moves it) and left out of the median,
        # which they would otherwise shrink: it measures from those rows to the training rows.
        zr = ref / scale
        held_tolerance = 0.0 if ref_y is None else float(fraction) * _median_nn(zr)[0]
        held, held_exact, median_nn, sampled = _from_reference(zr, ref_y, z, y, held_tolerance)
    tolerance = float(fraction) * median_nn
    rule = NearCopyRule(float(fraction), float(scale_floor), median_nn, tolerance, sampled,
                        measured_on, held_tolerance)
    rest = np.flatnonzero(~held)
    first, later = near_pairs(z[rest], y[rest], tolerance)
    first, later = rest[first], rest[later]
    if len(later) == 0 and not held.any():
        return Deduplicated(exact.parts, exact.kept, exact.hashes, exact.discounted, rule)
    anchor = np.arange(n)
    np.minimum.at(anchor, later, first)  # each row's earliest near row, or itself
    root = anchor
    while True:  # pointer jumping: chains shorten by half each step
        nxt = root[root]
        if np.array_equal(nxt, root):
            break
        root = nxt
    near_dropped = anchor != np.arange(n)
    dropped = near_dropped | held
    credited = (*names, HELD_OUT)
    counts: dict[tuple[int, int], list[int]] = {}
    name_index = {c: i for i, c in enumerate(names)}
    for d in exact.discounted:
        counts[(name_index[d.contributor], name_index[d.credited_to])] = [d.rows, 0]
    to = np.where(held, len(names), owner[root])
    who_to = np.stack([owner[dropped], to[dropped]])
    pairs, inverse, n_rows = np.unique(who_to, axis=1, return_inverse=True, return_counts=True)
    # Exact copies among the dropped rows are only of validation rows (dedup_parts ran first).
    n_exact = np.bincount(inverse.ravel(), weights=held_exact[dropped],
                          minlength=pairs.shape[1])
    for (who, t), k, e in zip(pairs.T.tolist(), n_rows.tolist(), n_exact.tolist(), strict=True):
        entry = counts.setdefault((who, t), [0, 0])
        entry[0] += k
        entry[1] += k - round(e)
    discounted = tuple(
        Discount(names[who], credited[t], rows, near)
        for who, t, rows, near in sorted(
            ((w, t, r, k) for (w, t), (r, k) in counts.items()),
            key=lambda e: (e[0], credited[e[1]]),
        )
    )
    bounds = np.cumsum([0, *sizes])
    out_parts: dict[str, Part] = {}
    kept: dict[str, npt.NDArray[np.intp]] = {}
    hashes: dict[str, list[str]] = {}
    for i, c in enumerate(names):
        stay = ~dropped[bounds[i]: bounds[i + 1]]
        px, py = exact.parts[c]
        out_parts[c] = (px[stay], py[stay])
        kept[c] = exact.kept[c][stay]
        hashes[c] = [h for h, s in zip(exact.hashes[c], stay.tolist(), strict=True) if s]
    return Deduplicated(out_parts, kept, hashes, discounted, rule)


def feature_scale(x: npt.NDArray[np.float64], scale_floor: float = SCALE_FLOOR) -> FloatArray:
    """Each feature's std over `x`, at least `scale_floor` x the median positive std (1 if every
    feature is constant): what near-copy distances are measured in."""
    std = x.std(axis=0)
    positive = std[std > 0]
    if positive.size == 0:
        return np.ones_like(std)
    floor = scale_floor * float(np.median(positive))
    return np.maximum(std, floor) if floor > 0 else np.where(std > 0, std, 1.0)


def _reference(reference: npt.ArrayLike) -> FloatArray:
    try:
        ref = np.asarray(reference, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValuationError(f"reference rows must be numeric: {e}") from e
    if ref.ndim != 2 or ref.shape[0] == 0:
        raise ValuationError(f"reference rows must be a non-empty 2-d array, got {ref.shape}")
    if not np.isfinite(ref).all():
        raise ValuationError("reference rows contain NaN or infinite values")
    return ref


def _median_nn(z: FloatArray) -> tuple[float, int]:
    """Median over up to NN_SAMPLE evenly spaced rows of `z` of the distance to their nearest
    other row, and how many rows were sampled."""
    n = z.shape[0]
    if n < 2:
        return 0.0, 0
    sample = _sample(n)
    left, right = _augmented(z[sample], z)
    nearest = np.empty(len(sample))
    step = max(1, _CHUNK // n)
    for s in range(0, len(sample), step):
        d2 = left[s: s + step] @ right.T
        d2[np.arange(d2.shape[0]), sample[s: s + step]] = np.inf
        nearest[s: s + step] = d2.min(axis=1)
    return float(np.median(np.sqrt(np.maximum(nearest, 0.0)))), len(sample)


def _sample(n: int) -> npt.NDArray[np.intp]:
    return np.unique(np.linspace(0, n - 1, min(n, NN_SAMPLE)).round().astype(np.intp))


def _from_reference(
    zr: FloatArray, yr: npt.NDArray[np.generic] | None, z: FloatArray,
    y: npt.NDArray[np.generic], tolerance: float,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_], float, int]:
    """One pass over the reference-by-training distances: which training rows lie within
    `tolerance` of a reference row with their label (`yr` None: none), which of those are equal
    to it, and the median over up to NN_SAMPLE reference rows of the distance to their nearest
    training row that is not such a copy (and how many were sampled)."""
    n = z.shape[0]
    held = np.zeros(n, dtype=bool)
    equal = np.zeros(n, dtype=bool)
    check = yr is not None and tolerance > 0
    codes_r = codes = np.zeros(0, dtype=np.intp)
    if check:
        try:
            _, all_codes = np.unique(np.concatenate([np.asarray(yr), np.asarray(y)]),
                                     return_inverse=True)
        except TypeError as e:
            raise ValuationError(f"labels cannot be compared: {e}") from e
        codes_r, codes = all_codes.ravel()[: len(zr)], all_codes.ravel()[len(zr):]
    sample = _sample(len(zr))
    rows = np.arange(len(zr)) if check else sample  # every reference row is checked for copies
    centre = zr.mean(axis=0)  # near the origin, |a|^2 + |b|^2 - 2ab loses little to rounding
    zr, z = zr - centre, z - centre
    left, right = _augmented(zr[rows], z)
    tol2 = tolerance * tolerance
    limit = tol2 + _rounding(zr, z, np.float64)
    nearest = np.empty(len(rows))
    step = max(1, _CHUNK // n)
    for s in range(0, len(rows), step):
        d2 = left[s: s + step] @ right.T
        d2.min(axis=1, out=nearest[s: s + step])
        if not check:
            continue
        close_rows = np.flatnonzero(nearest[s: s + step] <= limit)
        if len(close_rows) == 0:  # the usual case: no training row near any of these rows
            continue
        ii, jj = np.nonzero(d2[close_rows] <= limit)
        ii = close_rows[ii] + s
        same = codes_r[ii] == codes[jj]
        ii, jj = ii[same], jj[same]
        diff = zr[ii] - z[jj]
        close = (diff * diff).sum(axis=1) <= tol2
        held[jj[close]] = True
        equal[jj[close & (diff == 0).all(axis=1)]] = True
    nearest = nearest[np.searchsorted(rows, sample)]
    rest = np.flatnonzero(~held)
    if len(rest) < n:  # copies of reference rows found: the median is over the other rows
        left_s, right_r = _augmented(zr[sample], z[rest])
        step = max(1, _CHUNK // max(len(rest), 1))
        for s in range(0, len(sample), step):
            if len(rest):
                (left_s[s: s + step] @ right_r.T).min(axis=1, out=nearest[s: s + step])
            else:
                nearest[s: s + step] = 0.0
    return held, equal, float(np.median(np.sqrt(np.maximum(nearest, 0.0)))), len(sample)


def _augmented(a: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
    """|a_i - b_j|^2 = [a_i, |a_i|^2, 1] . [-2 b_j, 1, |b_j|^2]: one matrix product gives every
    squared distance, with no further pass over the product."""
    sq_a = np.einsum("ij,ij->i", a, a)
    sq_b = np.einsum("ij,ij->i", b, b)
    left = np.hstack([a, sq_a[:, None], np.ones((len(a), 1))])
    right = np.hstack([-2.0 * b, np.ones((len(b), 1)), sq_b[:, None]])
    return left, np.ascontiguousarray(right)


def _rounding(a: FloatArray, b: FloatArray, dtype: type[np.floating[Any]]) -> float:
    """A bound on the rounding error of `_augmented`'s product in `dtype`: each term and the
    d-term dot product err by about eps times |a|^2 + |b|^2 (d + 4 of them, generously)."""
    most = float(np.einsum("ij,ij->i", a, a).max()) + float(np.einsum("ij,ij->i", b, b).max())
    return float((a.shape[1] + 4) * np.finfo(dtype).eps * 2 * most)


def _one_blas_thread() -> AbstractContextManager[object]:
    """The pair search runs many small products, for which waking BLAS threads costs more than
    it saves (7x slower measured on a busy two-core machine): one thread while it runs."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # it comes with scikit-learn; without it BLAS keeps its thread count
        return nullcontext()
    limits: AbstractContextManager[object] = threadpool_limits(1, user_api="blas")
    return limits


def near_pairs(
    z: FloatArray, labels: npt.NDArray[np.generic], tolerance: float
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """All pairs (first[i] < later[i]) with equal labels and euclidean distance <= tolerance.

    Per label, rows are sorted by their projection on the label's first principal axis; a pair
    within the tolerance is within it along any unit axis, so only a band of that width is
    compared (a matrix product per block of rows), then each candidate is checked exactly.
    """
    empty = np.empty(0, dtype=np.intp)
    if tolerance <= 0 or z.shape[0] < 2:
        return empty, empty
    _, codes = np.unique(labels, return_inverse=True)
    codes = codes.ravel()
    firsts, laters = [empty], [empty]
    with _one_blas_thread():
        for code in range(int(codes.max()) + 1):
            _label_pairs(z, np.flatnonzero(codes == code), tolerance, firsts, laters)
    return np.concatenate(firsts), np.concatenate(laters)


def _label_pairs(
    z: FloatArray, members: npt.NDArray[np.intp], tolerance: float,
    firsts: list[npt.NDArray[np.intp]], laters: list[npt.NDArray[np.intp]],
) -> None:
    """`near_pairs` within one label's rows (`members`), appended to firsts and laters."""
    tol2 = tolerance * tolerance
    if len(members) < 2:
        return
    centred = z[members] - z[members].mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    proj = centred @ vectors[:, -1]
    by_proj = np.argsort(proj, kind="stable")
    zs, ps = centred[by_proj], proj[by_proj]
    # Squared distances in float32 for candidates only (the slack covers its rounding);
    # each candidate is then checked exactly in float64.
    left64, right64 = _augmented(zs, zs)
    left, right = left64.astype(np.float32), right64.astype(np.float32)
    limit = np.float32(tol2 + _rounding(zs, zs, np.float32))
    m = len(members)
    width = max(_BLOCK, _CHUNK // _BLOCK)
    for s in range(0, m, _BLOCK):
        e = min(s + _BLOCK, m)
        hi = int(np.searchsorted(ps, ps[e - 1] + tolerance, side="right"))
        for c in range(s, hi, width):
            c_end = min(hi, c + width)
            ii, jj = np.nonzero(left[s:e] @ right[c:c_end].T <= limit)
            ii, jj = ii + s, jj + c
            keep = jj > ii
            ii, jj = ii[keep], jj[keep]
            if len(ii) == 0:
                continue
            exact = ((zs[ii] - zs[jj]) ** 2).sum(axis=1) <= tol2
            a, b = members[by_proj[ii[exact]]], members[by_proj[jj[exact]]]
            firsts.append(np.minimum(a, b))
            laters.append(np.maximum(a, b))


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
