"""OpenLineage: every recorded Dagster materialization as a COMPLETE `RunEvent`, as JSON lines.

    n = export_openlineage(open_store(settings.store_url), Path("events.jsonl"))
    events = run_events(store)   # the client's own RunEvent objects, one per materialization

The only module that imports `openlineage` (the `openlineage-python` client). Events are built with
the client's classes and serialized with its `Serde`, so Marquez or DataHub ingest them as they
ingest any other producer's. The mapping (see `docs/openlineage.md`):

- job: namespace `dagster`, name = asset key; run id = uuid5(namespace = the Dagster run id,
  name = `asset[partition]@storage id`): deterministic, and distinct when one Dagster run
  materializes several assets (each asset is its own OpenLineage job, so it needs its own run);
- eventTime = the record's `recorded_at`;
- output = the asset (dataset version = content sha256; partition as the standard `subset` facet);
- inputs = one dataset per input asset, with its parts (sha256, log index, partition);
- custom facets carry what the signed log knows: `lineagePlatform_attribution` (run: record
  digest, log index, key id, content sha256, Dagster run and storage id), `lineagePlatform_artifact`
  (output dataset: DVC path and md5, MLflow run and model id) and `lineagePlatform_parts` (input).
  Their JSON schema is `FACETS_SCHEMA`; `_schemaURL` points into it.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lineage_platform.errors import IntegrationError, LineageError
from lineage_platform.extras import missing

try:  # the [openlineage] extra
    import attr
    from openlineage.client.event_v2 import (
        InputDataset,
        Job,
        OutputDataset,
        Run,
        RunEvent,
        RunState,
    )
    from openlineage.client.facet_v2 import (
        DatasetFacet,
        InputDatasetFacet,
        JobFacet,
        OutputDatasetFacet,
        RunFacet,
        base_subset_dataset,
        dataset_version_dataset,
        job_type_job,
    )
    from openlineage.client.serde import Serde
except ImportError as exc:
    raise missing(exc.name or "openlineage", "openlineage") from exc

from lineage_platform.records import AttributionRecord, RunRef
from lineage_platform.signing import Envelope
from lineage_platform.stores import Store

NAMESPACE = "dagster"
#: Who produced the events (OpenLineage `producer`, a URI); versioned with the facet schema.
PRODUCER = "urn:lineage-platform:openlineage-export:1-0-0"
#: `$id` of `FACETS_SCHEMA`; each custom facet's `_schemaURL` is a JSON pointer into it.
FACETS_SCHEMA_ID = "urn:lineage-platform:openlineage-facets:1-0-0"
ATTRIBUTION_KEY = "lineagePlatform_attribution"
ARTIFACT_KEY = "lineagePlatform_artifact"
PARTS_KEY = "lineagePlatform_parts"


def _schema_url(name: str) -> str:
    return f"{FACETS_SCHEMA_ID}#/$defs/{name}"


# -- custom facets (OpenLineage naming: {prefix}{name}{entity}Facet, key {prefix}_{name}) --------
# Field names are the JSON keys, camelCase as in every OpenLineage facet.


@attr.define(kw_only=True)
class LineagePlatformAttributionRunFacet(RunFacet):
    """The signed log entry this run's event was exported from."""

    recordDigest: str
    logIndex: int
    keyId: str
    sha256: str
    kind: str
    dagsterRunId: str
    dagsterStorageId: int
    partition: str | None = None
    supersedes: int | None = None

    @staticmethod
    def _get_schema() -> str:
        return _schema_url("LineagePlatformAttributionRunFacet")


@attr.define(kw_only=True)
class LineagePlatformArtifactDatasetFacet(DatasetFacet):
    """Where the output is tracked besides Dagster: its DVC output and its MLflow run."""

    sha256: str
    dvcPath: str | None = None
    dvcMd5: str | None = None
    mlflowRunId: str | None = None
    mlflowModelId: str | None = None

    @staticmethod
    def _get_schema() -> str:
        return _schema_url("LineagePlatformArtifactDatasetFacet")


@attr.define(kw_only=True)
class InputPart:
    """One input reference of the record: an exact version (and partition) of the input asset."""

    sha256: str
    logIndex: int | None = None
    partition: str | None = None
    recordDigest: str | None = None


@attr.define(kw_only=True)
class LineagePlatformPartsInputDatasetFacet(InputDatasetFacet):
    """The exact versions of this input asset the run read, as named in the signed record."""

    parts: list[InputPart]

    @staticmethod
    def _get_schema() -> str:
        return _schema_url("LineagePlatformPartsInputDatasetFacet")


