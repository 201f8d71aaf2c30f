"""`lineage export --format openlineage`: every event validates against the OpenLineage schema
and says exactly what the signed log says (digests, log indices, inputs, DVC and MLflow refs)."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from lineage_platform.integrations import openlineage as ol
from lineage_platform.records import AttributionRecord, RunRef
from lineage_platform.signing import Envelope
from tests.export_world import (
    RUN_TRAIN,
    ExportWorld,
    make_export_world,
)

REPO = Path(__file__).resolve().parent.parent
# The CI clone has `shared/` beside the repository; the shipped copy keeps the suite self-contained.
SHARED_SCHEMA = REPO.parent / "shared" / "data" / "openlineage" / "OpenLineage.json"
SHIPPED_SCHEMA = Path(__file__).parent / "fixtures" / "openlineage" / "OpenLineage.json"

_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
)
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s]+")


def schema_path() -> Path:
    return SHARED_SCHEMA if SHARED_SCHEMA.is_file() else SHIPPED_SCHEMA


def format_checker() -> FormatChecker:
    """Every format the schema uses is checked: jsonschema checks `uuid` itself, but `date-time`
    and `uri` only with optional packages this project does not install, so they are added."""
    checker = FormatChecker()

    @checker.checks("date-time", raises=ValueError)
    def date_time(value: object) -> bool:
        if not isinstance(value, str):
            return True
        if not _RFC3339.fullmatch(value):
            return False
        datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
        return True

    @checker.checks("uri")
    def uri(value: object) -> bool:
        return not isinstance(value, str) or bool(_URI.fullmatch(value))

    return checker


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    path = schema_path()
    assert path.is_file(), f"OpenLineage schema missing: neither {SHARED_SCHEMA} nor {path}"
    schema = json.loads(path.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    checker = format_checker()
    used = set(re.findall(r'"format":\s*"([^"]+)"', path.read_text(encoding="utf-8")))
    assert used <= set(checker.checkers), f"unchecked formats: {used - set(checker.checkers)}"
    return Draft202012Validator(schema, format_checker=checker)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> ExportWorld:
    return make_export_world(tmp_path_factory.mktemp("ol") / "project")


@pytest.fixture(scope="module")
def exported(world: ExportWorld, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("ol-out") / "events.jsonl"
    n = ol.export_openlineage(world.store, out)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert n == len(lines)
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def log(world: ExportWorld) -> dict[int, dict[str, Any]]:
    table, _ = world.store.read_log()
    rows: dict[int, dict[str, Any]] = {}
    for row in table.to_pylist():
        env = Envelope.from_json(bytes(row["envelope"]))
        rows[int(row["idx"])] = {**row, "record": AttributionRecord.from_bytes(env.payload)}
    return rows


def test_shipped_schema_is_the_shared_one() -> None:
    assert SHIPPED_SCHEMA.is_file(), "tests/fixtures/openlineage/OpenLineage.json is missing"
    if not SHARED_SCHEMA.is_file():
        pytest.skip(f"{SHARED_SCHEMA} is not beside this clone; validating with the shipped copy")
    shipped = json.loads(SHIPPED_SCHEMA.read_text(encoding="utf-8"))
    assert shipped == json.loads(SHARED_SCHEMA.read_text(encoding="utf-8")), (
        "tests/fixtures/openlineage/OpenLineage.json differs from shared/: copy it again"
    )


def test_every_event_validates_against_the_openlineage_schema(
    exported: list[dict[str, Any]], validator: Draft202012Validator
) -> None:
    assert exported
    for event in exported:
        errors = sorted(validator.iter_errors(event), key=lambda e: list(e.absolute_path))
        assert not errors, f"{event['job']['name']}: " + "; ".join(
            f"{list(e.absolute_path)}: {e.message}" for e in errors
        )


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("run", "runId"), "not-a-uuid"),
        (("eventTime",), "yesterday"),
        (("producer",), "no scheme"),
        (("eventType",), "DONE"),
        (("run", "facets", ol.ATTRIBUTION_KEY, "_schemaURL"), None),
    ],
)
def test_the_validator_rejects_broken_events(
    exported: list[dict[str, Any]],
    validator: Draft202012Validator,
    path: tuple[str, ...],
    value: object,
) -> None:
    event = json.loads(json.dumps(exported[0]))
    target = event
    for key in path[:-1]:
        target = target[key]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    with pytest.raises(ValidationError):
        validator.validate(event)


def test_custom_facets_follow_the_facet_rules_and_their_own_schema(
    exported: list[dict[str, Any]],
) -> None:
    registry: Registry[Any] = Registry().with_resource(
        ol.FACETS_SCHEMA_ID, DRAFT202012.create_resource(ol.FACETS_SCHEMA)
    )
    Draft202012Validator.check_schema(ol.FACETS_SCHEMA)
    checker = format_checker()
    seen = set()
    for event in exported:
        facets = [
            *event["run"]["facets"].items(),
            *((k, f) for d in event["outputs"] for k, f in d["facets"].items()),
            *((k, f) for d in event["inputs"] for k, f in d["inputFacets"].items()),
        ]
        for key, facet in facets:
            assert facet["_producer"] == ol.PRODUCER
            url = facet["_schemaURL"]
            if not key.startswith("lineagePlatform_"):
                assert url.startswith("https://openlineage.io/spec/"), (key, url)
                continue
            # Custom facet: key `{prefix}_{name}`, schema `{prefix}{Name}{Entity}Facet`.
            base, _, pointer = url.partition("#")
            assert base == ol.FACETS_SCHEMA_ID and pointer.startswith("/$defs/LineagePlatform")
            assert pointer.endswith("Facet")
            Draft202012Validator(
                {"$ref": url}, registry=registry, format_checker=checker
            ).validate(facet)
            seen.add(key)
    assert seen == {ol.ATTRIBUTION_KEY, ol.ARTIFACT_KEY, ol.PARTS_KEY}


def test_one_complete_event_per_materialization_with_the_log_values(
    world: ExportWorld, exported: list[dict[str, Any]], log: dict[int, dict[str, Any]]
) -> None:
    materialized = [i for i, row in log.items() if row["record"].run is not None]
    # The settlement and the record without a Dagster reference are not materializations.
    assert world.index["notes"] not in materialized
    assert world.index["settlement"] not in materialized
    assert [e["run"]["facets"][ol.ATTRIBUTION_KEY]["logIndex"] for e in exported] == materialized
    for event in exported:
        facet = event["run"]["facets"][ol.ATTRIBUTION_KEY]
        row = log[facet["logIndex"]]
        rec: AttributionRecord = row["record"]
        assert rec.run is not None
        assert event["eventType"] == "COMPLETE"
        assert event["eventTime"] == rec.recorded_at == row["recorded_at"]
        assert event["job"] == {
            "namespace": "dagster",
            "name": rec.asset,
            "facets": event["job"]["facets"],
        }
        assert facet["recordDigest"] == f"sha256:{row['record_digest']}"
        assert facet["keyId"] == row["keyid"] == world.key.keyid
        assert facet["sha256"] == rec.sha256 == row["sha256"]
        assert facet["kind"] == rec.kind
        assert facet["dagsterRunId"] == rec.run.run_id
        assert facet["dagsterStorageId"] == rec.run.event_id
        assert facet.get("partition") == rec.partition
        [output] = event["outputs"]
        assert (output["namespace"], output["name"]) == ("dagster", rec.asset)
        assert output["facets"]["version"]["datasetVersion"] == rec.sha256
        if rec.partition is not None:
            [part] = output["outputFacets"]["subset"]["outputCondition"]["partitions"]
            assert part["identifier"] == rec.partition


def test_inputs_are_the_record_inputs(
    exported: list[dict[str, Any]], log: dict[int, dict[str, Any]]
) -> None:
    for event in exported:
        rec: AttributionRecord = log[event["run"]["facets"][ol.ATTRIBUTION_KEY]["logIndex"]][
            "record"
        ]
        names = [d["name"] for d in event["inputs"]]
        assert names == list(dict.fromkeys(i.asset for i in rec.inputs))  # one per asset
        got = []
        for dataset in event["inputs"]:
            assert dataset["namespace"] == "dagster"
            parts = dataset["inputFacets"][ol.PARTS_KEY]["parts"]
            for part in parts:
                got.append((dataset["name"], part["sha256"], part["logIndex"]))
                source = log[part["logIndex"]]
                assert part["recordDigest"] == f"sha256:{source['record_digest']}"
                assert source["record"].sha256 == part["sha256"]
                assert source["record"].asset == dataset["name"]
                assert part.get("partition") == source["record"].partition
            partitions = [p["partition"] for p in parts if "partition" in p]
            if partitions:
                subset = dataset["inputFacets"]["subset"]["inputCondition"]["partitions"]
                assert [p["identifier"] for p in subset] == partitions
            if len({p["sha256"] for p in parts}) == 1:
                assert dataset["facets"]["version"]["datasetVersion"] == parts[0]["sha256"]
        assert got == [(i.asset, i.sha256, i.log_index) for i in rec.inputs]


def test_dvc_and_mlflow_references_are_dataset_facets(
    world: ExportWorld, exported: list[dict[str, Any]]
) -> None:
    by_index = {e["run"]["facets"][ol.ATTRIBUTION_KEY]["logIndex"]: e for e in exported}
    datanet = by_index[world.index["datanet"]]["outputs"][0]["facets"][ol.ARTIFACT_KEY]
    rec = world.record("datanet")
    assert rec.dvc is not None
    assert (datanet["dvcPath"], datanet["dvcMd5"]) == (rec.dvc.path, rec.dvc.md5)
    assert "mlflowRunId" not in datanet
    model = by_index[world.index["clf"]]["outputs"][0]["facets"][ol.ARTIFACT_KEY]
    clf = world.record("clf")
    assert clf.mlflow is not None
    assert (model["mlflowRunId"], model["mlflowModelId"]) == (clf.mlflow.run_id,
                                                              clf.mlflow.model_id)
    assert "dvcMd5" not in model
    valuation = by_index[world.index["clf_valuation"]]["outputs"][0]["facets"]
    assert ol.ARTIFACT_KEY not in valuation  # neither DVC nor MLflow


def test_run_ids_are_deterministic_uuids_derived_from_the_dagster_run(
    world: ExportWorld, exported: list[dict[str, Any]], tmp_path: Path
) -> None:
    run_ids = [e["run"]["runId"] for e in exported]
    assert len(set(run_ids)) == len(run_ids)  # datanet and clf share one Dagster run
    for event in exported:
        facet = event["run"]["facets"][ol.ATTRIBUTION_KEY]
        node = event["job"]["name"] + (f"[{facet['partition']}]" if "partition" in facet else "")
        expected = uuid.uuid5(
            uuid.UUID(facet["dagsterRunId"]), f"{node}@{facet['dagsterStorageId']}"
        )
        assert event["run"]["runId"] == str(expected)
    shared = [e for e in exported if e["run"]["facets"][ol.ATTRIBUTION_KEY]["dagsterRunId"]
              == RUN_TRAIN]
    assert sorted(e["job"]["name"] for e in shared) == ["clf", "datanet"]
    # Same log, same bytes.
    again = tmp_path / "again.jsonl"
    ol.export_openlineage(world.store, again)
    assert [json.loads(line) for line in again.read_text().splitlines()] == exported
    # A run id that is not a UUID still gives a valid, stable one.
    odd = AttributionRecord("dataset", "x", "0" * 64, "2026-01-01T00:00:00.000000Z",
                            run=RunRef("dagster", "run-42", 1))
    assert uuid.UUID(ol.run_id_for(odd)) == uuid.UUID(ol.run_id_for(odd))


def test_events_are_the_clients_own_classes(world: ExportWorld) -> None:
    from openlineage.client.event_v2 import RunEvent
    from openlineage.client.serde import Serde

    events = ol.run_events(world.store)
    assert events and all(isinstance(e, RunEvent) for e in events)
    assert ol.to_json(events[0]) == Serde.to_json(events[0])


def test_cli_export_openlineage_and_default_bundle(world: ExportWorld, tmp_path: Path) -> None:
    out = tmp_path / "sub" / "events.jsonl"
    done = world.cli("export", "--format", "openlineage", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "OpenLineage run events" in done.stdout
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(ol.run_events(world.store))
    assert not list(out.parent.glob(".*.tmp"))  # written atomically, nothing left behind
    bundle = tmp_path / "bundle"
    done = world.cli("export", "--out", str(bundle))
    assert done.returncode == 0, done.stderr
    assert (bundle / "envelopes.jsonl").is_file()


def test_empty_log_exports_nothing(tmp_path: Path) -> None:
    from lineage_platform.stores import open_store

    store = open_store(tmp_path / "lineage.duckdb")
    store.migrate()
    assert ol.export_openlineage(store, tmp_path / "events.jsonl") == 0
    assert (tmp_path / "events.jsonl").read_text() == ""
