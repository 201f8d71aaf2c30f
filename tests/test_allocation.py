"""Allocation: policy checks, exact lineage flow, largest-remainder rounding, epoch properties."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lineage_platform.allocation import (
    PROTOCOL,
    RESERVE,
    Allocation,
    LineageGraph,
    Policy,
    Weight,
    allocate_epoch,
    contributor_account,
    flow,
    largest_remainder,
    owner_account,
)
from lineage_platform.errors import AllocationError, LineageError

F = Fraction
ALICE = contributor_account("alice")
BOB = contributor_account("bob")
CAROL = contributor_account("carol")
ACME = owner_account("acme")


# ---------------------------------------------------------------- accounts and policy


def test_account_names() -> None:
    assert ACME == "owner:acme"
    assert ALICE == "contributor:alice"
    assert (PROTOCOL, RESERVE) == ("protocol", "reserve")
    with pytest.raises(AllocationError):
        owner_account("")
    with pytest.raises(AllocationError):
        contributor_account(7)  # type: ignore[arg-type]


def test_default_policy_and_round_trip() -> None:
    policy = Policy.default()
    assert policy.to_mapping() == {"protocol_bps": 500, "owner_bps": 1500, "data_bps": 8000}
    assert Policy.from_mapping(policy.to_mapping()) == policy
    assert policy.split(7) == (F(7, 20), F(21, 20), F(28, 5))
    assert issubclass(AllocationError, LineageError)


@pytest.mark.parametrize(
    ("protocol", "owner", "data"),
    [
        (500, 1500, 7999),  # sums to 9,999
        (0, 0, 10_001),
        (-500, 2500, 8000),  # sums to 10,000 but negative
        (True, 1499, 8500),  # bool is not a basis-point count
        (500.0, 1500, 8000),
        ("500", 1500, 8000),
    ],
)
def test_bad_policy_raises(protocol: object, owner: object, data: object) -> None:
    with pytest.raises(AllocationError):
        Policy(protocol, owner, data)  # type: ignore[arg-type]
    with pytest.raises(AllocationError):
        Policy.from_mapping({"protocol_bps": protocol, "owner_bps": owner, "data_bps": data})


def test_policy_mapping_names_unknown_and_missing_keys() -> None:
    good = Policy.default().to_mapping()
    with pytest.raises(AllocationError, match="unknown keys: data_pbs, extra"):
        Policy.from_mapping({**good, "data_pbs": 1, "extra": 2})
    with pytest.raises(AllocationError, match="missing keys: owner_bps"):
        Policy.from_mapping({"protocol_bps": 2000, "data_bps": 8000})
    with pytest.raises(AllocationError, match="mapping"):
        Policy.from_mapping([500, 1500, 8000])


def test_policy_from_toml_and_json(tmp_path: Path) -> None:
    toml = tmp_path / "policy.toml"
    toml.write_text("protocol_bps = 1000\nowner_bps = 0\ndata_bps = 9000\n")
    assert Policy.from_file(toml) == Policy(1000, 0, 9000)
    js = tmp_path / "policy.json"
    js.write_text(json.dumps({"protocol_bps": 0, "owner_bps": 10_000, "data_bps": 0}))
    assert Policy.from_file(str(js)) == Policy(0, 10_000, 0)


def test_policy_file_errors(tmp_path: Path) -> None:
    with pytest.raises(AllocationError, match="cannot read"):
        Policy.from_file(tmp_path / "absent.toml")
    yaml = tmp_path / "policy.yaml"
    yaml.write_text("protocol_bps: 500\n")
    with pytest.raises(AllocationError, match=r"\.toml or \.json"):
        Policy.from_file(yaml)
    broken = tmp_path / "broken.toml"
    broken.write_text("protocol_bps = = 5\n")
    with pytest.raises(AllocationError, match="not valid TOML"):
        Policy.from_file(broken)
    typo = tmp_path / "typo.json"
    typo.write_text('{"protocol_bps": 500, "owner_bps": 1500, "data_bps": 8000, "dta_bps": 1}')
    with pytest.raises(AllocationError, match=r"typo\.json.*unknown keys: dta_bps"):
        Policy.from_file(typo)


# ---------------------------------------------------------------- lineage graph


def test_graph_is_copied_and_frozen() -> None:
    raw: dict[str, dict[str, Weight]] = {"m": {ALICE: 1, BOB: 0.5}}
    graph = LineageGraph.build(raw)
    raw["m"][ALICE] = 100
    assert graph.edges["m"][ALICE] == 1
    assert graph.edges["m"][BOB] == F(1, 2)
    assert isinstance(graph.edges["m"][BOB], Fraction)
    assert graph.is_leaf(ALICE) and not graph.is_leaf("m")
    with pytest.raises(TypeError):
        graph.edges["m"][ALICE] = F(3)  # type: ignore[index]


def test_float_weights_are_converted_exactly() -> None:
    graph = LineageGraph.build({"m": {ALICE: 0.1}})
    assert graph.edges["m"][ALICE] == F(0.1) != F(1, 10)


@pytest.mark.parametrize(
    ("edges", "cycle"),
    [
        ({"a": {"a": 1}}, "a -> a"),
        ({"a": {"b": 1}, "b": {"a": 1}}, "a -> b -> a"),
        # a zero-weight edge is still an edge: a cycle through it is refused too
        (
            {"m": {"x": 1}, "x": {"y": 2, ALICE: 1}, "y": {"z": 0}, "z": {"x": 1}},
            "x -> y -> z -> x",
        ),
    ],
)
def test_cycles_raise_naming_the_cycle(
    edges: Mapping[str, Mapping[str, Weight]], cycle: str
) -> None:
    with pytest.raises(AllocationError, match=cycle):
        LineageGraph.build(edges)


@pytest.mark.parametrize("weight", [math.nan, math.inf, -math.inf, -1, F(-1, 3), True, "1", None])
def test_bad_weights_raise(weight: object) -> None:
    with pytest.raises(AllocationError, match="edge m -> contributor:alice"):
        LineageGraph.build({"m": {ALICE: weight}})  # type: ignore[dict-item]


def test_negative_shapley_values_clip_to_zero() -> None:
    graph = LineageGraph.from_values("m", {ALICE: 0.75, BOB: -0.25, CAROL: F(1, 4)})
    assert dict(graph.edges["m"]) == {ALICE: F(3, 4), BOB: F(0), CAROL: F(1, 4)}
    assert flow(F(8), "m", graph) == {ALICE: F(6), CAROL: F(2)}
    # NaN is not a negative value: clipping must not hide it
    with pytest.raises(AllocationError, match="finite"):
        LineageGraph.from_values("m", {ALICE: math.nan})
    extended = graph.with_edges("m2", {BOB: -3, CAROL: 1}, clip_negative=True)
    assert extended.edges["m2"][BOB] == 0 and "m2" not in graph.edges


def test_system_accounts_may_not_be_nodes() -> None:
    with pytest.raises(AllocationError, match="system accounts"):
        LineageGraph.build({"m": {RESERVE: 1}})
    with pytest.raises(AllocationError, match="system accounts"):
        LineageGraph.build({PROTOCOL: {ALICE: 1}})


# ---------------------------------------------------------------- flow


def test_flow_diamond_splits_shared_node_once() -> None:
    graph = LineageGraph.build({"m": {"x": 1, "y": 1}, "x": {ALICE: 1}, "y": {ALICE: 1, BOB: 1}})
    assert flow(F(4), "m", graph) == {ALICE: F(3), BOB: F(1)}
    assert flow(0, "m", graph) == {}


def test_flow_sends_unsplittable_value_to_reserve() -> None:
    graph = LineageGraph.build(
        {"m": {"x": 1, "dead": 1, "empty": 2}, "x": {ALICE: 1}, "dead": {BOB: 0}, "empty": {}}
    )
    assert flow(F(8), "m", graph) == {ALICE: F(2), RESERVE: F(6)}
    # a node without edges of its own is never split and never paid as an account here
    assert flow(F(5), "unknown_model", graph) == {RESERVE: F(5)}
    assert flow(F(5), ALICE, graph) == {RESERVE: F(5)}


def test_flow_rejects_bad_amounts() -> None:
    graph = LineageGraph.build({"m": {ALICE: 1}})
    for amount in (F(-1), -1, 1.5, True):
        with pytest.raises(AllocationError):
            flow(amount, "m", graph)  # type: ignore[arg-type]


# ---------------------------------------------------------------- largest remainder


def test_largest_remainder_tie_goes_to_first_name() -> None:
    third = F(10, 3)
    assert largest_remainder(10, {"c": third, "b": third, "a": third}) == {"a": 4, "b": 3, "c": 3}


def test_largest_remainder_hand_cases() -> None:
    # floors 3+1+1 = 5; the two .75 remainders beat the .5
    assert largest_remainder(7, {"x": F(7, 2), "y": F(7, 4), "z": F(7, 4)}) == {
        "x": 3,
        "y": 2,
        "z": 2,
    }
    # exact integers are left alone; remainders 0.6 > 0.3 > 0.1 win in that order
    assert largest_remainder(2, {"a": F(1, 10), "b": F(6, 10), "c": F(3, 10), "d": F(1)}) == {
        "a": 0,
        "b": 1,
        "c": 0,
        "d": 1,
    }
    assert largest_remainder(0, {}) == {}


def test_largest_remainder_never_pays_zero_share() -> None:
    # "a" would win a tie on name, but its share is exactly zero
    assert largest_remainder(1, {"a": F(0), "b": F(1, 2), "c": F(1, 2)}) == {"a": 0, "b": 1, "c": 0}


@pytest.mark.parametrize(
    ("total", "shares", "message"),
    [
        (3, {"a": F(1), "b": F(1)}, "sum to 2"),
        (1, {"a": F(2), "b": F(-1)}, "negative"),
        (1, {"a": 1.0}, "Fraction"),
        (True, {"a": F(1)}, "total"),
        (-1, {}, "total"),
    ],
)
def test_largest_remainder_validates(
    total: int, shares: Mapping[str, Fraction], message: str
) -> None:
    with pytest.raises(AllocationError, match=message):
        largest_remainder(total, shares)


@given(
    total=st.integers(0, 10**9),
    weights=st.lists(st.integers(0, 50), min_size=1, max_size=12).filter(any),
)
def test_largest_remainder_properties(total: int, weights: list[int]) -> None:
    shares = {f"acct{i:02d}": F(total * w, sum(weights)) for i, w in enumerate(weights)}
    result = largest_remainder(total, shares)
    assert list(result) == sorted(shares)
    assert sum(result.values()) == total
    for account, share in shares.items():
        assert result[account] in (math.floor(share), math.ceil(share))
        if share == 0:
            assert result[account] == 0


# ---------------------------------------------------------------- epochs by hand


def derived_graph() -> LineageGraph:
    """m -> datanet -> {part_a: 3 rows, part_b: 1 row} -> contributors."""
    return LineageGraph.build(
        {
            "m": {"datanet": 1},
            "datanet": {"part_a": 3, "part_b": 1},
            "part_a": {ALICE: 2, BOB: 1},
            "part_b": {CAROL: 1},
        }
    )


def test_derived_dataset_exact_amounts() -> None:
    alloc = allocate_epoch({"m": 1000}, Policy.default(), {"m": "acme"}, derived_graph())
    # data 800 -> part_a 600 (alice 400, bob 200), part_b 200 (carol)
    assert alloc.as_dict() == {ALICE: 400, BOB: 200, CAROL: 200, ACME: 150, PROTOCOL: 50}
    assert alloc.total == 1000 and alloc.reserve_reason is None


def test_derived_dataset_rounding_by_hand() -> None:
    alloc = allocate_epoch({"m": 7}, Policy.default(), {"m": "acme"}, derived_graph())
    # exact: data 28/5 -> part_a 21/5 (alice 14/5, bob 7/5), part_b 7/5 (carol)
    assert dict(alloc.exact) == {
        ALICE: F(14, 5),
        BOB: F(7, 5),
        CAROL: F(7, 5),
        ACME: F(21, 20),
        PROTOCOL: F(7, 20),
    }
    # floors 2+1+1+1+0 = 5; two units left: alice (.8), then bob over carol on the .4 tie
    assert alloc.payouts == ((ALICE, 3), (BOB, 2), (CAROL, 1), (ACME, 1))
    assert alloc.amount(PROTOCOL) == 0 and alloc.amount(CAROL) == 1


def test_rounding_happens_once_per_epoch() -> None:
    graph = LineageGraph.build({})
    policy = Policy(protocol_bps=5000, owner_bps=5000, data_bps=0)
    alloc = allocate_epoch({"a": 1, "b": 1}, policy, {"a": "acme", "b": "acme"}, graph)
    # rounding each model alone would pay owner:acme both units on the name tie-break
    assert alloc.as_dict() == {ACME: 1, PROTOCOL: 1}


def test_models_without_data_value_fund_the_reserve() -> None:
    graph = LineageGraph.from_values("m", {ALICE: -1.0, BOB: 0})
    owners = {"m": "acme", "orphan": "acme"}
    alloc = allocate_epoch({"m": 100, "orphan": 100}, Policy.default(), owners, graph)
    assert alloc.as_dict() == {ACME: 30, PROTOCOL: 10, RESERVE: 160}
    assert alloc.reserve_reason == (
        "model m: no positive data value; model orphan: no lineage edges"
    )
    zero = allocate_epoch({"orphan": 0}, Policy.default(), owners, graph)
    assert zero.payouts == () and zero.total == 0 and zero.reserve_reason is None


@pytest.mark.parametrize("fee", [1.5, 100.0, -1, True, 2**63, "10", None, F(3)])
def test_bad_fees_raise(fee: object) -> None:
    with pytest.raises(AllocationError, match="fee of model m"):
        allocate_epoch({"m": fee}, Policy.default(), {"m": "acme"}, derived_graph())  # type: ignore[dict-item]


def test_largest_fee_is_accepted_and_missing_owner_raises() -> None:
    big = 2**63 - 1
    alloc = allocate_epoch({"m": big}, Policy.default(), {"m": "acme"}, derived_graph())
    assert sum(alloc.as_dict().values()) == big
    with pytest.raises(AllocationError, match="no owner for models: m"):
        allocate_epoch({"m": 1}, Policy.default(), {"other": "acme"}, derived_graph())


def test_allocation_checks_its_invariants() -> None:
    with pytest.raises(AllocationError, match="sorted"):
        Allocation(payouts=(("b", 1), ("a", 1)), total=2)
    with pytest.raises(AllocationError, match="sum"):
        Allocation(payouts=(("a", 1),), total=2)
    with pytest.raises(AllocationError, match="positive"):
        Allocation(payouts=(("a", 0), ("b", 2)), total=2)


# ---------------------------------------------------------------- epoch properties

positive_weights = st.one_of(
    st.integers(0, 20),
    st.fractions(min_value=0, max_value=10, max_denominator=12),
    st.floats(min_value=0, max_value=1e6, allow_nan=False),
)
# Shapley values may be negative; they must count as zero
weights = st.one_of(positive_weights, st.just(0), st.floats(min_value=-5, max_value=-1e-9))


@st.composite
def lineage(draw: st.DrawFn) -> tuple[dict[str, dict[str, Weight]], list[str]]:
    """models -> derived (x2 layers) -> datasets -> contributors; edges only go down, depth <= 4."""
    layers = [
        [f"m{i}" for i in range(draw(st.integers(1, 3)))],
        [f"derived_b{i}" for i in range(draw(st.integers(0, 2)))],
        [f"derived_a{i}" for i in range(draw(st.integers(0, 2)))],
        [f"ds{i}" for i in range(draw(st.integers(1, 3)))],
        [contributor_account(f"c{i}") for i in range(draw(st.integers(1, 4)))],
    ]
    edges: dict[str, dict[str, Weight]] = {}
    for depth, layer in enumerate(layers[:-1]):
        below = [n for lower in layers[depth + 1 :] for n in lower]
        for node in layer:
            children = draw(st.lists(st.sampled_from(below), min_size=1, max_size=4, unique=True))
            edges[node] = {child: draw(weights) for child in children}
    return edges, layers[0]


policies = st.integers(0, 10_000).flatmap(
    lambda p: st.integers(0, 10_000 - p).map(lambda o: Policy(p, o, 10_000 - p - o))
)
fee_values = st.integers(0, 10**12)


def reference_flow(amount: Fraction, node: str, graph: LineageGraph) -> dict[str, Fraction]:
    """Naive path-by-path recursion, to check the topological implementation against."""
    out: dict[str, Fraction] = {}

    def walk(value: Fraction, current: str) -> None:
        if graph.is_leaf(current):
            out[current] = out.get(current, F(0)) + value
            return
        total = sum(graph.edges[current].values(), F(0))
        if total == 0:
            out[RESERVE] = out.get(RESERVE, F(0)) + value
            return
        for child, w in graph.edges[current].items():
            walk(value * w / total, child)

    if graph.is_leaf(node):
        return {RESERVE: amount} if amount else {}
    walk(amount, node)
    return {k: v for k, v in out.items() if v}


@settings(deadline=None, max_examples=80)
@given(data=lineage(), amount=fee_values)
def test_flow_matches_reference_and_conserves(
    data: tuple[dict[str, dict[str, Weight]], list[str]], amount: int
) -> None:
    edges, models = data
    graph = LineageGraph.build(edges, clip_negative=True)
    for model in models:
        result = flow(F(amount), model, graph)
        assert result == reference_flow(F(amount), model, graph)
        assert sum(result.values(), F(0)) == amount
        assert all(v > 0 for v in result.values())


@settings(deadline=None, max_examples=100)
@given(data=lineage(), policy=policies, fees=st.lists(fee_values, min_size=3, max_size=3))
def test_epoch_properties(
    data: tuple[dict[str, dict[str, Weight]], list[str]], policy: Policy, fees: list[int]
) -> None:
    edges, models = data
    graph = LineageGraph.build(edges, clip_negative=True)
    fee_map = dict(zip(models, fees, strict=False))
    owners = {m: f"owner{i % 2}" for i, m in enumerate(models)}
    alloc = allocate_epoch(fee_map, policy, owners, graph)

    total = sum(fee_map.values())
    assert alloc.total == total
    assert sum(amount for _, amount in alloc.payouts) == total
    assert sum((v for _, v in alloc.exact), F(0)) == total
    assert all(amount > 0 for _, amount in alloc.payouts)
    exact = dict(alloc.exact)
    for account, amount in alloc.payouts:
        assert amount in (math.floor(exact[account]), math.ceil(exact[account]))

    incoming: dict[str, list[Fraction]] = {}
    for children in graph.edges.values():
        for child, w in children.items():
            incoming.setdefault(child, []).append(w)
    for account, ws in incoming.items():
        if graph.is_leaf(account) and all(w == 0 for w in ws):
            assert alloc.amount(account) == 0 and account not in exact

    # Determinism: same input in another insertion order gives the identical result.
    shuffled = LineageGraph.build(
        {n: dict(reversed(c.items())) for n, c in reversed(edges.items())}, clip_negative=True
    )
    again = allocate_epoch(
        dict(reversed(fee_map.items())), policy, dict(reversed(owners.items())), shuffled
    )
    assert again == alloc


@settings(deadline=None, max_examples=100)
@given(
    data=lineage(),
    policy=policies,
    fee_a=fee_values,
    fee_b=fee_values,
    other_fee=fee_values,
    moved=st.floats(0, 1),
)
def test_moving_fee_between_twin_models_changes_nothing(
    data: tuple[dict[str, dict[str, Weight]], list[str]],
    policy: Policy,
    fee_a: int,
    fee_b: int,
    other_fee: int,
    moved: float,
) -> None:
    edges, models = data
    base = LineageGraph.build(edges, clip_negative=True)
    # "twin" has exactly the same children and weights as m0
    graph = base.with_edges("twin", base.edges["m0"])
    owners = {m: "acme" if m == "m0" else f"owner_{m}" for m in models} | {"twin": "acme"}
    others = {m: other_fee for m in models if m != "m0"}
    shift = int(fee_a * moved)
    before = allocate_epoch({"m0": fee_a, "twin": fee_b, **others}, policy, owners, graph)
    after = allocate_epoch(
        {"m0": fee_a - shift, "twin": fee_b + shift, **others}, policy, owners, graph
    )
    assert after.payouts == before.payouts
    assert after.exact == before.exact
