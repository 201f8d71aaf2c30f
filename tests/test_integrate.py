"""`with_lineage` on a plain Dagster project: no lineage code in its assets, one call to add it.

The project (written to tmp_path, imported like a user's code location) has three clinics'
tables with a `source` column, a joined cohort, a scikit-learn model, a plain report, and its
own IO manager, sensor, job and resource; a second code location scores with the model. The
translator attributes everything but the report and takes the cohort's contributors from its
`source` column. Everything runs for real: Dagster instance, DuckDB log, Ed25519 key.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import dagster as dg
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from lineage_platform.config import Settings
from lineage_platform.dagster import (
    ContributorsFrom,
    LineageTranslator,
    build_lineage_sensor,
    valuation_asset,
    valuation_asset_key,
    with_lineage,
)
from lineage_platform.dagster.settlement import SETTLEMENT_KEY, settlement
from lineage_platform.dagster.sync import CHECK_NAME, source_for, sync_locations
from lineage_platform.keys import KeyRing
from lineage_platform.records import AttributionRecord
from lineage_platform.settlement import load_policy, valuation_decisions
from lineage_platform.signing import Envelope, SigningKey
from lineage_platform.stores import Store, open_store
from lineage_platform.sync import Cursor
from tests.conftest import tree

ROWS = {"north": 40, "south": 30, "east": 20}

PLAIN = '''
"""A plain Dagster project: three clinics, a cohort, a model, a report. No lineage code."""
import pickle
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

FEATURES = ["age", "dose"]
ROWS = {"north": 40, "south": 30, "east": 20}


class LocalIOManager(dg.ConfigurableIOManager):
    """Tables as Parquet, anything else pickled, one file per asset under base_dir."""

    base_dir: str

    def _path(self, key: dg.AssetKey) -> Path:
        return Path(self.base_dir, *key.path)

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        path = self._path(context.asset_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(obj, pd.DataFrame):
            obj.to_parquet(path.with_suffix(".parquet"), index=False)
        else:
            path.with_suffix(".pkl").write_bytes(pickle.dumps(obj))

    def load_input(self, context: dg.InputContext) -> object:
        path = self._path(context.asset_key)
        if path.with_suffix(".parquet").is_file():
            return pd.read_parquet(path.with_suffix(".parquet"))
        return pickle.loads(path.with_suffix(".pkl").read_bytes())


def clinic(name: str, seed: int) -> dg.AssetsDefinition:
    @dg.asset(name=name, group_name="clinics")
    def _table(context: dg.AssetExecutionContext) -> pd.DataFrame:
        """One clinic's patients."""
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(ROWS[name], 2))
        y = (x[:, 0] + x[:, 1] > 0).astype(int)
        return pd.DataFrame({"source": name, "age": x[:, 0], "dose": x[:, 1], "outcome": y})

    return _table


north, south, east = clinic("north", 1), clinic("south", 2), clinic("east", 3)


@dg.asset(group_name="clinics")
def holdout() -> pd.DataFrame:
    """Patients kept out of training."""
    x = np.random.default_rng(9).normal(size=(60, 2))
    return pd.DataFrame({"age": x[:, 0], "dose": x[:, 1],
                         "outcome": (x[:, 0] + x[:, 1] > 0).astype(int)})


@dg.asset(group_name="clinics")
def cohort(north: pd.DataFrame, south: pd.DataFrame, east: pd.DataFrame) -> pd.DataFrame:
    """Every clinic's patients."""
    return pd.concat([north, south, east], ignore_index=True)


@dg.asset(group_name="models", kinds={"scikitlearn"})
def outcome_model(cohort: pd.DataFrame) -> LogisticRegression:
    """Predicts the outcome."""
    return LogisticRegression().fit(cohort[FEATURES], cohort["outcome"])


