"""The lineage sensor and the `attribution_recorded` checks a person sees on every asset.

    defs = dg.Definitions(assets=[...], sensors=[lineage_sensor],
                          asset_checks=attribution_checks([...]), resources=platform_resources())
"""

import os
import time
from collections.abc import Iterable, Sequence

import dagster as dg

from lineage_platform.dagster.resources import LineageSignerResource, LineageStoreResource
from lineage_platform.dagster.sync import DagsterSource, event_key
from lineage_platform.errors import ConfigError, LineageError
from lineage_platform.stores import Store
from lineage_platform.sync import Cursor, SyncResult, sync
from lineage_platform.verify import check_envelope

CHECK_NAME = "attribution_recorded"
TICK_LIMIT = 1000
INTERVAL_ENV = "LINEAGE_SENSOR_INTERVAL_S"


def _interval_s() -> int:
    """Seconds between ticks (15); tests and demos lower it without editing the code location."""
    raw = os.environ.get(INTERVAL_ENV, "15")
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{INTERVAL_ENV} must be a whole number of seconds >= 1, got {raw!r}")
    return value


def latest_record(instance: dg.DagsterInstance, key: dg.AssetKey) -> dg.EventLogRecord | None:
    """The newest materialization with its storage id (the idempotency key needs both ids)."""
    records = instance.fetch_materializations(key, limit=1).records
    return records[0] if records else None


def _asset_keys(context: dg.SensorEvaluationContext) -> list[dg.AssetKey]:
    """Every materializable asset in the code location at this tick (new assets included)."""
    if context.repository_def is None:
        raise LineageError("lineage_sensor needs its code location's definitions")
    graph = context.repository_def.asset_graph
    return sorted(
        (k for k in graph.get_all_asset_keys() if graph.get(k).is_materializable),
        key=lambda k: k.to_user_string(),
    )


def _check_events(
    context: dg.SensorEvaluationContext,
    result: SyncResult,
    checked: Iterable[dg.AssetKey],
    store: Store,
) -> list[dg.AssetCheckEvaluation | dg.AssetObservation]:
    """Per asset whose newest materialization this tick recorded: a passing check, and an
    observation on the asset's event timeline naming the record that attests it."""
    recorded: dict[dg.AssetKey, tuple[dg.EventLogRecord, int]] = {}
    for key in checked:
        latest = latest_record(context.instance, key)
        idx = result.indices.get(event_key(latest)) if latest else None
        if latest is not None and idx is not None:
            recorded[key] = (latest, idx)
    if not recorded:
        return []
    found = store.entries_at([idx for _, idx in recorded.values()])
    derived = {
        int(i): (str(digest), str(keyid))
        for i, digest, keyid in zip(
            found.column("idx").to_pylist(),
            found.column("record_digest").to_pylist(),
            found.column("keyid").to_pylist(),
            strict=True,
        )
    }
    observations: list[dg.AssetCheckEvaluation | dg.AssetObservation] = [
        dg.AssetObservation(
            asset_key=key,
            partition=latest.asset_materialization.partition if latest.asset_materialization
            else None,
            metadata={
                "attribution": "signed into the log (attribution_recorded re-verifies it)",
                "log_index": idx,
                "record_digest": derived[idx][0],
                "key_id": derived[idx][1],
                "materialization storage_id": latest.storage_id,
            },
        )
        for key, (latest, idx) in recorded.items()
        if idx in derived
    ]
    return observations + [
        dg.AssetCheckEvaluation(
            asset_key=key,
            check_name=CHECK_NAME,
            passed=True,
            metadata={
                "log_index": idx,
                "record_digest": derived[idx][0],
                "key_id": derived[idx][1],
                "storage_id": latest.storage_id,
                "recorded_by": "lineage_sensor",
            },
        )
        for key, (latest, idx) in recorded.items()
        if idx in derived
    ]


@dg.sensor(
    name="lineage_sensor",
    minimum_interval_seconds=_interval_s(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Signs every asset materialization into the attribution log.",
)
def lineage_sensor(
    context: dg.SensorEvaluationContext,
    lineage_store: LineageStoreResource,
    lineage_signer: LineageSignerResource,
) -> dg.SensorResult:
    keys = _asset_keys(context)
    started = time.monotonic()
    store = lineage_store.store()
    # A reset sensor (no cursor) resumes from what the log holds instead of re-reading it all.
    cursor = Cursor.parse(context.cursor) if context.cursor else None
    source = DagsterSource(context.instance, keys)
    result = sync(source, store, lineage_signer.signer(), cursor, limit=TICK_LIMIT)
    touched = [k for k in keys if k.to_user_string() in result.seen]
    message = (
        f"appended {result.appended} records ({result.skipped} already recorded) from "
        f"{result.read} materializations in {time.monotonic() - started:.2f}s"
        + (
            f"; {result.unattributed} not attributed (first: {result.passed[0].asset} event "
            f"{result.passed[0].event_id}, {result.passed[0].reason})"
            if result.passed else ""
        )
        + ("; more waiting, next tick continues" if result.has_more else "")
        + (f"; waited {store.lock_wait_s:.2f}s for the store lock" if store.lock_waits else "")
    )
    context.log.info(message)
    return dg.SensorResult(
        skip_reason=message,
        cursor=result.cursor.serialize(),
        asset_events=_check_events(context, result, touched, store),
    )


def attribution_checks(asset_keys: Sequence[dg.AssetKey | str]) -> list[dg.AssetChecksDefinition]:
    """`attribution_recorded` per asset: its newest materialization is in the log and verifies."""
    return [_recorded_check(dg.AssetKey.from_coercible(raw)) for raw in asset_keys]


def _recorded_check(key: dg.AssetKey) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=key,
        name=CHECK_NAME,
        description="The newest materialization is signed into the attribution log.",
    )
    def _check(
        context: dg.AssetCheckExecutionContext,
        lineage_store: LineageStoreResource,
        lineage_signer: LineageSignerResource,
    ) -> dg.AssetCheckResult:
        return evaluate_recorded(context.instance, key, lineage_store, lineage_signer)

    return _check


def evaluate_recorded(
    instance: dg.DagsterInstance,
    key: dg.AssetKey,
    lineage_store: LineageStoreResource,
    lineage_signer: LineageSignerResource,
) -> dg.AssetCheckResult:
    latest = latest_record(instance, key)
    if latest is None:
        return dg.AssetCheckResult(passed=False, metadata={"reason": "never materialized"})
    idem = event_key(latest)
    store = lineage_store.store()
    try:
        found = store.indices_for([idem])
        if idem not in found:
            # Friction, not fraud: the sensor has not caught up yet. Shown, at warning level.
            return dg.AssetCheckResult(
                passed=False,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "reason": "not yet recorded: the lineage sensor has a backlog",
                    "storage_id": latest.storage_id,
                },
            )
        idx = found[idem]
        row = store.entries(idx, idx + 1).to_pylist()[0]
        checked = check_envelope(idx, bytes(row["envelope"]), lineage_signer.trust())
    except LineageError as exc:
        return dg.AssetCheckResult(passed=False, metadata={"reason": str(exc)})
    return dg.AssetCheckResult(
        passed=True,
        metadata={
            "log_index": idx,
            "record_digest": checked.facts.record_digest,
            "key_id": checked.keyid,
            "sha256": checked.facts.sha256,
        },
    )
