"""KNN-Shapley: equal to pyDVL's saved values, and to the Shapley formula on the KNN utility."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lineage_platform.errors import ValuationError
from lineage_platform.valuation import knn_shapley

FIXTURE = Path(__file__).parent / "fixtures" / "knn_pydvl.npz"


def knn_utility(subset: tuple[int, ...], x: np.ndarray, y: np.ndarray, x_test: np.ndarray,
                y_test: np.ndarray, k: int) -> float:
    """Mean over test points of (1/k) * #right labels among the k nearest of `subset`,
    equal distances ordered by row index."""
    if not subset:
        return 0.0
    rows = np.array(subset)
    total = 0.0
    for t, label in zip(x_test, y_test, strict=True):
        d = ((x[rows] - t) ** 2).sum(axis=1)
        nearest = rows[sorted(range(len(rows)), key=lambda i: (d[i], rows[i]))[:k]]
        total += float(np.sum(y[nearest] == label)) / k
    return total / len(y_test)


def brute_force(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                k: int) -> np.ndarray:
    n = len(y)
    cache: dict[tuple[int, ...], float] = {}

    def u(s: tuple[int, ...]) -> float:
        if s not in cache:
            cache[s] = knn_utility(s, x, y, x_test, y_test, k)
        return cache[s]

    values = np.zeros(n)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for size in range(n):
            w = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for s in itertools.combinations(others, size):
                values[i] += w * (u(tuple(sorted((*s, i)))) - u(s))
    return values


def test_equals_pydvl_knn_shapley_valuation() -> None:
    """Fixture written by benchmarks/pydvl_reference.py with pyDVL 0.10 (KNNShapleyValuation)."""
    with np.load(FIXTURE) as f:
        assert f["x_train"].shape == (300, 4) and f["x_test"].shape == (40, 4)
        for k in f["ks"]:
            ours = knn_shapley(f["x_train"], f["y_train"], f["x_test"], f["y_test"], int(k))
            np.testing.assert_allclose(ours, f[f"values_k{k}"], rtol=0, atol=1e-9)


def test_pydvl_fixture_has_exact_ties() -> None:
    with np.load(FIXTURE) as f:
        rows = {tuple(r) for r in f["x_train"]}
        assert len(rows) == 280  # 20 exact copies: tied at every test point
        values = knn_shapley(f["x_train"], f["y_train"], f["x_test"], f["y_test"], 5)
        # A copy and its original have the same label, so the same value.
        first: dict[tuple[float, ...], float] = {}
        for row, v in zip(map(tuple, f["x_train"]), values, strict=True):
            assert first.setdefault(row, v) == pytest.approx(v, abs=1e-15)


@pytest.mark.parametrize(("n", "k", "seed"), [(1, 1, 0), (4, 1, 1), (6, 2, 2), (7, 3, 3),
                                              (8, 3, 4), (8, 5, 5), (5, 8, 6)])
def test_equals_brute_force_shapley_on_tiny_sets(n: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Small integer features: many exact distance ties between rows of different labels.
    x = rng.integers(0, 3, size=(n, 2)).astype(float)
    y = rng.integers(0, 2, size=n)
    x_test = rng.integers(0, 3, size=(3, 2)).astype(float)
    y_test = rng.integers(0, 2, size=3)
    ours = knn_shapley(x, y, x_test, y_test, k)
    np.testing.assert_allclose(ours, brute_force(x, y, x_test, y_test, k), rtol=0, atol=1e-12)
    # Efficiency: u(all rows) - u(∅).
    assert ours.sum() == pytest.approx(knn_utility(tuple(range(n)), x, y, x_test, y_test, k),
                                       abs=1e-12)


def test_ties_are_broken_by_row_index() -> None:
    # Two rows at the same distance with different labels: with k = 1 the earlier row counts as
    # the nearest neighbour of the pair.
    x = np.array([[1.0], [-1.0]])
    x_test = np.array([[0.0]])
    right_first = knn_shapley(x, np.array([1, 0]), x_test, np.array([1]), 1)
    right_second = knn_shapley(x, np.array([0, 1]), x_test, np.array([1]), 1)
    np.testing.assert_allclose(right_first, [1.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(right_second, [-0.5, 0.5], atol=1e-15)
    np.testing.assert_allclose(right_second, brute_force(x, np.array([0, 1]), x_test,
                                                         np.array([1]), 1), atol=1e-15)


def test_chunking_and_threads_do_not_change_values() -> None:
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(500, 3)), rng.integers(0, 4, 500)
    x_test, y_test = rng.normal(size=(37, 3)), rng.integers(0, 4, 37)
    base = knn_shapley(x, y, x_test, y_test, 7)
    # Threads change nothing, bit for bit; chunk sizes change the order of additions only.
    np.testing.assert_array_equal(knn_shapley(x, y, x_test, y_test, 7, chunk_size=4, n_jobs=2),
                                  knn_shapley(x, y, x_test, y_test, 7, chunk_size=4))
    for chunk_size, n_jobs in [(1, 1), (5, 2), (37, 1), (1000, 2)]:
        other = knn_shapley(x, y, x_test, y_test, 7, chunk_size=chunk_size, n_jobs=n_jobs)
        np.testing.assert_allclose(other, base, rtol=0, atol=1e-15)


def test_string_labels_and_unseen_test_labels() -> None:
    x = np.array([[0.0], [1.0], [2.0]])
    values = knn_shapley(x, np.array(["cat", "dog", "cat"]), np.array([[0.1], [5.0]]),
                         np.array(["cat", "bird"]), 1)
    # The bird is never predicted: those test points give nothing to anyone.
    assert values.sum() == pytest.approx(0.5)
    assert values[1] <= 0.0 < values[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (dict(k=0), "k must be an integer >= 1"),
        (dict(k=2.5), "k must be an integer >= 1"),
        (dict(y_train=np.zeros(3)), "X_train has 4 rows but y_train has 3"),
        (dict(y_test=np.zeros(1)), "X_test has 2 rows but y_test has 1"),
        (dict(X_test=np.zeros((2, 3))), "2 features but X_test has 3"),
        (dict(X_train=np.zeros((0, 2)), y_train=np.zeros(0)), "at least one training row"),
        (dict(X_train=np.zeros(4)), "2-dimensional"),
        (dict(X_train=np.array([[0.0, np.nan]] * 4)), "NaN or infinite"),
        (dict(X_test=np.array([[np.inf, 0.0]] * 2)), "NaN or infinite"),
    ],
)
def test_bad_input(args: dict[str, object], message: str) -> None:
    call: dict[str, object] = dict(X_train=np.zeros((4, 2)), y_train=np.zeros(4),
                                   X_test=np.ones((2, 2)), y_test=np.zeros(2), k=1)
    call.update(args)
    with pytest.raises(ValuationError, match=message):
        knn_shapley(**call)  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 30),
    n_test=st.integers(1, 6),
    k=st.integers(1, 8),
    chunk=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_efficiency_and_chunking_hold_for_any_data(n: int, n_test: int, k: int, chunk: int,
                                                   seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, size=(n, 2)).astype(float)
    y = rng.integers(0, 3, size=n)
    x_test = rng.integers(0, 3, size=(n_test, 2)).astype(float)
    y_test = rng.integers(0, 3, size=n_test)
    values = knn_shapley(x, y, x_test, y_test, k)
    grand = knn_utility(tuple(range(n)), x, y, x_test, y_test, k)
    assert values.sum() == pytest.approx(grand, abs=1e-12)
    np.testing.assert_allclose(knn_shapley(x, y, x_test, y_test, k, chunk_size=chunk), values,
                               rtol=0, atol=1e-15)
