"""The CLI follows the user's Dagster (issue 14): $DAGSTER_HOME's instance, every code location
of the workspace (module and file forms, -w/-m/-f), one line naming a location that cannot be
loaded, and `lineage init` in a project that has no workspace.yaml.

A two-location project of plain Dagster assets (their content hashes reported with the
platform's metadata helpers) is materialized into an instance outside the state folder, as a
user's `dagster dev` would; every `lineage` command runs as a subprocess, as a user runs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from lineage_platform.config import CodeTarget, Settings
from lineage_platform.dagster.workspace import (
    code_locations,
    load_locations,
    load_recomputers,
    open_instance,
)
from lineage_platform.errors import CodeLocationError
from lineage_platform.stores import open_store

# The bytes each asset writes: the test knows every content hash without asking the platform.
CONTENT = {
    "ward_north": b"patient,age\n1,54\n2,61\n",
    "ward_south": b"patient,age\n3,47\n4,72\n5,39\n",
    "risk_scores": b"patient,score\n1,0.2\n2,0.7\n",
}

HOSPITALS = '''\
import hashlib
import dagster as dg
from lineage_platform.dagster import dataset_metadata

CONTENT = {content!r}


def _table(name: str, contributor: str) -> dg.MaterializeResult:
    data = CONTENT[name]
    return dg.MaterializeResult(metadata=dataset_metadata(
        hashlib.sha256(data).hexdigest(), rows=data.count(b"\\n") - 1,
        contributors=[{{"id": contributor, "rows": data.count(b"\\n") - 1}}],
    ))


@dg.asset
def ward_north() -> dg.MaterializeResult:
    """The north ward's admissions."""
    return _table("ward_north", "north")


@dg.asset
def ward_south() -> dg.MaterializeResult:
    """The south ward's admissions."""
    return _table("ward_south", "south")


defs = dg.Definitions(assets=[ward_north, ward_south])
'''

SCORING = '''\
import hashlib
import dagster as dg
from lineage_platform.dagster import dataset_metadata

DATA = {data!r}


@dg.asset(deps=[dg.AssetKey("ward_north")])
def risk_scores() -> dg.MaterializeResult:
    """Scores from a second code location."""
    return dg.MaterializeResult(metadata=dataset_metadata(
        hashlib.sha256(DATA).hexdigest(), rows=2, contributors=[{{"id": "north", "rows": 2}}],
    ))


