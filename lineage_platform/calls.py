"""Per-call settlement of an epoch (issue 18): each call of a per-call model is attributed to
the model's training rows, paid exactly, and committed to as one leaf of the epoch's calls root.

    parts = training_parts(model_index, records, project_dir)     # from signed hashes only
    settled = settle_calls(epoch, policy, calls, models, records, project_dir)
    settled.shares["m"]     # allocation.PerCallShare: exact amounts of the attributed calls

Where the rows come from: the model record's inputs, followed through dataset records, reach
each contributor's part record (a dataset record with a partition), which signs the part's
sha256, DVC path and md5; the file is the DVC path in the project, else the DVC cache, and it
must hash to the signed sha256 (as `lineage verify --recompute` finds valuation inputs). A part
that cannot be found is a `TrainingDataError`, never a silent fallback. Parts are ordered by
the earliest record of their content (signing order), so copies go to the earliest signer.

A call is attributed (`attribution.METHOD`) when it has an input of the rows' dimension and its
served label earns positive credit; otherwise its data share follows the model's global
valuation (`"method": "global"`, with the reason). A call's leaf is canonical JSON of its event
id, model, fee, method, input digest, output and integer weights (out of 2**WEIGHT_BITS); its
amounts follow from the leaf and the signed policy: data = fee x data_bps / 10,000 and each
contributor's amount = data x weight / 2**WEIGHT_BITS, exact fractions until the epoch's one
rounding.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lineage_platform.allocation import (
    BPS_TOTAL,
    CallPolicy,
    PerCallShare,
    Policy,
    contributor_account,
)
from lineage_platform.attribution import (
    METHOD,
    WEIGHT_BITS,
    CallAttributor,
    TrainingRows,
    fixed_weights,
    near_dedup,
)
from lineage_platform.canonical import json_string
from lineage_platform.errors import LineageError, TrainingDataError, shown
from lineage_platform.identifiers import problem
from lineage_platform.log import leaf_hash, root_from_leaves
from lineage_platform.recompute import locate_part
from lineage_platform.records import AttributionRecord
from lineage_platform.valuation.dedup import dedup_parts

__all__ = [
    "GLOBAL",
    "CallSettlement",
    "TrainingPart",
    "call_leaf",
    "settle_calls",
    "training_parts",
    "training_rows",
]

#: The method of a call paid by its model's global valuation.
GLOBAL = "global"
# Limb width for exact integer sums of fee x weight in int64 (fees < 2**51, weights <= 2**24).
_LIMB = 17
def _text(value: str | None) -> str:
    return "null" if value is None else json_string(value)


def _leaf_text(epoch: str, event_id: str, model: str, fee: int, method: str,
               input_digest: str | None, output: str | None, weights: str,
               fallback: str | None) -> str:
    # Keys in RFC 8785 order (sorted; all ASCII), no floats: this is canonical JSON, written
    # directly because a million calls go through here (tests hold it to canonical_json).
    return (f'{{"epoch":{_text(epoch)},"event_id":{_text(event_id)},"fallback":'
            f'{_text(fallback)},"fee":{fee},"input":{_text(input_digest)},"method":'
            f'{_text(method)},"model":{_text(model)},"output":{_text(output)},"weight_bits":'
            f'{WEIGHT_BITS},"weights":{weights}}}')


def _json_texts(values: Sequence[str | None]) -> pa.Array:
    """Each value's JSON text (`null` or a string literal), in Arrow's string kernels; a value
    with a character JSON escapes (`"`, `\\`, controls) goes through `json_string`."""
    arr = pa.array(values, pa.string())  # a lone surrogate fails here, as UTF-8 encoding did
    escaped = pc.match_substring_regex(arr, r'[\x00-\x1f"\\]')
    if pc.any(escaped).as_py():
        return pa.array([_text(v) for v in values], pa.string())
    quoted = pc.binary_join_element_wise('"', arr, '"', "")
    return pc.fill_null(quoted, "null")


def _leaf_texts(epoch: str, ids: Sequence[str], models: Sequence[str], fees: Sequence[int],
                methods: Sequence[str], digests: Sequence[str | None],
                outputs: Sequence[str | None], weights: Sequence[str],
                fallback: Sequence[str | None]) -> list[bytes]:
    """`_leaf_text` of every call at once (the same bytes; a per-call Python loop was ~5 s of a
    1M-call settlement)."""
    if not ids:
        return []
    text = pc.binary_join_element_wise(
        '{"epoch":', json_string(epoch), ',"event_id":', _json_texts(ids), ',"fallback":',
        _json_texts(fallback), ',"fee":', pc.cast(pa.array(fees, pa.int64()), pa.string()),
        ',"input":', _json_texts(digests), ',"method":', _json_texts(methods), ',"model":',
        _json_texts(models), ',"output":', _json_texts(outputs),
        f',"weight_bits":{WEIGHT_BITS},"weights":', pa.array(weights, pa.string()), "}", "")
    leaves: list[bytes] = text.cast(pa.binary()).to_pylist()
    return leaves


def call_leaf(
    epoch: str,
    event_id: str,
    model: str,
    fee: int,
    method: str,
    input_digest: str | None,
    output: str | None,
    weights: Sequence[tuple[str, int]],
    fallback: str | None = None,
) -> bytes:
    """One call's leaf: the canonical JSON of its fields (RFC 8785).

        call_leaf("2026-01-05", "e-1", "m", 100, METHOD, "sha256:…", "3", [("alice", 2**24)])
    """
    text = "[" + ",".join(f"[{json_string(c)},{int(w)}]" for c, w in weights) + "]"
    return _leaf_text(epoch, event_id, model, int(fee), method, input_digest, output, text,
                      fallback).encode("utf-8")


@dataclass(frozen=True, slots=True)
class TrainingPart:
    """One contributor's part file of a model's training data, located by its signed hash."""

    contributor: str
    log_index: int  # the part's record
    sha256: str
    path: Path
    first: int  # the earliest record of this content: signing order


def training_parts(
    model_index: int, records: Mapping[int, AttributionRecord], project_dir: Path
) -> list[TrainingPart]:
    """The contributor parts the model record's signed lineage reaches, in signing order."""
    model = records.get(model_index)
    if model is None:
        raise TrainingDataError(f"model record {model_index} is not in the log")
    stack = [i.log_index for i in model.inputs if i.log_index is not None]
    seen: set[int] = set()
    found: list[TrainingPart] = []
    earliest: dict[tuple[str, str], int] | None = None
    while stack:
        idx = stack.pop()
        rec = records.get(idx)
        if idx in seen or rec is None or rec.kind != "dataset":
            continue
        seen.add(idx)
        if rec.partition is None:
            stack.extend(i.log_index for i in rec.inputs if i.log_index is not None)
            continue
        ids = [c.id for c in rec.contributors]
        contributor = ids[0] if len(ids) == 1 else rec.partition
        path, looked = locate_part(project_dir, rec, rec.sha256)
        if path is None:
            raise TrainingDataError(
                f"model {shown(model.asset)}: training part of record {idx} "
                f"({shown(rec.asset)}[{shown(rec.partition)}], sha256 {rec.sha256[:12]}…) not "
                f"found with its signed hash ({looked})")
        if earliest is None:  # the first record of each content, once (not per part)
            earliest = {}
            for i, r in records.items():
                key = (r.asset, r.sha256)
                earliest[key] = min(i, earliest.get(key, i))
        first = earliest[(rec.asset, rec.sha256)]
        found.append(TrainingPart(contributor, idx, rec.sha256, path, first))
    if not found:
        raise TrainingDataError(f"model {shown(model.asset)} (record {model_index}): its signed "
                                "lineage names no contributor part to attribute calls to")
    found.sort(key=lambda p: (p.first, p.log_index))
    out: dict[str, TrainingPart] = {}
    for part in found:  # one part per contributor: a re-signed copy of the same part counts once
        out.setdefault(part.contributor, part)
    return list(out.values())


