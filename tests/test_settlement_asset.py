"""The `settlement` asset: one partition per closed epoch, settled exactly once, oldest first.

Real parts: a signed lineage in a DuckDB store (tests/ledger_world.py), real Ed25519 keys, a real
Dagster instance; the backfill test runs `dagster dev` and launches backfills through GraphQL as
the UI does.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from lineage_platform import usage
from lineage_platform.dagster.resources import resources_for
from lineage_platform.dagster.settlement import (
    SETTLEMENT_KEY,
    record_settlement_materialization,
    settlement,
    settlement_asset_job,
    settlement_asset_schedule,
    settlement_metadata,
)
from lineage_platform.dagster.workspace import DAGSTER_YAML
from lineage_platform.keys import KeyRing
from lineage_platform.settlement import settle_held
from lineage_platform.stores import Store
from tests.conftest import REPO
from tests.deploy_world import free_port, stop_group
from tests.ledger_world import World, events, make_world

DAGSTER = REPO / ".venv" / "bin" / "dagster"
# Fees per model for one epoch: m_lineage is paid along rows and weights, m_valued on its
# valuation record (tests/ledger_world.py's module docstring).
CALLS = [("m_lineage", 900), ("m_valued", 600), ("m_valued", 101)]


def days_ago(n: int) -> str:
    return (datetime.now(UTC) - timedelta(days=n)).strftime("%Y-%m-%d")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("template") / "world")


@pytest.fixture
def world(template: World, tmp_path: Path) -> World:
    return template.clone(tmp_path / "world")


def ingest(world: World, epoch: str, prefix: str) -> None:
    usage.ingest(world.store, usage.validate_events(events(epoch, CALLS, prefix=prefix)))


def materialize(world: World, instance: dg.DagsterInstance, epoch: str) -> dict[str, Any]:
    result = dg.materialize([settlement], partition_key=epoch, instance=instance,
                            resources=resources_for(world.settings))
    assert result.success
    [mat] = [m for m in result.asset_materializations_for_node("settlement")
             if m.partition == epoch]
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def latest(instance: dg.DagsterInstance, epoch: str) -> dict[str, Any]:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=SETTLEMENT_KEY, asset_partitions=[epoch]), limit=1
    ).records
    assert records, f"no materialization of settlement[{epoch}]"
    mat = records[0].asset_materialization
    assert mat is not None
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def rows(table: Any) -> list[dict[str, Any]]:
    return [dict(r.data) for r in table.records]


def settlement_records(store: Store) -> list[str]:
    found = store.entries()
    return [p for k, p in zip(found.column("kind").to_pylist(),
                              found.column("partition").to_pylist(), strict=True)
            if k == "settlement"]


def test_a_partition_settles_its_epoch_once_and_shows_what_it_paid(world: World) -> None:
    day = days_ago(3)
    ingest(world, day, "a")
    with dg.instance_for_test() as instance:
        meta = materialize(world, instance, day)
        settled = world.store.settled_epoch(day)
        assert settled is not None
        assert meta["fees_total"] == meta["paid_total"] == 900 + 600 + 101
        assert meta["statement_root"] == settled.root
        assert meta["log_index"] == settled.log_index
        assert meta["already_settled"] is False
        # every payout of the ledger, with its amount, and nothing else
        paid = {r["account"]: r["amount"] for r in rows(meta["payouts"])}
        assert paid == {p.account: p.amount for p in world.store.payouts(day)}
        assert sum(paid.values()) == 1601
        by_model = {r["model"]: r for r in rows(meta["fees by model"])}
        assert by_model["m_lineage"]["fees"] == 900 and by_model["m_valued"]["fees"] == 701
        assert by_model["m_lineage"]["paid on"].startswith("lineage")
        valuation = world.index["m_valued_valuation"]
        assert by_model["m_valued"]["paid on"] == f"valuation record #{valuation} (exact-shapley)"
        assert meta["policy"] == "protocol 5 %, model owner 15 %, data contributors 80 %"
        assert meta["usage events"] == 3

        size = world.store.tree_size()
        again = materialize(world, instance, day)
        assert world.store.tree_size() == size  # nothing signed, nothing paid
        assert again["already_settled"] is True
        assert again["settlement"] == f"already settled (record #{settled.log_index}): nothing " \
                                      "new paid"
        assert rows(again["payouts"]) == rows(meta["payouts"])
        assert again["statement_root"] == meta["statement_root"]
        assert settlement_records(world.store) == [day]


def test_an_earlier_unsettled_epoch_is_settled_first_and_shown_on_its_partition(
    world: World,
) -> None:
    older, newer = days_ago(4), days_ago(2)
    ingest(world, older, "o")
    ingest(world, newer, "n")
    with dg.instance_for_test() as instance:
        meta = materialize(world, instance, newer)
        assert meta["earlier epochs settled first"] == older
        assert settlement_records(world.store) == [older, newer]  # oldest first
        first = world.store.settled_epoch(older)
        assert first is not None
        shown = latest(instance, older)
        assert shown["statement_root"] == first.root and shown["log_index"] == first.log_index
        assert {r["account"]: r["amount"] for r in rows(shown["payouts"])} == {
            p.account: p.amount for p in world.store.payouts(older)}


def test_an_epoch_without_usage_settles_nothing(world: World) -> None:
    with dg.instance_for_test() as instance:
        size = world.store.tree_size()
        meta = materialize(world, instance, days_ago(5))
        assert meta["settlement"] == "no usage in this epoch: nothing to settle"
        assert world.store.tree_size() == size and settlement_records(world.store) == []


def test_the_cli_path_records_the_same_materialization_as_the_asset(
    world: World, tmp_path: Path
) -> None:
    day = days_ago(3)
    ingest(world, day, "c")
    cli_world = world.clone(tmp_path / "cli")
    with dg.instance_for_test() as by_asset, dg.instance_for_test() as by_cli:
        meta = materialize(world, by_asset, day)
        s = cli_world.settings
        [statement] = settle_held(cli_world.store, cli_world.key,
                                  KeyRing(s.keys_dir).trust(), s.project_dir, s.state_dir,
                                  datetime.now(UTC), day)
        record_settlement_materialization(by_cli, statement, cli_world.store)
        recorded = latest(by_cli, day)
        expected = {k: getattr(v, "value", v)
                    for k, v in settlement_metadata(world.store, statement).items()}
        assert set(recorded) == set(expected)
        for key in recorded:
            left, right = recorded[key], meta[key]
            if hasattr(left, "records"):
                assert rows(left) == rows(right), key
            else:
                assert left == right, key


def test_the_schedule_asks_for_the_epoch_that_just_closed(world: World) -> None:
    defs = dg.Definitions(assets=[settlement], jobs=[settlement_asset_job],
                          schedules=[settlement_asset_schedule],
                          resources=resources_for(world.settings))
    schedule = defs.get_schedule_def("settlement_asset_schedule")
    assert schedule.cron_schedule == "15 0 * * *"
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=datetime(2026, 3, 2, 0, 15, tzinfo=UTC)
        )
        result = schedule.evaluate_tick(context)
    assert [r.partition_key for r in result.run_requests or []] == ["2026-03-01"]


# -- backfills through GraphQL against `dagster dev`, as the UI launches them --------------------
LAUNCH = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on UnauthorizedError { message }
  }
}"""
STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status }
    ... on PythonError { message }
  }
}"""
DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def graphql(port: int, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        out: dict[str, Any] = json.loads(resp.read())
    assert "errors" not in out, out
    return out["data"]  # type: ignore[no-any-return]


def backfill(port: int, partitions: list[str], log: Path) -> None:
    launched = graphql(port, LAUNCH, {"params": {
        "assetSelection": [{"path": ["settlement"]}], "partitionNames": partitions,
        "fromFailure": False}})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    deadline = time.monotonic() + 300
    while True:
        status = graphql(port, STATUS, {"id": launched["backfillId"]})["partitionBackfillOrError"]
        if status.get("status") in DONE:
            break
        assert time.monotonic() < deadline, f"not done: {status}\n{log.read_text()[-3000:]}"
        time.sleep(2)
    assert status["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), (
        f"{status}\n{log.read_text()[-3000:]}")


@pytest.mark.slow
def test_backfilling_two_past_epochs_from_the_ui_settles_each_once(
    world: World, tmp_path: Path
) -> None:
    older, newer = days_ago(3), days_ago(2)
    ingest(world, older, "o")
    ingest(world, newer, "n")
    location = tmp_path / "location"
    location.mkdir()
    (location / "defs.py").write_text(
        "import dagster as dg\n"
        "from lineage_platform.dagster.resources import platform_resources\n"
        "from lineage_platform.dagster.settlement import settlement, settlement_asset_job\n"
        "defs = dg.Definitions(assets=[settlement], jobs=[settlement_asset_job],\n"
        "                      resources=platform_resources())\n"
    )
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.get_asset_keys()  # create the schema before dagster dev's processes race to
    env = {k: v for k, v in world.env().items() if not k.startswith("DAGSTER_")}
    env.update(DAGSTER_HOME=str(home), PYTHONPATH=str(REPO))
    port = free_port()
    log = tmp_path / "dagster-dev.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [str(DAGSTER), "dev", "-f", "defs.py", "-h", "127.0.0.1", "-p", str(port)],
            cwd=location, env=env, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,  # DESIGN §8: signal the whole group
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if graphql(port, "{ assetNodes { assetKey { path } } }")["assetNodes"]:
                    break
            except OSError:
                pass
            assert proc.poll() is None, f"dagster dev exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(2)

        backfill(port, [older, newer], log)
        assert settlement_records(world.store) == [older, newer]  # each once, oldest first
        paid = {d: [tuple(p) for p in world.store.payouts(d)] for d in (older, newer)}
        assert all(sum(n for _, _, n in rows_) == 1601 for rows_ in paid.values())
        size = world.store.tree_size()

        backfill(port, [older, newer], log)
        assert world.store.tree_size() == size
        assert settlement_records(world.store) == [older, newer]
        assert {d: [tuple(p) for p in world.store.payouts(d)] for d in paid} == paid
        with dg.DagsterInstance.from_config(str(home)) as instance:
            for day in (older, newer):
                assert latest(instance, day)["already_settled"] is True
    finally:
        stop_group(proc)  # type: ignore[arg-type]
        if os.environ.get("LINEAGE_TEST_LOGS"):
            print(log.read_text()[-5000:])


def test_lineage_settle_shows_each_settled_epoch_as_its_partition_in_dagster(
    world: World, tmp_path: Path
) -> None:
    """The ledger world's project has no code location at all, so no `settlement` asset: the
    CLI records the materialization anyway (Dagster lists an asset it has events for without a
    definition), in the instance DAGSTER_HOME names."""
    older, newer = days_ago(3), days_ago(2)
    ingest(world, older, "o")
    ingest(world, newer, "n")
    home = tmp_path / "dagster_home"
    home.mkdir()
    done = subprocess.run(world.cli_argv("settle", "--json"), capture_output=True, text=True,
                          timeout=180, env={**world.env(), "DAGSTER_HOME": str(home)})
    assert done.returncode == 0, done.stderr
    settled = {e["epoch"]: e for e in json.loads(done.stdout)["epochs"]}
    assert sorted(settled) == [older, newer]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert SETTLEMENT_KEY in instance.get_asset_keys()
        for day in (older, newer):
            shown = latest(instance, day)
            assert shown["statement_root"] == settled[day]["root"]
            assert shown["log_index"] == settled[day]["log_index"]
            paid = {r["account"]: r["amount"] for r in rows(shown["payouts"])}
            assert paid == {p.account: p.amount for p in world.store.payouts(day)}
            assert sum(paid.values()) == 1601


def test_lineage_settle_still_settles_when_dagster_cannot_record_it(
    world: World, tmp_path: Path
) -> None:
    day = days_ago(3)
    ingest(world, day, "x")
    not_a_folder = tmp_path / "dagster_home"
    not_a_folder.write_text("a file where the instance should be\n")
    done = subprocess.run(world.cli_argv("settle", "--json"), capture_output=True, text=True,
                          timeout=180, env={**world.env(), "DAGSTER_HOME": str(not_a_folder)})
    assert done.returncode == 0, done.stderr
    [epoch] = json.loads(done.stdout)["epochs"]
    assert epoch["epoch"] == day and epoch["paid_total"] == 1601
    assert world.store.settled_epoch(day) is not None  # the money is settled
    warning = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(warning) == 1, done.stderr
    assert warning[0].startswith("warning: settled, but not shown in Dagster"), warning
    assert str(not_a_folder) in warning[0] and "Traceback" not in done.stderr
