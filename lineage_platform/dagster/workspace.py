"""Load every code location of the project's Dagster workspace and open the user's instance.

    locations = load_locations(settings)        # every location of workspace.yaml, -m, -f
    with open_instance(settings) as instance:   # $DAGSTER_HOME, else <state folder>/dagster
        materialize_all(locations[0].defs, instance)

The platform never imports the example pipeline by name; like `dagster dev`, it reads
workspace.yaml (or pyproject.toml's `[tool.dagster]`/`[tool.dg]`, or what `-w`/`-m`/`-f` name),
so a user's own code locations work the same way. A location that cannot be loaded is an error
naming it (`CodeLocationError`), never a silently smaller sync.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import dagster as dg
import yaml

from lineage_platform.config import CodeTarget, Settings, dagster_block
from lineage_platform.errors import CodeLocationError, ConfigError, LineageError

__all__ = [
    "CodeLocation",
    "LoadedLocation",
    "Materialized",
    "code_locations",
    "load_definitions",
    "load_location",
    "load_locations",
    "load_recomputers",
    "materialize_all",
    "materialize_asset",
    "open_instance",
    "prepare_dagster_home",
    "run_checks",
    "unread_asset_keys",
]

DAGSTER_YAML = """\
# Written by lineage_platform: the local instance the demo, `lineage sync` and `make ui` share.
telemetry:
  enabled: false
"""


@dataclass(frozen=True, slots=True)
class CodeLocation:
    """One code location: a module or a Python file, where to import it from, which attribute.

    Example: CodeLocation("jobs", module_name="jobs.definitions", working_directory=Path("."))
    """

    name: str
    module_name: str | None = None
    python_file: Path | None = None
    working_directory: Path | None = None
    attribute: str | None = None
    unloadable: str | None = None  # why it cannot be loaded in this process (a gRPC server)

    def describe(self) -> str:
        what = (
            f"module {self.module_name}" if self.module_name
            else f"file {self.python_file}" if self.python_file
            else "no module or file"
        )
        return f"{self.name!r} ({what})"


@dataclass(frozen=True, slots=True)
class LoadedLocation:
    """A code location and the `Definitions` its module holds.

    Example: {loaded.location.name: loaded.defs for loaded in load_locations(settings)}
    """

    location: CodeLocation
    defs: dg.Definitions
    module: ModuleType


def _text(value: object, what: str, source: str) -> str:
    if not isinstance(value, str) or not value:
        raise CodeLocationError(f"{source}: {what} must be a non-empty string")
    return value


def _path(base: Path, value: object | None, what: str, source: str) -> Path | None:
    return None if value is None else (base / _text(value, what, source)).resolve()


def _entry(entry: object, base: Path, source: str) -> CodeLocation:
    """One `load_from` item of a workspace file, with Dagster's meaning for each form."""
    if not isinstance(entry, dict) or len(entry) != 1:
        raise CodeLocationError(f"{source}: each load_from item names one location, got {entry!r}")
    (form, spec), = entry.items()
    if form in ("python_module", "python_package"):
        key = "module_name" if form == "python_module" else "package_name"
        if isinstance(spec, str):
            return CodeLocation(spec, module_name=spec, working_directory=base)
        if not isinstance(spec, dict):
            raise CodeLocationError(f"{source}: {form} must be a name or a mapping")
        name = _text(spec.get(key), f"{form}.{key}", source)
        return CodeLocation(
            str(spec.get("location_name") or name),
            module_name=name,
            working_directory=_path(base, spec.get("working_directory"), "working_directory",
                                    source) or base,
            attribute=spec.get("attribute"),
        )
    if form == "python_file":
        if isinstance(spec, str):
            path = (base / spec).resolve()
            return CodeLocation(path.stem, python_file=path, working_directory=base)
        if not isinstance(spec, dict):
            raise CodeLocationError(f"{source}: python_file must be a path or a mapping")
        path = (base / _text(spec.get("relative_path"), "python_file.relative_path", source))
        return CodeLocation(
            str(spec.get("location_name") or path.stem),
            python_file=path.resolve(),
            working_directory=_path(base, spec.get("working_directory"), "working_directory",
                                    source) or base,
            attribute=spec.get("attribute"),
        )
    if form == "grpc_server" and isinstance(spec, dict):
        name = str(spec.get("location_name") or f"{spec.get('host', 'localhost')}:"
                   f"{spec.get('port') or spec.get('socket')}")
        return CodeLocation(
            name,
            unloadable="a gRPC server location is not loaded in this process; "
            "name its code with -m or -f",
        )
    raise CodeLocationError(f"{source}: unknown code location form {form!r}")


