"""Settle an epoch: fees -> policy split -> valuation shares -> lineage -> ledger, exactly once.

    statements = settle(store, key, policy=Policy.default(), now=datetime.now(UTC))
    statements[0].root   # Merkle root over the epoch's payouts, in a signed `settlement` record

One store transaction (a settlement unit, `store.settling(epoch)`) holds the whole settlement of
an epoch: the signed record, the ledger, the payouts and the epoch row commit together or not at
all. A second settlement (another
process, a retried job) finds the epoch row and returns the same statement; a late event for a
settled epoch was already moved to the next open epoch at ingestion.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa

from lineage_platform.allocation import (
    Allocation,
    LineageGraph,
    Policy,
    allocate_epoch,
    contributor_account,
)
from lineage_platform.attest import ORIGIN, entry_for
from lineage_platform.calls import CallSettlement, settle_calls
from lineage_platform.canonical import canonical_json
from lineage_platform.errors import LineageError, SettlementError, VerificationError, shown
from lineage_platform.identifiers import problem
from lineage_platform.log import (
    SignedCheckpoint,
    inclusion_proof,
    leaf_hash,
    root_from_leaves,
    verify_inclusion,
)
from lineage_platform.records import AttributionRecord, InputRef, details_json, utc_timestamp
from lineage_platform.signing import Envelope, SigningKey, TrustStore
from lineage_platform.stores import (
    EpochInputs,
    LedgerView,
    LoggedEnvelope,
    Payout,
    Posting,
    SettledEpoch,
    SettlementUnit,
    Store,
)
from lineage_platform.stores.base import RECEIPTS_SCHEMA
from lineage_platform.valuation.result import clip

EPOCH = timedelta(days=1)
POLICY_FILE = "settlement.toml"
GRAPH_KINDS = ("model", "dataset", "valuation")


def epoch_bounds(epoch: str) -> tuple[datetime, datetime]:
    """Half-open UTC window [start, end) of a daily epoch id such as 2026-11-23."""
    try:
        start = datetime.strptime(epoch, "%Y-%m-%d").replace(tzinfo=UTC)
        if start.strftime("%Y-%m-%d") != epoch:  # strptime takes "2026-1-5", which sorts wrong
            raise ValueError(epoch)
        return start, start + EPOCH
    except (ValueError, OverflowError, TypeError) as exc:
        raise SettlementError(f"epoch {epoch!r:.40}: expected an id like 2026-11-23") from exc


def epoch_date(epoch: str) -> date:
    """The epoch id as a date, so epochs compare as days, never as strings."""
    return epoch_bounds(epoch)[0].date()


def epoch_of(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d")


def load_policy(project_dir: Path) -> Policy:
    path = project_dir / POLICY_FILE
    return Policy.from_file(path) if path.exists() else Policy.default()


def payout_leaf(epoch: str, account: str, amount: int) -> bytes:
    return canonical_json({"account": account, "amount": amount, "epoch": epoch})


def payout_root(epoch: str, payouts: Sequence[tuple[str, int]]) -> bytes:
    return root_from_leaves([leaf_hash(payout_leaf(epoch, a, n)) for a, n in payouts])


@dataclass(frozen=True, slots=True)
class Statement:
    epoch: str
    fees_total: int
    paid_total: int
    payouts: tuple[tuple[str, int], ...]
    root: str
    log_index: int
    already_settled: bool
    reserve_reason: str | None = None
    refusals: tuple[str, ...] = ()  # valuations not used, one line each (signed in details)

    def to_json(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "fees_total": self.fees_total,
            "paid_total": self.paid_total,
            "payouts": len(self.payouts),
            "root": self.root,
            "log_index": self.log_index,
            "already_settled": self.already_settled,
            **({"valuation_refusals": list(self.refusals)} if self.refusals else {}),
        }


# -- the lineage graph money flows along (pure) --------------------------------------------------
# Settlement records signed with these rules (details "valuation_rules") use a valuation only if
# it passes `valuation_problem`; older settlements are re-derived as they were computed.
VALUATION_RULES = 1
# How Dagster events outside any run appear in a record's run reference (dagster/sync.py).
RUNLESS_RUN_IDS = frozenset({"", "runless"})


@dataclass(frozen=True, slots=True)
class ValuationRefusal:
    """A valuation record settlement did not use for `model`, and why (one line)."""

    model: str  # the model (or, for a dataset record, the dataset node) it concerns
    log_index: int
    reason: str
    kind: str = "valuation"  # "dataset": a contributor of a dataset record not paid

    def __str__(self) -> str:
        return f"{self.kind} record {self.log_index} of {self.model} refused: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "log_index": self.log_index,
                               "reason": self.reason}
        if self.kind != "valuation":
            out["kind"] = self.kind
        return out


def _node(record: AttributionRecord) -> str:
    return record.asset if record.partition is None else f"{record.asset}[{record.partition}]"


def lineage_contributors(
    model: AttributionRecord, by_index: Mapping[int, AttributionRecord]
) -> set[str]:
    """Every contributor id of the records the model record's inputs reach, at any depth."""
    found = {c.id for c in model.contributors}
    seen: set[int] = set()
    stack = [i.log_index for i in model.inputs if i.log_index is not None]
    while stack:
        idx = stack.pop()
        if idx in seen or idx not in by_index:
            continue
        seen.add(idx)
        rec = by_index[idx]
        if rec.kind == "valuation":
            continue
        found.update(c.id for c in rec.contributors)
        stack.extend(i.log_index for i in rec.inputs if i.log_index is not None)
    return found


