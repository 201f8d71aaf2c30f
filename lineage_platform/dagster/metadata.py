"""The metadata keys an asset reports so the lineage sensor can build its attribution record.

    return dg.MaterializeResult(metadata=dataset_metadata(sha, rows=…, dvc_path=…, dvc_md5=…),
                                data_version=dg.DataVersion(sha))

Users call these helpers instead of typing keys, so the sensor and the UI agree on one contract.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

KIND = "lineage/kind"
SHA256 = "lineage/sha256"
DVC_PATH = "lineage/dvc_path"
DVC_MD5 = "lineage/dvc_md5"
MLFLOW_RUN = "lineage/mlflow_run_id"
MLFLOW_MODEL = "lineage/mlflow_model_id"
CONTRIBUTORS = "lineage/contributors"
ROWS = "lineage/rows"
DETAILS = "lineage/details"


def _common(kind: str, sha256: str, dvc_path: str | None, dvc_md5: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {KIND: kind, SHA256: sha256}
    if dvc_path and dvc_md5:
        meta[DVC_PATH] = dvc_path
        meta[DVC_MD5] = dvc_md5
    return meta


def contributors_json(contributors: Sequence[Mapping[str, Any]]) -> dg.MetadataValue:
    """Kept as JSON (not only a table) so the sensor reads it back exactly."""
    return dg.MetadataValue.json({"contributors": [dict(c) for c in contributors]})


def dataset_metadata(
    sha256: str,
    rows: int,
    contributors: Sequence[Mapping[str, Any]],
    dvc_path: str | None = None,
    dvc_md5: str | None = None,
) -> dict[str, Any]:
    """A dataset's `lineage/*` metadata, for an asset that reports its own digest (a
    `MaterializeResult` asset; `with_lineage` computes it for table outputs instead).

        dataset_metadata(sha256_file(path), rows=120, contributors=[{"id": "north", "rows": 120}])
    """
    meta = _common("dataset", sha256, dvc_path, dvc_md5)
    meta[ROWS] = dg.MetadataValue.int(rows)
    meta[CONTRIBUTORS] = contributors_json(contributors)
    return meta


def model_metadata(
    sha256: str,
    mlflow_run_id: str,
    mlflow_model_id: str,
    mlflow_url: str | None = None,
    dvc_path: str | None = None,
    dvc_md5: str | None = None,
) -> dict[str, Any]:
    """A model's `lineage/*` metadata: its digest and the MLflow run and model it was logged as.

        model_metadata(sha, ref.run_id, ref.model_id, mlflow_url=url)
    """
    meta = _common("model", sha256, dvc_path, dvc_md5)
    meta[MLFLOW_RUN] = mlflow_run_id
    meta[MLFLOW_MODEL] = mlflow_model_id
    if mlflow_url:
        meta["MLflow run"] = dg.MetadataValue.url(mlflow_url)
    return meta


def valuation_metadata(
    sha256: str, contributors: Sequence[Mapping[str, Any]], details: Mapping[str, Any]
) -> dict[str, Any]:
    """A valuation's `lineage/*` metadata (`valuation_report` builds it from a result):
    contributors carry value, stderr and weight (share); details: method, seed, samples.

        valuation_metadata(result.digest(), contributors, result.to_details())
    """
    meta = _common("valuation", sha256, None, None)
    meta[CONTRIBUTORS] = contributors_json(contributors)
    meta[DETAILS] = dg.MetadataValue.json(dict(details))
    return meta


def read_text(value: Any) -> str | None:
    """Metadata entries come back as MetadataValue objects; the sensor wants plain values."""
    if value is None:
        return None
    raw = getattr(value, "value", value)
    if isinstance(raw, (dict, list)):
        return json.dumps(raw)
    return str(raw)


def people_first(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The UI lists metadata in order: readable entries first, the sensor's `lineage/*` last.

        return dg.MaterializeResult(metadata=people_first({**dataset_metadata(...), "rows": n}))
    """
    mine = {k: v for k, v in meta.items() if not k.startswith("lineage/")}
    return {**mine, **{k: v for k, v in meta.items() if k.startswith("lineage/")}}
