"""Split an epoch's usage fees by policy and lineage, exactly, and round once to integer payouts.

    graph = LineageGraph.build({"m": {"contributor:alice": 3, "contributor:bob": 1}})
    allocate_epoch({"m": 1000}, Policy.default(), {"m": "acme"}, graph).as_dict()

Every amount is an exact ``Fraction`` until the very end: per-model entitlements are summed across
the whole epoch and only that sum is rounded (largest remainder, ties to the account name that sorts
first). Rounding per model would make an account's payout depend on how fees happen to be spread
across models with identical valuations.
"""

from __future__ import annotations

import json
import math
import numbers
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import Any

from lineage_platform.errors import AllocationError
from lineage_platform.identifiers import identifier

__all__ = [
    "ATTRIBUTIONS",
    "BPS_TOTAL",
    "MAX_FEE",
    "PROTOCOL",
    "RESERVE",
    "Allocation",
    "CallPolicy",
    "LineageGraph",
    "PerCallShare",
    "Policy",
    "Weight",
    "allocate_epoch",
    "contributor_account",
    "flow",
    "largest_remainder",
    "owner_account",
]

PROTOCOL = "protocol"
RESERVE = "reserve"
BPS_TOTAL = 10_000
MAX_FEE = 2**63  # exclusive: fees must fit a signed 64-bit column in the store

Weight = int | float | Fraction

_POLICY_KEYS = ("protocol_bps", "owner_bps", "data_bps")
#: `[models.<model>] attribution = ...`: one global valuation per model, or each call its own.
ATTRIBUTIONS = ("global", "per-call")
_MODEL_KEYS = ("valuation", "attribution", "k", "neighbours", "label", "near_copies")
_SYSTEM_ACCOUNTS = frozenset({PROTOCOL, RESERVE})


def owner_account(name: str) -> str:
    """Account of a model owner; the prefix keeps owners apart from same-named contributors."""
    return f"owner:{identifier(_name(name, 'owner name'), 'owner name')}"


def contributor_account(contributor_id: str) -> str:
    """Account of a data contributor, the usual leaf of a lineage graph."""
    return f"contributor:{identifier(_name(contributor_id, 'contributor id'), 'contributor id')}"


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise AllocationError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _bps(key: str, value: object) -> int:
    # bool is an int subclass; True basis points is a bug in the caller, not 1 bps.
    if isinstance(value, bool) or not isinstance(value, int):
        raise AllocationError(f"policy {key} must be an integer, got {value!r}")
    if value < 0:
        raise AllocationError(f"policy {key} must be non-negative, got {value}")
    return value


