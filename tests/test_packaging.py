"""Packaging (issue 14): the wheel carries only `lineage_platform` (the example pipeline stays in
the project folder), the base install names none of the optional libraries, the platform and its
Dagster layer import none of them, and a missing extra is one line naming what to install.
"""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lineage_platform.errors import LineageError, MissingExtraError
from lineage_platform.extras import require

REPO = Path(__file__).resolve().parent.parent
OPTIONAL = ("mlflow", "dvc", "matplotlib", "openlineage", "psycopg", "dagster_webserver",
            "sklearn")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel pip builds from a copy of the sources (the work tree stays untouched)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    skip = shutil.ignore_patterns("__pycache__")
    for name in ("lineage_platform", "assets"):
        shutil.copytree(REPO / name, src / name, ignore=skip)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
         "-q", "-w", str(root / "out"), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (built,) = (root / "out").glob("lineage_platform-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_has_no_top_level_assets_package(wheel: zipfile.ZipFile) -> None:
    tops = {name.split("/")[0] for name in wheel.namelist()}
    assert "assets" not in tops
    assert "lineage_platform" in tops
    assert "lineage_platform/dagster/workspace.py" in wheel.namelist()


def test_the_base_dependencies_name_no_optional_library(wheel: zipfile.ZipFile) -> None:
    (meta_name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    meta = email.message_from_bytes(wheel.read(meta_name))
    requires = meta.get_all("Requires-Dist") or []
    base = [r for r in requires if "extra ==" not in r]
    names = {r.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip()
             .lower() for r in base}
    assert "dagster" in names and "duckdb" in names
    for library in ("mlflow", "dvc", "matplotlib", "openlineage-python", "dagster-webserver",
                    "psycopg", "scikit-learn"):
        assert library not in names, base
    extras = set(meta.get_all("Provides-Extra") or [])
    assert {"dvc", "mlflow", "openlineage", "report", "ui", "postgres", "attribution",
            "all"} <= extras


def test_the_platform_imports_no_optional_library() -> None:
    """What `import lineage_platform.dagster` and the CLI's startup load: none of the extras
    (a base install would fail on the first one)."""
    probe = (
        "import sys, lineage_platform, lineage_platform.dagster, lineage_platform.cli, "
        "lineage_platform.demo, lineage_platform.integrations.mlflow, "
        "lineage_platform.integrations.dvc\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {OPTIONAL!r}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, cwd=REPO / "tests")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_a_missing_extra_is_one_line_naming_it() -> None:
    with pytest.raises(MissingExtraError) as caught:
        require("lineage_no_such_library.sub", extra="mlflow")
    assert isinstance(caught.value, LineageError)
    assert str(caught.value) == (
        "MLflow is not installed (no module lineage_no_such_library): "
        "pip install 'lineage-platform[mlflow]'"
    )
    assert require("json", extra="report").dumps([1]) == "[1]"
