"""The translator's common case in one line (`contributor_column`, `leave_out`), subclassing
still working, and `table_sha256` of a DataFrame. Real Dagster instance, DuckDB log, keys."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pytest

from lineage_platform.config import Settings
from lineage_platform.dagster import ContributorsFrom, LineageTranslator, with_lineage
from lineage_platform.dagster.sync import sync_locations
from lineage_platform.dagster.translator import SKIPPED, table_sha256
from lineage_platform.errors import ConfigError
from lineage_platform.keys import KeyRing
from lineage_platform.records import AttributionRecord
from lineage_platform.signing import Envelope
from lineage_platform.stores import open_store

FRAME = pd.DataFrame({"source": ["b", "a", "b"], "x": [1.5, 2.0, -3.25], "n": [1, 2, 3]},
                     index=pd.RangeIndex(3))


def test_a_dataframe_has_the_digest_of_its_arrow_conversion() -> None:
    assert table_sha256(FRAME) == table_sha256(pa.Table.from_pandas(FRAME))
    assert table_sha256(FRAME) != table_sha256(FRAME.iloc[::-1].reset_index(drop=True))
    with pytest.raises(ConfigError, match="not dict"):
        table_sha256({"x": [1]})


def test_one_line_translator_signs_tables_by_column_models_as_usual_and_skips_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINEAGE_PROJECT", str(tmp_path))
    monkeypatch.setenv("LINEAGE_HOME", str(tmp_path / ".lineage"))

    @dg.asset
    def cohort() -> pd.DataFrame:
        return FRAME

    @dg.asset(kinds={"scikitlearn"})
    def model(cohort: pd.DataFrame) -> dict[str, float]:
        return {"weight": float(cohort["x"].sum())}

    @dg.asset
    def summary(cohort: pd.DataFrame) -> dict[str, int]:
        return {"rows": len(cohort)}

    @dg.asset
    def report(model: dict[str, float]) -> pd.DataFrame:
        return pd.DataFrame({"source": ["z"]})

    translator = LineageTranslator(contributor_column="source", leave_out=report)
    defs = with_lineage(dg.Definitions(assets=[cohort, model, summary, report]),
                        translator=translator, project_dir=tmp_path)
    settings = Settings(tmp_path, tmp_path / ".lineage", "sqlite:///unused.db")
    ring = KeyRing(settings.keys_dir)
    ring.init(None)
    store = open_store(settings.store_url)
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        run = dg.materialize([cohort, model, summary, report], instance=instance,
                             resources=dict(defs.resources or {}))
        assert run.success  # a non-table output under a column setting does not fail the run
        skipped = instance.get_latest_materialization_event(dg.AssetKey("summary"))
        assert skipped is not None and skipped.asset_materialization is not None
        why = skipped.asset_materialization.metadata[SKIPPED].value
        assert "column 'source'" in why and "table outputs only" in why and "dict" in why
        result = sync_locations(instance, [defs], store, ring.signer(None), until_caught_up=True)
    reasons = {p.asset: p.reason for p in result.passed}
    assert set(reasons) == {"summary", "report"}
    assert "not attributed" in reasons["report"]
    assert reasons["summary"].startswith("not signed")
    records = {
        r["idx"]: AttributionRecord.from_bytes(Envelope.from_json(r["envelope"]).payload)
        for r in store.entries().to_pylist()
    }
    by_asset = {r.asset: r for r in records.values()}
    assert set(by_asset) == {"cohort", "model"}
    assert by_asset["cohort"].sha256 == table_sha256(FRAME)
    assert [(c.id, c.rows, c.sha256) for c in by_asset["cohort"].contributors] == [
        ("b", 2, table_sha256(FRAME.iloc[[0, 2]].reset_index(drop=True))),
        ("a", 1, table_sha256(FRAME.iloc[[1]].reset_index(drop=True))),
    ]
    assert by_asset["model"].kind == "model" and by_asset["model"].contributors == ()


def test_leave_out_by_predicate_or_key_and_asset_metadata_and_subclasses_still_win() -> None:
    spec = dg.AssetSpec("cohort", group_name="tables")
    report = dg.AssetSpec("report", group_name="reports")
    by_group = LineageTranslator(leave_out=lambda s: s.group_name == "reports")
    assert by_group.attributed(spec) and not by_group.attributed(report)
    assert not LineageTranslator(leave_out=["report"]).attributed(report)
    assert LineageTranslator().contributors_from(spec) is None
    column = LineageTranslator(contributor_column="source")
    assert column.contributors_from(spec) == ContributorsFrom("column", "source")
    owned = dg.AssetSpec("glossary", metadata={"lineage/contributors_from": "owners"})
    assert column.contributors_from(owned) == ContributorsFrom("owners")
    with pytest.raises(ConfigError, match="need its name"):
        LineageTranslator(contributor_column="")

    class Reports(LineageTranslator):
        """A subclass without __init__: the defaults hold."""

        def attributed(self, spec: dg.AssetSpec) -> bool:
            return spec.group_name != "reports"

    assert Reports().attributed(spec) and not Reports().attributed(report)
    assert Reports().contributors_from(spec) is None
