"""The lineage sensor on a real temporary instance holding the materialized example pipeline."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from lineage_platform.audit import verify_store
from lineage_platform.config import Settings
from lineage_platform.dagster import LineageSignerResource, LineageStoreResource
from lineage_platform.dagster.sensor import CHECK_NAME, evaluate_recorded
from lineage_platform.dagster.sync import event_key
from lineage_platform.dagster.workspace import Materialized, materialize_all
from lineage_platform.hashing import sha256_file
from lineage_platform.integrations import dvc
from lineage_platform.integrations.mlflow import MlflowStore, get_logged_model, get_run
from lineage_platform.keys import KeyRing
from lineage_platform.records import DvcRef, InputRef
from lineage_platform.stores import open_store
from tests.sensor_world import (
    Logged,
    evaluate_sensor,
    fresh_state,
    materialization_ids,
    platform_defs,
    read_records,
)

KEYS = ["contributions", "datanet", "digits_classifier", "digits_classifier_valuation"]


@dataclass(frozen=True)
class World:
    settings: Settings
    defs: dg.Definitions
    instance: dg.DagsterInstance
    done: list[Materialized]


@pytest.fixture(scope="module")
def world(
    reproduced_project: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """The example materialized once (9 runs) into a temporary instance, shared by this module."""
    root = tmp_path_factory.mktemp("sensor") / "project"
    shutil.copytree(reproduced_project.project_dir, root, ignore=shutil.ignore_patterns(".lineage"))
    state = root / ".lineage"
    state.mkdir()
    settings = Settings(root, state, f"sqlite:///{state / 'mlflow.db'}")
    defs = platform_defs(settings)
    with dg.instance_for_test() as instance:
        done = materialize_all(defs, instance)
        yield World(settings, defs, instance, done)


def _by_key(logged: list[Logged]) -> dict[tuple[str, str | None], Logged]:
    """Newest record per (asset, partition)."""
    out: dict[tuple[str, str | None], Logged] = {}
    for item in logged:
        out[(item.record.asset, item.record.partition)] = item
    return out


def _check_results(result: dg.SensorResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {
        e.asset_key.to_user_string(): e
        for e in result.asset_events
        if isinstance(e, dg.AssetCheckEvaluation) and e.check_name == CHECK_NAME
    }


def test_sensor_signs_each_materialization_once_with_its_lineage(
    world: World, tmp_path: Path
) -> None:
    settings = fresh_state(world.settings, tmp_path / "state")
    defs = platform_defs(settings)
    store = open_store(settings.store_url)
    project = world.settings.project_dir

    first = evaluate_sensor(world.instance, defs)
    logged = read_records(store)
    expected = materialization_ids(world.instance, KEYS)
    assert len(expected) == len(world.done) == 9
    assert sorted(item.record.idempotency_key() for item in logged) == expected
    assert [item.index for item in logged] == list(range(len(logged)))
    # New records are predicate v2, naming the Dagster event as a generic run reference.
    assert {(item.record.version, item.record.run.orchestrator if item.record.run else None)
            for item in logged} == {(2, "dagster")}

    lock = dvc.read_lock(project)
    newest = _by_key(logged)
    partitions = sorted(p for a, p in newest if a == "contributions")
    assert partitions == sorted(["alice", "bob", "carol", "dave", "erin", "frank"])
    for part in partitions:
        rec = newest[("contributions", part)].record
        rel = f"data/parts/{part}.parquet"
        assert rec.dvc == DvcRef(rel, lock[rel])
        assert rec.sha256 == sha256_file(project / rel)
        assert [(c.id, c.sha256) for c in rec.contributors] == [(part, rec.sha256)]

    datanet = newest[("datanet", None)]
    assert datanet.record.dvc == DvcRef("data/datanet.parquet", lock["data/datanet.parquet"])
    assert datanet.record.sha256 == sha256_file(project / "data/datanet.parquet")
    # One input per partition, each naming that partition's own record (frank's part duplicates
    # dave's content, so only the log index tells them apart).
    assert sorted((i.sha256, i.log_index) for i in datanet.record.inputs) == sorted(
        (newest[("contributions", p)].record.sha256, newest[("contributions", p)].index)
        for p in partitions
    )
    assert {i.asset for i in datanet.record.inputs} == {"contributions"}

    model = newest[("digits_classifier", None)]
    assert model.record.kind == "model"
    assert model.record.inputs == (InputRef("datanet", datanet.record.sha256, datanet.index),)
    assert model.record.mlflow is not None and model.record.mlflow.model_id is not None
    mlflow = MlflowStore(world.settings.mlflow_uri, world.settings.mlflow_artifacts)
    run = get_run(mlflow, model.record.mlflow.run_id)
    assert run.info.status == "FINISHED"
    assert get_logged_model(mlflow, model.record.mlflow.model_id).source_run_id == run.info.run_id

    # The tick reports what it did, and passes `attribution_recorded` on every touched asset.
    assert first.skip_reason is not None
    assert "appended 9 records" in (first.skip_reason.skip_message or "")
    checks = _check_results(first)
    assert set(checks) == set(KEYS)
    stored = store.entries().to_pydict()
    digests = dict(zip(stored["idx"], stored["record_digest"], strict=True))
    for name, evaluation in checks.items():
        assert evaluation.check_name == CHECK_NAME and evaluation.passed
        idx = evaluation.metadata["log_index"].value
        latest = world.instance.fetch_materializations(dg.AssetKey(name), limit=1).records[0]
        assert logged[idx].record.idempotency_key() == event_key(latest)
        assert evaluation.metadata["record_digest"].value == digests[idx]
        assert evaluation.metadata["key_id"].value == KeyRing(settings.keys_dir).trust().keyids()[0]

    # Evaluated again from its cursor: nothing new, nothing appended.
    again = evaluate_sensor(world.instance, defs, first.cursor)
    assert store.tree_size() == 9
    assert again.cursor == first.cursor
    assert not _check_results(again)

    # Materialized again (alice's part, the datanet, the model): exactly those three.
    assets = list(defs.assets or [])
    resources = dict(defs.resources or {})
    dg.materialize(assets, instance=world.instance, resources=resources,
                   selection=["contributions"], partition_key="alice")
    for key in ("datanet", "digits_classifier"):
        dg.materialize(assets, instance=world.instance, resources=resources, selection=[key])
    third = evaluate_sensor(world.instance, defs, again.cursor)
    logged = read_records(store)
    assert len(logged) == 12
    assert sorted(item.record.idempotency_key() for item in logged) == materialization_ids(
        world.instance, KEYS
    )
    assert set(_check_results(third)) == {"contributions", "datanet", "digits_classifier"}
    alice, datanet2, model2 = logged[9], logged[10], logged[11]
    assert (alice.record.asset, alice.record.partition) == ("contributions", "alice")
    assert alice.record.sha256 == newest[("contributions", "alice")].record.sha256
    # The new datanet read the new alice event: its input names the new record, not the old one.
    alice_inputs = [i for i in datanet2.record.inputs if i.sha256 == alice.record.sha256]
    assert [i.log_index for i in alice_inputs] == [alice.index]
    assert model2.record.inputs == (InputRef("datanet", datanet2.record.sha256, datanet2.index),)
    verify_store(store, KeyRing(settings.keys_dir).trust())


def test_attribution_checks_fail_before_sync_and_pass_after(world: World, tmp_path: Path) -> None:
    settings = fresh_state(world.settings, tmp_path / "state")
    defs = platform_defs(settings)
    resources = dict(defs.resources or {})
    everything = [*(defs.assets or []), *(defs.asset_checks or [])]

    def run_checks() -> dict[str, dg.AssetCheckEvaluation]:
        result = dg.materialize(
            everything,
            instance=world.instance,
            resources=resources,
            selection=dg.AssetSelection.all_asset_checks(),
        )
        return {
            e.asset_key.to_user_string(): e
            for e in result.get_asset_check_evaluations()
            if e.check_name == CHECK_NAME
        }

    before = run_checks()
    assert set(before) == set(KEYS)
    for evaluation in before.values():
        assert not evaluation.passed
        assert evaluation.metadata["reason"].value == (
            "not yet recorded: the lineage sensor has a backlog"
        )

    evaluate_sensor(world.instance, defs)
    after = run_checks()
    store = open_store(settings.store_url)
    logged = store.entries().to_pydict()
    rows = {
        int(i): (d, k)
        for i, d, k in zip(logged["idx"], logged["record_digest"], logged["keyid"], strict=True)
    }
    keyid = KeyRing(settings.keys_dir).trust().keyids()[0]
    for name, evaluation in after.items():
        assert evaluation.passed, (name, evaluation.metadata)
        idx = evaluation.metadata["log_index"].value
        assert evaluation.metadata["record_digest"].value == rows[idx][0]
        assert evaluation.metadata["key_id"].value == rows[idx][1] == keyid

    # The same verdict outside a run, straight from the function the check calls.
    direct = evaluate_recorded(
        world.instance,
        dg.AssetKey("datanet"),
        LineageStoreResource.from_settings(settings),
        LineageSignerResource.from_settings(settings),
    )
    assert direct.passed
    assert direct.metadata["log_index"].value == after["datanet"].metadata["log_index"].value


def test_attribution_check_fails_when_the_record_does_not_verify(
    world: World, tmp_path: Path
) -> None:
    """A log signed by a key this project does not trust fails the check and says why."""
    settings = fresh_state(world.settings, tmp_path / "state")
    evaluate_sensor(world.instance, platform_defs(settings))
    stranger = fresh_state(world.settings, tmp_path / "stranger")
    KeyRing(stranger.keys_dir).init(None)
    result = evaluate_recorded(
        world.instance,
        dg.AssetKey("digits_classifier"),
        LineageStoreResource.from_settings(settings),
        LineageSignerResource.from_settings(stranger),
    )
    assert not result.passed
    reason = result.metadata["reason"].value
    assert reason.startswith("record ") and "key" in reason, reason
