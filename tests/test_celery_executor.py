"""Steps of the example pipeline run by a real Celery worker, through Dagster's own executor.

A redis-server is the broker, deploy/celery.yaml configures both the run and the worker,
deploy/celery_definitions.py is the code location, and the instance is on PostgreSQL
(deploy/dagster.postgres.yaml), as it would be with workers on other machines. What the worker
materialized is then signed by `lineage sync` and accepted by `lineage verify`.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest

from assets.datanet import contributions
from lineage_platform.config import Settings
from lineage_platform.dagster.workspace import QUIET, open_instance
from lineage_platform.stores import open_store
from tests.deploy_world import (
    BIN,
    DEPLOY,
    POSTGRES_YAML,
    Postgres,
    lineage_cli,
    project_env,
    redis_server,
    stop_group,
    sync_counts,
    use_instance_config,
)
from tests.sensor_world import platform_defs, read_records

CELERY_YAML = DEPLOY / "celery.yaml"
CELERY_DEFS = DEPLOY / "celery_definitions.py"
WORKER = "lineage-test"
WAIT_S = 120
# The two commands of docs/scaling.md, with this repo's paths.
START_WORKER = [
    str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
    "-y", str(CELERY_YAML), "-n", WORKER, "-l", "INFO",
]  # fmt: skip
MATERIALIZE = [
    str(BIN / "dagster"), "asset", "materialize", "-f", str(CELERY_DEFS),
    "--select", "datanet,digits_classifier", "-c", str(CELERY_YAML),
]  # fmt: skip


def _wait_ready(proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"celery worker exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        if f"{WORKER}@" in (text := log.read_text(errors="replace")) and " ready." in text:
            return
        time.sleep(0.5)
    pytest.fail(f"celery worker not ready within {WAIT_S}s:\n{log.read_text()[-3000:]}")


def _worker_steps(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """step key -> the Celery worker that reported executing it (its own engine event)."""
    out = {}
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        event = entry.dagster_event
        assert event is not None
        worker = event.event_specific_data.metadata.get("Celery worker")
        if worker is not None and event.step_key:
            out[event.step_key] = str(worker.value)
    return out


def _started(
    instance: dg.DagsterInstance, run_id: str, kind: dg.DagsterEventType
) -> set[tuple[str | None, int]]:
    """(step key, pid) of each event of `kind` in the run."""
    out = set()
    for entry in instance.all_logs(run_id, of_type=kind):
        event = entry.dagster_event
        assert event is not None and event.pid is not None
        out.add((event.step_key, event.pid))
    return out


def test_steps_run_on_a_celery_worker_and_are_signed(
    project_copy: Callable[[], Settings],
    postgres: Postgres,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = project_copy()
    use_instance_config(settings, POSTGRES_YAML, postgres.env, monkeypatch)
    defs = platform_defs(settings)
    with redis_server(tmp_path / "redis") as broker:
        env = project_env(
            settings,
            {
                **postgres.env,
                "DAGSTER_CELERY_BROKER_URL": broker,
                "DAGSTER_CELERY_BACKEND_URL": broker,
                # The worker imports the copied project's `assets`, not the installed one.
                "PYTHONPATH": str(settings.project_dir),
                # `dagster-celery worker start` runs `celery` from PATH, as in an active venv.
                "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            },
        )
        log = tmp_path / "worker.log"
        with open(log, "wb") as sink:
            worker = subprocess.Popen(
                START_WORKER,
                cwd=settings.project_dir,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: one signal stops its children
            )
        try:
            # The upstream partitions, in this process, while the worker starts.
            with open_instance(settings) as instance:
                local_runs = {
                    dg.materialize(
                        list(defs.assets or []),
                        instance=instance,
                        resources=dict(defs.resources or {}),
                        selection=[contributions.key],
                        partition_key=part,
                        run_config=QUIET,
                    ).run_id
                    for part in contributions.partitions_def.get_partition_keys()
                }
            _wait_ready(worker, log)
            run = subprocess.run(
                MATERIALIZE,
                cwd=settings.project_dir,
                env=env,
                capture_output=True,
                text=True,
                timeout=WAIT_S,
                check=False,
            )
            assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
        finally:
            stop_group(worker)

    with open_instance(settings) as instance:
        runs = instance.get_runs()
        celery_runs = [r for r in runs if r.run_id not in local_runs]
        assert len(local_runs) == 6 and len(celery_runs) == 1
        celery_run = celery_runs[0]
        assert celery_run.status == dg.DagsterRunStatus.SUCCESS
        on_worker = _worker_steps(instance, celery_run.run_id)
        run_start = _started(instance, celery_run.run_id, dg.DagsterEventType.RUN_START)
        step_start = _started(instance, celery_run.run_id, dg.DagsterEventType.STEP_START)
    # Every step (the two assets and their checks) was picked up by the named worker and ran in
    # the worker's processes, none in the process that ran the run.
    steps = {key for key, _ in step_start}
    assert {"datanet", "digits_classifier"} <= steps and set(on_worker) == steps
    assert all(name.startswith(f"{WORKER}@") for name in on_worker.values()), on_worker
    assert len(run_start) == 1 and not {pid for _, pid in run_start} & {p for _, p in step_start}

    assert sync_counts(lineage_cli(settings, postgres.env, "sync")) == (8, 8, 0, 0)
    report = lineage_cli(settings, postgres.env, "verify")
    assert report["ok"] is True and report["records"] == 8
    logged = {i.record.asset: i for i in read_records(open_store(settings.store_url))}
    model, datanet = logged["digits_classifier"], logged["datanet"]
    assert model.record.run is not None and datanet.record.run is not None
    assert model.record.run.run_id == datanet.record.run.run_id == celery_run.run_id
    assert [(i.asset, i.log_index) for i in model.record.inputs] == [("datanet", datanet.index)]
