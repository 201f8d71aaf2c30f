"""The shared running-mean accumulator against NumPy, and the one clip rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lineage_platform.canonical import canonical_json
from lineage_platform.valuation import RunningMean, ValuationResult, clip, shares_of


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_running_mean_matches_numpy_on_every_player(seed: int) -> None:
    rng = np.random.default_rng(seed)
    samples = rng.normal(loc=rng.uniform(-5, 5, 7), scale=rng.uniform(0.1, 3, 7), size=(500, 7))
    acc = RunningMean(7)
    for row in samples:
        acc.add(row)
    assert acc.count.tolist() == [500] * 7
    np.testing.assert_allclose(acc.mean, samples.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(acc.stderr(), samples.std(axis=0, ddof=1) / math.sqrt(500),
                               rtol=1e-10)


@pytest.mark.parametrize("seed", [3, 4])
def test_masked_samples_count_only_for_their_players(seed: int) -> None:
    rng = np.random.default_rng(seed)
    u = rng.normal(size=400)
    masks = rng.random((400, 6)) < 0.3
    acc = RunningMean(6)
    for m, x in zip(masks, u, strict=True):
        acc.add(x, where=m)
    for i in range(6):
        mine = u[masks[:, i]]
        assert acc.count[i] == len(mine)
        assert acc.mean[i] == pytest.approx(mine.mean(), rel=1e-12, abs=1e-12)
        assert acc.stderr()[i] == pytest.approx(mine.std(ddof=1) / math.sqrt(len(mine)),
                                                rel=1e-10)


def test_stderr_is_infinite_below_two_samples() -> None:
    acc = RunningMean(3)
    assert np.isinf(acc.stderr()).all()
    acc.add(np.array([1.0, 2.0, 3.0]))
    assert np.isinf(acc.stderr()).all()
    acc.add(5.0, where=np.array([True, False, False]))
    assert acc.stderr()[0] == pytest.approx(2.0) and np.isinf(acc.stderr()[1:]).all()


def test_clip_rule() -> None:
    assert clip(-0.5) == 0.0 and clip(None) == 0.0 and clip(0.25) == 0.25 and clip(-0.0) == 0.0
    assert shares_of({"a": 3.0, "b": -1.0, "c": 1.0, "d": None}) == {
        "a": 0.75, "b": 0.0, "c": 0.25, "d": 0.0}
    assert shares_of({"a": -1.0, "b": 0.0}) == {"a": 0.0, "b": 0.0}
    assert shares_of({}) == {}
    r = ValuationResult.from_arrays(("x", "y", "z"), [0.2, -0.1, 0.6], [0, 0, 0], [1, 1, 1],
                                    method="exact-shapley", seed=None, utility="", samples=8)
    assert r.shares() == shares_of(r.as_dict())
    assert math.fsum(r.shares().values()) == pytest.approx(1.0)


def test_result_serialises_with_the_canonical_writer() -> None:
    rng = np.random.default_rng(9)
    values = np.concatenate([rng.normal(scale=10.0 ** rng.integers(-9, 22, 40)),
                             [0.0, -0.0, 1.0, 1e21, 1e-7, 123456789.0]])
    players = [f"p{i}" for i in range(len(values))]
    r = ValuationResult.from_arrays(players, values, np.zeros(len(values)),
                                    np.ones(len(values)), method="exact-shapley", seed=None,
                                    utility="", samples=1)
    assert r.canonical_json().encode() == canonical_json(r.as_dict())