# The spec's BaseFacet, inlined so that the schema stands alone.
_BASE = {
    "type": "object",
    "properties": {
        "_producer": {"type": "string", "format": "uri"},
        "_schemaURL": {"type": "string", "format": "uri"},
    },
    "required": ["_producer", "_schemaURL"],
}
_HEX64 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_DIGEST = {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"}
_INDEX = {"type": "integer", "minimum": 0}
_TEXT = {"type": "string", "minLength": 1}

#: JSON Schema (2020-12) of the custom facets, for consumers that validate facets.
FACETS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": FACETS_SCHEMA_ID,
    "$defs": {
        "LineagePlatformAttributionRunFacet": {
            "allOf": [
                _BASE,
                {
                    "type": "object",
                    "properties": {
                        "recordDigest": _DIGEST,
                        "logIndex": _INDEX,
                        "keyId": _HEX64,
                        "sha256": _HEX64,
                        "kind": _TEXT,
                        "dagsterRunId": _TEXT,
                        "dagsterStorageId": _INDEX,
                        "partition": _TEXT,
                        "supersedes": _INDEX,
                    },
                    "required": [
                        "recordDigest", "logIndex", "keyId", "sha256", "kind", "dagsterRunId",
                        "dagsterStorageId",
                    ],
                },
            ]
        },
        "LineagePlatformArtifactDatasetFacet": {
            "allOf": [
                _BASE,
                {
                    "type": "object",
                    "properties": {
                        "sha256": _HEX64,
                        "dvcPath": _TEXT,
                        "dvcMd5": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                        "mlflowRunId": _TEXT,
                        "mlflowModelId": _TEXT,
                    },
                    "required": ["sha256"],
                },
            ]
        },
        "LineagePlatformPartsInputDatasetFacet": {
            "allOf": [
                _BASE,
                {
                    "type": "object",
                    "properties": {
                        "parts": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "sha256": _HEX64,
                                    "logIndex": _INDEX,
                                    "partition": _TEXT,
                                    "recordDigest": _DIGEST,
                                },
                                "required": ["sha256"],
                                "additionalProperties": False,
                            },
                        }
                    },
                    "required": ["parts"],
                },
            ]
        },
    },
}


# -- from the log to events -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoggedRecord:
    """A parsed log entry with what the signed bytes say about it (not the derived columns)."""

    index: int
    record: AttributionRecord
    digest: str  # lowercase hex sha256 of the signed payload
    keyid: str


def logged_records(store: Store) -> list[LoggedRecord]:
    table, _ = store.read_log()
    out = []
    for idx, raw in zip(
        table.column("idx").to_pylist(), table.column("envelope").to_pylist(), strict=True
    ):
        env = Envelope.from_json(bytes(raw))
        out.append(
            LoggedRecord(
                index=int(idx),
                record=AttributionRecord.from_bytes(env.payload),
                digest=hashlib.sha256(env.payload).hexdigest(),
                keyid=env.keyids()[0],
            )
        )
    return out


def run_id_for(record: AttributionRecord) -> str:
    """Deterministic: uuid5 in the Dagster run id's namespace (a non-UUID run id is hashed
    into one first), named by the materialized asset, partition and event storage id."""
    run = _dagster_run(record)
    if run is None:
        raise IntegrationError(f"{record.asset}: no Dagster materialization to export")
    try:
        space = uuid.UUID(run.run_id)
    except ValueError:
        space = uuid.uuid5(uuid.NAMESPACE_URL, f"dagster-run:{run.run_id}")
    node = record.asset if record.partition is None else f"{record.asset}[{record.partition}]"
    return str(uuid.uuid5(space, f"{node}@{run.event_id}"))


def _dagster_run(record: AttributionRecord) -> RunRef | None:
    """The record's run reference when Dagster's (the events name Dagster's run and storage id)."""
    run = record.run
    return run if run is not None and run.orchestrator == "dagster" else None


def _partitions(keys: Sequence[str]) -> base_subset_dataset.PartitionSubsetCondition:
    return base_subset_dataset.PartitionSubsetCondition(
        partitions=[
            base_subset_dataset.Partition(dimensions={"partition": k}, identifier=k) for k in keys
        ]
    )