def valuation_problem(
    valuation: AttributionRecord,
    model: tuple[int, AttributionRecord],
    registered_asset: str,
    contributors: set[str],
) -> str | None:
    """Why `valuation` may not pay the data part of `model` (index, record), or None if it may.

    It must come from the model's registered valuation asset, from a run (not a runless
    event), name the exact model record (log index and sha256) among its inputs, pay only
    contributors of the model's recorded lineage, and meet its method's invariants: a
    registered method, finite values, a score the method can use (KNN-Shapley: accuracy only;
    efficiency holds for any score, e.g. R²), and efficiency (the values sum to the signed gain
    u(N) - u(∅), within 3 standard errors for sampled methods) where the method is efficient.
    """
    from lineage_platform.valuation.registry import get_method

    midx, mrec = model
    if valuation.asset != registered_asset:
        return (f"asset {shown(valuation.asset)} is not {mrec.asset}'s registered valuation "
                f"({shown(registered_asset)})")
    run = valuation.run
    if run is None or run.run_id in RUNLESS_RUN_IDS:
        return "not made by a run (a runless event)"
    if not any(i.asset == mrec.asset and i.log_index == midx and i.sha256 == mrec.sha256
               for i in valuation.inputs):
        return (f"does not name the model record it values (index {midx}, sha256 "
                f"{mrec.sha256[:12]}…)")
    spoofed = sorted(c.id for c in valuation.contributors if problem(c.id) is not None)
    if spoofed:
        return f"contributor id {ascii(spoofed[0])[:40]} {problem(spoofed[0])}"
    strangers = sorted({c.id for c in valuation.contributors} - contributors)
    if strangers:
        more = " …" if len(strangers) > 3 else ""
        names = ", ".join(shown(n, 24) for n in strangers[:3]) + more
        return f"pays {names}, not in {mrec.asset}'s recorded lineage"
    details = valuation.details_obj() or {}
    try:
        method = get_method(str(details.get("method")))
    except LineageError:
        return f"method {shown(str(details.get('method')), 32)} is not registered"
    values = [c.value for c in valuation.contributors]
    if not values or any(v is None or not math.isfinite(v) for v in values):
        return "a contributor's value is missing or not finite"
    score = details.get("score")
    scored = score.get("name") if isinstance(score, dict) else "accuracy"  # older records
    if method.classification_only and scored != "accuracy":
        return f"{method.name} values classification only, not score {shown(str(scored), 32)}"
    if method.efficient:
        efficiency = details.get("efficiency")
        gain = efficiency.get("u_full_minus_u_empty") if isinstance(efficiency, dict) else None
        if isinstance(gain, bool) or not isinstance(gain, int | float) or not math.isfinite(gain):
            return f"{method.name} is efficient but the record signs no gain u(N) - u(∅)"
        total = math.fsum(v for v in values if v is not None)
        spread = math.sqrt(math.fsum((c.stderr or 0.0) ** 2 for c in valuation.contributors))
        if not math.isfinite(spread) or abs(total - gain) > max(1e-9 * max(1.0, abs(gain)),
                                                                3 * spread):
            return (f"values sum to {total:.6g}, not the gain {gain:.6g} ({method.name} is "
                    "efficient)")
    return None


