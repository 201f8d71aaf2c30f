"""The example code location: datanet -> model, plus the platform's sensor, checks and jobs."""

from pathlib import Path

import dagster as dg

from assets.datanet import contributions, datanet
from assets.model import digits_classifier
from lineage_platform.dagster import LineageSettingsResource

defs = dg.Definitions(
    assets=[contributions, datanet, digits_classifier],
    resources={"lineage": LineageSettingsResource.from_env(Path(__file__).resolve().parent.parent)},
)
