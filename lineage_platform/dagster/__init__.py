"""The thin Dagster layer: resources, the lineage sensor, settlement job and schedule, checks.

    from lineage_platform.dagster import LineageSettingsResource, dataset_metadata
"""

from lineage_platform.dagster.metadata import dataset_metadata, model_metadata
from lineage_platform.dagster.resources import LineageSettingsResource

__all__ = ["LineageSettingsResource", "dataset_metadata", "model_metadata"]
