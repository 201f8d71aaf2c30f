"""Shared fixtures: a real DVC project in a temp folder, reproduced once per session."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lineage_platform.config import Settings
from lineage_platform.integrations import dvc
from tests.deploy_world import Postgres, postgres_server

REPO = Path(__file__).resolve().parent.parent
PROJECT_FILES = ("dvc.yaml", "params.yaml", "workspace.yaml")


def make_project(root: Path) -> Settings:
    """A copy of the example project (no git, so `dvc init --no-scm`) with its own state folder."""
    root.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "assets", root / "assets", ignore=shutil.ignore_patterns("__pycache__"))
    state = root / ".lineage"
    return Settings(root, state, f"sqlite:///{state / 'mlflow.db'}")


@pytest.fixture(autouse=True)
def _signal_handlers() -> Iterator[None]:
    """Dagster's in-process runs leave SIGTERM mapped to SIGINT's handler; each test starts and
    ends with the handlers it found, so a later test's child processes can still be stopped."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        if handler is not None:
            signal.signal(sig, handler)


@pytest.fixture(autouse=True)
def _verifier_state(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `lineage verify` remembers lives outside LINEAGE_HOME (in ~/.local/state), and the
    user's trusted keys and witness policy in ~/.config/lineage: each test gets its own, so the
    logs of different tests never look like one log that forked."""
    monkeypatch.setenv("LINEAGE_VERIFIER_STATE", str(tmp_path_factory.mktemp("verifier-state")))
    monkeypatch.setenv("LINEAGE_USER_CONFIG", str(tmp_path_factory.mktemp("user-config")))
    # Subprocess helpers drop LINEAGE_* variables; the XDG ones survive, so a CLI run by a test
    # never reads or writes the real user's ~/.config/lineage or ~/.local/state/lineage.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("xdg-state")))
    # The CLI reads $DAGSTER_HOME's instance when it is set: a test sets it for itself, never
    # inherits the developer's (or an earlier test's) instance.
    monkeypatch.delenv("DAGSTER_HOME", raising=False)


@pytest.fixture(scope="session")
def reproduced_project(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """dvc repro has run; tests that change files must copy it first (see `project_copy`)."""
    settings = make_project(tmp_path_factory.mktemp("project"))
    settings.state_dir.mkdir(parents=True)
    dvc.reproduce(settings.project_dir)
    return settings


@pytest.fixture
def project_copy(reproduced_project: Settings, tmp_path: Path) -> Callable[[], Settings]:
    def copy() -> Settings:
        root = tmp_path / "project"
        skip = shutil.ignore_patterns(".lineage")
        shutil.copytree(reproduced_project.project_dir, root, ignore=skip)
        state = root / ".lineage"
        state.mkdir()
        return Settings(root, state, f"sqlite:///{state / 'mlflow.db'}")

    return copy


def tree(root: Path, files: dict[str, str]) -> None:
    """Build a file tree from a dict, as DVC's own tests do."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL server on 127.0.0.1 (skipped, saying why, without the binaries)."""
    with postgres_server() as server:
        yield server
