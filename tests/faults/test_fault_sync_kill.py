"""`lineage sync` killed with SIGKILL at random points of a backlog, again while it recovers, then
run cleanly: every materialization is in the log exactly once and `lineage verify` passes.

Short form: LINEAGE_FAULT_TRIALS (3) trials over a LINEAGE_FAULT_BACKLOG (500) event backlog;
`make soak`: 20 trials over 5,000 events. Each trial starts from an empty log and a copy of the
same Dagster instance, and a random batch size (many small commits or a few large ones). Kill
points are drawn from the span an uninterrupted sync spends between opening the DuckDB file first
and closing it last (measured once), so they fall inside or between its transactions; in every
third trial, anywhere from its start (key creation, reading Dagster). Every other trial kills the
recovering sync a second time.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from lineage_platform.audit import verify_store
from lineage_platform.config import Settings
from lineage_platform.dagster.workspace import prepare_dagster_home
from lineage_platform.errors import StoreError
from lineage_platform.keys import KeyRing
from lineage_platform.stores import Store
from lineage_platform.stores.duckdb import DuckDBStore
from tests.faults.faultkit import (
    ASSET_NAMES,
    BACKLOG,
    PROC,
    SEED,
    TRIALS,
    cli_env,
    code_location,
    fast_scratch,
    observe,
    run,
    spawn,
)
from tests.sensor_world import materialization_ids, write_backlog

BATCH_SIZES = (64, 500, 5000)  # many small commits, a few, or one transaction per layer


@pytest.fixture(scope="module")
def backlog(tmp_path_factory: pytest.TempPathFactory) -> Backlog:
    """A code location, a Dagster instance holding BACKLOG runless materializations, and how
    long an uninterrupted `lineage sync` of it writes (kill points are drawn from that span)."""
    root = code_location(tmp_path_factory.mktemp("faults-sync") / "project")
    scratch = fast_scratch()
    try:
        home = prepare_dagster_home(Settings(root, scratch, "sqlite:///unused"))
        with dg.DagsterInstance.from_config(str(home)) as instance:
            # Rounds of (a contribution partition, datanet, model), with Dagster's input tags.
            write_backlog(instance, rounds=max(1, (BACKLOG - 4) // 3))
            expected = materialization_ids(instance, ASSET_NAMES)
        template = shutil.copytree(home, root / "template")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    state = root / "calibration"
    shutil.copytree(template, state / "dagster")
    proc = spawn(["sync", "--json"], cli_env(root, state), cwd=root)
    line = observe(proc, state / "lineage.duckdb")
    assert proc.returncode == 0 and line.write_span is not None, line.stderr
    assert json.loads(line.stdout)["appended"] == len(expected)
    return Backlog(root, template, expected, line.write_span)


@dataclass(frozen=True)
class Backlog:
    root: Path
    home: Path
    expected: list[str]  # the idempotency key of every materialization in the instance
    write_span: float


def _logged_keys(store: Store) -> list[str]:
    table = store.entries()
    return sorted(str(k) for k in table.column("idem_key").to_pylist())


def _tree_size(store: Store) -> int:
    try:
        return store.tree_size()
    except StoreError:  # killed before its first commit created the schema
        return 0


@pytest.mark.slow
@pytest.mark.skipif(not PROC, reason="kill points are placed by watching /proc/<pid>/fd")
def test_sync_killed_at_random_points_logs_every_materialization_exactly_once(
    backlog: Backlog, tmp_path: Path
) -> None:
    root, home, expected = backlog.root, backlog.home, backlog.expected
    total = len(expected)
    rng = random.Random(SEED)
    outcomes: list[str] = []
    for trial in range(TRIALS):
        state = tmp_path / f"trial{trial}"
        shutil.copytree(home, state / "dagster")
        env = cli_env(root, state)
        store = DuckDBStore(state / "lineage.duckdb")  # watched as a file: the DuckDB driver
        batch = str(rng.choice(BATCH_SIZES))
        # Small batches write in many more (and smaller) transactions than one big one.
        span = backlog.write_span * (3.0 if batch == "64" else 1.2)
        args = ["sync", "--json", "--batch-size", batch]
        seen = 0
        for attempt in range(1 + trial % 2):
            where = f"trial {trial} attempt {attempt} (seed {SEED}, batch {batch})"
            proc = spawn(args, env, cwd=root)
            if attempt == 0 and trial % 3 == 2:
                # Anywhere from the start: importing, creating the key ring, reading Dagster.
                line = observe(proc, store.path, kill_after_start=rng.uniform(0.0, 3.0))
            else:
                # Inside or between its transactions: a small batch size makes many of them.
                line = observe(proc, store.path, kill_after_open=rng.uniform(0, span))
            if not line.killed:
                assert proc.returncode == 0, f"{where}: {line.stderr}"
                outcomes.append("finished")
                seen = total
                break
            partial = _tree_size(store)
            assert seen <= partial <= total, where
            if partial:
                # Whatever a killed sync committed is a valid log: whole batches, each signed.
                verify_store(store, KeyRing(state / "keys").trust())
                keys = _logged_keys(store)
                assert len(set(keys)) == len(keys) and set(keys) <= set(expected), where
            outcomes.append(
                "nothing" if partial == seen else "all" if partial == total else "partial"
            )
            seen = partial

        proc = spawn(args, env, cwd=root)
        line = observe(proc, store.path)
        assert proc.returncode == 0, line.stderr
        result = json.loads(line.stdout)
        assert result["appended"] == total - seen, (trial, SEED, result, seen)
        assert _logged_keys(store) == expected, f"trial {trial} (seed {SEED})"
        if trial == TRIALS - 1:
            verified = run(["verify"], env, cwd=root)
            assert verified.returncode == 0, verified.stderr
            assert verified.stdout.startswith(f"OK: {total} records"), verified.stdout
        else:  # the same check in this process, a subprocess the less
            assert verify_store(store, KeyRing(state / "keys").trust()).records == total

    kills = sum(o != "finished" for o in outcomes)
    summary = {o: outcomes.count(o) for o in sorted(set(outcomes))}
    print(f"\nsync kill trials: {TRIALS} x {total} events, {kills} kills {summary}, seed {SEED}")
    assert kills >= TRIALS, f"syncs finished before their kill: {summary} (seed {SEED})"
