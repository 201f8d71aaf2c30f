"""examples/clinics, the second example: a plain, non-partitioned Dagster project whose
contributors are a column, given lineage, valuation and settlement through the public API."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from types import ModuleType

import dagster as dg
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

from tests.conftest import REPO

EXAMPLE = REPO / "examples" / "clinics"


@pytest.fixture
def clinics(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The example's package, imported as `dagster dev` would (its folder on sys.path)."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import clinics.data

    yield clinics
    for name in [m for m in sys.modules if m == "clinics" or m.startswith("clinics.")]:
        del sys.modules[name]


def test_the_clinics_split_is_held_out_and_west_is_the_bad_source(clinics: ModuleType) -> None:
    data = clinics.data
    tables = {c: data.clinic_rows(c) for c in data.CLINICS}
    holdout = data.holdout_rows()
    assert {c: set(t[data.SOURCE]) for c, t in tables.items()} == {c: {c} for c in tables}
    everyone = pd.concat(tables.values(), ignore_index=True)
    assert len(everyone) + len(holdout) == 442  # the whole bundled study, each patient once
    assert not holdout.merge(everyone[data.FEATURES], on=data.FEATURES).shape[0]

    # Scored with a model other than the example's own: clean clinics alone predict held-out
    # patients; west alone does worse than predicting the mean, and adding it hurts the rest.
    def score(names: tuple[str, ...]) -> float:
        rows = pd.concat([tables[n] for n in names])
        model = LinearRegression().fit(rows[data.FEATURES], rows[data.TARGET])
        return float(r2_score(holdout[data.TARGET], model.predict(holdout[data.FEATURES])))

    clean = ("north", "south", "east")
    assert all(score((c,)) > 0.3 for c in clean)
    assert score(("west",)) < 0.0
    assert score((*clean, "west")) < score(clean)
    assert len({len(t) for t in tables.values()}) == len(tables), "clinic sizes differ"
    assert all(score(pair) > 0.3 for pair in itertools.combinations(clean, 2))


def test_the_plain_project_materializes_and_dagster_alone_cannot_tell_tables_apart(
    clinics: ModuleType,
) -> None:
    """The issue's starting point: without content hashes Dagster gives four different clinic
    tables one data version (it hashes the code version, not the frame)."""
    from clinics.assets import clinic_tables, cohort, progression_model, progression_report

    plain = [*clinic_tables, cohort, progression_model, progression_report]
    with dg.instance_for_test() as instance:
        result = dg.materialize(plain, instance=instance)
        assert result.success
        versions = {}
        for key in ("clinic_north", "clinic_south", "clinic_east", "clinic_west"):
            event = instance.get_latest_materialization_event(dg.AssetKey(key))
            assert event is not None and event.asset_materialization is not None
            versions[key] = event.asset_materialization.tags["dagster/data_version"]
        assert len(set(versions.values())) == 1
        report = instance.get_latest_materialization_event(dg.AssetKey("progression_report"))
        assert report is not None
