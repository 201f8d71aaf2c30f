"""Where the clinics' rows come from: scikit-learn's bundled diabetes study, split once.

    north = clinic_rows("north")   # a DataFrame: ten features, `progression`, `source`
    x, y = holdout_rows()[FEATURES], holdout_rows()[LABEL]

No download at run time: the 442 patients ship inside scikit-learn. `progression` is the study's
target, a quantitative measure of disease progression one year after baseline (25 to 346). A
fixed seed holds out a quarter of the patients for evaluation and splits the rest into four
clinics of different sizes. West's export reverses the scale (a mapping bug in its lab system:
346 reads as 25 and 25 as 346), so its rows make the model worse: a valuation should give west
nothing.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd
from sklearn.datasets import load_diabetes

FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
LABEL = "progression"
SOURCE = "source"
CLINICS = {"north": 0.30, "south": 0.25, "east": 0.15, "west": 0.30}
HOLDOUT = 0.25
SEED = 14


@cache
def _split() -> dict[str, pd.DataFrame]:
    study = load_diabetes(as_frame=True).frame
    frame = study[FEATURES].assign(**{LABEL: study["target"]})
    reversed_scale = float(study["target"].min() + study["target"].max())
    order = np.random.default_rng(SEED).permutation(len(frame))
    n_holdout = int(len(frame) * HOLDOUT)
    out = {"holdout": frame.iloc[order[:n_holdout]].reset_index(drop=True)}
    rest = order[n_holdout:]
    bounds = np.cumsum([0, *(round(share * len(rest)) for share in CLINICS.values())])
    bounds[-1] = len(rest)
    for clinic, lo, hi in zip(CLINICS, bounds[:-1], bounds[1:], strict=True):
        part = frame.iloc[rest[lo:hi]].reset_index(drop=True)
        if clinic == "west":
            part[LABEL] = reversed_scale - part[LABEL]
        out[clinic] = part
    return out


def clinic_rows(clinic: str) -> pd.DataFrame:
    """One clinic's patients, tagged with the clinic's name in the `source` column."""
    return _split()[clinic].assign(**{SOURCE: clinic})


def holdout_rows() -> pd.DataFrame:
    """Patients no clinic table holds: what the model and the report are scored on."""
    return _split()["holdout"].copy()
