"""Asset checks a person sees on each asset: the whole log verifies; Shapley values add up;
settlement would pay on the newest valuation.

    asset_checks = [*log_verified_checks(keys), shapley_efficiency_check(valuation_asset),
                    valuation_accepted_check(valuation_asset, "digits_classifier")]
"""

from pathlib import Path

import dagster as dg

from lineage_platform.allocation import Policy
from lineage_platform.audit import verify_store
from lineage_platform.dagster.resources import (
    LineageSettingsResource,
    LineageSignerResource,
    LineageStoreResource,
)
from lineage_platform.dagster.sensor import latest_record
from lineage_platform.errors import LineageError
from lineage_platform.settlement import load_policy, valuation_decisions
from lineage_platform.stores import Store

EFFICIENCY = "lineage/efficiency"


def log_verified_checks(keys: list[dg.AssetKey]) -> list[dg.AssetChecksDefinition]:
    """`log_verified` per asset: every signature, reference, checkpoint and settled epoch in
    the whole log verifies (the asset's page shows the log's size, root and key ids).

        asset_checks = log_verified_checks([cohort.key, model.key])
    """
    return [_log_verified(k) for k in keys]


def _log_verified(key: dg.AssetKey) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=key,
        name="log_verified",
        description="Every signature, reference, checkpoint and settled epoch in the log verifies.",
    )
    def _check(
        lineage_store: LineageStoreResource, lineage_signer: LineageSignerResource
    ) -> dg.AssetCheckResult:
        try:
            report = verify_store(lineage_store.store(), lineage_signer.trust())
        except LineageError as exc:
            return dg.AssetCheckResult(passed=False, metadata={"failure": str(exc)})
        return dg.AssetCheckResult(
            passed=True,
            metadata={
                "records": report.records,
                "checkpoints": report.checkpoints,
                "settled_epochs": report.epochs,
                "root": report.root_hex,
                "key_ids": ", ".join(report.keyids),
            },
        )

    return _check


def shapley_efficiency_check(key: dg.AssetKey) -> dg.AssetChecksDefinition:
    """`shapley_efficiency` on a valuation asset: its newest values sum to u(N) − u(∅) (the
    `lineage/efficiency` figures it reported), within rounding for exact methods and 3
    standard errors for sampled ones; passes with a note for methods without the axiom.

        asset_checks = [shapley_efficiency_check(model_valuation.key)]
    """

    @dg.asset_check(
        asset=key,
        name="shapley_efficiency",
        description="The contributor values sum to u(N) − u(∅) (exact methods: within 1e-9).",
    )
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        latest = latest_record(context.instance, key)
        mat = latest.asset_materialization if latest else None
        entry = mat.metadata.get(EFFICIENCY) if mat else None
        value = getattr(entry, "value", None)
        if not isinstance(value, dict):
            return dg.AssetCheckResult(passed=False, metadata={"reason": "no efficiency figures"})
        target = value.get("u_full_minus_u_empty")
        if target is None:
            return dg.AssetCheckResult(
                passed=True, metadata={"note": f"{value.get('method')}: efficiency not an axiom"}
            )
        gap = abs(float(value["sum_of_values"]) - float(target))
        return dg.AssetCheckResult(
            passed=gap <= float(value["tolerance"]),
            metadata={**{k: v for k, v in value.items() if v is not None}, "gap": gap},
        )

    return _check


def operations_check(key: dg.AssetKey) -> dg.AssetChecksDefinition:
    """`lineage status` as a check: unsettled closed epochs, spooled usage, lock contention.

        asset_checks = [operations_check(model.key)]
    """

    @dg.asset_check(
        asset=key,
        name="settlement_up_to_date",
        description="No closed epoch waits for settlement; shows pending fees, spools, lock waits.",
    )
    def _check(
        lineage: LineageSettingsResource, lineage_store: LineageStoreResource
    ) -> dg.AssetCheckResult:
        from datetime import UTC, datetime

        from lineage_platform.status import store_gauges

        spool = lineage.settings().spool_dir
        gauges = store_gauges(lineage_store.store(), spool, datetime.now(UTC))
        return dg.AssetCheckResult(
            passed=not gauges.closed_unsettled_epochs,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "closed unsettled epochs": ", ".join(gauges.closed_unsettled_epochs) or "none",
                "pending fees (minor units)": gauges.unsettled_fees,
                "open epoch fees": gauges.open_epoch_fees,
                "spooled usage files": gauges.spooled_files,
                "store lock waits (1 h)": gauges.lock_waits_last_hour,
                "log size": gauges.log_size,
            },
        )

    return _check


def valuation_acceptance(store: Store, policy: Policy, model: str) -> dg.AssetCheckResult:
    """Whether a settlement now would pay `model` on its newest valuation record: fails,
    naming each refused record and why, when a newer one breaks settlement's rules (issue 15:
    not the model's registered valuation, not made by a run, pays a name outside the lineage,
    values that do not add up, ...). The log as it is: a valuation not synced yet is not seen."""
    if not store.exists():
        return dg.AssetCheckResult(passed=True, metadata={"note": "no log yet"})
    chosen, refusals = valuation_decisions(store, policy, [model])
    refused = [r for r in refusals if r.model == model and r.kind == "valuation"]
    used = chosen.get(model)
    return dg.AssetCheckResult(
        passed=not refused,
        metadata={
            "model": model,
            "paid on": f"valuation record #{used[0]}" if used is not None
            else "none: the data part follows the lineage",
            "refused": "\n".join(str(r) for r in refused) or "none",
            "refused records": [r.log_index for r in refused],
        },
    )


def valuation_accepted_check(key: dg.AssetKey, model: str) -> dg.AssetChecksDefinition:
    """`valuation_acceptance` as a check on the valuation asset `key` of `model`.

        asset_checks = [valuation_accepted_check(model_valuation.key, "model")]
    """

    @dg.asset_check(
        asset=key,
        name="valuation_accepted",
        description="Settlement would pay on this model's newest valuation (no refused record).",
    )
    def _check(
        lineage: LineageSettingsResource, lineage_store: LineageStoreResource
    ) -> dg.AssetCheckResult:
        policy = load_policy(Path(lineage.project_dir))
        return valuation_acceptance(lineage_store.store(), policy, model)

    return _check
