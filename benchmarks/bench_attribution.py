"""Per-call attribution and per-call settlement speed (issue 18): 1,000,000 calls against a model
trained on 50,000 rows x 20 features from 1,000 contributors (generated data).

    .venv/bin/python benchmarks/bench_attribution.py            # 1,000,000 calls
    .venv/bin/python benchmarks/bench_attribution.py --calls 100000

Prints figures, asserts nothing. Targets: attribution at >= 20,000 calls/s on two cores, the
1M-call epoch settled per call in under 60 s. The data: 200 Gaussian clusters in 20 dimensions
(10 labels), 50 rows per contributor drawn from a few clusters each, 1% of rows re-labelled at
random; calls are drawn from the same clusters and served the label of their cluster. The
store is a DuckDB file holding one signed `contributions` record per part (a Parquet file each,
with its DVC path and md5), the datanet and the model; the settlement reads the parts back by
their signed hashes, attributes every call (k=5, 15 neighbours) and writes one receipt leaf
per call, in one transaction.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lineage_platform import attest, usage
from lineage_platform.allocation import CallPolicy, Policy
from lineage_platform.attribution import CallAttributor, TrainingRows
from lineage_platform.records import (
    AttributionRecord,
    Contributor,
    DvcRef,
    InputRef,
    RunRef,
    utc_timestamp,
)
from lineage_platform.settlement import settle
from lineage_platform.signing import SigningKey
from lineage_platform.stores import open_store

EPOCH = "2026-01-05"
MODEL = "bench_model"
CLUSTERS = 200
LABELS = 10


def generate(rows: int, features: int, contributors: int, seed: int = 7) -> tuple[
        dict[str, tuple[np.ndarray, np.ndarray]], np.ndarray, np.ndarray]:
    """Parts by contributor, and the cluster centres and labels calls are drawn from."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-10, 10, size=(CLUSTERS, features))
    labels = rng.integers(0, LABELS, size=CLUSTERS)
    per = rows // contributors
    parts = {}
    for c in range(contributors):
        home = rng.choice(CLUSTERS, size=3, replace=False)
        cluster = rng.choice(home, size=per)
        x = centres[cluster] + rng.normal(size=(per, features))
        y = labels[cluster].copy()
        flip = rng.random(per) < 0.01
        y[flip] = rng.integers(0, LABELS, size=int(flip.sum()))
        parts[f"c{c:04d}"] = (x.round(6), y)
    return parts, centres, labels


def calls(n: int, centres: np.ndarray, labels: np.ndarray, seed: int = 11) -> tuple[
        np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, CLUSTERS, size=n)
    return centres[cluster] + rng.normal(size=(n, centres.shape[1])), labels[cluster]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--contributors", type=int, default=1_000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--no-settle", action="store_true", help="attribution only")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores visible; shared with other work while measured")

    def load() -> str:  # other work on the machine, beside each figure
        return "load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())

    parts, centres, labels = generate(args.rows, args.features, args.contributors)
    x_calls, served = calls(args.calls, centres, labels)
    t = time.perf_counter()
    rows = TrainingRows.from_parts(parts)
    attributor = CallAttributor(rows, k=5, neighbours=15)
    build = time.perf_counter() - t
    t = time.perf_counter()
    credits = attributor.attribute(x_calls, served.astype(str), n_jobs=args.jobs)
    took = time.perf_counter() - t
    print(f"training rows: {rows.x.shape[0]:,} x {rows.dimension} from {len(parts):,} "
          f"contributors (dedup + KD-tree {build:.2f} s)")
    print(f"attribution: {args.calls:,} calls in {took:.2f} s = {args.calls / took:,.0f} calls/s "
          f"({args.jobs} jobs); calls with credit {int((np.diff(credits.indptr) > 0).sum()):,}, "
          f"{len(credits.credit) / args.calls:.1f} contributors per call [{load()}]")
    if args.no_settle:
        return

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = open_store(root / "lineage.duckdb")
        key = SigningKey.generate()
        recorded = utc_timestamp(datetime(2026, 1, 1, tzinfo=UTC))
        (root / "parts").mkdir()
        t = time.perf_counter()
        records = []
        for i, (c, (x, y)) in enumerate(parts.items()):
            rel = f"parts/{c}.parquet"
            table = pa.table({**{f"f{j:02d}": x[:, j] for j in range(x.shape[1])}, "label": y})
            pq.write_table(table, root / rel)
            data = (root / rel).read_bytes()
            records.append(AttributionRecord(
                kind="dataset", asset="contributions", partition=c,
                sha256=hashlib.sha256(data).hexdigest(), recorded_at=recorded,
                contributors=(Contributor(c, rows=len(y)),),
                dvc=DvcRef(rel, hashlib.md5(data).hexdigest()), run=RunRef("bench", "r", i)))
        indices = attest.append_records(store, key, records).indices
        datanet = AttributionRecord(
            kind="dataset", asset="datanet", sha256="d" * 64, recorded_at=recorded,
            inputs=tuple(InputRef("contributions", r.sha256, i)
                         for r, i in zip(records, indices, strict=True)))
        d_idx = attest.append_records(store, key, [datanet]).indices[0]
        attest.append_records(store, key, [AttributionRecord(
            kind="model", asset=MODEL, sha256="e" * 64, recorded_at=recorded,
            inputs=(InputRef("datanet", "d" * 64, d_idx),))])
        print(f"signed lineage: {len(records) + 2:,} records in {time.perf_counter() - t:.1f} s")

        start = datetime(2026, 1, 5)
        n = args.calls
        step = 86_000_000 // n  # microseconds apart, all inside the day
        events = pa.table({
            "event_id": [f"call-{i:07d}" for i in range(n)],
            "model": pa.array([MODEL] * n), "caller": pa.array(["acme"] * n),
            "units": pa.array(np.ones(n, dtype=np.int64)),
            "fee": pa.array(np.full(n, 1_003, dtype=np.int64)),
            "occurred_at": pa.array(np.datetime64(start, "us")
                                    + np.arange(n) * np.timedelta64(step, "us")),
            "input": pa.FixedSizeListArray.from_arrays(
                pa.array(x_calls.ravel()), args.features).cast(pa.list_(pa.float64())),
            "output": pa.array(served.astype(str)),
        })
        t = time.perf_counter()
        usage.ingest(store, usage.validate_events(events, now=datetime(2026, 1, 6, tzinfo=UTC)))
        print(f"ingest: {n:,} calls with inputs in {time.perf_counter() - t:.1f} s")
        policy = Policy(500, 1500, 8000, calls=((MODEL, CallPolicy(k=5, neighbours=15)),))
        t = time.perf_counter()
        [statement] = settle(store, key, policy, datetime(2026, 1, 7, tzinfo=UTC),
                             project_dir=root)
        settle_s = time.perf_counter() - t
        print(f"settle per call: {n:,}-call epoch in {settle_s:.1f} s ({len(statement.payouts):,} "
              f"payouts, fees {statement.fees_total:,} = paid {statement.paid_total:,}) [{load()}]")
        assert statement.fees_total == statement.paid_total



if __name__ == "__main__":
    main()
