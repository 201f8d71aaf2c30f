"""Per-call attribution: the closed form equals brute-force Shapley of the single-query KNN game,
meets the axioms, credits copies once, and on the example pays the noisy contributor less."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.linear_model import LogisticRegression

from lineage_platform.attribution import (
    CallAttributor,
    TrainingRows,
    fixed_weights,
    label_codes,
    local_knn_shapley,
)
from lineage_platform.errors import ValuationError

ROOT = Path(__file__).resolve().parents[1]


def one_query_utility(subset: tuple[int, ...], x: np.ndarray, y: np.ndarray, q: np.ndarray,
                      label: int, k: int) -> float:
    """(1/k) * #rows with the served label among the min(k, |S|) rows of S nearest q."""
    if not subset:
        return 0.0
    rows = np.array(subset)
    d = ((x[rows] - q) ** 2).sum(axis=1)
    nearest = rows[sorted(range(len(rows)), key=lambda i: (d[i], rows[i]))[:k]]
    return float(np.sum(y[nearest] == label)) / k


def brute_force(x: np.ndarray, y: np.ndarray, q: np.ndarray, label: int, k: int) -> np.ndarray:
    n = len(y)
    values = np.zeros(n)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for size in range(n):
            w = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for s in itertools.combinations(others, size):
                with_i = one_query_utility(tuple(sorted((*s, i))), x, y, q, label, k)
                values[i] += w * (with_i - one_query_utility(s, x, y, q, label, k))
    return values


def one_row_each(x: np.ndarray, y: np.ndarray) -> TrainingRows:
    """Each row its own contributor (`r0`, `r1`, ...), so credits are the rows' values."""
    parts = {f"r{i}": (x[i: i + 1], y[i: i + 1]) for i in range(len(y))}
    return TrainingRows.from_parts(parts)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 2, 3, 7])
def test_equals_brute_force_shapley_of_the_one_query_game(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    n = 6
    x = rng.normal(size=(n, 2))
    y = rng.integers(0, 3, size=n)
    q = rng.normal(size=2)
    label = int(rng.integers(0, 3))
    expected = brute_force(x, y, q, label, k)
    order = sorted(range(n), key=lambda i: (((x[i] - q) ** 2).sum(), i))
    closed = local_knn_shapley([[y[i] == label for i in order]], k)[0]
    np.testing.assert_allclose(closed, expected[order], atol=1e-12)
    # Through the attributor (all rows are neighbours): positive row values, by contributor.
    credits = CallAttributor(one_row_each(x, y), k=k, neighbours=max(n, k)).attribute(
        q[None, :], [str(label)])
    wanted = {f"r{i}": v for i, v in enumerate(expected) if v > 1e-12}
    got = credits.of(0)
    assert set(got) == set(wanted)
    for c, v in wanted.items():
        assert got[c] == pytest.approx(v, abs=1e-12)


def test_efficiency_symmetry_and_null_player() -> None:
    # Rows 0 and 1 are the same distance from the query with the same label (symmetric); row 4
    # is the farthest and has the wrong label (a null player: it never enters the k nearest of
    # a coalition that has k rows, and adds no right label to one that has fewer).
    x = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -3.0], [9.0, 9.0]])
    y = np.array([1, 1, 0, 1, 0])
    q = np.zeros(2)
    k = 2
    values = brute_force(x, y, q, 1, k)
    assert values[4] == pytest.approx(0.0, abs=1e-12)
    assert values[0] == pytest.approx(values[1])
    closed = local_knn_shapley([[True, True, False, True, False]], k)[0]
    assert closed.sum() == pytest.approx(one_query_utility((0, 1, 2, 3, 4), x, y, q, 1, k))
    assert closed[0] == closed[1] and closed[4] == 0.0
    np.testing.assert_allclose(closed, values, atol=1e-12)  # sorted order is row order here


def test_negative_credit_counts_as_zero_and_no_match_gives_no_credit() -> None:
    x = np.array([[0.0], [1.0], [2.0]])
    y = np.array([0, 1, 1])
    rows = TrainingRows.from_parts({"wrong": (x[:1], y[:1]), "right": (x[1:], y[1:])})
    credits = CallAttributor(rows, k=1, neighbours=3).attribute([[0.0], [0.0]], ["1", "7"])
    # Call 0 (k=1): s_3 = 1/3, s_2 = 1/3 + 0/2, s_1 = 1/3 - 1/1: "wrong" -2/3 clips to zero.
    assert set(credits.of(0)) == {"right"}
    assert credits.of(0)["right"] == pytest.approx(2 / 3)
    assert credits.of(1) == {}  # served a label no row has: settlement falls back to global


