"""Dagster resources: where the project and its state live, and how to reach MLflow.

    defs = dg.Definitions(assets=[...], resources={"lineage": LineageSettingsResource.from_env()})
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from lineage_platform.config import Settings
from lineage_platform.integrations.mlflow import MlflowStore


class LineageSettingsResource(dg.ConfigurableResource):  # type: ignore[misc]
    """Paths shown in the UI's resource tab; every asset and the sensor read state through it."""

    project_dir: str
    state_dir: str
    mlflow_tracking_uri: str
    mlflow_ui_url: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> LineageSettingsResource:
        return cls(
            project_dir=str(settings.project_dir),
            state_dir=str(settings.state_dir),
            mlflow_tracking_uri=settings.mlflow_uri,
            mlflow_ui_url=settings.mlflow_ui_url or "",
        )

    @classmethod
    def from_env(cls, project_dir: Path | None = None) -> LineageSettingsResource:
        cwd = project_dir or Path.cwd()
        return cls.from_settings(Settings.from_env(os.environ, cwd=cwd))

    def settings(self) -> Settings:
        return Settings(
            Path(self.project_dir),
            Path(self.state_dir),
            self.mlflow_tracking_uri,
            self.mlflow_ui_url or None,
        )

    def mlflow_store(self) -> MlflowStore:
        return MlflowStore(self.mlflow_tracking_uri, self.settings().mlflow_artifacts)
