"""Settlement in Dagster: the daily-partitioned `settlement` asset (one partition per closed
epoch), its job and schedule (what `with_lineage` adds), and the legacy `settlement_job` that
settles every closed epoch at once.

    defs = dg.Definitions(assets=[settlement], jobs=[settlement_asset_job],
                          schedules=[settlement_asset_schedule], resources=platform_resources())
    record_settled_epochs(settings, store, statements)  # after `lineage settle`, the demo

All of them run the same `settle_held()` as `lineage settle`, and every path reports a
settled epoch as the same materialization of its `settlement` partition
(`settlement_materialization`), so the UI and the CLI never disagree about what an epoch paid.
"""

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg

from lineage_platform.config import Settings
from lineage_platform.dagster.resources import (
    LineageSettingsResource,
    LineageSignerResource,
    LineageStoreResource,
)
from lineage_platform.dagster.translator import ATTRIBUTED
from lineage_platform.errors import IntegrationError, LineageError
from lineage_platform.records import AttributionRecord
from lineage_platform.settlement import Statement, epoch_date, settle_held
from lineage_platform.signing import Envelope
from lineage_platform.stores import Store

__all__ = [
    "SETTLEMENT_KEY",
    "SETTLEMENT_START",
    "SettleConfig",
    "paid_models",
    "record_settled_epochs",
    "record_settlement_materialization",
    "settle_partition",
    "settlement",
    "settlement_asset_job",
    "settlement_asset_schedule",
    "settlement_job",
    "settlement_materialization",
    "settlement_metadata",
    "settlement_partitions",
    "settlement_schedule",
    "usage_spool_sensor",
]

SETTLEMENT_KEY = dg.AssetKey("settlement")
#: The first epoch the asset has a partition for; earlier epochs stay settleable by the CLI.
SETTLEMENT_START = "2025-01-01"
# Epochs are UTC days that close at 00:00 UTC; the default end offset (0) makes the last
# partition the last closed day, so the open epoch is never a partition.
settlement_partitions = dg.DailyPartitionsDefinition(start_date=SETTLEMENT_START, timezone="UTC")


class SettleConfig(dg.Config):  # type: ignore[misc]
    """Leave `epoch` empty to settle every closed epoch with unsettled fees."""

    epoch: str = ""


# An epoch can pay tens of thousands of contributors; the UI shows the largest payouts and
# `lineage payouts --epoch` lists them all.
TABLE_ROWS = 100


def _payout_table(payouts: tuple[tuple[str, int], ...], total: int) -> dg.MetadataValue:
    """The largest payouts first, at most TABLE_ROWS of them."""
    largest = sorted(payouts, key=lambda p: (-p[1], p[0]))[:TABLE_ROWS]
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord(
                {"account": a, "amount": n, "share": round(n / total, 4) if total else 0.0}
            )
            for a, n in largest
        ],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn("account", "string"),
                dg.TableColumn("amount", "int", description="integer minor units"),
                dg.TableColumn("share", "float"),
            ]
        ),
    )


def _record_at(store: Store, index: int) -> AttributionRecord | None:
    rows = store.entries_at([index]).column("envelope").to_pylist()
    if not rows:
        return None
    return AttributionRecord.from_bytes(Envelope.from_json(bytes(rows[0])).payload)


def _paid_on(store: Store, record: AttributionRecord, models: Sequence[str]) -> dict[str, str]:
    """Per model, what its data part was paid on, as the signed settlement record says: the
    valuation record it names among its inputs, else the lineage (rows or recorded weights)."""
    indices = [i.log_index for i in record.inputs if i.log_index is not None]
    found = store.entries_at(indices)
    valued: dict[str, str] = {}
    for idx, kind, env in zip(
        found.column("idx").to_pylist(),
        found.column("kind").to_pylist(),
        found.column("envelope").to_pylist(),
        strict=True,
    ):
        if kind != "valuation":
            continue
        val = AttributionRecord.from_bytes(Envelope.from_json(bytes(env)).payload)
        method = (val.details_obj() or {}).get("method", "?")
        for inp in val.inputs:
            valued.setdefault(inp.asset, f"valuation record #{idx} ({method})")
    return {m: valued.get(m, "lineage: rows and recorded weights") for m in models}