def training_rows(
    parts: Sequence[TrainingPart], label: str, near_copies: bool = True
) -> TrainingRows:
    """The parts' rows: `label` is the label column, every other numeric column a feature;
    copies (and near-copies, `near_copies`) of an earlier part's rows credited to it."""
    import pyarrow.parquet as pq

    frames: dict[str, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]] = {}
    columns: list[str] | None = None
    for part in parts:
        if problem(part.contributor) is not None:
            continue  # a spoofing id is never paid (settlement's dataset rule)
        try:
            table = pq.read_table(part.path)
            table.validate(full=True)
        except (OSError, pa.ArrowException) as exc:
            raise TrainingDataError(f"training part {part.path}: unreadable ({exc})") from exc
        if label not in table.column_names:
            raise TrainingDataError(f"training part {part.path} has no label column "
                                    f"{shown(label)} (policy `label`)")
        features = [f.name for f in table.schema if f.name != label and (
            pa.types.is_integer(f.type) or pa.types.is_floating(f.type))]
        if columns is None:
            columns = features
        elif features != columns:
            raise TrainingDataError(f"training part {part.path}: feature columns differ from "
                                    "the other parts'")
        x = np.column_stack([table.column(c).to_numpy().astype(np.float64) for c in features])
        frames[part.contributor] = (x, table.column(label).to_numpy(zero_copy_only=False))
    if not frames:
        raise TrainingDataError("no training part with a payable contributor id")
    try:
        return TrainingRows.from_parts(frames, dedup=near_dedup if near_copies else dedup_parts)
    except LineageError as exc:
        raise TrainingDataError(f"training rows: {exc}") from exc


