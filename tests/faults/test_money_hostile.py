"""The money path under attack (issue 15): forged valuations, poison usage events, silent
conflicts, tracebacks and look-alike names. Each test is one attack from the issue, run against
the real parts (a Dagster instance, the sync, the DuckDB store, the `lineage` CLI).

    pytest tests/faults/test_money_hostile.py
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lineage_platform import usage
from lineage_platform.allocation import Policy, contributor_account, owner_account
from lineage_platform.dagster import valuation_metadata
from lineage_platform.dagster.sync import DagsterSource
from lineage_platform.errors import IdentifierError, SettlementError, UsageError
from lineage_platform.identifiers import identifier, problem
from lineage_platform.records import AttributionRecord
from lineage_platform.settlement import epoch_bounds, settle, verify_settlements
from lineage_platform.signing import Envelope
from lineage_platform.sync import sync
from tests.ledger_world import EPOCH, NOW, World, events, make_world, signed_state
from tests.sensor_world import INPUT_POINTER, INPUT_VERSION, write_backlog
from tests.storekit import rows, tamper

ASSETS = ("contributions", "datanet", "digits_classifier", "digits_classifier_valuation")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def yesterday_noon() -> datetime:
    day = (datetime.now(UTC) - timedelta(days=1)).replace(hour=12, minute=0, second=0,
                                                          microsecond=0)
    return day.replace(tzinfo=None)


def calls(model: str, fees: list[int], when: datetime, prefix: str) -> pa.Table:
    return pa.table({
        "event_id": [f"{prefix}-{i}" for i in range(len(fees))],
        "model": [model] * len(fees),
        "caller": ["acme"] * len(fees),
        "units": pa.array([1] * len(fees), pa.int64()),
        "fee": pa.array(fees, pa.int64()),
        "occurred_at": pa.array([when + timedelta(seconds=i) for i in range(len(fees))],
                                pa.timestamp("us")),
    })


# --- 1. one Dagster event must not redirect the fees ---------------------------------------------


def forged_valuation(instance: dg.DagsterInstance, salt: str) -> dg.AssetMaterialization:
    """What issue 15 reports: valuation metadata paying `mallory` everything, tagged with the
    model's input data version and pointer so the signed record names the real model record."""
    model = instance.fetch_materializations(dg.AssetKey("digits_classifier"), limit=1).records[0]
    mat = model.asset_materialization
    assert mat is not None
    content = sha(f"forged {salt}")
    meta = valuation_metadata(
        content,
        [{"id": "mallory", "rows": 1, "value": 1.0, "weight": 1.0, "stderr": 0.0}],
        {"method": "knn-shapley-rows", "seed": None, "samples": 1, "utility": "forged",
         "digest": f"sha256:{content}", "efficiency": {"u_full_minus_u_empty": 1.0}},
    )
    return dg.AssetMaterialization(
        "digits_classifier_valuation", metadata=meta,
        tags={"dagster/data_version": content,
              INPUT_VERSION + "digits_classifier": (mat.tags or {})["dagster/data_version"],
              INPUT_POINTER + "digits_classifier": str(model.storage_id)},
    )


@pytest.fixture
def dagster_world(tmp_path: Path) -> Iterator[tuple[dg.DagsterInstance, World]]:
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        write_backlog(instance, rounds=1)
        settings, key, store = signed_state(tmp_path / "project")
        yield instance, World(settings, store, key, {})


def _sync(instance: dg.DagsterInstance, world: World) -> None:
    sync(DagsterSource(instance, [dg.AssetKey(a) for a in ASSETS]), world.store, world.key,
         until_caught_up=True)


def _valuations(world: World) -> list[tuple[int, AttributionRecord]]:
    with world.store.snapshot() as view:
        envs = view.envelopes(("valuation",))
    return [(i, AttributionRecord.from_bytes(Envelope.from_json(e).payload)) for i, e in envs]


