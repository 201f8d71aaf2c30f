"""Where the platform keeps its state: one folder, explicit paths, nothing read at import time.

    settings = Settings.from_env(os.environ, cwd=Path.cwd())
    settings.duckdb_path  # .lineage/lineage.duckdb under the project root
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lineage_platform.errors import ConfigError

STATE_ENV = "LINEAGE_HOME"
PROJECT_ENV = "LINEAGE_PROJECT"
MLFLOW_ENV = "LINEAGE_MLFLOW_URI"
MLFLOW_UI_ENV = "LINEAGE_MLFLOW_UI"


def find_project_root(start: Path) -> Path:
    """The nearest folder holding workspace.yaml: the code location Dagster itself loads."""
    for folder in (start, *start.parents):
        if (folder / "workspace.yaml").is_file():
            return folder
    raise ConfigError(f"no workspace.yaml in {start} or any parent; run from the project folder")


@dataclass(frozen=True, slots=True)
class Settings:
    """Every runtime path lives under `state_dir`, so one folder holds (and resets) it all."""

    project_dir: Path
    state_dir: Path
    mlflow_uri: str
    mlflow_ui_url: str | None = None
    lock_timeout_s: float = 30.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str], cwd: Path) -> Settings:
        project = Path(environ[PROJECT_ENV]) if environ.get(PROJECT_ENV) else None
        project_dir = (project or find_project_root(cwd)).resolve()
        state = Path(environ.get(STATE_ENV) or project_dir / ".lineage").resolve()
        mlflow_uri = environ.get(MLFLOW_ENV) or f"sqlite:///{state / 'mlflow.db'}"
        return cls(project_dir, state, mlflow_uri, environ.get(MLFLOW_UI_ENV) or None)

    @property
    def duckdb_path(self) -> Path:
        return self.state_dir / "lineage.duckdb"

    @property
    def dagster_home(self) -> Path:
        return self.state_dir / "dagster"

    @property
    def keys_dir(self) -> Path:
        return self.state_dir / "keys"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.state_dir / "mlartifacts"

    @property
    def spool_dir(self) -> Path:
        return self.state_dir / "spool"
