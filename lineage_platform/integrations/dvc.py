"""DVC: reproduce the data stages and read the md5 of every output from dvc.lock.

    reproduce(project_dir)                 # dvc init (if needed) + dvc repro
    lock = read_lock(project_dir)          # {"data/parts/alice.parquet": "3f2a…"}
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from lineage_platform.errors import IntegrationError
from lineage_platform.extras import require

_MD5 = re.compile(r"^[0-9a-f]{32}$")
# Nothing may reach the network at run time: DVC would otherwise send usage analytics.
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@contextmanager
def _cwd_and_path(folder: Path) -> Iterator[None]:
    """DVC resolves paths against the cwd and runs stage commands through the shell's PATH.

    Putting this interpreter's folder first makes `python -m assets.prepare` in dvc.yaml run with
    the project's own environment even when the venv is not activated.
    """
    old_cwd, old_path = Path.cwd(), os.environ.get("PATH", "")
    os.chdir(folder)
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), old_path])
    try:
        yield
    finally:
        os.chdir(old_cwd)
        os.environ["PATH"] = old_path


def ensure_repo(project_dir: Path) -> None:
    """`dvc init`, without git when the project is not a git checkout."""
    if (project_dir / ".dvc").is_dir():
        return
    Repo = require("dvc.repo", extra="dvc").Repo

    try:
        Repo.init(str(project_dir), no_scm=not (project_dir / ".git").exists())
    except Exception as exc:  # DVC raises many unrelated types; report one line.
        raise IntegrationError(f"dvc init failed in {project_dir}: {exc}") from exc


def reproduce(project_dir: Path) -> list[str]:
    """Run `dvc repro`; returns the names of the stages that actually ran."""
    DvcException = require("dvc.exceptions", extra="dvc").DvcException
    Repo = require("dvc.repo", extra="dvc").Repo
    ensure_repo(project_dir)

    dvc_logger = logging.getLogger("dvc")
    level = dvc_logger.level
    dvc_logger.setLevel(logging.WARNING)  # stage-by-stage chatter is DVC's to print, not ours
    with _cwd_and_path(project_dir):
        try:
            with Repo(str(project_dir)) as repo:
                stages = repo.reproduce()
        except DvcException as exc:
            raise IntegrationError(f"dvc repro failed: {exc}") from exc
        finally:
            dvc_logger.setLevel(level)
    read_lock(project_dir)  # a corrupt lock must fail here, not later inside an asset
    return [str(stage.addressing) for stage in stages]


def read_lock(project_dir: Path) -> dict[str, str]:
    """Map each stage output path (relative, POSIX) to its md5, validating dvc.lock's shape."""
    path = project_dir / "dvc.lock"
    try:
        doc: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise IntegrationError(f"{path} not found: run `dvc repro` (or `lineage demo`)") from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise IntegrationError(f"{path} is corrupt: {str(exc).splitlines()[0]}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("stages"), dict):
        raise IntegrationError(f"{path} is corrupt: no 'stages' mapping")
    out: dict[str, str] = {}
    for stage_name, stage in doc["stages"].items():
        outs = stage.get("outs", []) if isinstance(stage, dict) else None
        if not isinstance(outs, list):
            raise IntegrationError(f"{path} is corrupt: stage {stage_name!r} has no 'outs' list")
        for i, entry in enumerate(outs):
            if not isinstance(entry, dict):
                raise IntegrationError(f"{path} is corrupt: {stage_name}.outs[{i}] not a mapping")
            md5, rel = entry.get("md5"), entry.get("path")
            if not isinstance(rel, str) or not isinstance(md5, str) or not _MD5.match(md5):
                raise IntegrationError(f"{path} is corrupt: {stage_name}.outs[{i}] bad path or md5")
            out[rel] = md5
    return out


def output_md5(project_dir: Path, rel_path: str) -> str:
    lock = read_lock(project_dir)
    try:
        return lock[rel_path]
    except KeyError as exc:
        raise IntegrationError(f"dvc.lock has no output {rel_path!r}: run `dvc repro`") from exc


def cache_url(project_dir: Path, rel_path: str) -> str:
    """Where DVC's own API says the tracked file lives in the cache (its name is the md5)."""
    api = require("dvc.api", extra="dvc")
    with _cwd_and_path(project_dir):
        return str(api.get_url(rel_path, repo=str(project_dir)))
