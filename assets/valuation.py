"""What each contributor's data is worth to the model: the values settlement pays on."""

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from assets.datanet import CONTRIBUTOR_IDS, contributions
from assets.model import digits_classifier
from assets.prepare import FEATURES, LABEL
from lineage_platform.dagster import (
    LineageSettingsResource,
    LineageStoreResource,
    valuation_metadata,
)
from lineage_platform.errors import LineageError
from lineage_platform.hashing import sha256_file
from lineage_platform.valuation.choose import METHODS, value_contributors


class ValuationConfig(dg.Config):  # type: ignore[misc]
    """`knn` values rows (identity-independent, the default settlement pays on); `exact`,
    `permutation` and `banzhaf` value contributors as players: an explicit choice."""

    method: str = "knn"
    seed: int = 7
    k: int = 5


def _xy(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return frame[FEATURES].to_numpy(dtype=np.float64) / 16.0, frame[LABEL].to_numpy()


def signing_order(project: Path, store: LineageStoreResource) -> list[str]:
    """Parts in the order their records were signed: duplicates go to the earliest part."""
    first: dict[str, int] = {}
    try:
        for c in CONTRIBUTOR_IDS:
            sha = sha256_file(project / f"data/parts/{c}.parquet")
            rows = store.store().query(
                "SELECT min(idx) FROM log_entries WHERE asset = 'contributions' AND sha256 = ?",
                [sha],
            )
            if rows and rows[0][0] is not None:
                first[c] = int(rows[0][0])
    except LineageError:
        pass  # nothing signed yet: fall back to the partition order
    return sorted(CONTRIBUTOR_IDS, key=lambda c: (first.get(c, 1 << 62), CONTRIBUTOR_IDS.index(c)))


@dg.asset(
    deps=[digits_classifier, contributions],
    group_name="models",
    kinds={"numpy", "shapley"},
    owners=["team:data-platform"],
    code_version="1",
)
def digits_classifier_valuation(
    config: ValuationConfig, lineage: LineageSettingsResource, lineage_store: LineageStoreResource
) -> dg.MaterializeResult:
    """Shapley value of each contributor's data to digits_classifier (rows, summed)."""
    if config.method not in METHODS:
        raise dg.Failure(f"method must be one of {', '.join(METHODS)}")
    project = Path(lineage.project_dir)
    order = signing_order(project, lineage_store)
    parts = {c: _xy(pd.read_parquet(project / f"data/parts/{c}.parquet")) for c in order}
    x_val, y_val = _xy(pd.read_parquet(project / "data/validation.parquet"))
    result = value_contributors(
        parts, x_val, y_val, config.method, seed=config.seed, k=config.k, order=order,
        make_model=lambda: LogisticRegression(max_iter=300),
    )
    shares = result.shares()
    stderr = result.stderr_dict()
    rows = dict(zip(result.players, result.counts, strict=True))
    contributors = [
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
    details = {**result.to_details(), "model": "digits_classifier"}
    meta = valuation_metadata(result.digest(), contributors, details)
    meta["contributor values"] = table
    meta["method"] = result.method
    meta["duplicate rows discounted"] = sum(d.rows for d in result.discounted)
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(result.digest()))
