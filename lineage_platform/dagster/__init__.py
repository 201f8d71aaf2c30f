"""The thin Dagster layer: resources, the lineage sensor, settlement job and schedule, checks.

    from lineage_platform.dagster import lineage_sensor, platform_resources, dataset_metadata
"""

from lineage_platform.dagster.metadata import dataset_metadata, model_metadata, valuation_metadata
from lineage_platform.dagster.resources import (
    LineageSettingsResource,
    LineageSignerResource,
    LineageStoreResource,
    platform_resources,
)
from lineage_platform.dagster.sensor import attribution_checks, lineage_sensor
from lineage_platform.dagster.settlement import (
    settlement_job,
    settlement_schedule,
    usage_spool_sensor,
)

__all__ = [
    "LineageSettingsResource",
    "LineageSignerResource",
    "LineageStoreResource",
    "attribution_checks",
    "dataset_metadata",
    "lineage_sensor",
    "model_metadata",
    "platform_resources",
    "settlement_job",
    "settlement_schedule",
    "usage_spool_sensor",
    "valuation_metadata",
]
