"""The valuation asset of a model, built from what a project already has: `valuation_asset`.

    model_valuation = valuation_asset("model", data="cohort", contributor_column="source",
                                      features=["age", "bmi"], label="y", validation="holdout")
    defs = with_lineage(dg.Definitions(assets=[..., model_valuation]))

The asset loads the training data and the validation rows through the project's IO managers
(as inputs), splits the training data into contributors' parts (by a column, or by the
partitions of a partitioned asset), runs a registered valuation method
(`lineage_platform.valuation.registry`: `knn`, the default, values rows and sums them per
contributor, so splitting into several identities earns nothing; `exact`, `permutation`, `tmc`
and `banzhaf` value contributors as players and train `make_model()` per coalition, scored by
`score`: "accuracy" for a classifier, the default, "r2" for a regressor, or a callable), and reports
the values as a signed `valuation` record's metadata. It depends on the model asset, so its
record names the model record it values, which settlement requires.

Settlement pays a model's data part on the valuation asset settlement.toml registers for it
(`[models.<model>] valuation = "<asset>"`), by default `<model>_valuation`: the name this
factory gives. `lineage value MODEL` finds the asset through its definition metadata
(`lineage/values_model`), so another name works there; settlement still needs the policy line.
"""


from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dagster as dg
import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import Field

from lineage_platform.dagster.checks import EFFICIENCY
from lineage_platform.dagster.metadata import people_first, valuation_metadata
from lineage_platform.dagster.translator import KIND, VALUES_MODEL, LineageTranslator
from lineage_platform.errors import ConfigError, LineageError
from lineage_platform.valuation.choose import (
    efficiency_target,
    score_details,
    value_contributors,
)
from lineage_platform.valuation.registry import get_method, known_names
from lineage_platform.valuation.result import ValuationResult
from lineage_platform.valuation.utility import Classifier, Score, ScoreFn, as_score

__all__ = [
    "ValuationConfig",
    "find_valuation",
    "valuation_asset",
    "valuation_asset_key",
    "valuation_report",
]

Parts = Mapping[str, tuple[npt.NDArray[Any], npt.NDArray[Any]]]


class ValuationConfig(dg.Config):  # type: ignore[misc]
    """Per-run choices (`lineage value MODEL --method exact` sets `method` and `seed`)."""

    method: str = Field(default="knn", description="a registered valuation method: "
                        + ", ".join(known_names()))
    seed: int = 7
    k: int = 5


def _key(raw: str | dg.AssetKey | dg.AssetsDefinition) -> dg.AssetKey:
    if isinstance(raw, dg.AssetsDefinition):
        return raw.key
    return raw if isinstance(raw, dg.AssetKey) else dg.AssetKey.from_user_string(raw)