def _percent(bps: object) -> str:
    return f"{int(bps) / 100:g} %" if isinstance(bps, int) else "?"


def settlement_metadata(store: Store, statement: Statement) -> dict[str, Any]:
    """What a settled epoch's partition page shows: fees per model and what each was paid on,
    the policy, the payout table, the statement root and its record in the log.

        meta = settlement_metadata(store, statement)
    """
    record = _record_at(store, statement.log_index)
    details = (record.details_obj() if record is not None else None) or {}
    fees = details.get("fees_by_model") or {}
    fees = {str(m): int(n) for m, n in fees.items()} if isinstance(fees, dict) else {}
    paid_on = _paid_on(store, record, sorted(fees)) if record is not None else {}
    signed_policy = details.get("policy")
    policy: dict[str, Any] = signed_policy if isinstance(signed_policy, dict) else {}
    state = (
        f"already settled (record #{statement.log_index}): nothing new paid"
        if statement.already_settled
        else f"settled now: paid {statement.paid_total} to {len(statement.payouts)} accounts"
    )
    meta: dict[str, Any] = {
        "epoch": statement.epoch,
        "settlement": state,
        "already_settled": statement.already_settled,
        "fees_total": statement.fees_total,
        "paid_total": statement.paid_total,
        "payout_accounts": len(statement.payouts),
        "payouts": _payout_table(statement.payouts, statement.paid_total),
        "fees by model": dg.MetadataValue.table(
            records=[dg.TableRecord({"model": m, "fees": n, "paid on": paid_on.get(m, "?")})
                     for m, n in sorted(fees.items())],
            schema=dg.TableSchema(columns=[
                dg.TableColumn("model", "string"),
                dg.TableColumn("fees", "int", description="integer minor units"),
                dg.TableColumn("paid on", "string"),
            ]),
        ),
        "policy": (f"protocol {_percent(policy.get('protocol_bps'))}, model owner "
                   f"{_percent(policy.get('owner_bps'))}, data contributors "
                   f"{_percent(policy.get('data_bps'))}"),
        "policy (signed)": dg.MetadataValue.json(policy),
        "statement_root": statement.root,
        "log_index": statement.log_index,
        "usage events": int(details.get("events") or 0),
    }
    refusals = details.get("valuation_refusals")
    if refusals:
        meta["valuation refusals"] = dg.MetadataValue.json({"refused": refusals})
    if record is not None:
        meta["record_sha256"] = record.sha256
    return meta


def settlement_materialization(store: Store, statement: Statement) -> dg.AssetMaterialization:
    """The materialization of `statement`'s `settlement` partition: the one event every path
    (the asset, the legacy job, `lineage settle`, the demo) reports for a settled epoch.

        context.log_event(settlement_materialization(store, statement))
    """
    return dg.AssetMaterialization(
        asset_key=SETTLEMENT_KEY,
        partition=statement.epoch,
        metadata=settlement_metadata(store, statement),
        tags={"dagster/data_version": statement.root},
    )


def record_settlement_materialization(
    instance: dg.DagsterInstance, statement: Statement, store: Store
) -> None:
    """Report `statement` as a runless materialization of its `settlement` partition, with the
    metadata the asset's own run writes: what `lineage settle` calls after settling, so the UI
    shows an epoch the CLI settled exactly as one the schedule settled.

        for st in settle_held(...): record_settlement_materialization(instance, st, store)
    """
    instance.report_runless_asset_event(settlement_materialization(store, statement))