def _workspace_locations(path: Path) -> list[CodeLocation]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CodeLocationError(f"{path}: cannot read ({exc})") from exc
    entries = doc.get("load_from") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise CodeLocationError(f"{path}: expected a non-empty load_from list")
    return [_entry(e, path.parent.resolve(), str(path)) for e in entries]


def _pyproject_locations(project_dir: Path) -> list[CodeLocation]:
    """What `dagster dev` loads from pyproject.toml: `[tool.dagster]` module_name or modules,
    else `[tool.dg.project]`'s `<root_module>.definitions`."""
    path = project_dir / "pyproject.toml"
    block = dagster_block(path) or {}
    source = f"{path} [tool.{block.get('tool', 'dagster')}]"
    name = block.get("code_location_name")
    if block.get("tool") == "dagster":
        if "module_name" in block:
            module = _text(block["module_name"], "module_name", source)
            return [CodeLocation(str(name or module), module, working_directory=project_dir)]
        modules = block.get("modules")
        if isinstance(modules, list) and modules:
            found = [_text(m.get("name") if isinstance(m, dict) else None, "modules[].name",
                           source) for m in modules]
            return [CodeLocation(m, m, working_directory=project_dir) for m in found]
        raise CodeLocationError(f"{source}: expected module_name or modules")
    project = block.get("project")
    if not isinstance(project, dict) or "root_module" not in project:
        raise CodeLocationError(f"{source}: expected project.root_module")
    root = _text(project["root_module"], "project.root_module", source)
    if project.get("autoload_defs"):
        return [CodeLocation(
            str(project.get("code_location_name") or root),
            unloadable=f"autoload_defs is not read by lineage; pass -m {root}.definitions",
        )]
    module = str(project.get("code_location_target_module") or f"{root}.definitions")
    src = project_dir / "src"
    workdir = src if (src / root.split(".")[0]).is_dir() else project_dir
    return [CodeLocation(str(project.get("code_location_name") or root), module,
                         working_directory=workdir)]


def code_locations(project_dir: Path, code: CodeTarget | None = None) -> list[CodeLocation]:
    """Every code location named by `code` (-w, -m, -f), else by the project's workspace.yaml,
    else by its pyproject.toml: what `dagster dev` would load, without importing anything.

    Example: [loc.describe() for loc in code_locations(Path("."))]
    """
    if code:
        workdir = (code.working_directory or project_dir).resolve()
        found = [loc for ws in code.workspaces for loc in _workspace_locations(ws)]
        found += [CodeLocation(m, m, working_directory=workdir) for m in code.modules]
        found += [CodeLocation(f.stem, python_file=f.resolve(), working_directory=workdir)
                  for f in code.files]
        return found
    workspace = project_dir / "workspace.yaml"
    if workspace.is_file():
        return _workspace_locations(workspace)
    if dagster_block(project_dir / "pyproject.toml") is not None:
        return _pyproject_locations(project_dir)
    raise CodeLocationError(
        f"no code location: {project_dir} has no workspace.yaml or pyproject.toml [tool.dagster]; "
        "name it with -w, -m or -f"
    )


def _import_file(path: Path) -> ModuleType:
    """A Python file as a module named after it (as Dagster names it), unless that name is
    already another file's: then a name unique to this path."""
    name = path.stem
    known = sys.modules.get(name)
    if known is not None:
        if getattr(known, "__file__", None) == str(path):
            return known
        name = f"{name}_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
        if name in sys.modules:
            return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _is_lazy(value: object) -> bool:
    """A `@dg.definitions` function (Dagster's LazyDefinitions), called to get its Definitions."""
    return type(value).__name__ == "LazyDefinitions" and callable(value)


