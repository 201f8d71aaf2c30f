"""The example code location bound to a test's own state, and a backlog of runless events.

    defs = platform_defs(settings)             # example assets, checks, sensor; tmp resources
    result = evaluate_sensor(instance, defs)   # one tick of lineage_sensor, as the daemon runs it
    write_backlog(instance, rounds=40)         # contributions/datanet/model events, with lineage

Each test passes its own `Settings` (state folder), so several tests can sign the same
materialized instance into separate logs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pyarrow as pa

from assets.definitions import defs as example_defs
from lineage_platform.config import Settings
from lineage_platform.dagster import (
    LineageSettingsResource,
    LineageSignerResource,
    LineageStoreResource,
    dataset_metadata,
    lineage_sensor,
    model_metadata,
)
from lineage_platform.dagster.sync import event_key
from lineage_platform.records import AttributionRecord
from lineage_platform.signing import Envelope
from lineage_platform.stores import Store

INPUT_VERSION = "dagster/input_data_version/"
INPUT_POINTER = "dagster/input_event_pointer/"


def platform_resources_for(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """What `platform_resources` builds, from explicit settings instead of LINEAGE_* variables."""
    return {
        "lineage": LineageSettingsResource.from_settings(settings),
        "lineage_store": LineageStoreResource.from_settings(settings),
        "lineage_signer": LineageSignerResource.from_settings(settings),
    }


def platform_defs(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=list(example_defs.assets or []),
        asset_checks=list(example_defs.asset_checks or []),
        sensors=list(example_defs.sensors or []),
        resources=platform_resources_for(settings),
    )


def evaluate_sensor(
    instance: dg.DagsterInstance, defs: dg.Definitions, cursor: str | None = None
) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        definitions=defs,
        resources=dict(defs.resources or {}),
    )
    result = lineage_sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def materialization_ids(instance: dg.DagsterInstance, keys: list[str]) -> list[str]:
    """The idempotency key of every materialization of `keys` in the instance."""
    out = []
    for key in keys:
        records = instance.fetch_materializations(dg.AssetKey(key), limit=10_000).records
        out.extend(event_key(r) for r in records)
    return sorted(out)


@dataclass(frozen=True, slots=True)
class Logged:
    index: int
    record: AttributionRecord


def read_records(store: Store) -> list[Logged]:
    table: pa.Table = store.entries()
    return [
        Logged(int(row["idx"]), AttributionRecord.from_bytes(_payload(bytes(row["envelope"]))))
        for row in table.to_pylist()
    ]


def _payload(envelope: bytes) -> bytes:
    return Envelope.from_json(envelope).payload


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _latest_id(instance: dg.DagsterInstance, key: str) -> int:
    return instance.fetch_materializations(dg.AssetKey(key), limit=1).records[0].storage_id


def write_backlog(instance: dg.DagsterInstance, rounds: int, partitions: int = 4) -> int:
    """Rounds of (one contribution partition, datanet, model) through the public runless API.

    The datanet and model events carry the input tags Dagster writes in a run (data version
    and storage-id pointer of the upstream), so their records have inputs to resolve.
    Returns how many materializations were written.
    """
    names = [f"p{i}" for i in range(partitions)]
    written = 0

    def report(mat: dg.AssetMaterialization) -> int:
        nonlocal written
        instance.report_runless_asset_event(mat)
        written += 1
        return _latest_id(instance, mat.asset_key.to_user_string())

    def part(name: str, version: int) -> int:
        content = _sha(f"{name} v{version}")
        meta = dataset_metadata(content, 10, [{"id": name, "rows": 10, "sha256": content}])
        tags = {"dagster/data_version": content}
        mat = dg.AssetMaterialization("contributions", partition=name, metadata=meta, tags=tags)
        return report(mat)

    for name in names:
        part(name, 0)
    for r in range(1, rounds + 1):
        pointer = part(names[r % partitions], r)
        data = _sha(f"datanet r{r}")
        datanet_id = report(
            dg.AssetMaterialization(
                "datanet",
                metadata=dataset_metadata(data, 10 * partitions, []),
                tags={
                    "dagster/data_version": data,
                    INPUT_VERSION + "contributions": _sha(f"combined r{r}"),
                    INPUT_POINTER + "contributions": str(pointer),
                },
            )
        )
        model = _sha(f"model r{r}")
        report(
            dg.AssetMaterialization(
                "digits_classifier",
                metadata=model_metadata(model, f"run{r:04d}", f"m-{r}"),
                tags={
                    "dagster/data_version": model,
                    INPUT_VERSION + "datanet": data,
                    INPUT_POINTER + "datanet": str(datanet_id),
                },
            )
        )
    return written


def fresh_state(settings: Settings, folder: Path) -> Settings:
    """The same project and MLflow store, another state folder (log, keys)."""
    return Settings(settings.project_dir, folder, settings.mlflow_uri, settings.mlflow_ui_url)