def build_graph(
    records: Sequence[tuple[int, AttributionRecord]],
    models: Iterable[str],
    policy: Policy | None = None,
) -> tuple[LineageGraph, tuple[InputRef, ...], tuple[ValuationRefusal, ...]]:
    """Edges from each model down to contributor accounts, from signed records only.

    A model with a usable valuation (`policy` given: the newest that passes
    `valuation_problem`; each newer one is refused, with its reason) passes its data part by
    contributor value (negatives count as zero); otherwise to its inputs equally. A dataset
    passes its part to its contributors by their recorded weight (rows when no weight is
    given), or to its inputs equally. Without `policy`, the rules before issue 15 (the newest
    valuation naming the model pays), which settlements signed before them are re-derived by.
    """
    by_index = dict(records)
    latest: dict[str, tuple[int, AttributionRecord]] = {}
    valuation_of: dict[str, tuple[int, AttributionRecord]] = {}
    naming: dict[str, list[tuple[int, AttributionRecord]]] = {}
    for idx, rec in records:
        if rec.kind == "valuation":
            for inp in rec.inputs:
                valuation_of[inp.asset] = (idx, rec)
                naming.setdefault(inp.asset, []).append((idx, rec))
        else:
            latest[_node(rec)] = (idx, rec)
    edges: dict[str, dict[str, float]] = {}
    used: dict[int, InputRef] = {}
    refusals: list[ValuationRefusal] = []
    queue: list[tuple[int, AttributionRecord]] = []
    for model in sorted(set(models)):
        if model not in latest:
            raise SettlementError(f"model {model}: no signed model record in the log")
        idx, rec = latest[model]
        used[idx] = InputRef(rec.asset, rec.sha256, idx)
        chosen = valuation_of.get(model)
        if policy is not None:
            chosen = None
            lineage = lineage_contributors(rec, by_index)
            asset = policy.valuation_asset(model)
            for vidx, val in sorted(naming.get(model, []), key=lambda p: -p[0]):
                why = valuation_problem(val, (idx, rec), asset, lineage)
                if why is None:
                    chosen = (vidx, val)
                    break
                refusals.append(ValuationRefusal(model, vidx, why))
        if chosen is not None:
            vidx, val = chosen
            used[vidx] = InputRef(val.asset, val.sha256, vidx)
            weights: dict[str, float] = {}
            for c in val.contributors:
                acct = contributor_account(c.id)
                weights[acct] = weights.get(acct, 0.0) + clip(c.value)
            edges[model] = weights
        else:
            queue.append((idx, rec))
    while queue:
        idx, rec = queue.pop()
        node = _node(rec)
        if node in edges and rec.kind != "model":
            continue
        if rec.kind == "dataset" and rec.contributors:
            weights = {}
            for c in rec.contributors:
                if policy is not None and (why := problem(c.id)) is not None:
                    # A spoofing id is never paid, and never stops the settlement either.
                    refusals.append(ValuationRefusal(
                        node, idx, f"contributor id {ascii(c.id)[:40]} {why}: not paid",
                        "dataset"))
                    continue
                acct = contributor_account(c.id)
                w = c.weight if c.weight is not None else float(c.rows or 0)
                weights[acct] = weights.get(acct, 0.0) + clip(w)
            edges[node] = weights
            continue
        children: dict[str, float] = {}
        for inp in rec.inputs:
            if inp.log_index is None or inp.log_index not in by_index:
                continue
            child = by_index[inp.log_index]
            children[_node(child)] = children.get(_node(child), 0.0) + 1.0
            queue.append((inp.log_index, child))
        edges[node] = children
    graph = LineageGraph.build(edges, clip_negative=True)
    return graph, tuple(used[i] for i in sorted(used)), tuple(refusals)


def _records(envelopes: Sequence[LoggedEnvelope]) -> list[tuple[int, AttributionRecord]]:
    return [(i, AttributionRecord.from_bytes(Envelope.from_json(e).payload)) for i, e in envelopes]


@dataclass(frozen=True, slots=True)
class Derivation:
    """Everything a settlement of one epoch computes; `lineage verify` recomputes it too."""

    fees: dict[str, int]
    events_digest: str
    events: int
    allocation: Allocation
    root: bytes
    inputs: tuple[InputRef, ...]
    ledger: tuple[Posting, ...]
    refusals: tuple[ValuationRefusal, ...] = ()
    calls: CallSettlement | None = None  # per-call models' calls (issue 18), else None