def test_a_forged_runless_valuation_and_the_same_event_from_a_run_pay_mallory_nothing(
    dagster_world: tuple[dg.DagsterInstance, World],
) -> None:
    instance, world = dagster_world
    instance.report_runless_asset_event(forged_valuation(instance, "runless"))
    _sync(instance, world)
    [(idx, forged)] = _valuations(world)
    assert forged.asset == "digits_classifier_valuation" and forged.run is not None
    assert any(i.asset == "digits_classifier" for i in forged.inputs)  # names the real record

    day = yesterday_noon()
    now = datetime.now(UTC)
    usage.ingest(world.store, usage.validate_events(
        calls("digits_classifier", [61_800], day - timedelta(days=1), "a")))
    [first] = settle(world.store, world.key, Policy.default(), now)
    assert contributor_account("mallory") not in dict(first.payouts)
    assert first.paid_total == 61_800 and first.refusals == (
        f"valuation record {idx} of digits_classifier refused: not made by a run "
        "(a runless event)",
    )
    signed = _settled_details(world, first.log_index)
    assert signed["valuation_refusals"] == [
        {"model": "digits_classifier", "log_index": idx,
         "reason": "not made by a run (a runless event)"}
    ]

    # The same event logged from an op inside some run: a run id, but mallory never contributed.
    forged_in_run = forged_valuation(instance, "in a run")

    @dg.op
    def forge() -> Iterator[dg.AssetMaterialization | dg.Output[None]]:
        yield forged_in_run
        yield dg.Output(None)

    @dg.job
    def innocent_looking_job() -> None:
        forge()

    assert innocent_looking_job.execute_in_process(instance=instance).success
    _sync(instance, world)
    [_, (idx2, in_run)] = _valuations(world)
    assert in_run.run is not None and in_run.run.run_id not in ("", "runless")
    usage.ingest(world.store, usage.validate_events(calls("digits_classifier", [61_800], day,
                                                          "b")))
    done = world.cli("settle")  # the settle output names each refused valuation and why
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        f"valuation record {idx2} of digits_classifier refused: pays mallory, not in "
        "digits_classifier's recorded lineage",
        f"valuation record {idx} of digits_classifier refused: not made by a run (a runless "
        "event)",
    ]
    assert world.store.payouts(account=contributor_account("mallory")) == []
    assert verify_settlements(world.store) == 2  # verify re-derives the same decisions
    status = world.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    assert [r["log_index"] for r in json.loads(status.stdout)["valuations_refused"]] == [
        idx2, idx]


def _settled_details(world: World, log_index: int) -> dict[str, object]:
    with world.store.snapshot() as view:
        env = view.envelope_at(log_index)
    assert env is not None
    details = AttributionRecord.from_bytes(Envelope.from_json(env).payload).details_obj()
    assert details is not None
    return details


# --- the valuation rules, one by one, on the signed test lineage ---------------------------------


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("money-world"))


@pytest.fixture
def world(template: World, tmp_path: Path) -> World:
    return template.clone(tmp_path / "project")


def _append_valuation(world: World, **change: object) -> int:
    from lineage_platform import attest
    from lineage_platform.records import Contributor, InputRef, RunRef, details_json

    fields: dict[str, object] = {
        "kind": "valuation", "asset": "m_valued_valuation", "sha256": sha(str(change)),
        "recorded_at": "2026-01-02T00:00:00.000000Z",
        "inputs": (InputRef("m_valued", sha("m_valued"), world.index["m_valued"]),),
        "run": RunRef("dagster", "run-evil", 99),
        "contributors": (Contributor("alice", value=1.0), Contributor("bob", value=9.0)),
        "details": details_json({"method": "exact-shapley",
                                 "efficiency": {"u_full_minus_u_empty": 10.0}}),
    }
    fields.update(change)
    return attest.append_records(world.store, world.key, [AttributionRecord(**fields)]).indices[0]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"asset": "m_valued.valuation"},
         "asset m_valued.valuation is not m_valued's registered valuation (m_valued_valuation)"),
        ({"run": None}, "not made by a run (a runless event)"),
        ({"inputs": ()}, "does not name the model record it values"),
        ({"contributors": ()}, "a contributor's value is missing or not finite"),
        ({"details": '{"method":"exact-shapley","efficiency":{"u_full_minus_u_empty":3.0}}'},
         "values sum to 10, not the gain 3 (exact-shapley is efficient)"),
        ({"details": '{"method":"exact-shapley"}'},
         "exact-shapley is efficient but the record signs no gain"),
        ({"details": '{"method":"bogus"}'}, "method bogus is not registered"),
    ],
)
def test_a_valuation_that_is_not_the_models_own_or_does_not_check_out_is_refused(
    world: World, change: dict[str, object], reason: str
) -> None:
    if change.get("inputs") == ():
        from lineage_platform.records import InputRef

        # names the model's asset but another record (a stale or made-up index)
        change = {"inputs": (InputRef("m_valued", sha("other"), world.index["raw_a"]),)}
    idx = _append_valuation(world, **change)
    usage.ingest(world.store, usage.validate_events(events(EPOCH, [("m_valued", 1000)])))
    [statement] = settle(world.store, world.key, Policy.default(), NOW)
    assert any(r.startswith(f"valuation record {idx} of m_valued refused: {reason}")
               for r in statement.refusals), statement.refusals
    # the older, valid valuation (alice 3, bob -1, erin 1) still pays: bob gets nothing from it
    assert dict(statement.payouts)["contributor:alice"] == 600
    assert verify_settlements(world.store) == 1


