"""The DuckDB file held by another process: every write waits, then fails with StoreBusyError
after the configured timeout having changed nothing; once the file is free the same work
completes, and a writer whose timeout outlasts the holder simply waits and succeeds.

(Read-only commands under a held lock are covered by tests/test_cli_errors.py.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pytest

from lineage_platform import usage
from lineage_platform.attest import append_records
from lineage_platform.audit import verify_store
from lineage_platform.errors import StoreBusyError
from lineage_platform.keys import KeyRing
from lineage_platform.records import AttributionRecord, utc_timestamp
from lineage_platform.settlement import load_policy, settle
from lineage_platform.stores import open_store
from tests.faults.faultkit import cli_env, one_line, run, spawn
from tests.ledger_world import EPOCH, NOW, World, events, make_world, sha
from tests.storekit import dump

# Holds the file the way any other writer would: a read-write connection, in its own process
# (DuckDB locks the file per process). Keeps it until stdin closes or `seconds` pass.
HOLD = """
import sys, threading, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("SELECT count(*) FROM log_entries").fetchall()
print("locked", flush=True)
threading.Thread(target=sys.stdin.read, daemon=True).start()
threading.Event().wait(float(sys.argv[2]))
con.close()
"""
TIMEOUT = 0.5


@contextmanager
def held(db: Path, seconds: float = 60.0) -> Iterator[subprocess.Popen[str]]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(db), str(seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.kill()
        holder.wait(timeout=30)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> World:
    world = make_world(tmp_path_factory.mktemp("faults-lock") / "template")
    usage.ingest(world.store, usage.validate_events(events(EPOCH, [("m_lineage", 100)] * 50)))
    return world


@pytest.fixture
def world(template: World, tmp_path: Path) -> World:
    return template.clone(tmp_path / "world")


def _record(i: int) -> AttributionRecord:
    return AttributionRecord(
        kind="dataset", asset="late_dataset", sha256=sha(f"late {i}"), recorded_at=utc_timestamp()
    )


def _late_calls() -> pa.Table:
    return usage.validate_events(events(EPOCH, [("m_valued", 7)] * 20, prefix="late"))


def _busy(call: Callable[[], object]) -> float:
    started = time.monotonic()
    with pytest.raises(StoreBusyError, match=r"is locked by another process \(waited 0\.5s\)"):
        call()
    return time.monotonic() - started


def test_writes_wait_for_the_timeout_then_fail_and_change_nothing(world: World) -> None:
    before = dump(world.store, ("usage_events", "ledger", "payouts", "epochs"))
    log_before = world.store.read_log()
    busy = open_store(world.settings.store_url, lock_timeout_s=TIMEOUT)
    policy = load_policy(world.settings.project_dir)
    env = cli_env(world.settings.project_dir, world.settings.state_dir,
                  LINEAGE_LOCK_TIMEOUT=str(TIMEOUT))
    with held(world.settings.duckdb_path):
        waits = [
            _busy(lambda: append_records(busy, world.key, [_record(0), _record(1)])),
            _busy(lambda: usage.ingest(busy, _late_calls())),
            _busy(lambda: settle(busy, world.key, policy, NOW)),
        ]
        for args in (
            ["usage", "record", "--model", "m_lineage", "--caller", "acme", "--fee", "5",
             "--id", "during-lock"],
            ["settle"],
        ):
            started = time.monotonic()
            line = one_line(run(args, env), 9)
            waits.append(time.monotonic() - started)
            assert "is locked by another process (waited 0.5s)" in line, line
    assert all(TIMEOUT <= w < TIMEOUT + 20 for w in waits), waits

    # Nothing was written, nothing lost: the log and every table are as they were.
    assert dump(world.store, ("usage_events", "ledger", "payouts", "epochs")) == before
    after = world.store.read_log()
    assert after[0].equals(log_before[0]) and after[1] == log_before[1]
    verify_store(world.store, KeyRing(world.settings.keys_dir).trust())

    # The same work, now that the file is free, completes once.
    appended = append_records(busy, world.key, [_record(0), _record(1)])
    assert appended.appended == 2
    assert usage.ingest(busy, _late_calls()) == (20, 0)
    done = run(["usage", "record", "--model", "m_lineage", "--caller", "acme", "--fee", "5",
                "--id", "during-lock"], env)
    assert done.returncode == 0 and "recorded" in done.stdout, done.stderr
    (statement,) = settle(busy, world.key, policy, NOW)
    assert not statement.already_settled
    assert statement.fees_total == 50 * 100 + 20 * 7
    report = verify_store(world.store, KeyRing(world.settings.keys_dir).trust())
    assert report.records == len(log_before[0]) + 3 and report.epochs == 1


def test_a_writer_with_a_longer_timeout_waits_for_the_holder_and_completes(world: World) -> None:
    store = open_store(world.settings.store_url, lock_timeout_s=30)
    env = cli_env(world.settings.project_dir, world.settings.state_dir, LINEAGE_LOCK_TIMEOUT="30")
    with held(world.settings.duckdb_path, seconds=1.5):
        started = time.monotonic()
        proc = spawn(["settle", "--json"], env)  # waits in another process
        result = append_records(store, world.key, [_record(9)])  # and in this one
        waited = time.monotonic() - started
        out, err = proc.communicate(timeout=120)
    assert result.appended == 1 and store.lock_waits == 1 and waited >= 1.0
    assert proc.returncode == 0, err
    (statement,) = json.loads(out)["epochs"]
    assert statement["epoch"] == EPOCH and statement["fees_total"] == 5000
    # Each wait is noted for `lineage status` (count and seconds, across processes).
    count, seconds = store.recent_lock_waits()
    assert count >= 1 and seconds >= 1.0
    verify_store(store, KeyRing(world.settings.keys_dir).trust())

