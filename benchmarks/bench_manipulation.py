"""Can a contributor game its reward? Split and copy gains on the example datanet, per method.

    .venv/bin/python benchmarks/bench_manipulation.py           # about a minute
    .venv/bin/python benchmarks/bench_manipulation.py --quick   # skips logistic regression k=4

Split gain: a contributor re-submits its part as k identities (rows dealt at random, identities
signed where the original was); the gain is the identities' total over the original value, - 1.
Copy gain: a new identity, signed last, submits a copy of a victim's rows; the gain is the
copier's value over the victim's original value, and the victim's change is shown too.
Methods: the default (row-level KNN-Shapley, k = 5, summed per contributor, duplicates credited
once to the earliest part) and exact contributor-level Shapley with a KNN classifier and a
logistic regression, as an explicit choice, without and with deduplication. Prints figures,
asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from lineage_platform.valuation import (
    ValuationResult,
    contributor_game,
    contributor_knn_values,
    exact_shapley,
)

ROOT = Path(__file__).resolve().parents[1]
Parts = dict[str, tuple[np.ndarray, np.ndarray]]
Method = Callable[[Parts], ValuationResult]
TARGET = "alice"
VICTIM = "bob"


def load_example() -> tuple[Parts, np.ndarray, np.ndarray]:
    sys.path.insert(0, str(ROOT))
    from assets.prepare import FEATURES, LABEL, load_params, make_split

    frames, validation = make_split(load_params(ROOT / "params.yaml"))
    parts = {n: (f[FEATURES].to_numpy() / 16.0, f[LABEL].to_numpy()) for n, f in frames.items()}
    return parts, validation[FEATURES].to_numpy() / 16.0, validation[LABEL].to_numpy()


def split(parts: Parts, who: str, k: int, seed: int = 0) -> Parts:
    x, y = parts[who]
    shards = np.array_split(np.random.default_rng(seed).permutation(len(y)), k)
    out: Parts = {}
    for name, part in parts.items():
        if name == who:
            out.update({f"{who}#{i}": (x[idx], y[idx]) for i, idx in enumerate(shards)})
        else:
            out[name] = part
    return out


def total(result: ValuationResult, who: str) -> float:
    return sum(v for p, v in result.as_dict().items() if p == who or p.startswith(f"{who}#"))


def knn() -> KNeighborsClassifier:
    # Tree search: distance ties broken alike in loky workers and here (not so for "brute").
    return KNeighborsClassifier(n_neighbors=5, algorithm="ball_tree")


def logistic() -> LogisticRegression:
    return LogisticRegression(max_iter=300)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*(converge|max_iter).*")
    parts, x_val, y_val = load_example()

    def default(p: Parts) -> ValuationResult:
        return contributor_knn_values(p, x_val, y_val, k=5)

    def contributor_level(make: Callable[[], object], dedup: bool) -> Method:
        def run(p: Parts) -> ValuationResult:
            game = contributor_game(p, x_val, y_val, make, dedup=dedup,  # type: ignore[arg-type]
                                    n_jobs=2, backend="loky")
            return exact_shapley(game)
        return run

    methods: list[tuple[str, Method, bool]] = [
        ("default: row KNN-Shapley (k=5), dedup", default, True),
        ("contributor exact Shapley, KNN(5), no dedup", contributor_level(knn, False), True),
        ("contributor exact Shapley, KNN(5), dedup", contributor_level(knn, True), True),
        ("contributor exact Shapley, LogReg, no dedup", contributor_level(logistic, False),
         not args.quick),
        ("contributor exact Shapley, LogReg, dedup", contributor_level(logistic, True),
         not args.quick),
    ]
    print(f"example datanet: {', '.join(f'{n} {len(p[1])}' for n, p in parts.items())} rows; "
          f"{len(y_val)} validation rows")
    print(f"split: {TARGET} re-submits as k identities; copy: 'mallory' copies {VICTIM}'s rows\n")
    header = (f"{'method':46s} {'split k=2':>10s} {'split k=4':>10s} {'copy gain':>10s} "
              f"{'victim':>8s} {'honest rank kept':>17s} {'time':>7s}")
    print(header)
    print("-" * len(header))
    for label, method, run_k4 in methods:
        start = time.perf_counter()
        base = method(parts)
        honest = ("alice", "bob", "carol", "dave")
        rank = sorted(honest, key=lambda n: -total(base, n))
        gains, kept = [], True
        for k in (2, 4):
            if k == 4 and not run_k4:
                gains.append(float("nan"))
                continue
            after = method(split(parts, TARGET, k))
            gains.append(total(after, TARGET) / total(base, TARGET) - 1)
            kept &= sorted(honest, key=lambda n: -total(after, n)) == rank
        copied = method({**parts, "mallory": parts[VICTIM]})
        copy_gain = total(copied, "mallory") / total(base, VICTIM)
        victim = total(copied, VICTIM) / total(base, VICTIM) - 1
        seconds = time.perf_counter() - start
        print(f"{label:46s} {gains[0]:+10.1%} {gains[1]:+10.1%} {copy_gain:10.1%} "
              f"{victim:+8.1%} {'yes' if kept else 'NO':>17s} {seconds:6.1f}s")
        values = ", ".join(f"{p} {v:+.4f}" for p, v in base.as_dict().items())
        print(f"{'':46s} values: {values}")


if __name__ == "__main__":
    main()