def test_exact_copies_are_credited_to_the_earliest_signer() -> None:
    rng = np.random.default_rng(3)
    xa, ya = rng.normal(size=(40, 4)), rng.integers(0, 2, size=40)
    xb, yb = rng.normal(size=(40, 4)), rng.integers(0, 2, size=40)
    calls = rng.normal(size=(200, 4))
    served = rng.integers(0, 2, size=200).astype(str)
    honest = CallAttributor(TrainingRows.from_parts({"a": (xa, ya), "b": (xb, yb)}), k=3)
    copied = CallAttributor(
        TrainingRows.from_parts({"a": (xa, ya), "b": (xb, yb), "copier": (xa[:30], ya[:30])}),
        k=3,
    )
    before = honest.attribute(calls, served).totals()
    after = copied.attribute(calls, served).totals()
    assert after["copier"] == 0.0
    assert after["a"] == pytest.approx(before["a"]) and after["b"] == pytest.approx(before["b"])


def test_fixed_weights_sum_exactly_and_break_ties_by_name() -> None:
    rng = np.random.default_rng(5)
    parts = {c: (rng.normal(size=(30, 3)), rng.integers(0, 3, size=30)) for c in "zyxw"}
    credits = CallAttributor(TrainingRows.from_parts(parts), k=4, neighbours=12).attribute(
        rng.normal(size=(500, 3)), rng.integers(0, 3, size=500).astype(str))
    w = fixed_weights(credits, bits=24)
    for q in range(credits.calls):
        lo, hi = credits.indptr[q], credits.indptr[q + 1]
        if hi > lo:
            assert w[lo:hi].sum() == 1 << 24
            share = credits.credit[lo:hi] / credits.credit[lo:hi].sum() * (1 << 24)
            assert (np.abs(w[lo:hi] - share) < 1).all()
    # Three equal credits of 1/3: one unit left over, to the name that sorts first ("a").
    rows = TrainingRows.from_parts({c: (np.array([[float(i)]]), np.array([1]))
                                    for i, c in enumerate(["c", "a", "b"])})
    tie = CallAttributor(rows, k=3, neighbours=3).attribute([[1.0]], ["1"])
    assert tie.of(0) == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    got = dict(zip([tie.contributors[i] for i in tie.contributor], fixed_weights(tie, bits=2),
                   strict=True))
    assert got == {"a": 2, "b": 1, "c": 1}


def test_label_codes_match_numbers_by_value_and_text_by_text() -> None:
    train, served = label_codes(np.array([3, 1, 3]), np.array(["3.0", "1", "cat"]))
    assert served.tolist() == [train[0], train[1], -1]
    train, served = label_codes(np.array(["cat", "dog"]), np.array(["dog", "3"]))
    assert served.tolist() == [train[1], -1]


def test_refuses_inputs_of_the_wrong_dimension_or_not_finite() -> None:
    rows = TrainingRows.from_parts({"a": (np.zeros((3, 2)) + np.arange(3)[:, None],
                                          np.array([0, 1, 0]))})
    att = CallAttributor(rows, k=1, neighbours=2)
    with pytest.raises(ValuationError, match=r"\(calls x 2\)"):
        att.attribute(np.zeros((1, 3)), ["0"])
    with pytest.raises(ValuationError, match="NaN"):
        att.attribute([[np.nan, 0.0]], ["0"])


def test_example_calls_near_the_noisy_contributor_pay_it_less_than_near_the_best() -> None:
    """The example's split (params.yaml): erin's labels are half flipped, alice is the best.
    Calls are inputs near each one's rows, served the label the example's model predicts."""
    from assets.prepare import FEATURES, LABEL, make_split

    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    frames, _ = make_split(params)
    parts = {c: (f[FEATURES].to_numpy(float) / 16.0, f[LABEL].to_numpy()) for c, f in
             frames.items()}
    rows = TrainingRows.from_parts(parts)
    model = LogisticRegression(max_iter=300).fit(rows.x, rows.y)
    rng = np.random.default_rng(11)
    attributor = CallAttributor(rows, k=5)

    def share_near(contributor: str) -> float:
        x = parts[contributor][0]
        calls = x + rng.normal(scale=0.02, size=x.shape)
        served = model.predict(calls).astype(str)
        credits = attributor.attribute(calls, served)
        w = fixed_weights(credits)
        mine = credits.contributors.index(contributor)
        # The contributor's share of each call's data part, averaged over the calls.
        return float(w[credits.contributor == mine].sum() / (1 << 24) / credits.calls)

    noisy, best = share_near("erin"), share_near("alice")
    assert noisy < best
    assert noisy < best / 2  # measured: 0.06 against 0.36


