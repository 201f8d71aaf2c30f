"""Issue 18's acceptance bounds for the default valuation, on the manipulation benchmark's attacks:
a copier adding noise up to 1% of each feature's std earns at most 5% of the victim's value and
the victim loses at most 5%; the honest ranking holds; splitting into identities gains <= 2%;
and (held to the same bounds) a copy of the validation rows earns nothing."""

from __future__ import annotations

import pytest

from benchmarks.bench_manipulation import (
    ATTACKS,
    DATASETS,
    Attack,
    Dataset,
    default,
    exact_dedup_only,
    measure,
)

COPIES_WITHIN_1PCT = ("exact copy of bob", "copy of bob, noise 0.1% std",
                      "copy of bob, noise 1% std", "50% subset of bob, noise 0.1%",
                      "50% subset of bob, noise 1%")
SPLITS = ("alice splits into 2", "alice splits into 4")
VALIDATION_COPIES = ("validation rows (victims: all)", "validation rows, noise 1%")


def attack(label: str) -> Attack:
    return next(a for a in ATTACKS if a.label == label)


@pytest.fixture(scope="module", params=sorted(DATASETS))
def data(request: pytest.FixtureRequest) -> Dataset:
    return DATASETS[request.param]()


@pytest.mark.parametrize("label", COPIES_WITHIN_1PCT)
def test_a_copier_with_up_to_1pct_noise_earns_at_most_5pct_of_the_victim(
    data: Dataset, label: str
) -> None:
    base = default(data, data.parts)
    out = measure(data, default, base, attack(label))
    assert out.gain <= 0.05, f"{data.name}: {label}: copier earns {out.gain:.1%} of the victim"
    assert out.victim >= -0.05, f"{data.name}: {label}: the victim loses {-out.victim:.1%}"
    assert out.ranking_kept, f"{data.name}: {label}: the honest ranking changed"


@pytest.mark.parametrize("label", SPLITS)
def test_splitting_into_identities_gains_at_most_2pct(data: Dataset, label: str) -> None:
    base = default(data, data.parts)
    out = measure(data, default, base, attack(label))
    assert out.gain <= 0.02, f"{data.name}: {label}: gain {out.gain:+.1%}"
    assert out.ranking_kept


@pytest.mark.parametrize("label", VALIDATION_COPIES)
def test_a_copy_of_the_validation_rows_earns_nothing(data: Dataset, label: str) -> None:
    base = default(data, data.parts)
    out = measure(data, default, base, attack(label))
    assert out.gain <= 0.05, f"{data.name}: {label}: copier earns {out.gain:.1%} of the honest"
    assert out.victim >= -0.05
    assert out.ranking_kept


def test_without_near_copy_dedup_the_noisy_copier_is_paid(data: Dataset) -> None:
    # What the default is measured against: exact dedup alone pays a 0.1%-noise copier most of
    # the victim's value (issue 18's table: 81%).
    base = exact_dedup_only(data, data.parts)
    out = measure(data, exact_dedup_only, base, attack("copy of bob, noise 0.1% std"))
    assert out.gain > 0.5
    assert out.victim < -0.1
