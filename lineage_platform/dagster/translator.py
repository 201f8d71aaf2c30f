"""What an asset's attribution record says: the `LineageTranslator` a user subclasses per project.

    translator = LineageTranslator(contributor_column="source", leave_out=[report])  # common case
    class MyTranslator(LineageTranslator):
        def attributed(self, spec): return spec.group_name != "reports"
    defs = with_lineage(defs, translator=MyTranslator())

Two moments use it. **In the run**, the IO manager `with_lineage` wraps hands each attributed
output to `output_metadata`: a pandas DataFrame, a pyarrow Table or a Parquet file (a `Path`) is
hashed by content there (the sensor never sees data), and, when the asset asks for it, rows and
content hash per contributor are taken from a column. **At sync** (the sensor or `lineage sync`),
`digest`, `kind` and `contributors` read what the run reported (`lineage/*` metadata) and the
asset's definition (its `AssetSpec`) to build the record.

Per asset, the user picks in the asset's definition metadata (or by overriding the methods):

- `lineage/attributed`: `False` leaves the asset out (not signed; no checks added);
- `lineage/kind`: `dataset` | `model` | `valuation` (default: `model` when the asset's `kinds`
  name a model library such as scikitlearn or mlflow, else `dataset`);
- `lineage/contributors_from`: `"column:<name>"` (one contributor per distinct value of that
  column, with its rows and content hash), `"partitions"` (the partition key is the contributor)
  or `"owners"` (the asset's owners, equal weights). Nothing is assumed when it is absent,
  unless the translator was built with `contributor_column=`: then every table output without
  its own setting takes its contributors from that column.

Contributors from a column apply to table outputs only. A model (kind `model`) is signed as
usual (what it earns flows to its inputs' contributors); any other output that is not a table
(a dict, bytes, a file other than Parquet) is not signed, and its materialization says why in
`lineage/skipped`: it would be a dataset without the contributors its setting asks for.

An asset that reports no content digest (its output is not a table, a file or bytes, it returns
a `MaterializeResult` without `lineage/sha256`, or it is a dataset the default cannot hash) is
**not signed**: the sync skips it and names it ("N not attributed"). It is never signed under a
digest borrowed from Dagster's data version, which is not a content hash.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lineage_platform.dagster import metadata as M
from lineage_platform.errors import ConfigError
from lineage_platform.hashing import sha256_file
from lineage_platform.records import Contributor

__all__ = [
    "ATTRIBUTED",
    "CONTRIBUTORS_FROM",
    "KIND",
    "SKIPPED",
    "VALUES_MODEL",
    "ContributorsFrom",
    "LineageTranslator",
    "table_sha256",
]

#: Definition metadata keys (on `@dg.asset(metadata=...)`) the default translator reads.
ATTRIBUTED = "lineage/attributed"
KIND = "lineage/kind"
CONTRIBUTORS_FROM = "lineage/contributors_from"
VALUES_MODEL = "lineage/values_model"  # on a valuation asset: the model asset it values
#: Run metadata: why an attributed output was not described (so it is not signed).
SKIPPED = "lineage/skipped"

#: `kinds` (Dagster's kind tags) that make an asset a model by default.
MODEL_KINDS = frozenset(
    {"model", "scikitlearn", "sklearn", "mlflow", "pytorch", "tensorflow", "keras", "xgboost",
     "lightgbm", "catboost", "onnx", "huggingface"}
)
KINDS = ("dataset", "model", "valuation")
_HEX64 = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class ContributorsFrom:
    """Where an asset's contributors come from (one of three): a column of the table, the
    partition key, or the asset's owners.

        ContributorsFrom.parse("column:source")   # == ContributorsFrom("column", "source")
    """

    source: str
    column: str | None = None

    def __post_init__(self) -> None:
        if self.source not in ("column", "partitions", "owners"):
            raise ConfigError(f"contributors come from column:<name>, partitions or owners, "
                              f"not {self.source!r:.40}")
        if (self.source == "column") != bool(self.column):
            raise ConfigError("contributors from a column need its name: column:<name>")

    @classmethod
    def parse(cls, text: str) -> ContributorsFrom:
        """`"column:<name>"`, `"partitions"` or `"owners"` (asset metadata's spelling)."""
        source, _, column = str(text).partition(":")
        return cls(source.strip(), column.strip() or None)


def _digest(value: str | None) -> str | None:
    return value if value and len(value) == 64 and set(value) <= _HEX64 else None


def as_arrow(value: object) -> pa.Table | None:
    """A pandas DataFrame or pyarrow Table/RecordBatch as one Arrow table; None otherwise."""
    if isinstance(value, pa.Table):
        return value
    if isinstance(value, pa.RecordBatch):
        return pa.Table.from_batches([value])
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas ships with the platform
        return None
    if isinstance(value, pd.DataFrame):
        return pa.Table.from_pandas(value)
    return None


def table_sha256(table: object) -> str:
    """SHA-256 of a table's content: its columns (names, types, values) in row order, written
    as one Arrow IPC stream without schema metadata (pandas writes its version there), so the
    same rows give the same digest however they were chunked or which library made them. A
    pandas DataFrame is hashed as its Arrow conversion (`pa.Table.from_pandas`), which is what
    the IO manager `with_lineage` wraps signs for a DataFrame output.

        table_sha256(pa.table({"x": [1, 2]})) ; table_sha256(pd.DataFrame({"x": [1, 2]}))
    """
    arrow = as_arrow(table)
    if arrow is None:
        raise ConfigError(f"table_sha256 hashes a pandas DataFrame or an Arrow table or record "
                          f"batch, not {type(table).__name__}")
    plain = arrow.replace_schema_metadata(None)
    # `take` writes fresh, unsliced buffers: slices and chunking leave no trace in the bytes.
    plain = plain.take(pa.array(range(plain.num_rows), pa.int64())).combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, plain.schema) as writer:
        writer.write_table(plain)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def column_contributors(table: pa.Table, column: str) -> list[dict[str, Any]]:
    """One entry per distinct value of `column`, in order of first appearance: its rows and
    the content hash (`table_sha256`) of exactly those rows, in table order."""
    if column not in table.column_names:
        raise ConfigError(f"contributors come from column {column!r}, which the table does not "
                          f"have (columns: {', '.join(table.column_names[:12])})")
    ids = table.column(column).cast(pa.string())
    if ids.null_count:
        raise ConfigError(f"contributor column {column!r} has {ids.null_count} empty values")
    order = pc.sort_indices(pa.table({"id": ids, "pos": pa.array(range(len(ids)), pa.int64())}),
                            sort_keys=[("id", "ascending"), ("pos", "ascending")])
    sorted_ids = pc.take(ids, order).to_pylist()
    out: dict[str, dict[str, Any]] = {}
    first: dict[str, int] = {}
    start = 0
    for i in range(1, len(sorted_ids) + 1):
        if i == len(sorted_ids) or sorted_ids[i] != sorted_ids[start]:
            name = str(sorted_ids[start])
            rows = order.slice(start, i - start)
            first[name] = int(pc.min(rows).as_py())
            part = table.take(rows)
            out[name] = {"id": name, "rows": i - start, "sha256": table_sha256(part)}
            start = i
    return [out[n] for n in sorted(out, key=lambda n: first[n])]


