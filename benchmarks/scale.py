"""How each figure grows with size: log, settlement, KNN-Shapley, sensor catch-up (3+ sizes each).

    python benchmarks/scale.py                 # the figures in docs/performance.md (~15 min)
    python benchmarks/scale.py --only log knn  # a subset

Log: append (signing included, 2 signing workers, 10,000-record batches), `verify_store`,
`export_bundle`, and the latency of one inclusion proof, at 10k / 100k / 1M records.
Tiles: `export_tiles` (C2SP tlog-tiles, all of it, then incrementally after 1,000 more records)
and `lineage prove`'s proof from the tile cache, at 10k / 100k / 1M records.
Settlement, sensor: the benchmark scripts beside this one at three sizes.
KNN-Shapley: 25k / 50k / 100k rows x 1,000 test rows.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def log_figures(n: int) -> str:
    from lineage_platform.attest import append_records
    from lineage_platform.audit import export_bundle, prove_inclusion, verify_store
    from lineage_platform.records import AttributionRecord, Contributor, RunRef
    from lineage_platform.signing import SigningKey, TrustStore
    from lineage_platform.stores import open_store

    key = SigningKey.generate()
    trust = TrustStore.of(key)
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp) / "log.duckdb")
        batch = 100_000  # generated at a time; appended in pipelined 10,000-record batches
        append_s = 0.0
        for start in range(0, n, batch):
            records = [
                AttributionRecord(
                    kind="dataset", asset="scale/part", partition=f"p{i % 97}",
                    sha256=hashlib.sha256(str(i).encode()).hexdigest(),
                    recorded_at="2026-11-24T00:00:00.000000Z",
                    run=RunRef("dagster", "run-scale", i),
                    contributors=(Contributor(f"c{i % 1000}", rows=1 + i % 50),),
                )
                for i in range(start, min(n, start + batch))
            ]
            t = time.perf_counter()  # the append alone, not building the records to append
            append_records(store, key, records, workers=2, batch_size=10_000)
            append_s += time.perf_counter() - t
        t = time.perf_counter()
        verify_store(store, trust)
        verify_s = time.perf_counter() - t
        t = time.perf_counter()
        export_bundle(store, trust, Path(tmp) / "bundle")
        export_s = time.perf_counter() - t
        t = time.perf_counter()
        prove_inclusion(store, trust, n // 2)
        prove_s = time.perf_counter() - t
        size_mb = (Path(tmp) / "log.duckdb").stat().st_size / 1e6
    return (f"| {n:,} | {n / append_s:,.0f}/s ({append_s:.1f} s) | {n / verify_s:,.0f}/s "
            f"({verify_s:.1f} s) | {export_s:.1f} s | {prove_s * 1000:.0f} ms | {size_mb:.0f} MB |")


def _scale_log(store: object, key: object, n: int, start: int = 0) -> None:
    from lineage_platform.attest import append_records
    from lineage_platform.records import AttributionRecord, Contributor, RunRef

    for first in range(start, start + n, 100_000):
        records = [
            AttributionRecord(
                kind="dataset", asset="scale/part", partition=f"p{i % 97}",
                sha256=hashlib.sha256(str(i).encode()).hexdigest(),
                recorded_at="2026-11-24T00:00:00.000000Z",
                run=RunRef("dagster", "run-scale", i),
                contributors=(Contributor(f"c{i % 1000}", rows=1 + i % 50),),
            )
            for i in range(first, min(start + n, first + 100_000))
        ]
        append_records(store, key, records, workers=2, batch_size=10_000)  # type: ignore[arg-type]


def tile_figures(n: int) -> str:
    """Tile export (full, then incremental) and the proof from tiles that `lineage prove` uses."""
    from lineage_platform.audit import prove_inclusion
    from lineage_platform.log import verify_inclusion
    from lineage_platform.signing import SigningKey, TrustStore
    from lineage_platform.stores import open_store
    from lineage_platform.tiles import TileDir, export_tiles, prove

    key = SigningKey.generate()
    trust = TrustStore.of(key)
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp) / "log.duckdb")
        _scale_log(store, key, n)
        t = time.perf_counter()
        export_tiles(store, trust, Path(tmp) / "tiles")
        export_s = time.perf_counter() - t
        cache = Path(tmp) / "cache"
        t = time.perf_counter()
        prove(store, trust, n // 2, cache)  # cold: builds the hash-tile cache once
        cold_s = time.perf_counter() - t
        warm, alone = [], []
        for index in (n // 3, n // 2, n - 1):
            t = time.perf_counter()
            prove(store, trust, index, cache)
            warm.append(time.perf_counter() - t)
            t = time.perf_counter()  # the same proof from the tiles alone (no store read)
            tiles, signed = TileDir.open(cache, trust)
            verify_inclusion(tiles.leaf(index), index, n, tiles.inclusion_proof(index),
                             signed.checkpoint.root_hash)
            alone.append(time.perf_counter() - t)
        t = time.perf_counter()
        prove_inclusion(store, trust, n // 2)  # the old way: re-hash every envelope
        rehash_s = time.perf_counter() - t
        _scale_log(store, key, 1_000, start=n)
        t = time.perf_counter()
        export_tiles(store, trust, Path(tmp) / "tiles")
        incremental_s = time.perf_counter() - t
    return (f"| {n:,} | {export_s:.1f} s | {incremental_s * 1000:.0f} ms | "
            f"{cold_s:.1f} s | {min(warm) * 1000:.0f}–{max(warm) * 1000:.0f} ms | "
            f"{min(alone) * 1000:.1f}–{max(alone) * 1000:.1f} ms | {rehash_s * 1000:,.0f} ms |")


def knn_figures(n_train: int, n_test: int = 1000, d: int = 20) -> str:
    import resource

    from lineage_platform.valuation import knn_shapley

    rng = np.random.default_rng(3)
    x = rng.normal(size=(n_train, d))
    y = rng.integers(0, 10, size=n_train)
    xt = rng.normal(size=(n_test, d))
    yt = rng.integers(0, 10, size=n_test)
    t = time.perf_counter()
    knn_shapley(x, y, xt, yt, 5)
    took = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return f"| {n_train:,} x {n_test:,} | {took:.2f} s | {peak:.0f} MB (process peak so far) |"


def run_script(args: list[str]) -> str:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=HERE.parent)
    return proc.stdout.strip() + (f"\n(exit {proc.returncode}: {proc.stderr[-500:]})"
                                  if proc.returncode else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", nargs="*", default=["log", "tiles", "knn", "settlement", "sensor"]
    )
    parser.add_argument("--sizes", nargs="*", type=int, default=[10_000, 100_000, 1_000_000])
    args = parser.parse_args()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(f"machine: {os.cpu_count()} cores, {memory:.0f} GiB")
    if "log" in args.only:
        print("\n| records | append | verify | export | inclusion proof | DuckDB file |")
        print("|---|---|---|---|---|---|")
        for n in args.sizes:
            print(log_figures(n), flush=True)
    if "tiles" in args.only:
        print("\n| records | tile export | + 1,000 records (incremental) | first proof (builds "
              "the tile cache) | `lineage prove` (one store read + tiles) | proof from tiles "
              "alone | proof by re-hashing (before) |")
        print("|---|---|---|---|---|---|---|")
        for n in args.sizes:
            print(tile_figures(n), flush=True)
    if "knn" in args.only:
        print("\n| KNN-Shapley train x test | time | memory |")
        print("|---|---|---|")
        for n in (25_000, 50_000, 100_000):
            print(knn_figures(n), flush=True)
    if "settlement" in args.only:
        for n in (100_000, 300_000, 1_000_000):
            print(f"\n## bench_settlement.py --events {n}")
            print(run_script([str(HERE / "bench_settlement.py"), "--events", str(n)]), flush=True)
    if "sensor" in args.only:
        for n in (1_000, 3_000, 10_000):
            print(f"\n## bench_sensor.py --events {n}")
            print(run_script([str(HERE / "bench_sensor.py"), "--events", str(n)]), flush=True)


if __name__ == "__main__":
    main()