def paid_models(store: Store, statements: Sequence[Statement]) -> list[str]:
    """The models whose fees these statements settled, as their signed records say.

        models = paid_models(store, statements)
    """
    found: set[str] = set()
    for statement in statements:
        record = _record_at(store, statement.log_index)
        fees = (record.details_obj() or {}).get("fees_by_model") if record else None
        if isinstance(fees, dict):
            found.update(str(m) for m in fees)
    return sorted(found)


def record_settled_epochs(
    settings: Settings, store: Store, statements: Sequence[Statement]
) -> None:
    """`lineage settle` and the demo, after settling: each statement recorded on its
    `settlement` partition in the project's Dagster instance (`open_instance`: $DAGSTER_HOME,
    else the state folder's), and each paid model's page view reported again (its earnings
    to date changed). A project whose definitions have no `settlement` asset still
    gets the event; Dagster lists the asset with its partitions all the same.

    The money is settled before this runs, so a failure here must not read as a failed
    settlement: it raises `IntegrationError` with one line for the caller to warn with.

        record_settled_epochs(settings, store, statements)
    """
    if not statements:
        return
    from lineage_platform.dagster.views import attribution_observations
    from lineage_platform.dagster.workspace import open_instance

    try:
        with open_instance(settings) as instance:
            for statement in statements:
                record_settlement_materialization(instance, statement, store)
            # What each paid model's contributors have earned to date just changed: its page
            # shows the platform's view again, with the new earnings.
            for obs in attribution_observations(store, paid_models(store, statements)):
                instance.report_runless_asset_event(obs)
    except Exception as exc:  # Dagster's instance errors share no root: translated here
        raise IntegrationError(
            f"settled, but not shown in Dagster ({settings.describe_instance()}): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc


def settle_partition(
    store: Store,
    settle: Callable[[str | None], list[Statement]],
    epoch: str,
) -> tuple[Statement | None, list[Statement]]:
    """Settle up to the closed epoch `epoch`: (its statement, or None when it had no usage;
    earlier epochs settled first because their fees were still unsettled).

    Settled epochs stay a prefix of time (a late event moves forward only past them), so an
    earlier unsettled epoch is settled first, oldest first, never skipped. `settle(upto)` is
    `settle_held` bound to the store, key and clock.
    """
    day = epoch_date(epoch)
    pending = [e.epoch for e in store.open_epochs() if epoch_date(e.epoch) <= day]
    done = store.exists() and store.settled_epoch(epoch) is not None
    if epoch in pending or done:
        upto: str | None = epoch
    else:
        upto = pending[-1] if pending else None
    statements = settle(upto) if upto is not None else []
    mine = next((s for s in statements if s.epoch == epoch), None)
    return mine, [s for s in statements if s.epoch != epoch]


def _settler(
    context: dg.OpExecutionContext | dg.AssetExecutionContext,
    lineage: LineageSettingsResource,
    lineage_signer: LineageSignerResource,
    store: Store,
) -> Callable[[str | None], list[Statement]]:
    """`settle_held` bound to the run's store, key and clock; a LineageError fails the run
    with its one-line reason."""
    def settle(epoch: str | None) -> list[Statement]:
        try:
            return settle_held(
                store,
                lineage_signer.signer(),
                lineage_signer.trust(),
                Path(lineage.project_dir),
                Path(lineage.state_dir),
                datetime.now(UTC),
                epoch,
                on_epoch=lambda e: context.log.info(f"settling epoch {e}"),
            )
        except LineageError as exc:
            # The one-line reason (a rolled-back log, an unmet witness policy) is what the run
            # page shows, not a traceback.
            raise dg.Failure(description=str(exc)) from exc

    return settle


@dg.asset(
    key=SETTLEMENT_KEY,
    partitions_def=settlement_partitions,
    group_name="settlement",
    kinds={"duckdb"},
    metadata={ATTRIBUTED: False},  # its record is the settlement's own, signed when it settles
    description="One settled epoch per partition: fees, payouts, statement root. Materializing "
    "a partition settles that epoch exactly once (again: nothing new is paid).",
)
def settlement(
    context: dg.AssetExecutionContext,
    lineage: LineageSettingsResource,
    lineage_store: LineageStoreResource,
    lineage_signer: LineageSignerResource,
) -> dg.MaterializeResult:
    epoch = context.partition_key
    store = lineage_store.store()
    mine, earlier = settle_partition(
        store, _settler(context, lineage, lineage_signer, store), epoch
    )
    for st in earlier:
        # Settled first because its fees were still unsettled: its own partition shows it.
        context.log_event(settlement_materialization(store, st))
    if mine is None:
        return dg.MaterializeResult(metadata={
            "epoch": epoch,
            "settlement": "no usage in this epoch: nothing to settle",
            "fees_total": 0,
            "paid_total": 0,
            "earlier epochs settled first": ", ".join(s.epoch for s in earlier) or "none",
        })
    return dg.MaterializeResult(
        metadata={**settlement_metadata(store, mine),
                  "earlier epochs settled first": ", ".join(s.epoch for s in earlier) or "none"},
        data_version=dg.DataVersion(mine.root),
    )


settlement_asset_job = dg.define_asset_job(
    "settlement_asset_job",
    selection=[settlement],
    description="Settle one epoch per partition (a backfill settles a range, oldest first).",
)

settlement_asset_schedule = dg.build_schedule_from_partitioned_job(
    settlement_asset_job,
    name="settlement_asset_schedule",
    hour_of_day=0,
    minute_of_hour=15,  # daily, just after each UTC epoch closes: settles that epoch
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Materializes the settlement partition of the epoch that just closed.",
)


@dg.op(description="Settle closed epochs: ledger, payouts and a signed statement, exactly once.")
def settle_epochs(
    context: dg.OpExecutionContext,
    config: SettleConfig,
    lineage: LineageSettingsResource,
    lineage_store: LineageStoreResource,
    lineage_signer: LineageSignerResource,
) -> int:
    store = lineage_store.store()
    settle = _settler(context, lineage, lineage_signer, store)
    statements = settle(config.epoch or None)
    if not statements:
        context.log.info("nothing to settle: no closed epoch has unsettled usage")
    for st in statements:
        # The same materialization the `settlement` asset writes for this partition, in this
        # run (so its page links the run), built where `record_settlement_materialization`
        # builds the CLI's.
        materialization = settlement_materialization(store, st)
        meta = dict(materialization.metadata)
        context.log_event(materialization)
        context.log_event(
            dg.AssetObservation(
                asset_key=dg.AssetKey(["settlement", st.epoch]),
                metadata={k: meta[k] for k in (
                    "epoch", "fees_total", "paid_total", "statement_root", "log_index",
                    "already_settled", "payout_accounts", "payouts")},
            )
        )
        context.add_output_metadata(
            {
                f"{st.epoch} root": st.root,
                f"{st.epoch} payouts": _payout_table(st.payouts, st.paid_total),
            }
        )
    return len(statements)


@dg.job(description="Settle every closed epoch's usage fees into the ledger (also: "
        "`lineage settle`); each settled epoch is reported on the `settlement` asset.")
def settlement_job() -> None:
    settle_epochs()


settlement_schedule = dg.ScheduleDefinition(
    name="settlement_schedule",
    job=settlement_job,
    cron_schedule="15 0 * * *",  # daily, just after each UTC epoch closes
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Settles the epoch that just closed.",
)


@dg.sensor(
    name="usage_spool_sensor",
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Ingests producers' usage spool files into the store in bulk.",
)
def usage_spool_sensor(
    lineage: LineageSettingsResource, lineage_store: LineageStoreResource
) -> dg.SkipReason:
    from lineage_platform.spool import drain

    result = drain(lineage_store.store(), lineage.settings().spool_dir)
    rejected = (
        f"; {len(result.rejected)} files rejected: {result.rejected[0]}" if result.rejected else ""
    )
    return dg.SkipReason(
        f"ingested {result.inserted} usage events from {result.files} spool files "
        f"({result.replays} replays ignored){rejected}"
    )