def _count(where: str, value: object, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise AllocationError(f"{where} must be an integer >= {least}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class CallPolicy:
    """Per-call attribution of one model (`[models.<m>] attribution = "per-call"`).

        CallPolicy(k=5, neighbours=15, label="label")   # the defaults

    `k` and `neighbours` are the single-query KNN-Shapley game's (`attribution.CallAttributor`);
    `label` is the label column of the model's training part files (the other numeric columns
    are the features a call's input is compared with, as stored); `near_copies`: rows within
    the near-copy tolerance of an earlier signer's row are credited to it (else exact copies
    only).
    """

    k: int = 5
    neighbours: int = 15
    label: str = "label"
    near_copies: bool = True

    def __post_init__(self) -> None:
        _count("policy k", self.k, 1)
        _count("policy neighbours", self.neighbours, self.k)
        _name(self.label, "policy label")
        if not isinstance(self.near_copies, bool):
            raise AllocationError(f"policy near_copies must be true or false, got "
                                  f"{self.near_copies!r}")

    def to_mapping(self) -> dict[str, Any]:
        return {"attribution": "per-call", "k": self.k, "neighbours": self.neighbours,
                "label": self.label, "near_copies": self.near_copies}


@dataclass(frozen=True, slots=True)
class PerCallShare:
    """The part of a model's epoch fees attributed call by call: `fee` (minor units) and the
    exact data amounts of those calls by account, which sum to fee x data_bps / 10,000."""

    fee: int
    credits: Mapping[str, Fraction]


@dataclass(frozen=True, slots=True)
class Policy:
    """How each model's fee is split, in basis points that sum to exactly 10,000."""

    protocol_bps: int
    owner_bps: int
    data_bps: int
    # model -> the valuation asset whose records may pay its data part (settlement.toml
    # `[models.<model>] valuation = "<asset>"`); a model not named here: `<model>_valuation`.
    valuations: tuple[tuple[str, str], ...] = ()
    # model -> its per-call attribution (`[models.<model>] attribution = "per-call"`); a model
    # not named here is settled by its global valuation.
    calls: tuple[tuple[str, CallPolicy], ...] = ()

    def valuation_asset(self, model: str) -> str:
        """The one asset whose valuation records settlement may use for `model`."""
        return dict(self.valuations).get(model, f"{model}_valuation")

    def per_call(self, model: str) -> CallPolicy | None:
        """`model`'s per-call attribution, or None when it is settled globally."""
        return dict(self.calls).get(model)

    def __post_init__(self) -> None:
        for model, asset in self.valuations:
            _name(model, "policy model")
            _name(asset, f"policy models.{model}.valuation")
        for model, call in self.calls:
            _name(model, "policy model")
            if not isinstance(call, CallPolicy):
                raise AllocationError(f"policy models.{model}: not a CallPolicy")
        parts = [_bps(key, getattr(self, key)) for key in _POLICY_KEYS]
        if sum(parts) != BPS_TOTAL:
            raise AllocationError(
                f"policy basis points must sum to {BPS_TOTAL}, got {sum(parts)} "
                f"(protocol {parts[0]} + owner {parts[1]} + data {parts[2]})"
            )

    @classmethod
    def default(cls) -> Policy:
        """Protocol 5 %, model owner 15 %, data contributors 80 %."""
        return cls(protocol_bps=500, owner_bps=1500, data_bps=8000)

    @classmethod
    def from_mapping(cls, obj: object) -> Policy:
        """Policy from parsed config; all three keys required, unknown keys refused (typos)."""
        if not isinstance(obj, Mapping):
            raise AllocationError(f"policy must be a mapping, got {type(obj).__name__}")
        unknown = sorted(str(k) for k in obj if k not in (*_POLICY_KEYS, "models"))
        if unknown:
            raise AllocationError(f"policy has unknown keys: {', '.join(unknown)}")
        missing = [k for k in _POLICY_KEYS if k not in obj]
        if missing:
            raise AllocationError(f"policy is missing keys: {', '.join(missing)}")
        valuations, calls = _models(obj.get("models", {}))
        return cls(
            protocol_bps=_bps("protocol_bps", obj["protocol_bps"]),
            owner_bps=_bps("owner_bps", obj["owner_bps"]),
            data_bps=_bps("data_bps", obj["data_bps"]),
            valuations=valuations,
            calls=calls,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> Policy:
        """Policy from a ``.toml`` or ``.json`` file whose top level holds the three keys."""
        p = Path(path)
        suffix = p.suffix.lower()
        if suffix not in (".toml", ".json"):
            raise AllocationError(f"policy file {p}: expected .toml or .json, got {suffix!r}")
        try:
            if suffix == ".toml":
                with p.open("rb") as f:
                    obj: object = tomllib.load(f)
            else:
                obj = json.loads(p.read_text(encoding="utf-8"))
        except OSError as e:
            raise AllocationError(f"policy file {p}: cannot read ({e.strerror or e})") from e
        except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise AllocationError(f"policy file {p}: not valid {suffix[1:].upper()}: {e}") from e
        try:
            return cls.from_mapping(obj)
        except AllocationError as e:
            raise AllocationError(f"policy file {p}: {e}") from e

    def to_mapping(self) -> dict[str, Any]:
        """Plain dict with the same keys ``from_mapping`` reads, for config files and metadata
        (``models`` only when a model names its valuation asset, so older policies read alike)."""
        mapping: dict[str, Any] = {
            "protocol_bps": self.protocol_bps,
            "owner_bps": self.owner_bps,
            "data_bps": self.data_bps,
        }
        models: dict[str, dict[str, Any]] = {}
        for m, a in self.valuations:
            models.setdefault(m, {})["valuation"] = a
        for m, call in self.calls:
            models.setdefault(m, {}).update(call.to_mapping())
        if models:
            mapping["models"] = dict(sorted(models.items()))
        return mapping

    def split(self, fee: int) -> tuple[Fraction, Fraction, Fraction]:
        """Exact (protocol, owner, data) parts of one fee; they sum to ``fee``."""
        return (
            Fraction(fee * self.protocol_bps, BPS_TOTAL),
            Fraction(fee * self.owner_bps, BPS_TOTAL),
            Fraction(fee * self.data_bps, BPS_TOTAL),
        )


def _models(
    obj: object,
) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, CallPolicy], ...]]:
    """`[models.<model>]` tables (`valuation = "<asset>"`, `attribution = "per-call" |
    "global"` with `k`, `neighbours`, `label`), sorted by model."""
    if not isinstance(obj, Mapping):
        raise AllocationError(f"policy models must be a table, got {type(obj).__name__}")
    pairs = []
    calls = []
    for model, table in obj.items():
        if not isinstance(table, Mapping) or not table or set(table) - set(_MODEL_KEYS):
            raise AllocationError(
                f"policy models.{model}: expected keys among {', '.join(_MODEL_KEYS)}"
            )
        where = f"policy models.{model}"
        name = _name(model, "policy model")
        if "valuation" in table:
            pairs.append((name, _name(table["valuation"], f"{where}.valuation")))
        how = table.get("attribution", "global")
        if how not in ATTRIBUTIONS:
            raise AllocationError(f"{where}.attribution must be one of {', '.join(ATTRIBUTIONS)},"
                                  f" got {how!r}")
        knobs = {k: table[k] for k in ("k", "neighbours", "label", "near_copies") if k in table}
        if how == "per-call":
            try:
                calls.append((name, CallPolicy(**knobs)))
            except AllocationError as e:
                raise AllocationError(f"{where}: {e}") from e
        elif knobs:
            raise AllocationError(f"{where}: {', '.join(knobs)} apply to attribution = "
                                  "\"per-call\" only")
    return tuple(sorted(pairs)), tuple(sorted(calls, key=lambda c: c[0]))


