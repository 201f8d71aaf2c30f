"""The disk fills up during an append, a settlement or a usage ingest: each fails with one clear
line (a StoreError naming the file and "No space left on device"), the log and every table are
unchanged and verify, and once space is freed the same work completes.

The disk is a real size-limited tmpfs when this process may mount one (root); otherwise, and in
any case as a second variant, DuckDB's commit is made to fail with OSError(ENOSPC).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lineage_platform import usage
from lineage_platform.attest import append_records
from lineage_platform.audit import verify_store
from lineage_platform.errors import StoreError
from lineage_platform.keys import KeyRing
from lineage_platform.records import AttributionRecord, utc_timestamp
from lineage_platform.settlement import load_policy, settle
from tests.faults.faultkit import cli_env, one_line, run
from tests.ledger_world import EPOCH, NOW, events, make_world, sha
from tests.storekit import dump

TABLES = ("usage_events", "ledger", "payouts", "epochs")
FULL = os.strerror(errno.ENOSPC)  # "No space left on device"

# `lineage ARGS` whose every DuckDB COMMIT fails as a full disk makes it fail.
INJECT_ENOSPC = """
import errno, os, sys
import duckdb

connect = duckdb.connect


class FullDisk:
    def __init__(self, con):
        self._con = con

    def execute(self, sql, *args, **kwargs):
        if sql.strip().upper() == "COMMIT":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._con.execute(sql, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._con, name)


duckdb.connect = lambda *args, **kwargs: FullDisk(connect(*args, **kwargs))
from lineage_platform.cli import main

sys.argv = ["lineage", *sys.argv[1:]]
main()
"""


@contextmanager
def tmpfs(mountpoint: Path, size: str) -> Iterator[bool]:
    """A size-limited tmpfs at `mountpoint` if this process may mount one; whether it did."""
    mountpoint.mkdir(parents=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        yield False
        return
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)],
        capture_output=True,
    )
    if done.returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        if subprocess.run(["umount", str(mountpoint)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


def fill(folder: Path, leave: int) -> Path:
    """Write a new filler file until the file system has about `leave` bytes free."""
    filler = folder / f"filler{len(list(folder.glob('filler*')))}"
    with open(filler, "wb") as fh:
        chunk = b"\0" * (1 << 20)
        while True:
            st = os.statvfs(folder)
            free = st.f_bavail * st.f_frsize - leave
            if free <= 0:
                break
            try:
                fh.write(chunk[: min(len(chunk), free)])
                fh.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    return filler


def records(n: int) -> list[AttributionRecord]:
    return [
        AttributionRecord(
            kind="dataset", asset=f"bulk/part_{i}", sha256=sha(f"bulk {i}"),
            recorded_at=utc_timestamp(), details='{"note":"' + "x" * 200 + '"}',
        )
        for i in range(n)
    ]


def calls(n: int, prefix: str) -> pa.Table:
    return events(EPOCH, [("m_lineage", 3)] * n, prefix=prefix, hour=0)


@pytest.fixture(params=["tmpfs", "injected"])
def full_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A folder on a disk about to be full, and how it gets full."""
    mode = request.param
    with tmpfs(tmp_path / "fs", "24m") as mounted:
        if mode == "tmpfs" and not mounted:
            pytest.skip("cannot mount a tmpfs here (needs root); the injected variant runs")
        yield mode, tmp_path / "fs"


def test_disk_full_fails_with_one_line_and_leaves_the_log_intact(
    full_disk: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mode, folder = full_disk
    world = make_world(folder / "project")
    usage.ingest(world.store, usage.validate_events(calls(40, "day")))
    big = tmp_path / "calls.parquet"  # the input lives elsewhere; only the state fills up
    pq.write_table(calls(50_000, "bulk"), big)
    log_before, tables_before = world.store.read_log(), dump(world.store, TABLES)
    env = cli_env(world.settings.project_dir, world.settings.state_dir)

    def lineage(*args: str) -> subprocess.CompletedProcess[str]:
        if mode == "tmpfs":
            return run(list(args), env)
        return subprocess.run(
            [sys.executable, "-c", INJECT_ENOSPC, *args], env=env,
            capture_output=True, text=True, timeout=300,
        )

    if mode == "tmpfs":
        fill(folder, leave=256 * 1024)  # room for the append to start, not to finish
    else:
        real = duckdb.connect
        monkeypatch.setattr(duckdb, "connect", lambda *a, **k: _FullDisk(real(*a, **k)))

    with pytest.raises(StoreError) as failed:
        append_records(world.store, world.key, records(3000))
    message = str(failed.value)
    assert "\n" not in message and FULL in message and str(world.settings.duckdb_path) in message
    for args in (["settle"], ["usage", "ingest", str(big)]):
        if mode == "tmpfs":
            fill(folder, leave=0)  # what the failed write took back (its WAL), taken again
        line = one_line(lineage(*args), StoreError.exit_code)
        assert FULL in line, line

    if mode == "injected":
        monkeypatch.undo()
    # Unchanged and verifiable, while the disk is still full: verification only reads.
    log_after = world.store.read_log()
    assert log_after[0].equals(log_before[0]) and log_after[1] == log_before[1]
    assert dump(world.store, TABLES) == tables_before
    verified = run(["verify"], env)
    assert verified.returncode == 0 and verified.stdout.startswith(
        f"OK: {log_before[0].num_rows} records"
    ), verified

    for filler in folder.glob("filler*"):
        filler.unlink()
    # Space again: the same work completes, exactly once.
    assert append_records(world.store, world.key, records(3000)).appended == 3000
    assert usage.ingest_files(world.store, [big]) == (50_000, 0)
    (statement,) = settle(world.store, world.key, load_policy(world.settings.project_dir), NOW)
    assert statement.fees_total == 3 * 50_040
    report = verify_store(world.store, KeyRing(world.settings.keys_dir).trust())
    assert (report.records, report.epochs) == (log_before[0].num_rows + 3000 + 1, 1)


class _FullDisk:
    """A DuckDB connection whose COMMIT fails as a full disk makes it fail."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con

    def execute(self, sql: str, *args: object, **kwargs: object) -> object:
        if sql.strip().upper() == "COMMIT":
            raise OSError(errno.ENOSPC, FULL)
        return self._con.execute(sql, *args, **kwargs)

    def __getattr__(self, name: str) -> object:
        return getattr(self._con, name)

