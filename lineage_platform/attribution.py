"""Per-call attribution: which training rows, and so which contributors, decided one model call.

    rows = TrainingRows.from_parts({"alice": (Xa, ya), "bob": (Xb, yb)})   # signing order
    credits = CallAttributor(rows, k=5).attribute(X_calls, y_served)      # one row per call

For each call (its input x and the label y the model served) the players are the call's
`neighbours` nearest deduplicated training rows, and the game is the single-query KNN utility
u(S) = 1/k * #{rows with label y among the min(k, |S|) rows of S nearest x}. Its Shapley values
have the closed form of Jia et al. (2019) that `valuation/knn.py` uses for a validation set, here
for one query with its served label: with the neighbours sorted by distance (ties by row index)
and m_j = 1 when the row at rank j has label y (m_{M+1} = 0),

    s_j = sum_{i >= j} (m_i - m_{i+1}) / max(k, i)

A row's negative value counts as zero, then values are summed per contributor (clipping
the sums instead would reward splitting rows among identities). Copies are credited once:
rows repeating an earlier signed row, exactly or within the near-copy tolerance
(`near_dedup`: `valuation.dedup.near_dedup_parts` over the pooled training rows), are dropped
before the search, so the earliest signer's row is the one found. Pure NumPy and
SciPy's exact KD-tree, in bulk.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from lineage_platform.errors import ValuationError
from lineage_platform.valuation.dedup import (
    Deduplicated,
    dedup_parts,
    near_dedup_parts,
    ordered_names,
)

__all__ = [
    "METHOD",
    "WEIGHT_BITS",
    "CallAttributor",
    "CallCredits",
    "TrainingRows",
    "fixed_weights",
    "label_codes",
    "local_knn_shapley",
    "near_dedup",
    "near_dedup_against",
]

#: The method name signed in settlements and shown on receipts.
METHOD = "knn-shapley-call"
#: A call's data share is split in whole 2^-WEIGHT_BITS parts (largest remainder per call), so
#: every per-call amount of an epoch is an exact fraction over one common denominator.
WEIGHT_BITS = 24
# Calls per bulk neighbour search: bounds the (calls x neighbours) work arrays.
_CHUNK = 65_536
# Rows per KD-tree leaf: the fastest of 8-64 for 15 neighbours among 50,000 rows x 20 features.
_LEAF = 16

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Dedup = Callable[[Mapping[str, tuple[Any, Any]], Sequence[str]], Deduplicated]


def near_dedup(
    parts: Mapping[str, tuple[Any, Any]],
    order: Sequence[str],
    reference: npt.ArrayLike | None = None,
    reference_labels: npt.ArrayLike | None = None,
) -> Deduplicated:
    """Exact and near-copy dedup of the training rows: `TrainingRows.from_parts(parts, order,
    dedup=near_dedup)`, or with the model's validation rows `near_dedup_against(X_val, y_val)`.

    Without a reference the tolerance is measured on the pooled training rows, which a copier
    of about half of all rows can shrink; with one it is measured from the reference rows,
    which no contributor moves, and rows copying a reference row are credited to no one.
    """
    return near_dedup_parts(parts, order, reference=reference,
                            reference_labels=reference_labels)


def near_dedup_against(reference: npt.ArrayLike, reference_labels: npt.ArrayLike) -> Dedup:
    """`near_dedup` with the model's validation rows as the reference, counted as signed before
    every part (as the default valuation does): a copy of them, or of calls drawn from the
    same inputs, is credited to no one.

        rows = TrainingRows.from_parts(parts, dedup=near_dedup_against(X_val, y_val))
    """
    ref = np.asarray(reference, dtype=np.float64)
    labels = np.asarray(reference_labels)

    def dedup(parts: Mapping[str, tuple[Any, Any]], order: Sequence[str]) -> Deduplicated:
        return near_dedup(parts, order, ref, labels)
    return dedup


def local_knn_shapley(matches: npt.ArrayLike, k: int) -> FloatArray:
    """Closed-form Shapley values of each call's neighbours, nearest first (one row per call).

        local_knn_shapley([[True, False, True]], k=1)   # [[5/6, -1/6, 1/3]]

    `matches[q, j]`: the neighbour at rank j+1 has the label served to call q.
    Each row sums to u(all) - u(∅) = (#matches among the k nearest) / k.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValuationError(f"k must be an integer >= 1, got {k!r}")
    m = np.asarray(matches, dtype=np.float64)
    if m.ndim != 2:
        raise ValuationError(f"matches must be 2-dimensional (calls x neighbours), got {m.shape}")
    step = m.copy()
    step[:, :-1] -= m[:, 1:]
    ranks = np.arange(1, m.shape[1] + 1, dtype=np.float64)
    step /= np.maximum(float(k), ranks)
    # Reverse cumulative sum along each row: s_j = sum_{i >= j} step_i.
    return np.ascontiguousarray(np.cumsum(step[:, ::-1], axis=1)[:, ::-1])


def label_codes(
    train: npt.ArrayLike, served: npt.ArrayLike
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Integer codes of training labels and served labels in one code space.

    Served labels arrive as text (`usage` stores them so): numeric training labels are matched
    by value ("3" and "3.0" are the label 3), others by their text. A served label no training
    row has gets code -1 (it matches nothing).
    """
    y = np.asarray(train)
    out = np.asarray(served)
    if y.dtype.kind in "biuf":
        values = np.asarray(y, dtype=np.float64)
        try:
            wanted = np.asarray(out, dtype=np.float64)
        except ValueError:
            wanted = np.array([_number(v) for v in out.tolist()], dtype=np.float64)
    else:
        values = np.asarray([str(v) for v in y.tolist()], dtype=object)
        wanted = np.asarray([str(v) for v in out.tolist()], dtype=object)
    uniques, codes = np.unique(values, return_inverse=True)
    pos = np.searchsorted(uniques, wanted)
    pos_c = np.minimum(pos, len(uniques) - 1)
    found = (pos < len(uniques)) & (uniques[pos_c] == wanted)
    return codes.ravel().astype(np.int64), np.where(found, pos_c, -1).astype(np.int64)


def _number(text: object) -> float:
    try:
        return float(str(text))
    except ValueError:
        return float("nan")  # matches no numeric label


@dataclass(frozen=True, slots=True, eq=False)
class TrainingRows:
    """The deduplicated training rows a model learnt from, each owned by one contributor.

        rows = TrainingRows.from_parts(parts, order)   # rows.owner[i]: index into contributors
    """

    x: FloatArray
    y: npt.NDArray[np.generic]
    owner: npt.NDArray[np.int64]
    contributors: tuple[str, ...]  # signing order
    dedup: Deduplicated | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.x.ndim != 2 or self.x.shape[0] == 0:
            raise ValuationError("per-call attribution needs at least one training row")
        if not (len(self.y) == len(self.owner) == self.x.shape[0]):
            raise ValuationError("training rows, labels and owners differ in length")

    @property
    def dimension(self) -> int:
        return int(self.x.shape[1])

    @classmethod
    def from_parts(
        cls,
        parts: Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]],
        order: Sequence[str] | None = None,
        dedup: Dedup = dedup_parts,
    ) -> TrainingRows:
        """Rows of every part, copies credited once to the earliest part in `order`."""
        names = ordered_names(parts, order)
        kept = dedup(parts, names)
        xs = [np.asarray(kept.parts[c][0], dtype=np.float64) for c in names]
        ys = [np.asarray(kept.parts[c][1]) for c in names]
        owner = np.repeat(np.arange(len(names), dtype=np.int64), [len(v) for v in ys])
        return cls(np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys), owner,
                   tuple(names), kept)


@dataclass(frozen=True, slots=True, eq=False)
class CallCredits:
    """Each call's positive contributor credits, in compressed rows (CSR).

    Call q's credits are `contributor[indptr[q]:indptr[q+1]]` (indices into `contributors`,
    which are sorted by id; ascending) with `credit[...]` > 0. A call with no positive credit
    (its label matches none of its neighbours) has none: settlement pays its data share by the
    global valuation instead.
    """

    contributors: tuple[str, ...]
    indptr: IntArray
    contributor: IntArray
    credit: FloatArray
    k: int
    neighbours: int

    @property
    def calls(self) -> int:
        return len(self.indptr) - 1

    def of(self, call: int) -> dict[str, float]:
        """One call's credits by contributor id."""
        lo, hi = int(self.indptr[call]), int(self.indptr[call + 1])
        return {self.contributors[int(c)]: float(v)
                for c, v in zip(self.contributor[lo:hi], self.credit[lo:hi], strict=True)}

    def totals(self) -> dict[str, float]:
        """Credit summed over all calls, by contributor (a summary, not what pays)."""
        sums = np.bincount(self.contributor, weights=self.credit,
                           minlength=len(self.contributors))
        return {c: float(v) for c, v in zip(self.contributors, sums, strict=True)}


class CallAttributor:
    """Attributes calls to a model's training rows by single-query KNN-Shapley (module doc).

        credits = CallAttributor(rows, k=5, neighbours=15).attribute(X, served, n_jobs=2)
    """

    def __init__(self, rows: TrainingRows, k: int = 5, neighbours: int = 15) -> None:
        from lineage_platform.extras import require

        # SciPy's exact KD-tree (scikit-learn depends on SciPy, so the extra brings it): about
        # twice as fast as scikit-learn's for 15 neighbours in 20 dimensions, and it searches
        # on several threads itself.
        cKDTree = require("scipy.spatial", extra="attribution").cKDTree

        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValuationError(f"k must be an integer >= 1, got {k!r}")
        if isinstance(neighbours, bool) or not isinstance(neighbours, int) or neighbours < k:
            raise ValuationError(f"neighbours must be an integer >= k ({k}), got {neighbours!r}")
        self.rows = rows
        self.k = k
        self.neighbours = min(neighbours, rows.x.shape[0])
        self._tree = cKDTree(rows.x, leafsize=_LEAF, balanced_tree=False)
        self._leaves = _LeafOrder(self._tree)
        # Credits name contributors by their rank in id order, so a call's credits come out
        # sorted by id (the order leaves list them and ties are broken in).
        self._names = tuple(sorted(rows.contributors))
        rank = {c: i for i, c in enumerate(self._names)}
        self._owner = np.asarray([rank[c] for c in rows.contributors], dtype=np.int64)[
            rows.owner]

    def attribute(
        self, inputs: npt.ArrayLike, served: npt.ArrayLike, n_jobs: int = 1
    ) -> CallCredits:
        """Credits of every call; `inputs` (calls x features), `served` one label per call.
        `n_jobs` threads search the tree; the credits do not depend on it."""
        x = np.asarray(inputs, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.rows.dimension:
            raise ValuationError(f"call inputs must be (calls x {self.rows.dimension}), got "
                                 f"{x.shape}")
        if not np.isfinite(x).all():
            raise ValuationError("call inputs contain NaN or infinite values")
        y_codes, out_codes = label_codes(self.rows.y, served)
        if len(out_codes) != x.shape[0]:
            raise ValuationError(f"{x.shape[0]} call inputs but {len(out_codes)} served labels")
        n_calls = x.shape[0]
        # Calls are searched in the order of the tree leaf they fall in: neighbouring calls then
        # walk the same nodes while they are in cache (2-3x faster than arrival order). Each
        # call's neighbours do not depend on the order; credits go back to arrival order below.
        visit = self._leaves.order(x)
        counts = np.zeros(n_calls, dtype=np.int64)
        found: list[tuple[IntArray, FloatArray]] = []
        for s in range(0, n_calls, _CHUNK):
            calls = visit[s:s + _CHUNK]
            n, owner, credit = self._chunk(x[calls], out_codes[calls], y_codes, n_jobs)
            counts[calls] = n
            found.append((owner, credit))
        indptr = np.zeros(n_calls + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        contributor = np.empty(int(indptr[-1]), dtype=np.int64)
        credit = np.empty(int(indptr[-1]), dtype=np.float64)
        if found:
            # Entry e of the visit-ordered credits belongs to call visit[p] (p: its visit rank)
            # and goes to that call's slot in arrival order.
            owners = np.concatenate([f[0] for f in found])
            credits = np.concatenate([f[1] for f in found])
            per_visit = counts[visit]
            rank = np.repeat(np.arange(n_calls, dtype=np.int64), per_visit)
            first = np.zeros(n_calls, dtype=np.int64)
            np.cumsum(per_visit[:-1], out=first[1:])
            dest = indptr[visit[rank]] + np.arange(len(owners), dtype=np.int64) - first[rank]
            contributor[dest] = owners
            credit[dest] = credits
        return CallCredits(self._names, indptr, contributor, credit, self.k, self.neighbours)

    def _chunk(
        self, x: FloatArray, out: IntArray, y_codes: IntArray, n_jobs: int
    ) -> tuple[IntArray, IntArray, FloatArray]:
        n, m = x.shape[0], self.neighbours
        dist, idx = self._tree.query(x, k=m, workers=max(1, n_jobs))
        dist = np.asarray(dist, dtype=np.float64).reshape(n, m)
        idx = np.asarray(idx, dtype=np.int64).reshape(n, m)
        # Equal distances in row-index order, as the closed form's tie rule says.
        order = np.lexsort((idx, dist), axis=1)
        idx = np.take_along_axis(idx, order, axis=1)
        # A row's negative value counts as zero before the sums: clipping after them would
        # pay a contributor for splitting into identities (each identity's negative rows no
        # longer offset its positive ones; +2.5% for 4 identities on breast_cancer).
        values = np.maximum(local_knn_shapley(y_codes[idx] == out[:, None], self.k), 0.0)
        owners = self._owner[idx]
        # Sum per (call, contributor): sort each call's neighbours by owner, add runs.
        by_owner = np.argsort(owners, axis=1, kind="stable")
        owners = np.take_along_axis(owners, by_owner, axis=1).ravel()
        values = np.take_along_axis(values, by_owner, axis=1).ravel()
        call = np.repeat(np.arange(n, dtype=np.int64), m)
        starts = np.flatnonzero(np.r_[True, (owners[1:] != owners[:-1]) | (call[1:] != call[:-1])])
        sums = np.add.reduceat(values, starts)
        keep = sums > 0.0
        callers = call[starts][keep]
        return (np.bincount(callers, minlength=n).astype(np.int64), owners[starts][keep],
                sums[keep])


class _LeafOrder:
    """The tree's splits as arrays, to find the leaf each call falls in without a search."""

    def __init__(self, tree: Any) -> None:
        dims: list[int] = []
        splits: list[float] = []
        lesser: list[int] = []
        starts: list[int] = []
        queue = [tree.tree]  # breadth first: node i's children are appended together
        for node in queue:
            dims.append(int(node.split_dim))
            splits.append(float(node.split))
            starts.append(int(node.start_idx))
            if node.split_dim < 0:
                lesser.append(-1)
            else:
                lesser.append(len(queue))
                queue.extend((node.lesser, node.greater))
        self._dim = np.asarray(dims, dtype=np.int64)
        self._split = np.asarray(splits, dtype=np.float64)
        self._lesser = np.asarray(lesser, dtype=np.int64)
        self._start = np.asarray(starts, dtype=np.int64)

    def order(self, x: FloatArray) -> IntArray:
        """Calls sorted by their leaf's place in the tree (stable: ties in arrival order)."""
        node = np.zeros(x.shape[0], dtype=np.int64)
        inner = np.flatnonzero(self._dim[node] >= 0)
        while len(inner):
            at = node[inner]
            right = x[inner, self._dim[at]] > self._split[at]
            node[inner] = self._lesser[at] + right
            inner = inner[self._dim[node[inner]] >= 0]
        return np.argsort(self._start[node], kind="stable").astype(np.int64)


def fixed_weights(credits: CallCredits, bits: int = WEIGHT_BITS) -> IntArray:
    """Each call's credits as integers summing to exactly 2**bits (calls with credit).

        w = fixed_weights(credits)   # w[indptr[q]:indptr[q+1]] sum to 2**24 for call q

    Floor of each share of 2**bits, then one more unit to the largest remainders, ties to the
    contributor id that sorts first: the weights are a deterministic function of the credits,
    so the call's money stays an exact fraction and a verifier gets the same integers.
    """
    nnz = len(credits.credit)
    counts = np.diff(credits.indptr)
    if nnz == 0:
        return np.zeros(0, dtype=np.int64)
    call = np.repeat(np.arange(credits.calls, dtype=np.int64), counts)
    totals = np.bincount(call, weights=credits.credit, minlength=credits.calls)
    share = credits.credit / totals[call] * float(1 << bits)
    floor = np.floor(share)
    weights = floor.astype(np.int64)
    # Sums of at most `neighbours` integers below 2**bits: exact in float64.
    given = np.bincount(call, weights=weights, minlength=credits.calls).astype(np.int64)
    leftover = np.where(counts > 0, (1 << bits) - given, 0)
    if (leftover < 0).any() or (leftover > counts).any():
        raise ValuationError("per-call weights do not round to their total (non-finite credit?)")
    # One row per call, its entries in id order (padding last): a stable sort by remainder,
    # largest first, leaves equal remainders in id order; the first `leftover` get a unit.
    width = int(counts.max())
    position = np.arange(nnz) - credits.indptr[:-1][call]
    rests = np.full((credits.calls, width), np.inf)
    rests[call, position] = floor - share
    ranked = np.argsort(rests, axis=1, kind="stable")
    winners = np.arange(width)[None, :] < leftover[:, None]
    rows_, cols = np.nonzero(winners)
    weights[credits.indptr[:-1][rows_] + ranked[rows_, cols]] += 1
    return weights