@dg.asset(group_name="reports")
def weekly_report(outcome_model: LogisticRegression, holdout: pd.DataFrame) -> pd.DataFrame:
    """Accuracy on the holdout, for people."""
    return pd.DataFrame({"accuracy": [outcome_model.score(holdout[FEATURES], holdout["outcome"])]})


@dg.sensor(job_name="nightly_job", minimum_interval_seconds=3600)
def my_sensor() -> dg.SkipReason:
    return dg.SkipReason("the user's own sensor")


nightly_job = dg.define_asset_job("nightly_job", selection=["north", "south", "east"])
'''

SCORING = '''
"""A second code location: scores with the first location's model. No lineage code."""
import dagster as dg
import pandas as pd

from clinic_plain import FEATURES, LocalIOManager


@dg.asset(ins={"outcome_model": dg.AssetIn(key="outcome_model")}, group_name="scoring")
def risk_scores(outcome_model: object) -> pd.DataFrame:
    """Scores for a fixed grid of patients."""
    grid = pd.DataFrame({"age": [-1.0, 0.0, 1.0], "dose": [0.5, 0.0, -0.5]})
    return grid.assign(score=outcome_model.predict_proba(grid[FEATURES])[:, 1])
'''


class ClinicTranslator(LineageTranslator):
    """Reports are for people, not signed; the cohort's contributors are its `source` column."""

    def attributed(self, spec: dg.AssetSpec) -> bool:
        return spec.group_name != "reports"

    def contributors_from(self, spec: dg.AssetSpec) -> ContributorsFrom | None:
        if spec.key == dg.AssetKey("cohort"):
            return ContributorsFrom.parse("column:source")
        return super().contributors_from(spec)


def _import(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Project:
    root: Path
    settings: Settings
    plain: ModuleType
    scoring: ModuleType
    defs: dg.Definitions  # location 1, with lineage
    scoring_defs: dg.Definitions  # location 2, with lineage
    store: Store
    key: SigningKey


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    root = tmp_path / "clinics"
    tree(root, {"clinic_plain.py": PLAIN, "clinic_scoring.py": SCORING})
    monkeypatch.setenv("LINEAGE_PROJECT", str(root))
    monkeypatch.setenv("LINEAGE_HOME", str(root / ".lineage"))
    monkeypatch.syspath_prepend(str(root))
    plain = _import(root / "clinic_plain.py", "clinic_plain")
    scoring = _import(root / "clinic_scoring.py", "clinic_scoring")
    io = plain.LocalIOManager(base_dir=str(root / "warehouse"))
    plain_defs = dg.Definitions(
        assets=[plain.north, plain.south, plain.east, plain.holdout, plain.cohort,
                plain.outcome_model, plain.weekly_report],
        sensors=[plain.my_sensor],
        jobs=[plain.nightly_job],
        resources={"io_manager": io, "warehouse_name": "clinics-dw"},
    )
    # What the user writes: the valuation asset and one call.
    valuation = valuation_asset(
        "outcome_model", data="cohort", contributor_column="source",
        features=plain.FEATURES, label="outcome", validation="holdout",
        make_model=lambda: LogisticRegression(),
    )
    defs = with_lineage(
        dg.Definitions.merge(plain_defs, dg.Definitions(assets=[valuation])),
        translator=ClinicTranslator(),
    )
    scoring_defs = with_lineage(
        dg.Definitions(assets=[scoring.risk_scores, dg.AssetSpec("outcome_model")],
                       resources={"io_manager": io}),
        settlement=False,
    )
    settings = Settings(root, root / ".lineage", f"sqlite:///{root / '.lineage' / 'mlflow.db'}")
    ring = KeyRing(settings.keys_dir)
    ring.init(None)
    (root / "dagster").mkdir()
    yield Project(root, settings, plain, scoring, defs, scoring_defs,
                  open_store(settings.store_url), ring.signer(None))
    for name in ("clinic_plain", "clinic_scoring"):
        sys.modules.pop(name, None)


def _materialize(
    defs: dg.Definitions, instance: dg.DagsterInstance, **kwargs: object
) -> dg.ExecuteInProcessResult:
    """Every asset and its checks, as `dagster asset materialize` runs them in one run; but the
    `settlement` asset, whose partitions are epochs (tests/test_settlement_asset.py)."""
    assets = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition | dg.AssetSpec)
              and a is not settlement]
    checks = [c for c in defs.asset_checks or []
              if all(k.asset_key != SETTLEMENT_KEY for k in c.check_keys)]
    return dg.materialize(
        [*assets, *checks], instance=instance,
        resources=dict(defs.resources or {}), raise_on_error=False, **kwargs,  # type: ignore[arg-type]
    )


def _records(store: Store) -> list[tuple[int, AttributionRecord]]:
    rows = store.entries().to_pylist()
    return [
        (int(r["idx"]), AttributionRecord.from_bytes(Envelope.from_json(r["envelope"]).payload))
        for r in rows
    ]


def store_index(store: Store, asset: str) -> int:
    [idx] = [i for i, rec in _records(store) if rec.asset == asset]
    return idx


def _latest_check(instance: dg.DagsterInstance, asset: str, name: str = CHECK_NAME) -> bool | None:
    record = instance.get_latest_asset_check_evaluation_record(
        dg.AssetCheckKey(dg.AssetKey(asset), name)
    )
    if record is None or record.event is None or record.event.dagster_event is None:
        return None
    return bool(record.event.dagster_event.event_specific_data.passed)


def test_a_plain_project_is_signed_by_content_with_contributors_from_a_column(
    project: Project,
) -> None:
    with dg.instance_for_test(temp_dir=str(project.root / "dagster")) as instance:
        run = _materialize(project.defs, instance)
        assert run.success
        # The user's IO manager still stored every value (Parquet for tables, pickle else).
        assert (project.root / "warehouse" / "cohort.parquet").is_file()
        assert (project.root / "warehouse" / "outcome_model.pkl").is_file()

        result = sync_locations(instance, [project.defs], project.store, project.key,
                                until_caught_up=True)
        # Caught up: the report, never signed, is not a backlog the sync could clear.
        left = source_for(instance, [project.defs]).backlog(
            Cursor.of_store(project.store, "dagster")
        )
        assert left == (0, None)
        records = {rec.asset: (idx, rec) for idx, rec in _records(project.store)}
        # What the records must not borrow: Dagster gives the three tables one data version.
        versions = {
            (instance.fetch_materializations(dg.AssetKey(name), limit=1).records[0]
             .asset_materialization.tags or {}).get("dagster/data_version")  # type: ignore[union-attr]
            for name in ROWS
        }
        assert len(versions) == 1

    assert set(records) == {"north", "south", "east", "holdout", "cohort", "outcome_model",
                            "outcome_model_valuation"}
    # The report: the translator leaves it out, so nothing is signed and the sync says so.
    assert [(p.asset, p.reason) for p in result.passed] == [
        ("weekly_report", "not attributed (its translator leaves it out)")
    ]
    # Three different tables, three different subject digests (the bug: one shared digest).
    clinics = {name: records[name][1] for name in ROWS}
    assert len({rec.sha256 for rec in clinics.values()}) == 3
    assert {rec.kind for rec in clinics.values()} == {"dataset"}
    assert records["outcome_model"][1].kind == "model"
    assert records["outcome_model_valuation"][1].kind == "valuation"
    # Contributors come from the cohort's `source` column: each clinic's rows, and a content
    # hash that is exactly the hash of that clinic's own table (same rows, same columns).
    cohort = records["cohort"][1]
    assert [(c.id, c.rows) for c in cohort.contributors] == list(ROWS.items())
    assert {c.id: c.sha256 for c in cohort.contributors} == {
        name: rec.sha256 for name, rec in clinics.items()
    }
    # The cohort's inputs name each clinic's own record.
    assert sorted((i.asset, i.log_index) for i in cohort.inputs) == sorted(
        (name, records[name][0]) for name in ROWS
    )


def test_digests_follow_the_content_not_the_run(project: Project) -> None:
    """The same rows twice give the same digest; one changed value gives another."""
    with dg.instance_for_test(temp_dir=str(project.root / "dagster")) as instance:
        for _ in range(2):
            assert _materialize(project.defs, instance, selection=["north"]).success
        sync_locations(instance, [project.defs], project.store, project.key,
                       until_caught_up=True)
        first, second = [r for _, r in _records(project.store) if r.asset == "north"]
        assert first.sha256 == second.sha256
        assert first.run is not None and second.run is not None
        assert first.run.run_id != second.run.run_id

        table = pd.read_parquet(project.root / "warehouse" / "north.parquet")
        changed = table.assign(age=table["age"].where(table.index != 0, 99.0))
        probe = LineageTranslator()
        spec = dg.AssetSpec("north")
        assert probe.content_digest(spec, table) == first.sha256
        assert probe.content_digest(spec, changed) != first.sha256
        assert probe.content_digest(spec, table.to_dict()) is None  # not a table: no digest


def test_checks_pass_after_lineage_sync_although_they_failed_in_the_run(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    with dg.instance_for_test(temp_dir=str(project.root / "dagster")) as instance:
        run = _materialize(project.defs, instance)
        in_run = {
            e.asset_key.to_user_string(): e.passed
            for e in run.get_asset_check_evaluations() if e.check_name == CHECK_NAME
        }
        # In the run, before any sync, the records do not exist yet.
        assert in_run and not any(in_run.values())
        assert "weekly_report" not in in_run  # not attributed: no check is added for it
        assert _latest_check(instance, "cohort") is False

        # A sync that leaves a backlog says so on the lag check (limit 0 here), as a tick does.
        monkeypatch.setenv("LINEAGE_LAG_MAX_EVENTS", "0")
        sync_locations(instance, [project.defs], project.store, project.key, limit=2)
        assert _latest_check(instance, "outcome_model", "sensor_caught_up") is False
        sync_locations(instance, [project.defs], project.store, project.key,
                       until_caught_up=True)
        for asset in ("north", "south", "east", "holdout", "cohort", "outcome_model",
                      "outcome_model_valuation"):
            assert _latest_check(instance, asset) is True, asset
        assert _latest_check(instance, "weekly_report") is None
        assert _latest_check(instance, "outcome_model", "sensor_caught_up") is True
        # One observation per signed asset, the platform's view (not a second, thinner one).
        observed = instance.fetch_observations(dg.AssetKey("cohort"), limit=10).records
        assert len(observed) == 1
        seen = observed[0].asset_observation
        assert seen is not None and "contributors" in seen.metadata
        assert seen.metadata["log index"].value == store_index(project.store, "cohort")


def test_an_output_with_no_digest_is_skipped_and_its_readers_do_not_name_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINEAGE_PROJECT", str(tmp_path))
    monkeypatch.setenv("LINEAGE_HOME", str(tmp_path / ".lineage"))

    @dg.asset
    def settings_blob() -> dict[str, int]:
        return {"threshold": 3}

    @dg.asset
    def scored(settings_blob: dict[str, int]) -> pd.DataFrame:
        return pd.DataFrame({"x": [1, 2, 3, 4]}).query(f"x >= {settings_blob['threshold']}")

    defs = with_lineage(dg.Definitions(assets=[settings_blob, scored]), project_dir=tmp_path)
    settings = Settings(tmp_path, tmp_path / ".lineage", "sqlite:///unused.db")
    ring = KeyRing(settings.keys_dir)
    ring.init(None)
    store = open_store(settings.store_url)
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        assert _materialize(defs, instance).success
        result = sync_locations(instance, [defs], store, ring.signer(None), until_caught_up=True)
        assert _latest_check(instance, "settings_blob") is False
        assert _latest_check(instance, "scored") is True
        # An event with no digest is never signed: no backlog, no lag growing forever.
        assert source_for(instance, [defs]).backlog(Cursor.of_store(store, "dagster"))[0] == 0
        assert _materialize(defs, instance, selection=["scored"]).success
        assert source_for(instance, [defs]).backlog(Cursor.of_store(store, "dagster"))[0] == 1
    assert [p.asset for p in result.passed] == ["settings_blob"]
    assert "no content digest" in result.passed[0].reason
    [(_, rec)] = _records(store)
    assert rec.asset == "scored" and rec.inputs == ()


def test_with_lineage_keeps_the_users_definitions(project: Project) -> None:
    defs = project.defs
    assert {s.name for s in defs.sensors or []} == {"my_sensor", "lineage_sensor",
                                                   "usage_spool_sensor"}
    assert {getattr(j, "name", None) for j in defs.jobs or []} == {"nightly_job",
                                                                   "settlement_asset_job"}
    assert {s.name for s in defs.schedules or []} == {"settlement_asset_schedule"}
    graph = defs.resolve_asset_graph()
    assert graph.get(SETTLEMENT_KEY).partitions_def is not None
    assert {c.name for c in graph.get(SETTLEMENT_KEY).check_keys} == {"fees_settled"}
    # The lag check sits on the model, the page people look at, and watches every signed asset.
    lagged = {k.to_user_string() for k in graph.get_all_asset_keys()
              if any(c.name == "sensor_caught_up" for c in graph.get(k).check_keys)}
    assert lagged == {"outcome_model"}
    # Location 2 asked for no settlement: no asset, job, schedule or spool sensor.
    scoring = project.scoring_defs
    assert SETTLEMENT_KEY not in scoring.resolve_asset_graph().get_all_asset_keys()
    assert not scoring.jobs and not scoring.schedules
    assert {s.name for s in scoring.sensors or []} == {"lineage_sensor"}
    resources = dict(defs.resources or {})
    assert resources["warehouse_name"] == "clinics-dw"
    assert isinstance(resources["io_manager__before_lineage"], project.plain.LocalIOManager)
    # A platform resource the user configured is theirs; applying it twice adds nothing twice.
    again = with_lineage(defs, translator=ClinicTranslator())
    assert sorted(str(k) for c in again.asset_checks or [] for k in c.check_keys) == sorted(
        str(k) for c in defs.asset_checks or [] for k in c.check_keys)
    assert sorted(dict(again.resources or {})) == sorted(resources)
    assert len(list(again.assets or [])) == len(list(defs.assets or []))
    assert {s.name for s in again.schedules or []} == {"settlement_asset_schedule"}
    assert valuation_asset_key("outcome_model", [defs]) == dg.AssetKey("outcome_model_valuation")
    checks = {k.name for c in defs.asset_checks or [] for k in c.check_keys
              if k.asset_key == dg.AssetKey("outcome_model_valuation")}
    assert checks == {CHECK_NAME, "log_verified", "shapley_efficiency", "valuation_accepted"}


def test_two_code_locations_are_signed_by_one_sync_and_the_sensor_agrees(
    project: Project, tmp_path: Path
) -> None:
    with dg.instance_for_test(temp_dir=str(project.root / "dagster")) as instance:
        assert _materialize(project.defs, instance).success
        assert _materialize(project.scoring_defs, instance).success
        result = sync_locations(instance, [project.defs, project.scoring_defs], project.store,
                                project.key, until_caught_up=True)
        records = {rec.asset: (idx, rec) for idx, rec in _records(project.store)}
        assert "risk_scores" in records and result.unattributed == 1
        scores = records["risk_scores"][1]
        assert [(i.asset, i.log_index) for i in scores.inputs] == [
            ("outcome_model", records["outcome_model"][0])
        ]
        # Valuation through settlement's own rules: registered, from a run, naming the model.
        chosen, refusals = valuation_decisions(project.store, load_policy(project.root),
                                               ["outcome_model"])
        assert refusals == ()
        assert chosen["outcome_model"][1].asset == "outcome_model_valuation"
        assert {c.id for c in chosen["outcome_model"][1].contributors} == set(ROWS)

        # The sensor, with the same translator, signs the same events into another log.
        other = open_store(f"duckdb://{tmp_path / 'sensor.duckdb'}")
        sensor = build_lineage_sensor(ClinicTranslator())
        resources = {**dict(project.defs.resources or {}),
                     "lineage_store": type(project.defs.resources["lineage_store"])(  # type: ignore[index]
                         url=f"duckdb://{tmp_path / 'sensor.duckdb'}")}
        context = dg.build_sensor_context(instance=instance, definitions=project.defs,
                                          resources=resources)
        tick = sensor(context)
        assert isinstance(tick, dg.SensorResult)
        signed = {rec.asset: rec.sha256 for _, rec in _records(other)}
        location_one = {a: r.sha256 for a, (_, r) in records.items() if a != "risk_scores"}
        assert signed == location_one
        assert "weekly_report" in (tick.skip_reason.skip_message if tick.skip_reason else "")
        source = source_for(instance, [project.defs, project.scoring_defs])
        assert dg.AssetKey("risk_scores") in source.asset_keys


def test_contributors_from_partitions_or_owners_as_each_asset_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINEAGE_PROJECT", str(tmp_path))
    monkeypatch.setenv("LINEAGE_HOME", str(tmp_path / ".lineage"))
    sites = dg.StaticPartitionsDefinition(["lyon", "porto"])

    @dg.asset(partitions_def=sites, metadata={"lineage/contributors_from": "partitions"})
    def readings(context) -> pd.DataFrame:  # type: ignore[no-untyped-def]
        n = {"lyon": 3, "porto": 5}[context.partition_key]
        return pd.DataFrame({"site": [context.partition_key] * n, "v": list(range(n))})

    @dg.asset(owners=["alice@example.com", "team:curators"],
              metadata={"lineage/contributors_from": "owners"})
    def glossary() -> pd.DataFrame:
        return pd.DataFrame({"term": ["a", "b"]})

    defs = with_lineage(dg.Definitions(assets=[readings, glossary]), project_dir=tmp_path)
    settings = Settings(tmp_path, tmp_path / ".lineage", "sqlite:///unused.db")
    ring = KeyRing(settings.keys_dir)
    ring.init(None)
    store = open_store(settings.store_url)
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        for site in ("lyon", "porto"):
            assert _materialize(defs, instance, selection=["readings"], partition_key=site).success
        assert _materialize(defs, instance, selection=["glossary"]).success
        sync_locations(instance, [defs], store, ring.signer(None), until_caught_up=True)
    records = _records(store)
    parts = {r.partition: r for _, r in records if r.asset == "readings"}
    assert {p: [(c.id, c.rows, c.sha256) for c in r.contributors] for p, r in parts.items()} == {
        "lyon": [("lyon", 3, parts["lyon"].sha256)],
        "porto": [("porto", 5, parts["porto"].sha256)],
    }
    assert parts["lyon"].sha256 != parts["porto"].sha256
    [glossary_record] = [r for _, r in records if r.asset == "glossary"]
    assert [(c.id, c.weight) for c in glossary_record.contributors] == [
        ("alice@example.com", 0.5), ("team:curators", 0.5)
    ]


def _sensor(defs: dg.Definitions) -> dg.SensorDefinition:
    [found] = [s for s in defs.sensors or [] if s.name == "lineage_sensor"]
    assert isinstance(found, dg.SensorDefinition)
    return found


def test_a_lagging_sensor_is_red_on_the_model_and_its_tick_turns_it_green(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17: the run's own `sensor_caught_up` sees five unsigned materializations (limit 2);
    the sensor's tick signs them, says so and what is left, returns one observation per signed
    asset (the platform's page view) and the check, green."""
    monkeypatch.setenv("LINEAGE_LAG_MAX_EVENTS", "2")
    plain = project.plain
    defs = with_lineage(
        dg.Definitions(assets=[plain.north, plain.south, plain.east, plain.cohort,
                               plain.outcome_model],
                       resources={"io_manager": plain.LocalIOManager(
                           base_dir=str(project.root / "warehouse"))}),
        translator=ClinicTranslator(),
    )
    with dg.instance_for_test(temp_dir=str(project.root / "dagster")) as instance:
        run = _materialize(defs, instance)
        assert run.success
        assert _latest_check(instance, "outcome_model", "sensor_caught_up") is False
        red = instance.get_latest_asset_check_evaluation_record(
            dg.AssetCheckKey(dg.AssetKey("outcome_model"), "sensor_caught_up"))
        assert red is not None and red.event is not None and red.event.dagster_event is not None
        assert red.event.dagster_event.event_specific_data.metadata[
            "not yet in the log"].value == 5

        context = dg.build_sensor_context(instance=instance, definitions=defs,
                                          resources=dict(defs.resources or {}))
        tick = _sensor(defs)(context)
        assert isinstance(tick, dg.SensorResult)
        assert tick.skip_reason is not None
        message = tick.skip_reason.skip_message or ""
        assert message.startswith("appended 5 records (0 already recorded) from 5 "
                                  "materializations in "), message
        assert "; backlog 0 (read in " in message, message
        observed = [e for e in tick.asset_events if isinstance(e, dg.AssetObservation)]
        assert sorted(o.asset_key.to_user_string() for o in observed) == [
            "cohort", "east", "north", "outcome_model", "south"]  # one each, not two
        by_asset = {o.asset_key.to_user_string(): o.metadata for o in observed}
        cohort = {r.data["contributor"]: r.data["rows"]
                  for r in by_asset["cohort"]["contributors"].value.records}  # type: ignore[union-attr]
        assert cohort == ROWS
        model = by_asset["outcome_model"]
        assert "earnings to date" in model and "inputs (signed records)" in model
        [lag] = [e for e in tick.asset_events if isinstance(e, dg.AssetCheckEvaluation)
                 and e.check_name == "sensor_caught_up"]
        assert lag.asset_key == dg.AssetKey("outcome_model") and lag.passed is True
        for event in tick.asset_events:  # what the daemon does with the tick's events
            instance.report_runless_asset_event(event)
        assert _latest_check(instance, "outcome_model", "sensor_caught_up") is True
        assert _latest_check(instance, "outcome_model") is True
        idle = _sensor(defs)(dg.build_sensor_context(
            instance=instance, definitions=defs, resources=dict(defs.resources or {}),
            cursor=tick.cursor))
        assert isinstance(idle, dg.SensorResult) and idle.asset_events == []  # nothing new


def test_the_default_io_manager_is_the_filesystem_resource_without_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @dg.asset
    def table() -> pd.DataFrame:
        """Three rows."""
        return pd.DataFrame({"x": [1, 2, 3]})

    monkeypatch.setenv("LINEAGE_PROJECT", str(tmp_path))
    monkeypatch.setenv("LINEAGE_HOME", str(tmp_path / ".lineage"))
    defs = with_lineage(dg.Definitions(assets=[table]), settlement=False)
    inner = dict(defs.resources or {})["io_manager__before_lineage"]
    assert isinstance(inner, dg.FilesystemIOManager)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", category=dg.SupersessionWarning)
        with dg.instance_for_test() as instance:
            assert _materialize(defs, instance).success
