"""Settlement: exact sums along lineage, idempotency across retries and processes, audit, job."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from lineage_platform import audit, usage
from lineage_platform.allocation import Policy
from lineage_platform.errors import SettlementError, VerificationError
from lineage_platform.keys import KeyRing
from lineage_platform.log import leaf_hash, verify_inclusion
from lineage_platform.records import AttributionRecord
from lineage_platform.settlement import account_statement, payout_leaf, settle
from lineage_platform.signing import Envelope, verify_envelope
from tests.ledger_world import EPOCH, NOW, World, events, make_world, yesterday
from tests.storekit import dump
from tests.storekit import tamper as edit_store

CALLS = [("m_lineage", 10_000), ("m_valued", 1_000), ("m_zero", 100)]
# By hand, default policy (protocol 5 %, owner 15 %, data 80 %):
#   m_lineage 10,000: data 8,000 -> mix2 -> mix -> raw_a 4,000 (alice 3:bob 1), raw_b 4,000
#                     (carol 2:dave 6, weights beat rows)
#   m_valued   1,000: data 800 by value -> alice 3 : erin 1 (bob's -1 counts as zero)
#   m_zero       100: data 80 -> reserve (no positive value)
EXPECTED = {
    "contributor:alice": 3_000 + 600,
    "contributor:bob": 1_000,
    "contributor:carol": 1_000,
    "contributor:dave": 3_000,
    "contributor:erin": 200,
    "owner:m_lineage": 1_500,
    "owner:m_valued": 150,
    "owner:m_zero": 15,
    "protocol": 500 + 50 + 5,
    "reserve": 80,
}
ALL_TABLES = ("usage_events", "epochs", "ledger", "payouts")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("settle-world"))


@pytest.fixture
def world(template: World, tmp_path: Path) -> World:
    return template.clone(tmp_path / "project")


@pytest.fixture(scope="module")
def settled(template: World, tmp_path_factory: pytest.TempPathFactory) -> World:
    """EPOCH holds CALLS and is settled; clone before changing it."""
    world = template.clone(tmp_path_factory.mktemp("settled") / "project")
    usage.ingest(world.store, usage.validate_events(events(EPOCH, CALLS)))
    settle(world.store, world.key, Policy.default(), NOW)
    return world


def ingest(world: World, table: pa.Table) -> None:
    usage.ingest(world.store, usage.validate_events(table))


# ------------------------------------------------------------------ amounts


def test_exact_amounts_along_lineage_and_valuations(world: World) -> None:
    ingest(world, events(EPOCH, CALLS))
    [st] = settle(world.store, world.key, Policy.default(), NOW)
    assert dict(st.payouts) == EXPECTED
    assert st.fees_total == st.paid_total == sum(EXPECTED.values()) == 11_100
    assert st.reserve_reason == "model m_zero: no positive data value"
    assert not st.already_settled

    assert sum(p.amount for p in world.store.payouts()) == 11_100
    # double entry: the clearing account takes in the fees and pays out exactly as much
    clearing = f"clearing:{EPOCH}"
    with world.store.snapshot() as view:
        ledger = view.ledger(EPOCH)
    into = sum(p.amount for p in ledger if p.credit == clearing)
    out_of = sum(p.amount for p in ledger if p.debit == clearing)
    assert into == out_of == 11_100
    assert min(p.amount for p in ledger) > 0
    found = world.store.settled_epoch(EPOCH)
    assert found is not None and found == world.store.settled_epoch()
    assert (found.fees_total, found.paid_total, found.payouts, found.root) == (
        11_100, 11_100, 10, st.root
    )


def test_negative_values_pay_nothing_and_no_positive_value_goes_to_reserve(world: World) -> None:
    ingest(world, events(EPOCH, [("m_valued", 999), ("m_zero", 37)]))
    [st] = settle(world.store, world.key, Policy.default(), NOW)
    paid = dict(st.payouts)
    assert "contributor:bob" not in paid  # value -1.0 on m_valued, 0.0 on m_zero
    # m_valued data part 799.2 -> alice 599.4, erin 199.8; m_zero's 29.6 to reserve
    assert (paid["contributor:alice"], paid["contributor:erin"], paid["reserve"]) == (599, 200, 30)
    assert sum(paid.values()) == 999 + 37


def test_rounding_sums_exactly_for_awkward_fees(world: World) -> None:
    fees = [("m_lineage", 1), ("m_lineage", 2), ("m_valued", 7), ("m_zero", 3), ("m_valued", 13)]
    ingest(world, events(EPOCH, fees))
    [st] = settle(world.store, world.key, Policy.default(), NOW)
    assert st.paid_total == st.fees_total == 26
    assert sum(n for _, n in st.payouts) == 26 and all(n > 0 for _, n in st.payouts)


def test_policy_file_is_signed_and_verify_uses_the_signed_one(world: World) -> None:
    policy_file = world.settings.project_dir / "settlement.toml"
    policy_file.write_text("protocol_bps = 1000\nowner_bps = 0\ndata_bps = 9000\n")
    from lineage_platform.settlement import load_policy

    ingest(world, events(EPOCH, [("m_valued", 1_000)]))
    [st] = settle(world.store, world.key, load_policy(world.settings.project_dir), NOW)
    assert dict(st.payouts) == {
        "contributor:alice": 675, "contributor:erin": 225, "protocol": 100,
    }
    policy_file.write_text("protocol_bps = 0\nowner_bps = 0\ndata_bps = 10000\n")
    audit.verify_store(world.store, KeyRing(world.settings.keys_dir).trust())


# ------------------------------------------------------------------ epochs


def test_open_epoch_is_not_settled(world: World) -> None:
    now = datetime.now(UTC)
    today = now.strftime("%Y-%m-%d")
    ingest(world, events(yesterday(), [("m_valued", 10)], prefix="y"))
    ingest(world, events(today, [("m_valued", 20)], prefix="t", hour=0))
    statements = settle(world.store, world.key, Policy.default(), now)
    assert [s.epoch for s in statements] == [yesterday()]
    with pytest.raises(SettlementError, match=f"epoch {today} is still open"):
        settle(world.store, world.key, Policy.default(), now, today)
    assert world.store.open_epochs() == [(today, 1, 20)]
    with world.store.snapshot() as view:
        assert [e.epoch for e in view.settled_epochs()] == [yesterday()]


def test_epoch_without_usage_and_bad_epoch_ids(world: World) -> None:
    with pytest.raises(SettlementError, match="epoch 2026-01-04 has no usage to settle"):
        settle(world.store, world.key, Policy.default(), NOW, "2026-01-04")
    with pytest.raises(SettlementError, match="expected an id like"):
        settle(world.store, world.key, Policy.default(), NOW, "Jan 4")
    assert settle(world.store, world.key, Policy.default(), NOW) == []


# ------------------------------------------------------------------ idempotency


def test_settling_twice_writes_nothing_and_returns_the_same_statement(settled: World) -> None:
    before = dump(settled.store, ALL_TABLES)
    size = settled.store.tree_size()
    [again] = settle(settled.store, settled.key, Policy.default(), NOW + timedelta(days=3), EPOCH)
    first = settled.store.settled_epoch(EPOCH)
    assert first is not None
    assert again.already_settled and (again.root, again.log_index) == (first.root, first.log_index)
    assert dict(again.payouts) == EXPECTED and again.fees_total == again.paid_total == 11_100
    assert dump(settled.store, ALL_TABLES) == before and settled.store.tree_size() == size
    # without --epoch there is nothing left to settle
    assert settle(settled.store, settled.key, Policy.default(), NOW) == []


def test_replaying_every_event_twice_changes_nothing(
    settled: World, world: World, tmp_path: Path
) -> None:
    table = events(EPOCH, CALLS)
    ingest(world, pa.concat_tables([table, table]))  # every event twice in one batch
    ingest(world, table)  # and once more later
    path = tmp_path / "again.parquet"
    import pyarrow.parquet as pq

    pq.write_table(table, path)
    usage.ingest_files(world.store, [path, path])
    settle(world.store, world.key, Policy.default(), NOW)
    ingest(world, table)  # a replay after settlement is dropped, not moved to the next epoch
    settle(world.store, world.key, Policy.default(), NOW)
    assert dump(world.store, ALL_TABLES) == dump(settled.store, ALL_TABLES)
    # same key, same time, same records: the signed log is identical byte for byte too
    assert world.store.read_log()[0].equals(settled.store.read_log()[0])


def test_two_processes_settling_at_once_settle_once(template: World, tmp_path: Path) -> None:
    day = yesterday()
    racing = template.clone(tmp_path / "racing")
    ingest(racing, events(day, CALLS))
    clean = racing.clone(tmp_path / "clean")

    argv = racing.cli_argv("settle", "--json", "--epoch", day)
    procs = [
        subprocess.Popen(argv, env=racing.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for _ in range(2)
    ]
    outputs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        outputs.append(json.loads(stdout))
    clean_out = json.loads(clean.cli("settle", "--json", "--epoch", day, check=True).stdout)

    entries = [o["epochs"][0] for o in outputs]
    assert all(len(o["epochs"]) == 1 for o in outputs)
    assert sorted(e["already_settled"] for e in entries) == [False, True]
    fresh = clean_out["epochs"][0]
    for e in entries:
        assert set(e) == {
            "epoch", "fees_total", "paid_total", "payouts", "root", "log_index", "already_settled",
        }
        assert {k: v for k, v in e.items() if k != "already_settled"} == {
            "epoch": day, "fees_total": 11_100, "paid_total": 11_100, "payouts": 10,
            "root": fresh["root"], "log_index": fresh["log_index"],
        }
    assert isinstance(fresh["root"], str) and len(bytes.fromhex(fresh["root"])) == 32
    assert dump(racing.store, ALL_TABLES) == dump(clean.store, ALL_TABLES)
    assert racing.count("log_entries") == clean.count("log_entries") == len(racing.index) + 1

    # a later run reports the same statement as already settled
    again = json.loads(racing.cli("settle", "--json", "--epoch", day, check=True).stdout)
    assert again["epochs"] == [{**fresh, "already_settled": True}]
    assert json.loads(racing.cli("settle", "--json", check=True).stdout)["epochs"] == []


# ------------------------------------------------------------------ reports and proofs


def test_payouts_and_statement_proofs_verify_against_the_signed_root(settled: World) -> None:
    rows = json.loads(settled.cli("payouts", "--json", "--epoch", EPOCH, check=True).stdout)
    assert {r["account"]: r["amount"] for r in rows} == EXPECTED
    assert all(r["epoch"] == EPOCH for r in rows)
    alice = json.loads(
        settled.cli("payouts", "--json", "--account", "contributor:alice", check=True).stdout
    )
    assert alice == [{"epoch": EPOCH, "account": "contributor:alice", "amount": 3_600}]

    [proof] = json.loads(settled.cli("statement", "contributor:alice", "--json", check=True).stdout)
    assert proof["amount"] == 3_600 and proof["epoch"] == EPOCH
    # Check it the way an outsider would: the signed record's root, not the epochs table.
    index = proof["settlement_log_index"]
    [envelope] = settled.store.entries(index, index + 1).column("envelope").to_pylist()
    env = Envelope.from_json(bytes(envelope))
    verify_envelope(env, KeyRing(settled.settings.keys_dir).trust())
    record = AttributionRecord.from_bytes(env.payload)
    assert record.kind == "settlement" and record.partition == EPOCH
    signed_root = bytes.fromhex((record.details_obj() or {})["root"])
    assert proof["root"] == signed_root.hex() == record.sha256
    leaf = leaf_hash(payout_leaf(EPOCH, "contributor:alice", 3_600))
    path = [bytes.fromhex(h) for h in proof["proof"]]
    verify_inclusion(leaf, proof["leaf_index"], len(EXPECTED), path, signed_root)
    with pytest.raises(Exception, match="root does not match"):
        verify_inclusion(leaf_hash(payout_leaf(EPOCH, "contributor:alice", 3_601)),
                         proof["leaf_index"], len(EXPECTED), path, signed_root)
    assert account_statement(settled.store, "contributor:nobody") == []


# ------------------------------------------------------------------ audit


def test_verify_re_derives_a_clean_settlement(settled: World) -> None:
    report = audit.verify_store(settled.store, KeyRing(settled.settings.keys_dir).trust())
    assert report.epochs == 1


@pytest.mark.parametrize(
    "tamper",
    [
        "UPDATE payouts SET amount = amount + 1 WHERE account = 'contributor:alice'",
        # moving a unit between payees keeps every total: only re-derivation catches it
        "UPDATE payouts SET amount = amount + CASE account WHEN 'contributor:bob' THEN 1 "
        "ELSE -1 END WHERE account IN ('contributor:bob', 'contributor:carol')",
        "UPDATE ledger SET amount = amount - 1 WHERE seq = 3",
        "UPDATE ledger SET credit = 'contributor:mallory' WHERE seq = 4",
        "DELETE FROM ledger WHERE seq = 12",
        "UPDATE usage_events SET fee = fee + 1 WHERE event_id = 'e-0'",
        "UPDATE usage_events SET caller = 'mallory' WHERE event_id = 'e-2'",
        "UPDATE usage_events SET epoch = '2026-01-06' WHERE event_id = 'e-1'",
        "UPDATE epochs SET fees_total = fees_total + 1, paid_total = paid_total + 1",
        "UPDATE epochs SET root = '00' || substr(root, 3)",
        "UPDATE epochs SET ends_at = ends_at + INTERVAL 1 HOUR",
        "UPDATE epochs SET log_index = 3",
        "DELETE FROM epochs",
        "INSERT INTO usage_events (event_id, model, caller, units, fee, occurred_at, epoch, "
        "ingested_at) SELECT 'sneaky', model, caller, units, fee, occurred_at, epoch, "
        "ingested_at FROM usage_events WHERE event_id = 'e-1'",
    ],
)
def test_verify_fails_after_tampering(settled: World, tmp_path: Path, tamper: str) -> None:
    world = settled.clone(tmp_path / "tampered")
    edit_store(world.store, tamper)
    with pytest.raises(VerificationError, match=f"epoch {EPOCH}: "):
        audit.verify_store(world.store, KeyRing(world.settings.keys_dir).trust())


# ------------------------------------------------------------------ Dagster


def test_dagster_job_settles_like_the_cli(template: World, tmp_path: Path) -> None:
    from lineage_platform.dagster.resources import (
        LineageSettingsResource,
        LineageSignerResource,
        LineageStoreResource,
    )
    from lineage_platform.dagster.settlement import settlement_job

    day = yesterday()
    job_world = template.clone(tmp_path / "job")
    ingest(job_world, events(day, CALLS))
    cli_world = job_world.clone(tmp_path / "cli")

    s = job_world.settings
    result = settlement_job.execute_in_process(
        resources={
            "lineage": LineageSettingsResource.from_settings(s),
            "lineage_store": LineageStoreResource.from_settings(s),
            "lineage_signer": LineageSignerResource.from_settings(s),
        }
    )
    assert result.success and result.output_for_node("settle_epochs") == 1
    observed = [
        e.asset_observation_data.asset_observation
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    assert [o.asset_key.path for o in observed] == [["settlement", day]]
    meta = observed[0].metadata

    by_cli = json.loads(cli_world.cli("settle", "--json", check=True).stdout)["epochs"][0]
    assert meta["statement_root"].value == by_cli["root"]
    assert meta["fees_total"].value == meta["paid_total"].value == by_cli["fees_total"]
    assert meta["log_index"].value == by_cli["log_index"]
    assert meta["payout_accounts"].value == by_cli["payouts"] == 10
    assert dump(job_world.store, ALL_TABLES) == dump(cli_world.store, ALL_TABLES)
    # and the CLI sees the job's settlement as the same statement
    seen = json.loads(job_world.cli("settle", "--json", "--epoch", day, check=True).stdout)
    assert seen["epochs"] == [{**by_cli, "already_settled": True}]
