"""The DuckDB log end to end: real files, real Ed25519 keys, `append_records` and `verify_store`.

What every driver must do (append, idempotency, snapshots) is in tests/contract/; here: the
DuckDB driver's schema migrations and verification of what it stores.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pyarrow as pa
import pytest
from logkit import Project, dataset, sha, uses

from lineage_platform import attest, verify
from lineage_platform.attest import append_records, sign_records
from lineage_platform.audit import ArrowColumn, verify_store
from lineage_platform.errors import VerificationError
from lineage_platform.log import SignedCheckpoint, leaf_hash
from lineage_platform.records import InputRef
from lineage_platform.stores import EntryColumns, Store
from lineage_platform.stores import duckdb as store_module
from lineage_platform.stores.duckdb import MIGRATIONS, DuckDBStore
from tests.storekit import tamper


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project.create(tmp_path / "proj")


def test_verify_store_passes_and_reports_counts(project: Project) -> None:
    key = project.signer()
    append_records(project.store, key, [dataset(0), dataset(1, partition="2026-11-23")])
    append_records(project.store, key, [dataset(2, kind="model")])
    report = verify_store(project.store, project.ring.trust())
    assert (report.records, report.checkpoints) == (3, 2)
    assert report.keyids == (key.keyid,)
    assert report.kinds == {"dataset": 2, "model": 1}
    assert report.summary().startswith("OK: 3 records, 2 checkpoints")


def test_migrations_are_versioned_and_applied_once(project: Project) -> None:
    append_records(project.store, project.signer(), [dataset(0)])
    versions = [v for v, _ in MIGRATIONS]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    rows = project.sql("SELECT version FROM schema_version ORDER BY version")
    assert [r[0] for r in rows] == versions
    project.store.migrate()
    append_records(project.store, project.signer(), [dataset(1)])
    assert len(project.sql("SELECT version FROM schema_version")) == len(versions)
    # Every value a checkpoint row keeps is signed or re-derived: no unsigned clock reading.
    columns = project.sql(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'checkpoints'"
    )
    assert {c[0] for c in columns} == {"tree_size", "checkpoint", "frontier"}


def test_an_older_schema_is_migrated_forward_with_its_log_intact(tmp_path: Path) -> None:
    project = Project.create(tmp_path / "proj")
    project.home.mkdir(exist_ok=True)
    # A file written before migrations 2 and up.
    tamper(
        project.db,
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP)",
    )
    tamper(project.db, MIGRATIONS[0][1])
    tamper(project.db, "INSERT INTO schema_version (version) VALUES (1)")
    key = project.signer()
    old = DuckDBStore(project.db)
    # Reading an old file works for verification (read-only, no migration) ...
    assert old.tree_size() == 0
    assert append_records(old, key, [dataset(0)]).indices == (0,)  # ... and writing migrates it.
    versions = [r[0] for r in project.sql("SELECT version FROM schema_version ORDER BY 1")]
    assert versions == [v for v, _ in MIGRATIONS]
    assert verify_store(old, project.ring.trust()).records == 1


def test_each_migration_keeps_the_log_it_finds(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log written under every earlier schema version survives every later migration."""
    key = project.signer()
    for version in range(1, len(MIGRATIONS)):
        monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS[:version])
        append_records(project.store, key, [dataset(version)])
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS)
    before = project.snapshot()
    project.store.migrate()
    assert project.snapshot() == before
    rows = project.sql("SELECT version FROM schema_version ORDER BY version")
    assert [r[0] for r in rows] == [v for v, _ in MIGRATIONS]
    assert verify_store(project.store, project.ring.trust()).records == len(MIGRATIONS) - 1


