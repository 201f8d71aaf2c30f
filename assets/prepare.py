"""The `prepare` stage of dvc.yaml: split scikit-learn's bundled digits into contributors' parts.

    python -m assets.prepare --params params.yaml --out data
    # writes data/parts/<contributor>.parquet and data/validation.parquet

The split is deliberately uneven so valuation has something to find: honest contributors of
different sizes, one with partly flipped labels, one re-submitting another's rows.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from sklearn.datasets import load_digits

FEATURES = [f"px_{i:02d}" for i in range(64)]
LABEL = "label"
CONTRIBUTOR = "contributor"


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        params: dict[str, Any] = yaml.safe_load(fh)
    return params


def make_split(params: dict[str, Any]) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Return (parts by contributor id, validation frame); deterministic for a given seed."""
    cfg = params["datanet"]
    rng = np.random.default_rng(int(cfg["seed"]))
    digits = load_digits()
    x = digits.data.astype(np.int64)
    y = digits.target.astype(np.int64)
    order = rng.permutation(len(y))
    n_val = round(len(y) * float(cfg["validation_fraction"]))
    frame = pd.DataFrame(x, columns=FEATURES)
    frame[LABEL] = y
    validation = frame.iloc[order[:n_val]].reset_index(drop=True)
    pool = order[n_val:]

    shares = {str(k): float(v) for k, v in cfg["contributors"].items()}
    total = sum(shares.values())
    bounds = np.cumsum([0.0] + [s / total for s in shares.values()])
    cuts = np.round(bounds * len(pool)).astype(int)
    parts: dict[str, pd.DataFrame] = {}
    for (name, _), lo, hi in zip(shares.items(), cuts[:-1], cuts[1:], strict=True):
        parts[name] = frame.iloc[pool[lo:hi]].reset_index(drop=True)

    noisy = cfg.get("noisy")
    if noisy:
        part = parts[noisy["contributor"]].copy()
        n_flip = round(len(part) * float(noisy["label_flip_fraction"]))
        flip = rng.choice(len(part), size=n_flip, replace=False)
        # A flipped label is always wrong: shift by 1..9 modulo 10.
        part.loc[flip, LABEL] = (part.loc[flip, LABEL] + rng.integers(1, 10, size=n_flip)) % 10
        parts[noisy["contributor"]] = part

    dup = cfg.get("duplicate")
    if dup:
        source = parts[dup["copies"]]
        n_copy = round(len(source) * float(dup["fraction"]))
        parts[dup["contributor"]] = source.iloc[:n_copy].reset_index(drop=True)
    return parts, validation


def write_split(params: dict[str, Any], out: Path) -> None:
    parts, validation = make_split(params)
    (out / "parts").mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        part.to_parquet(out / "parts" / f"{name}.parquet", index=False)
    validation.to_parquet(out / "validation.parquet", index=False)


def write_union(parts_dir: Path, out: Path) -> None:
    """The datanet: every part's rows, tagged with the contributor that supplied them."""
    frames = []
    for path in sorted(parts_dir.glob("*.parquet")):
        frame = pd.read_parquet(path)
        frame.insert(0, CONTRIBUTOR, path.stem)
        frames.append(frame)
    pd.concat(frames, ignore_index=True).to_parquet(out, index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="data")
    parser.add_argument("--union", action="store_true", help="write data/datanet.parquet instead")
    args = parser.parse_args()
    out = Path(args.out)
    if args.union:
        write_union(out / "parts", out / "datanet.parquet")
    else:
        write_split(load_params(args.params), out)


if __name__ == "__main__":
    main()
