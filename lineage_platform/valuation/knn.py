"""Exact KNN-Shapley values of training rows (Jia et al., 2019), averaged over test points.

    values = knn_shapley(X_train, y_train, X_test, y_test, k=5)   # one value per training row
    values.sum()  # == u(all rows) - u(∅): the mean share of correct labels among k neighbours

The utility is that of an unweighted k-nearest-neighbour classifier's likelihood of the right
label: u(S) = 1/k * #{correct labels among the min(k, |S|) rows of S nearest the test point}.
For one test point with training rows sorted by Euclidean distance (rank 1 nearest; ties broken
by row index, stably), m_j = 1 if the row at rank j has the test label, and m_{N+1} = 0:

    s_N = m_N / max(k, N),    s_j = s_{j+1} + (m_j - m_{j+1}) / max(k, j)

i.e. s_j = sum_{i >= j} (m_i - m_{i+1}) / max(k, i). For k <= N this is pyDVL's
`KNNShapleyValuation` exactly; for k > N, pyDVL's s_N = m_N / N breaks efficiency, this does not.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from joblib import Parallel, delayed

from lineage_platform.errors import ValuationError

FloatArray = npt.NDArray[np.float64]
# Elements of one chunk's test-by-train distance matrix: 4M float64 = 32 MB, so a chunk's
# buffers stay well inside 1 GB however large the training set.
_CHUNK_ELEMENTS = 4_000_000


def knn_shapley(
    X_train: npt.ArrayLike,
    y_train: npt.ArrayLike,
    X_test: npt.ArrayLike,
    y_test: npt.ArrayLike,
    k: int,
    *,
    chunk_size: int | None = None,
    n_jobs: int = 1,
) -> FloatArray:
    """One Shapley value per training row, the mean over test points of the closed form.

    Test points are processed `chunk_size` at a time (default: about 4M distances per chunk);
    `n_jobs > 1` runs chunks in threads (NumPy releases the GIL while sorting). `n_jobs` does not
    change the result at all; `chunk_size` changes the order of additions only (~1e-16).
    """
    x_tr, y_tr_codes, x_te, y_te_codes = _validated(X_train, y_train, X_test, y_test, k)
    n_train, n_test = x_tr.shape[0], x_te.shape[0]
    if chunk_size is None:
        chunk_size = max(1, min(n_test, _CHUNK_ELEMENTS // n_train, 256))
    if chunk_size < 1:
        raise ValuationError(f"chunk_size must be >= 1, got {chunk_size}")
    if n_jobs < 1:
        raise ValuationError(f"n_jobs must be >= 1, got {n_jobs}")
    ranks = np.arange(1, n_train + 1, dtype=np.float64)
    coef = 1.0 / np.maximum(float(k), ranks)
    # |t - x|^2 = [t, |t|^2, 1] . [-2x, 1, |x|^2]: one matrix product, no extra passes.
    train_aug = np.hstack([-2.0 * x_tr, np.ones((n_train, 1)),
                           np.einsum("ij,ij->i", x_tr, x_tr)[:, None]])
    test_aug = np.hstack([x_te, np.einsum("ij,ij->i", x_te, x_te)[:, None],
                          np.ones((n_test, 1))])
    starts = list(range(0, n_test, chunk_size))
    groups = [starts[i::n_jobs] for i in range(n_jobs)] if n_jobs > 1 else [starts]
    groups = [g for g in groups if g]

    def run(group: list[int]) -> list[FloatArray]:
        work = _Workspace(min(chunk_size, n_test), n_train)
        return [
            _chunk_values(work, train_aug, y_tr_codes, test_aug[s: s + chunk_size],
                          y_te_codes[s: s + chunk_size], coef)
            for s in group
        ]

    if len(groups) == 1:
        partials = dict(zip(groups[0], run(groups[0]), strict=True))
    else:
        done = Parallel(n_jobs=len(groups), backend="threading")(delayed(run)(g) for g in groups)
        partials = {s: v for g, vs in zip(groups, done, strict=True)
                    for s, v in zip(g, vs, strict=True)}
    total = np.zeros(n_train)
    for s in starts:  # fixed order: the same sum for any n_jobs
        total += partials[s]
    total /= n_test
    return total


class _Workspace:
    """Buffers reused across chunks: fresh large arrays cost a page fault per 4 KB."""

    __slots__ = ("dist", "matches", "s", "scattered", "sorted_dist", "sorted_matches", "step",
                 "ties", "total")

    def __init__(self, rows: int, n: int) -> None:
        self.dist = np.empty((rows, n))
        self.scattered = np.empty(n)
        self.total = np.empty(n)
        self.sorted_dist = np.empty(n)
        self.ties = np.empty(max(n - 1, 0), dtype=bool)
        self.matches = np.empty(n, dtype=bool)
        self.sorted_matches = np.empty(n, dtype=bool)
        self.step = np.zeros(n, dtype=np.int8)
        self.s = np.empty(n)


def _chunk_values(
    work: _Workspace,
    train_aug: FloatArray,
    y_train: npt.NDArray[np.int32],
    test_aug: FloatArray,
    y_test: npt.NDArray[np.int32],
    coef: FloatArray,
) -> FloatArray:
    """Sum over this chunk's test points of the per-test-point values."""
    rows = test_aug.shape[0]
    dist = work.dist[:rows]
    np.matmul(test_aug, train_aug.T, out=dist)
    # One row's values scattered back to training order, then added: both stay in cache.
    scattered, total = work.scattered, np.zeros_like(work.total)
    sorted_dist, ties, s, step = work.sorted_dist, work.ties, work.s, work.step
    m = work.sorted_matches.view(np.int8)
    for row in range(rows):
        d = dist[row]
        order = np.argsort(d)
        np.take(d, order, out=sorted_dist)
        np.equal(sorted_dist[1:], sorted_dist[:-1], out=ties)
        if ties.any():
            # The fast sort does not keep equal distances in row order; the stable one does.
            order = np.argsort(d, kind="stable")
        np.equal(y_train, y_test[row], out=work.matches)
        np.take(work.matches, order, out=work.sorted_matches)
        # step_j = m_j - m_{j+1} (m_{N+1} = 0); s = reverse cumulative sum of step / max(k, j).
        np.subtract(m[:-1], m[1:], out=step[:-1])
        step[-1] = m[-1]
        np.multiply(step, coef, out=s)
        reversed_s = s[::-1]
        np.cumsum(reversed_s, out=reversed_s)
        scattered[order] = s
        total += scattered
    return total


