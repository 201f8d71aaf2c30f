"""ValuationResult (digest, details, shares) and content-hash deduplication."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import rfc8785

from lineage_platform.errors import ValuationError
from lineage_platform.valuation import (
    Discount,
    ValuationResult,
    contributor_knn_values,
    dedup_parts,
    row_hashes,
)


def result(vals: tuple[float, ...], **kw: object) -> ValuationResult:
    players = tuple("abcdefgh"[: len(vals)])
    fields: dict[str, object] = dict(
        players=players, values=vals, stderr=(0.0,) * len(vals),
        counts=(1,) * len(vals), method="exact-shapley", seed=None, utility="u", samples=1,
    )
    fields.update(kw)
    return ValuationResult(**fields)  # type: ignore[arg-type]


def test_digest_is_sha256_of_rfc8785_json_of_values() -> None:
    r = result((0.1, 1e-7, 2.0, -3.5e21, 1 / 3))
    expected = hashlib.sha256(rfc8785.dumps(r.as_dict())).hexdigest()
    assert r.digest() == expected
    assert r.canonical_json() == rfc8785.dumps(r.as_dict()).decode()
    assert result((0.1, 1e-7, 2.0, -3.5e21, 1 / 3 + 1e-16)).digest() != expected


def test_details_are_json_safe() -> None:
    r = result((0.5, 0.25), stderr=(math.inf, 0.01), seed=7, method="permutation-shapley",
               discounted=(Discount("b", "a", 3),), stopped_by="MaxSamples(10)")
    details = r.to_details()
    text = json.dumps(details, allow_nan=False)
    assert json.loads(text) == details
    assert details["digest"] == f"sha256:{r.digest()}"
    assert details["stderr"] == {"a": None, "b": 0.01}
    assert details["discounted"] == {
        "rows": 3, "by_contributor": [{"contributor": "b", "credited_to": "a", "rows": 3}]}
    assert {"method", "seed", "samples", "utility", "digest", "discounted"} <= set(details)


def test_shares_clip_negatives_and_normalise() -> None:
    assert result((3.0, -1.0, 1.0)).shares() == {"a": 0.75, "b": 0.0, "c": 0.25}
    assert result((0.0, -2.0)).shares() == {"a": 0.0, "b": 0.0}


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(players=("a", "a")), "duplicate player ids"),
        (dict(players=(), values=(), stderr=(), counts=()), "at least one player"),
        (dict(values=(1.0, math.nan)), "non-finite value"),
        (dict(stderr=(0.0,)), "2 players but 1 stderr"),
        (dict(stderr=(0.0, -1.0)), "standard errors"),
    ],
)
def test_result_validation(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ValuationError, match=message):
        result((1.0, 2.0), **kw)


def test_row_hashes_depend_on_content_only() -> None:
    x = np.array([[1, 2], [1, 2], [0, -0.0], [1, 2]], dtype=float)
    h = row_hashes(x, np.array([5, 5, 1, 6]))
    assert h[0] == h[1] != h[3]  # same features, another label: another row
    assert h[2] == row_hashes(np.array([[0.0, 0.0]]), [1.0])[0]  # -0.0 == 0.0, 1 == 1.0
    assert all(len(v) == 64 and int(v, 16) >= 0 for v in h)
    assert row_hashes(x[:1], np.array(["5"]))[0] != h[0]  # the text "5" is not the number 5


def test_dedup_credits_the_earliest_part() -> None:
    a = np.arange(12, dtype=float).reshape(6, 2)
    ya = np.arange(6)
    parts = {
        "first": (a[:4], ya[:4]),
        "copier": (np.vstack([a[[1, 2]], [[99.0, 99.0]], a[[1]]]), np.array([1, 2, 0, 1])),
        "mixed": (a[[3, 4, 5, 5]], ya[[3, 4, 5, 5]]),
    }
    d = dedup_parts(parts)
    assert d.kept["first"].tolist() == [0, 1, 2, 3]
    assert d.kept["copier"].tolist() == [2]
    assert d.kept["mixed"].tolist() == [1, 2]
    assert d.discounted == (Discount("copier", "first", 3), Discount("mixed", "first", 1),
                            Discount("mixed", "mixed", 1))
    assert d.rows_discounted == 5
    # Signing order decides who was first.
    reordered = dedup_parts(parts, order=["copier", "first", "mixed"])
    assert reordered.kept["copier"].tolist() == [0, 1, 2]
    assert reordered.kept["first"].tolist() == [0, 3]


def test_dedup_bad_input() -> None:
    with pytest.raises(ValuationError, match="player set is empty"):
        dedup_parts({})
    with pytest.raises(ValuationError, match="order does not match parts"):
        dedup_parts({"a": (np.zeros((1, 1)), [0])}, order=["b"])
    with pytest.raises(ValuationError, match="2 feature rows but 1 labels"):
        dedup_parts({"a": (np.zeros((2, 1)), [0])})


def test_contributor_knn_values_bad_input() -> None:
    x, y = np.zeros((3, 2)), np.zeros(3)
    with pytest.raises(ValuationError, match="k must be an integer >= 1"):
        contributor_knn_values({"a": (x, y)}, x, y, k=0)
    with pytest.raises(ValuationError, match="every part is empty"):
        contributor_knn_values({"a": (np.zeros((0, 2)), np.zeros(0))}, x, y)
    with pytest.raises(ValuationError, match="X_test has 3 rows but y_test has 2"):
        contributor_knn_values({"a": (x, y)}, x, y[:2])
