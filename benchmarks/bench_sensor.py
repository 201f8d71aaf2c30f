"""How fast `lineage sync` catches up with a backlog of materializations, next to raw signing.

    .venv/bin/python benchmarks/bench_sensor.py            # 10,000 materializations
    .venv/bin/python benchmarks/bench_sensor.py --quick    # 2,000

The backlog looks like the example pipeline run many times: every round re-materializes a few
contributor partitions, then the datanet (its record lists every partition's record) and the
model (its record lists the datanet's). It lives in a real on-disk Dagster instance (SQLite event
log, as `lineage init` writes it). Timed, from an empty log to caught up: `sync` in this
process (exactly what `lineage sync` runs), then `lineage sync` itself in a new process on a copy
of the same backlog (start-up and loading the code location included). Issue 4's target:
>= 1,000 records/s end to end. Prints the figures; asserts only that every event was signed
once and the logs verify. `--profile` adds a cProfile of the in-process sync.

Writing 10,000 events through `report_runless_asset_event` takes minutes (two SQLite connections
and commits per event), so the backlog is written with the event log storage's own statement
builders in one transaction: the same rows, tags and asset index a run would write (checked
below against the public path on a small sample).
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import logging
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
from dagster._core.events.log import EventLogEntry

from lineage_platform.audit import verify_store
from lineage_platform.config import Settings
from lineage_platform.dagster.metadata import dataset_metadata, model_metadata
from lineage_platform.dagster.sync import DagsterSource
from lineage_platform.dagster.workspace import open_instance
from lineage_platform.keys import KeyRing
from lineage_platform.stores import open_store
from lineage_platform.sync import sync

CONTRIBUTIONS, DATANET, MODEL = "contributions", "datanet", "digits_classifier"
KEYS = [dg.AssetKey(k) for k in (CONTRIBUTIONS, DATANET, MODEL)]
INPUT_VERSION = "dagster/input_data_version/"
INPUT_POINTER = "dagster/input_event_pointer/"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Backlog:
    events: int
    rounds: int
    partitions: int
    seconds: float


class BulkWriter:
    """Append materializations to a SQLite-backed instance in one index-shard transaction.

    The rows are what `SqliteEventLogStorage.store_event` writes for each event (event row,
    indexed asset tags, the asset's latest-materialization row), batched: a benchmark fixture,
    not a way to write production events.
    """

    def __init__(self, instance: dg.DagsterInstance, run_id: str) -> None:
        self.storage = instance.event_log_storage
        self.run_id = run_id
        self.pending: list[EventLogEntry] = []
        self.latest: dict[str, tuple[EventLogEntry, int]] = {}

    def entry(self, mat: dg.AssetMaterialization) -> EventLogEntry:
        event = DagsterEvent(
            event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
            job_name="bench_job",
            event_specific_data=StepMaterializationData(mat),
            step_key=mat.asset_key.to_python_identifier(),
        )
        return EventLogEntry(
            error_info=None,
            level=logging.INFO,
            user_message="",
            run_id=self.run_id,
            timestamp=time.time(),
            step_key=event.step_key,
            job_name="bench_job",
            dagster_event=event,
        )

    @contextmanager
    def transaction(self) -> Iterator[BulkWriter]:
        with self.storage.index_transaction() as conn:
            self.conn = conn
            yield self
            for entry, sid in self.latest.values():
                self.storage._store_asset_event(conn, entry, sid)
        with self.storage.run_connection(self.run_id) as conn:
            for i in range(0, len(self.pending), 500):
                conn.execute(self.storage.prepare_insert_event_batch(self.pending[i : i + 500]))

    def write(self, mat: dg.AssetMaterialization) -> int:
        entry = self.entry(mat)
        result = self.conn.execute(self.storage.prepare_insert_event(entry))
        sid = int(result.inserted_primary_key[0])
        self.storage._store_asset_event_tags(self.conn, [entry], [sid])
        self.latest[mat.asset_key.to_user_string()] = (entry, sid)
        self.pending.append(entry)
        return sid


def contribution(partition: str, version: int) -> tuple[dg.AssetMaterialization, str]:
    content = sha(f"{partition} v{version}")
    rel = f"data/parts/{partition}.parquet"
    meta = dataset_metadata(
        content,
        rows=100 + version % 50,
        contributors=[{"id": partition, "rows": 100 + version % 50, "sha256": content}],
        dvc_path=rel,
        dvc_md5=md5(content),
    )
    tags = {"dagster/data_version": content, "dagster/code_version": "1"}
    mat = dg.AssetMaterialization(CONTRIBUTIONS, partition=partition, metadata=meta, tags=tags)
    return mat, content


def write_backlog(
    instance: dg.DagsterInstance, events: int, partitions: int = 20, changed: int = 3
) -> Backlog:
    """Rounds of `changed` partitions, then datanet and model, until `events` are written."""
    names = [f"contributor-{i:03d}" for i in range(partitions)]
    started = time.perf_counter()
    writer = BulkWriter(instance, run_id="bench-0000-backlog")
    latest: dict[str, tuple[int, str]] = {}
    written = rounds = 0
    with writer.transaction():
        for name in names:  # every partition exists before the first datanet
            mat, content = contribution(name, 0)
            latest[name] = (writer.write(mat), content)
            written += 1
        while written < events:
            rounds += 1
            for j in range(changed):
                name = names[(rounds * changed + j) % partitions]
                mat, content = contribution(name, rounds)
                latest[name] = (writer.write(mat), content)
                written += 1
            pointer = max(sid for sid, _ in latest.values())
            combined = sha("".join(c for _, (_, c) in sorted(latest.items())))
            data = sha(f"datanet r{rounds}")
            parts = [{"id": n, "rows": 100, "sha256": c} for n, (_, c) in sorted(latest.items())]
            meta = dataset_metadata(
                data, rows=100 * partitions, contributors=parts,
                dvc_path="data/datanet.parquet", dvc_md5=md5(data),
            )
            tags = {
                "dagster/data_version": data,
                "dagster/code_version": "1",
                INPUT_VERSION + CONTRIBUTIONS: combined,
                INPUT_POINTER + CONTRIBUTIONS: str(pointer),
            }
            datanet_sid = writer.write(dg.AssetMaterialization(DATANET, metadata=meta, tags=tags))
            model = sha(f"model r{rounds}")
            meta = model_metadata(model, md5(f"run {rounds}"), f"m-{md5(model)}")
            tags = {
                "dagster/data_version": model,
                "dagster/code_version": "1",
                INPUT_VERSION + DATANET: data,
                INPUT_POINTER + DATANET: str(datanet_sid),
            }
            writer.write(dg.AssetMaterialization(MODEL, metadata=meta, tags=tags))
            written += 2
    return Backlog(written, rounds, partitions, time.perf_counter() - started)


def check_writer_matches_public_path(root: Path) -> None:
    """The bulk rows read back exactly like events written through the instance's public API."""
    mat, _ = contribution("contributor-000", 1)
    records = {}
    for how in ("public", "bulk"):
        home = root / how
        home.mkdir(parents=True)
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
        with dg.DagsterInstance.from_config(str(home)) as instance:
            if how == "public":
                instance.report_runless_asset_event(mat)
            else:
                writer = BulkWriter(instance, run_id="")
                with writer.transaction():
                    writer.write(mat)
            found = instance.fetch_materializations(dg.AssetKey(CONTRIBUTIONS), limit=5).records
            latest = instance.get_latest_materialization_event(dg.AssetKey(CONTRIBUTIONS))
            parts = instance.get_materialized_partitions(dg.AssetKey(CONTRIBUTIONS))
            assert len(found) == 1 and latest is not None and parts == {"contributor-000"}
            records[how] = found[0].asset_materialization
    assert records["public"] == records["bulk"], records


WORKSPACE = """\
load_from:
  - python_module:
      module_name: bench_defs
      working_directory: .
"""

# The example's asset keys without its work: `lineage sync` only needs the keys.
CODE_LOCATION = """\
import dagster as dg

@dg.asset(partitions_def=dg.DynamicPartitionsDefinition(name="contributors"))
def contributions() -> None: ...

@dg.asset(deps=[contributions])
def datanet() -> None: ...

@dg.asset(deps=[datanet])
def digits_classifier() -> None: ...

defs = dg.Definitions(assets=[contributions, datanet, digits_classifier])
"""


def run_cli_sync(root: Path, state: Path, batch: int) -> tuple[float, dict[str, int]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LINEAGE_", "DAGSTER_"))}
    env["LINEAGE_HOME"] = str(state)
    cmd = [sys.executable, "-m", "lineage_platform.cli", "sync", "--json"]
    cmd += ["--batch-size", str(batch)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"lineage sync failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return elapsed, json.loads(proc.stdout)


def raw_sign_rate(seconds: float = 1.0) -> float:
    key = Ed25519PrivateKey.generate()
    msg = b"x" * 700  # about the size of a signed record's PAE
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(500):
            key.sign(msg)
        n += 500
    return n / (time.perf_counter() - started)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 materializations")
    parser.add_argument("--events", type=int, help="backlog size (default 10,000)")
    parser.add_argument("--batch", type=int, default=5000, help="sync batch size")
    parser.add_argument("--profile", action="store_true", help="cProfile the sync")
    args = parser.parse_args(argv)
    n = args.events or (2000 if args.quick else 10_000)
    logging.getLogger("dagster").setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="bench_sensor_") as tmp:
        root = Path(tmp)
        check_writer_matches_public_path(root / "check")
        (root / "workspace.yaml").write_text(WORKSPACE, encoding="utf-8")
        (root / "bench_defs.py").write_text(CODE_LOCATION, encoding="utf-8")
        settings = Settings(root, root / ".lineage", "sqlite:///unused.db")
        ring = KeyRing(settings.keys_dir)
        ring.init(None)
        key = ring.signer(None)
        store = open_store(settings.store_url)
        with open_instance(settings) as instance:
            backlog = write_backlog(instance, n)
            print(
                f"backlog: {backlog.events} materializations ({backlog.rounds} rounds over "
                f"{backlog.partitions} partitions) written in {backlog.seconds:.1f}s"
            )
            # The same backlog for `lineage sync` in its own process, into its own empty log.
            shutil.copytree(settings.dagster_home, root / "cli" / "dagster")
            profiler = cProfile.Profile() if args.profile else None
            started = time.perf_counter()
            if profiler:
                profiler.enable()
            source = DagsterSource(instance, KEYS)
            result = sync(source, store, key, limit=args.batch, until_caught_up=True)
            if profiler:
                profiler.disable()
            elapsed = time.perf_counter() - started
        rate = result.appended / elapsed
        sign = raw_sign_rate()
        report = verify_store(store, ring.trust())
        assert result.appended == backlog.events, (result.appended, backlog.events)
        print(
            f"sync: {result.appended} records in {elapsed:.2f}s = {rate:,.0f} records/s "
            f"end to end (target >= 1,000); raw Ed25519 signing {sign:,.0f}/s on one core "
            f"({rate / sign:.0%} of it)"
        )
        print(f"verify: {report.summary()}")
        cli_s, cli = run_cli_sync(root, root / "cli", args.batch)
        assert cli["appended"] == backlog.events, cli
        print(
            f"lineage sync (its own process; start-up and loading the code location included): "
            f"{cli['appended']} records in {cli_s:.2f}s = {cli['appended'] / cli_s:,.0f} records/s"
        )
        cli_store = open_store(root / "cli" / "lineage.duckdb")
        cli_ring = KeyRing(root / "cli" / "keys")
        cli_report = verify_store(cli_store, cli_ring.trust())
        print(f"verify: {cli_report.summary()}")
        if profiler:
            pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(30)


if __name__ == "__main__":
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    main()
