"""Exactly once, whatever crashes: a lost cursor, a failed tick, `lineage sync` killed with -9."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from lineage_platform.audit import verify_store
from lineage_platform.config import Settings
from lineage_platform.dagster.sync import DagsterSource
from lineage_platform.dagster.workspace import prepare_dagster_home
from lineage_platform.errors import StoreError
from lineage_platform.keys import KeyRing
from lineage_platform.stores import Store, open_store
from lineage_platform.stores.duckdb import DuckDBStore
from lineage_platform.sync import Cursor, sync
from tests.conftest import REPO
from tests.sensor_world import (
    evaluate_sensor,
    materialization_ids,
    platform_defs,
    read_records,
    write_backlog,
)

NAMES = ["contributions", "datanet", "digits_classifier"]
KEYS = [dg.AssetKey(n) for n in NAMES]


CODE_LOCATION = """\
import dagster as dg

parts = dg.StaticPartitionsDefinition(["p0", "p1", "p2", "p3"])


@dg.asset(partitions_def=parts)
def contributions() -> None:
    \"\"\"A contributor's part.\"\"\"


@dg.asset(deps=[contributions])
def datanet() -> None:
    \"\"\"The union of the parts.\"\"\"


@dg.asset(deps=[datanet])
def digits_classifier() -> None:
    \"\"\"The model.\"\"\"


defs = dg.Definitions(assets=[contributions, datanet, digits_classifier])
"""


def _exactly_once(store: Store, instance: dg.DagsterInstance, keyring: KeyRing) -> None:
    logged = read_records(store)
    assert sorted(item.record.idempotency_key() for item in logged) == materialization_ids(
        instance, NAMES
    )
    verify_store(store, keyring.trust())


@pytest.fixture(scope="module")
def crash_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    """A small code location (the example's asset keys) and a backlog of a few hundred events."""
    root = tmp_path_factory.mktemp("crash")
    (root / "workspace.yaml").write_text(
        "load_from:\n  - python_module:\n      module_name: crash_defs\n"
        "      working_directory: .\n",
        encoding="utf-8",
    )
    (root / "crash_defs.py").write_text(CODE_LOCATION, encoding="utf-8")
    settings = Settings(root, root / "backlog", "sqlite:///unused")
    home = prepare_dagster_home(settings)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        total = write_backlog(instance, rounds=70)
    return root, home, total


@pytest.fixture
def backlog_instance(
    crash_project: tuple[Path, Path, int],
) -> Iterator[tuple[dg.DagsterInstance, int]]:
    _, home, total = crash_project
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance, total


def test_lost_cursor_after_a_committed_batch_appends_nothing_twice(
    backlog_instance: tuple[dg.DagsterInstance, int], tmp_path: Path
) -> None:
    instance, total = backlog_instance
    ring = KeyRing(tmp_path / "keys")
    ring.init(None)
    key = ring.signer(None)
    store = open_store(tmp_path / "lineage.duckdb")

    source = DagsterSource(instance, KEYS)
    first = sync(source, store, key, Cursor(), limit=25)
    assert first.appended == 25 and first.has_more
    # The cursor update is lost: the next tick starts from the old cursor and re-reads the batch.
    retried = sync(source, store, key, Cursor(), limit=25)
    assert (retried.appended, retried.skipped) == (0, 25)
    assert retried.indices == first.indices
    assert store.tree_size() == 25

    cursor, appended = Cursor(), 0  # lost again; catch up from the very beginning
    while True:
        result = sync(source, store, key, cursor, limit=40)
        appended += result.appended
        cursor = result.cursor
        if not result.has_more:
            break
    assert appended == total - 25
    assert store.tree_size() == total
    _exactly_once(store, instance, ring)


def test_tick_that_fails_after_its_append_committed_is_retried_exactly_once(
    backlog_instance: tuple[dg.DagsterInstance, int],
    crash_project: tuple[Path, Path, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The tick dies between the commit and returning its cursor: Dagster keeps the old cursor."""
    instance, total = backlog_instance
    settings = Settings(crash_project[0], tmp_path / "state", "sqlite:///unused")
    defs = platform_defs(settings)
    original = DuckDBStore.append_entries
    calls = 0

    def commit_then_die(self: DuckDBStore, *args: object, **kwargs: object) -> object:
        nonlocal calls
        result = original(self, *args, **kwargs)  # type: ignore[arg-type]
        calls += 1
        if calls == 1:
            raise RuntimeError("process killed after the commit")
        return result

    monkeypatch.setattr(DuckDBStore, "append_entries", commit_then_die)
    old_cursor = Cursor().serialize()
    with pytest.raises(RuntimeError, match="killed after the commit"):
        evaluate_sensor(instance, defs, old_cursor)
    store = open_store(settings.store_url)
    partial = store.tree_size()
    assert 0 < partial < total

    result = evaluate_sensor(instance, defs, old_cursor)
    assert store.tree_size() == total
    message = result.skip_reason.skip_message if result.skip_reason else ""
    assert f"appended {total - partial} records ({partial} already recorded)" in (message or "")
    _exactly_once(store, instance, KeyRing(settings.keys_dir))




def _sync(root: Path, state: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LINEAGE_", "DAGSTER_"))}
    env["LINEAGE_HOME"] = str(state)
    return subprocess.Popen(
        [sys.executable, "-m", "lineage_platform.cli", "sync", "--batch-size", "16", "--json"],
        cwd=root,
        env={**env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, killed as a whole
    )


def _kill_soon_after_first_commit(
    proc: subprocess.Popen[bytes], db: Path, rng: random.Random
) -> bool:
    """SIGKILL at a random moment once appends have begun; False if it finished first."""
    deadline = time.monotonic() + 60
    while not db.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(rng.uniform(0.1, 2.0))  # a sync of this backlog takes about 3 s
    if proc.poll() is not None:
        return False
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return True


@pytest.mark.slow
def test_lineage_sync_killed_with_sigkill_resumes_exactly_once(
    crash_project: tuple[Path, Path, int], tmp_path: Path
) -> None:
    root, home, total = crash_project
    rng = random.Random(4)
    killed = 0
    for trial in range(3):
        state = tmp_path / f"trial{trial}"
        shutil.copytree(home, state / "dagster")  # the same backlog, an empty log each trial
        settings = Settings(root, state, "sqlite:///unused")
        store = open_store(settings.store_url)
        proc = _sync(root, state)
        if _kill_soon_after_first_commit(proc, settings.duckdb_path, rng):
            killed += 1
            assert proc.returncode == -signal.SIGKILL
            try:
                partial = store.tree_size()
            except StoreError:  # killed before its first commit: no schema yet
                partial = 0
            assert partial < total
            if partial:
                # What the killed process committed is a valid log: whole batches only.
                verify_store(store, KeyRing(settings.keys_dir).trust())
        else:
            partial = total
        out, err = _sync(root, state).communicate(timeout=120)
        assert b"Traceback" not in err, err.decode()
        assert b'"appended": %d' % (total - partial) in out, out.decode()
        with dg.DagsterInstance.from_config(str(state / "dagster")) as instance:
            _exactly_once(store, instance, KeyRing(settings.keys_dir))
    assert killed >= 2, "the sync finished before the kill in most trials: lower the delay"
