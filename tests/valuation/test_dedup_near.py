"""Near-copies (same label, a little noise) are credited once, to the earliest signer."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.utils import Bunch

from lineage_platform.errors import ValuationError
from lineage_platform.valuation import Discount, contributor_knn_values, dedup_parts
from lineage_platform.valuation.choose import efficiency_target
from lineage_platform.valuation.dedup import (
    HELD_OUT,
    NEAR_FRACTION,
    feature_scale,
    near_dedup_parts,
    near_pairs,
)

Parts = dict[str, tuple[np.ndarray, np.ndarray]]


def blobs(n: int = 600, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    return rng.normal(size=(n, d)) + 1.5 * y[:, None], y


def honest_parts(x: np.ndarray, y: np.ndarray, k: int = 4) -> Parts:
    idx = np.array_split(np.arange(len(y)), k)
    return {f"p{i}": (x[j], y[j]) for i, j in enumerate(idx)}


def noisy(x: np.ndarray, level: float, seed: int = 1) -> np.ndarray:
    """`x` plus Gaussian noise of `level` x each feature's std."""
    return x + level * x.std(axis=0) * np.random.default_rng(seed).normal(size=x.shape)


def test_a_noisy_copy_is_credited_to_the_earliest_signer_and_earns_nothing() -> None:
    x, y = blobs()
    parts = honest_parts(x, y)
    x_val, y_val = blobs(200, seed=9)
    before = contributor_knn_values(parts, x_val, y_val, k=5)
    copied = {**parts, "mallory": (noisy(parts["p1"][0], 0.01), parts["p1"][1])}
    after = contributor_knn_values(copied, x_val, y_val, k=5)
    n = len(parts["p1"][1])
    assert after.discounted == (Discount("mallory", "p1", n, near=n),)
    assert after.as_dict()["mallory"] == 0.0
    for name, value in before.as_dict().items():  # the copy's rows are gone: nothing moves
        assert after.as_dict()[name] == pytest.approx(value, abs=1e-12)
    # Without near-copy dedup (records signed before it) the same copy is paid.
    exact_only = contributor_knn_values(copied, x_val, y_val, k=5, near_copies=None)
    assert exact_only.discounted == ()
    assert exact_only.as_dict()["mallory"] > 0.3 * before.as_dict()["p1"]


@pytest.mark.parametrize("load", [load_digits, load_breast_cancer, load_wine])
def test_genuine_distinct_rows_are_never_merged(load: Callable[[], Bunch]) -> None:
    data = load()
    rows = np.unique(np.column_stack([data.data, data.target]), axis=0)
    rows = rows[np.random.default_rng(0).permutation(len(rows))]
    n_val = len(rows) // 4
    x_val, x, y = rows[:n_val, :-1], rows[n_val:, :-1], rows[n_val:, -1]
    d = near_dedup_parts(honest_parts(x, y, 5), reference=x_val)
    assert d.rows_discounted == 0
    assert d.near_copies is not None and d.near_copies.tolerance > 0
    # ... and every 1%-noise copy is caught, even when the copier copies every row: the
    # tolerance comes from the validation rows' distances, which copies do not shrink.
    d = near_dedup_parts({**honest_parts(x, y, 5), "copier": (noisy(x, 0.01), y)},
                         reference=x_val)
    assert d.rows_discounted == len(y)
    assert {dc.contributor for dc in d.discounted} == {"copier"}
    assert len(d.kept["copier"]) == 0


def test_without_reference_rows_the_pooled_rows_set_the_rule() -> None:
    x, y = blobs()
    parts = {**honest_parts(x, y), "copier": (noisy(x[:150], 0.01), y[:150])}
    d = near_dedup_parts(parts)
    assert d.near_copies is not None and d.near_copies.measured_on == "pooled"
    assert d.discounted == (Discount("copier", "p0", 150, near=150),)
    with pytest.raises(ValuationError, match="features"):
        near_dedup_parts(parts, reference=np.zeros((3, 2)))


def test_same_features_with_another_label_are_not_merged() -> None:
    x, y = blobs()
    relabelled = (noisy(x[:50], 0.001), (y[:50] + 1) % 3)
    d = near_dedup_parts({"a": (x, y), "b": relabelled})
    assert d.discounted == ()
    assert len(d.kept["b"]) == 50


def test_repeats_inside_one_part_count_once_for_that_part_and_exact_counts_merge() -> None:
    x, y = blobs()
    part = (np.vstack([x, noisy(x[:10], 0.005)]), np.concatenate([y, y[:10]]))
    later = (np.vstack([x[20:25], noisy(x[30:33], 0.005)]), np.concatenate([y[20:25], y[30:33]]))
    d = near_dedup_parts({"a": part, "b": later})
    assert d.discounted == (Discount("a", "a", 10, near=10), Discount("b", "a", 8, near=3))
    assert d.kept["a"].tolist() == list(range(len(y)))
    assert len(d.kept["b"]) == 0
    # The exact part of the count is what dedup_parts alone finds.
    assert dedup_parts({"a": part, "b": later}).discounted == (Discount("b", "a", 5),)


