"""The code location `dagster dev` and `lineage` load (workspace.yaml): the plain assets, and
the lines that sign what they make, value each clinic's data and settle the model's fees."""

from pathlib import Path

import dagster as dg

from clinics.assets import clinic_tables, cohort, make_model, progression_model, progression_report
from clinics.data import FEATURES, LABEL, holdout_rows
from lineage_platform import ContributorsFrom, LineageTranslator, valuation_asset, with_lineage


class ClinicsTranslator(LineageTranslator):
    """Every table credits the clinic its `source` column names; reports are not signed."""

    def attributed(self, spec: dg.AssetSpec) -> bool:
        return spec.group_name != "reports"

    def contributors_from(self, spec: dg.AssetSpec) -> ContributorsFrom | None:
        return ContributorsFrom("column", "source") if "pandas" in spec.kinds else None


valuation = valuation_asset(progression_model, data=cohort, contributor_column="source",
                            features=FEATURES, label=LABEL, validation=holdout_rows,
                            make_model=make_model, method="exact")

defs = dg.Definitions(assets=[*clinic_tables, cohort, progression_model, progression_report,
                              valuation])
defs = with_lineage(defs, translator=ClinicsTranslator(), project_dir=Path(__file__).parent.parent)