def valuation_report(
    result: ValuationResult,
    model: str,
    gain: float | None,
    *,
    k: int,
    extra_details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The metadata of a valuation materialization: the signed `lineage/*` entries (values,
    shares and stderr per contributor; method, seed, model, efficiency as details) and what a
    person reads (a table of values, the efficiency figures), people's entries first.

        meta = valuation_report(result, "model", gain, k=5)
    """
    shares = result.shares()
    stderr = result.stderr_dict()
    rows = dict(zip(result.players, result.counts, strict=True))
    contributors: list[dict[str, Any]] = [
        {"id": p, "rows": rows[p], "value": v, "weight": shares[p],
         "stderr": stderr[p] if np.isfinite(stderr[p]) else None}
        for p, v in result.as_dict().items()
    ]
    table = dg.MetadataValue.table(
        records=[
            dg.TableRecord(
                {"contributor": c["id"], "value": round(c["value"], 6),
                 "share": round(c["weight"], 4), "stderr": round(stderr[c["id"]], 6),
                 "rows_credited": c["rows"]}
            )
            for c in sorted(contributors, key=lambda c: -c["value"])
        ],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn("contributor", "string"),
                dg.TableColumn("value", "float"),
                dg.TableColumn("share", "float"),
                dg.TableColumn("stderr", "float"),
                dg.TableColumn("rows_credited", "int"),
            ]
        ),
    )
    stderr_sum = float(np.sqrt(sum(s * s for s in result.stderr if np.isfinite(s))))
    efficiency = {
        "method": result.method,
        "sum_of_values": float(sum(result.values)),
        "u_full_minus_u_empty": gain,
        # Exact methods must add up to rounding; sampled ones to within 3 standard errors.
        "tolerance": max(1e-9, 3 * stderr_sum),
    }
    # Signed, so settlement can hold an efficient method's values to their gain (issue 15).
    details = {**result.to_details(), "model": model, "efficiency": efficiency, "k": k,
               **(extra_details or {})}
    meta = valuation_metadata(result.digest(), contributors, details)
    meta["contributor values"] = table
    meta[EFFICIENCY] = dg.MetadataValue.json(efficiency)
    meta["method"] = result.method
    meta["duplicate rows discounted"] = sum(d.rows for d in result.discounted)
    return people_first(meta)


def _split(frame: pd.DataFrame, column: str) -> dict[str, pd.DataFrame]:
    """Parts by the column's values, in order of first appearance (the order duplicates are
    credited by: a row repeated across parts counts for the part that comes first)."""
    if column not in frame.columns:
        raise ConfigError(f"valuation: the training data has no contributor column {column!r}")
    ids = frame[column].astype(str)
    return {str(c): frame[ids == c] for c in pd.unique(ids)}


def valuation_asset(
    model: str | dg.AssetKey | dg.AssetsDefinition,
    *,
    data: str | dg.AssetKey | dg.AssetsDefinition,
    features: Sequence[str],
    label: str,
    validation: str | dg.AssetKey | dg.AssetsDefinition | Callable[[], pd.DataFrame],
    contributor_column: str | None = None,
    make_model: Callable[[], Classifier] | None = None,
    method: str = "knn",
    seed: int = 7,
    k: int = 5,
    name: str | None = None,
    group_name: str | None = None,
    scale: Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]] | None = None,
    score: str | ScoreFn | Score = "accuracy",
) -> dg.AssetsDefinition:
    """The asset that values each contributor's data to `model` (see the module docstring).

        valuation_asset(model, data=cohort, contributor_column="source", features=FEATURES,
                        label="y", validation=holdout, make_model=lambda: Ridge())

    `data`: one table with a `contributor_column`, or (no column) a partitioned asset whose
    partition keys are the contributors, loaded as {partition: table}. `validation`: an asset
    or a function returning the validation table. `features` and `label` name columns; `scale`
    maps the feature matrix before valuation (KNN compares raw distances). `make_model` is
    required by every method but `knn`; `method`, `seed` and `k` are the defaults of the
    asset's run config. `score` is how each coalition's model is scored on the validation
    set: "accuracy" (classifiers), "r2" (regressors; u(∅) = 0, the R² of always predicting
    the validation mean) or a callable `score(y_true, y_pred)`; it is signed in the record's
    details (`score`), and `knn` (classification only) refuses any other score. `name`
    defaults to `<model>_valuation`, the name settlement looks for.
    """
    model_key = _key(model)
    model_name = model_key.to_user_string()
    data_key = _key(data)
    try:
        default = get_method(method)
    except LineageError as exc:
        raise ConfigError(str(exc)) from exc
    if default.needs_model and make_model is None:
        raise ConfigError(f"valuation of {model_name}: method {default.name!r} trains a model "
                          "per coalition: pass make_model")
    try:
        scoring = as_score(score)
        if default.classification_only and scoring.name != "accuracy":
            raise ConfigError(f"valuation of {model_name}: method {default.name!r} values "
                              f"classification only, not score {scoring.name!r}: pick a "
                              "model-based method (exact, permutation) for a regressor")
    except LineageError as exc:
        raise ConfigError(str(exc)) from exc
    ins: dict[str, dg.AssetIn] = {"training": dg.AssetIn(key=data_key)}
    load_validation: Callable[[], pd.DataFrame] | None = None
    if callable(validation) and not isinstance(validation, dg.AssetsDefinition):
        load_validation = validation
    else:
        ins["validation"] = dg.AssetIn(key=_key(validation))
    columns = list(features)

    def xy(frame: pd.DataFrame) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        x = frame[columns].to_numpy(dtype=np.float64)
        return (scale(x) if scale is not None else x), frame[label].to_numpy()

    default_method = default.aliases[0] if default.aliases else default.name
    default_seed, default_k = seed, k

    class _Config(ValuationConfig):  # type: ignore[misc]
        """Per-run choices (`lineage value MODEL --method exact` sets `method` and `seed`)."""

        method: str = Field(default=default_method, description="a registered valuation "
                            "method: " + ", ".join(known_names()))
        seed: int = default_seed
        k: int = default_k

    def run(config: _Config, training: Any, held_out: Any) -> dg.MaterializeResult:
        try:
            chosen = get_method(config.method)
        except LineageError as exc:
            raise dg.Failure(str(exc)) from exc
        if contributor_column is not None:
            frames = _split(pd.DataFrame(training), contributor_column)
        elif isinstance(training, Mapping):
            frames = {str(p): pd.DataFrame(training[p]) for p in sorted(training)}
        else:
            raise dg.Failure(f"valuation of {model_name}: {data_key.to_user_string()} is one "
                             "table: name its contributor_column")
        parts = {c: xy(f) for c, f in frames.items()}
        x_val, y_val = xy(pd.DataFrame(held_out))
        try:
            result = value_contributors(parts, x_val, y_val, chosen.name, seed=config.seed,
                                        k=config.k, order=list(parts), make_model=make_model,
                                        score=scoring)
            gain = efficiency_target(parts, x_val, y_val, result, k=config.k,
                                     make_model=make_model, score=scoring)
            signed_score = score_details(scoring, y_val, chosen.name)
        except LineageError as exc:
            raise dg.Failure(f"valuation of {model_name}: {exc}") from exc
        meta = valuation_report(result, model_name, gain, k=config.k,
                                extra_details={"score": signed_score})
        return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(result.digest()))

    decorate = dg.asset(
        name=name or f"{'__'.join(model_key.path)}_valuation",
        ins=ins,
        deps=[model_key],
        group_name=group_name,
        kinds={"shapley"},
        metadata={KIND: "valuation", VALUES_MODEL: model_name},
        description=f"What each contributor's data is worth to {model_name} (the values "
        "settlement pays its data part on).",
    )
    if load_validation is not None:
        loader = load_validation

        @decorate
        def _valuation(config: _Config, training: Any) -> dg.MaterializeResult:
            return run(config, training, loader())

        return _valuation

    @decorate
    def _valuation_with_input(
        config: _Config, training: Any, validation: Any
    ) -> dg.MaterializeResult:
        return run(config, training, validation)

    return _valuation_with_input


def valuation_asset_key(
    model: str,
    locations: Sequence[dg.Definitions],
    translator: LineageTranslator | None = None,
) -> dg.AssetKey | None:
    """The valuation asset that declares it values `model` (definition metadata
    `lineage/values_model`, which `valuation_asset` sets), in any of the code locations;
    None when none does.

        key = valuation_asset_key("digits_classifier", [defs])
    """
    from lineage_platform.dagster.sync import translator_of

    for defs in locations:
        chosen = translator or translator_of(defs)
        graph = defs.resolve_asset_graph()
        for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
            node = graph.get(key)
            if not node.is_materializable:
                continue
            spec = node.to_asset_spec()
            if chosen.values_model(spec) == model:
                return key
    return None


def find_valuation(
    model: str,
    locations: Sequence[dg.Definitions],
    logged_asset: str | None = None,
    registered_asset: str | None = None,
) -> tuple[dg.Definitions, dg.AssetKey]:
    """The code location and key of `model`'s valuation asset, for `lineage value --method`:
    the asset that declares it values `model` (`valuation_asset_key`), else the asset of the
    model's newest signed valuation record (`logged_asset`), else the one settlement.toml
    registers (`registered_asset`, by default `<model>_valuation`). ConfigError naming what
    was looked for when no location defines any of them.

        defs, key = find_valuation("outcome_model", [defs], logged_asset=None)
    """
    declared = valuation_asset_key(model, locations)
    candidates = [k for k in (declared,) if k is not None] + [
        dg.AssetKey.from_user_string(name)
        for name in (logged_asset, registered_asset or f"{model}_valuation")
        if name
    ]
    for key in candidates:
        for defs in locations:
            graph = defs.resolve_asset_graph()
            if graph.has(key) and graph.get(key).is_materializable:
                return defs, key
    tried = ", ".join(dict.fromkeys(k.to_user_string() for k in candidates))
    raise ConfigError(
        f"no valuation asset of {model} in the code locations: none declares "
        f"lineage/values_model={model} (valuation_asset sets it) and none defines {tried}"
    )
