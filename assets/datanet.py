"""The datanet: contributors' parts (one partition each) and their union, versioned by DVC."""


from pathlib import Path

import dagster as dg
import pandas as pd

from assets.prepare import CONTRIBUTOR, load_params
from lineage_platform.dagster import LineageSettingsResource, dataset_metadata, people_first
from lineage_platform.hashing import sha256_file
from lineage_platform.integrations.dvc import output_md5

PARAMS = Path(__file__).resolve().parent.parent / "params.yaml"
CONTRIBUTOR_IDS = [
    *load_params(PARAMS)["datanet"]["contributors"],
    load_params(PARAMS)["datanet"]["duplicate"]["contributor"],
]
contributors_partitions = dg.StaticPartitionsDefinition(CONTRIBUTOR_IDS)


def _read(project: Path, rel: str) -> tuple[Path, pd.DataFrame]:
    path = project / rel
    if not path.is_file():
        raise dg.Failure(f"{rel} is missing: run `dvc repro` (or `lineage demo`) first")
    return path, pd.read_parquet(path)


@dg.asset(
    partitions_def=contributors_partitions,
    group_name="datanet",
    kinds={"parquet", "dvc"},
    owners=["team:data-contributors"],
    code_version="1",
)
def contributions(
    context: dg.AssetExecutionContext, lineage: LineageSettingsResource
) -> dg.MaterializeResult:
    """One contributor's part of the datanet, as produced by the DVC `prepare` stage."""
    project = Path(lineage.project_dir)
    contributor = context.partition_key
    rel = f"data/parts/{contributor}.parquet"
    path, frame = _read(project, rel)
    sha = sha256_file(path)
    md5 = output_md5(project, rel)
    meta = dataset_metadata(
        sha,
        rows=len(frame),
        contributors=[{"id": contributor, "rows": len(frame), "sha256": sha}],
        dvc_path=rel,
        dvc_md5=md5,
    )
    meta["contributor"] = contributor
    meta["rows"] = dg.MetadataValue.int(len(frame))
    meta["dvc_md5"] = md5
    return dg.MaterializeResult(metadata=people_first(meta), data_version=dg.DataVersion(sha))


@dg.asset(
    deps=[contributions],
    group_name="datanet",
    kinds={"parquet", "dvc"},
    owners=["team:data-platform"],
    code_version="1",
)
def datanet(lineage: LineageSettingsResource) -> dg.MaterializeResult:
    """The union of every contributor's part: the training set a model is made from."""
    project = Path(lineage.project_dir)
    rel = "data/datanet.parquet"
    path, frame = _read(project, rel)
    sha = sha256_file(path)
    md5 = output_md5(project, rel)
    counts = frame.groupby(CONTRIBUTOR).size().sort_index()
    parts = [
        {"id": str(c), "rows": int(n), "sha256": sha256_file(project / f"data/parts/{c}.parquet")}
        for c, n in counts.items()
    ]
    table = dg.MetadataValue.table(
        records=[
            dg.TableRecord(
                {
                    "contributor": p["id"],
                    "rows": p["rows"],
                    "share_of_rows": round(p["rows"] / len(frame), 4),
                    "sha256": p["sha256"][:16],
                }
            )
            for p in parts
        ],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn("contributor", "string"),
                dg.TableColumn("rows", "int"),
                dg.TableColumn("share_of_rows", "float"),
                dg.TableColumn("sha256", "string"),
            ]
        ),
    )
    meta = dataset_metadata(sha, rows=len(frame), contributors=parts, dvc_path=rel, dvc_md5=md5)
    meta["rows"] = dg.MetadataValue.int(len(frame))
    meta["contributors"] = table
    meta["dvc_md5"] = md5
    return dg.MaterializeResult(metadata=people_first(meta), data_version=dg.DataVersion(sha))
