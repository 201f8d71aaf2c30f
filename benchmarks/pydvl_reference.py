"""pyDVL's KNN-Shapley on seeded data: the fixture our `knn_shapley` must match, and its timing.

Runs in its own venv (pyDVL 0.10 needs numpy<2, the project needs numpy>=2):

    python3 -m venv .venv-pydvl
    .venv-pydvl/bin/pip install 'pydvl==0.10.0' 'numpy<2' scikit-learn
    .venv-pydvl/bin/python benchmarks/pydvl_reference.py            # writes the test fixture
    .venv-pydvl/bin/python benchmarks/pydvl_reference.py --bench 50000 1000 [--data F --out F]

The fixture (tests/valuation/fixtures/knn_pydvl.npz) holds 300 training rows (20 of them exact
copies of others, same label, so distances tie exactly) and 40 test rows with 4 features and 3
classes, and pyDVL's values for k = 1, 3, 5 and 10. `--bench` prints one JSON line with the
seconds pyDVL's `KNNShapleyValuation` takes with one job (data from `--data`, an .npz with
x_train, y_train, x_test, y_test, or generated), and can save its values to `--out`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from joblib import parallel_config
from sklearn.neighbors import KNeighborsClassifier

warnings.filterwarnings("ignore", category=FutureWarning)  # pyDVL 0.10's own deprecation noise

from pydvl.valuation.dataset import Dataset  # noqa: E402
from pydvl.valuation.methods.knn_shapley import KNNShapleyValuation  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1] / "tests/valuation/fixtures/knn_pydvl.npz"
KS = (1, 3, 5, 10)


def make_data(n_train: int, n_test: int, n_features: int, n_classes: int, n_copies: int,
              seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(n_classes, n_features))
    n_unique = n_train - n_copies
    y_train = rng.integers(0, n_classes, size=n_unique)
    x_train = centres[y_train] + rng.normal(size=(n_unique, n_features))
    # Exact copies (same features, same label): their distances to every test row tie.
    copies = rng.choice(n_unique, size=n_copies, replace=False)
    x_train = np.concatenate([x_train, x_train[copies]])
    y_train = np.concatenate([y_train, y_train[copies]])
    y_test = rng.integers(0, n_classes, size=n_test)
    x_test = centres[y_test] + rng.normal(size=(n_test, n_features))
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def pydvl_values(data: dict[str, np.ndarray], k: int) -> np.ndarray:
    train = Dataset(data["x_train"], data["y_train"])
    test = Dataset(data["x_test"], data["y_test"])
    valuation = KNNShapleyValuation(KNeighborsClassifier(n_neighbors=k), test, progress=False)
    with parallel_config(n_jobs=1):
        valuation.fit(train)
    result = valuation.result
    values = np.empty(len(data["y_train"]))
    values[np.asarray(result.indices)] = result.values
    return values


def write_fixture(path: Path) -> None:
    data = make_data(n_train=300, n_test=40, n_features=4, n_classes=3, n_copies=20, seed=2019)
    values = {f"values_k{k}": pydvl_values(data, k) for k in KS}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **data, **values, ks=np.array(KS))
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def bench(n_train: int, n_test: int, data_file: Path | None, out: Path | None, k: int) -> None:
    if data_file is not None:
        with np.load(data_file) as f:
            data = {name: f[name] for name in ("x_train", "y_train", "x_test", "y_test")}
    else:
        data = make_data(n_train, n_test, n_features=20, n_classes=10, n_copies=0, seed=1)
    start = time.perf_counter()
    values = pydvl_values(data, k)
    seconds = time.perf_counter() - start
    if out is not None:
        np.save(out, values)
    print(json.dumps({"pydvl_seconds": seconds, "n_train": len(data["y_train"]),
                      "n_test": len(data["y_test"]), "k": k}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", nargs=2, type=int, metavar=("N_TRAIN", "N_TEST"))
    parser.add_argument("--data", type=Path, help="npz with x_train, y_train, x_test, y_test")
    parser.add_argument("--out", type=Path, help="save pyDVL's values here (.npy)")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--fixture", type=Path, default=FIXTURE)
    args = parser.parse_args()
    if args.bench:
        bench(args.bench[0], args.bench[1], args.data, args.out, args.k)
    else:
        write_fixture(args.fixture)


if __name__ == "__main__":
    sys.exit(main())