#: Statement version: 2 adds the per-call leaves' root (`calls_root`) beside the payout root.
STATEMENT_CALLS = 2


def _model_indices(records: Sequence[tuple[int, AttributionRecord]],
                   models: Iterable[str]) -> dict[str, int]:
    """The newest model record of each model (what `build_graph` pays on)."""
    wanted = set(models)
    latest: dict[str, int] = {}
    for idx, rec in records:
        if rec.kind == "model" and rec.partition is None and rec.asset in wanted:
            latest[rec.asset] = idx
    return latest


def derive(
    epoch: str,
    policy: Policy,
    epoch_inputs: EpochInputs,
    envelopes: Sequence[LoggedEnvelope],
    checked: bool = True,
    calls: Callable[[], pa.Table] | None = None,
    project_dir: Path | None = None,
    keep_leaves: bool = False,
) -> Derivation:
    """What settling `epoch` pays, from its usage and the signed records (`GRAPH_KINDS`).

    `checked`: valuations must pass `valuation_problem` (every new settlement); False only to
    re-derive a settlement signed before those rules. `calls` reads the epoch's calls (only
    when the policy attributes a model per call); `project_dir` holds the training parts."""
    fees, digest, count = epoch_inputs.fees, epoch_inputs.events_digest, epoch_inputs.events
    records = _records(envelopes)
    graph, inputs, refusals = build_graph(records, fees, policy if checked else None)
    owners = {m: m for m in fees}
    per_call = None
    if calls is not None and any(policy.per_call(m) is not None for m in fees):
        per_call = settle_calls(epoch, policy, calls(), _model_indices(records, fees),
                                dict(records), project_dir, keep=keep_leaves)
    allocation = allocate_epoch(fees, policy, owners, graph,
                                per_call.shares if per_call is not None else None)
    payouts = allocation.payouts
    ledger = tuple(
        [Posting(f"usage:{m}", f"clearing:{epoch}", f) for m, f in sorted(fees.items()) if f]
        + [Posting(f"clearing:{epoch}", acct, n) for acct, n in payouts]
    )
    return Derivation(
        fees, digest, count, allocation, payout_root(epoch, payouts), inputs, ledger, refusals,
        per_call,
    )


def _statement(settled: SettledEpoch, payouts: Sequence[Payout]) -> Statement:
    return Statement(
        settled.epoch, settled.fees_total, settled.paid_total,
        tuple((p.account, p.amount) for p in payouts), settled.root, settled.log_index,
        already_settled=True,
    )


def _settled_statement(unit: SettlementUnit) -> Statement | None:
    settled = unit.settled(unit.epoch)
    return None if settled is None else _statement(settled, unit.payouts(unit.epoch))


def settle_epoch(
    store: Store,
    key: SigningKey,
    epoch: str,
    policy: Policy,
    now: datetime,
    project_dir: Path | None = None,
) -> Statement:
    start, end = epoch_bounds(epoch)
    if end > now:
        raise SettlementError(f"epoch {epoch} is still open until {end.isoformat()}")
    with store.settling(epoch) as unit:
        if (done := _settled_statement(unit)) is not None:
            return done
        _refuse_a_second_settlement(unit, epoch)
        d = derive(epoch, policy, unit.inputs(epoch), unit.envelopes(GRAPH_KINDS),
                   calls=lambda: unit.calls(epoch), project_dir=project_dir)
        paid = sum(n for _, n in d.allocation.payouts)
        fees_total = sum(d.fees.values())
        if paid != fees_total:
            raise SettlementError(f"epoch {epoch}: paid {paid} != fees {fees_total}")
        details = {
            "epoch": epoch,
            "starts_at": utc_timestamp(start),
            "ends_at": utc_timestamp(end),
            "fees_total": fees_total,
            "paid_total": paid,
            "payout_count": len(d.allocation.payouts),
            "root": d.root.hex(),
            "policy": policy.to_mapping(),
            "fees_by_model": d.fees,
            "events": d.events,
            "events_digest": d.events_digest,
            "reserve_reason": d.allocation.reserve_reason,
            "valuation_rules": VALUATION_RULES,
            "valuation_refusals": [r.to_json() for r in d.refusals],
        }
        if d.calls is not None:
            details.update({
                "statement": STATEMENT_CALLS,
                "calls_root": d.calls.root.hex(),
                "calls": d.calls.calls,
                "calls_attributed": d.calls.attributed,
            })
        record = AttributionRecord(
            kind="settlement",
            asset="settlement",
            partition=epoch,
            sha256=d.root.hex(),
            recorded_at=utc_timestamp(now),
            inputs=d.inputs,
            details=details_json(details),
        )
        result = unit.append(
            [entry_for(record, key)], lambda cp: SignedCheckpoint.sign(cp, key), ORIGIN
        )
        log_index = result.indices[0]
        settled = SettledEpoch(
            epoch, start.replace(tzinfo=None), end.replace(tzinfo=None), fees_total, paid,
            len(d.allocation.payouts), d.root.hex(), log_index,
        )
        receipts = None
        if d.calls is not None:
            receipts = pa.table(
                {"event_id": pa.array(d.calls.event_ids, pa.string()),
                 "leaf_hash": pa.array(d.calls.leaves, pa.binary())},
                schema=RECEIPTS_SCHEMA,
            )
        unit.write_settlement(
            settled, d.ledger, [Payout(epoch, a, n) for a, n in d.allocation.payouts], receipts
        )
    return Statement(
        epoch, fees_total, paid, d.allocation.payouts, d.root.hex(), log_index, False,
        d.allocation.reserve_reason, tuple(str(r) for r in d.refusals),
    )


