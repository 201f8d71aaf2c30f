"""Where the platform keeps its state: one folder, explicit paths, nothing read at import time.

    settings = Settings.from_env(os.environ, cwd=Path.cwd())
    settings.store_url  # duckdb:///<project>/.lineage/lineage.duckdb, or LINEAGE_STORE_URL
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
LOCK_TIMEOUT_ENV = "LINEAGE_LOCK_TIMEOUT"
STORE_URL_ENV = "LINEAGE_STORE_URL"


def find_project_root(start: Path) -> Path:
    """The nearest folder holding workspace.yaml: the code location Dagster itself loads."""
    for folder in (start, *start.parents):
        if (folder / "workspace.yaml").is_file():
            return folder
    raise ConfigError(f"no workspace.yaml in {start} or any parent; run from the project folder")


def _lock_timeout(text: str | None) -> float:
    """Seconds to retry a locked DuckDB file before StoreBusyError (DESIGN §7); default 30."""
    if not text:
        return 30.0
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise ConfigError(f"{LOCK_TIMEOUT_ENV}={text!r}: expected a non-negative number of seconds")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    """Every runtime path lives under `state_dir`, so one folder holds (and resets) it all."""

    project_dir: Path
    state_dir: Path
    mlflow_uri: str
    mlflow_ui_url: str | None = None
    lock_timeout_s: float = 30.0
    store_url_override: str | None = None  # LINEAGE_STORE_URL; else the DuckDB file below

    @classmethod
    def from_env(cls, environ: Mapping[str, str], cwd: Path) -> Settings:
        project = Path(environ[PROJECT_ENV]) if environ.get(PROJECT_ENV) else None
        project_dir = (project or find_project_root(cwd)).resolve()
        state = Path(environ.get(STATE_ENV) or project_dir / ".lineage").resolve()
        mlflow_uri = environ.get(MLFLOW_ENV) or f"sqlite:///{state / 'mlflow.db'}"
        return cls(
            project_dir,
            state,
            mlflow_uri,
            environ.get(MLFLOW_UI_ENV) or None,
            _lock_timeout(environ.get(LOCK_TIMEOUT_ENV)),
            environ.get(STORE_URL_ENV) or None,
        )

    @property
    def store_url(self) -> str:
        """Where the log and ledger live (`lineage_platform.stores.open_store` reads it)."""
        return self.store_url_override or f"duckdb://{self.duckdb_path}"

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
