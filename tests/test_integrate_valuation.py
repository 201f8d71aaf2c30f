"""`valuation_asset` on a partitioned contributors' asset, and how a model's valuation is found.

Real Dagster instance, DuckDB log and key in tmp_path; the data is small and built so the
answer is known: one site's labels are all flipped, so its data hurts the model.
"""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
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
    # `lineage value` shows what KNN's run means: k, the rows valued, rows credited each.
    shown = _value(tmp_path, "classifier")
    valued = re.search(r"knn-shapley-rows \(k 3, (\d+) rows valued\)", shown)
    assert valued is not None and 100 < int(valued.group(1)) <= 120  # copies are not valued
    assert "rows credited ┃" in shown and "seed" not in shown


def _value(project: Path, model: str) -> str:
    """`lineage value MODEL`'s table, in this process (the log of LINEAGE_HOME)."""
    from typer.testing import CliRunner

    from lineage_platform.cli import app

    done = CliRunner().invoke(app, ["value", model])
    assert done.exit_code == 0, done.output
    return " ".join(done.output.split())  # the title wraps at the table's width


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


def _clinic(name: str, n: int, negated: bool = False) -> pd.DataFrame:
    """Regression rows: y is linear in a and b; `negated` reports -y (a units bug)."""
    x = np.random.default_rng(len(name) * 7 + n).normal(size=(n, 2))
    y = 3.0 * x[:, 0] - 2.0 * x[:, 1] + np.random.default_rng(n).normal(scale=0.3, size=n)
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": -y if negated else y, "site": name})