def _weight(value: object, where: str, *, clip_negative: bool) -> Fraction:
    """Exact non-negative weight; floats are converted exactly, never via decimal strings."""
    # numbers.Real lets NumPy scalars through; bools are refused as a likely caller bug.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise AllocationError(f"{where}: weight must be a real number, got {value!r}")
    if isinstance(value, numbers.Rational):
        w = Fraction(int(value.numerator), int(value.denominator))
    else:
        f = float(value)
        if not math.isfinite(f):
            raise AllocationError(f"{where}: weight must be finite, got {value!r}")
        w = Fraction(f)
    if w < 0:
        if not clip_negative:
            raise AllocationError(f"{where}: weight must be non-negative, got {value!r}")
        return Fraction(0)
    return w


def _find_cycle(edges: Mapping[str, Mapping[str, Fraction]]) -> list[str] | None:
    """First cycle found (as a closed path), visiting nodes in sorted order for a stable message."""
    done: set[str] = set()
    for root in sorted(edges):
        if root in done:
            continue
        path: list[str] = [root]
        on_path: set[str] = {root}
        stack = [iter(sorted(edges[root]))]
        while stack:
            child = next(stack[-1], None)
            if child is None:
                stack.pop()
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                continue
            if child in on_path:
                return [*path[path.index(child) :], child]
            if child in done or child not in edges:
                continue
            path.append(child)
            on_path.add(child)
            stack.append(iter(sorted(edges[child])))
    return None