@dataclass(frozen=True, slots=True)
class CallSettlement:
    """What per-call attribution pays in one epoch, and the leaves the statement commits to."""

    shares: dict[str, PerCallShare]
    event_ids: tuple[str, ...]  # leaf order
    leaves: tuple[bytes, ...]  # leaf hashes
    root: bytes
    attributed: int  # calls paid by attribution; the rest followed the global valuation
    leaf_data: tuple[bytes, ...] = ()  # the leaves' JSON, when asked for (`keep`)

    @property
    def calls(self) -> int:
        return len(self.leaves)


def _exact_sums(owner: np.ndarray[Any, Any], fee: np.ndarray[Any, Any],
                weight: np.ndarray[Any, Any], n: int) -> list[int]:
    """sum of fee x weight per owner, exactly: int64 limbs, each sum below 2**62."""
    totals = [0] * n
    order = np.argsort(owner, kind="stable")
    owner, fee, weight = owner[order], fee[order], weight[order]
    step = 1 << 20  # entries per block: 2**20 x 2**17 x 2**24 < 2**62
    for s in range(0, len(owner), step):
        o, f, w = owner[s:s + step], fee[s:s + step], weight[s:s + step]
        starts = np.flatnonzero(np.r_[True, o[1:] != o[:-1]])
        for limb in range(3):
            part = (f >> (_LIMB * limb)) & ((1 << _LIMB) - 1) if limb < 2 else f >> (2 * _LIMB)
            sums = np.add.reduceat(part * w, starts)
            for who, total in zip(o[starts].tolist(), sums.tolist(), strict=True):
                totals[who] += int(total) << (_LIMB * limb)
    return totals


def settle_calls(
    epoch: str,
    policy: Policy,
    calls: pa.Table,
    models: Mapping[str, int],
    records: Mapping[int, AttributionRecord],
    project_dir: Path | None,
    n_jobs: int = 2,
    keep: bool = False,
) -> CallSettlement | None:
    """Attribute every call of the per-call models in `models` (model -> its record index);
    None when the epoch has none. `calls`: the store's `calls(epoch)`, by event id."""
    wanted = sorted(m for m in models if policy.per_call(m) is not None)
    if not wanted or not calls.num_rows:
        return None
    mine = pc.is_in(calls.column("model"), value_set=pa.array(wanted, pa.string()))
    calls = calls.filter(mine)
    if not calls.num_rows:
        return None
    if project_dir is None:
        raise TrainingDataError(f"epoch {epoch}: per-call attribution needs the project's "
                                "training data (no project folder given)")
    n = calls.num_rows
    ids = calls.column("event_id").to_pylist()
    model_of = calls.column("model").to_pylist()
    fees = calls.column("fee").to_numpy().astype(np.int64)
    raw = calls.column("call_input").to_pylist()
    outputs = calls.column("call_output").to_pylist()
    methods: list[str] = [GLOBAL] * n
    fallback: list[str | None] = ["no input" if r is None else "" for r in raw]
    weights: list[str] = ["[]"] * n  # each call's weights as the leaf's JSON array
    shares: dict[str, PerCallShare] = {}
    model_array = np.asarray(model_of, dtype=object)
    for model in wanted:
        rows_of = np.flatnonzero(model_array == model)
        if not len(rows_of):
            continue
        call_policy = policy.per_call(model)
        assert call_policy is not None
        rows = training_rows(training_parts(models[model], records, project_dir),
                             call_policy.label, call_policy.near_copies)
        size = rows.dimension * 8
        usable = [i for i in rows_of.tolist() if raw[i] is not None and len(raw[i]) == size]
        for i in rows_of.tolist():
            if raw[i] is not None and len(raw[i]) != size:
                fallback[i] = (f"input has {len(raw[i]) // 8} numbers, the training rows "
                               f"{rows.dimension}")
        shares[model] = _attribute(model, usable, raw, outputs, fees, rows, call_policy,
                                   policy, methods, fallback, weights, n_jobs)
    sha = hashlib.sha256
    digests = [None if r is None else "sha256:" + sha(r).hexdigest() for r in raw]
    fee_list = fees.tolist()
    leaf_data = _leaf_texts(epoch, ids, model_of, fee_list, methods, digests, outputs, weights,
                            [f or None for f in fallback])
    leaves = [leaf_hash(d) for d in leaf_data]
    return CallSettlement(shares, tuple(ids), tuple(leaves), root_from_leaves(leaves),
                          sum(1 for m in methods if m != GLOBAL),
                          tuple(leaf_data) if keep else ())


