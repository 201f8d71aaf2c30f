"""Issue 14's acceptance, through the CLI: a plain two-location Dagster project in tmp_path, given
lineage by the documented integration (`with_lineage` and `valuation_asset` at the bottom of
each location's module), materialized into the project's own DAGSTER_HOME as `dagster dev`
would; then `lineage sync` and `lineage value` run as a user runs them (subprocesses).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import dagster as dg
import pytest

from lineage_platform.dagster.sync import CHECK_NAME
from lineage_platform.records import AttributionRecord
from lineage_platform.signing import Envelope
from lineage_platform.stores import open_store
from tests.conftest import tree
from tests.test_integrate import PLAIN, ROWS

REPO = Path(__file__).resolve().parent.parent

# What a user appends to their own definitions module (location 1).
WITH_LINEAGE = '''

# --- lineage: the whole integration ---------------------------------------------------------
from lineage_platform.dagster import (
    ContributorsFrom, LineageTranslator, valuation_asset, with_lineage,
)


class ClinicTranslator(LineageTranslator):
    def attributed(self, spec):
        return spec.group_name != "reports"

    def contributors_from(self, spec):
        return ContributorsFrom.parse("column:source") if spec.key.path == ["cohort"] else None


clinic_values = valuation_asset(
    "outcome_model", data="cohort", contributor_column="source", features=FEATURES,
    label="outcome", validation="holdout", make_model=LogisticRegression, name="clinic_values",
)
defs = with_lineage(
    dg.Definitions(
        assets=[north, south, east, holdout, cohort, outcome_model, weekly_report, clinic_values],
        resources={"io_manager": LocalIOManager(base_dir=str(Path(__file__).parent / "dw"))},
    ),
    translator=ClinicTranslator(),
    project_dir=Path(__file__).parent,
)
'''

# Location 2: scores with location 1's model; its own module, its own with_lineage call.
SCORING = '''
import pickle
from pathlib import Path

import dagster as dg
import pandas as pd

from lineage_platform.dagster import with_lineage


class Warehouse(dg.ConfigurableIOManager):
    base_dir: str

    def handle_output(self, context, obj):
        Path(self.base_dir, *context.asset_key.path).with_suffix(".parquet").parent.mkdir(
            parents=True, exist_ok=True)
        obj.to_parquet(Path(self.base_dir, *context.asset_key.path).with_suffix(".parquet"))

    def load_input(self, context):
        return pickle.loads(Path(self.base_dir, *context.asset_key.path).with_suffix(".pkl")
                            .read_bytes())


@dg.asset(ins={"outcome_model": dg.AssetIn(key="outcome_model")})
def risk_scores(outcome_model) -> pd.DataFrame:
    """Scores for a fixed grid of patients."""
    grid = pd.DataFrame({"age": [-1.0, 0.0, 1.0], "dose": [0.5, 0.0, -0.5]})
    return grid.assign(score=outcome_model.predict_proba(grid[["age", "dose"]])[:, 1])


scoring = with_lineage(
    dg.Definitions(assets=[risk_scores, dg.AssetSpec("outcome_model")],
                   resources={"io_manager": Warehouse(base_dir=str(Path(__file__).parent / "dw"))}),
    project_dir=Path(__file__).parent, settlement=False,
)
'''

WORKSPACE = """\
load_from:
  - python_file: clinics_defs.py
  - python_file:
      relative_path: scoring_defs.py
      attribute: scoring
"""

SETTLEMENT = """\
protocol_bps = 500
owner_bps = 1500
data_bps = 8000

[models.outcome_model]
valuation = "clinic_values"
"""


def cli(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`lineage ARGS` in the project folder, with no inherited LINEAGE_/DAGSTER_ setting."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LINEAGE_", "DAGSTER_"))}
    clean.update(env)
    clean["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "lineage_platform.cli", *args],
        cwd=project, env=clean, capture_output=True, text=True, timeout=300,
    )


def _import(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _materialize(defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
    """Every asset and its checks in one run; but with_lineage's `settlement` asset, whose
    partitions are epochs."""
    from lineage_platform.dagster.settlement import SETTLEMENT_KEY, settlement

    assets = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition | dg.AssetSpec)
              and a is not settlement]
    checks = [c for c in defs.asset_checks or []
              if all(k.asset_key != SETTLEMENT_KEY for k in c.check_keys)]
    result = dg.materialize([*assets, *checks], instance=instance,
                            resources=dict(defs.resources or {}), raise_on_error=False)
    assert result.success


def test_lineage_sync_signs_both_locations_and_lineage_value_finds_the_declared_asset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "clinics"
    tree(project, {"clinics_defs.py": PLAIN + WITH_LINEAGE, "scoring_defs.py": SCORING,
                   "workspace.yaml": WORKSPACE, "settlement.toml": SETTLEMENT,
                   "home/dagster.yaml": "telemetry:\n  enabled: false\n"})
    home = project / "home"
    for name in ("LINEAGE_PROJECT", "LINEAGE_HOME", "LINEAGE_STORE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    clinics = _import(project / "clinics_defs.py", "clinics_defs_cli")
    scoring = _import(project / "scoring_defs.py", "scoring_defs_cli")
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            _materialize(clinics.defs, instance)
            _materialize(scoring.scoring, instance)
    finally:
        sys.modules.pop("clinics_defs_cli", None)
        sys.modules.pop("scoring_defs_cli", None)

    synced = cli(project, "sync", "--json", DAGSTER_HOME=str(home))
    assert synced.returncode == 0, synced.stderr
    report = json.loads(synced.stdout[synced.stdout.index("{"):])
    assert [(e["asset"], e["reason"]) for e in report["not_attributed"]] == [
        ("weekly_report", "not attributed (its translator leaves it out)")
    ]
    assert report["appended"] == 8  # 3 clinics, holdout, cohort, model, valuation, scores

    store = open_store(f"duckdb://{project / '.lineage' / 'lineage.duckdb'}")
    records = {
        rec.asset: (idx, rec)
        for idx, rec in (
            (int(r["idx"]), AttributionRecord.from_bytes(Envelope.from_json(r["envelope"]).payload))
            for r in store.entries().to_pylist()
        )
    }
    assert "weekly_report" not in records
    assert len({records[name][1].sha256 for name in ROWS}) == len(ROWS)
    assert [(c.id, c.rows) for c in records["cohort"][1].contributors] == list(ROWS.items())
    assert [(i.asset, i.log_index) for i in records["risk_scores"][1].inputs] == [
        ("outcome_model", records["outcome_model"][0])
    ]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for asset in (*ROWS, "cohort", "outcome_model", "clinic_values", "risk_scores"):
            found = instance.get_latest_asset_check_evaluation_record(
                dg.AssetCheckKey(dg.AssetKey(asset), CHECK_NAME)
            )
            assert found is not None and found.event is not None, asset
            assert found.event.dagster_event is not None
            assert found.event.dagster_event.event_specific_data.passed, asset

    # `clinic_values` is not `<model>_valuation`: found through its declaration.
    valued = cli(project, "value", "outcome_model", "--method", "exact", "--json",
                 DAGSTER_HOME=str(home))
    assert valued.returncode == 0, valued.stderr
    values = json.loads(valued.stdout[valued.stdout.index("{"):])
    assert values["method"] == "exact-shapley"
    assert {c["contributor"] for c in values["contributors"]} == set(ROWS)
    assert values["log_index"] > records["clinic_values"][0]