def test_a_refused_valuation_shows_in_the_report_and_fails_the_asset_check(
    world: World,
) -> None:
    """Issue 15: the refusal is visible beyond `lineage settle`: in the epoch's HTML report
    (signed in the settlement's details) and as the valuation asset's `valuation_accepted`."""
    from lineage_platform import report as reports
    from lineage_platform.dagster.checks import valuation_acceptance, valuation_accepted_check
    from lineage_platform.dagster.resources import LineageSettingsResource, LineageStoreResource
    from lineage_platform.signing import TrustStore

    def check() -> dg.AssetCheckResult:
        run_check = valuation_accepted_check(dg.AssetKey("m_valued_valuation"), "m_valued")
        result: dg.AssetCheckResult = run_check(
            lineage=LineageSettingsResource.from_settings(world.settings),
            lineage_store=LineageStoreResource.from_settings(world.settings),
        )
        return result

    good = check()
    assert good.passed and good.metadata["refused"].value == "none"
    assert good.metadata["paid on"].value.startswith("valuation record #")
    idx = _append_valuation(world, run=None)
    line = f"valuation record {idx} of m_valued refused: not made by a run (a runless event)"
    bad = check()
    assert not bad.passed and bad.metadata["refused"].value == line
    assert bad.metadata["refused records"].value == [idx]
    assert bad.metadata["paid on"].value == good.metadata["paid on"].value  # the older one
    assert valuation_acceptance(world.store, Policy.default(), "m_valued").passed is False

    usage.ingest(world.store, usage.validate_events(events(EPOCH, [("m_valued", 1000)])))
    settle(world.store, world.key, Policy.default(), NOW)
    built = reports.build_report(world.store, lambda: TrustStore.of(world.key), epoch=EPOCH)
    assert built.refusals == (line,)
    html = reports.render_html(built)
    assert '<h2 id="refused">Refused valuations</h2>' in html
    assert f"<li>{line}</li>" in html and "1 refused and not paid on" in html


def test_a_valid_newer_valuation_pays_and_a_registered_asset_can_be_named(world: World) -> None:
    _append_valuation(world)  # alice 1, bob 9 of the valid kind
    usage.ingest(world.store, usage.validate_events(events(EPOCH, [("m_valued", 1000)])))
    [statement] = settle(world.store, world.key, Policy.default(), NOW)
    assert statement.refusals == ()
    assert dict(statement.payouts)["contributor:bob"] == 720
    named = Policy.from_mapping({**Policy.default().to_mapping(),
                                 "models": {"m_valued": {"valuation": "elsewhere"}}})
    assert named.valuation_asset("m_valued") == "elsewhere"
    assert named.valuation_asset("m_zero") == "m_zero_valuation"
    assert Policy.from_mapping(named.to_mapping()) == named


# --- 2. one usage event must not stop settlement -------------------------------------------------