def _weight_texts(names: Sequence[str], contributor: np.ndarray[Any, Any],
                  weight: np.ndarray[Any, Any], indptr: np.ndarray[Any, Any]) -> list[str]:
    """Each call's weights as the leaf's JSON array, `[["alice",123],...]`, built in Arrow's
    string kernels: about 10 credits a call make a per-credit Python loop the slowest step."""
    if not len(contributor):
        return ["[]"] * (len(indptr) - 1)
    quoted = pa.array([json_string(c) for c in names], pa.string())
    entry = pc.binary_join_element_wise(
        "[", pc.take(quoted, pa.array(contributor)), ",",
        pc.cast(pa.array(weight, pa.int64()), pa.string()), "]", "")
    per_call = pc.binary_join(pa.LargeListArray.from_arrays(pa.array(indptr, pa.int64()),
                                                            entry), ",")
    texts: list[str] = pc.binary_join_element_wise("[", per_call, "]", "").to_pylist()
    return texts


def _attribute(
    model: str,
    usable: list[int],
    raw: list[bytes | None],
    outputs: list[str | None],
    fees: np.ndarray[Any, Any],
    rows: TrainingRows,
    call_policy: CallPolicy,
    policy: Policy,
    methods: list[str],
    fallback: list[str | None],
    weights: list[str],
    n_jobs: int,
) -> PerCallShare:
    """Attribute the usable calls of one model; fills their method, fallback and weights."""
    if not usable:
        return PerCallShare(0, {})
    x = np.frombuffer(b"".join(raw[i] or b"" for i in usable), dtype="<f8").reshape(
        len(usable), rows.dimension)
    attributor = CallAttributor(rows, k=call_policy.k, neighbours=call_policy.neighbours)
    credits = attributor.attribute(x, np.asarray([outputs[i] for i in usable], dtype=object),
                                   n_jobs=n_jobs)
    w = fixed_weights(credits)
    counts = np.diff(credits.indptr)
    names = credits.contributors
    call_of = np.repeat(np.arange(len(usable)), counts)
    # A call's credits come in contributor id order (`CallCredits`), as the leaf lists them.
    texts = _weight_texts(names, credits.contributor, w, credits.indptr)
    for i, has, text in zip(usable, (counts > 0).tolist(), texts, strict=True):
        if has:
            methods[i] = METHOD
            weights[i] = text
        else:
            fallback[i] = "no positive credit (the served label matches no near row)"
    paid = np.asarray(usable, dtype=np.int64)[counts > 0]
    call_fee = fees[np.asarray(usable, dtype=np.int64)][call_of]
    totals = _exact_sums(credits.contributor, call_fee, w, len(names))
    scale = BPS_TOTAL << WEIGHT_BITS
    exact = {contributor_account(c): Fraction(t * policy.data_bps, scale)
             for c, t in zip(names, totals, strict=True) if t}
    return PerCallShare(sum(fees[paid].tolist()), exact)
