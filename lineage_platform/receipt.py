"""Receipts of settled calls (issue 18), and their verification with the public key alone.

    receipt = call_receipt(store, "call-17", project_dir)   # from the store and the project
    verify_receipt(receipt.to_json(), trust)                # None, or ReceiptError naming a field

A receipt carries the call's signed leaf (canonical JSON, base64), its Merkle inclusion path to
the `calls_root` of its epoch's signed settlement statement, and that statement's DSSE envelope:
a verifier checks the signature with the trusted public key, the leaf's inclusion under the
signed root, and then that every field the receipt shows (fee, data share, method, each
contributor, weight and amount) is what the signed leaf and the signed policy give. An edited
field is named; an edited leaf is not in the statement. Amounts are exact fractions of minor
units: the call's data share is fee x data_bps / 10,000 and a contributor's amount is the data
share x weight / 2**weight_bits; the account's integer payout is the epoch's one rounding of its
sum over the epoch's calls (`lineage statement`).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lineage_platform.allocation import BPS_TOTAL, Policy
from lineage_platform.canonical import canonical_json, loads_strict
from lineage_platform.errors import LineageError, ProofError, ReceiptError, shown
from lineage_platform.log import inclusion_proof, leaf_hash, verify_inclusion
from lineage_platform.records import AttributionRecord
from lineage_platform.signing import Envelope, TrustStore, verify_envelope
from lineage_platform.stores import Store

__all__ = ["RECEIPT_VERSION", "Credit", "Receipt", "call_receipt", "verify_receipt"]

RECEIPT_VERSION = 1
_LEAF_FIELDS = ("epoch", "event_id", "model", "fee", "method", "fallback", "input", "output")


def _fraction(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else str(value)


@dataclass(frozen=True, slots=True)
class Credit:
    """One contributor's part of a call: its weight (of 2**weight_bits) and exact amount."""

    contributor: str
    weight: int
    amount: Fraction


@dataclass(frozen=True, slots=True)
class Receipt:
    """A settled call: what it paid whom, and the proof that its epoch's statement says so.

        Receipt.to_json()   # what `lineage receipt EVENT_ID --json` prints
    """

    epoch: str
    event_id: str
    model: str
    fee: int
    data_share: Fraction
    method: str
    fallback: str | None
    input: str | None
    output: str | None
    credits: tuple[Credit, ...]
    data_bps: int
    leaf: bytes
    leaf_index: int
    tree_size: int
    path: tuple[bytes, ...]
    calls_root: bytes
    statement_index: int
    envelope: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "receipt": RECEIPT_VERSION,
            "epoch": self.epoch,
            "event_id": self.event_id,
            "model": self.model,
            "fee": self.fee,
            "data_bps": self.data_bps,
            "data_share": _fraction(self.data_share),
            "method": self.method,
            "fallback": self.fallback,
            "input": self.input,
            "output": self.output,
            "credits": [
                {"contributor": c.contributor, "weight": c.weight, "amount": _fraction(c.amount)}
                for c in self.credits
            ],
            "proof": {
                "leaf": base64.b64encode(self.leaf).decode(),
                "leaf_index": self.leaf_index,
                "tree_size": self.tree_size,
                "path": [p.hex() for p in self.path],
                "calls_root": self.calls_root.hex(),
            },
            "statement": {
                # Where the statement is in the log: a pointer, not covered by the signature.
                "log_index": self.statement_index,
                "envelope": base64.b64encode(self.envelope).decode(),
            },
        }

    def lines(self) -> list[str]:
        """The receipt for people, one fact a line."""
        out = [
            f"call {self.event_id} of {self.model}, epoch {self.epoch}",
            f"fee {self.fee} (minor units); data share {_fraction(self.data_share)} "
            f"({self.data_bps / 100:g}% of the fee)",
            f"method {self.method}" + (f" ({self.fallback})" if self.fallback else ""),
        ]
        if self.input is not None:
            out.append(f"input {self.input}, served {self.output}")
        for c in self.credits:
            out.append(f"  {c.contributor}: {_fraction(c.amount)} "
                       f"(= {float(c.amount):.4f}, weight {c.weight / (1 << _bits(self)):.4f})")
        if not self.credits:
            out.append("  its data share followed the model's global valuation")
        out.append(f"in the signed statement of {self.epoch} (log index "
                   f"{self.statement_index}): leaf {self.leaf_index} of {self.tree_size}, "
                   f"calls root {self.calls_root.hex()[:16]}…")
        return out


