"""The code location `dagster dev` and `lineage` load (workspace.yaml): the plain assets, and
the lines that sign what they make, value each clinic's data and settle the model's fees."""

from pathlib import Path

import dagster as dg

from clinics.assets import clinic_tables, cohort, make_model, progression_model, progression_report
from clinics.data import FEATURES, LABEL, holdout_rows
from lineage_platform import LineageTranslator, valuation_asset, with_lineage

# Every table credits the clinic its `source` column names; the report is not signed.
translator = LineageTranslator(contributor_column="source", leave_out=[progression_report])

# Exact Shapley over the four clinics; the model is a regressor, so coalitions are scored by R².
valuation = valuation_asset(progression_model, data=cohort, contributor_column="source",
                            features=FEATURES, label=LABEL, validation=holdout_rows,
                            make_model=make_model, method="exact", score="r2")

defs = dg.Definitions(assets=[*clinic_tables, cohort, progression_model, progression_report,
                              valuation])
defs = with_lineage(defs, translator=translator, project_dir=Path(__file__).parent.parent)