class LineageTranslator:
    """How each asset becomes an attribution record; subclass it and override what differs.

        defs = with_lineage(defs, translator=LineageTranslator())   # the defaults, see module

    Every method gets the asset's `dg.AssetSpec` (key, metadata, owners, kinds, tags,
    partitions). The defaults read the definition metadata keys of this module's docstring.

    The common case needs no subclass: `contributor_column` credits every table output the
    rows of each distinct value of that column (an asset's own `lineage/contributors_from`
    wins; non-table outputs: see the module docstring), and `leave_out` names the assets not
    signed at all (asset keys, `AssetKey`s or asset definitions; or a predicate on the spec).

        LineageTranslator(contributor_column="source", leave_out=[progression_report])
    """

    _column: str | None = None
    _left_out: frozenset[dg.AssetKey] = frozenset()
    _leave_out_if: Callable[[dg.AssetSpec], bool] | None = None

    def __init__(
        self,
        *,
        contributor_column: str | None = None,
        leave_out: Iterable[str | dg.AssetKey | dg.AssetsDefinition]
        | Callable[[dg.AssetSpec], bool] = (),
    ) -> None:
        if contributor_column is not None:
            ContributorsFrom("column", contributor_column)  # an empty name fails here
            self._column = contributor_column
        if isinstance(leave_out, str | dg.AssetKey | dg.AssetsDefinition):
            leave_out = [leave_out]  # one asset, not the characters of its name
        if callable(leave_out):
            self._leave_out_if = leave_out
        else:
            keys: set[dg.AssetKey] = set()
            for item in leave_out:
                if isinstance(item, dg.AssetsDefinition):
                    keys |= set(item.keys)
                elif isinstance(item, dg.AssetKey):
                    keys.add(item)
                else:
                    keys.add(dg.AssetKey.from_user_string(str(item)))
            self._left_out = frozenset(keys)

    # --- what the asset is -------------------------------------------------------------------

    def attributed(self, spec: dg.AssetSpec) -> bool:
        """Whether the asset is signed into the log at all (default: unless metadata
        `lineage/attributed` is False or the constructor's `leave_out` names it)."""
        if spec.key in self._left_out or (
            self._leave_out_if is not None and self._leave_out_if(spec)
        ):
            return False
        raw = M.read_text(spec.metadata.get(ATTRIBUTED))
        return raw is None or raw.strip().lower() not in ("false", "0", "no")

    def kind(self, spec: dg.AssetSpec) -> str:
        """`dataset`, `model` or `valuation` (default: metadata `lineage/kind`; else `model`
        when the asset's kinds name a model library; else `dataset`)."""
        raw = M.read_text(spec.metadata.get(KIND))
        if raw is not None:
            if raw not in KINDS:
                raise ConfigError(f"{spec.key.to_user_string()}: lineage/kind must be one of "
                                  f"{', '.join(KINDS)}, not {raw!r:.40}")
            return raw
        return "model" if set(spec.kinds or ()) & MODEL_KINDS else "dataset"

    def contributors_from(self, spec: dg.AssetSpec) -> ContributorsFrom | None:
        """Where its contributors come from (default: metadata `lineage/contributors_from`,
        e.g. "column:source"; else the constructor's `contributor_column`; None: the record
        names no contributors of its own, and what it earns flows to its inputs)."""
        raw = M.read_text(spec.metadata.get(CONTRIBUTORS_FROM))
        if raw:
            return ContributorsFrom.parse(raw)
        return ContributorsFrom("column", self._column) if self._column else None

    def values_model(self, spec: dg.AssetSpec) -> str | None:
        """For a valuation asset: the model asset it values (metadata `lineage/values_model`,
        which `valuation_asset` sets)."""
        return M.read_text(spec.metadata.get(VALUES_MODEL))

    # --- in the run: the output itself -----------------------------------------------------

    def content_digest(self, spec: dg.AssetSpec, value: object) -> str | None:
        """SHA-256 of the output's content, or None when this translator cannot say.

        Defaults: a DataFrame or Arrow table by `table_sha256`; a `Path` to a file by its
        bytes; `bytes` as they are; a model (kind `model`) by its pickle, which is what
        Dagster's default IO manager stores. Anything else: None (the asset is not signed).
        """
        if isinstance(value, Path) and value.is_file():
            return sha256_file(value)
        if isinstance(value, bytes | bytearray | memoryview):
            return hashlib.sha256(bytes(value)).hexdigest()
        table = as_arrow(value)
        if table is not None:
            return table_sha256(table)
        if value is not None and self.kind(spec) == "model":
            try:
                return hashlib.sha256(pickle.dumps(value, protocol=5)).hexdigest()
            except (pickle.PicklingError, TypeError, AttributeError):
                return None  # not picklable: the translator cannot say, so it is not signed
        return None

    def output_metadata(
        self, spec: dg.AssetSpec, value: object, partition: str | None = None
    ) -> dict[str, Any]:
        """The `lineage/*` metadata a run adds to the materialization (the IO manager calls
        it after the user's IO manager stored the value); {} when there is nothing to say, or
        only `lineage/skipped` (why) for a non-table dataset whose contributors come from a
        column: it is not signed rather than signed without them."""
        how = self.contributors_from(spec)
        kind = self.kind(spec)
        table = as_arrow(value)
        if table is None and isinstance(value, Path) and value.suffix == ".parquet":
            table = pq.read_table(value)
        if how is not None and how.source == "column" and table is None and kind == "dataset":
            return {SKIPPED: dg.MetadataValue.text(
                f"not signed: contributors come from column {how.column!r}, which applies to "
                f"table outputs only, and this output is a {type(value).__name__} (return a "
                "DataFrame or Arrow table, or set lineage/contributors_from on this asset)"
            )}
        sha = self.content_digest(spec, value)
        if sha is None:
            return {}
        meta: dict[str, Any] = {M.KIND: kind, M.SHA256: sha}
        if table is not None:
            meta[M.ROWS] = dg.MetadataValue.int(table.num_rows)
        if how is not None and how.source == "column" and table is not None:
            assert how.column is not None
            meta[M.CONTRIBUTORS] = M.contributors_json(column_contributors(table, how.column))
        return meta

    # --- at sync: the materialization event ------------------------------------------------

    def digest(self, spec: dg.AssetSpec, mat: dg.AssetMaterialization) -> str | None:
        """The content digest the run reported (`lineage/sha256`), or None: not signed."""
        return _digest(M.read_text(mat.metadata.get(M.SHA256)))

    def record_kind(self, spec: dg.AssetSpec, mat: dg.AssetMaterialization) -> str:
        """The kind the run reported (`lineage/kind`), else `kind(spec)`."""
        reported = M.read_text(mat.metadata.get(M.KIND))
        return reported if reported in KINDS else self.kind(spec)

    def contributors(
        self, spec: dg.AssetSpec, mat: dg.AssetMaterialization, sha256: str
    ) -> tuple[Contributor, ...]:
        """The contributors the run reported (`lineage/contributors`); else, per
        `contributors_from`, the partition key (one contributor holding this content) or the
        owners (equal weights); else none."""
        reported = reported_contributors(mat)
        if reported is not None:
            return reported
        how = self.contributors_from(spec)
        rows = _int(M.read_text(mat.metadata.get(M.ROWS)))
        if how is None or how.source == "column":
            return ()
        if how.source == "partitions":
            if mat.partition is None:
                return ()
            return (Contributor(id=mat.partition, rows=rows, sha256=sha256),)
        owners = list(spec.owners or ())
        return tuple(Contributor(id=o, weight=1.0 / len(owners)) for o in owners)


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


def reported_contributors(mat: dg.AssetMaterialization) -> tuple[Contributor, ...] | None:
    """`lineage/contributors` as the run reported it; None when it reported none."""
    raw = mat.metadata.get(M.CONTRIBUTORS)
    value = getattr(raw, "value", None) if raw is not None else None
    if not isinstance(value, dict):
        return None
    out: list[Contributor] = []
    entries: Sequence[Mapping[str, Any]] = value.get("contributors", [])
    for c in entries:
        out.append(
            Contributor(
                id=str(c["id"]),
                rows=c.get("rows"),
                sha256=c.get("sha256"),
                weight=c.get("weight"),
                value=c.get("value"),
                stderr=c.get("stderr"),
            )
        )
    return tuple(out)
