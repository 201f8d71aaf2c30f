"""`settlement_job` and its daily `settlement_schedule`: the same `settle_held()` the CLI calls.

    defs = dg.Definitions(jobs=[settlement_job], schedules=[settlement_schedule], ...)
"""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from lineage_platform.dagster.resources import (
    LineageSettingsResource,
    LineageSignerResource,
    LineageStoreResource,
)
from lineage_platform.errors import LineageError
from lineage_platform.settlement import settle_held


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


@dg.op(description="Settle closed epochs: ledger, payouts and a signed statement, exactly once.")
def settle_epochs(
    context: dg.OpExecutionContext,
    config: SettleConfig,
    lineage: LineageSettingsResource,
    lineage_store: LineageStoreResource,
    lineage_signer: LineageSignerResource,
) -> int:
    try:
        statements = settle_held(
            lineage_store.store(),
            lineage_signer.signer(),
            lineage_signer.trust(),
            Path(lineage.project_dir),
            Path(lineage.state_dir),
            datetime.now(UTC),
            config.epoch or None,
            on_epoch=lambda e: context.log.info(f"settling epoch {e}"),
        )
    except LineageError as exc:
        # The one-line reason (a rolled-back log, an unmet witness policy) is what the run
        # page shows, not a traceback.
        raise dg.Failure(description=str(exc)) from exc
    if not statements:
        context.log.info("nothing to settle: no closed epoch has unsettled usage")
    for st in statements:
        context.log_event(
            dg.AssetObservation(
                asset_key=dg.AssetKey(["settlement", st.epoch]),
                metadata={
                    "epoch": st.epoch,
                    "fees_total": st.fees_total,
                    "paid_total": st.paid_total,
                    "statement_root": st.root,
                    "log_index": st.log_index,
                    "already_settled": st.already_settled,
                    "payout_accounts": len(st.payouts),
                    "payouts": _payout_table(st.payouts, st.paid_total),
                },
            )
        )
        context.add_output_metadata(
            {
                f"{st.epoch} root": st.root,
                f"{st.epoch} payouts": _payout_table(st.payouts, st.paid_total),
            }
        )
    return len(statements)


@dg.job(description="Settle usage fees into the ledger (also: `lineage settle`).")
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