def test_input_references_to_earlier_records_verify(project: Project) -> None:
    key = project.signer()
    a, b = dataset(0), dataset(1, partition="p1")
    append_records(project.store, key, [a, b])
    model = dataset(2, kind="model", inputs=(uses(a, 0), uses(b, 1)))
    same_batch = dataset(3, inputs=(uses(model, 2),))
    append_records(project.store, key, [model, same_batch])
    report = verify_store(project.store, project.ring.trust())
    assert report.records == 4


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (2, "record 2: input datanet/part_0 points forward to 2"),  # itself
        (3, "record 2: input datanet/part_0 points forward to 3"),
        (99, "record 2: input datanet/part_0 points forward to 99"),
    ],
)
def test_a_forward_reference_fails_naming_the_index(
    project: Project, ref: int, expected: str
) -> None:
    key = project.signer()
    a = dataset(0)
    append_records(project.store, key, [a, dataset(1)])
    append_records(project.store, key, [dataset(2, inputs=(InputRef(a.asset, a.sha256, ref),))])
    append_records(project.store, key, [dataset(3)])
    with pytest.raises(VerificationError) as info:
        verify_store(project.store, project.ring.trust())
    assert info.value.index == 2
    assert str(info.value) == expected


@pytest.mark.parametrize("wrong", ["sha256", "asset"])
def test_a_reference_with_the_wrong_content_fails_naming_the_index(
    project: Project, wrong: str
) -> None:
    key = project.signer()
    a = dataset(0)
    append_records(project.store, key, [a, dataset(1)])
    ref = uses(a, 0)
    ref = dataclasses.replace(ref, **{wrong: sha("other") if wrong == "sha256" else "other/asset"})
    append_records(project.store, key, [dataset(2), dataset(3, inputs=(ref,))])
    with pytest.raises(VerificationError) as info:
        verify_store(project.store, project.ring.trust())
    assert info.value.index == 3
    assert str(info.value).startswith(f"record 3: input {ref.asset} names record 0, which attests")


def test_supersedes_must_name_an_earlier_record(project: Project) -> None:
    key = project.signer()
    append_records(project.store, key, [dataset(0)])
    fix = dataclasses.replace(dataset(1), supersedes=0)
    append_records(project.store, key, [fix])
    assert verify_store(project.store, project.ring.trust()).records == 2
    append_records(project.store, key, [dataclasses.replace(dataset(2), supersedes=2)])
    with pytest.raises(VerificationError, match=r"^record 2: supersedes 2, not earlier$"):
        verify_store(project.store, project.ring.trust())


