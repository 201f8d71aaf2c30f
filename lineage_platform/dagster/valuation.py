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

Each run keeps a content-addressed copy of the tables it valued (Arrow IPC files named by
their `table_sha256`, in `valuation-inputs/` of the project's state folder as the CLI finds it,
when `lineage init` has made it) and signs their digests in the
record's details (`inputs`), and the factory registers a recompute function for the asset
(`lineage_platform.recompute.register`): `lineage verify --recompute` re-runs a deterministic
method from those copies, after checking that each copy hashes to its signed digest and that
the digest is the one the record's input (the training table, an asset validation set) signs.

Settlement pays a model's data part on the valuation asset settlement.toml registers for it
(`[models.<model>] valuation = "<asset>"`), by default `<model>_valuation`: the name this
factory gives. `lineage value MODEL` finds the asset through its definition metadata
(`lineage/values_model`), so another name works there; settlement still needs the policy line.
"""


import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
from pydantic import Field

from lineage_platform.config import Settings
from lineage_platform.dagster.checks import EFFICIENCY
from lineage_platform.dagster.metadata import people_first, valuation_metadata
from lineage_platform.dagster.translator import (
    KIND,
    VALUES_MODEL,
    LineageTranslator,
    as_arrow,
    table_sha256,
)
from lineage_platform.errors import ConfigError, LineageError
from lineage_platform.recompute import register
from lineage_platform.records import AttributionRecord
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


KEPT = "valuation-inputs"  # in the state folder: the tables valuations read, by content


def kept_inputs_dir() -> Path | None:
    """Where runs keep copies of the tables they valued: in the state folder as the CLI finds
    it (LINEAGE_HOME, LINEAGE_PROJECT, the working directory's project); None when there is
    none yet (`lineage init` makes it), so a run never litters a folder that is not a project.

        kept_inputs_dir()   # e.g. Path("my_project/.lineage/valuation-inputs")
    """
    try:
        state = Settings.from_env(os.environ, cwd=Path.cwd()).state_dir
    except (LineageError, OSError):
        return None
    return state / KEPT if state.is_dir() else None


def _keep(frame: Any, folder: Path | None) -> str:
    """`table_sha256` of the table; a copy of it in `folder` (once per content)."""
    table = as_arrow(frame)
    if table is None:
        raise dg.Failure(f"valuation reads tables, got {type(frame).__name__}")
    sha = table_sha256(table)
    if folder is not None:
        path = folder / f"{sha}.arrow"
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.part")
            with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
                w.write_table(table)
            partial.replace(path)
    return sha


def _kept(folder: Path | None, sha: str, what: str) -> pd.DataFrame:
    """The kept copy of `sha` as a DataFrame, if it still hashes to `sha`."""
    if folder is None:
        raise ConfigError(f"no project state folder to find the copy of {what} in")
    path = folder / f"{sha}.arrow"
    if not path.is_file():
        raise ConfigError(f"no copy of {what} (sha256 {sha[:12]}…) in {folder}")
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_file(source).read_all()
    if table_sha256(table) != sha:
        raise ConfigError(f"the copy of {what} at {path} no longer hashes to its signed sha256 "
                          f"{sha[:12]}…: it was changed")
    frame: pd.DataFrame = table.to_pandas()
    return frame


@dataclass(frozen=True, slots=True)
class _Recompute:
    """`verify --recompute` for one valuation asset: its method again, on the kept copies of
    the tables its record signs (`details.inputs`), each checked against the record."""

    value: Callable[[str, int, int, Any, Any], tuple[ValuationResult, float | None, Any]]
    score: str

    def from_record(self, record: AttributionRecord) -> ValuationResult:
        details = record.details_obj() or {}
        inputs = details.get("inputs")
        if not isinstance(inputs, dict):
            raise ConfigError("the record signs no copies of its inputs (made before "
                              "valuation_asset kept them)")
        signed = details.get("score")
        scored = signed.get("name") if isinstance(signed, dict) else "accuracy"
        if scored != self.score:
            raise ConfigError(f"the record is scored by {scored!r}, the asset now by "
                              f"{self.score!r}")
        folder = kept_inputs_dir()
        pointers = {(i.asset, i.sha256) for i in record.inputs}

        def load(entry: Mapping[str, Any], sha: str, what: str) -> pd.DataFrame:
            asset = entry.get("asset")
            if asset is not None and (asset, sha) not in pointers:
                raise ConfigError(f"{what} (sha256 {sha[:12]}…) is not among the record's "
                                  "signed inputs")
            return _kept(folder, sha, what)

        train, held = inputs.get("training") or {}, inputs.get("validation") or {}
        training: Any
        if isinstance(train.get("partitions"), dict):
            training = {p: load(train, str(sha), f"{train.get('asset')}[{p}]")
                        for p, sha in train["partitions"].items()}
        else:
            training = load(train, str(train.get("sha256")), str(train.get("asset")))
        held_out = load(held, str(held.get("sha256")), str(held.get("asset") or "validation"))
        seed = details.get("seed")
        result, _, _ = self.value(str(details.get("method")), seed if isinstance(seed, int)
                                  else 7, int(details.get("k") or 5), training, held_out)
        return result


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
        # Row-major whatever the frame's blocks: a model's float sums depend on the layout,
        # and a recomputation from an Arrow copy must give the signed values bit for bit.
        x = np.ascontiguousarray(frame[columns].to_numpy(dtype=np.float64))
        return (scale(x) if scale is not None else x), frame[label].to_numpy()

    default_method = default.aliases[0] if default.aliases else default.name
    default_seed, default_k = seed, k

    class _Config(ValuationConfig):  # type: ignore[misc]
        """Per-run choices (`lineage value MODEL --method exact` sets `method` and `seed`)."""

        method: str = Field(default=default_method, description="a registered valuation "
                            "method: " + ", ".join(known_names()))
        seed: int = default_seed
        k: int = default_k

    def value(
        method: str, seed: int, k: int, training: Any, held_out: Any
    ) -> tuple[ValuationResult, float | None, dict[str, Any]]:
        """The method on the tables: (result, u(N) − u(∅) or None, the signed score)."""
        chosen = get_method(method)
        if contributor_column is not None:
            frames = _split(pd.DataFrame(training), contributor_column)
        elif isinstance(training, Mapping):
            frames = {str(p): pd.DataFrame(training[p]) for p in sorted(training)}
        else:
            raise dg.Failure(f"valuation of {model_name}: {data_key.to_user_string()} is one "
                             "table: name its contributor_column")
        parts = {c: xy(f) for c, f in frames.items()}
        x_val, y_val = xy(pd.DataFrame(held_out))
        result = value_contributors(parts, x_val, y_val, chosen.name, seed=seed, k=k,
                                    order=list(parts), make_model=make_model, score=scoring)
        gain = efficiency_target(parts, x_val, y_val, result, k=k, make_model=make_model,
                                 score=scoring)
        return result, gain, score_details(scoring, y_val, chosen.name)

    validation_key = ins["validation"].key if "validation" in ins else None
    validation_name = validation_key.to_user_string() if validation_key is not None else None

    def run(config: _Config, training: Any, held_out: Any) -> dg.MaterializeResult:
        try:
            result, gain, signed_score = value(config.method, config.seed, config.k, training,
                                               held_out)
        except LineageError as exc:
            raise dg.Failure(f"valuation of {model_name}: {exc}") from exc
        folder = kept_inputs_dir()
        train: dict[str, Any] = {"asset": data_key.to_user_string()}
        if contributor_column is None and isinstance(training, Mapping):
            train["partitions"] = {str(p): _keep(training[p], folder) for p in sorted(training)}
        else:
            train["sha256"] = _keep(training, folder)
        inputs = {"training": train, "validation": {"asset": validation_name,
                                                    "sha256": _keep(held_out, folder)},
                  "copies": f"<state folder>/{KEPT}/<sha256>.arrow"}
        meta = valuation_report(result, model_name, gain, k=config.k,
                                extra_details={"score": signed_score, "inputs": inputs})
        return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(result.digest()))

    asset_name = name or f"{'__'.join(model_key.path)}_valuation"
    register(asset_name, _Recompute(value, scoring.name))
    decorate = dg.asset(
        name=asset_name,
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
