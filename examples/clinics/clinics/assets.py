"""The pipeline: clinic tables -> cohort -> progression model -> report.

Plain Dagster: each asset returns its value and the default IO manager stores it.
"""

import os

import dagster as dg
import pandas as pd
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from clinics.data import CLINICS, FEATURES, LABEL, SOURCE, clinic_rows, holdout_rows


def clinic_table(clinic: str) -> dg.AssetsDefinition:
    """The asset holding one clinic's export (one per clinic, same shape)."""

    @dg.asset(
        name=f"clinic_{clinic}",
        group_name="clinics",
        kinds={"pandas"},
        owners=[f"team:clinic-{clinic}"],
        description=f"Patient records exported by the {clinic} clinic.",
    )
    def _table(context: dg.AssetExecutionContext) -> pd.DataFrame:
        rows = clinic_rows(clinic)
        context.add_output_metadata({"rows": len(rows)})
        return rows

    return _table


clinic_tables = [clinic_table(c) for c in CLINICS]


@dg.asset(
    ins={t.key.path[-1]: dg.AssetIn(t.key) for t in clinic_tables},
    group_name="cohort",
    kinds={"pandas"},
    owners=["team:data-platform"],
)
def cohort(context: dg.AssetExecutionContext, **tables: pd.DataFrame) -> pd.DataFrame:
    """Every clinic's patients in one table; `source` says which clinic each row came from."""
    joined = pd.concat([tables[name] for name in sorted(tables)], ignore_index=True)
    context.add_output_metadata(
        {"rows": len(joined), "rows by source": joined[SOURCE].value_counts().to_dict()}
    )
    return joined


def make_model() -> Pipeline:
    """A fresh, unfitted model: scaled features, ridge regression."""
    return make_pipeline(StandardScaler(), Ridge())


def log_to_mlflow(model: Pipeline, r2: float, rows: int) -> dict[str, str]:
    """Log the run when MLflow is installed and MLFLOW_TRACKING_URI says where; else skip."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return {}
    try:
        import mlflow
        import mlflow.sklearn
    except ImportError:
        return {}
    mlflow.set_experiment("progression_model")
    with mlflow.start_run() as run:
        mlflow.log_params({"model": "StandardScaler+Ridge"})
        mlflow.log_metrics({"holdout_r2": r2, "training_rows": rows})
        mlflow.sklearn.log_model(model, name="model")
    return {"mlflow_run_id": run.info.run_id}


@dg.asset(group_name="models", kinds={"scikitlearn"}, owners=["team:ml"])
def progression_model(context: dg.AssetExecutionContext, cohort: pd.DataFrame) -> Pipeline:
    """Predicts a patient's diabetes progression one year on (a regression)."""
    model = make_model().fit(cohort[FEATURES], cohort[LABEL])
    holdout = holdout_rows()
    r2 = float(model.score(holdout[FEATURES], holdout[LABEL]))
    context.add_output_metadata(
        {"holdout_r2": r2, "training_rows": len(cohort), **log_to_mlflow(model, r2, len(cohort))}
    )
    return model


@dg.asset(group_name="reports", kinds={"markdown"}, owners=["team:ml"])
def progression_report(progression_model: Pipeline) -> dg.MaterializeResult:
    """How well the model does on held-out patients, and which features drive it."""
    holdout = holdout_rows()
    r2 = float(progression_model.score(holdout[FEATURES], holdout[LABEL]))
    weights = sorted(
        zip(FEATURES, progression_model[-1].coef_, strict=True), key=lambda fw: -abs(fw[1])
    )
    lines = [f"Held-out R² **{r2:.3f}** on {len(holdout)} patients.", "",
             "| feature | weight |", "| --- | ---: |", *(f"| {f} | {w:.2f} |" for f, w in weights)]
    return dg.MaterializeResult(
        metadata={"holdout_r2": r2, "summary": dg.MetadataValue.md("\n".join(lines))}
    )
