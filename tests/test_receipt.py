"""Call receipts (issue 18): a settled call's receipt verifies offline with the public key alone,
its amounts add up to the epoch's payouts before the one rounding, and an edited amount,
contributor or fee fails naming the field; an edited leaf is not in the signed statement."""

from __future__ import annotations

import base64
import copy
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from lineage_platform import usage
from lineage_platform.errors import ReceiptError
from lineage_platform.receipt import call_receipt, verify_receipt
from lineage_platform.settlement import settle
from lineage_platform.signing import SigningKey, TrustStore
from tests.test_attribution_settlement import NOW, POLICY, Example, calls_near, example

__all__ = ["example"]  # the module fixture, shared with the settlement tests
DAY = "2026-01-16"
CALLS = 60


@pytest.fixture(scope="module")
def settled(example: Example) -> Example:
    table = pa.concat_tables([calls_near(example, "bob", DAY, CALLS, "r"),
                              calls_near(example, "bob", DAY, 3, "q", with_input=False)])
    usage.ingest(example.store, usage.validate_events(table, now=NOW))
    settle(example.store, example.key, POLICY, NOW, DAY, project_dir=example.root)
    return example


def receipt_of(ex: Example, event_id: str) -> dict[str, Any]:
    # Through JSON text, as a receipt file travels.
    out: dict[str, Any] = json.loads(json.dumps(
        call_receipt(ex.store, event_id, ex.root).to_json()))
    return out


def test_a_receipt_verifies_with_the_public_key_alone(settled: Example) -> None:
    receipt = receipt_of(settled, "r-7")
    trust = TrustStore.of(settled.key.public_key)
    assert verify_receipt(receipt, trust) is None
    assert receipt["method"] == "knn-shapley-call" and receipt["fee"] == 1_003
    data = Fraction(receipt["data_share"])
    assert data == Fraction(1_003 * 8_000, 10_000)
    assert sum(Fraction(c["amount"]) for c in receipt["credits"]) == data
    assert receipt["credits"] and all(c["weight"] > 0 for c in receipt["credits"])
    with pytest.raises(ReceiptError, match=r"receipt field statement: .*not trusted"):
        verify_receipt(receipt, TrustStore.of(SigningKey.generate().public_key))


def test_a_call_without_input_has_a_global_receipt(settled: Example) -> None:
    receipt = receipt_of(settled, "q-1")
    verify_receipt(receipt, TrustStore.of(settled.key.public_key))
    assert (receipt["method"], receipt["fallback"], receipt["credits"]) == (
        "global", "no input", [])


def test_receipts_add_up_to_the_payouts_before_the_one_rounding(settled: Example) -> None:
    totals: dict[str, Fraction] = {}
    for i in range(CALLS):
        for c in receipt_of(settled, f"r-{i}")["credits"]:
            totals[c["contributor"]] = totals.get(c["contributor"], Fraction(0)) + Fraction(
                c["amount"])
    paid = {p.account: p.amount for p in settled.store.payouts(epoch=DAY)}
    # The 3 calls without input pay by the lineage (rows): subtract what can only come from
    # them, bounded by their data share, and each account is its exact sum rounded once.
    global_data = Fraction(3 * 1_003 * 8_000, 10_000)
    for contributor, exact in totals.items():
        got = paid[f"contributor:{contributor}"]
        assert exact - 1 < got < exact + global_data + 1


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r["credits"][0].update(amount="1"), r"credits\[0\]\.amount"),
        (lambda r: r["credits"][0].update(contributor="mallory"), r"credits\[0\]\.contributor"),
        (lambda r: r["credits"][0].update(weight=r["credits"][0]["weight"] + 1),
         r"credits\[0\]\.weight"),
        (lambda r: r.update(fee=r["fee"] + 1), "receipt field fee"),
        (lambda r: r.update(data_share="1"), "receipt field data_share"),
        (lambda r: r.update(epoch="2026-01-17"), "receipt field epoch"),
        (lambda r: r["credits"].pop(), "receipt field credits: shows"),
    ],
)
def test_an_edited_receipt_fails_naming_the_field(
    settled: Example, edit: Any, message: str
) -> None:
    receipt = receipt_of(settled, "r-7")
    edit(receipt)
    with pytest.raises(ReceiptError, match=message):
        verify_receipt(receipt, TrustStore.of(settled.key.public_key))