def test_near_copies_are_credited_to_the_earliest_signer_too() -> None:
    from lineage_platform.attribution import near_dedup

    rng = np.random.default_rng(9)
    centres = rng.normal(scale=5, size=(6, 4))
    parts = {}
    for c in ("a", "b", "c"):
        lab = rng.integers(0, 6, size=60)
        parts[c] = (centres[lab] + rng.normal(size=(60, 4)), lab)
    # A third of a's rows with noise of 0.1% of each feature's std (the pooled tolerance: a
    # copier of about half of all rows would shrink it, see near_dedup_parts).
    xa, ya = parts["a"][0][:20], parts["a"][1][:20]
    noisy = xa + rng.normal(scale=0.001 * xa.std(axis=0), size=xa.shape)
    calls = centres[rng.integers(0, 6, size=300)] + rng.normal(size=(300, 4))
    served = np.array([str(int(np.argmin(((centres - q) ** 2).sum(axis=1)))) for q in calls])
    with_copier = {**parts, "copier": (noisy, ya)}
    near = CallAttributor(TrainingRows.from_parts(with_copier, dedup=near_dedup), k=3)
    exact = CallAttributor(TrainingRows.from_parts(with_copier), k=3)
    honest = CallAttributor(TrainingRows.from_parts(parts), k=3).attribute(calls, served).totals()
    got = near.attribute(calls, served).totals()
    assert got["copier"] == 0.0
    assert got["a"] == pytest.approx(honest["a"]) and got["b"] == pytest.approx(honest["b"])
    assert exact.attribute(calls, served).totals()["copier"] > 0  # exact dedup alone pays it


def test_credits_equal_a_plain_nearest_neighbour_search_in_any_call_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Calls are searched in tree-leaf order, in chunks, on threads; the credits must be those
    # of a plain sorted-distance search (ties by row index), call by call, in arrival order.
    import lineage_platform.attribution as attribution

    monkeypatch.setattr(attribution, "_CHUNK", 37)  # several chunks, one ragged
    rng = np.random.default_rng(5)
    x = rng.integers(0, 4, size=(300, 3)).astype(np.float64)  # a grid: many equal distances
    x += rng.normal(scale=1e-3, size=x.shape) * (np.arange(300) % 2 == 0)[:, None]
    y = rng.integers(0, 3, size=300)
    parts = {f"c{i:02d}": (x[i::25], y[i::25]) for i in range(25)}
    rows = TrainingRows.from_parts(parts)
    calls = rng.integers(0, 4, size=(200, 3)).astype(np.float64) + rng.normal(
        scale=0.5, size=(200, 3)) * (np.arange(200) % 3 == 0)[:, None]
    served = rng.integers(0, 3, size=200)
    k, m = 3, 8
    got = CallAttributor(rows, k=k, neighbours=m).attribute(calls, served.astype(str), n_jobs=2)
    owner_names = np.asarray(rows.contributors)[rows.owner]
    compared = 0
    for q in range(len(calls)):
        d = ((rows.x - calls[q]) ** 2).sum(axis=1)
        near = np.lexsort((np.arange(len(d)), d))[:m]
        # The search's m-th neighbour may tie with the (m+1)-th: compare only when it does not.
        if d[near[-1]] == d[np.lexsort((np.arange(len(d)), d))[m]]:
            continue
        values = np.maximum(local_knn_shapley([rows.y[near] == served[q]], k)[0], 0.0)
        want: dict[str, float] = {}
        for who, v in zip(owner_names[near], values, strict=True):
            want[str(who)] = want.get(str(who), 0.0) + float(v)
        assert got.of(q) == pytest.approx({c: v for c, v in want.items() if v > 0}), q
        compared += 1
    assert compared > 100


def test_with_the_validation_rows_as_reference_a_copy_of_them_earns_nothing() -> None:
    from lineage_platform.attribution import near_dedup, near_dedup_against

    rng = np.random.default_rng(8)
    xa, ya = rng.normal(size=(120, 5)), rng.integers(0, 2, size=120)
    x_val, y_val = rng.normal(size=(60, 5)), rng.integers(0, 2, size=60)
    parts = {"a": (xa, ya), "copier": (x_val + rng.normal(scale=1e-3, size=x_val.shape), y_val)}
    pooled = CallAttributor(TrainingRows.from_parts(parts, dedup=near_dedup), k=3)
    held = CallAttributor(TrainingRows.from_parts(
        parts, dedup=near_dedup_against(x_val, y_val)), k=3)
    # Calls at the validation inputs, served their labels: the copier's rows sit on them.
    assert pooled.attribute(x_val, y_val.astype(str)).totals()["copier"] > 0
    after = held.attribute(x_val, y_val.astype(str)).totals()
    assert after.get("copier", 0.0) == 0.0 and after["a"] > 0