def _refuse_a_second_settlement(unit: SettlementUnit, epoch: str) -> None:
    """An epoch whose signed settlement record is in the log is settled, whatever the epoch
    tables say: rows deleted behind the store's back must not pay the epoch twice."""
    for index, record in _records(unit.envelopes(("settlement",))):
        if record.partition == epoch:
            raise SettlementError(
                f"epoch {epoch}: the log already holds its signed settlement (record {index}) "
                "but its settlement rows are gone: refusing to settle it again (restore the "
                "store, then run `lineage verify`)"
            )


def settle(
    store: Store,
    key: SigningKey,
    policy: Policy,
    now: datetime,
    epoch: str | None = None,
    on_epoch: Callable[[str], None] | None = None,
    project_dir: Path | None = None,
) -> list[Statement]:
    """Settle every closed epoch with unsettled fees, oldest first (up to `epoch` if given).

    Settled epochs stay a prefix of time, which is what lets a late event move forward.
    `project_dir`: where per-call models' training parts are found (their DVC paths or cache).
    """
    if epoch is not None:
        epoch_bounds(epoch)
        with store.settling(epoch) as unit:
            if (done := _settled_statement(unit)) is not None:
                return [done]
    statements = []
    for pending, _, _ in store.open_epochs():
        if epoch is not None and epoch_date(pending) > epoch_date(epoch):
            break
        if epoch_bounds(pending)[1] > now:
            break
        if on_epoch:
            on_epoch(pending)
        statements.append(settle_epoch(store, key, pending, policy, now, project_dir))
    if epoch is not None and not any(s.epoch == epoch for s in statements):
        # Another process may have settled it between the check above and `open_epochs`.
        with store.settling(epoch) as unit:
            if (done := _settled_statement(unit)) is not None:
                return [*statements, done]
        if epoch_bounds(epoch)[1] > now:
            raise SettlementError(f"epoch {epoch} is still open")
        raise SettlementError(f"epoch {epoch} has no usage to settle")
    return statements


def settle_held(
    store: Store,
    key: SigningKey,
    trust: TrustStore,
    project_dir: Path,
    state_dir: Path,
    now: datetime,
    epoch: str | None = None,
    on_epoch: Callable[[str], None] | None = None,
) -> list[Statement]:
    """`settle`, held to the log's history: what `lineage settle` and `settlement_job` run.

    The log must extend what this machine saw of it (a rolled-back or forked log is not
    settled) and, when a witness policy is in force, what the witnesses cosigned; what was
    published is remembered afterwards and a new settlement is taken to the witnesses.
    """
    from lineage_platform import known, witness

    memory = known.KnownLogs.from_env()
    known.check_store(memory, store, trust, remember=False)
    policy = witness.find_policy(project_dir)
    if policy is not None:
        witness.publish(store, trust, policy, state_dir)
    statements = settle(
        store, key, load_policy(project_dir), now, epoch, on_epoch=on_epoch,
        project_dir=project_dir,
    )
    known.check_store(memory, store, trust)
    if policy is not None and any(not s.already_settled for s in statements):
        witness.publish(store, trust, policy, state_dir)
    return statements