@dataclass(frozen=True, slots=True)
class LineageGraph:
    """Who passes value to whom: node -> {child: weight}; a child with no edges is a payee account.

    A node listed with an empty (or all-zero) mapping is not a leaf: what reaches it goes to
    ``RESERVE``. The system accounts ``protocol`` and ``reserve`` may not appear as nodes, so
    data value can never be mixed into them silently. Construction copies, validates and freezes.
    """

    edges: Mapping[str, Mapping[str, Fraction]]

    def __post_init__(self) -> None:
        if not isinstance(self.edges, Mapping):
            raise AllocationError(f"lineage edges must be a mapping, got {type(self.edges)}")
        frozen: dict[str, Mapping[str, Fraction]] = {}
        for node in sorted(self.edges, key=str):
            _name(node, "lineage node")
            children = self.edges[node]
            if not isinstance(children, Mapping):
                raise AllocationError(f"lineage node {node}: children must be a mapping")
            weights: dict[str, Fraction] = {}
            for child in sorted(children, key=str):
                _name(child, f"child of lineage node {node}")
                weights[child] = _weight(
                    children[child], f"edge {node} -> {child}", clip_negative=False
                )
            frozen[node] = MappingProxyType(weights)
        names = set(frozen).union(*(set(c) for c in frozen.values()))
        reserved = sorted(names & _SYSTEM_ACCOUNTS)
        if reserved:
            raise AllocationError(f"lineage graph may not use system accounts: {reserved}")
        cycle = _find_cycle(frozen)
        if cycle is not None:
            raise AllocationError(f"lineage graph has a cycle: {' -> '.join(cycle)}")
        object.__setattr__(self, "edges", MappingProxyType(frozen))

    @classmethod
    def build(
        cls, edges: Mapping[str, Mapping[str, Weight]], *, clip_negative: bool = False
    ) -> LineageGraph:
        """Validated graph; ``clip_negative`` turns negative weights (Shapley values) into 0."""
        if not isinstance(edges, Mapping):
            raise AllocationError(f"lineage edges must be a mapping, got {type(edges).__name__}")
        converted: dict[str, dict[str, Fraction]] = {}
        for node, children in edges.items():
            if not isinstance(children, Mapping):
                raise AllocationError(f"lineage node {node}: children must be a mapping")
            converted[node] = {
                child: _weight(w, f"edge {node} -> {child}", clip_negative=clip_negative)
                for child, w in children.items()
            }
        return cls(converted)

    @classmethod
    def from_values(cls, node: str, values: Mapping[str, Weight]) -> LineageGraph:
        """One node's edges from a valuation: negative Shapley values earn nothing, so they clip."""
        return cls.build({node: values}, clip_negative=True)

    def with_edges(
        self, node: str, children: Mapping[str, Weight], *, clip_negative: bool = False
    ) -> LineageGraph:
        """A new graph with ``node``'s edges set (replaced if present); this graph is unchanged."""
        merged: dict[str, Mapping[str, Weight]] = {**self.edges}
        merged[node] = children
        return LineageGraph.build(merged, clip_negative=clip_negative)

    def is_leaf(self, node: str) -> bool:
        """True when ``node`` has no edges of its own, i.e. it names a payee account."""
        return node not in self.edges


