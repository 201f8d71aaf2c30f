"""Under `dagster dev` (daemon on), the sensor's own ticks sign what the pipeline materializes."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest

from lineage_platform.audit import verify_store
from lineage_platform.config import Settings
from lineage_platform.dagster.workspace import materialize_all, prepare_dagster_home
from lineage_platform.errors import StoreError
from lineage_platform.keys import KeyRing
from lineage_platform.stores import Store, open_store
from tests.conftest import REPO
from tests.deploy_world import free_port, stop_group
from tests.sensor_world import platform_defs, read_records

DAGSTER = REPO / ".venv" / "bin" / "dagster"
WAIT_S = 120


def _wait(what: str, ready: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dagster dev exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        if ready():
            return
        time.sleep(0.5)
    pytest.fail(f"no {what} within {WAIT_S}s:\n{log.read_text()[-3000:]}")


def _serving(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _signed(store: Store) -> int:
    """Records the sensor appended so far; a short read that yields to the sensor's writes."""
    try:
        keys = store.entries().column("idem_key").to_pylist()
        return sum(1 for k in keys if k.startswith("dagster:"))
    except StoreError:  # not created yet, or busy: the sensor holds the file for its append
        return -1


@pytest.mark.slow
def test_daemon_ticks_sign_every_materialization(project_copy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings: Settings = project_copy()
    home = prepare_dagster_home(settings)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LINEAGE_", "DAGSTER_"))}
    env.update(
        DAGSTER_HOME=str(home),
        LINEAGE_HOME=str(settings.state_dir),
        LINEAGE_SENSOR_INTERVAL_S="2",
    )
    # Create the instance's SQLite schema first: dagster dev's processes and this test would
    # otherwise race to run the same migrations ("table alembic_version already exists").
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.get_asset_keys()
    log = tmp_path / "dagster-dev.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [str(DAGSTER), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=settings.project_dir,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so one signal stops every child
        )
    store = open_store(settings.store_url, lock_timeout_s=1.0)
    try:
        # Materialize while it starts, as `make demo` would into the instance the UI shows.
        with dg.DagsterInstance.from_config(str(home)) as instance:
            done = materialize_all(platform_defs(settings), instance)
        assert len(done) == 9
        _wait("webserver", lambda: _serving(port), proc, log)
        _wait("records from the sensor's ticks", lambda: _signed(store) >= len(done), proc, log)
        time.sleep(5)  # two more ticks: nothing new to sign, nothing signed twice
        assert _signed(store) == len(done)
    finally:
        stop_group(proc)  # DESIGN §8: the whole process group
    assert proc.returncode is not None

    text = log.read_text(errors="replace")
    appended = [
        int(line.split("lineage_sensor - appended ")[1].split()[0])
        for line in text.splitlines()
        if "lineage_sensor - appended " in line
    ]
    assert sum(appended) == len(done), appended
    with dg.DagsterInstance.from_config(str(home)) as instance:
        ids = sorted(
            f"dagster:{r.run_id}:{r.storage_id}"
            for key in instance.get_asset_keys()
            for r in instance.fetch_materializations(key, limit=1000).records
        )
    logged = read_records(store)
    assert sorted(i.record.idempotency_key() for i in logged if i.record.run) == ids
    verify_store(store, KeyRing(settings.keys_dir).trust())
