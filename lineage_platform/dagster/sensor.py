"""The lineage sensor and the `attribution_recorded` checks a person sees on every asset.

    defs = dg.Definitions(assets=[...], sensors=[lineage_sensor],
                          asset_checks=attribution_checks([...]), resources=platform_resources())

(`with_lineage(defs)` adds all of them.) The check run in the same run as its asset usually
finds no record yet (a warning); the sensor's tick, or `lineage sync`, then reports the passing
evaluation once it signed the record (`dagster.sync.attribution_events`), so the latest status
tells the truth whichever ran first.

Each tick says how many records it signed and the backlog left, and reports `sensor_caught_up`
(`views.lag_result`) on every asset carrying that check: red while the sensor lags, green once
a tick caught up. A stopped sensor reports nothing; the check then runs with its asset's runs.
"""

__all__ = [
    "BACKLOG_CAP",
    "CHECK_NAME",
    "attribution_checks",
    "build_lineage_sensor",
    "evaluate_recorded",
    "lag_checked_keys",
    "lag_limits",
    "latest_record",
    "lineage_sensor",
]

import os
import time
from collections.abc import Sequence
from typing import Any

import dagster as dg

from lineage_platform.dagster.resources import LineageSignerResource, LineageStoreResource
from lineage_platform.dagster.sync import (
    CHECK_NAME,
    DagsterSource,
    attribution_events,
    checked_keys,
    event_key,
    graph_described,
    latest_record,
)
from lineage_platform.dagster.translator import LineageTranslator
from lineage_platform.dagster.views import LAG_CHECK, lag_result
from lineage_platform.errors import ConfigError, LineageError
from lineage_platform.sync import Cursor, sync
from lineage_platform.verify import check_envelope

TICK_LIMIT = 1000
#: The backlog a tick reads after signing, at most: enough to say "over the limit" and to show
#: a count, without re-reading a large backlog every tick (the next ticks sign it anyway).
BACKLOG_CAP = 1000
INTERVAL_ENV = "LINEAGE_SENSOR_INTERVAL_S"
LAG_EVENTS_ENV = "LINEAGE_LAG_MAX_EVENTS"
LAG_MINUTES_ENV = "LINEAGE_LAG_MAX_MINUTES"


def lag_limits() -> tuple[int, float]:
    """When `sensor_caught_up` turns red: (more than this many unsigned materializations, or
    the oldest waiting more than this many minutes); default (100, 15), from
    LINEAGE_LAG_MAX_EVENTS and LINEAGE_LAG_MAX_MINUTES when set.

        max_events, max_minutes = lag_limits()
    """
    raw_events = os.environ.get(LAG_EVENTS_ENV, "100")
    raw_minutes = os.environ.get(LAG_MINUTES_ENV, "15")
    try:
        events, minutes = int(raw_events), float(raw_minutes)
    except ValueError:
        events, minutes = -1, -1.0
    if events < 0 or not minutes >= 0:
        raise ConfigError(f"{LAG_EVENTS_ENV} must be a whole number >= 0 and {LAG_MINUTES_ENV} "
                          f"a number of minutes >= 0, got {raw_events!r} and {raw_minutes!r}")
    return events, minutes


def lag_checked_keys(graph: Any) -> list[dg.AssetKey]:
    """The assets of a code location that carry a `sensor_caught_up` check.

        keys = lag_checked_keys(defs.resolve_asset_graph())
    """
    return sorted(
        (k for k in graph.get_all_asset_keys()
         if any(c.name == LAG_CHECK for c in graph.get(k).check_keys)),
        key=lambda k: k.to_user_string(),
    )


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


def build_lineage_sensor(
    translator: LineageTranslator | None = None,
    max_events: int | None = None,
    max_minutes: float | None = None,
) -> dg.SensorDefinition:
    """The lineage sensor, describing each asset with `translator` (`with_lineage` builds it
    with the project's; `lineage_sensor` is the one with the default translator), reporting
    `sensor_caught_up` with these limits (default: `lag_limits()`, as the checks are built).

        sensor = build_lineage_sensor(MyTranslator())
    """
    described_by = translator or LineageTranslator()
    default_events, default_minutes = lag_limits()
    limit_events = default_events if max_events is None else max_events
    limit_minutes = default_minutes if max_minutes is None else max_minutes

    @dg.sensor(
        name="lineage_sensor",
        minimum_interval_seconds=_interval_s(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Signs every asset materialization into the attribution log.",
    )
    def _lineage_sensor(
        context: dg.SensorEvaluationContext,
        lineage_store: LineageStoreResource,
        lineage_signer: LineageSignerResource,
    ) -> dg.SensorResult:
        if context.repository_def is None:
            raise LineageError("lineage_sensor needs its code location's definitions")
        graph = context.repository_def.asset_graph
        # Every materializable asset in the code location at this tick (new assets included).
        described = graph_described(graph, described_by)
        keys = sorted(described, key=lambda k: k.to_user_string())
        started = time.monotonic()
        store = lineage_store.store()
        # A reset sensor (no cursor) resumes from what the log holds instead of re-reading it.
        cursor = Cursor.parse(context.cursor) if context.cursor else None
        source = DagsterSource(context.instance, keys, described)
        result = sync(source, store, lineage_signer.signer(), cursor, limit=TICK_LIMIT)
        signed_s = time.monotonic() - started
        # What is left, read from where this tick stopped (capped: see BACKLOG_CAP).
        pending, oldest = source.backlog(result.cursor, cap=BACKLOG_CAP)
        capped = pending >= BACKLOG_CAP
        backlog = f"{pending}+" if capped else str(pending)
        message = (
            f"appended {result.appended} records ({result.skipped} already recorded) from "
            f"{result.read} materializations in {signed_s:.2f}s; backlog {backlog} (read in "
            f"{time.monotonic() - started - signed_s:.2f}s)"
            + (
                f"; {result.unattributed} not attributed (first: {result.passed[0].asset} "
                f"event {result.passed[0].event_id}, {result.passed[0].reason})"
                if result.passed else ""
            )
            + ("; more waiting, next tick continues" if result.has_more else "")
            + (f"; waited {store.lock_wait_s:.2f}s for the store lock" if store.lock_waits
               else "")
        )
        context.log.info(message)
        events: list[dg.AssetCheckEvaluation | dg.AssetObservation] = attribution_events(
            context.instance, result, store, checked_keys(graph), "lineage_sensor"
        )
        if result.read or pending:
            # An idle, caught-up tick changes nothing: the last green stands (one evaluation
            # per tick would be thousands a day on each model's check history).
            events += [
                lag_result(key, pending, oldest, limit_events, limit_minutes, capped=capped)
                for key in lag_checked_keys(graph)
            ]
        return dg.SensorResult(
            skip_reason=message,
            cursor=result.cursor.serialize(),
            asset_events=events,
        )

    return _lineage_sensor


lineage_sensor = build_lineage_sensor()


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
