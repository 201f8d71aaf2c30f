"""One call adds the platform to an existing Dagster project: `with_lineage(defs)`.

    defs = dg.Definitions(assets=[clinic_a, clinic_b, cohort, model, report])
    defs = with_lineage(defs, translator=MyTranslator())   # in the code location's module

What it adds to a copy of `defs` (the user's own resources, sensors, jobs, schedules and
checks are kept as they are; a platform resource or sensor the user already defined under the
same name wins, so `resources={"lineage_store": LineageStoreResource(url=...)}` configures it):

- an IO manager wrapper around each IO manager an attributed asset writes through (the default
  `io_manager` is Dagster's filesystem one when the project has none): the user's IO manager
  stores the value, then the translator hashes it **in the run** and adds `lineage/*` metadata
  to the materialization (content digest, rows, contributors from a column);
- `lineage_sensor` (signing each materialization into the log), and the translator stored as
  the `lineage_translator` resource, where `lineage sync` (`dagster.sync.source_for`) finds it
  so the CLI signs exactly what the sensor would;
- per attributed asset, the `attribution_recorded` and `log_verified` checks; per valuation
  asset (`valuation_asset`), `shapley_efficiency` and `valuation_accepted`; on each model (else
  each attributed asset nothing attributed reads) `sensor_caught_up`, red while the sensor lags
  (LINEAGE_LAG_MAX_EVENTS, LINEAGE_LAG_MAX_MINUTES; the sensor's tick reports it);
- the daily-partitioned `settlement` asset (one partition per epoch) with its
  `settlement_asset_job`, the `settlement_asset_schedule`, the `fees_settled` check on it, and
  the `usage_spool_sensor` (the legacy `settlement_job`/`settlement_schedule` stay importable
  but are not added: the asset's partitions are what the UI shows);
- the resources `lineage`, `lineage_store` and `lineage_signer` (from LINEAGE_* settings with
  `project_dir` as the project).

Attribution rules (see `translator.py`): an asset the translator leaves out, or that reports no
content digest, is not signed (the sync names it "not attributed"). An input that points at
such an upstream is left out of its reader's record: a record names only artifacts the log
holds, so what the reader earns flows to its own contributors and its attributed inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from lineage_platform.dagster.checks import (
    log_verified_checks,
    shapley_efficiency_check,
    valuation_accepted_check,
)
from lineage_platform.dagster.resources import platform_resources
from lineage_platform.dagster.sensor import attribution_checks, build_lineage_sensor, lag_limits
from lineage_platform.dagster.settlement import (
    SETTLEMENT_KEY,
    settlement_asset_job,
    settlement_asset_schedule,
    usage_spool_sensor,
)
from lineage_platform.dagster.settlement import settlement as settlement_asset
from lineage_platform.dagster.sync import TRANSLATOR_RESOURCE
from lineage_platform.dagster.translator import LineageTranslator
from lineage_platform.dagster.views import sensor_lag_check, unsettled_fees_check
from lineage_platform.errors import ConfigError

__all__ = ["LineageIOManager", "attributed_assets", "with_lineage"]

DEFAULT_IO_MANAGER = "io_manager"
INNER_SUFFIX = "__before_lineage"  # where the user's own IO manager moves to


class LineageIOManager(dg.IOManager):  # type: ignore[misc]
    """The user's IO manager, plus lineage: after `inner` stored an attributed asset's value,
    `translator.output_metadata` describes it (content digest, rows, contributors) and the
    description is added to the materialization. Loading is the inner IO manager's alone.

        LineageIOManager(inner, translator, {spec.key: spec for spec in specs})
    """

    def __init__(
        self,
        inner: dg.IOManager,
        translator: LineageTranslator,
        specs: Mapping[dg.AssetKey, dg.AssetSpec],
    ) -> None:
        self.inner = inner
        self.translator = translator
        self.specs = dict(specs)

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        self.inner.handle_output(context, obj)
        if not context.has_asset_key:
            return
        spec = self.specs.get(context.asset_key)
        if spec is None:
            return
        partition = (
            context.asset_partition_key
            if context.has_asset_partitions and len(context.asset_partition_keys) == 1
            else None
        )
        meta = self.translator.output_metadata(spec, obj, partition)
        if meta:
            context.add_output_metadata(meta)

    def load_input(self, context: dg.InputContext) -> Any:
        return self.inner.load_input(context)


def _wrapping(
    inner_key: str, translator: LineageTranslator, specs: Mapping[dg.AssetKey, dg.AssetSpec]
) -> dg.IOManagerDefinition:
    @dg.io_manager(
        required_resource_keys={inner_key},
        description=f"{inner_key.removesuffix(INNER_SUFFIX)} with lineage: hashes attributed "
        "outputs in the run (lineage_platform.with_lineage)",
    )
    def _io_manager(init_context: dg.InitResourceContext) -> LineageIOManager:
        inner = getattr(init_context.resources, inner_key)
        return LineageIOManager(inner, translator, specs)

    return _io_manager


def attributed_assets(
    defs: dg.Definitions, translator: LineageTranslator | None = None
) -> dict[dg.AssetKey, dg.AssetSpec]:
    """The materializable assets of `defs` that `translator` attributes, with their specs.

        keys = list(attributed_assets(defs, MyTranslator()))
    """
    chosen = translator or LineageTranslator()
    graph = defs.resolve_asset_graph()
    out: dict[dg.AssetKey, dg.AssetSpec] = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        if node.is_materializable and key != SETTLEMENT_KEY:  # its record is the statement
            spec = node.to_asset_spec()
            if chosen.attributed(spec):
                out[key] = spec
    return out


def _lag_checked(
    graph: Any, translator: LineageTranslator, attributed: Mapping[dg.AssetKey, dg.AssetSpec]
) -> list[dg.AssetKey]:
    """Where `sensor_caught_up` goes: every model (the page people look at), else every
    attributed asset no attributed asset reads (a project's end products)."""
    models = [k for k, spec in attributed.items() if translator.kind(spec) == "model"]
    if models:
        return models
    return [k for k in attributed if not set(graph.get(k).child_keys) & set(attributed)]


def with_lineage(
    defs: dg.Definitions,
    *,
    translator: LineageTranslator | None = None,
    project_dir: Path | None = None,
    settlement: bool = True,
) -> dg.Definitions:
    """`defs` with the lineage platform added (see the module docstring for what is added).

        defs = with_lineage(dg.Definitions(assets=[...], resources={...}))

    `translator` says per asset whether it is attributed, its kind, digest and contributors
    (default: `LineageTranslator()`); `project_dir` is where settlement.toml and the `.lineage`
    state folder live (default: LINEAGE_PROJECT, else the working directory);
    `settlement=False` leaves out the settlement asset, its job, schedule and check, and the
    usage spool sensor.
    """
    chosen = translator or LineageTranslator()
    resources: dict[str, Any] = dict(defs.resources or {})
    for name, resource in platform_resources(project_dir).items():
        resources.setdefault(name, resource)
    resources.setdefault(TRANSLATOR_RESOURCE, chosen)
    # The user's assets may need the platform's resources (`lineage`) to resolve at all.
    assets_only = dg.Definitions(
        assets=defs.assets, asset_checks=defs.asset_checks, resources=resources
    )
    graph = assets_only.resolve_asset_graph()
    attributed = attributed_assets(assets_only, chosen)
    existing_checks = {ck for k in graph.get_all_asset_keys() for ck in graph.get(k).check_keys}

    def new(checks: list[dg.AssetChecksDefinition]) -> list[dg.AssetChecksDefinition]:
        return [c for c in checks if not set(c.check_keys) & existing_checks]

    keys = list(attributed)
    checks = [*new(attribution_checks(keys)), *new(log_verified_checks(keys))]
    for key, spec in attributed.items():
        if chosen.kind(spec) != "valuation":
            continue
        model = chosen.values_model(spec)
        if model is None:
            raise ConfigError(f"valuation asset {key.to_user_string()} does not say which model "
                              "it values (metadata lineage/values_model; valuation_asset sets it)")
        checks += new([shapley_efficiency_check(key), valuation_accepted_check(key, model)])
    max_events, max_minutes = lag_limits()
    checks += new([sensor_lag_check(key, keys, max_events, max_minutes)
                   for key in _lag_checked(graph, chosen, attributed)])

    assets = list(defs.assets or [])
    if settlement and SETTLEMENT_KEY not in graph.get_all_asset_keys():
        assets.append(settlement_asset)
        checks.append(unsettled_fees_check(SETTLEMENT_KEY))
    elif settlement:
        checks += new([unsettled_fees_check(SETTLEMENT_KEY)])

    io_keys = {graph.get(k).io_manager_key for k in attributed}
    for io_key in sorted(io_keys):
        if io_key + INNER_SUFFIX in resources:
            continue  # already wrapped (with_lineage applied twice)
        inner = resources.get(io_key)
        if inner is None and io_key != DEFAULT_IO_MANAGER:
            continue  # Dagster itself reports the missing resource, as it would without us
        resources[io_key + INNER_SUFFIX] = inner if inner is not None else dg.FilesystemIOManager()
        resources[io_key] = _wrapping(io_key + INNER_SUFFIX, chosen, attributed)

    sensors = list(defs.sensors or [])
    names = {s.name for s in sensors}
    sensors += [s for s in [build_lineage_sensor(chosen, max_events, max_minutes)]
                if s.name not in names]
    jobs = list(defs.jobs or [])
    schedules = list(defs.schedules or [])
    if settlement:
        if "usage_spool_sensor" not in names:
            sensors.append(usage_spool_sensor)
        if not any(getattr(j, "name", None) == settlement_asset_job.name for j in jobs):
            jobs.append(settlement_asset_job)
        if not any(getattr(s, "name", None) == settlement_asset_schedule.name
                   for s in schedules):
            schedules.append(settlement_asset_schedule)
    return dg.Definitions(
        assets=assets,
        asset_checks=[*(defs.asset_checks or []), *checks],
        sensors=sensors,
        jobs=jobs,
        schedules=schedules,
        resources=resources,
        executor=defs.executor,
        loggers=defs.loggers,
        metadata=defs.metadata,
        component_tree=defs.component_tree,
    )