def _bits(receipt: Receipt) -> int:
    bits = loads_strict(receipt.leaf, "receipt leaf").get("weight_bits")
    return int(bits) if isinstance(bits, int) else 0


def _statement(envelope: bytes) -> tuple[AttributionRecord, dict[str, Any]]:
    record = AttributionRecord.from_bytes(Envelope.from_json(envelope).payload)
    return record, record.details_obj() or {}


def call_receipt(store: Store, event_id: str, project_dir: Path) -> Receipt:
    """The receipt of a settled call: its leaf is attributed again (one call) and must hash to
    the leaf stored at settlement; the proof is over the epoch's stored leaves."""
    from lineage_platform.calls import settle_calls
    from lineage_platform.settlement import GRAPH_KINDS, _model_indices, _records

    with store.snapshot() as view:
        epoch = view.receipt_epoch(event_id)
        if epoch is None:
            raise ReceiptError(f"call {shown(event_id)}: no settled per-call epoch holds it "
                               "(not settled yet, or its model is settled globally)")
        settled = view.settled(epoch)
        envelope = view.envelope_at(settled.log_index) if settled is not None else None
        if settled is None or envelope is None:
            raise ReceiptError(f"call {shown(event_id)}: epoch {epoch}'s statement is missing")
        leaves = view.receipt_leaves(epoch)
        calls = view.calls(epoch)
        records = _records(view.envelopes(GRAPH_KINDS, before=settled.log_index))
    _, details = _statement(envelope)
    policy = Policy.from_mapping(details.get("policy"))
    one = calls.filter(pc.equal(calls.column("event_id"), pa.scalar(event_id, pa.string())))
    models = _model_indices(records, one.column("model").to_pylist())
    done = settle_calls(epoch, policy, one, models, dict(records), project_dir, n_jobs=1,
                        keep=True)
    ids = leaves.column("event_id").to_pylist()
    hashes = [bytes(h) for h in leaves.column("leaf_hash").to_pylist()]
    position = ids.index(event_id)
    if done is None or done.leaves[0] != hashes[position]:
        raise ReceiptError(f"call {shown(event_id)}: attributed again, its leaf differs from "
                           f"the one settled in {epoch} (run `lineage verify`)")
    leaf = done.leaf_data[0]
    path = inclusion_proof(hashes, position, len(hashes))
    root = bytes.fromhex(str(details.get("calls_root", "")))
    verify_inclusion(hashes[position], position, len(hashes), path, root)
    return _from_leaf(leaf, policy.data_bps, position, len(hashes), tuple(path), root,
                      settled.log_index, envelope)


def _from_leaf(leaf: bytes, data_bps: int, index: int, size: int, path: tuple[bytes, ...],
               root: bytes, statement_index: int, envelope: bytes) -> Receipt:
    obj = loads_strict(leaf, "receipt leaf")
    fee = int(obj["fee"])
    data = Fraction(fee * data_bps, BPS_TOTAL)
    scale = 1 << int(obj["weight_bits"])
    credits = tuple(Credit(str(c), int(w), data * int(w) / scale) for c, w in obj["weights"])
    return Receipt(
        str(obj["epoch"]), str(obj["event_id"]), str(obj["model"]), fee, data,
        str(obj["method"]), obj.get("fallback"), obj.get("input"), obj.get("output"), credits,
        data_bps, leaf, index, size, path, root, statement_index, envelope,
    )