def test_a_regressor_is_valued_by_r2_and_settlement_accepts_its_efficient_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score

    from lineage_platform.settlement import valuation_problem
    from tests.valuation.test_exact_shapley import brute_shapley

    monkeypatch.setenv("LINEAGE_PROJECT", str(tmp_path))
    monkeypatch.setenv("LINEAGE_HOME", str(tmp_path / ".lineage"))
    frames = {"lyon": _clinic("lyon", 30), "porto": _clinic("porto", 20),
              "graz": _clinic("graz", 25, negated=True)}

    @dg.asset(metadata={"lineage/contributors_from": "column:site"})
    def cohort() -> pd.DataFrame:
        return pd.concat(frames.values(), ignore_index=True)

    @dg.asset
    def holdout() -> pd.DataFrame:
        return _clinic("holdout", 50)

    @dg.asset(kinds={"scikitlearn"})
    def regressor(cohort: pd.DataFrame) -> bytes:
        return b"a ridge regression"

    with pytest.raises(ConfigError, match="classification only, not score 'r2'"):
        valuation_asset(regressor, data=cohort, contributor_column="site", features=["a", "b"],
                        label="y", validation=holdout, score="r2")
    values = valuation_asset(regressor, data=cohort, contributor_column="site",
                             features=["a", "b"], label="y", validation=holdout,
                             make_model=Ridge, method="exact", score="r2")
    defs = with_lineage(dg.Definitions(assets=[cohort, holdout, regressor, values]),
                        project_dir=tmp_path)
    settings = Settings(tmp_path, tmp_path / ".lineage", "sqlite:///unused.db")
    ring = KeyRing(settings.keys_dir)
    ring.init(None)
    store = open_store(settings.store_url)
    (tmp_path / "dagster").mkdir()
    assets, resources = list(defs.assets or []), dict(defs.resources or {})
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        assert dg.materialize(assets, instance=instance, resources=resources,
                              selection=["cohort", "holdout", "regressor",
                                         "regressor_valuation"]).success
        # Asked for the KNN method at run time, the run fails saying why (no accuracy of R²).
        knn = dg.materialize(assets, instance=instance, resources=resources,
                             selection=["regressor_valuation"], raise_on_error=False,
                             run_config={"ops": {"regressor_valuation":
                                                 {"config": {"method": "knn"}}}})
        assert not knn.success
        failure = knn.get_step_failure_events()[0].step_failure_data.error
        assert failure is not None and "classification only" in failure.message
        sync_locations(instance, [defs], store, ring.signer(None), until_caught_up=True)
    chosen, refusals = valuation_decisions(store, load_policy(tmp_path), ["regressor"])
    assert refusals == ()
    idx, record = chosen["regressor"]
    details = record.details_obj() or {}
    assert details["method"] == "exact-shapley"
    assert details["score"] == {"name": "r2", "classification": False, "u_empty": 0.0,
                                "baseline": "u(∅) = r2 of always predicting the validation mean"}

    # The values are exact Shapley of u(S) = R² of Ridge on S's rows, by the formula here.
    held = _clinic("holdout", 50)

    def u(s: frozenset[str]) -> float:
        if not s:
            return 0.0
        rows = pd.concat([frames[c] for c in frames if c in s])
        fitted = Ridge().fit(rows[["a", "b"]].to_numpy(), rows["y"].to_numpy())
        return float(r2_score(held["y"], fitted.predict(held[["a", "b"]].to_numpy())))

    expected = dict(zip(frames, brute_shapley(tuple(frames), u), strict=True))
    got = {c.id: c.value for c in record.contributors}
    assert got == pytest.approx(expected, abs=1e-9)
    assert details["efficiency"]["u_full_minus_u_empty"] == pytest.approx(u(frozenset(frames)))
    assert got["graz"] is not None and got["graz"] < 0
    shown = _value(tmp_path, "regressor")  # exact: the coalitions evaluated, no seed
    assert "exact-shapley (all 8 coalitions evaluated, score r2)" in shown
    assert "seed" not in shown and "samples" not in shown and "rows" not in shown

    # Settlement refuses a KNN record that claims a regression score (its utility is accuracy).
    from dataclasses import replace

    from lineage_platform.records import details_json

    model = next((i.log_index, i) for i in record.inputs if i.asset == "regressor")
    with store.snapshot() as view:
        from lineage_platform.records import AttributionRecord
        from lineage_platform.signing import Envelope

        mrec = next(AttributionRecord.from_bytes(Envelope.from_json(raw).payload)
                    for i, raw in view.envelopes(("model",)) if int(i) == model[0])
    forged = replace(record, details=details_json({**details, "method": "knn-shapley-rows"}))
    assert valuation_problem(forged, (int(model[0] or 0), mrec), "regressor_valuation",
                             set(frames)) == "knn-shapley-rows values classification only, " \
                                             "not score r2"
    assert valuation_problem(record, (int(model[0] or 0), mrec), "regressor_valuation",
                             set(frames)) is None
    assert idx > 0

    # Sampled: the seed and the samples, per contributor too.
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        sampled = dg.materialize(assets, instance=instance, resources=resources,
                                 selection=["cohort", "holdout", "regressor",
                                            "regressor_valuation"],
                                 run_config={"ops": {"regressor_valuation": {"config": {
                                     "method": "permutation", "seed": 3}}}})
        assert sampled.success
        sync_locations(instance, [defs], store, ring.signer(None), until_caught_up=True)
    shown = _value(tmp_path, "regressor")
    assert "permutation-shapley (seed 3, " in shown and " samples, stopped by " in shown
    assert "score r2" in shown and "samples ┃" in shown

    # verify --recompute: the exact valuation again, from the copies of the tables it valued,
    # each checked against the signed digests (the training table's is the cohort record's).
    from lineage_platform.dagster.translator import table_sha256
    from lineage_platform.recompute import recompute_valuations

    inputs = details["inputs"]
    cohort_sha = table_sha256(pd.concat(frames.values(), ignore_index=True))
    assert inputs["training"] == {"asset": "cohort", "sha256": cohort_sha}
    assert any(i.asset == "cohort" and i.sha256 == cohort_sha for i in record.inputs)
    assert inputs["validation"] == {"asset": "holdout", "sha256": table_sha256(held)}
    outcomes = recompute_valuations(store, tmp_path, {})
    assert [(o.asset, o.ok) for o in outcomes] == [("regressor_valuation", True),
                                                   ("regressor_valuation", None)]
    assert "recomputed with exact-shapley from its signed inputs: values match" in outcomes[0].line
    copy = tmp_path / ".lineage" / "valuation-inputs" / f"{cohort_sha}.arrow"
    table = pa.ipc.open_file(pa.memory_map(str(copy))).read_all()
    with pa.OSFile(str(copy), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table.slice(1))  # one row fewer than was signed
    [changed, _] = recompute_valuations(store, tmp_path, {})
    assert changed.ok is False and "no longer hashes to its signed sha256" in changed.line
    copy.unlink()
    [missing, _] = recompute_valuations(store, tmp_path, {})
    assert missing.ok is False and f"no copy of cohort (sha256 {cohort_sha[:12]}" in missing.line