def _inputs(
    entry: LoggedRecord, by_index: dict[int, LoggedRecord], namespace: str
) -> list[InputDataset]:
    grouped: dict[str, list[InputPart]] = {}
    for ref in entry.record.inputs:
        source = by_index.get(ref.log_index) if ref.log_index is not None else None
        grouped.setdefault(ref.asset, []).append(
            InputPart(
                sha256=ref.sha256,
                logIndex=ref.log_index,
                partition=None if source is None else source.record.partition,
                recordDigest=None if source is None else f"sha256:{source.digest}",
            )
        )
    datasets = []
    for asset, parts in grouped.items():
        facets: dict[str, DatasetFacet] = {}
        if len({p.sha256 for p in parts}) == 1:
            facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
                datasetVersion=parts[0].sha256, producer=PRODUCER
            )
        input_facets: dict[str, InputDatasetFacet] = {
            PARTS_KEY: LineagePlatformPartsInputDatasetFacet(parts=parts, producer=PRODUCER)
        }
        keys = [p.partition for p in parts if p.partition is not None]
        if keys:
            input_facets["subset"] = base_subset_dataset.InputSubsetInputDatasetFacet(
                inputCondition=_partitions(keys), producer=PRODUCER
            )
        datasets.append(
            InputDataset(
                namespace=namespace, name=asset, facets=facets, inputFacets=input_facets
            )
        )
    return datasets


def _output(entry: LoggedRecord, namespace: str) -> OutputDataset:
    rec = entry.record
    facets: dict[str, DatasetFacet] = {
        "version": dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=rec.sha256, producer=PRODUCER
        )
    }
    if rec.dvc is not None or rec.mlflow is not None:
        facets[ARTIFACT_KEY] = LineagePlatformArtifactDatasetFacet(
            sha256=rec.sha256,
            dvcPath=None if rec.dvc is None else rec.dvc.path,
            dvcMd5=None if rec.dvc is None else rec.dvc.md5,
            mlflowRunId=None if rec.mlflow is None else rec.mlflow.run_id,
            mlflowModelId=None if rec.mlflow is None else rec.mlflow.model_id,
            producer=PRODUCER,
        )
    output_facets: dict[str, OutputDatasetFacet] = {}
    if rec.partition is not None:
        output_facets["subset"] = base_subset_dataset.OutputSubsetOutputDatasetFacet(
            outputCondition=_partitions([rec.partition]), producer=PRODUCER
        )
    return OutputDataset(
        namespace=namespace, name=rec.asset, facets=facets, outputFacets=output_facets
    )


def run_event(
    entry: LoggedRecord, by_index: dict[int, LoggedRecord], namespace: str = NAMESPACE
) -> RunEvent:
    """The COMPLETE event of one recorded materialization (its `run` is Dagster's)."""
    rec = entry.record
    run = _dagster_run(rec)
    if run is None:
        raise IntegrationError(f"record {entry.index}: not a Dagster materialization")
    attribution = LineagePlatformAttributionRunFacet(
        recordDigest=f"sha256:{entry.digest}",
        logIndex=entry.index,
        keyId=entry.keyid,
        sha256=rec.sha256,
        kind=rec.kind,
        dagsterRunId=run.run_id,
        dagsterStorageId=run.event_id,
        partition=rec.partition,
        supersedes=rec.supersedes,
        producer=PRODUCER,
    )
    job_facets: dict[str, JobFacet] = {
        "jobType": job_type_job.JobTypeJobFacet(
            processingType="BATCH", integration="DAGSTER", jobType="ASSET", producer=PRODUCER
        )
    }
    run_facets: dict[str, RunFacet] = {ATTRIBUTION_KEY: attribution}
    return RunEvent(
        eventType=RunState.COMPLETE,
        eventTime=rec.recorded_at,
        run=Run(runId=run_id_for(rec), facets=run_facets),
        job=Job(namespace=namespace, name=rec.asset, facets=job_facets),
        inputs=_inputs(entry, by_index, namespace),
        outputs=[_output(entry, namespace)],
        producer=PRODUCER,
    )


def iter_run_events(
    entries: Sequence[LoggedRecord], namespace: str = NAMESPACE
) -> Iterator[RunEvent]:
    by_index = {e.index: e for e in entries}
    for entry in entries:
        if _dagster_run(entry.record) is not None:
            yield run_event(entry, by_index, namespace)


def run_events(store: Store, namespace: str = NAMESPACE) -> list[RunEvent]:
    """One COMPLETE RunEvent per record that names a Dagster materialization, in log order."""
    return list(iter_run_events(logged_records(store), namespace))


def to_json(event: RunEvent) -> str:
    """The client's own serializer (nulls dropped, keys sorted): one JSON line, no newline."""
    return Serde.to_json(event)


def export_openlineage(store: Store, out: Path, namespace: str = NAMESPACE) -> int:
    """Write one event per line to `out` (replaced atomically); returns the number of events."""
    try:
        lines = [to_json(e) + "\n" for e in run_events(store, namespace)]
    except LineageError:
        raise
    except (ValueError, TypeError) as exc:  # attrs validators of the client's classes
        raise IntegrationError(f"OpenLineage event rejected by the client: {exc}") from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text("".join(lines), encoding="utf-8")
        tmp.replace(out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise IntegrationError(f"{out}: cannot write ({exc.strerror or exc})") from exc
    return len(lines)
