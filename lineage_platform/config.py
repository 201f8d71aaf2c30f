"""Where the platform keeps its state: one folder, explicit paths, nothing read at import time.

    settings = Settings.from_env(os.environ, cwd=Path.cwd())
    settings.store_url  # duckdb:///<project>/.lineage/lineage.duckdb, or LINEAGE_STORE_URL
    settings.dagster_home  # $DAGSTER_HOME when set, else <state folder>/dagster

A project is found as `dagster dev` finds one: the nearest folder with a workspace.yaml or a
pyproject.toml naming its code (`[tool.dagster]` or `[tool.dg]`); `CodeTarget` carries what the
command line named instead (`-w`, `-m`, `-f`, like Dagster's own CLI).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lineage_platform.errors import ConfigError

STATE_ENV = "LINEAGE_HOME"
PROJECT_ENV = "LINEAGE_PROJECT"
MLFLOW_ENV = "LINEAGE_MLFLOW_URI"
MLFLOW_UI_ENV = "LINEAGE_MLFLOW_UI"
LOCK_TIMEOUT_ENV = "LINEAGE_LOCK_TIMEOUT"
STORE_URL_ENV = "LINEAGE_STORE_URL"
DAGSTER_HOME_ENV = "DAGSTER_HOME"

__all__ = ["CodeTarget", "Settings", "dagster_block", "find_project_root"]


def dagster_block(pyproject: Path) -> dict[str, object] | None:
    """pyproject.toml's `[tool.dagster]` (or `[tool.dg]`) table, None when it names no code.

    Example: dagster_block(Path("pyproject.toml"))  # {"module_name": "my_project.definitions"}
    """
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    tool = data.get("tool")
    if not isinstance(tool, dict):
        return None
    for name in ("dagster", "dg"):
        block = tool.get(name)
        if isinstance(block, dict) and block:
            return {"tool": name, **block}
    return None


def _holds_code(folder: Path) -> bool:
    """workspace.yaml, a pyproject.toml naming Dagster code, or a state folder `lineage init`
    made (its keys or its Dagster home)."""
    if (folder / "workspace.yaml").is_file():
        return True
    state = folder / ".lineage"
    if (state / "keys").is_dir() or (state / "dagster").is_dir():
        return True
    pyproject = folder / "pyproject.toml"
    return pyproject.is_file() and dagster_block(pyproject) is not None


def find_project_root(start: Path, fallback: bool = False) -> Path:
    """The nearest folder naming its Dagster code (workspace.yaml, or pyproject.toml with
    `[tool.dagster]`/`[tool.dg]`), as `dagster dev` looks for it, or that `lineage init` made a
    state folder in; `start` itself with `fallback` (the command line named the code, or
    `lineage init` in a new project)."""
    for folder in (start, *start.parents):
        if _holds_code(folder):
            return folder
    if fallback:
        return start
    raise ConfigError(
        f"no workspace.yaml (or pyproject.toml with [tool.dagster]) in {start} or any parent; "
        "run from the project folder, or name the code with -w/-m/-f"
    )


@dataclass(frozen=True, slots=True)
class CodeTarget:
    """The code locations the command line named, as Dagster's CLI takes them; empty means the
    project's own workspace.yaml (or pyproject.toml). Paths are absolute.

    Example: CodeTarget(modules=("my_project.definitions",), working_directory=Path.cwd())
    """

    workspaces: tuple[Path, ...] = ()
    modules: tuple[str, ...] = ()
    files: tuple[Path, ...] = ()
    working_directory: Path | None = None

    def __bool__(self) -> bool:
        return bool(self.workspaces or self.modules or self.files)


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
    dagster_home_override: Path | None = None  # DAGSTER_HOME: the user's own instance
    code: CodeTarget = field(default_factory=CodeTarget)  # -w/-m/-f; else the project's own

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str],
        cwd: Path,
        code: CodeTarget | None = None,
        new_project: bool = False,
    ) -> Settings:
        """`code`: locations named on the command line (then any folder is a project, as it is
        for `new_project`, i.e. `lineage init`)."""
        target = code or CodeTarget()
        project = Path(environ[PROJECT_ENV]) if environ.get(PROJECT_ENV) else None
        fallback = bool(target) or new_project
        project_dir = (project or find_project_root(cwd, fallback=fallback)).resolve()
        state = Path(environ.get(STATE_ENV) or project_dir / ".lineage").resolve()
        mlflow_uri = environ.get(MLFLOW_ENV) or f"sqlite:///{state / 'mlflow.db'}"
        home = environ.get(DAGSTER_HOME_ENV)
        return cls(
            project_dir,
            state,
            mlflow_uri,
            environ.get(MLFLOW_UI_ENV) or None,
            _lock_timeout(environ.get(LOCK_TIMEOUT_ENV)),
            environ.get(STORE_URL_ENV) or None,
            Path(home).expanduser().resolve() if home else None,
            target,
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
        """The Dagster instance read and written: $DAGSTER_HOME, else the state folder's own."""
        return self.dagster_home_override or self.state_dir / "dagster"

    @property
    def owns_dagster_home(self) -> bool:
        """Whether the instance is the state folder's own (created on demand) or the user's."""
        return self.dagster_home == self.state_dir / "dagster"

    def describe_instance(self) -> str:
        """One line for the CLI: which instance it reads, and why that one."""
        if self.dagster_home_override is not None:
            return f"Dagster instance {self.dagster_home} (from DAGSTER_HOME)"
        return (f"Dagster instance {self.dagster_home} (the state folder's own; set "
                "DAGSTER_HOME to read yours)")

    @property
    def keys_dir(self) -> Path:
        return self.state_dir / "keys"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.state_dir / "mlartifacts"

    @property
    def spool_dir(self) -> Path:
        return self.state_dir / "spool"
