"""The Dagster instance on a real PostgreSQL server, configured by deploy/dagster.postgres.yaml.

The example pipeline materializes into it; `lineage sync` reads those events back from the
PostgreSQL event log into the signed log, and `lineage verify` accepts the result.
"""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg
import psycopg2
import pytest
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from lineage_platform.config import Settings
from lineage_platform.dagster.workspace import materialize_all, open_instance
from lineage_platform.stores import open_store
from tests.deploy_world import (
    POSTGRES_YAML,
    Postgres,
    lineage_cli,
    sync_counts,
    use_instance_config,
)
from tests.sensor_world import materialization_ids, platform_defs, read_records

KEYS = ["contributions", "datanet", "digits_classifier", "digits_classifier_valuation"]


def materialized_in_postgres(pg: Postgres) -> list[str]:
    """The idempotency key of every materialization, read with SQL from the event_logs table."""
    conn = psycopg2.connect(
        host=pg.host, port=pg.port, user=pg.user, password=pg.password, dbname=pg.db_name
    )
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT run_id, id FROM event_logs"
                " WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
            )
            return sorted(f"dagster:{run}:{sid}" for run, sid in cur.fetchall())
    finally:
        conn.close()


def test_pipeline_on_postgres_instance_is_signed_and_verifies(
    project_copy: Callable[[], Settings], postgres: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = project_copy()
    use_instance_config(settings, POSTGRES_YAML, postgres.env, monkeypatch)

    with open_instance(settings) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        done = materialize_all(platform_defs(settings), instance)
        expected = materialization_ids(instance, KEYS)
        runs = instance.get_runs()
    assert len(done) == len(expected) == 9
    assert len(runs) == 9 and {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
    # Nothing went to a local SQLite instance: the events are rows in PostgreSQL.
    assert not list(settings.dagster_home.glob("**/*.db"))
    assert materialized_in_postgres(postgres) == expected

    assert sync_counts(lineage_cli(settings, postgres.env, "sync")) == (9, 9, 0, 0)
    assert sync_counts(lineage_cli(settings, postgres.env, "sync")) == (0, 0, 0, 0)
    report = lineage_cli(settings, postgres.env, "verify")
    assert report["ok"] is True and report["records"] == 9
    logged = read_records(open_store(settings.store_url))
    assert sorted(item.record.idempotency_key() for item in logged) == expected
