"""A small signed lineage for usage and settlement tests, built without Dagster.

    world = make_world(tmp_path)     # project folder, key ring, store with records
    usage.ingest(world.store, usage.validate_events(events(world.EPOCH, [("m_lineage", 100)])))

The graph (default policy: protocol 5 %, owner 15 %, data 80 %):

    m_lineage -> mix2 -> mix -> raw_a (alice rows 30, bob rows 10)
                             -> raw_b (carol weight 2, dave weight 6; weight beats rows)
    m_valued  -> valuation: alice 3.0, bob -1.0, erin 1.0  (inputs raw_a and raw_e: erin rows 5)
    m_zero    -> valuation: alice -2.0, bob 0.0   (nothing positive: data part to reserve)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from lineage_platform import attest
from lineage_platform.config import Settings
from lineage_platform.keys import KeyRing
from lineage_platform.records import (
    AttributionRecord,
    Contributor,
    InputRef,
    RunRef,
    details_json,
    utc_timestamp,
)
from lineage_platform.signing import SigningKey
from lineage_platform.stores import Store, open_store

REPO = Path(__file__).resolve().parent.parent
EPOCH = "2026-01-05"  # a closed epoch for API tests, which pass `now` explicitly
NOW = datetime(2026, 1, 7, 12, tzinfo=UTC)
RECORDED = utc_timestamp(datetime(2026, 1, 1, tzinfo=UTC))


def yesterday() -> str:
    """The last closed daily epoch, for code that settles against the real clock."""
    return (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class World:
    settings: Settings
    store: Store
    key: SigningKey
    index: dict[str, int]

    def env(self) -> dict[str, str]:
        """Environment for a `lineage` subprocess pointed at this world's project."""
        kept = ("LINEAGE_VERIFIER_STATE", "LINEAGE_USER_CONFIG")  # per test, see conftest
        env = {k: v for k, v in os.environ.items() if not k.startswith("LINEAGE_") or k in kept}
        env["LINEAGE_PROJECT"] = str(self.settings.project_dir)
        env["LINEAGE_HOME"] = str(self.settings.state_dir)
        return env

    def clone(self, root: Path) -> World:
        """A copy of the whole project and state folder: cheaper than signing the lineage again."""
        shutil.copytree(self.settings.project_dir, root)
        state = root / ".lineage"
        settings = Settings(root, state, f"sqlite:///{state / 'mlflow.db'}")
        key = KeyRing(settings.keys_dir).signer(None)
        return World(settings, open_store(settings.store_url), key, dict(self.index))

    def count(self, what: str = "usage_events") -> int:
        """How many usage events, or log entries (`log_entries`), the store holds."""
        return self.store.tree_size() if what == "log_entries" else self.store.usage_count()

    @staticmethod
    def cli_argv(*args: str) -> list[str]:
        return [sys.executable, "-m", "lineage_platform.cli", *args]

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.cli_argv(*args),
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and done.returncode:
            raise AssertionError(f"lineage {' '.join(args)} failed:\n{done.stderr}")
        return done


def _append(index: dict[str, int], store: Store, key: SigningKey, rec: AttributionRecord) -> None:
    index[rec.asset] = attest.append_records(store, key, [rec]).indices[0]


def signed_state(root: Path) -> tuple[Settings, SigningKey, Store]:
    """A project folder (workspace.yaml), its key ring, and an empty store under .lineage/."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "workspace.yaml", root / "workspace.yaml")
    state = root / ".lineage"
    settings = Settings(root, state, f"sqlite:///{state / 'mlflow.db'}")
    ring = KeyRing(settings.keys_dir)
    ring.init(None)
    key = ring.signer(None)
    store = open_store(settings.store_url)
    return settings, key, store


def make_world(root: Path) -> World:
    """Project folder (workspace.yaml), key ring, and the signed lineage in the module doc."""
    settings, key, store = signed_state(root)
    return World(settings, store, key, sign_lineage(store, key))


def sign_lineage(store: Store, key: SigningKey) -> dict[str, int]:
    """Append the lineage in the module doc to `store` (any driver): log index per asset."""
    idx: dict[str, int] = {}

    def ref(asset: str) -> InputRef:
        return InputRef(asset, sha(asset), idx[asset])

    def dataset(
        asset: str, contributors: tuple[Contributor, ...] = (), inputs: tuple[str, ...] = ()
    ) -> None:
        rec = AttributionRecord(
            kind="dataset", asset=asset, sha256=sha(asset), recorded_at=RECORDED,
            contributors=contributors, inputs=tuple(ref(i) for i in inputs),
        )
        _append(idx, store, key, rec)

    def model(asset: str, inputs: tuple[str, ...]) -> None:
        rec = AttributionRecord(
            kind="model", asset=asset, sha256=sha(asset), recorded_at=RECORDED,
            inputs=tuple(ref(i) for i in inputs),
        )
        _append(idx, store, key, rec)

    def valuation(model_asset: str, values: dict[str, float]) -> None:
        # What settlement accepts (issue 15): the model's registered valuation asset, made by a
        # run, naming the exact model record, paying only its lineage, efficient values.
        rec = AttributionRecord(
            kind="valuation", asset=f"{model_asset}_valuation", sha256=sha(f"v:{model_asset}"),
            recorded_at=RECORDED, inputs=(ref(model_asset), ref("raw_a")),
            run=RunRef("dagster", f"run-{model_asset}", len(idx)),
            contributors=tuple(Contributor(c, value=v) for c, v in values.items()),
            details=details_json({
                "method": "exact-shapley",
                "efficiency": {"u_full_minus_u_empty": sum(values.values())},
            }),
        )
        _append(idx, store, key, rec)

    dataset("raw_a", (Contributor("alice", rows=30, sha256=sha("a")),
                      Contributor("bob", rows=10, sha256=sha("b"))))
    dataset("raw_b", (Contributor("carol", rows=100, weight=2.0),
                      Contributor("dave", rows=1, weight=6.0)))
    dataset("mix", inputs=("raw_a", "raw_b"))
    dataset("mix2", inputs=("mix",))
    model("m_lineage", ("mix2",))
    dataset("raw_e", (Contributor("erin", rows=5),))
    model("m_valued", ("raw_a", "raw_e"))
    valuation("m_valued", {"alice": 3.0, "bob": -1.0, "erin": 1.0})
    model("m_zero", ("raw_a",))
    valuation("m_zero", {"alice": -2.0, "bob": 0.0})
    return idx


def events(
    epoch: str, calls: list[tuple[str, int]], prefix: str = "e", hour: int = 12
) -> pa.Table:
    """One event per (model, fee), ids `prefix-0`, `prefix-1`, … at `hour` o'clock of `epoch`."""
    start = datetime.strptime(epoch, "%Y-%m-%d") + timedelta(hours=hour)
    return pa.table(
        {
            "event_id": [f"{prefix}-{i}" for i in range(len(calls))],
            "model": [m for m, _ in calls],
            "caller": ["acme"] * len(calls),
            "units": pa.array([1] * len(calls), pa.int64()),
            "fee": pa.array([f for _, f in calls], pa.int64()),
            "occurred_at": pa.array(
                [start + timedelta(seconds=i) for i in range(len(calls))], pa.timestamp("us")
            ),
        }
    )
