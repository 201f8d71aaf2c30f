"""Registered valuation methods: lookups, errors, each method's invariants read from its object."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lineage_platform.errors import ConfigError, LineageError, UnknownMethodError, ValuationError
from lineage_platform.valuation import (
    METHODS,
    MaxSamples,
    Players,
    ValuationMethod,
    ValuationResult,
    ValuationTask,
    get_method,
    known_names,
)
from lineage_platform.valuation.choose import efficiency_target, value_contributors

ROOT = Path(__file__).resolve().parents[2]


class MeanThreshold:
    """Predicts 1 where x0 exceeds the mean x0 of its training rows: uses the features (so the
    grand coalition beats the empty one) but only through x0, so alice and bob are symmetric."""

    threshold = 0.0

    def fit(self, X: np.ndarray, y: np.ndarray) -> MeanThreshold:
        self.threshold = float(np.mean(X[:, 0]))
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (X[:, 0] > self.threshold).astype(np.int64)


ALICE = (np.array([[0.0, 0.0], [4.0, 0.0]]), np.array([0, 1]))
PARTS = {
    "alice": ALICE,
    "bob": (np.array([[0.0, 1.0], [4.0, 1.0]]), np.array([0, 1])),  # alice's x0: symmetric
    "carol": (np.array([[10.0, 0.0], [10.0, 1.0], [9.0, 2.0]]), np.array([1, 1, 1])),
    "dave": ALICE,  # alice's rows again: credited to alice, so dave is a null player
}
X_VAL = np.array([[1.0, 0.0], [2.0, 1.0], [3.0, 0.0], [4.5, 1.0], [6.0, 0.0], [8.0, 1.0]])
Y_VAL = np.array([0, 0, 0, 1, 1, 1])


def task(**kw: object) -> ValuationTask:
    args: dict[str, object] = dict(seed=3, k=3, make_model=MeanThreshold,
                                   until=MaxSamples(400))
    args.update(kw)
    return ValuationTask(PARTS, X_VAL, Y_VAL, **args)  # type: ignore[arg-type]


def test_lookup_by_signed_name_and_alias() -> None:
    assert get_method("banzhaf") is get_method("msr-banzhaf")
    assert get_method("knn").name == "knn-shapley-rows"
    assert get_method("exact").name == "exact-shapley"
    assert get_method("permutation").name == "permutation-shapley"
    assert get_method("tmc").name == "tmc-shapley"
    assert known_names()[:5] == ("knn", "exact", "permutation", "tmc", "banzhaf")
    # The signed names of records already in logs must keep resolving.
    for signed in ("knn-shapley-rows", "exact-shapley", "permutation-shapley", "tmc-shapley",
                   "msr-banzhaf"):
        assert get_method(signed).name == signed
    names = [key for m in METHODS for key in (m.name, *m.aliases)]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("bad", ["bogus", "Banzhaf", "", "knn\nerror: forged"])
def test_unknown_method_is_one_line_listing_the_known_names(bad: str) -> None:
    with pytest.raises(UnknownMethodError) as caught:
        get_method(bad)
    message = str(caught.value)
    assert isinstance(caught.value, ConfigError) and isinstance(caught.value, LineageError)
    assert "\n" not in message
    for m in METHODS:
        assert m.name in message and all(a in message for a in m.aliases)


def test_value_contributors_refuses_unknown_names_and_missing_models() -> None:
    with pytest.raises(UnknownMethodError):
        value_contributors(PARTS, X_VAL, Y_VAL, "shapley")
    with pytest.raises(ValuationError, match="'exact-shapley' trains a model per coalition"):
        value_contributors(PARTS, X_VAL, Y_VAL, "exact")


def test_an_efficient_method_needs_a_gain() -> None:
    with pytest.raises(ValuationError, match="needs a gain"):
        ValuationMethod("x", "exact:run", Players.CONTRIBUTORS, efficient=True, needs_model=True)


def test_a_result_under_another_name_is_refused() -> None:
    liar = ValuationMethod("exact-shapley-v2", "exact:run", Players.CONTRIBUTORS,
                           efficient=False, needs_model=True)
    with pytest.raises(ValuationError, match="signed name must match"):
        liar.run(task())


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_each_method_keeps_the_invariants_its_object_declares(method: ValuationMethod) -> None:
    t = task()
    result = method.run(t)
    values, se = result.as_dict(), result.stderr_dict()
    assert result.method == method.name
    assert result.players == ("alice", "bob", "carol", "dave")
    # dave's rows are all alice's: they are credited to alice, and dave adds nothing (exactly,
    # for exact methods and whole permutations; within the sampling error for MSR Banzhaf).
    assert abs(values["dave"]) <= 3 * se["dave"]
    assert any(v != 0.0 for v in values.values())
    if method.players is Players.CONTRIBUTORS:
        gap = abs(values["alice"] - values["bob"])
        assert gap <= 1e-12 + 3 * math.hypot(se["alice"], se["bob"])
    target = method.efficiency_target(t)
    if method.efficient:
        assert target is not None and target > 0.0
        # Exact, closed-form and untruncated permutation values all sum to the gain.
        assert math.fsum(result.values) == pytest.approx(target, abs=1e-9)
    else:
        assert target is None


def test_banzhaf_is_not_held_to_efficiency() -> None:
    """Banzhaf values need not sum to u(N) − u(∅): the check must not compare them (it did)."""
    result = value_contributors(PARTS, X_VAL, Y_VAL, "banzhaf", seed=3, make_model=MeanThreshold,
                                max_samples=300)
    assert result.method == "msr-banzhaf"
    assert efficiency_target(PARTS, X_VAL, Y_VAL, result, make_model=MeanThreshold) is None
    # ... while they do not add up to the gain on this game, which the old check flagged.
    gain = efficiency_target(
        PARTS, X_VAL, Y_VAL,
        ValuationResult.from_arrays(result.players, result.values, result.stderr, result.counts,
                                    method="exact-shapley", seed=None, utility="", samples=1),
        make_model=MeanThreshold,
    )
    assert gain is not None
    assert abs(math.fsum(result.values) - gain) > 3 * math.sqrt(sum(s * s for s in result.stderr))
    assert not get_method("banzhaf").efficient
    assert get_method("exact").efficient


def test_efficiency_target_of_knn_rows_is_the_knn_games_gain() -> None:
    result = value_contributors(PARTS, X_VAL, Y_VAL, "knn", k=3)
    target = efficiency_target(PARTS, X_VAL, Y_VAL, result, k=3)
    assert target is not None
    assert math.fsum(result.values) == pytest.approx(target, abs=1e-12)


def test_task_validation() -> None:
    with pytest.raises(ValuationError, match="k must be"):
        task(k=0)
    with pytest.raises(ValuationError, match="seed must be"):
        task(seed=1.5)
    with pytest.raises(ValuationError, match="stopping rule"):
        task(until=100)
    assert task(seed=np.int64(3)).seed == 3


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          check=False)


def test_listing_the_methods_imports_no_numpy() -> None:
    done = _run("import sys, lineage_platform.valuation.registry as r; r.known_names(); "
                "print(sorted(m for m in ('numpy', 'joblib', 'sklearn') if m in sys.modules))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_cli_unknown_method_prints_one_line_and_exits_non_zero(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lineage_platform.cli", "value", "digits_classifier", "--method",
         "bogus"],
        capture_output=True, text=True, cwd=tmp_path, check=False,
        env={"PATH": "/usr/bin:/bin", "LINEAGE_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == UnknownMethodError.exit_code != 0
    assert "Traceback" not in done.stderr and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown valuation method 'bogus'" in lines[0]
    assert "banzhaf (msr-banzhaf)" in lines[0]
