"""What each contributor's data is worth to the model: the values settlement pays on."""

import base64
import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field
from sklearn.linear_model import LogisticRegression

from assets.datanet import CONTRIBUTOR_IDS, contributions
from assets.model import digits_classifier
from assets.prepare import FEATURES, LABEL
from lineage_platform.dagster import (
    LineageSettingsResource,
    LineageStoreResource,
    people_first,
    valuation_report,
)
from lineage_platform.errors import LineageError
from lineage_platform.hashing import sha256_file
from lineage_platform.valuation.choose import efficiency_target, value_contributors
from lineage_platform.valuation.registry import get_method, known_names
from lineage_platform.valuation.result import ValuationResult, clip

#: The validation rows every valuation of the example scores against (a DVC output of the
#: `prepare` stage; not an asset, so no record signs its hash: `lineage verify --recompute`
#: reads it from the project, as the asset did).
VALIDATION = "data/validation.parquet"


class ValuationConfig(dg.Config):  # type: ignore[misc]
    """`knn` values rows (identity-independent, the default settlement pays on); the other
    registered methods value contributors as players: an explicit choice."""

    method: str = Field(default="knn", description="a registered valuation method: "
                        + ", ".join(known_names()))
    seed: int = 7
    k: int = 5


def shares_chart(
    shares: dict[str, float], stderr: dict[str, float], values: dict[str, float]
) -> str:
    """A bar chart of shares as a Markdown image (inline PNG), for the asset's UI page."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(shares, key=lambda n: -values[n])
    fig, ax = plt.subplots(figsize=(6, 2.6), dpi=100)
    total = sum(clip(v) for v in values.values()) or 1.0
    err = [stderr[n] / total if np.isfinite(stderr[n]) else 0.0 for n in names]
    ax.bar(names, [shares[n] for n in names], yerr=err, color="#4f6fd0", capsize=3)
    ax.set_ylabel("share of data value")
    ax.set_title("digits_classifier: contributor shares")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    encoded = base64.b64encode(buf.getvalue()).decode()
    return f"![contributor shares](data:image/png;base64,{encoded})"


def _xy(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return frame[FEATURES].to_numpy(dtype=np.float64) / 16.0, frame[LABEL].to_numpy()


def make_model() -> LogisticRegression:
    """The model each coalition trains (exact and sampled Shapley); deterministic (lbfgs)."""
    return LogisticRegression(max_iter=300)


def recompute(
    project: Path, details: Mapping[str, Any], parts: Mapping[str, Path], order: Sequence[str]
) -> ValuationResult:
    """The asset's valuation run again on the part files a record's hashes located: what
    `lineage verify --recompute` compares with the signed digest (registered in definitions)."""
    k = details.get("k")
    if not isinstance(k, int):  # records signed before `k` was: the utility text names it
        found = re.search(r"\bk=(\d+)", str(details.get("utility", "")))
        k = int(found.group(1)) if found else ValuationConfig().k
    seed = details.get("seed")
    # The signed near-copy rule's fraction; records signed before it deduped exact copies only.
    near = details.get("near_copies")
    fraction = near.get("fraction") if isinstance(near, Mapping) else None
    x_val, y_val = _xy(pd.read_parquet(project / VALIDATION))
    return value_contributors(
        {c: _xy(pd.read_parquet(parts[c])) for c in order}, x_val, y_val, str(details["method"]),
        seed=seed if isinstance(seed, int) else ValuationConfig().seed, k=k, order=order,
        make_model=make_model,
        near_copies=float(fraction) if isinstance(fraction, int | float) else None,
    )


def signing_order(project: Path, store: LineageStoreResource) -> list[str]:
    """Parts in the order their records were signed: duplicates go to the earliest part."""
    first: dict[str, int] = {}
    try:
        for c in CONTRIBUTOR_IDS:
            sha = sha256_file(project / f"data/parts/{c}.parquet")
            earliest = store.store().earliest_index("contributions", sha256=sha)
            if earliest is not None:
                first[c] = earliest
    except LineageError:
        pass  # nothing signed yet: fall back to the partition order
    return sorted(CONTRIBUTOR_IDS, key=lambda c: (first.get(c, 1 << 62), CONTRIBUTOR_IDS.index(c)))


@dg.asset(
    deps=[digits_classifier, contributions],
    group_name="models",
    kinds={"numpy", "shapley"},
    owners=["team:data-platform"],
    code_version="1",
    # What with_lineage reads to add the efficiency and valuation_accepted checks, and what
    # `lineage value digits_classifier` finds the asset by.
    metadata={"lineage/kind": "valuation", "lineage/values_model": "digits_classifier"},
)
def digits_classifier_valuation(
    config: ValuationConfig, lineage: LineageSettingsResource, lineage_store: LineageStoreResource
) -> dg.MaterializeResult:
    """Shapley value of each contributor's data to digits_classifier (rows, summed)."""
    try:
        method = get_method(config.method)
    except LineageError as e:
        raise dg.Failure(str(e)) from e
    project = Path(lineage.project_dir)
    order = signing_order(project, lineage_store)
    parts = {c: _xy(pd.read_parquet(project / f"data/parts/{c}.parquet")) for c in order}
    x_val, y_val = _xy(pd.read_parquet(project / VALIDATION))
    result = value_contributors(
        parts, x_val, y_val, method.name, seed=config.seed, k=config.k, order=order,
        make_model=make_model,
    )
    target = efficiency_target(parts, x_val, y_val, result, k=config.k, make_model=make_model)
    meta = valuation_report(result, "digits_classifier", target, k=config.k)
    meta["shares"] = dg.MetadataValue.md(
        shares_chart(result.shares(), result.stderr_dict(), result.as_dict())
    )
    return dg.MaterializeResult(
        metadata=people_first(meta), data_version=dg.DataVersion(result.digest())
    )
