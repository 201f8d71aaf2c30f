"""The code location `dagster dev` loads (workspace.yaml)."""

import dagster as dg

from clinics.assets import clinic_tables, cohort, progression_model, progression_report

defs = dg.Definitions(assets=[*clinic_tables, cohort, progression_model, progression_report])
