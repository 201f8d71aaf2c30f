"""MLflow: log a training run with its input dataset (carrying the DVC md5) and a LoggedModel.

    ref = log_training_run(store, "digits", model, params, metrics, frame, "datanet", dvc)
    ref.run_id, ref.model_id   # what the attribution record names
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lineage_platform.errors import IntegrationError
from lineage_platform.extras import require

# MLflow and alembic log migrations and hints at INFO/WARNING on every first use of a store.
for _name in ("mlflow", "alembic", "alembic.runtime.migration"):
    logging.getLogger(_name).setLevel(logging.ERROR)


@dataclass(frozen=True, slots=True)
class MlflowStore:
    tracking_uri: str
    artifact_dir: Path

    def client(self) -> Any:
        client = require("mlflow.tracking", extra="mlflow").MlflowClient
        return client(tracking_uri=self.tracking_uri)


@dataclass(frozen=True, slots=True)
class TrainingRef:
    run_id: str
    model_id: str
    experiment_id: str


def _experiment(store: MlflowStore, name: str) -> str:
    client = store.client()
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    store.artifact_dir.mkdir(parents=True, exist_ok=True)
    return str(client.create_experiment(name, artifact_location=store.artifact_dir.as_uri()))


def log_training_run(
    store: MlflowStore,
    experiment: str,
    model: Any,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    dataset: Any,
    dataset_name: str,
    dvc_path: str,
    dvc_md5: str,
    tags: Mapping[str, str] | None = None,
) -> TrainingRef:
    """One run: params, metrics, `log_input` of the training data, the model as a LoggedModel."""
    mlflow = require("mlflow", extra="mlflow")
    require("mlflow.sklearn", extra="mlflow")
    from_pandas = require("mlflow.data.pandas_dataset", extra="mlflow").from_pandas

    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    try:
        warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\..*")
        mlflow.set_tracking_uri(store.tracking_uri)
        experiment_id = _experiment(store, experiment)
        with mlflow.start_run(experiment_id=experiment_id, tags=dict(tags or {})) as run:
            mlflow.log_params(dict(params))
            mlflow.log_metrics(dict(metrics))
            data = from_pandas(
                dataset, source=dvc_path, name=dataset_name, targets="label", digest=dvc_md5[:8]
            )
            mlflow.log_input(
                data, context="training", tags={"dvc_md5": dvc_md5, "dvc_path": dvc_path}
            )
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                pip_requirements=["scikit-learn"],  # skips slow requirement inference
                params=dict(params),
            )
            return TrainingRef(run.info.run_id, str(info.model_id), experiment_id)
    except IntegrationError:
        raise
    except Exception as exc:  # MLflow raises its own, SQLAlchemy's and OS errors alike.
        raise IntegrationError(f"MLflow store {store.tracking_uri} failed: {exc}") from exc


def get_run(store: MlflowStore, run_id: str) -> Any:
    """Resolve a run id through MLflow's own client (an unreachable store is one clear error)."""
    try:
        return store.client().get_run(run_id)
    except Exception as exc:
        raise IntegrationError(
            f"MLflow run {run_id} not found in {store.tracking_uri}: {exc}"
        ) from exc


def get_logged_model(store: MlflowStore, model_id: str) -> Any:
    try:
        return store.client().get_logged_model(model_id)
    except Exception as exc:
        raise IntegrationError(f"MLflow model {model_id} not found: {exc}") from exc


def run_url(ui_url: str | None, experiment_id: str, run_id: str) -> str | None:
    if not ui_url:
        return None
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
