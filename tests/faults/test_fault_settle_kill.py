"""`lineage settle` killed with SIGKILL while it writes a 200,000-event epoch: each epoch is then
settled once or not at all, a re-run settles the rest exactly once, the ledger sums exactly and
`lineage verify` passes.

Kill points are drawn from the span an uninterrupted settlement of the same data spends inside
its DuckDB transactions (measured once per module), so they land inside the one transaction per
epoch (the signed record, ledger, payouts and epoch row), between the two epochs, or just after.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from lineage_platform import usage
from lineage_platform.audit import verify_store
from lineage_platform.keys import KeyRing
from lineage_platform.settlement import load_policy, settle
from lineage_platform.signing import TrustStore
from lineage_platform.stores import Store
from tests.faults.faultkit import PROC, SEED, TRIALS, cli_env, observe, run, spawn
from tests.ledger_world import World, make_world

EPOCHS = {"2026-01-05": 200_000, "2026-01-06": 20_000}
MODELS = ("m_lineage", "m_valued", "m_zero")


def day_of_calls(epoch: str, n: int) -> pa.Table:
    """`n` calls spread over the UTC day `epoch`, fees 1..97 minor units, three models."""
    start = datetime.strptime(epoch, "%Y-%m-%d")
    step = 86_400_000_000 // n  # microseconds
    return pa.table(
        {
            "event_id": [f"{epoch}-{i:06d}" for i in range(n)],
            "model": [MODELS[i % 3] for i in range(n)],
            "caller": [f"caller-{i % 50}" for i in range(n)],
            "units": pa.array([1 + i % 5 for i in range(n)], pa.int64()),
            "fee": pa.array([1 + i % 97 for i in range(n)], pa.int64()),
            "occurred_at": pa.array(
                [start + timedelta(microseconds=i * step) for i in range(n)], pa.timestamp("us")
            ),
        }
    )


@dataclass(frozen=True)
class Template:
    world: World
    roots: dict[str, str]  # what an uninterrupted settlement signs for each epoch
    write_span: float


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    world = make_world(tmp_path_factory.mktemp("faults-settle") / "template")
    for epoch, n in EPOCHS.items():
        inserted, _ = usage.ingest(world.store, usage.validate_events(day_of_calls(epoch, n)))
        assert inserted == n
    calibration = world.clone(world.settings.project_dir.parent / "calibration")
    proc = spawn(["settle", "--json"], _env(calibration))
    line = observe(proc, calibration.settings.duckdb_path)
    assert proc.returncode == 0 and line.write_span is not None, line.stderr
    statements = json.loads(line.stdout)["epochs"]
    assert [s["epoch"] for s in statements] == sorted(EPOCHS)
    return Template(world, {s["epoch"]: s["root"] for s in statements}, line.write_span)


def _env(world: World) -> dict[str, str]:
    return cli_env(world.settings.project_dir, world.settings.state_dir)


def _trust(world: World) -> TrustStore:
    return KeyRing(world.settings.keys_dir).trust()


def settled_epochs(store: Store) -> dict[str, tuple[int, str]]:
    with store.snapshot() as view:
        return {e.epoch: (e.log_index, e.root) for e in view.settled_epochs()}


def assert_ledger_exact(store: Store, epoch: str) -> None:
    """Every minor unit of the epoch's fees is paid out once, and the clearing account nets zero."""
    with store.snapshot() as view:
        fees = sum(view.inputs(epoch).fees.values())
        summary = view.settled(epoch)
        paid = sum(p.amount for p in view.payouts(epoch))
        ledger = view.ledger(epoch)
    assert summary is not None
    clearing = f"clearing:{epoch}"
    into = sum(p.amount for p in ledger if p.credit == clearing)
    out_of = sum(p.amount for p in ledger if p.debit == clearing)
    assert fees == summary.fees_total == summary.paid_total == paid == into == out_of, (
        epoch, fees, paid, into
    )
    assert all(p.amount >= 0 for p in ledger)


def assert_settled_once_or_not(store: Store, roots: dict[str, str]) -> dict[str, tuple[int, str]]:
    settled = settled_epochs(store)
    # Settled epochs are a prefix of time; each has exactly one signed settlement record.
    assert list(settled) == sorted(roots)[: len(settled)], settled
    logged = store.entries().to_pydict()
    records = Counter(
        p for p, k in zip(logged["partition"], logged["kind"], strict=True) if k == "settlement"
    )
    assert dict(records) == dict.fromkeys(settled, 1)
    for epoch, (_, root) in settled.items():
        assert root == roots[epoch], f"epoch {epoch}: a different statement than uninterrupted"
        assert_ledger_exact(store, epoch)
    return settled


@pytest.mark.slow
@pytest.mark.skipif(not PROC, reason="kill points are placed by watching /proc/<pid>/fd")
def test_settle_killed_mid_write_settles_each_epoch_exactly_once(
    template: Template, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    outcomes: list[str] = []
    for trial in range(TRIALS):
        world = template.world.clone(tmp_path / f"trial{trial}")
        where = f"trial {trial} (seed {SEED})"
        proc = spawn(["settle", "--json"], _env(world))
        # The big epoch's transaction fills most of the span: every other trial aims at its
        # end (its commit, the small epoch, the moments after the last commit).
        span = template.write_span
        kill_at = rng.uniform(0, span) if trial % 2 == 0 else rng.uniform(0.75 * span, 1.1 * span)
        line = observe(proc, world.settings.duckdb_path, kill_after_open=kill_at)
        if not line.killed:
            assert proc.returncode == 0, line.stderr
        before = assert_settled_once_or_not(world.store, template.roots)
        outcomes.append(f"{len(before)} of {len(EPOCHS)} settled" if line.killed else "finished")
        verify_store(world.store, _trust(world))  # a killed settlement leaves a valid log

        again = run(["settle", "--json"], _env(world))
        assert again.returncode == 0, f"{where}: {again.stderr}"
        newly = [s["epoch"] for s in json.loads(again.stdout)["epochs"]]
        assert newly == sorted(set(EPOCHS) - set(before)), (where, newly, before)
        after = assert_settled_once_or_not(world.store, template.roots)
        assert list(after) == sorted(EPOCHS), where
        # What was settled before the kill stayed as it was; a third settlement writes nothing.
        assert {e: after[e] for e in before} == before, where
        size = world.store.tree_size()
        policy = load_policy(world.settings.project_dir)
        for epoch in EPOCHS:
            (stmt,) = settle(world.store, world.key, policy, datetime.now(UTC), epoch)
            assert stmt.already_settled and (stmt.log_index, stmt.root) == after[epoch]
        assert world.store.tree_size() == size
        if trial == TRIALS - 1:
            verified = run(["verify"], _env(world))
            assert verified.returncode == 0, verified.stderr
            assert f"{len(EPOCHS)} settled epochs re-derived" in verified.stdout
        else:
            assert verify_store(world.store, _trust(world)).epochs == len(EPOCHS)

    summary = {o: outcomes.count(o) for o in sorted(set(outcomes))}
    print(f"\nsettle kill trials: {TRIALS} x {sum(EPOCHS.values())} events: {summary}, seed {SEED}")
    assert sum(o != "finished" for o in outcomes) >= (TRIALS + 1) // 2, summary

