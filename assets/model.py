"""The model trained on the datanet, tracked in MLflow."""


import pickle
from pathlib import Path

import dagster as dg
import pandas as pd
from sklearn.linear_model import LogisticRegression

from assets.datanet import PARAMS, datanet
from assets.prepare import FEATURES, LABEL, load_params
from lineage_platform.dagster import LineageSettingsResource, model_metadata, people_first
from lineage_platform.hashing import sha256_bytes
from lineage_platform.integrations.dvc import output_md5
from lineage_platform.integrations.mlflow import log_training_run, run_url


class ClassifierConfig(dg.Config):  # type: ignore[misc]
    """Per-run training parameters; defaults come from params.yaml."""

    max_iter: int = int(load_params(PARAMS)["model"]["max_iter"])
    C: float = float(load_params(PARAMS)["model"]["C"])


def train(frame: pd.DataFrame, max_iter: int, c: float) -> LogisticRegression:
    model = LogisticRegression(max_iter=max_iter, C=c)
    model.fit(frame[FEATURES].to_numpy() / 16.0, frame[LABEL].to_numpy())
    return model


@dg.asset(
    deps=[datanet],
    group_name="models",
    kinds={"scikitlearn", "mlflow"},
    owners=["team:ml"],
    code_version="1",
)
def digits_classifier(
    config: ClassifierConfig, lineage: LineageSettingsResource
) -> dg.MaterializeResult:
    """A logistic-regression digit classifier trained on the datanet, logged to MLflow."""
    project = Path(lineage.project_dir)
    rel = "data/datanet.parquet"
    frame = pd.read_parquet(project / rel)
    validation = pd.read_parquet(project / "data/validation.parquet")
    model = train(frame, config.max_iter, config.C)
    accuracy = float(model.score(validation[FEATURES].to_numpy() / 16.0, validation[LABEL]))
    md5 = output_md5(project, rel)
    ref = log_training_run(
        lineage.mlflow_store(),
        experiment="digits_classifier",
        model=model,
        params={"max_iter": config.max_iter, "C": config.C, "model": "LogisticRegression"},
        metrics={"validation_accuracy": accuracy, "training_rows": float(len(frame))},
        dataset=frame,
        dataset_name="datanet",
        dvc_path=rel,
        dvc_md5=md5,
    )
    sha = sha256_bytes(pickle.dumps(model, protocol=5))
    url = run_url(lineage.mlflow_ui_url, ref.experiment_id, ref.run_id)
    meta = model_metadata(sha, ref.run_id, ref.model_id, mlflow_url=url)
    meta["training_data_dvc_md5"] = md5
    meta["validation_accuracy"] = dg.MetadataValue.float(accuracy)
    meta["training_rows"] = dg.MetadataValue.int(len(frame))
    return dg.MaterializeResult(metadata=people_first(meta), data_version=dg.DataVersion(sha))
