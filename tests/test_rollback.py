"""Rollback and re-key, tried as an attacker with write access to the state folder would.

A verifier remembers the newest checkpoint it verified (outside LINEAGE_HOME, here the
per-test LINEAGE_VERIFIER_STATE of conftest.py) and demands that the log grew from it; a
settler refuses a log that shrank or forked, and any epoch whose signed settlement the log
already holds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lineage_platform import usage
from lineage_platform.attest import append_records
from lineage_platform.errors import SettlementError
from lineage_platform.keys import KeyRing
from lineage_platform.settlement import Policy, settle
from lineage_platform.stores import open_store
from tests.ledger_world import NOW, events, make_world, yesterday
from tests.logkit import Project, dataset

BATCHES = ((0, 5), (5, 9), (9, 14))  # three appends, checkpoints at 5, 9 and 14


@pytest.fixture
def project(tmp_path: Path) -> Project:
    proj = Project.create(tmp_path / "proj")
    key = proj.signer()
    for start, stop in BATCHES:
        append_records(proj.store, key, [dataset(i) for i in range(start, stop)])
    return proj


def ok(proj: Project, *args: str, **env: str) -> str:
    code, out, err = proj.cli("verify", *args, **env)
    assert code == 0, err
    return out


def fails(proj: Project, *args: str, **env: str) -> str:
    code, out, err = proj.cli("verify", *args, **env)
    assert code == 7, (code, out, err)
    assert len(err.strip().splitlines()) == 1, err  # one line
    return err


def roll_back(proj: Project, size: int) -> None:
    """Delete the last records and their checkpoints: what is left verifies on its own."""
    proj.sql("DELETE FROM log_entries WHERE idx >= ?", [size])
    proj.sql("DELETE FROM checkpoints WHERE tree_size > ?", [size])


def test_first_run_remembers_the_second_demands_growth(project: Project) -> None:
    assert "first time this log is seen here: remembered size 14" in ok(project)
    append_records(project.store, project.signer(), [dataset(14)])
    assert "consistent with size 14 seen before (now 15)" in ok(project)


def test_a_rolled_back_log_fails_naming_both_sizes(project: Project) -> None:
    ok(project)
    roll_back(project, 9)
    fresh = str(project.root / "another-verifier")
    assert "OK" in ok(project, LINEAGE_VERIFIER_STATE=fresh)  # on its own, it verifies
    err = fails(project)
    assert "shrank from size 14 (seen before) to size 9" in err


def test_an_emptied_log_fails_too(project: Project) -> None:
    ok(project)
    roll_back(project, 0)
    assert "shrank from size 14 (seen before) to size 0" in fails(project)


def test_a_forked_log_fails_even_when_it_grew(project: Project) -> None:
    ok(project)
    roll_back(project, 9)
    key = project.signer()
    append_records(project.store, key, [dataset(100 + i) for i in range(8)])  # size 17
    err = fails(project)
    assert "at size 17 is not consistent with size 14 seen before" in err


def test_a_re_keyed_history_fails_on_a_machine_that_saw_the_real_one(
    project: Project, tmp_path: Path
) -> None:
    ok(project)
    # The attacker rewrites all history with a key of their own, and trusts only that key.
    shutil.rmtree(project.home)
    ring = KeyRing(project.home / "keys")
    ring.init(None)
    forged = [dataset(i) for i in range(14)]
    forged[3] = dataset(3, asset="datanet/renamed")
    append_records(project.store, ring.signer(None), forged)
    err = fails(project)
    assert "at size 14 is not consistent with size 14 seen before" in err
    # A machine that never saw the real log has nothing to compare with (witnesses cover that).
    fresh = tmp_path / "fresh-verifier"
    assert "first time" in ok(project, LINEAGE_VERIFIER_STATE=str(fresh))


def test_an_older_bundle_after_a_newer_one_fails(project: Project, tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    assert project.cli("export", "--out", str(new))[0] == 0
    roll_back(project, 9)  # a copy taken at size 9 (same bytes as the real log's prefix)
    assert project.cli("export", "--out", str(old))[0] == 0
    ok(project, "--bundle", str(old))
    assert "consistent with size 9 seen before (now 14)" in ok(project, "--bundle", str(new))
    err = fails(project, "--bundle", str(old))
    assert "shrank from size 14 (seen before) to size 9" in err


def test_since_checks_an_auditors_pinned_checkpoint(project: Project, tmp_path: Path) -> None:
    pinned = tmp_path / "pinned"
    pinned.write_text(project.cli("checkpoint")[1])
    fresh = str(tmp_path / "auditor")
    ok(project, "--since", str(pinned), LINEAGE_VERIFIER_STATE=fresh)
    roll_back(project, 5)
    append_records(project.store, project.signer(), [dataset(200 + i) for i in range(12)])
    err = fails(project, "--since", str(pinned), LINEAGE_VERIFIER_STATE=str(tmp_path / "b"))
    assert "(pinned checkpoint)" in err and "size 17" in err and "size 14" in err


# -- settlement ---------------------------------------------------------------------------------
def test_no_second_settlement_after_a_rollback(tmp_path: Path) -> None:
    world = make_world(tmp_path / "world")
    day = yesterday()
    usage.ingest(world.store, usage.validate_events(events(day, [("m_lineage", 1000)])))
    first = json.loads(world.cli("settle", "--json", check=True).stdout)["epochs"]
    assert [e["epoch"] for e in first] == [day]
    size = world.store.tree_size()
    # Roll the log back past the settlement record and delete the epoch's rows.
    db = world.settings.state_dir / "lineage.duckdb"
    from tests.storekit import tamper

    for sql in ("DELETE FROM log_entries WHERE idx >= ?", "DELETE FROM checkpoints "
                "WHERE tree_size > ?"):
        tamper(db, sql, [size - 1])
    for table in ("payouts", "ledger", "epochs"):
        tamper(db, f"DELETE FROM {table}", [])
    again = world.cli("settle", "--json")
    assert again.returncode == 7, again.stderr
    assert f"shrank from size {size} (seen before) to size {size - 1}" in again.stderr
    assert world.store.tree_size() == size - 1  # nothing was appended


def test_an_epoch_whose_settlement_is_logged_is_never_settled_again(tmp_path: Path) -> None:
    """Rows deleted, signed record kept: no memory is needed, the log itself says so."""
    world = make_world(tmp_path / "world")
    usage.ingest(world.store, usage.validate_events(events("2026-01-05", [("m_lineage", 500)])))
    [statement] = settle(world.store, world.key, Policy.default(), NOW)
    db = world.settings.state_dir / "lineage.duckdb"
    from tests.storekit import tamper

    for table in ("payouts", "ledger", "epochs"):
        tamper(db, f"DELETE FROM {table}", [])
    size = world.store.tree_size()
    with pytest.raises(SettlementError, match=f"signed settlement \\(record {statement.log_index}"):
        settle(open_store(world.settings.store_url), world.key, Policy.default(), NOW)
    assert world.store.tree_size() == size


def test_bundles_of_two_deployments_are_two_logs(project: Project, tmp_path: Path) -> None:
    """Every deployment has the same origin: an auditor of two tells them apart by the key
    their history starts with, so neither looks like a fork of the other."""
    other = Project.create(tmp_path / "other")
    append_records(other.store, other.signer(), [dataset(50 + i) for i in range(3)])
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    assert project.cli("export", "--out", str(mine))[0] == 0
    assert other.cli("export", "--out", str(theirs))[0] == 0
    assert "first time" in ok(project, "--bundle", str(mine))
    assert "first time" in ok(project, "--bundle", str(theirs))
    assert "consistent with size 14 seen before" in ok(project, "--bundle", str(mine))


def test_the_dagster_job_refuses_a_rolled_back_log_as_the_cli_does(tmp_path: Path) -> None:
    """`settlement_job` runs the same held settle as `lineage settle` (settlement.settle_held)."""
    from lineage_platform.dagster.resources import (
        LineageSettingsResource,
        LineageSignerResource,
        LineageStoreResource,
    )
    from lineage_platform.dagster.settlement import settlement_job
    from tests.storekit import tamper

    world = make_world(tmp_path / "world")
    s = world.settings
    resources = {
        "lineage": LineageSettingsResource.from_settings(s),
        "lineage_store": LineageStoreResource.from_settings(s),
        "lineage_signer": LineageSignerResource.from_settings(s),
    }
    usage.ingest(world.store, usage.validate_events(events(yesterday(), [("m_lineage", 900)])))
    assert settlement_job.execute_in_process(resources=resources).output_for_node(
        "settle_epochs"
    ) == 1
    size = world.store.tree_size()
    db = s.state_dir / "lineage.duckdb"
    tamper(db, "DELETE FROM log_entries WHERE idx >= ?", [size - 1])
    tamper(db, "DELETE FROM checkpoints WHERE tree_size > ?", [size - 1])
    for table in ("payouts", "ledger", "epochs"):
        tamper(db, f"DELETE FROM {table}", [])
    again = settlement_job.execute_in_process(resources=resources, raise_on_error=False)
    assert not again.success
    failure = next(e for e in again.all_events if e.event_type_value == "STEP_FAILURE")
    assert f"shrank from size {size}" in failure.event_specific_data.user_failure_data.description
    assert world.store.tree_size() == size - 1  # nothing was appended
