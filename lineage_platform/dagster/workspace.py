"""Load the code location named in workspace.yaml and open the instance under the state folder.

    defs = load_definitions(project_dir)
    with open_instance(settings) as instance: materialize_all(defs, instance)

The platform never imports the example pipeline by name; like `dagster dev`, it reads
workspace.yaml, so a user's own code location works the same way.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from lineage_platform.config import Settings
from lineage_platform.errors import ConfigError, LineageError

DAGSTER_YAML = """\
# Written by lineage_platform: the local instance the demo, `lineage sync` and `make ui` share.
telemetry:
  enabled: false
"""


def _module_entry(project_dir: Path) -> tuple[str, Path]:
    path = project_dir / "workspace.yaml"
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        entry = doc["load_from"][0]["python_module"]
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError) as exc:
        raise ConfigError(f"{path}: expected load_from[0].python_module ({exc})") from exc
    if isinstance(entry, str):
        return entry, project_dir
    workdir = project_dir / entry.get("working_directory", ".")
    return str(entry["module_name"]), workdir.resolve()


def load_definitions(project_dir: Path) -> dg.Definitions:
    module_name, workdir = _module_entry(project_dir)
    if str(workdir) not in sys.path:
        sys.path.insert(0, str(workdir))
    try:
        module = importlib.import_module(module_name)
    except LineageError:
        raise
    except Exception as exc:
        raise ConfigError(f"cannot load code location {module_name!r}: {exc}") from exc
    defs = getattr(module, "defs", None)
    if not isinstance(defs, dg.Definitions):
        raise ConfigError(f"{module_name} has no `defs = dg.Definitions(...)`")
    return defs


def prepare_dagster_home(settings: Settings) -> Path:
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML, encoding="utf-8")
    return home


@contextmanager
def open_instance(settings: Settings) -> Iterator[dg.DagsterInstance]:
    home = prepare_dagster_home(settings)
    os.environ["DAGSTER_HOME"] = str(home)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


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
    """Materialize every asset, partitions one run each, in dependency order."""
    assets = [a for a in (defs.assets or []) if isinstance(a, dg.AssetsDefinition)]
    resources = dict(defs.resources or {})
    graph = defs.resolve_asset_graph()
    order = graph.toposorted_asset_keys
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


def load_recomputers(project_dir: Path) -> dict[str, Any]:
    """The code location's `valuation_recomputers` ({valuation asset: recompute function},
    see `lineage_platform.recompute`), {} when it registers none."""
    load_definitions(project_dir)
    module_name, _ = _module_entry(project_dir)
    found = getattr(sys.modules[module_name], "valuation_recomputers", None)
    return dict(found) if isinstance(found, dict) else {}
