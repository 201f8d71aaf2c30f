"""Per-call settlement (issue 18) on the example's digits split: calls near the noisy
contributor's rows pay it less than calls near the best contributor's rows pay that one, every
epoch pays its fees to the unit, settling twice pays once, verify re-derives the attribution,
and training data that cannot be found by its signed hash refuses the settlement."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml
from sklearn.linear_model import LogisticRegression

from lineage_platform import attest, usage
from lineage_platform.allocation import CallPolicy, Policy
from lineage_platform.calls import GLOBAL
from lineage_platform.errors import LineageError, TrainingDataError, VerificationError
from lineage_platform.hashing import sha256_file
from lineage_platform.records import AttributionRecord, Contributor, DvcRef, InputRef, RunRef
from lineage_platform.settlement import settle, verify_settlements
from lineage_platform.signing import SigningKey
from lineage_platform.stores import Store
from tests.ledger_world import RECORDED, signed_state

ROOT = Path(__file__).resolve().parents[1]
MODEL = "digits_classifier"
POLICY = Policy(500, 1500, 8000, calls=((MODEL, CallPolicy(k=5, neighbours=15)),))
NOW = datetime(2026, 1, 20, tzinfo=UTC)


@dataclass
class Example:
    root: Path
    store: Store
    key: SigningKey
    parts: dict[str, tuple[np.ndarray, np.ndarray]]
    model: LogisticRegression
    part_index: dict[str, int]


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Example:
    """The example's contributor parts as files, signed as the pipeline signs them: one
    `contributions` record per part (sha256, DVC path and md5), the datanet, the model."""
    from assets.prepare import FEATURES, LABEL, make_split

    root = tmp_path_factory.mktemp("percall") / "project"
    _, key, store = signed_state(root)
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    frames, _ = make_split(params)
    (root / "data" / "parts").mkdir(parents=True)
    index: dict[str, int] = {}
    refs = []
    for c, frame in frames.items():
        rel = f"data/parts/{c}.parquet"
        frame.to_parquet(root / rel, index=False)
        digest = sha256_file(root / rel)
        md5 = hashlib.md5((root / rel).read_bytes()).hexdigest()
        rec = AttributionRecord(
            kind="dataset", asset="contributions", partition=c, sha256=digest,
            recorded_at=RECORDED, contributors=(Contributor(c, rows=len(frame)),),
            dvc=DvcRef(rel, md5), run=RunRef("dagster", f"run-{c}", len(index)),
        )
        index[c] = attest.append_records(store, key, [rec]).indices[0]
        refs.append(InputRef("contributions", digest, index[c]))
    datanet = AttributionRecord(kind="dataset", asset="datanet", sha256="d" * 64,
                                recorded_at=RECORDED, inputs=tuple(refs))
    d_idx = attest.append_records(store, key, [datanet]).indices[0]
    model = AttributionRecord(kind="model", asset=MODEL, sha256="e" * 64, recorded_at=RECORDED,
                              inputs=(InputRef("datanet", "d" * 64, d_idx),))
    attest.append_records(store, key, [model])
    parts = {c: (f[FEATURES].to_numpy(float), f[LABEL].to_numpy()) for c, f in frames.items()}
    x = np.concatenate([p[0] for p in parts.values()])
    y = np.concatenate([p[1] for p in parts.values()])
    clf = LogisticRegression(max_iter=300).fit(x / 16.0, y)
    return Example(root, store, key, parts, clf, index)


def calls_near(ex: Example, contributor: str, day: str, n: int, prefix: str,
               fee: int = 1_003, with_input: bool = True) -> pa.Table:
    """`n` calls at inputs a little noise away from the contributor's rows, served the model's
    prediction (inputs as the part files store features)."""
    rng = np.random.default_rng(abs(hash((contributor, day, prefix))) % 2**32)
    x = ex.parts[contributor][0]
    pick = rng.choice(len(x), size=n, replace=True)
    inputs = x[pick] + rng.normal(scale=0.3, size=(n, x.shape[1]))
    served = ex.model.predict(inputs / 16.0)
    start = datetime.strptime(day, "%Y-%m-%d")
    return pa.table({
        "event_id": [f"{prefix}-{i}" for i in range(n)],
        "model": [MODEL] * n, "caller": ["acme"] * n,
        "units": pa.array([1] * n, pa.int64()), "fee": pa.array([fee] * n, pa.int64()),
        "occurred_at": pa.array([start + timedelta(seconds=i) for i in range(n)],
                                pa.timestamp("us")),
        "input": pa.array([r.tolist() for r in inputs] if with_input else [None] * n,
                          pa.list_(pa.float64())),
        "output": pa.array([str(v) for v in served] if with_input else [None] * n, pa.string()),
    })


def payouts(store: Store, epoch: str) -> dict[str, int]:
    return {p.account: p.amount for p in store.payouts(epoch=epoch)}


def test_calls_near_the_noisy_contributor_pay_it_less_and_epochs_pay_their_fees(
    example: Example,
) -> None:
    ex = example
    days = {"erin": "2026-01-10", "alice": "2026-01-11"}
    for who, day in days.items():
        usage.ingest(ex.store, usage.validate_events(calls_near(ex, who, day, 300, who),
                                                     now=NOW))
    # An epoch mixing calls with inputs and calls without (they follow the lineage).
    mixed = pa.concat_tables([calls_near(ex, "bob", "2026-01-12", 50, "b"),
                              calls_near(ex, "bob", "2026-01-12", 20, "g", with_input=False)])
    usage.ingest(ex.store, usage.validate_events(mixed, now=NOW))
    statements = settle(ex.store, ex.key, POLICY, NOW, project_dir=ex.root)
    assert [s.epoch for s in statements] == [*days.values(), "2026-01-12"]
    for st in statements:
        assert st.paid_total == st.fees_total == sum(n for _, n in st.payouts)
        assert sum(payouts(ex.store, st.epoch).values()) == st.fees_total
    noisy = payouts(ex.store, days["erin"]).get("contributor:erin", 0)
    best = payouts(ex.store, days["alice"]).get("contributor:alice", 0)
    assert noisy < best / 2, (noisy, best)
    # Data part of an epoch whose calls were all attributed: 80% of the fees, to contributors.
    data = sum(n for a, n in payouts(ex.store, days["alice"]).items()
               if a.startswith("contributor:"))
    assert data == 300 * 1_003 * 8_000 // 10_000
    with ex.store.snapshot() as view:
        leaves = view.receipt_leaves("2026-01-12")
        assert leaves.num_rows == 70
        assert view.receipt_epoch("g-3") == "2026-01-12"
    again = settle(ex.store, ex.key, POLICY, NOW + timedelta(days=1), "2026-01-10",
                   project_dir=ex.root)
    assert again[0].already_settled and again[0].root == statements[0].root
    assert verify_settlements(ex.store, ex.root) == 3


def test_global_fallback_and_leaves_name_the_method(example: Example) -> None:
    from lineage_platform.calls import settle_calls
    from lineage_platform.settlement import _records

    ex = example
    table = pa.concat_tables([calls_near(ex, "carol", "2026-01-13", 5, "c"),
                              calls_near(ex, "carol", "2026-01-13", 2, "n", with_input=False),
                              calls_near(ex, "frank", "2026-01-13", 40, "f")])
    usage.ingest(ex.store, usage.validate_events(table, now=NOW))
    with ex.store.snapshot() as view:
        calls = view.calls("2026-01-13")
        records = dict(_records(view.envelopes(("model", "dataset", "valuation"))))
    model_index = max(i for i, r in records.items() if r.kind == "model")
    done = settle_calls("2026-01-13", POLICY, calls, {MODEL: model_index}, records, ex.root,
                        keep=True)
    assert done is not None and done.calls == 47 and done.attributed >= 40
    import json

    leaves = {json.loads(d)["event_id"]: json.loads(d) for d in done.leaf_data}
    # frank's rows are copies of dave's: calls near them credit the earliest signer, dave.
    near_frank = [dict(leaves[f"f-{i}"]["weights"]) for i in range(40)]
    assert all("frank" not in w for w in near_frank)
    assert sum("dave" in w for w in near_frank) >= 30
    assert leaves["n-0"]["method"] == GLOBAL and leaves["n-0"]["fallback"] == "no input"
    assert leaves["c-0"]["method"] == "knn-shapley-call"
    assert sum(w for _, w in leaves["c-0"]["weights"]) == 1 << 24
    share = done.shares[MODEL]
    paid_calls = [e for e, leaf in leaves.items() if leaf["method"] != GLOBAL]
    assert share.fee == 1_003 * len(paid_calls)
    assert sum(share.credits.values()) == Fraction(share.fee * 8_000, 10_000)  # exact


def test_verify_names_a_changed_call_input(example: Example, tmp_path: Path) -> None:
    import duckdb

    ex = example
    usage.ingest(ex.store, usage.validate_events(calls_near(ex, "dave", "2026-01-14", 20, "v"),
                                                 now=NOW))
    settle(ex.store, ex.key, POLICY, NOW, "2026-01-14", project_dir=ex.root)
    copy = tmp_path / "copy.duckdb"
    shutil.copy(ex.store.describe(), copy)
    with duckdb.connect(str(copy)) as con:
        con.execute("UPDATE usage_events SET call_input = (SELECT call_input FROM usage_events "
                    "WHERE event_id = 'v-1') WHERE event_id = 'v-0'")
    from lineage_platform.stores import open_store

    with pytest.raises(VerificationError, match=r"2026-01-14: .* does not match the re-derived"):
        verify_settlements(open_store(copy), ex.root)
    with pytest.raises(VerificationError, match="needs the project's training data"):
        verify_settlements(ex.store, None)


def test_training_rows_not_found_by_their_signed_hash_refuse_the_settlement(
    example: Example, tmp_path: Path
) -> None:
    ex = example
    project = tmp_path / "moved"
    shutil.copytree(ex.root, project)
    usage.ingest(ex.store, usage.validate_events(calls_near(ex, "erin", "2026-01-15", 3, "t"),
                                                 now=NOW))
    # One row of erin's part changed: its bytes no longer hash to the signed sha256.
    part = project / "data" / "parts" / "erin.parquet"
    import pandas as pd

    frame = pd.read_parquet(part)
    frame.loc[0, "label"] = (int(frame.loc[0, "label"]) + 1) % 10
    frame.to_parquet(part, index=False)
    with pytest.raises(TrainingDataError, match=rf"record {ex.part_index['erin']} "
                                                r"\(contributions\[erin\].*not found with its "
                                                r"signed hash \(looked in"):
        settle(ex.store, ex.key, POLICY, NOW, "2026-01-15", project_dir=project)
    part.unlink()
    with pytest.raises(TrainingDataError, match="not found with its signed hash"):
        settle(ex.store, ex.key, POLICY, NOW, "2026-01-15", project_dir=project)
    assert ex.store.settled_epoch("2026-01-15") is None
    assert issubclass(TrainingDataError, LineageError)  # one line through the CLI, exit 13


@pytest.mark.parametrize("name", ["alice", "zoë", 'quote"back\\slash', "日本", "a/b"])
def test_a_call_leaf_is_the_canonical_json_of_its_fields(name: str) -> None:
    from lineage_platform.calls import call_leaf
    from lineage_platform.canonical import canonical_json

    fields = {"epoch": "2026-01-05", "event_id": f"id-{name}", "model": "m", "fee": 10**15,
              "method": "knn-shapley-call", "input": "sha256:" + "ab" * 32, "output": name,
              "weight_bits": 24, "weights": [[name, 3], ["b", 2**24 - 3]], "fallback": None}
    leaf = call_leaf("2026-01-05", f"id-{name}", "m", 10**15, "knn-shapley-call",
                     "sha256:" + "ab" * 32, name, [(name, 3), ("b", 2**24 - 3)])
    assert leaf == canonical_json(fields)
    nothing = call_leaf("2026-01-05", "e", "m", 0, GLOBAL, None, None, [], "no input")
    assert nothing == canonical_json({**fields, "event_id": "e", "fee": 0, "method": GLOBAL,
                                      "input": None, "output": None, "weights": [],
                                      "fallback": "no input"})
