"""The example pipeline on real parts: a DVC repo, an MLflow sqlite store, a Dagster instance."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from assets.definitions import defs
from assets.prepare import load_params, make_split
from lineage_platform.config import Settings
from lineage_platform.dagster import LineageSettingsResource
from lineage_platform.dagster.metadata import DVC_MD5, MLFLOW_MODEL, MLFLOW_RUN, SHA256
from lineage_platform.dagster.resources import resources_for
from lineage_platform.dagster.workspace import materialize_all
from lineage_platform.errors import IntegrationError
from lineage_platform.hashing import sha256_file
from lineage_platform.integrations import dvc
from lineage_platform.integrations.mlflow import get_logged_model, get_run
from tests.conftest import REPO, tree


def _defs_for(settings: Settings) -> dg.Definitions:
    return dg.Definitions(assets=list(defs.assets or []), resources=resources_for(settings))


def test_definitions_load_with_expected_graph() -> None:
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    # `settlement` (one partition per settled epoch) is the platform's, added by with_lineage.
    assert keys == {"contributions", "datanet", "digits_classifier", "digits_classifier_valuation",
                    "settlement"}
    assert {k.to_user_string() for k in graph.get(dg.AssetKey("datanet")).parent_keys} == {
        "contributions"
    }
    model_parents = graph.get(dg.AssetKey("digits_classifier")).parent_keys
    assert {k.to_user_string() for k in model_parents} == {"datanet"}
    partitions = graph.get(dg.AssetKey("contributions")).partitions_def
    assert partitions is not None and len(partitions.get_partition_keys()) >= 6


def test_split_makes_valuation_meaningful() -> None:
    parts, validation = make_split(load_params(REPO / "params.yaml"))
    assert len(parts) >= 6
    honest = [p for p in ("alice", "bob", "carol", "dave") if p in parts]
    assert len({len(parts[p]) for p in honest}) == len(honest), "honest parts differ in size"
    assert parts["frank"].equals(parts["dave"]), "frank duplicates dave's rows"
    # erin's labels are partly flipped: the same pixels as the clean digits, other labels.
    clean, _ = make_split({**load_params(REPO / "params.yaml"), "datanet": {
        **load_params(REPO / "params.yaml")["datanet"], "noisy": None}})
    flipped = (clean["erin"]["label"] != parts["erin"]["label"]).mean()
    assert 0.4 < flipped < 0.6
    all_rows = pd.concat([*parts.values()])
    assert not validation.merge(all_rows, how="inner").shape[0], "validation is held out"


def test_dvc_lock_md5s_resolve_through_dvc_api(reproduced_project: Settings) -> None:
    lock = dvc.read_lock(reproduced_project.project_dir)
    assert "data/parts/alice.parquet" in lock and "data/datanet.parquet" in lock
    url = dvc.cache_url(reproduced_project.project_dir, "data/datanet.parquet")
    md5 = lock["data/datanet.parquet"]
    assert url.replace("/", "").endswith(md5), (url, md5)


def test_materialize_every_asset_into_real_instance(project_copy) -> None:  # type: ignore[no-untyped-def]
    settings = project_copy()
    lock = dvc.read_lock(settings.project_dir)
    with dg.instance_for_test() as instance:
        done = materialize_all(_defs_for(settings), instance)
        by_asset = {m.asset: m.metadata for m in done}
        assert len(done) == 9  # six partitions, datanet, model, valuation
        alice = by_asset["contributions[alice]"]
        assert alice[DVC_MD5] == lock["data/parts/alice.parquet"]
        assert alice[SHA256] == sha256_file(settings.project_dir / "data/parts/alice.parquet")
        assert by_asset["datanet"][DVC_MD5] == lock["data/datanet.parquet"]

        model = by_asset["digits_classifier"]
        store = LineageSettingsResource.from_settings(settings).mlflow_store()
        run = get_run(store, model[MLFLOW_RUN])
        assert run.info.status == "FINISHED"
        assert run.data.metrics["validation_accuracy"] > 0.8
        inputs = run.inputs.dataset_inputs
        assert [i.dataset.name for i in inputs] == ["datanet"]
        tags = {t.key: t.value for t in inputs[0].tags}
        assert tags["dvc_md5"] == lock["data/datanet.parquet"]
        logged = get_logged_model(store, model[MLFLOW_MODEL])
        assert logged.source_run_id == model[MLFLOW_RUN]

        # Dagster's own record of the data version equals the content hash.
        event = instance.get_latest_materialization_event(dg.AssetKey("datanet"))
        assert event is not None
        tags = event.asset_materialization.tags
        assert tags["dagster/data_version"] == by_asset["datanet"][SHA256]


def test_corrupt_dvc_lock_is_one_clear_error(project_copy) -> None:  # type: ignore[no-untyped-def]
    settings = project_copy()
    tree(settings.project_dir, {"dvc.lock": "stages: [not, a, mapping"})
    with pytest.raises(IntegrationError, match=r"dvc\.lock is corrupt"):
        dvc.read_lock(settings.project_dir)
    tree(settings.project_dir, {"dvc.lock": "schema: '2.0'\nstages:\n  prepare:\n    outs:\n"
                                            "    - path: data/x\n      md5: nothex\n"})
    with pytest.raises(IntegrationError, match="bad path or md5"):
        dvc.read_lock(settings.project_dir)


def test_unreachable_mlflow_store_is_one_clear_error(tmp_path: Path) -> None:
    from lineage_platform.integrations.mlflow import MlflowStore

    store = MlflowStore("http://127.0.0.1:9", tmp_path / "artifacts")
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    with pytest.raises(IntegrationError, match="not found"):
        get_run(store, "0" * 32)


def test_cli_outside_a_project_prints_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEAGE_")}
    proc = subprocess.run(
        [sys.executable, "-m", "lineage_platform.cli", "demo"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert "workspace.yaml" in proc.stderr


def test_dagster_cli_asset_selection_strings_work(
    reproduced_project: Settings, tmp_path: Path
) -> None:
    """DESIGN §8: with antlr4 4.9 (DVC's default pull) this crashes with `ord() expected …`."""
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path / "dagster"),
        "LINEAGE_HOME": str(tmp_path / "state"),
        "LINEAGE_PROJECT": str(reproduced_project.project_dir),
    }
    (tmp_path / "dagster").mkdir()
    (tmp_path / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.run(
        # Every asset but the platform's `settlement`, whose partitions are epochs, not parts.
        [str(dagster), "asset", "materialize", "--select", "* and not key:settlement",
         "--partition", "alice",
         "-m", "assets.definitions"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ord() expected" not in proc.stderr
    # What the run did, from its instance: step log lines of the executor's child processes
    # did not always reach the captured stderr.
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster")) as instance:
        for asset in ("datanet", "digits_classifier"):
            event = instance.get_latest_materialization_event(dg.AssetKey(asset))
            assert event is not None, asset