scoring = dg.Definitions(assets=[risk_scores])
'''

WORKSPACE = """\
load_from:
  - python_module:
      module_name: dh_hospitals
      working_directory: .
      location_name: hospitals
  - python_file: scoring/dh_scoring.py
"""


def cli(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`lineage ARGS` in the project folder, with no inherited LINEAGE_/DAGSTER_ setting."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LINEAGE_", "DAGSTER_"))}
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-m", "lineage_platform.cli", *args],
        cwd=project, env=clean, capture_output=True, text=True, timeout=180,
    )


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The command failed with one `error:` line and no traceback (warnings may precede it)."""
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    return errors[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(project, user's DAGSTER_HOME): both locations materialized once into that instance."""
    root = tmp_path_factory.mktemp("two-locations")
    project, home = root / "project", root / "dagster_home"
    (project / "scoring").mkdir(parents=True)
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    (project / "workspace.yaml").write_text(WORKSPACE, encoding="utf-8")
    (project / "dh_hospitals.py").write_text(HOSPITALS.format(content=CONTENT), encoding="utf-8")
    (project / "scoring" / "dh_scoring.py").write_text(
        SCORING.format(data=CONTENT["risk_scores"]), encoding="utf-8"
    )
    settings = Settings(project, project / ".lineage", "sqlite:///unused",
                        dagster_home_override=home)
    loaded = load_locations(settings)
    with open_instance(settings) as instance:
        for entry in loaded:
            assets = [a for a in entry.defs.assets or [] if isinstance(a, dg.AssetsDefinition)]
            assert dg.materialize(assets, instance=instance).success
    return project, home


def test_workspace_forms_are_read_as_dagster_reads_them(tmp_path: Path) -> None:
    (tmp_path / "workspace.yaml").write_text(
        "load_from:\n"
        "  - python_module: plain_module\n"
        "  - python_package:\n      package_name: pkg\n      working_directory: src\n"
        "  - python_file:\n      relative_path: jobs/defs.py\n      attribute: other\n"
        "  - grpc_server:\n      host: localhost\n      port: 4266\n      location_name: remote\n",
        encoding="utf-8",
    )
    found = code_locations(tmp_path)
    assert [(c.name, c.module_name, c.working_directory) for c in found[:2]] == [
        ("plain_module", "plain_module", tmp_path),
        ("pkg", "pkg", tmp_path / "src"),
    ]
    assert found[2].python_file == tmp_path / "jobs" / "defs.py"
    assert found[2].attribute == "other" and found[2].name == "defs"
    assert found[3].name == "remote" and found[3].unloadable
    # -m/-f replace the project's workspace, like Dagster's own CLI flags.
    named = code_locations(tmp_path, CodeTarget(modules=("a.b",), working_directory=tmp_path))
    assert [(c.name, c.module_name) for c in named] == [("a.b", "a.b")]


def test_pyproject_tool_dagster_is_a_project_without_workspace_yaml(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "mine"\n\n[tool.dagster]\nmodule_name = "mine.definitions"\n'
        'code_location_name = "mine"\n',
        encoding="utf-8",
    )
    (tmp_path / "sub").mkdir()
    settings = Settings.from_env({}, cwd=tmp_path / "sub")
    assert settings.project_dir == tmp_path
    assert [(c.name, c.module_name) for c in code_locations(tmp_path)] == [
        ("mine", "mine.definitions")
    ]


def test_sync_reads_the_users_instance_and_both_locations(world: tuple[Path, Path]) -> None:
    project, home = world
    # Without DAGSTER_HOME the state folder's own (empty) instance is read, and said so.
    own = cli(project, "status", "--json")
    assert own.returncode == 0, own.stderr
    data = json.loads(own.stdout)
    assert data["sensor_backlog"] == 0
    assert data["dagster_home"] == str(project / ".lineage" / "dagster")

    status = cli(project, "status", "--json", DAGSTER_HOME=str(home))
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["sensor_backlog"] == 3
    assert data["dagster_home"] == str(home)
    assert "from DAGSTER_HOME" in status.stdout
    assert "'hospitals'" in status.stdout and "'dh_scoring'" in status.stdout

    done = cli(project, "sync", "--json", DAGSTER_HOME=str(home))
    assert done.returncode == 0, done.stderr
    synced = json.loads(done.stdout)
    assert (synced["read"], synced["appended"]) == (3, 3)
    assert f"Dagster instance {home} (from DAGSTER_HOME)" in done.stderr

    store = open_store(project / ".lineage" / "lineage.duckdb")
    entries = store.entries(0, store.tree_size())
    signed = dict(zip(entries.column("asset").to_pylist(), entries.column("sha256").to_pylist(),
                      strict=True))
    assert signed == {name: hashlib.sha256(data).hexdigest() for name, data in CONTENT.items()}

    text = cli(project, "sync", DAGSTER_HOME=str(home))
    assert text.returncode == 0, text.stderr
    assert "0 records appended, 0 already recorded, 0 materializations read" in text.stdout
    assert "code locations: 'hospitals' (module dh_hospitals), 'dh_scoring' (file" in text.stderr


def test_a_location_that_cannot_load_is_named_and_nothing_is_signed(
    world: tuple[Path, Path], tmp_path: Path
) -> None:
    project, home = world
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        f"load_from:\n  - python_module:\n      module_name: dh_hospitals\n"
        f"      working_directory: {project}\n"
        "  - python_file: billing.py\n",
        encoding="utf-8",
    )
    (tmp_path / "billing.py").write_text("import dh_no_such_module\n", encoding="utf-8")
    state = tmp_path / "state"
    for command in ("sync", "status"):
        done = cli(project, command, "-w", str(broken), DAGSTER_HOME=str(home),
                   LINEAGE_HOME=str(state))
        line = error_line(done)
        assert done.returncode == 2
        assert "code location 'billing'" in line
        assert "ModuleNotFoundError: No module named 'dh_no_such_module'" in line
    assert not (state / "lineage.duckdb").exists() or open_store(
        state / "lineage.duckdb").tree_size() == 0

    # In-process the same refusal is one CodeLocationError naming every failing location.
    with pytest.raises(CodeLocationError, match=r"'billing'.*dh_no_such_module"):
        load_locations(project, CodeTarget(workspaces=(broken,)))


def test_module_and_file_flags_and_what_they_leave_unread(
    world: tuple[Path, Path], tmp_path: Path
) -> None:
    project, home = world
    state = str(tmp_path / "state")
    only = cli(project, "status", "--json", "-m", "dh_hospitals", DAGSTER_HOME=str(home),
               LINEAGE_HOME=state)
    assert only.returncode == 0, only.stderr
    data = json.loads(only.stdout)
    assert data["sensor_backlog"] == 2
    assert any("1 asset(s)" in n and "risk_scores" in n for n in data["notes"]), data["notes"]

    both = cli(project, "sync", "--json", "-m", "dh_hospitals", "-f", "scoring/dh_scoring.py",
               DAGSTER_HOME=str(home), LINEAGE_HOME=state)
    assert both.returncode == 0, both.stderr
    assert json.loads(both.stdout)["appended"] == 3


def test_a_missing_dagster_home_is_one_line(world: tuple[Path, Path], tmp_path: Path) -> None:
    project, _ = world
    nowhere = tmp_path / "no-such-home"
    line = error_line(cli(project, "status", DAGSTER_HOME=str(nowhere)))
    assert f"DAGSTER_HOME={nowhere} is not a folder" in line


def test_init_in_an_existing_project_without_workspace_yaml(tmp_path: Path) -> None:
    project = tmp_path / "mine"
    (project / "mine").mkdir(parents=True)
    (project / "mine" / "__init__.py").write_text("", encoding="utf-8")
    (project / "mine" / "definitions.py").write_text(
        "import dagster as dg\n\n\n@dg.asset\ndef table() -> None:\n    ...\n\n\n"
        "defs = dg.Definitions(assets=[table])\n",
        encoding="utf-8",
    )
    (project / "pyproject.toml").write_text(
        '[project]\nname = "mine"\n\n[tool.dagster]\nmodule_name = "mine.definitions"\n',
        encoding="utf-8",
    )
    home = tmp_path / "home"
    done = cli(project, "init", DAGSTER_HOME=str(home))
    assert done.returncode == 0, done.stderr
    assert home.is_dir()
    assert f"Dagster instance {home} (from DAGSTER_HOME)" in done.stdout
    assert "code location 'mine.definitions' (module mine.definitions)" in done.stdout
    status = cli(project, "status", "--json", DAGSTER_HOME=str(home))
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["sensor_backlog"] == 0

    # A folder with no Dagster code at all: init still makes the state folder and says what
    # is missing; a command that needs the code then names the flags.
    bare = tmp_path / "bare"
    bare.mkdir()
    done = cli(bare, "init")
    assert done.returncode == 0, done.stderr
    assert (bare / ".lineage" / "keys").is_dir()
    assert "name it with -w, -m or -f" in done.stderr
    assert "-w, -m or -f" in error_line(cli(bare, "sync"))


def test_recomputers_come_from_every_location(tmp_path: Path) -> None:
    """`lineage verify --recompute` finds a valuation's recompute function in any location."""
    for name, asset in (("dh_first_loc", "first_valuation"), ("dh_second_loc", "second_valuation")):
        (tmp_path / f"{name}.py").write_text(
            "import dagster as dg\n\n\n"
            f"@dg.asset\ndef {asset}() -> None:\n    ...\n\n\n"
            f"defs = dg.Definitions(assets=[{asset}])\n"
            f"valuation_recomputers = {{'{asset}': print}}\n",
            encoding="utf-8",
        )
    (tmp_path / "workspace.yaml").write_text(
        "load_from:\n  - python_file: dh_first_loc.py\n  - python_file: dh_second_loc.py\n",
        encoding="utf-8",
    )
    assert load_recomputers(tmp_path) == {"first_valuation": print, "second_valuation": print}