def test_an_edited_leaf_is_not_in_the_signed_statement(settled: Example) -> None:
    receipt = receipt_of(settled, "r-7")
    leaf = json.loads(base64.b64decode(receipt["proof"]["leaf"]))
    forged = copy.deepcopy(leaf)
    forged["weights"][0][0] = "mallory"
    from lineage_platform.canonical import canonical_json

    receipt["proof"]["leaf"] = base64.b64encode(canonical_json(forged)).decode()
    receipt["credits"][0]["contributor"] = "mallory"
    with pytest.raises(ReceiptError, match="receipt field proof: the call's leaf is not in the "
                                           f"signed statement of {DAY}"):
        verify_receipt(receipt, TrustStore.of(settled.key.public_key))


def test_no_receipt_for_a_call_not_settled_per_call(settled: Example) -> None:
    with pytest.raises(ReceiptError, match="no settled per-call epoch holds it"):
        call_receipt(settled.store, "never-made", settled.root)


def test_lineage_receipt_and_verify_receipt_on_the_command_line(
    settled: Example, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    kept = ("LINEAGE_VERIFIER_STATE", "LINEAGE_USER_CONFIG")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEAGE_") or k in kept}
    env.update(LINEAGE_PROJECT=str(settled.root), LINEAGE_HOME=str(settled.root / ".lineage"))

    def lineage(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lineage_platform.cli", *args], env=env,
                              capture_output=True, text=True, timeout=300)

    shown = lineage("receipt", "r-7")
    assert shown.returncode == 0, shown.stderr
    assert "call r-7 of digits_classifier, epoch 2026-01-16" in shown.stdout
    assert "method knn-shapley-call" in shown.stdout
    done = lineage("receipt", "r-7", "--json")
    assert done.returncode == 0, done.stderr
    path = tmp_path / "r-7.json"
    path.write_text(done.stdout, encoding="utf-8")
    keys = tmp_path / "keys.json"
    TrustStore.of(settled.key.public_key).save(keys)
    ok = lineage("verify", "--receipt", str(path), "--keys", str(keys))
    assert ok.returncode == 0, ok.stderr
    assert "receipt of call r-7 (2026-01-16): verified" in ok.stdout
    edited = json.loads(done.stdout)
    edited["credits"][0]["amount"] = "999"
    path.write_text(json.dumps(edited), encoding="utf-8")
    bad = lineage("verify", "--receipt", str(path), "--keys", str(keys))
    assert bad.returncode == 7
    assert "receipt field credits[0].amount" in bad.stderr and "Traceback" not in bad.stderr
    # The whole store: per-call epochs re-derived from the project's training parts.
    whole = lineage("verify", "--keys", str(keys), "--json")
    assert whole.returncode == 0, whole.stderr


def test_a_receipt_of_any_shape_fails_with_one_line(settled: Example) -> None:
    """Every key removed, and every value swapped for a value of another type: ReceiptError."""
    base = receipt_of(settled, "r-7")
    trust = TrustStore.of(settled.key.public_key)

    def paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        found = [prefix] if prefix else []
        if isinstance(obj, dict):
            for k, v in obj.items():
                found += paths(v, (*prefix, k))
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                found += paths(v, (*prefix, i))
        return found

    for path in paths(base):
        if path == ("statement", "log_index"):
            continue  # a pointer into the log; the envelope it names is what is checked
        for replacement in (None, 7, "x", [], {}, True, -1, 2**70):
            edited = copy.deepcopy(base)
            holder = edited
            for step in path[:-1]:
                holder = holder[step]
            holder[path[-1]] = replacement
            if edited == base:
                continue
            with pytest.raises(ReceiptError):
                verify_receipt(edited, trust)
        edited = copy.deepcopy(base)
        holder = edited
        for step in path[:-1]:
            holder = holder[step]
        if isinstance(holder, dict) and holder[path[-1]] is not None:  # absent = null
            del holder[path[-1]]
            with pytest.raises(ReceiptError):
                verify_receipt(edited, trust)