def reference(parts: Parts, tolerance: float) -> dict[str, list[int]]:
    """Rows kept, by a plain loop: a row goes if an earlier row with its label lies within
    `tolerance` in the normalised space (the pair search must miss none)."""
    names = list(parts)
    x = np.vstack([parts[n][0] for n in names])
    y = np.concatenate([parts[n][1] for n in names])
    z = x / feature_scale(x)
    owner = np.repeat(names, [len(parts[n][1]) for n in names])
    local = np.concatenate([np.arange(len(parts[n][1])) for n in names])
    kept: dict[str, list[int]] = {n: [] for n in names}
    for i in range(len(y)):
        earlier = z[:i][y[:i] == y[i]]
        if len(earlier) and np.sqrt(((earlier - z[i]) ** 2).sum(axis=1)).min() <= tolerance:
            continue
        kept[str(owner[i])].append(int(local[i]))
    return kept


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pair_search_finds_what_a_brute_force_loop_finds(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, y = blobs(400, d=5, seed=seed)
    # Copies at several noise levels around the tolerance, and chains of copies of copies.
    src = rng.choice(len(y), 120, replace=False)
    levels = rng.choice([0.005, 0.02, 0.04, 0.06, 0.1], 120)
    copies = x[src] + levels[:, None] * x.std(axis=0) * rng.normal(size=(120, 5))
    chain = copies[:40] + 0.03 * x.std(axis=0) * rng.normal(size=(40, 5))
    parts = {"a": (x[:200], y[:200]), "b": (np.vstack([x[200:], copies]),
                                            np.concatenate([y[200:], y[src]])),
             "c": (chain, y[src[:40]])}
    d = near_dedup_parts(parts)
    assert d.near_copies is not None
    expected = reference(parts, d.near_copies.tolerance)
    assert {n: d.kept[n].tolist() for n in parts} == expected
    assert 0 < d.rows_discounted < 160  # the planted levels straddle the tolerance


def test_pairs_match_all_pairs_brute_force() -> None:
    x, y = blobs(700, d=8, seed=3)
    z = x / feature_scale(x)
    z = np.vstack([z, z[:100] + 0.05 * np.random.default_rng(4).normal(size=(100, 8))])
    labels = np.concatenate([y, y[:100]])
    tol = 0.25
    first, later = near_pairs(z, labels, tol)
    d = np.sqrt(((z[:, None, :] - z[None, :, :]) ** 2).sum(axis=2))
    i, j = np.nonzero((d <= tol) & (labels[:, None] == labels[None, :]))
    expected = {(a, b) for a, b in zip(i.tolist(), j.tolist(), strict=True) if a < b}
    assert set(zip(first.tolist(), later.tolist(), strict=True)) == expected
    assert len(expected) >= 50


def test_noise_in_a_feature_constant_for_everyone_else_does_not_hide_a_copy() -> None:
    x, y = blobs()
    x = np.hstack([x, np.zeros((len(y), 1))])  # a feature no honest row varies
    copy = x[:100].copy()
    copy[:, -1] = 1e-3 * np.random.default_rng(5).normal(size=100)
    d = near_dedup_parts({"a": (x, y), "copier": (copy, y[:100])})
    assert d.discounted == (Discount("copier", "a", 100, near=100),)


def test_the_rule_is_signed_in_the_details() -> None:
    x, y = blobs()
    x_val, y_val = blobs(100, seed=8)
    result = contributor_knn_values({"a": (x, y), "b": (noisy(x[:30], 0.01), y[:30])},
                                    x_val, y_val, k=5)
    details = json.loads(json.dumps(result.to_details(), allow_nan=False))
    rule = details["near_copies"]
    assert rule["fraction"] == NEAR_FRACTION
    assert rule["tolerance"] == pytest.approx(NEAR_FRACTION * rule["median_nn_distance"])
    assert rule["sampled_rows"] == len(y_val)
    assert rule["measured_on"].startswith("validation rows")
    assert details["discounted"] == {
        "rows": 30, "near_rows": 30,
        "by_contributor": [{"contributor": "b", "credited_to": "a", "rows": 30, "near": 30}]}
    # The values sum to the gain of the game on the rows kept (the efficiency the record signs).
    target = efficiency_target({"a": (x, y), "b": (noisy(x[:30], 0.01), y[:30])}, x_val, y_val,
                               result, k=5)
    assert sum(result.values) == pytest.approx(target, abs=1e-12)


def test_bad_rules_and_discounts_are_refused() -> None:
    x, y = blobs(20)
    with pytest.raises(ValuationError, match="fraction"):
        near_dedup_parts({"a": (x, y)}, fraction=-0.1)
    with pytest.raises(ValuationError, match="near must be"):
        Discount("b", "a", 2, near=3)
    d = near_dedup_parts({"a": (x, y), "b": (x, y)}, fraction=0.0)
    assert d.discounted == (Discount("b", "a", 20),)
    assert d.near_copies is not None and d.near_copies.tolerance == 0.0


def test_copies_of_the_validation_rows_are_not_valued() -> None:
    x, y = blobs()
    x_val, y_val = blobs(150, seed=8)
    parts = honest_parts(x, y)
    before = contributor_knn_values(parts, x_val, y_val, k=5)
    leak = (np.vstack([x_val[:50], noisy(x_val[50:100], 0.01)]), y_val[:100])
    after = contributor_knn_values({**parts, "mallory": leak}, x_val, y_val, k=5)
    assert after.discounted == (Discount("mallory", HELD_OUT, 100, near=50),)
    assert after.as_dict()["mallory"] == 0.0
    for name, value in before.as_dict().items():
        assert after.as_dict()[name] == pytest.approx(value, abs=1e-12)
    assert after.near_copies is not None and after.near_copies.held_out_tolerance > 0
    # Unchecked (the rows are only a reference), the same rows take a large share.
    leaked = contributor_knn_values({**parts, "mallory": leak}, x_val, y_val, k=5,
                                    near_copies=None)
    assert leaked.as_dict()["mallory"] > 0.1 * sum(before.values)
    with pytest.raises(ValuationError, match="reserved"):
        near_dedup_parts({HELD_OUT: (x, y)}, reference=x_val, reference_labels=y_val)
