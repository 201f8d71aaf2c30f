"""`valuation_asset` on a partitioned contributors' asset, and how a model's valuation is found.

Real Dagster instance, DuckDB log and key in tmp_path; the data is small and built so the
answer is known: one site's labels are all flipped, so its data hurts the model.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from lineage_platform.config import Settings
from lineage_platform.dagster import valuation_asset, with_lineage
from lineage_platform.dagster.sync import sync_locations
from lineage_platform.dagster.valuation import find_valuation, valuation_asset_key
from lineage_platform.errors import ConfigError
from lineage_platform.keys import KeyRing
from lineage_platform.settlement import load_policy, valuation_decisions
from lineage_platform.stores import open_store

SITES = ["lyon", "porto", "graz"]  # graz's labels are flipped


def _site(name: str) -> pd.DataFrame:
    x = np.random.default_rng(SITES.index(name)).normal(size=(40, 2))
    y = (x[:, 0] > 0).astype(int)
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": 1 - y if name == "graz" else y})


def test_a_partitioned_asset_is_valued_per_partition_and_settlement_accepts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINEAGE_PROJECT", str(tmp_path))
    monkeypatch.setenv("LINEAGE_HOME", str(tmp_path / ".lineage"))
    sites = dg.StaticPartitionsDefinition(SITES)

    @dg.asset(partitions_def=sites, metadata={"lineage/contributors_from": "partitions"})
    def readings(context) -> pd.DataFrame:  # type: ignore[no-untyped-def]
        return _site(context.partition_key)

    @dg.asset
    def holdout() -> pd.DataFrame:
        x = np.random.default_rng(99).normal(size=(80, 2))
        return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": (x[:, 0] > 0).astype(int)})

    @dg.asset(deps=[readings], kinds={"scikitlearn"})
    def classifier() -> bytes:
        return b"a model trained on every site"

    values = valuation_asset(classifier, data=readings, features=["a", "b"], label="y",
                             validation=holdout, k=3)
    defs = with_lineage(dg.Definitions(assets=[readings, holdout, classifier, values]),
                        project_dir=tmp_path)
    settings = Settings(tmp_path, tmp_path / ".lineage", "sqlite:///unused.db")
    ring = KeyRing(settings.keys_dir)
    ring.init(None)
    store = open_store(settings.store_url)
    (tmp_path / "dagster").mkdir()
    assets = list(defs.assets or [])
    resources = dict(defs.resources or {})
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        for site in SITES:
            assert dg.materialize(assets, instance=instance, resources=resources,
                                  selection=["readings"], partition_key=site).success
        assert dg.materialize(assets, instance=instance, resources=resources,
                              selection=["holdout", "classifier", "classifier_valuation"]).success
        result = sync_locations(instance, [defs], store, ring.signer(None), until_caught_up=True)
    assert result.unattributed == 0
    chosen, refusals = valuation_decisions(store, load_policy(tmp_path), ["classifier"])
    assert refusals == ()
    record = chosen["classifier"][1]
    assert record.asset == "classifier_valuation"
    by_site = {c.id: c.value for c in record.contributors}
    assert set(by_site) == set(SITES)
    assert by_site["graz"] is not None and by_site["graz"] < 0
    assert all(by_site[s] is not None and by_site[s] > 0 for s in ("lyon", "porto"))


def test_a_models_valuation_is_found_by_declaration_then_the_log_then_the_policy() -> None:
    @dg.asset
    def cohort() -> pd.DataFrame:
        return pd.DataFrame({"s": ["a"], "x": [1.0], "y": [1]})

    @dg.asset
    def model() -> bytes:
        return b"m"

    declared = valuation_asset("model", data=cohort, contributor_column="s", features=["x"],
                               label="y", validation=cohort, name="what_model_is_worth")

    @dg.asset(deps=[model])
    def model_valuation() -> None:
        """Named by the old convention only."""

    @dg.asset(deps=[model])
    def old_values() -> None:
        """What an older record was signed from."""

    both = dg.Definitions(assets=[cohort, model, declared, model_valuation, old_values])
    assert valuation_asset_key("model", [both]) == declared.key
    assert find_valuation("model", [both])[1] == declared.key
    legacy = dg.Definitions(assets=[cohort, model, model_valuation, old_values])
    assert valuation_asset_key("model", [legacy]) is None
    assert find_valuation("model", [legacy], logged_asset="old_values")[1] == old_values.key
    assert find_valuation("model", [legacy])[1] == model_valuation.key
    with pytest.raises(ConfigError, match="no valuation asset of cohort"):
        find_valuation("cohort", [legacy])