@pytest.mark.parametrize("workers", [1, 2])
def test_a_backlog_in_batches_commits_each_batch_and_skips_what_is_in(
    project: Project, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """`batch_size` splits one call into transactions (one checkpoint each); with workers the
    later batches are signed while earlier ones commit: the log must be as if appended alone."""
    monkeypatch.setattr(attest, "PARALLEL_MIN", 100)
    key = project.signer()
    records = [dataset(i) for i in range(250)]
    append_records(project.store, key, records[40:60])  # already in: a retry of a crashed run
    result = append_records(project.store, key, records, workers=workers, batch_size=64)

    assert result.indices[40:60] == tuple(range(20))
    assert result.indices[:40] == tuple(range(20, 60))
    assert result.indices[60:] == tuple(range(60, 250))
    assert (result.appended, result.skipped) == (230, 20)
    assert result.checkpoint is not None and result.checkpoint.checkpoint.tree_size == 250
    _, checkpoints = project.store.read_log()
    sizes = [SignedCheckpoint.from_json(c).checkpoint.tree_size for c in checkpoints]
    # The 20-record append, then one checkpoint per batch of 64 records given: the first
    # batch (records 0-63) held the 20 known ones, so it added 44.
    assert sizes == [20, 20 + 44, 20 + 44 + 64, 20 + 44 + 128, 250]
    table, _ = project.store.read_log()
    expected = [r.idempotency_key() for r in records[40:60] + records[:40] + records[60:]]
    assert table.column("idem_key").to_pylist() == expected
    assert verify_store(project.store, project.ring.trust()).records == 250
    with pytest.raises(ValueError, match="batch_size"):
        append_records(project.store, key, records, batch_size=0)


def test_large_logs_sign_and_verify_in_parallel_with_the_same_result(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above the thresholds both sides use worker processes; bytes and verdicts must not change.

    The thresholds are lowered so that a small log takes the parallel paths (several chunks).
    """
    monkeypatch.setattr(attest, "PARALLEL_MIN", 100)
    monkeypatch.setattr(verify, "PARALLEL_MIN", 100)
    key = project.signer()
    n = 700
    records = [dataset(i) for i in range(n)]
    assert sign_records(records, key, workers=2) == sign_records(records, key)
    append_records(project.store, key, records[:10], workers=2)
    append_records(project.store, key, records[10:], workers=2)
    trust = project.ring.trust()
    parallel = verify_store(project.store, trust, workers=2)
    assert parallel == verify_store(project.store, trust, workers=1)
    assert parallel.records == n

    # A derived column edited far into the log is found by a worker, named by its index; with
    # a second edit earlier on, the earlier one is reported.
    project.sql("UPDATE log_entries SET kind = 'model' WHERE idx = ?", [n - 50])
    with pytest.raises(VerificationError) as info:
        verify_store(project.store, trust, workers=2)
    assert info.value.index == n - 50
    assert str(info.value) == (
        f"record {n - 50}: stored column kind does not match the signed record"
    )
    project.sql("UPDATE log_entries SET asset = 'x' WHERE idx = 7")
    with pytest.raises(VerificationError) as info:
        verify_store(project.store, trust, workers=2)
    assert info.value.index == 7


def _snapshot_view(store: Store) -> verify.LogView:
    table, rows = store.read_snapshot()
    return verify.LogView(
        envelopes=table.column("envelope").to_pylist(),
        checkpoints=[cp for _, cp, _ in rows],
        derived=[table.column(name).to_pylist() for name in verify.DERIVED_FIELDS],
        frontiers=[(size, frontier) for size, _, frontier in rows],
        indices=table.column("idx").to_pylist(),
    )


def _log_with_a_head(project: Project, monkeypatch: pytest.MonkeyPatch, n: int = 640) -> int:
    """A log small enough for a test that still takes the parallel paths and `Ahead`."""
    monkeypatch.setattr(attest, "PARALLEL_MIN", 100)
    monkeypatch.setattr(verify, "PARALLEL_MIN", 100)
    monkeypatch.setattr(verify, "AHEAD_MIN", 10)
    append_records(project.store, project.signer(), [dataset(i) for i in range(n)], workers=2)
    return n


def test_the_records_verified_while_the_log_is_read_count_only_if_they_are_the_log_s(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`verify_store` starts on the first records before it has read the rest (`Ahead`).
    Their results count only when the snapshot begins with exactly those entries; when the
    background process dies, those records are verified after all."""
    n = _log_with_a_head(project, monkeypatch)
    trust = project.ring.trust()
    k = verify.ahead_size(n, workers=2)
    assert 4 < k < n and verify.ahead_size(n, workers=1) == 0
    monkeypatch.setattr(verify, "AHEAD_MIN", k + 1)
    assert verify.ahead_size(n, workers=2) == 0  # too few to repay one more process
    monkeypatch.setattr(verify, "AHEAD_MIN", 10)

    def head(view: verify.LogView) -> tuple[list[bytes], list[list[object]]]:
        assert view.derived is not None
        return list(view.envelopes[:k]), [list(column[:k]) for column in view.derived]

    # The head of a log whose record 3 was edited after it was read: it is not the snapshot's,
    # so the snapshot's own records are verified (and pass).
    project.sql("UPDATE log_entries SET kind = 'model' WHERE idx = 3")
    stale = verify.Ahead(*head(_snapshot_view(project.store)), trust)
    project.sql("UPDATE log_entries SET kind = 'dataset' WHERE idx = 3")
    view = _snapshot_view(project.store)
    assert not stale.matches(view)
    assert verify.verify_log(view, trust, workers=2, ahead=stale).records == n

    # The reverse: a clean head read first, record 3 edited before the snapshot: the edit is
    # found, by the check of the snapshot's own head.
    clean = verify.Ahead(*head(view), trust)
    project.sql("UPDATE log_entries SET kind = 'model' WHERE idx = 3")
    edited = _snapshot_view(project.store)
    assert not clean.matches(edited)
    with pytest.raises(VerificationError) as info:
        verify.verify_log(edited, trust, workers=2, ahead=clean)
    assert info.value.index == 3

    # A background process that dies before it answers: its records are verified here.
    monkeypatch.setattr(verify, "_run_ahead", lambda job, send: os._exit(3))
    dead = verify.Ahead(*head(edited), trust)
    assert dead.matches(edited)
    with pytest.raises(VerificationError) as info:
        verify.verify_log(edited, trust, workers=2, ahead=dead)
    assert info.value.index == 3
    # And through verify_store, whose head is read in the snapshot's own connection.
    with pytest.raises(VerificationError) as info:
        verify_store(project.store, trust, workers=2)
    assert info.value.index == 3


def test_a_snapshot_column_reads_as_the_python_values_it_holds() -> None:
    values = [b"a", None, b"c", b"d", b"e"]
    column = ArrowColumn(pa.chunked_array([values[:2], values[2:]], pa.binary()))
    assert len(column) == 5 and list(column) == values
    for cut in (slice(1, 4), slice(-2, None), slice(None, None, 2), slice(4, 1), slice(0, 99)):
        assert column[cut] == values[cut], cut
    assert (column[0], column[1], column[-1]) == (b"a", None, b"e")
    for outside in (5, -6):
        with pytest.raises(IndexError):
            column[outside]


def test_entries_as_columns_append_what_entries_as_rows_append(project: Project) -> None:
    """The workers' columnar batches (leaf hashes included) and single entries are one log."""
    key = project.signer()
    rows = sign_records([dataset(i) for i in range(6)], key)
    columns = EntryColumns.of(rows[3:])
    assert columns.entries() == rows[3:] and len(columns) == 3
    with_leaves = dataclasses.replace(columns, leaf_hash=[leaf_hash(e.envelope) for e in rows[3:]])
    project.store.append_entries(rows[:3], lambda cp: SignedCheckpoint.sign(cp, key), attest.ORIGIN)
    result = project.store.append_entries(
        with_leaves, lambda cp: SignedCheckpoint.sign(cp, key), attest.ORIGIN
    )
    assert result.indices == (3, 4, 5)
    assert verify_store(project.store, project.ring.trust()).records == 6
    with pytest.raises(ValueError, match="differ in length"):
        dataclasses.replace(columns, kind=["dataset"])


def test_a_reordered_head_is_not_taken_for_the_log_s(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The head is read as stored; with two indices swapped it is not the snapshot's (which is
    sorted by index), so the swap is judged on the snapshot itself."""
    n = _log_with_a_head(project, monkeypatch)
    trust = project.ring.trust()
    assert verify_store(project.store, trust, workers=2).records == n
    project.sql("UPDATE log_entries SET idx = -1 WHERE idx = 1")
    project.sql("UPDATE log_entries SET idx = 1 WHERE idx = 2")
    project.sql("UPDATE log_entries SET idx = 2 WHERE idx = -1")
    with pytest.raises(VerificationError) as info:
        verify_store(project.store, trust, workers=2)
    assert info.value.index is not None and info.value.index <= 2


def test_log_appends_fill_small_row_groups_that_later_batches_leave_alone(
    project: Project,
) -> None:
    """A checkpoint rewrites a table's last, partly filled row group: the log is appended in
    row groups of `LOG_ROW_GROUP_SIZE` rows, so a batch rewrites at most one of them, not
    every entry before it (bench_log: 32 -> 15 µs/record in DuckDB)."""
    key = project.signer()
    size = store_module.LOG_ROW_GROUP_SIZE
    append_records(project.store, key, [dataset(i) for i in range(size + 500)])
    append_records(project.store, key, [dataset(i) for i in range(size + 500, 2 * size + 700)])
    groups = project.sql(
        "SELECT row_group_id, max(count) FROM pragma_storage_info('log_entries') "
        "WHERE column_name = 'envelope' GROUP BY row_group_id ORDER BY row_group_id"
    )
    counts = [int(c) for _, c in groups]  # type: ignore[call-overload]
    assert sum(counts) == 2 * size + 700
    assert max(counts) == size and len(counts) == 3
    assert verify_store(project.store, project.ring.trust()).records == 2 * size + 700
