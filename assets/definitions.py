"""The example code location: datanet -> model -> valuation, given lineage by `with_lineage`.

`with_lineage` adds the lineage sensor, the `attribution_recorded` and `log_verified` checks of
every asset, the efficiency and valuation_accepted checks of the valuation asset (it declares
the model it values), `sensor_caught_up` on the model, the daily-partitioned `settlement` asset
(one partition per settled epoch; `lineage settle` records its epochs there too) with its job,
schedule and `fees_settled` check, the usage spool sensor, and the platform resources. The
example's assets report their own digests (DVC files, MLflow models), so nothing is hashed for
them in the run.
"""

from functools import partial
from pathlib import Path

import dagster as dg

from assets.datanet import contributions, datanet
from assets.model import digits_classifier
from assets.valuation import digits_classifier_valuation, recompute
from lineage_platform.dagster import operations_check, with_lineage

PROJECT = Path(__file__).resolve().parent.parent
ASSETS = [contributions, datanet, digits_classifier, digits_classifier_valuation]

defs = with_lineage(
    dg.Definitions(
        assets=ASSETS,
        asset_checks=[operations_check(digits_classifier.key)],
    ),
    project_dir=PROJECT,
)

#: `lineage verify --recompute`: how each valuation asset's values are computed again.
valuation_recomputers = {
    digits_classifier_valuation.key.to_user_string(): partial(recompute, PROJECT),
}