def test_the_three_poison_files_are_refused_one_line_each_and_settlement_goes_on(
    world: World, tmp_path: Path
) -> None:
    good = calls("m_valued", [100, 200], datetime(2026, 1, 5, 9), "good")
    overflow = calls("m_valued", [2**63 - 1, 2**63 - 1], datetime(2026, 1, 5, 10), "max")
    far = calls("m_valued", [5], datetime(2026, 1, 5, 11), "far").set_column(
        5, "occurred_at", pa.array([datetime(9999, 12, 31)], pa.timestamp("us")))
    pq.write_table(good, tmp_path / "good.parquet")
    pq.write_table(overflow, tmp_path / "overflow.parquet")
    pq.write_table(far, tmp_path / "far.parquet")
    # a Parquet timestamp in year 148108 (past Python's datetime): written as raw microseconds
    raw = calls("m_valued", [5], datetime(2026, 1, 5, 12), "y148108")
    micros = pa.array([4_611_686_018_427_387_000], pa.int64()).cast(pa.timestamp("us"))
    pq.write_table(raw.set_column(5, "occurred_at", micros), tmp_path / "y148108.parquet")
    files = [tmp_path / f for f in ("good.parquet", "overflow.parquet", "far.parquet",
                                    "y148108.parquet")]

    strict = world.cli("usage", "ingest", "--strict", *map(str, files))
    assert strict.returncode == 12 and strict.stderr.count("\n") == 1
    assert "overflow.parquet: fee: row 0 exceeds 10^15" in strict.stderr
    assert world.count() == 0  # --strict: nothing stored

    done = world.cli("usage", "ingest", *map(str, files))
    assert done.returncode == 12, done.stderr
    assert "ingested 2 events" in done.stdout
    lines = done.stderr.splitlines()
    assert [ln for ln in lines if ln.startswith("refused")] == [
        f"refused {tmp_path}/overflow.parquet: fee: row 0 exceeds 10^15 (the bound per event)",
        f"refused {tmp_path}/overflow.parquet: fee: row 1 exceeds 10^15 (the bound per event)",
        f"refused {tmp_path}/far.parquet: occurred_at: row 0 is after "
        + lines[2].split("is after ")[1],
        f"refused {tmp_path}/y148108.parquet: occurred_at: row 0 is after "
        + lines[3].split("is after ")[1],
    ]
    assert lines[-1] == "error: 4 row(s) refused; the other rows are stored"
    settled = world.cli("settle")
    assert settled.returncode == 0, settled.stderr
    assert "epoch 2026-01-05 settled: fees 300" in settled.stdout
    assert world.cli("status").returncode == 0