# -- re-derivation for `lineage verify` ----------------------------------------------------------
def verify_settlements(store: Store, project_dir: Path | None = None) -> int:
    """Recompute every settled epoch from stored events, signed records and the signed policy.

    An epoch settled per call (statement 2) is re-derived with its attribution, from the
    training parts its models' signed lineage names (`project_dir`); its calls root must equal
    the signed one and the one over the stored receipt leaves."""
    with store.snapshot() as view:
        epochs = view.settled_epochs()
        for row in epochs:
            epoch, idx = row.epoch, row.log_index
            env = view.envelope_at(idx)
            if env is None:
                raise VerificationError(f"epoch {epoch}: settlement record {idx} missing", idx)
            record = AttributionRecord.from_bytes(Envelope.from_json(env).payload)
            signed = record.details_obj() or {}
            if record.kind != "settlement" or record.partition != epoch:
                raise VerificationError(f"epoch {epoch}: log index {idx} is not its record", idx)
            rules = signed.get("valuation_rules")
            if rules not in (None, VALUATION_RULES):
                raise VerificationError(f"epoch {epoch}: unknown valuation rules {rules!r:.20}",
                                        idx)
            try:
                policy = Policy.from_mapping(signed.get("policy"))
                d = derive(
                    epoch, policy, view.inputs(epoch), view.envelopes(GRAPH_KINDS, before=idx),
                    checked=rules is not None,
                    calls=partial(view.calls, epoch) if "calls_root" in signed else None,
                    project_dir=project_dir,
                )
            except LineageError as exc:
                raise VerificationError(f"epoch {epoch}: cannot re-derive ({exc})", idx) from exc
            payouts = [(p.account, p.amount) for p in view.payouts(epoch)]
            ledger = view.ledger(epoch)
            start, end = epoch_bounds(epoch)
            checks: Mapping[str, tuple[object, object]] = {
                "window": (
                    (row.starts_at, row.ends_at),
                    (start.replace(tzinfo=None), end.replace(tzinfo=None)),
                ),
                "window (signed)": (
                    (signed.get("starts_at"), signed.get("ends_at")),
                    (utc_timestamp(start), utc_timestamp(end)),
                ),
                "valuation refusals (signed)": (
                    signed.get("valuation_refusals") if rules is not None else None,
                    [r.to_json() for r in d.refusals] if rules is not None else None,
                ),
                "events digest": (signed.get("events_digest"), d.events_digest),
                "event count": (signed.get("events"), d.events),
                "fees by model": (signed.get("fees_by_model"), d.fees),
                "root (signed)": (signed.get("root"), d.root.hex()),
                "root (record subject)": (record.sha256, d.root.hex()),
                "root (epochs row)": (row.root, d.root.hex()),
                "fees total": (row.fees_total, sum(d.fees.values())),
                "paid total": (row.paid_total, sum(n for _, n in d.allocation.payouts)),
                "payout count": (row.payouts, len(d.allocation.payouts)),
                "payouts table": ([tuple(p) for p in payouts], list(d.allocation.payouts)),
                "ledger": ([tuple(x) for x in ledger], list(d.ledger)),
                **_calls_checks(view, epoch, signed, d),
            }
            for name, (stored, derived) in checks.items():
                if json.dumps(stored, sort_keys=True, default=str) != json.dumps(
                    derived, sort_keys=True, default=str
                ):
                    raise VerificationError(
                        f"epoch {epoch}: {name} does not match the re-derived settlement", idx
                    )
            clearing = f"clearing:{epoch}"
            into = sum(n for _, c, n in ledger if c == clearing)
            out_of = sum(n for d_, _, n in ledger if d_ == clearing)
            if into != out_of or any(n < 0 for _, _, n in ledger):
                raise VerificationError(f"epoch {epoch}: ledger does not sum to zero", idx)
        _verify_no_strays(view)
    return len(epochs)


