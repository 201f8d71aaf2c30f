"""Broken integrations: the MLflow store unreachable while the model asset runs, and a corrupt
`dvc.lock` under `lineage demo` and under the contributions asset. Each fails with one clear line,
no record is appended for the failed materialization, and the log stays as it was and verifies.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

import dagster as dg
import pytest

from assets.datanet import contributions, datanet
from assets.model import digits_classifier
from lineage_platform.attest import append_records
from lineage_platform.audit import verify_store
from lineage_platform.config import Settings
from lineage_platform.dagster.resources import resources_for
from lineage_platform.dagster.sync import sync_project
from lineage_platform.dagster.workspace import open_instance
from lineage_platform.errors import IntegrationError
from lineage_platform.keys import KeyRing
from lineage_platform.stores import open_store
from tests.faults.faultkit import cli_env, one_line, run
from tests.logkit import dataset

ASSETS = [contributions, datanet, digits_classifier]
CLOSED_PORT = "http://127.0.0.1:9"  # discard: nothing listens there


def _snapshot(settings: Settings) -> tuple[object, ...]:
    table, checkpoints = open_store(settings.store_url).read_log()
    return table.to_pydict(), checkpoints


def _failure(result: dg.ExecuteInProcessResult) -> str:
    """The message of the run's one step failure."""
    assert not result.success
    (event,) = [e for e in result.all_events if e.is_step_failure]
    info = event.step_failure_data.error
    assert info is not None
    # A failure raised inside the asset reaches Dagster as the cause of its wrapper error.
    while info.cause is not None and info.cls_name != "IntegrationError":
        info = info.cause
    assert info.cls_name == "IntegrationError", info.to_string()
    return info.message.strip().removeprefix("lineage_platform.errors.IntegrationError: ")


def _materialize(
    settings: Settings, instance: dg.DagsterInstance, key: str, mlflow_uri: str | None = None,
    partition: str | None = None,
) -> dg.ExecuteInProcessResult:
    resources = resources_for(
        Settings(settings.project_dir, settings.state_dir, mlflow_uri or settings.mlflow_uri)
    )
    return dg.materialize(
        ASSETS, instance=instance, resources=resources, selection=[dg.AssetKey(key)],
        partition_key=partition, raise_on_error=False,
    )


def test_unreachable_mlflow_fails_the_model_and_appends_nothing(
    project_copy: Callable[[], Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = project_copy()
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with open_instance(settings) as instance:
        assert _materialize(settings, instance, "datanet").success
        assert sync_project(settings, None).appended == 1
        before = _snapshot(settings)

        result = _materialize(settings, instance, "digits_classifier", CLOSED_PORT)
        message = _failure(result)
        assert "\n" not in message, message
        assert f"MLflow store {CLOSED_PORT} failed" in message, message
        assert "Connection refused" in message, message
        model = dg.AssetKey("digits_classifier")
        assert instance.fetch_materializations(model, limit=1).records == []

        synced = sync_project(settings, None)
    assert (synced.read, synced.appended) == (0, 0)
    assert _snapshot(settings) == before
    report = verify_store(open_store(settings.store_url), KeyRing(settings.keys_dir).trust())
    assert report.records == 1


# A dvc.lock cut off mid-write: not YAML any more.
TRUNCATED = "schema: '2.0'\nstages:\n  prepare:\n    cmd: python -m assets.prepare\n    outs:\n - p"


@pytest.fixture
def corrupt(project_copy: Callable[[], Settings]) -> Settings:
    """A reproduced project with a signed log, whose dvc.lock was then cut off mid-write."""
    settings = project_copy()
    ring = KeyRing(settings.keys_dir)
    ring.init(None)
    store = open_store(settings.store_url)
    append_records(store, ring.signer(None), [dataset(i) for i in range(3)])
    shutil.copy(settings.project_dir / "dvc.lock", settings.state_dir / "dvc.lock.good")
    (settings.project_dir / "dvc.lock").write_text(TRUNCATED, encoding="utf-8")
    return settings


def test_corrupt_dvc_lock_stops_the_demo_with_one_line(corrupt: Settings) -> None:
    before = _snapshot(corrupt)
    env = cli_env(corrupt.project_dir, corrupt.state_dir)
    line = one_line(run(["demo"], env, cwd=corrupt.project_dir), IntegrationError.exit_code)
    assert "dvc.lock" in line and "corrupt" in line, line
    assert _snapshot(corrupt) == before
    verified = run(["verify"], env, cwd=corrupt.project_dir)
    assert verified.returncode == 0 and verified.stdout.startswith("OK: 3 records"), verified


def test_corrupt_dvc_lock_fails_the_contributions_asset_and_appends_nothing(
    corrupt: Settings,
) -> None:
    before = _snapshot(corrupt)
    with open_instance(corrupt) as instance:
        result = _materialize(corrupt, instance, "contributions", partition="alice")
        message = _failure(result)
        assert message.startswith(f"{corrupt.project_dir / 'dvc.lock'} is corrupt"), message
        assert "\n" not in message
        synced = sync_project(corrupt, None)
    assert synced.appended == 0
    assert _snapshot(corrupt) == before
    verify_store(open_store(corrupt.store_url), KeyRing(corrupt.keys_dir).trust())
