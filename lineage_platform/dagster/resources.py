"""Dagster resources: where the project and its state live, and how to reach MLflow.

    defs = dg.Definitions(assets=[...], resources={"lineage": LineageSettingsResource.from_env()})
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg

from lineage_platform.config import PROJECT_ENV, Settings
from lineage_platform.integrations.mlflow import MlflowStore
from lineage_platform.keys import KeyRing
from lineage_platform.signing import SigningKey, TrustStore
from lineage_platform.stores import Store, open_store

PASSPHRASE_ENV = "LINEAGE_KEY_PASSPHRASE"


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


class LineageStoreResource(dg.ConfigurableResource):  # type: ignore[misc]
    """The log and ledger at `url` (`duckdb:///…` or `postgresql://…`, see `open_store`);
    opened for one short transaction at a time, never held while idle."""

    url: str
    lock_timeout_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> LineageStoreResource:
        return cls(url=settings.store_url, lock_timeout_s=settings.lock_timeout_s)

    def store(self) -> Store:
        return open_store(self.url, lock_timeout_s=self.lock_timeout_s)


class LineageSignerResource(dg.ConfigurableResource):  # type: ignore[misc]
    """The signing key; its passphrase comes from `dg.EnvVar`, read at launch, hidden in the UI."""

    keys_dir: str
    passphrase: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, passphrase: Any = None) -> LineageSignerResource:
        return cls(keys_dir=str(settings.keys_dir), passphrase=passphrase)

    def ring(self) -> KeyRing:
        return KeyRing(Path(self.keys_dir))

    def signer(self) -> SigningKey:
        ring = self.ring()
        secret = self.passphrase.encode() if self.passphrase else None
        if not ring.exists():
            ring.init(secret)
        return ring.signer(secret)

    def trust(self) -> TrustStore:
        return self.ring().trust()


def platform_resources(project_dir: Path | None = None) -> dict[str, dg.ConfigurableResource]:
    """Everything the platform's sensor, checks and jobs need, from LINEAGE_* settings;
    `project_dir` is the project when LINEAGE_PROJECT does not name one (it need not hold a
    workspace.yaml: a code location passes its own folder).

        resources = platform_resources(Path(__file__).parent)
    """
    environ = dict(os.environ)
    if project_dir is not None:
        environ.setdefault(PROJECT_ENV, str(project_dir))
    settings = Settings.from_env(environ, cwd=project_dir or Path.cwd())
    secret = dg.EnvVar(PASSPHRASE_ENV) if os.environ.get(PASSPHRASE_ENV) else None
    return resources_for(settings, secret)


def resources_for(settings: Settings, passphrase: Any = None) -> dict[str, dg.ConfigurableResource]:
    """The same resources for explicit settings (tests, a second state folder)."""
    return {
        "lineage": LineageSettingsResource.from_settings(settings),
        "lineage_store": LineageStoreResource.from_settings(settings),
        "lineage_signer": LineageSignerResource.from_settings(settings, passphrase),
    }
