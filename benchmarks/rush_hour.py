"""Rush hour: many producers record usage at once while the sensor appends and a settlement runs.

    python benchmarks/rush_hour.py --producers 32 --events 10000     # the issue's load test
    python benchmarks/rush_hour.py --quick                           # 8 x 1000

Producers append to their own spool files (`SpoolWriter`, no database lock); one drainer ingests
spools in bulk; meanwhile `sync` signs a backlog of materializations and `settle` settles
yesterday's epoch, all against one DuckDB file. Prints producer p50/p99 latency, events/s, and
checks that every event is counted exactly once and the log verifies.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODEL = "rush_model"


def _producer(args: tuple[Path, int, int]) -> tuple[list[float], float, float]:
    from lineage_platform.spool import SpoolWriter

    spool, index, events = args
    lat = []
    began = time.time()
    with SpoolWriter(spool) as w:
        for i in range(events):
            t = time.perf_counter()
            w.record(MODEL, f"caller-{index}", 1, 7, f"p{index}-{i}")
            lat.append(time.perf_counter() - t)
    return lat, began, time.time()


def _drainer(db: str, spool: str, stop: Any, out: Any) -> None:
    from lineage_platform.spool import drain
    from lineage_platform.stores import open_store

    store = open_store(Path(db), lock_timeout_s=120)
    total = 0
    while not stop.is_set():
        total += drain(store, Path(spool)).inserted
        time.sleep(0.2)
    total += drain(store, Path(spool)).inserted
    out.put(total)


def _sensor(db: str, home: str, keys_pem: bytes, out: Any) -> None:
    import dagster as dg

    from lineage_platform.dagster.sync import DagsterSource
    from lineage_platform.signing import SigningKey
    from lineage_platform.stores import open_store
    from lineage_platform.sync import sync

    key = SigningKey.from_pem(keys_pem, None)
    with dg.DagsterInstance.from_config(home) as instance:
        store = open_store(Path(db), 120)
        source = DagsterSource(instance, [dg.AssetKey("rush_data")])
        result = sync(source, store, key, limit=500, until_caught_up=True)
    out.put(result.appended)


def _settler(db: str, keys_pem: bytes, out: Any) -> None:
    from lineage_platform.allocation import Policy
    from lineage_platform.settlement import settle
    from lineage_platform.signing import SigningKey
    from lineage_platform.stores import open_store

    key = SigningKey.from_pem(keys_pem, None)
    statements = settle(open_store(Path(db), 120), key, Policy.default(), datetime.now(UTC))
    out.put([s.epoch for s in statements])


def setup(tmp: Path, backlog: int) -> tuple[Path, Path, Path, bytes]:
    import dagster as dg
    import pyarrow as pa

    from lineage_platform.attest import append_records
    from lineage_platform.dagster.metadata import dataset_metadata
    from lineage_platform.hashing import sha256_bytes
    from lineage_platform.records import AttributionRecord, Contributor, utc_timestamp
    from lineage_platform.signing import SigningKey
    from lineage_platform.stores import open_store
    from lineage_platform.usage import ingest, validate_events

    key = SigningKey.generate()
    db, spool, home = tmp / "lineage.duckdb", tmp / "spool", tmp / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    store = open_store(db)
    append_records(store, key, [
        AttributionRecord(kind="dataset", asset="rush_parts", sha256="1" * 64,
                          recorded_at=utc_timestamp(),
                          contributors=(Contributor("ann", rows=3), Contributor("ben", rows=1))),
    ])
    append_records(store, key, [
        AttributionRecord(kind="model", asset=MODEL, sha256="2" * 64, recorded_at=utc_timestamp(),
                          inputs=()),
    ])
    yesterday = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=1)
    ingest(store, validate_events(pa.table({
        "event_id": [f"old-{i}" for i in range(1000)], "model": [MODEL] * 1000,
        "caller": ["early"] * 1000, "units": [1] * 1000, "fee": [3] * 1000,
        "occurred_at": pa.array([yesterday] * 1000, pa.timestamp("us")),
    })))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for i in range(backlog):
            sha = sha256_bytes(f"rush-{i}".encode())
            instance.report_runless_asset_event(dg.AssetMaterialization(
                "rush_data", metadata=dataset_metadata(sha, rows=1, contributors=[{"id": "ann",
                                                                                  "rows": 1}])))
    return db, spool, home, key.to_pem(None)


def run(producers: int, events: int, cli_events: int, backlog: int, tmp: Path) -> dict[str, Any]:
    from lineage_platform.audit import verify_store
    from lineage_platform.signing import SigningKey, TrustStore
    from lineage_platform.stores import open_store

    db, spool, home, pem = setup(tmp, backlog)
    ctx = mp.get_context("spawn")
    stop, results = ctx.Event(), ctx.Queue()
    drainer = ctx.Process(target=_drainer, args=(str(db), str(spool), stop, results))
    sensor = ctx.Process(target=_sensor, args=(str(db), str(home), pem, results))
    settler = ctx.Process(target=_settler, args=(str(db), pem, results))
    for p in (drainer, sensor, settler):
        p.start()
    env = {**os.environ, "LINEAGE_HOME": str(tmp), "LINEAGE_PROJECT": str(ROOT)}
    cli = [
        subprocess.Popen(
            [sys.executable, "-m", "lineage_platform.cli", "usage", "record", "--spool",
             "--model", MODEL, "--caller", "cli", "--fee", "7", "--id", f"cli-{i}"],
            env=env, stdout=subprocess.DEVNULL,
        )
        for i in range(cli_events)
    ]
    pool = ctx.Pool(producers)
    try:
        outcomes = pool.map(_producer, [(spool, i, events) for i in range(producers)])
    except BaseException:
        pool.terminate()
        raise
    # close + join, not the context manager's terminate(): SIGTERM may be ignored here (Dagster
    # maps it to SIGINT's handler, and a background job ignores SIGINT), and spawned workers
    # inherit that, so terminate() would wait for them forever.
    pool.close()
    pool.join()
    latencies = [lat for lat, _, _ in outcomes]
    # Throughput over the window in which producers were writing (not pool start-up).
    produced_s = max(e for _, _, e in outcomes) - min(b for _, b, _ in outcomes)
    cli_failures = sum(1 for p in cli if p.wait() != 0)
    sensor.join()
    settler.join()
    stop.set()
    drainer.join()
    got = [results.get() for _ in range(3)]
    lat = np.concatenate([np.asarray(x) for x in latencies]) * 1e6
    store = open_store(db, 120)
    expected = producers * events + cli_events + 1000
    counted = store.usage_count()
    # Below the protocol on purpose: that no event id is stored twice, as the file holds it.
    from tests.storekit import rows

    distinct = rows(Path(db), "SELECT count(DISTINCT event_id) FROM usage_events")[0][0]
    key = SigningKey.from_pem(pem, None)
    report = verify_store(store, TrustStore.of(key))
    return {
        "producers": producers, "events_per_producer": events, "cli_events": cli_events,
        "producer_p50_us": float(np.percentile(lat, 50)),
        "producer_p99_us": float(np.percentile(lat, 99)),
        "events_per_s": producers * events / produced_s,
        "expected": expected, "counted": counted, "distinct": int(distinct),
        "cli_failures": cli_failures, "log_records": report.records,
        "settled_epochs": report.epochs, "workers_reported": got,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--producers", type=int, default=32)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--cli-events", type=int, default=20)
    parser.add_argument("--backlog", type=int, default=2_000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.producers, args.events, args.cli_events, args.backlog = 8, 1000, 4, 300
    with tempfile.TemporaryDirectory() as tmp:
        r = run(args.producers, args.events, args.cli_events, args.backlog, Path(tmp))
    print(f"machine: {os.cpu_count()} cores")
    print(f"{r['producers']} producers x {r['events_per_producer']} events (+{r['cli_events']} via "
          f"`lineage usage record --spool`), while the sensor signed {args.backlog} records and "
          "a settlement ran")
    print(f"producer latency p50 {r['producer_p50_us']:.1f} us, p99 {r['producer_p99_us']:.1f} us;"
          f" {r['events_per_s']:,.0f} events/s recorded")
    print(f"counted {r['counted']} of {r['expected']} expected ({r['distinct']} distinct ids); "
          f"log verifies: {r['log_records']} records, {r['settled_epochs']} settled epochs")


if __name__ == "__main__":
    main()