def _defs_of(module: ModuleType, attribute: str | None) -> dg.Definitions:
    """`attribute`, else `defs`, else the module's only Definitions (Dagster's own rule)."""
    if attribute:
        if not hasattr(module, attribute):
            raise ConfigError(f"it has no attribute {attribute!r}")
        found: Any = getattr(module, attribute)
    elif isinstance(getattr(module, "defs", None), dg.Definitions) or _is_lazy(
        getattr(module, "defs", None)
    ):
        found = module.defs
    else:
        candidates = [v for v in vars(module).values()
                      if isinstance(v, dg.Definitions) or _is_lazy(v)]
        if len(candidates) != 1:
            raise ConfigError(
                "no `defs = dg.Definitions(...)`" if not candidates
                else f"{len(candidates)} Definitions objects and none named defs"
            )
        found = candidates[0]
    if _is_lazy(found):
        found = found()
    if not isinstance(found, dg.Definitions):
        raise ConfigError(f"{attribute or 'defs'} is a {type(found).__name__}, not Definitions")
    return found


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if not isinstance(exc, LineageError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text[:300] + ("…" if len(text) > 300 else "")


def load_location(location: CodeLocation) -> LoadedLocation:
    """Import one location and find its Definitions; `CodeLocationError` says which and why.

    Example: load_location(CodeLocation("jobs", module_name="jobs.definitions")).defs
    """
    if location.unloadable:
        raise CodeLocationError(
            f"code location {location.describe()} cannot be loaded: {location.unloadable}"
        )
    workdir = location.working_directory
    if workdir is not None and str(workdir) not in sys.path:
        # Kept on sys.path, as in a code server: the location's code imports its own modules.
        sys.path.insert(0, str(workdir))
    try:
        if location.python_file is not None:
            if not location.python_file.is_file():
                raise ConfigError(f"no such file {location.python_file}")
            module = _import_file(location.python_file)
        else:
            module = importlib.import_module(str(location.module_name))
        defs = _defs_of(module, location.attribute)
    except Exception as exc:
        raise CodeLocationError(
            f"code location {location.describe()} cannot be loaded: {_one_line(exc)}"
        ) from exc
    return LoadedLocation(location, defs, module)


def load_locations(
    settings: Settings | Path, code: CodeTarget | None = None
) -> list[LoadedLocation]:
    """Every code location, loaded; when any cannot be, one `CodeLocationError` naming each that
    failed and why (a sync must not quietly read fewer assets than the workspace has).

    Example: [loaded.location.name for loaded in load_locations(settings)]
    """
    project_dir = settings.project_dir if isinstance(settings, Settings) else settings
    target = code or (settings.code if isinstance(settings, Settings) else None)
    loaded: list[LoadedLocation] = []
    failed: list[str] = []
    for location in code_locations(project_dir, target):
        try:
            loaded.append(load_location(location))
        except CodeLocationError as exc:
            failed.append(str(exc))
    if failed:
        raise CodeLocationError("; ".join(failed))
    return loaded


def load_definitions(project_dir: Path, code: CodeTarget | None = None) -> dg.Definitions:
    """The project's Definitions: its one location's, or every location's merged.

    Example: defs = load_definitions(Path("."))
    """
    loaded = load_locations(project_dir, code)
    if len(loaded) == 1:
        return loaded[0].defs
    try:
        return dg.Definitions.merge(*(entry.defs for entry in loaded))
    except Exception as exc:
        names = ", ".join(entry.location.name for entry in loaded)
        raise CodeLocationError(
            f"code locations {names} cannot be merged into one Definitions: {_one_line(exc)}"
        ) from exc


def prepare_dagster_home(settings: Settings, create: bool = False) -> Path:
    """The instance's folder: the state folder's own is created (with a dagster.yaml that
    turns telemetry off); the user's $DAGSTER_HOME must exist unless `create` (lineage init)."""
    home = settings.dagster_home
    if not settings.owns_dagster_home:
        if create:
            home.mkdir(parents=True, exist_ok=True)
        if not home.is_dir():
            raise ConfigError(f"DAGSTER_HOME={home} is not a folder (run `lineage init` to "
                              "create it, or unset DAGSTER_HOME)")
        return home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML, encoding="utf-8")
    return home


@contextmanager
def open_instance(settings: Settings) -> Iterator[dg.DagsterInstance]:
    """The instance `settings.dagster_home` names, with DAGSTER_HOME set to it while open (and
    restored after: a later project in the same process must not inherit it)."""
    home = prepare_dagster_home(settings)
    before = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            yield instance
    finally:
        if before is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = before


