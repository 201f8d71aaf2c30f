"""Ingest and settlement speed: 1,000,000 usage events, 100 models, 10,000 contributors.

    .venv/bin/python benchmarks/bench_settlement.py            # 1,000,000 events
    .venv/bin/python benchmarks/bench_settlement.py --quick    # 100,000 events

Prints figures, asserts nothing. Targets (issue 6): bulk ingestion (validate + `usage.ingest`) at
least 500,000 events/s, settling the epoch in under 10 s. The store holds 20 datasets of 500
contributors each (10,000 in all), 100 models and 80 signed valuations naming 200-1000 of those
contributors of the model's datasets (about one value in eight negative; each passes settlement's
valuation rules of issue 15); the other 20 models are paid down their lineage.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lineage_platform import attest, usage
from lineage_platform.allocation import Policy
from lineage_platform.records import (
    AttributionRecord,
    Contributor,
    InputRef,
    RunRef,
    details_json,
    utc_timestamp,
)
from lineage_platform.settlement import epoch_bounds, settle, verify_settlements
from lineage_platform.signing import SigningKey
from lineage_platform.stores import Store, open_store

EPOCH = "2026-01-05"
MODELS = 100
VALUED = 80
DATASETS = 20
CONTRIBUTORS = 10_000


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def build_log(store: Store, key: SigningKey, rng: np.random.Generator) -> float:
    """Datasets, models and valuations, appended in dependency order; returns seconds taken."""
    started = time.perf_counter()
    recorded = utc_timestamp(datetime(2026, 1, 1, tzinfo=UTC))
    ids = [f"c{i:05d}" for i in range(CONTRIBUTORS)]
    per = CONTRIBUTORS // DATASETS
    datasets = [
        AttributionRecord(
            kind="dataset", asset=f"ds{d:02d}", sha256=sha(f"ds{d}"), recorded_at=recorded,
            contributors=tuple(
                Contributor(c, rows=int(rng.integers(1, 5000)), sha256=sha(c))
                for c in ids[d * per : (d + 1) * per]
            ),
        )
        for d in range(DATASETS)
    ]
    ds_index = attest.append_records(store, key, datasets).indices
    models = []
    for m in range(MODELS):
        picks = rng.choice(DATASETS, size=2, replace=False)
        models.append(
            AttributionRecord(
                kind="model", asset=f"model{m:03d}", sha256=sha(f"model{m}"),
                recorded_at=recorded,
                inputs=tuple(InputRef(f"ds{p:02d}", sha(f"ds{p}"), ds_index[p]) for p in picks),
            )
        )
    model_index = attest.append_records(store, key, models).indices
    valuations = []
    for m in range(VALUED):
        # What settlement accepts (issue 15): the model's registered valuation asset, made by a
        # run, naming the model record, paying contributors of its two datasets, efficient.
        mine = [ids[c] for i in models[m].inputs for c in range(
            int(i.asset[2:]) * per, (int(i.asset[2:]) + 1) * per)]
        named = rng.choice(len(mine), size=int(rng.integers(200, 1001)), replace=False)
        values = rng.normal(1.0, 0.9, size=len(named))
        valuations.append(
            AttributionRecord(
                kind="valuation", asset=f"model{m:03d}_valuation", sha256=sha(f"v{m}"),
                recorded_at=recorded, run=RunRef("dagster", f"run-{m}", m),
                inputs=(InputRef(f"model{m:03d}", sha(f"model{m}"), model_index[m]),),
                contributors=tuple(
                    Contributor(mine[c], value=float(v)) for c, v in zip(named, values, strict=True)
                ),
                details=details_json({"method": "exact-shapley", "efficiency": {
                    "u_full_minus_u_empty": float(values.sum())}}),
            )
        )
    attest.append_records(store, key, valuations)
    return time.perf_counter() - started


def make_events(n: int, rng: np.random.Generator) -> pa.Table:
    """`n` calls over the models inside EPOCH, in NumPy and Arrow (no Python loop per event)."""
    start, _ = epoch_bounds(EPOCH)
    names = pa.array([f"model{m:03d}" for m in range(MODELS)])
    callers = pa.array([f"caller{c:04d}" for c in range(1000)])
    seq = pa.array(np.arange(n), pa.int64())
    units = rng.integers(1, 100, size=n)
    offsets_us = np.sort(rng.integers(0, 86_400_000_000, size=n))
    base = np.datetime64(start.replace(tzinfo=None), "us")
    return pa.table(
        {
            "event_id": pc.binary_join_element_wise("evt-", pc.cast(seq, pa.string()), ""),
            "model": names.take(pa.array(rng.integers(0, MODELS, size=n))),
            "caller": callers.take(pa.array(rng.integers(0, 1000, size=n))),
            "units": pa.array(units, pa.int64()),
            "fee": pa.array(units * rng.integers(1, 500, size=n), pa.int64()),
            "occurred_at": pa.array(base + offsets_us.astype("timedelta64[us]")),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 events")
    args = parser.parse_args()
    n = 100_000 if args.quick else args.events
    rng = np.random.default_rng(6)
    key = SigningKey.generate()
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp) / "lineage.duckdb")
        store.migrate()
        log_s = build_log(store, key, rng)
        print(f"log: {DATASETS} datasets, {MODELS} models, {VALUED} valuations, "
              f"{CONTRIBUTORS:,} contributors in {log_s:.2f} s")

        table = make_events(n, rng)
        parquet = Path(tmp) / "events.parquet"
        pq.write_table(table, parquet)

        t0 = time.perf_counter()
        read = usage.read_events(parquet)
        t1 = time.perf_counter()
        valid = usage.validate_events(read)
        t2 = time.perf_counter()
        inserted, replays = usage.ingest(store, valid)
        t3 = time.perf_counter()
        bulk = t3 - t1
        print(f"ingest: {inserted:,} events ({replays} replays) from Parquet: "
              f"read {t1 - t0:.2f} s, validate {t2 - t1:.2f} s, ingest {t3 - t2:.2f} s")
        print(f"ingest (validate + usage.ingest): {n / bulk:,.0f} events/s "
              f"(target >= 500,000), {n / (t3 - t0):,.0f} events/s including the Parquet read")

        t4 = time.perf_counter()
        replayed = usage.ingest(store, valid)
        t5 = time.perf_counter()
        print(f"replay of the same {n:,} events: {replayed[0]} inserted, {replayed[1]:,} dropped "
              f"in {t5 - t4:.2f} s")

        now = epoch_bounds(EPOCH)[1] + timedelta(hours=1)
        t6 = time.perf_counter()
        [statement] = settle(store, key, Policy.default(), now)
        t7 = time.perf_counter()
        print(f"settle: epoch {statement.epoch}, fees {statement.fees_total:,} paid to "
              f"{len(statement.payouts):,} accounts in {t7 - t6:.2f} s (target < 10 s); "
              f"{len(statement.refusals)} valuations refused")
        t8 = time.perf_counter()
        settle(store, key, Policy.default(), now, EPOCH)
        t9 = time.perf_counter()
        verify_settlements(store)
        t10 = time.perf_counter()
        print(f"settle again (already settled): {t9 - t8:.2f} s; "
              f"re-derive for verify: {t10 - t9:.2f} s")


if __name__ == "__main__":
    main()