def test_poison_stored_before_the_bounds_goes_to_quarantine_and_settlement_skips_it(
    world: World,
) -> None:
    usage.ingest(world.store, usage.validate_events(events(EPOCH, [("m_valued", 100)])))
    usage.ingest(world.store, usage.validate_events(events("2026-01-06", [("m_valued", 40)],
                                                           prefix="d6")))
    # what a store written before issue 15 could hold (schema 4, no quarantine yet)
    tamper(world.store, """
        DROP TABLE usage_conflicts; DROP TABLE usage_quarantine;
        DELETE FROM schema_version WHERE version >= 5;
        INSERT INTO usage_events (event_id, model, caller, units, fee, occurred_at, epoch) VALUES
         ('max1', 'm_valued', 'x', 1, 9223372036854775807, TIMESTAMP '2026-01-05 10:00',
          '2026-01-05'),
         ('max2', 'm_valued', 'x', 1, 9223372036854775807, TIMESTAMP '2026-01-05 10:00',
          '2026-01-05'),
         ('far', 'm_valued', 'x', 1, 5, TIMESTAMP '9999-12-31 10:00', '9999-12-31'),
         ('y148108', 'm_valued', 'x', 1, 5, TIMESTAMP '148108-07-06 10:00', '148108-07-06');
    """)
    statements = settle(world.store, world.key, Policy.default(), NOW)
    assert [(s.epoch, s.fees_total) for s in statements] == [("2026-01-05", 100),
                                                            ("2026-01-06", 40)]
    held = world.store.quarantined()
    assert [(q.event_id, q.reason) for q in held] == [
        ("far", "occurred_at 9999-12-31 10:00:00 is in the future"),
        ("max1", "fee 9223372036854775807 exceeds 10^15"),
        ("max2", "fee 9223372036854775807 exceeds 10^15"),
        ("y148108", "occurred_at 148108-07-06 10:00:00 is in the future"),
    ]
    status = world.cli("status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["usage_quarantined"] == 4
    listed = world.cli("usage", "quarantine", "list", "--json")
    assert [q["event_id"] for q in json.loads(listed.stdout)] == ["far", "max1", "max2",
                                                                   "y148108"]
    refused = world.cli("usage", "quarantine", "release", "max1")
    assert refused.returncode == 12 and refused.stderr == (
        "error: 'max1': an amount still exceeds 10^15\n")
    dropped = world.cli("usage", "quarantine", "drop", "far")
    assert dropped.returncode == 0, dropped.stderr
    again = world.cli("usage", "quarantine", "drop", "far")
    assert again.returncode == 12 and "already dropped" in again.stderr
    assert [q.state for q in world.store.quarantined(None)] == ["dropped", "held", "held", "held"]
    assert rows(world.store, "SELECT count(*) FROM usage_events WHERE event_id = 'far'") == [(0,)]
    assert verify_settlements(world.store) == 2


def test_a_quarantined_event_that_now_passes_the_bounds_can_be_released(world: World) -> None:
    tamper(world.store, """
        DROP TABLE usage_conflicts; DROP TABLE usage_quarantine;
        DELETE FROM schema_version WHERE version >= 5;
        INSERT INTO usage_events (event_id, model, caller, units, fee, occurred_at, epoch) VALUES
         ('soon', 'm_valued', 'x', 1, 7, now()::TIMESTAMP + INTERVAL 2 HOUR, '2099-01-01');
    """)
    [held] = world.store.quarantined()
    assert held.event_id == "soon" and "in the future" in held.reason
    with pytest.raises(UsageError, match="still out of bounds"):
        world.store.release_quarantined("soon", datetime.now(UTC))
    released = world.store.release_quarantined("soon", datetime.now(UTC) + timedelta(hours=3))
    assert released.state == "released" and world.store.usage_count() == 1


def test_an_epoch_past_2_63_is_refused_whole_at_ingestion(world: World) -> None:
    big = 10**15
    batch = calls("m_valued", [big] * 9224, datetime(2026, 1, 5), "big")  # > 2^63-1 in all
    with pytest.raises(UsageError, match=r"epoch 2026-01-05: fees would total .* past 2\^63-1"):
        usage.ingest(world.store, usage.validate_events(batch))
    assert world.count() == 0


@pytest.mark.parametrize("epoch", ["2026-1-5", "148108-07-06", "9999-12-31x", ""])
def test_epoch_ids_are_dates_compared_as_dates(epoch: str) -> None:
    with pytest.raises(SettlementError, match="expected an id like 2026-11-23"):
        epoch_bounds(epoch)


def test_an_event_before_the_logs_first_record_is_refused(world: World) -> None:
    old = calls("m_valued", [5], datetime(2025, 11, 1), "old")
    with pytest.raises(UsageError, match="occurred_at: row 0 is before 2025-12-01"):
        usage.ingest(world.store, usage.validate_events(old))


# --- 3. conflicts are loud ------------------------------------------------------------------------


def test_a_conflicting_replay_exits_non_zero_and_is_listed(world: World, tmp_path: Path) -> None:
    base = ["usage", "record", "--model", "m_valued", "--caller", "acme", "--id", "dup1"]
    assert world.cli(*base, "--fee", "100", check=True).stdout == "recorded\n"
    exact = world.cli(*base, "--fee", "100", "--at", "2026-12-01T10:00:00Z")
    assert exact.returncode == 0 and exact.stdout == "already recorded (replay ignored)\n"
    conflict = world.cli(*base, "--fee", "999999")
    assert conflict.returncode == 16 and conflict.stderr.count("\n") == 1
    assert conflict.stderr.startswith("error: 1 event(s) reuse an id with a different body")

    same_file = tmp_path / "twice.csv"
    same_file.write_text("event_id,model,caller,units,fee\nf1,m_valued,a,1,5\nf1,m_valued,a,1,500\n")
    ingested = world.cli("usage", "ingest", str(same_file))
    assert ingested.returncode == 16 and "1 conflicts" in ingested.stdout
    listed = json.loads(world.cli("usage", "conflicts", "--json", check=True).stdout)
    assert [(c["event_id"], c["fee"], c["kept"]) for c in listed] == [
        ("dup1", 999999, "m_valued|acme|1|100"),
        ("f1", 500, "m_valued|a|1|5"),
    ]
    assert rows(world.store, "SELECT event_id, fee FROM usage_events ORDER BY 1") == [
        ("dup1", 100), ("f1", 5)]


# --- 4 and 5: one line, never a traceback; identifiers -------------------------------------------


def test_value_with_a_bogus_method_is_one_line(world: World) -> None:
    done = world.cli("value", "m_valued", "--method", "bogus")
    assert done.returncode != 0 and done.stderr.count("\n") == 1, done.stderr
    assert "bogus" in done.stderr and "Traceback" not in done.stderr


def test_a_csv_with_a_duplicated_column_is_one_line(world: World, tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text("event_id,model,caller,units,fee,fee\ne1,m_valued,a,1,5,6\n")
    done = world.cli("usage", "ingest", str(path))
    assert done.returncode == 12 and done.stderr == (
        f"error: {path}: usage events: column(s) fee appear twice\n")


def test_any_other_exception_is_one_internal_error_line_with_a_saved_traceback(
    world: World, tmp_path: Path
) -> None:
    # A plain bug (a KeyError where no handler expects one), planted at interpreter start.
    env = world.env()
    boom = tmp_path / "boom"
    boom.mkdir()
    (boom / "sitecustomize.py").write_text(
        "import lineage_platform.config as c\n"
        "def _bug(*a, **k):\n    raise KeyError('surprise')\n"
        "c.Settings.from_env = classmethod(_bug)\n"
    )
    env["PYTHONPATH"] = f"{boom}:{env.get('PYTHONPATH', '')}"
    import subprocess

    done = subprocess.run(World.cli_argv("status"), env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 70, done.stderr
    assert done.stderr.startswith("internal error: KeyError: 'surprise' (traceback saved to ")
    assert done.stderr.count("\n") == 1
    saved = Path(done.stderr.split("traceback saved to ")[1].rstrip(")\n"))
    assert "KeyError: 'surprise'" in saved.read_text()


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("alice\u202egnp.exe", "has a format or bidi character (U+202E)"),
        ("al\u200bice", "has a format or bidi character (U+200B)"),
        ("\ufeffalice", "has a format or bidi character (U+FEFF)"),
        ("p\u0430ypal", "mixes Latin and Cyrillic letters (look-alike)"),
        ("\u03bfpenai", "mixes Latin and Greek letters (look-alike)"),
        ("line\u2028break", "has a hidden character (U+2028)"),
    ],
)
def test_spoofing_identifiers_are_refused_everywhere(world: World, name: str, why: str) -> None:
    assert problem(name) == why
    with pytest.raises(IdentifierError, match=r"look-alike|character"):
        identifier(name, "contributor id")
    table = events(EPOCH, [("m_valued", 5)]).set_column(2, "caller", pa.array([name]))
    with pytest.raises(UsageError, match=r"caller: row 0 .*" + why.split(" (")[0]):
        usage.validate_events(table)
    with pytest.raises(IdentifierError):
        contributor_account(name)
    with pytest.raises(IdentifierError):
        owner_account(name)


def test_identifiers_are_nfc_and_single_scripts_are_fine() -> None:
    assert identifier("Zoe\u0308", "id") == "Zo\u00eb"
    for name in ("ελένη", "иван", "张伟", "Zoë", "team-7_ok", "o'brien"):
        assert problem(name) is None
    table = pa.table({"event_id": ["e"], "model": ["m"], "caller": ["Zoe\u0308"], "units": [1],
                      "fee": [1]})
    assert usage.validate_events(table).column("caller")[0].as_py() == "Zo\u00eb"


def test_a_checkpoint_signed_under_a_foreign_origin_does_not_verify(tmp_path: Path) -> None:
    from lineage_platform.audit import CHECKPOINT, ENVELOPES, KEYS, verify_bundle
    from lineage_platform.errors import VerificationError
    from lineage_platform.log import Checkpoint, SignedCheckpoint, leaf_hash, root_from_leaves
    from lineage_platform.records import Contributor, utc_timestamp
    from lineage_platform.signing import SigningKey, TrustStore, sign_envelope

    key = SigningKey.generate()
    rec = AttributionRecord(kind="dataset", asset="part_0", sha256=sha("p0"),
                            recorded_at=utc_timestamp(),
                            contributors=(Contributor("alice", rows=1),))
    envelope = sign_envelope(rec.to_bytes(), key).to_json()
    root = root_from_leaves([leaf_hash(envelope)])
    for origin, ok in (("lineage-platform.local/log", True), ("evil.example/log", False)):
        folder = tmp_path / origin.replace("/", "_")
        folder.mkdir()
        (folder / ENVELOPES).write_bytes(envelope + b"\n")
        checkpoint = SignedCheckpoint.sign(Checkpoint(origin, 1, root, utc_timestamp()), key)
        (folder / CHECKPOINT).write_bytes(checkpoint.to_json() + b"\n")
        (folder / KEYS).write_bytes(TrustStore.of(key).to_json())
        if ok:
            verify_bundle(folder, TrustStore.of(key))
        else:
            with pytest.raises(VerificationError, match=r"checkpoint 0: origin evil\.example/"
                               r"log is not this log's"):
                verify_bundle(folder, TrustStore.of(key))


@pytest.mark.parametrize(
    ("spoof", "why"),
    [
        ("al\u200bice", "has a format or bidi character (U+200B)"),
        ("ali\u202ece", "has a format or bidi character (U+202E)"),
        ("\u0430lice", "mixes Latin and Cyrillic letters (look-alike)"),
        ("Zoe\u0308", "is not in Unicode NFC"),
    ],
)
def test_a_spoofed_contributor_id_is_never_recorded(world: World, spoof: str, why: str) -> None:
    """The record itself refuses the id (on construction, and in both parsers of signed
    bytes), so no signed record can carry it to a settlement (which also refuses it)."""
    from lineage_platform import attest
    from lineage_platform.errors import RecordError
    from lineage_platform.records import Contributor, scan_payload

    with pytest.raises(RecordError, match=f"^id: {re.escape(why)}"):
        Contributor(spoof, rows=50)
    good = AttributionRecord(
        kind="dataset", asset="raw_s", sha256=sha("raw_s"), recorded_at="2026-01-02T00:00:00Z",
        contributors=(Contributor("carol", rows=50),),
    )
    spoofed = json.dumps(spoof, ensure_ascii=False).encode()
    forged = good.to_bytes().replace(b'"id":"carol"', b'"id":' + spoofed)
    assert forged != good.to_bytes()
    where = re.escape(f"predicate.contributors[0].id: {why}")
    for parse in (AttributionRecord.from_bytes, scan_payload):
        with pytest.raises(RecordError, match=f"^{where}"):
            parse(forged)
    assert attest.append_records(world.store, world.key, [good]).appended == 1


def test_one_event_with_a_spoofed_contributor_does_not_stop_the_sync(
    dagster_world: tuple[dg.DagsterInstance, World],
) -> None:
    """The record cannot carry the id, so the event is not signed: it is skipped with its
    reason (counted, shown by `lineage sync` and the sensor's tick) and every event after it
    is still signed."""
    instance, world = dagster_world
    forged = forged_valuation(instance, "spoof")
    meta = dict(forged.metadata)
    spoofed = valuation_metadata(
        sha("spoofed"),
        [{"id": "ali\u202ece", "rows": 1, "value": 1.0, "weight": 1.0, "stderr": 0.0}],
        {"method": "knn-shapley-rows", "seed": None, "samples": 1, "utility": "x",
         "digest": f"sha256:{sha('spoofed')}", "efficiency": {"u_full_minus_u_empty": 1.0}},
    )
    meta.update(spoofed)
    instance.report_runless_asset_event(
        dg.AssetMaterialization("digits_classifier_valuation", metadata=meta, tags=forged.tags)
    )
    instance.report_runless_asset_event(forged_valuation(instance, "after"))  # a later event
    source = DagsterSource(instance, [dg.AssetKey(a) for a in ASSETS])
    result = sync(source, world.store, world.key, until_caught_up=True)
    [passed] = result.passed
    assert result.unattributed == 1 and passed.asset == "digits_classifier_valuation"
    assert "not signed" in passed.reason and "U+202E" in passed.reason
    [(_, later)] = _valuations(world)  # the event after the spoofed one was signed
    assert [c.id for c in later.contributors] == ["mallory"]
    again = sync(source, world.store, world.key, cursor=result.cursor)
    assert (again.read, again.appended) == (0, 0)  # the cursor moved past it