def unread_asset_keys(
    instance: dg.DagsterInstance, locations: Sequence[dg.Definitions]
) -> list[str]:
    """Assets the instance has events for that no loaded location defines: what a sync of
    these locations cannot sign (an old asset, or a location missing from the workspace).

    Example: unread_asset_keys(instance, [loaded.defs for loaded in load_locations(settings)])
    """
    known = {k for defs in locations for k in defs.resolve_asset_graph().get_all_asset_keys()}
    return sorted(k.to_user_string() for k in instance.get_asset_keys() if k not in known)


# Step-by-step DEBUG lines belong in the Dagster UI's run view, not in the demo's terminal.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass(frozen=True, slots=True)
class Materialized:
    asset: str
    partition: str | None
    run_id: str
    metadata: dict[str, Any]


def materialize_all(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    on_step: Callable[[str], None] | None = None,
) -> list[Materialized]:
    """Materialize every asset, partitions one run each, in dependency order; except the
    `settlement` asset, whose partitions are settled epochs (`lineage settle` records them),
    not something to build once per day since its first epoch."""
    from lineage_platform.dagster.settlement import SETTLEMENT_KEY

    assets = [a for a in (defs.assets or []) if isinstance(a, dg.AssetsDefinition)]
    resources = dict(defs.resources or {})
    graph = defs.resolve_asset_graph()
    order = [k for k in graph.toposorted_asset_keys if k != SETTLEMENT_KEY]
    done: list[Materialized] = []
    for key in order:
        node = graph.get(key)
        partitions = (
            node.partitions_def.get_partition_keys(dynamic_partitions_store=instance)
            if node.partitions_def
            else [None]
        )
        for partition in partitions:
            label = key.to_user_string() + (f"[{partition}]" if partition else "")
            if on_step:
                on_step(label)
            result = dg.materialize(
                assets,
                instance=instance,
                resources=resources,
                partition_key=partition,
                selection=[key],
                tags={"lineage/source": "lineage-demo"},
                run_config=QUIET,
            )
            for event in result.get_asset_materialization_events():
                mat = event.step_materialization_data.materialization
                if mat is None:
                    continue
                meta = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
                done.append(Materialized(label, partition, result.run_id, meta))
    return done


def materialize_asset(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    key: dg.AssetKey,
    config: dict[str, Any] | None = None,
) -> Materialized:
    """One asset, with per-run `dg.Config` values (e.g. `lineage value --method exact`)."""
    assets = [a for a in (defs.assets or []) if isinstance(a, dg.AssetsDefinition)]
    op_name = next((a.node_def.name for a in assets if key in a.keys), None)
    if op_name is None:
        raise ConfigError(f"no asset {key.to_user_string()} in the code location")
    run_config: dict[str, Any] = dict(QUIET)
    if config:
        run_config["ops"] = {op_name: {"config": config}}
    result = dg.materialize(
        assets, instance=instance, resources=dict(defs.resources or {}), selection=[key],
        run_config=run_config, tags={"lineage/source": "lineage-value"},
    )
    event = result.get_asset_materialization_events()[0]
    mat = event.step_materialization_data.materialization
    meta = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    return Materialized(key.to_user_string(), None, result.run_id, meta)


def run_checks(defs: dg.Definitions, instance: dg.DagsterInstance) -> dict[str, bool]:
    """Evaluate every asset check once (after a sync, so `attribution_recorded` can pass)."""
    assets = [a for a in (defs.assets or []) if isinstance(a, dg.AssetsDefinition)]
    checks = list(defs.asset_checks or [])
    if not checks:
        return {}
    result = dg.materialize(
        [*assets, *checks], instance=instance, resources=dict(defs.resources or {}),
        selection=dg.AssetSelection.all_asset_checks(), run_config=QUIET,
        tags={"lineage/source": "lineage-demo"}, raise_on_error=False,
    )
    return {
        f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed
        for e in result.get_asset_check_evaluations()
    }


def load_recomputers(project_dir: Path, code: CodeTarget | None = None) -> dict[str, Any]:
    """Every code location's `valuation_recomputers` ({valuation asset: recompute function},
    see `lineage_platform.recompute`), merged; {} when none registers any.

    Example: recompute_valuations(store, project_dir, load_recomputers(project_dir))
    """
    merged: dict[str, Any] = {}
    for loaded in load_locations(project_dir, code):
        found = getattr(loaded.module, "valuation_recomputers", None)
        if isinstance(found, dict):
            merged.update(found)
    return merged
