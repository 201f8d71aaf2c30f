"""The example code location: datanet -> model, plus the platform's sensor and checks."""

from functools import partial
from pathlib import Path

import dagster as dg

from assets.datanet import contributions, datanet
from assets.model import digits_classifier
from assets.valuation import digits_classifier_valuation, recompute
from lineage_platform.dagster import (
    attribution_checks,
    lineage_sensor,
    platform_resources,
    settlement_job,
    settlement_schedule,
    usage_spool_sensor,
)
from lineage_platform.dagster.checks import (
    log_verified_checks,
    operations_check,
    shapley_efficiency_check,
    valuation_accepted_check,
)

PROJECT = Path(__file__).resolve().parent.parent
ASSETS = [contributions, datanet, digits_classifier, digits_classifier_valuation]

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=[
        *attribution_checks([a.key for a in ASSETS]),
        *log_verified_checks([a.key for a in ASSETS]),
        shapley_efficiency_check(digits_classifier_valuation.key),
        valuation_accepted_check(digits_classifier_valuation.key, "digits_classifier"),
        operations_check(digits_classifier.key),
    ],
    sensors=[lineage_sensor, usage_spool_sensor],
    jobs=[settlement_job],
    schedules=[settlement_schedule],
    resources=platform_resources(PROJECT),
)

#: `lineage verify --recompute`: how each valuation asset's values are computed again.
valuation_recomputers = {
    digits_classifier_valuation.key.to_user_string(): partial(recompute, PROJECT),
}
