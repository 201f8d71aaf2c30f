"""The thin Dagster layer: `with_lineage` for an existing project, and its parts one by one.

    from lineage_platform.dagster import LineageTranslator, valuation_asset, with_lineage
    defs = with_lineage(dg.Definitions(assets=[...]), translator=LineageTranslator())

The parts `with_lineage` adds (sensor, checks, settlement job and schedule, resources) are
public too, for a code location that wires them itself (`assets/definitions.py`).
"""

from lineage_platform.dagster.checks import (
    log_verified_checks,
    operations_check,
    shapley_efficiency_check,
    valuation_accepted_check,
)
from lineage_platform.dagster.integrate import LineageIOManager, attributed_assets, with_lineage
from lineage_platform.dagster.metadata import (
    dataset_metadata,
    model_metadata,
    people_first,
    valuation_metadata,
)
from lineage_platform.dagster.resources import (
    LineageSettingsResource,
    LineageSignerResource,
    LineageStoreResource,
    platform_resources,
)
from lineage_platform.dagster.sensor import (
    attribution_checks,
    build_lineage_sensor,
    lineage_sensor,
)
from lineage_platform.dagster.settlement import (
    record_settlement_materialization,
    settlement,
    settlement_asset_job,
    settlement_asset_schedule,
    settlement_job,
    settlement_metadata,
    settlement_schedule,
    usage_spool_sensor,
)
from lineage_platform.dagster.sync import sync_locations
from lineage_platform.dagster.translator import ContributorsFrom, LineageTranslator, table_sha256
from lineage_platform.dagster.valuation import (
    ValuationConfig,
    valuation_asset,
    valuation_asset_key,
    valuation_report,
)
from lineage_platform.dagster.views import (
    attribution_observations,
    observations_at,
    sensor_lag_check,
    unsettled_fees_check,
)

__all__ = [
    "ContributorsFrom",
    "LineageIOManager",
    "LineageSettingsResource",
    "LineageSignerResource",
    "LineageStoreResource",
    "LineageTranslator",
    "ValuationConfig",
    "attributed_assets",
    "attribution_checks",
    "attribution_observations",
    "build_lineage_sensor",
    "dataset_metadata",
    "lineage_sensor",
    "log_verified_checks",
    "model_metadata",
    "observations_at",
    "operations_check",
    "people_first",
    "platform_resources",
    "record_settlement_materialization",
    "sensor_lag_check",
    "settlement",
    "settlement_asset_job",
    "settlement_asset_schedule",
    "settlement_job",
    "settlement_metadata",
    "settlement_schedule",
    "shapley_efficiency_check",
    "sync_locations",
    "table_sha256",
    "unsettled_fees_check",
    "usage_spool_sensor",
    "valuation_accepted_check",
    "valuation_asset",
    "valuation_asset_key",
    "valuation_metadata",
    "valuation_report",
    "with_lineage",
]
