"""What the platform writes on asset pages (dagster/views.py), from a real signed log and ledger.

The lineage of tests/ledger_world.py: raw_a (alice 30 rows, bob 10), raw_b (carol weight 2, dave
weight 6), m_valued valued at alice 3.0, bob -1.0, erin 1.0; default policy 5 / 15 / 80 %.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from lineage_platform import usage
from lineage_platform.allocation import Policy
from lineage_platform.dagster.metadata import dataset_metadata
from lineage_platform.dagster.resources import resources_for
from lineage_platform.dagster.settlement import settlement
from lineage_platform.dagster.sync import sync_locations
from lineage_platform.dagster.views import (
    LAG_CHECK,
    UNSETTLED_CHECK,
    attribution_observations,
    lag_evaluation,
    observations_at,
    sensor_lag_check,
    unsettled_evaluation,
    unsettled_fees_check,
    values_chart,
)
from lineage_platform.records import AttributionRecord, Contributor
from lineage_platform.settlement import settle
from lineage_platform.signing import Envelope
from tests.ledger_world import RECORDED, World, events, make_world


def days_ago(n: int) -> str:
    return (datetime.now(UTC) - timedelta(days=n)).strftime("%Y-%m-%d")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("views") / "world")


@pytest.fixture
def world(template: World, tmp_path: Path) -> World:
    return template.clone(tmp_path / "world")


def meta_of(obs: dg.AssetObservation) -> dict[str, Any]:
    return {k: getattr(v, "value", v) for k, v in obs.metadata.items()}


def table(value: Any) -> dict[str, dict[str, Any]]:
    first = value.schema.columns[0].name
    return {r.data[first]: dict(r.data) for r in value.records}


def svg_of(md: str) -> str:
    prefix = "data:image/svg+xml;base64,"
    return base64.b64decode(md[md.index(prefix) + len(prefix):md.rindex(")")]).decode()


def test_a_dataset_shows_its_contributors_and_its_signed_record(world: World) -> None:
    idx = world.index["raw_a"]
    [obs] = observations_at(world.store, [idx])
    assert obs.asset_key == dg.AssetKey("raw_a")
    meta = meta_of(obs)
    rows = table(meta["contributors"])
    assert {c: (r["rows"], r["share"]) for c, r in rows.items()} == {
        "alice": (30, 0.75), "bob": (10, 0.25)}
    assert meta["log index"] == idx
    envelope = world.store.entries_at([idx]).column("envelope").to_pylist()[0]
    assert meta["record digest"] == hashlib.sha256(Envelope.from_json(envelope).payload).hexdigest()
    assert meta["key id"] == world.key.keyid
    # weights beat rows, as settlement pays them
    [weighted] = observations_at(world.store, [world.index["raw_b"]])
    assert {c: r["share"] for c, r in table(meta_of(weighted)["contributors"]).items()} == {
        "carol": 0.25, "dave": 0.75}
    [mix] = observations_at(world.store, [world.index["mix"]])
    inputs = table(meta_of(mix)["inputs (signed records)"])
    assert {a: r["log index"] for a, r in inputs.items()} == {
        "raw_a": world.index["raw_a"], "raw_b": world.index["raw_b"]}
    assert inputs["raw_a"]["kind"] == "dataset"


def test_a_valuation_shows_values_and_an_inline_chart(world: World) -> None:
    [obs] = attribution_observations(world.store, ["m_valued_valuation"])
    meta = meta_of(obs)
    rows = table(meta["contributors"])
    assert {c: (r["value"], r["share"]) for c, r in rows.items()} == {
        "alice": (3.0, 0.75), "erin": (1.0, 0.25), "bob": (-1.0, 0.0)}
    chart = meta["contributor values chart"]
    assert len(chart) < 1000  # the UI shows shorter Markdown inline, longer behind a button
    assert chart.startswith("![contributor values](data:image/svg+xml;base64,")
    svg = svg_of(chart)
    # bars scaled to the largest clipped value: alice 3 -> 200 px, erin 1 -> 67, bob -1 -> 0
    assert ">alice</text><rect x='38' y='4' width='200'" in svg
    assert ">erin</text><rect x='38' y='20' width='67'" in svg
    assert ">bob</text><rect x='38' y='36' width='0'" in svg


def test_a_long_chart_keeps_the_largest_bars_that_fit_inline() -> None:
    record = AttributionRecord(
        kind="valuation", asset="v", sha256="a" * 64, recorded_at=RECORDED,
        contributors=tuple(Contributor(f"contributor-{i:03d}", value=float(i)) for i in range(40)),
    )
    md = str(values_chart(record).value)
    assert len(md) < 1000
    shown = svg_of(md).count("<rect")
    assert 0 < shown < 40 and f"(top {shown} of 40)" in md
    assert ">contributor-039<" in svg_of(md) and "contributor-000" not in svg_of(md)


def test_a_model_shows_its_valuation_and_what_each_contributor_earned(world: World) -> None:
    day = days_ago(2)
    usage.ingest(world.store, usage.validate_events(events(day, [("m_valued", 1000)])))
    settle(world.store, world.key, Policy.default(), datetime.now(UTC), day)
    [obs] = attribution_observations(world.store, [dg.AssetKey("m_valued")])
    meta = meta_of(obs)
    valuation = world.index["m_valued_valuation"]
    assert meta["latest valuation"] == f"record #{valuation} (exact-shapley, 3 parts)"
    assert "<rect" in svg_of(meta["valuation chart"])
    # 1000: protocol 50, owner 150, data 800 split 3 : 1 between alice and erin (bob < 0)
    earned = table(meta["earnings to date"])
    assert {c: (r["earned"], r["epochs"]) for c, r in earned.items()} == {
        "alice": (600, 1), "erin": (200, 1), "bob": (0, 0)}
    assert earned["alice"]["account"] == "contributor:alice"
    assert meta["owner earned to date"] == 150
    assert list(table(meta["inputs (signed records)"])) == ["raw_a", "raw_e"]


def test_observations_are_reported_to_the_instance(world: World) -> None:
    with dg.instance_for_test() as instance:
        for obs in attribution_observations(world.store, ["raw_a", "m_valued_valuation"]):
            instance.report_runless_asset_event(obs)
        records = instance.fetch_observations(dg.AssetKey("raw_a"), limit=1).records
        seen = records[0].asset_observation
        assert seen is not None and seen.metadata["log index"].value == world.index["raw_a"]


# -- friction: lag and unsettled fees -------------------------------------------------------------
@dg.asset
def part() -> dg.MaterializeResult:
    """A dataset part the sensor would sign (each materialization different content)."""
    sha = hashlib.sha256(str(datetime.now(UTC).timestamp()).encode()).hexdigest()
    return dg.MaterializeResult(metadata=dataset_metadata(sha, 3, [{"id": "alice", "rows": 3}]))


def test_the_lag_check_is_red_while_nothing_syncs_and_green_after(world: World) -> None:
    lag = sensor_lag_check("part", watched=["part"], max_events=2, max_minutes=60)
    resources = resources_for(world.settings)
    with dg.instance_for_test() as instance:
        for _ in range(2):
            dg.materialize([part], instance=instance, resources=resources)
        first = dg.materialize([part, lag], instance=instance, resources=resources)
        [red] = first.get_asset_check_evaluations()
        assert red.check_name == LAG_CHECK and red.passed is False
        assert red.metadata["not yet in the log"].value == 3

        defs = dg.Definitions(assets=[part], resources=resources)
        synced = sync_locations(instance, [defs], world.store, world.key, until_caught_up=True)
        assert synced.appended == 3
        green = lag_evaluation(instance, world.store, part.key, [part.key], 2, 60)
        assert green.passed is True and green.metadata["not yet in the log"].value == 0
        instance.report_runless_asset_event(green)

        # minutes count too: one event older than the limit is red
        dg.materialize([part], instance=instance, resources=resources)
        later = datetime.now(UTC) + timedelta(minutes=61)
        assert lag_evaluation(instance, world.store, part.key, [part.key], 2, 60, later).passed \
            is False


def test_the_unsettled_fees_check_is_red_until_every_closed_epoch_is_settled(
    world: World,
) -> None:
    older, newer = days_ago(3), days_ago(2)
    for day, prefix in ((older, "o"), (newer, "n")):
        usage.ingest(world.store, usage.validate_events(events(day, [("m_lineage", 500)],
                                                               prefix=prefix)))
    usage.ingest(world.store, usage.validate_events(
        events(days_ago(0), [("m_lineage", 7)], prefix="today", hour=0)))
    red = unsettled_evaluation(world.store, dg.AssetKey("settlement"), grace_hours=6)
    assert red.passed is False
    assert red.metadata["unsettled closed epochs"].value == f"{older}, {newer}"
    assert red.metadata["unsettled fees (minor units)"].value == 1000  # not the open epoch's 7

    check = unsettled_fees_check(grace_hours=6)
    resources = resources_for(world.settings)
    with dg.instance_for_test() as instance:
        # settling the older epoch leaves the newer one unsettled: still red
        run = dg.materialize([settlement, check], partition_key=older, instance=instance,
                             resources=resources)
        [ev] = run.get_asset_check_evaluations()
        assert ev.check_name == UNSETTLED_CHECK and ev.passed is False
        assert ev.metadata["unsettled closed epochs"].value == newer
        run = dg.materialize([settlement, check], partition_key=newer, instance=instance,
                             resources=resources)
        [ev] = run.get_asset_check_evaluations()
        assert ev.passed is True
