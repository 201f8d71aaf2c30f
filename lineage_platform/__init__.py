"""lineage_platform: sign what a Dagster project makes, value its contributors, settle their pay.

    from lineage_platform import with_lineage, valuation_asset
    defs = with_lineage(dg.Definitions(assets=[..., valuation_asset("model", data=..., ...)]))

The names below are imported on first use, so `import lineage_platform` (the CLI, the pure core)
loads no Dagster; each lives in `lineage_platform.dagster` with its docstring.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lineage_platform.dagster import (
        ContributorsFrom,
        LineageTranslator,
        attribution_checks,
        dataset_metadata,
        lineage_sensor,
        log_verified_checks,
        model_metadata,
        operations_check,
        people_first,
        platform_resources,
        shapley_efficiency_check,
        valuation_accepted_check,
        valuation_metadata,
        with_lineage,
    )
    from lineage_platform.dagster.valuation import valuation_asset, valuation_report
    from lineage_platform.valuation.choose import value_contributors

_WHERE = {
    "ContributorsFrom": "lineage_platform.dagster",
    "LineageTranslator": "lineage_platform.dagster",
    "attribution_checks": "lineage_platform.dagster",
    "dataset_metadata": "lineage_platform.dagster",
    "lineage_sensor": "lineage_platform.dagster",
    "log_verified_checks": "lineage_platform.dagster",
    "model_metadata": "lineage_platform.dagster",
    "operations_check": "lineage_platform.dagster",
    "people_first": "lineage_platform.dagster",
    "platform_resources": "lineage_platform.dagster",
    "shapley_efficiency_check": "lineage_platform.dagster",
    "valuation_accepted_check": "lineage_platform.dagster",
    "valuation_metadata": "lineage_platform.dagster",
    "with_lineage": "lineage_platform.dagster",
    "valuation_asset": "lineage_platform.dagster.valuation",
    "valuation_report": "lineage_platform.dagster.valuation",
    "value_contributors": "lineage_platform.valuation.choose",
}

__all__ = [
    "ContributorsFrom",
    "LineageTranslator",
    "attribution_checks",
    "dataset_metadata",
    "lineage_sensor",
    "log_verified_checks",
    "model_metadata",
    "operations_check",
    "people_first",
    "platform_resources",
    "shapley_efficiency_check",
    "valuation_accepted_check",
    "valuation_asset",
    "valuation_metadata",
    "valuation_report",
    "value_contributors",
    "with_lineage",
]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'lineage_platform' has no attribute {name!r}")
    return getattr(import_module(where), name)