def _calls_checks(
    view: LedgerView, epoch: str, signed: Mapping[str, Any], d: Derivation
) -> dict[str, tuple[object, object]]:
    """Per-call statements: the signed calls root, count and version against the re-derived
    attribution, and the stored receipt leaves (event ids and hashes) against it."""
    if "calls_root" not in signed and d.calls is None:
        return {}
    stored = view.receipt_leaves(epoch)
    derived_ids = list(d.calls.event_ids) if d.calls else []
    derived_leaves = [h.hex() for h in d.calls.leaves] if d.calls else []
    return {
        "statement version (signed)": (signed.get("statement"), STATEMENT_CALLS),
        "calls root (signed)": (signed.get("calls_root"),
                                d.calls.root.hex() if d.calls else None),
        "call count (signed)": (signed.get("calls"), len(derived_ids)),
        "attributed calls (signed)": (signed.get("calls_attributed"),
                                      d.calls.attributed if d.calls else None),
        "receipt event ids": (stored.column("event_id").to_pylist(), derived_ids),
        "receipt leaves": ([bytes(h).hex() for h in stored.column("leaf_hash").to_pylist()],
                           derived_leaves),
    }


def _verify_no_strays(view: LedgerView) -> None:
    """Every signed settlement has its epoch row, and no payout or posting lacks one."""
    for stray in view.strays():
        if stray.what == "record":
            raise VerificationError(
                f"epoch {stray.epoch}: signed settlement record {stray.log_index} has no "
                "matching epochs row",
                stray.log_index,
            )
        raise VerificationError(
            f"epoch {stray.epoch}: {stray.what} rows but no settled epoch row"
        )


@dataclass(frozen=True, slots=True)
class PayoutProof:
    epoch: str
    account: str
    amount: int
    log_index: int
    root: str
    leaf_index: int
    proof: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch, "account": self.account, "amount": self.amount,
            "settlement_log_index": self.log_index, "root": self.root,
            "leaf_index": self.leaf_index, "proof": list(self.proof),
        }


def account_statement(store: Store, account: str) -> list[PayoutProof]:
    """An account's payouts, each with its inclusion proof against the signed settlement root."""
    out = []
    with store.snapshot() as view:
        for settled in view.account_epochs(account):
            epoch, idx = settled.epoch, settled.log_index
            env = view.envelope_at(idx)
            if env is None:
                raise VerificationError(f"epoch {epoch}: settlement record {idx} missing", idx)
            record = AttributionRecord.from_bytes(Envelope.from_json(env).payload)
            root = bytes.fromhex(str((record.details_obj() or {}).get("root", "")))
            rows = [(p.account, p.amount) for p in view.payouts(epoch)]
            leaves = [leaf_hash(payout_leaf(str(epoch), str(a), int(n))) for a, n in rows]
            pos = [str(a) for a, _ in rows].index(account)
            path = inclusion_proof(leaves, pos, len(leaves))
            verify_inclusion(leaves[pos], pos, len(leaves), path, root)
            out.append(
                PayoutProof(str(epoch), account, int(rows[pos][1]), int(idx), root.hex(), pos,
                            tuple(p.hex() for p in path))
            )
    return out


def valuation_decisions(
    store: Store, policy: Policy, models: Iterable[str] | None = None
) -> tuple[dict[str, tuple[int, AttributionRecord]], tuple[ValuationRefusal, ...]]:
    """Which valuation a settlement now would use per model (all models with a record if None),
    and the refusals it would report: for `lineage status` and `lineage value`."""
    with store.snapshot() as view:
        records = _records(view.envelopes(GRAPH_KINDS))
    by_index = dict(records)
    known = {r.asset for _, r in records if r.kind == "model" and r.partition is None}
    wanted = sorted(known if models is None else set(models) & known)
    try:
        _, used, refusals = build_graph(records, wanted, policy)
    except LineageError:
        return {}, ()
    chosen = {}
    for ref in used:
        rec = by_index.get(ref.log_index) if ref.log_index is not None else None
        if rec is not None and rec.kind == "valuation":
            for inp in rec.inputs:
                if inp.asset in wanted:
                    chosen[inp.asset] = (int(ref.log_index or 0), rec)
    return chosen, refusals


def latest_valuation(store: Store, model: str) -> tuple[int, AttributionRecord] | None:
    """The newest signed valuation record naming `model` among its inputs."""
    with store.snapshot() as view:
        envelopes = view.envelopes(("valuation",))
    found = None
    for idx, rec in _records(envelopes):
        if any(i.asset == model for i in rec.inputs):
            found = (idx, rec)
    return found