def _flow(
    amount: Fraction, node: str, graph: LineageGraph
) -> tuple[dict[str, Fraction], list[str]]:
    """Exact split plus the reasons any part went to reserve (empty when nothing did)."""
    if amount == 0:
        return {}, []
    if graph.is_leaf(node):
        # Only a node with recorded inputs can be split; never pay an account named after a model.
        return {RESERVE: amount}, ["no lineage edges"]
    # Push amounts in topological order so a dataset reached by several paths is split once.
    order: list[str] = []
    seen: set[str] = {node}
    stack = [(node, iter(graph.edges[node]))]
    while stack:
        current, children = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            order.append(current)
        elif child not in seen:
            seen.add(child)
            if not graph.is_leaf(child):
                stack.append((child, iter(graph.edges[child])))
    order.reverse()

    pending: dict[str, Fraction] = {node: amount}
    out: dict[str, Fraction] = {}
    reasons: list[str] = []
    for current in order:
        here = pending.pop(current, Fraction(0))
        if here == 0:
            continue
        weights = graph.edges[current]
        total_weight = sum(weights.values(), Fraction(0))
        if total_weight == 0:
            out[RESERVE] = out.get(RESERVE, Fraction(0)) + here
            reasons.append(
                "no positive data value"
                if current == node
                else f"node {current} has no positive weight"
            )
            continue
        for child, w in weights.items():
            if w == 0:
                continue
            share = here * w / total_weight
            target = out if graph.is_leaf(child) else pending
            target[child] = target.get(child, Fraction(0)) + share
    return dict(sorted(out.items())), reasons


def flow(amount: Fraction | int, node: str, graph: LineageGraph) -> dict[str, Fraction]:
    """Exact split of ``amount`` from ``node`` down to leaf accounts, in proportion to weights.

    Value that cannot go further (``node`` has no edges, or a node's weights are all zero) is
    returned under ``RESERVE``. Zero amounts are omitted; the values sum to ``amount`` exactly.
    """
    if isinstance(amount, bool) or not isinstance(amount, int | Fraction):
        raise AllocationError(f"flow amount must be an int or Fraction, got {amount!r}")
    if amount < 0:
        raise AllocationError(f"flow amount must be non-negative, got {amount}")
    if not isinstance(graph, LineageGraph):
        raise AllocationError(f"flow needs a LineageGraph, got {type(graph).__name__}")
    result, _ = _flow(Fraction(amount), _name(node, "flow node"), graph)
    return result


def largest_remainder(total: int, shares: Mapping[str, Fraction]) -> dict[str, int]:
    """Integers summing to ``total``: floor each share, then +1 each to the largest remainders.

    Ties between equal remainders go to the account name that sorts first (plain ``str`` order).
    A zero share never receives a unit, and each result is the floor or ceiling of its share.
    The result has every key of ``shares``, in sorted order.
    """
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise AllocationError(f"total must be a non-negative integer, got {total!r}")
    exact: dict[str, Fraction] = {}
    for account in sorted(shares, key=str):
        share = shares[account]
        _name(account, "account")
        if isinstance(share, bool) or not isinstance(share, int | Fraction):
            raise AllocationError(f"share of {account} must be a Fraction, got {share!r}")
        if share < 0:
            raise AllocationError(f"share of {account} is negative: {share}")
        exact[account] = Fraction(share)
    if sum(exact.values(), Fraction(0)) != total:
        raise AllocationError(
            f"shares sum to {sum(exact.values(), Fraction(0))}, not the total {total}"
        )
    result = {account: math.floor(share) for account, share in exact.items()}
    # The fractional parts sum to the leftover, so more accounts than leftover units have a
    # positive remainder and a zero share can never be among the winners.
    leftover = total - sum(result.values())
    by_remainder = sorted(exact, key=lambda a: (-(exact[a] - result[a]), a))
    for account in by_remainder[:leftover]:
        result[account] += 1
    return result