def _field(obj: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = obj.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        what = getattr(kind, "__name__", "value")
        raise ReceiptError(f"receipt field {name}: missing or not a {what}")
    return value


def _b64(text: object, name: str) -> bytes:
    if not isinstance(text, str):
        raise ReceiptError(f"receipt field {name}: not base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ReceiptError(f"receipt field {name}: not base64 ({exc})") from exc


def verify_receipt(receipt: object, trust: TrustStore) -> None:
    """None if the receipt is in its epoch's signed statement and shows what it signs; else
    `ReceiptError` naming the first field that does not hold (or the proof that fails)."""
    try:
        _verify(receipt, trust)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        # A hand-made file of the wrong shape: one line, never a traceback.
        raise ReceiptError(f"receipt: malformed ({type(exc).__name__}: "
                           f"{shown(str(exc), 80)})") from exc


def _verify(receipt: object, trust: TrustStore) -> None:
    if not isinstance(receipt, dict) or receipt.get("receipt") != RECEIPT_VERSION:
        raise ReceiptError(f"not a version {RECEIPT_VERSION} call receipt")
    statement = _field(receipt, "statement", dict)
    proof = _field(receipt, "proof", dict)
    envelope = _b64(statement.get("envelope"), "statement.envelope")
    try:
        env = Envelope.from_json(envelope)
        verify_envelope(env, trust, "receipt statement")
        record, details = _statement(envelope)
    except LineageError as exc:
        raise ReceiptError(f"receipt field statement: {exc}") from exc
    epoch = _field(receipt, "epoch", str)
    if record.kind != "settlement" or record.partition != epoch:
        raise ReceiptError(f"receipt field epoch: {shown(epoch)} is not the epoch of the signed "
                           f"statement ({shown(str(record.partition))})")
    if "calls_root" not in details:
        raise ReceiptError(f"receipt field statement: the statement of {epoch} has no calls root")
    if proof.get("calls_root") != details["calls_root"]:
        raise ReceiptError(f"receipt field proof.calls_root: shows "
                           f"{shown(repr(proof.get('calls_root')))}, the signed statement "
                           f"{str(details['calls_root'])[:16]}…")
    leaf = _b64(proof.get("leaf"), "proof.leaf")
    try:
        path = [bytes.fromhex(p) for p in _field(proof, "path", list)]
        root = bytes.fromhex(str(details["calls_root"]))
        size = _field(proof, "tree_size", int)
        if size != details.get("calls"):
            raise ProofError(f"tree size {size} is not the statement's {details.get('calls')}")
        verify_inclusion(leaf_hash(leaf), _field(proof, "leaf_index", int), size, path, root)
    except (ValueError, TypeError, ProofError) as exc:
        raise ReceiptError(f"receipt field proof: the call's leaf is not in the signed "
                           f"statement of {epoch} ({exc})") from exc
    try:
        signed = loads_strict(leaf, "receipt leaf")
        if canonical_json(signed) != leaf:
            raise ReceiptError("receipt field proof.leaf: not canonical JSON")
        policy = Policy.from_mapping(details.get("policy"))
    except LineageError as exc:
        raise ReceiptError(f"receipt field proof.leaf: {exc}") from exc
    for name in _LEAF_FIELDS:
        if receipt.get(name) != signed.get(name):
            raise ReceiptError(f"receipt field {name}: shows {shown(repr(receipt.get(name)))}, "
                               f"the signed leaf {shown(repr(signed.get(name)))}")
    if receipt.get("data_bps") != policy.data_bps:
        raise ReceiptError(f"receipt field data_bps: shows {receipt.get('data_bps')!r}, the "
                           f"signed policy {policy.data_bps}")
    data = Fraction(int(signed["fee"]) * policy.data_bps, BPS_TOTAL)
    if receipt.get("data_share") != _fraction(data):
        raise ReceiptError(f"receipt field data_share: shows {receipt.get('data_share')!r}, the "
                           f"signed fee and policy give {_fraction(data)}")
    shown_credits = _field(receipt, "credits", list)
    weights = signed.get("weights") or []
    if len(shown_credits) != len(weights):
        raise ReceiptError(f"receipt field credits: shows {len(shown_credits)} contributors, "
                           f"the signed leaf {len(weights)}")
    scale = 1 << int(signed["weight_bits"])
    for i, (credit, (contributor, weight)) in enumerate(zip(shown_credits, weights,
                                                            strict=True)):
        if not isinstance(credit, dict):
            raise ReceiptError(f"receipt field credits[{i}]: not an object")
        if credit.get("contributor") != contributor:
            raise ReceiptError(f"receipt field credits[{i}].contributor: shows "
                               f"{shown(repr(credit.get('contributor')))}, the signed leaf "
                               f"{shown(repr(contributor))}")
        if credit.get("weight") != weight:
            raise ReceiptError(f"receipt field credits[{i}].weight ({shown(contributor)}): "
                               f"shows {credit.get('weight')!r}, the signed leaf {weight}")
        amount = _fraction(data * int(weight) / scale)
        if credit.get("amount") != amount:
            raise ReceiptError(f"receipt field credits[{i}].amount ({shown(contributor)}): "
                               f"shows {shown(repr(credit.get('amount')))}, the signed leaf "
                               f"and policy give {amount}")