def _validated(
    X_train: npt.ArrayLike,
    y_train: npt.ArrayLike,
    X_test: npt.ArrayLike,
    y_test: npt.ArrayLike,
    k: int,
) -> tuple[FloatArray, npt.NDArray[np.int32], FloatArray, npt.NDArray[np.int32]]:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValuationError(f"k must be an integer >= 1, got {k!r}")
    x_tr = _matrix("X_train", X_train)
    x_te = _matrix("X_test", X_test)
    y_tr = _labels("y_train", y_train)
    y_te = _labels("y_test", y_test)
    if x_tr.shape[0] == 0:
        raise ValuationError("knn_shapley needs at least one training row")
    if x_te.shape[0] == 0:
        raise ValuationError("knn_shapley needs at least one test row")
    if len(y_tr) != x_tr.shape[0]:
        raise ValuationError(f"X_train has {x_tr.shape[0]} rows but y_train has {len(y_tr)}")
    if len(y_te) != x_te.shape[0]:
        raise ValuationError(f"X_test has {x_te.shape[0]} rows but y_test has {len(y_te)}")
    if x_tr.shape[1] != x_te.shape[1]:
        raise ValuationError(f"X_train has {x_tr.shape[1]} features but X_test has "
                             f"{x_te.shape[1]}")
    try:
        _, codes = np.unique(np.concatenate([y_tr, y_te]), return_inverse=True)
    except TypeError as e:
        raise ValuationError(f"labels cannot be compared: {e}") from e
    int_codes: npt.NDArray[np.int32] = codes.astype(np.int32).ravel()
    return x_tr, int_codes[: len(y_tr)], x_te, int_codes[len(y_tr):]


def _matrix(name: str, x: npt.ArrayLike) -> FloatArray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValuationError(f"{name} must be numeric: {e}") from e
    if arr.ndim != 2:
        raise ValuationError(f"{name} must be 2-dimensional (rows × features), got shape "
                             f"{arr.shape}")
    if not np.isfinite(arr).all():
        raise ValuationError(f"{name} contains NaN or infinite values")
    return np.ascontiguousarray(arr)


def _labels(name: str, y: npt.ArrayLike) -> npt.NDArray[np.generic]:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValuationError(f"{name} must be 1-dimensional, got shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValuationError(f"{name} contains NaN or infinite labels")
    return arr
