"""A small signed log of Dagster materializations, usage and one settled epoch, without Dagster.

    world = make_export_world(tmp_path)   # project folder, key ring, store, settled EPOCH
    world.index["datanet"]                # log index of each record by name

    contributions[alice], contributions[bob]   (DVC parts, one Dagster run each)
        -> datanet (DVC)                        } one Dagster run materializes both
        -> clf (MLflow run + model)             }
        -> clf_valuation (permutation: values with standard errors; inputs: parts + clf)
    notes: a dataset with no Dagster reference (not a materialization: never exported)
    settlement of EPOCH (pays on clf and clf_valuation)
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from lineage_platform import attest, usage
from lineage_platform.allocation import Policy
from lineage_platform.config import Settings
from lineage_platform.keys import KeyRing
from lineage_platform.records import (
    AttributionRecord,
    Contributor,
    DvcRef,
    InputRef,
    MlflowRef,
    RunRef,
    details_json,
    utc_timestamp,
)
from lineage_platform.settlement import settle
from lineage_platform.signing import SigningKey, TrustStore
from lineage_platform.stores import Store
from tests.ledger_world import signed_state

REPO = Path(__file__).resolve().parent.parent
EPOCH = "2026-01-05"
NOW = datetime(2026, 1, 7, 12, tzinfo=UTC)
RUN_ALICE = "0b7c6e1e-3c0a-4f7e-9a51-3f1c2b4d5e60"
RUN_BOB = "1c8d7f2f-4d1b-4a8f-8b62-4a2d3c5e6f71"
RUN_TRAIN = "2d9e8a3a-5e2c-4b9a-9c73-5b3e4d6f7a82"  # datanet and clf in one run
RUN_VALUE = "3eaf9b4b-6f3d-4cab-8d84-6c4f5e7a8b93"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def at(minute: int) -> str:
    return utc_timestamp(datetime(2026, 1, 1, 9, minute, tzinfo=UTC))


@dataclass(frozen=True, slots=True)
class ExportWorld:
    settings: Settings
    store: Store
    key: SigningKey
    index: dict[str, int]

    def trust(self) -> TrustStore:
        return KeyRing(self.settings.keys_dir).trust()

    def record(self, name: str) -> AttributionRecord:
        from lineage_platform.signing import Envelope

        table, _ = self.store.read_log()
        env = table.column("envelope")[self.index[name]].as_py()
        return AttributionRecord.from_bytes(Envelope.from_json(bytes(env)).payload)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LINEAGE_")}
        env["LINEAGE_PROJECT"] = str(self.settings.project_dir)
        env["LINEAGE_HOME"] = str(self.settings.state_dir)
        return subprocess.run(
            [sys.executable, "-m", "lineage_platform.cli", *args],
            env=env, capture_output=True, text=True, timeout=120,
        )


def make_export_world(root: Path, settled: bool = True) -> ExportWorld:
    settings, key, store = signed_state(root)
    idx: dict[str, int] = {}

    def add(name: str, rec: AttributionRecord) -> None:
        idx[name] = attest.append_records(store, key, [rec]).indices[0]

    def ref(name: str, asset: str) -> InputRef:
        return InputRef(asset, sha(name), idx[name])

    for i, (who, run, rows) in enumerate((("alice", RUN_ALICE, 30), ("bob", RUN_BOB, 10))):
        add(f"part:{who}", AttributionRecord(
            kind="dataset", asset="contributions", partition=who, sha256=sha(f"part:{who}"),
            recorded_at=at(i), run=RunRef("dagster", run, 3 + 4 * i),
            dvc=DvcRef(f"data/parts/{who}.parquet", md5(who)),
            contributors=(Contributor(who, rows=rows, sha256=sha(f"part:{who}")),),
        ))
    add("datanet", AttributionRecord(
        kind="dataset", asset="datanet", sha256=sha("datanet"), recorded_at=at(5),
        data_version=sha("datanet"), code_version="1", run=RunRef("dagster", RUN_TRAIN, 20),
        dvc=DvcRef("data/datanet.parquet", md5("datanet")),
        inputs=(ref("part:alice", "contributions"), ref("part:bob", "contributions")),
        contributors=(Contributor("alice", rows=30, sha256=sha("part:alice")),
                      Contributor("bob", rows=10, sha256=sha("part:bob"))),
    ))
    add("clf", AttributionRecord(
        kind="model", asset="clf", sha256=sha("clf"), recorded_at=at(6),
        run=RunRef("dagster", RUN_TRAIN, 21), mlflow=MlflowRef("a" * 32, "m-" + "b" * 32),
        inputs=(ref("datanet", "datanet"),),
    ))
    add("notes", AttributionRecord(
        kind="dataset", asset="notes", sha256=sha("notes"), recorded_at=at(7),
    ))
    add("clf_valuation", _valuation(idx, at(8), RUN_VALUE, 30, alice=(0.61, 0.05),
                                    bob=(0.22, 0.04)))
    if settled:
        events = pa.table({
            "event_id": ["call-1", "call-2", "call-3"],
            "model": ["clf"] * 3,
            "caller": ["acme"] * 3,
            "units": pa.array([1, 1, 1], pa.int64()),
            "fee": pa.array([400, 350, 250], pa.int64()),
            "occurred_at": pa.array(
                [datetime(2026, 1, 5, 12) + timedelta(minutes=m) for m in range(3)],
                pa.timestamp("us"),
            ),
        })
        usage.ingest(store, usage.validate_events(events))
        statements = settle(store, key, Policy.default(), NOW)
        idx["settlement"] = statements[0].log_index
    return ExportWorld(settings, store, key, idx)


def _valuation(
    idx: dict[str, int], when: str, run: str, storage: int, **values: tuple[float, float]
) -> AttributionRecord:
    total = sum(max(v, 0.0) for v, _ in values.values())
    return AttributionRecord(
        kind="valuation", asset="clf_valuation", sha256=sha(f"values:{values}"),
        recorded_at=when, run=RunRef("dagster", run, storage),
        inputs=(InputRef("contributions", sha("part:alice"), idx["part:alice"]),
                InputRef("contributions", sha("part:bob"), idx["part:bob"]),
                InputRef("clf", sha("clf"), idx["clf"])),
        contributors=tuple(
            Contributor(who, value=v, stderr=e, weight=max(v, 0.0) / total)
            for who, (v, e) in values.items()
        ),
        details=details_json({"method": "permutation", "model": "clf", "samples": 500,
                              "seed": 7, "efficiency": {"u_full_minus_u_empty": sum(
                                  v for v, _ in values.values())}}),
    )


def add_newer_valuation(world: ExportWorld) -> int:
    """A valuation recorded after the epoch was settled: the report must not pay on it."""
    rec = _valuation(world.index, at(30), "4fb0ac5c-7a4e-4dbc-9e95-7d5a6f8b9ca4", 40,
                     alice=(0.4, 0.1), bob=(0.5, 0.1))
    return attest.append_records(world.store, world.key, [rec]).indices[0]
