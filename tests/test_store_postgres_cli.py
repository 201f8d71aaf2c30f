"""The platform with its store on PostgreSQL, driven through the CLI as users on several machines.

    LINEAGE_STORE_URL=postgresql://…/lineage lineage sync & lineage sync    # two machines at once

The Dagster instance is on the same throwaway server (deploy/dagster.postgres.yaml), so the two
`lineage sync` and the two `lineage settle` processes share nothing but the database: each
materialization is logged once, each epoch settled once, and `lineage verify` passes.
`lineage demo` runs end to end with the store on PostgreSQL too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lineage_platform.config import Settings
from lineage_platform.dagster.workspace import materialize_all, open_instance
from lineage_platform.stores import open_store
from tests.deploy_world import (
    BIN,
    POSTGRES_YAML,
    Postgres,
    lineage_cli,
    project_env,
    sync_counts,
    use_instance_config,
)
from tests.sensor_world import materialization_ids, platform_defs, read_records

KEYS = ["contributions", "datanet", "digits_classifier", "digits_classifier_valuation"]
MODEL = "digits_classifier"


def store_database(pg: Postgres, name: str = "lineage") -> str:
    """A database for the lineage store beside the Dagster instance's, on the same server."""
    import psycopg

    base = f"postgresql://{pg.user}:{pg.password}@{pg.host}:{pg.port}"
    with psycopg.connect(f"{base}/{pg.db_name}", autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    return f"{base}/{name}"


def at_once(
    settings: Settings, env: dict[str, str], *commands: list[str]
) -> list[dict[str, object]]:
    """Start every `lineage … --json` command before waiting for any; all must succeed."""
    procs = [
        subprocess.Popen(
            [str(BIN / "lineage"), *args, "--json"], cwd=settings.project_dir,
            env=project_env(settings, env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]  # fmt: skip
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err), args in zip(procs, outputs, commands, strict=True):
        assert p.returncode == 0, f"lineage {' '.join(args)}: {out}\n{err[-3000:]}"
    return [dict(json.loads(out)) for out, _ in outputs]


def run(settings: Settings, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "lineage"), *args], cwd=settings.project_dir, env=project_env(settings, env),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"lineage {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return done.stdout


def usage_file(folder: Path, days: list[str], per_day: int) -> Path:
    """`per_day` calls of the model on each UTC day, ids `<day>-<n>`."""
    rows = [(d, i) for d in days for i in range(per_day)]
    table = pa.table({
        "event_id": [f"{d}-{i}" for d, i in rows],
        "model": [MODEL] * len(rows),
        "caller": [f"caller-{i % 7}" for _, i in rows],
        "units": pa.array([1] * len(rows), pa.int64()),
        "fee": pa.array([10 + i % 13 for _, i in rows], pa.int64()),
        "occurred_at": pa.array(
            [datetime.strptime(d, "%Y-%m-%d") + timedelta(minutes=3 * i) for d, i in rows],
            pa.timestamp("us"),
        ),
    })  # fmt: skip
    path = folder / "calls.parquet"
    pq.write_table(table, path)
    return path


@pytest.mark.slow
def test_two_machines_sync_and_settle_at_once_on_postgres_each_thing_once(
    project_copy: Callable[[], Settings], postgres: Postgres, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    url = store_database(postgres)
    settings = dataclasses.replace(project_copy(), store_url_override=url)
    use_instance_config(settings, POSTGRES_YAML, postgres.env, monkeypatch)
    with open_instance(settings) as instance:
        materialize_all(platform_defs(settings), instance)
        expected = materialization_ids(instance, KEYS)
    assert len(expected) == 9
    env = {**postgres.env, "LINEAGE_STORE_URL": url}
    run(settings, env, "keys", "init")  # one key, before two processes reach for it

    # Small batches: the two processes interleave their transactions on the log lock.
    synced = at_once(settings, env, ["sync", "--batch-size", "2"], ["sync", "--batch-size", "2"])
    assert sum(int(str(s["appended"])) for s in synced) == 9, synced
    store = open_store(url)
    logged = read_records(store)
    assert sorted(item.record.idempotency_key() for item in logged) == expected
    assert [item.index for item in logged] == list(range(9))
    assert not settings.duckdb_path.exists()  # nothing went to a local file

    today = datetime.now(UTC).date()
    days = [(today - timedelta(days=n)).isoformat() for n in (3, 2, 1)]
    run(settings, env, "usage", "ingest", str(usage_file(tmp_path, days, 40)))
    assert [e.epoch for e in store.open_epochs()] == days

    settled = at_once(settings, env, ["settle"], ["settle"])
    statements = [s for out in settled for s in out["epochs"]]  # type: ignore[attr-defined]
    fresh = Counter(s["epoch"] for s in statements if not s["already_settled"])
    assert fresh == Counter(days), statements  # every epoch settled by exactly one process
    assert store.open_epochs() == []
    kinds = Counter(str(item.record.kind) for item in read_records(store))
    assert kinds["settlement"] == 3
    for day in days:
        summary = store.settled_epoch(day)
        assert summary is not None and summary.fees_total == summary.paid_total
        assert sum(p.amount for p in store.payouts(epoch=day)) == summary.paid_total

    report = lineage_cli(settings, env, "verify")
    assert report["ok"] is True and report["records"] == 12
    gauges = lineage_cli(settings, env, "status")
    assert (gauges["log_size"], gauges["checkpoint_size"], gauges["usage_event_count"]) == (
        12, 12, 120
    )
    assert gauges["closed_unsettled_epochs"] == [] and gauges["unsettled_fees"] == 0
    # A third run of each finds nothing left to do.
    assert sync_counts(lineage_cli(settings, env, "sync")) == (0, 0, 0, 0)
    assert lineage_cli(settings, env, "settle")["epochs"] == []


@pytest.mark.slow
def test_lineage_demo_runs_end_to_end_with_the_store_on_postgres(
    reproduced_project: Settings, postgres: Postgres, tmp_path: Path
) -> None:
    import shutil

    url = store_database(postgres)
    root = tmp_path / "project"
    shutil.copytree(reproduced_project.project_dir, root, ignore=shutil.ignore_patterns(".lineage"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LINEAGE_", "DAGSTER_"))}
    env.update(LINEAGE_PROJECT=str(root), LINEAGE_HOME=str(root / ".lineage"),
               LINEAGE_STORE_URL=url, COLUMNS="200")
    demo = subprocess.run([sys.executable, "-m", "lineage_platform.cli", "demo"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=900, check=False)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "lineage verify: OK" in demo.stdout, demo.stdout[-3000:]
    assert postgres.password not in demo.stdout + demo.stderr
    store = open_store(url)
    assert store.tree_size() == 10  # 6 parts, datanet, model, valuation, settlement
    [settled] = [store.settled_epoch()]
    assert settled is not None and settled.fees_total == settled.paid_total > 0
    assert not (root / ".lineage" / "lineage.duckdb").exists()