@dataclass(frozen=True, slots=True)
class Allocation:
    """An epoch's integer payouts (sorted, no zeros) with the exact entitlements they round."""

    payouts: tuple[tuple[str, int], ...]
    total: int
    exact: tuple[tuple[str, Fraction], ...] = ()
    reserve_reason: str | None = None

    def __post_init__(self) -> None:
        accounts = [a for a, _ in self.payouts]
        if accounts != sorted(set(accounts)):
            raise AllocationError("payouts must be sorted by account without duplicates")
        if any(amount <= 0 for _, amount in self.payouts):
            raise AllocationError("payouts must be positive; zero amounts are omitted")
        if sum(amount for _, amount in self.payouts) != self.total:
            raise AllocationError(f"payouts do not sum to the total {self.total}")

    def as_dict(self) -> dict[str, int]:
        """Account -> integer amount, in account order."""
        return dict(self.payouts)

    def amount(self, account: str) -> int:
        """Integer payout of ``account``; 0 when it receives nothing."""
        return self.as_dict().get(account, 0)


def _fee(model: object, fee: object) -> int:
    if isinstance(fee, bool) or not isinstance(fee, int):
        raise AllocationError(f"fee of model {model} must be an integer, got {fee!r}")
    if not 0 <= fee < MAX_FEE:
        raise AllocationError(f"fee of model {model} must be in [0, 2**63), got {fee}")
    return fee


def allocate_epoch(
    fees: Mapping[str, int],
    policy: Policy,
    owners: Mapping[str, str],
    graph: LineageGraph,
    per_call: Mapping[str, PerCallShare] | None = None,
) -> Allocation:
    """Integer payouts for one epoch: policy split per model, data part down the lineage graph.

    ``fees`` maps each model node to its total fee in minor units. Every model in ``fees`` needs an
    owner in ``owners`` (owner name, not account). A model absent from ``graph`` or without positive
    data weight sends its data part to ``RESERVE``; ``reserve_reason`` says why. ``per_call``:
    the part of a model's fees attributed call by call pays its exact data amounts directly;
    only the rest of its data part goes down the graph. One rounding for the whole epoch.
    """
    if not isinstance(policy, Policy):
        raise AllocationError(f"policy must be a Policy, got {type(policy).__name__}")
    if not isinstance(graph, LineageGraph):
        raise AllocationError(f"graph must be a LineageGraph, got {type(graph).__name__}")
    checked = {_name(m, "model"): _fee(m, fees[m]) for m in sorted(fees, key=str)}
    missing = [m for m in checked if m not in owners]
    if missing:
        raise AllocationError(f"no owner for models: {', '.join(missing)}")

    exact: dict[str, Fraction] = {}
    reasons: list[str] = []

    def credit(account: str, amount: Fraction) -> None:
        if amount:
            exact[account] = exact.get(account, Fraction(0)) + amount

    for model, fee in checked.items():
        protocol, owner, data = policy.split(fee)
        credit(PROTOCOL, protocol)
        credit(owner_account(owners[model]), owner)
        share = (per_call or {}).get(model)
        if share is not None:
            direct = Fraction(share.fee * policy.data_bps, BPS_TOTAL)
            if not 0 <= share.fee <= fee:
                raise AllocationError(f"model {model}: per-call fees {share.fee} not within "
                                      f"its fees {fee}")
            paid = sum(share.credits.values(), Fraction(0))
            if paid != direct or any(v < 0 for v in share.credits.values()):
                raise AllocationError(f"model {model}: per-call amounts sum to {paid}, not the "
                                      f"data part of its per-call fees {direct}")
            for account, amount in sorted(share.credits.items()):
                credit(_name(account, "account"), amount)
            data -= direct
        parts, why = _flow(data, model, graph)
        for account, amount in parts.items():
            credit(account, amount)
        reasons.extend(f"model {model}: {r}" for r in why)

    total = sum(checked.values())
    rounded = largest_remainder(total, exact)
    return Allocation(
        payouts=tuple((a, n) for a, n in rounded.items() if n),
        total=total,
        exact=tuple(sorted(exact.items())),
        reserve_reason="; ".join(reasons) if reasons else None,
    )
