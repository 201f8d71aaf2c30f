"""Issue 18 on every driver: a call's input and served output are stored and read back exactly,
each model keeps one input length, receipt leaves are written in the settlement unit, and a
store made before the call columns existed is upgraded in place with its events kept."""

from __future__ import annotations

import struct
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from lineage_platform import usage
from lineage_platform.errors import UsageError
from lineage_platform.signing import SigningKey
from lineage_platform.stores import Store
from lineage_platform.stores.base import RECEIPTS_SCHEMA
from tests.contract.conftest import Backend
from tests.ledger_world import EPOCH, events, sign_lineage


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


def with_calls(table: pa.Table, inputs: list[list[float] | None],
               outputs: list[str | None]) -> pa.Table:
    return table.append_column("input", pa.array(inputs, pa.list_(pa.float64()))).append_column(
        "output", pa.array(outputs, pa.string()))


def test_inputs_and_outputs_are_stored_exactly_and_read_as_calls(
    backend: Backend, key: SigningKey
) -> None:
    store = backend.open()
    sign_lineage(store, key)
    table = with_calls(
        events(EPOCH, [("m_valued", 10), ("m_valued", 20), ("m_zero", 30)]),
        [[0.1, -0.0, 1e300], None, [2.5]],
        ["7", None, "cat"],
    )
    assert usage.ingest(store, usage.validate_events(table)) == (3, 0)
    with store.snapshot() as view:
        calls = view.calls(EPOCH)
        digest = view.inputs(EPOCH).events_digest
    assert calls.column("event_id").to_pylist() == ["e-0", "e-1", "e-2"]
    assert calls.column("fee").to_pylist() == [10, 20, 30]
    raw = calls.column("call_input").to_pylist()
    assert raw[0] == struct.pack("<3d", 0.1, 0.0, 1e300) and raw[1] is None
    assert raw[2] == struct.pack("<d", 2.5)
    assert calls.column("call_output").to_pylist() == ["7", None, "cat"]
    assert store.input_dimensions() == {"m_valued": (24, 24), "m_zero": (8, 8)}
    # The events digest covers what it always did: the call columns do not change it.
    plain = backend.open()
    with plain.snapshot() as view:
        assert view.inputs(EPOCH).events_digest == digest
    # A model keeps the input length it has.
    longer = with_calls(events(EPOCH, [("m_valued", 5)], prefix="x"), [[1.0, 2.0]], ["1"])
    with pytest.raises(UsageError, match=r"m_valued gets inputs of \[2, 3\] numbers"):
        usage.ingest(store, usage.validate_events(longer))
    assert store.usage_count() == 3


def test_receipt_leaves_are_written_with_the_settlement_and_found_by_event(
    backend: Backend, key: SigningKey
) -> None:
    from datetime import datetime

    from lineage_platform.stores import Payout, Posting, SettledEpoch

    store = backend.open()
    sign_lineage(store, key)
    usage.ingest(store, usage.validate_events(events(EPOCH, [("m_valued", 10)])))
    leaves = pa.table({"event_id": ["e-0", "e-1"], "leaf_hash": [b"a" * 32, b"b" * 32]},
                      schema=RECEIPTS_SCHEMA)
    start = datetime(2026, 1, 5)
    with store.settling(EPOCH) as unit:
        unit.write_settlement(
            SettledEpoch(EPOCH, start, start + timedelta(days=1), 10, 10, 1, "00" * 32, 0),
            [Posting("usage:m_valued", f"clearing:{EPOCH}", 10),
             Posting(f"clearing:{EPOCH}", "protocol", 10)],
            [Payout(EPOCH, "protocol", 10)],
            leaves,
        )
    with store.snapshot() as view:
        got = view.receipt_leaves(EPOCH)
        assert got.column("event_id").to_pylist() == ["e-0", "e-1"]
        assert got.column("leaf_hash").to_pylist() == [b"a" * 32, b"b" * 32]
        assert view.receipt_epoch("e-1") == EPOCH and view.receipt_epoch("nope") is None
        assert view.receipt_leaves("2026-01-04").num_rows == 0


OLD_EVENT = (
    "INSERT INTO usage_events (event_id, model, caller, units, fee, occurred_at, epoch) "
    "VALUES ('old-0', 'm_valued', 'acme', 1, 10, TIMESTAMP '2026-01-05 10:00:00', '2026-01-05')"
)


def _old_schema(backend: Backend, store: Store) -> None:
    """The store as the driver made it before issue 18 (its previous schema version)."""
    if backend.name == "duckdb":
        import duckdb

        from lineage_platform.stores import duckdb as driver

        path = backend.url.removeprefix("duckdb://")
        con = duckdb.connect(path)
        con.execute("CREATE TABLE schema_version "
                    "(version INTEGER PRIMARY KEY, applied_at TIMESTAMP DEFAULT now())")
        for version, sql in driver.MIGRATIONS[:-1]:
            con.execute(sql)
            con.execute("INSERT INTO schema_version (version) VALUES (?)", [version])
        con.execute(OLD_EVENT)
        con.close()
    else:
        import psycopg

        from lineage_platform.stores import postgres as driver

        with psycopg.connect(backend.url, autocommit=True) as pg:
            pg.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
                       "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
            for version, sql in driver.MIGRATIONS[:-1]:
                pg.execute(sql)  # type: ignore[call-overload]
                pg.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
            pg.execute(OLD_EVENT)
    assert "call_input" not in str(driver.MIGRATIONS[-2][1])


def test_a_store_from_before_the_call_columns_is_upgraded_with_its_events(
    backend: Backend, key: SigningKey
) -> None:
    store = backend.open()
    _old_schema(backend, store)
    sign_lineage(store, key)  # a write: the upgrade runs first
    fresh = with_calls(events(EPOCH, [("m_valued", 20)], prefix="n"), [[1.0]], ["1"])
    usage.ingest(store, usage.validate_events(fresh))
    with store.snapshot() as view:
        calls = view.calls(EPOCH)
        assert view.strays() == []
    assert calls.column("event_id").to_pylist() == ["n-0", "old-0"]
    assert calls.column("call_input").to_pylist() == [struct.pack("<d", 1.0), None]
    assert calls.column("call_output").to_pylist() == ["1", None]


def test_a_per_call_settlement_on_every_driver(
    backend: Backend, key: SigningKey, tmp_path: Path
) -> None:
    """Two contributors' parts as files signed by hash, a model, calls with inputs: settled per
    call, re-derived by verify, one receipt leaf per call, fees paid to the unit."""
    import hashlib

    import numpy as np
    import pyarrow.parquet as pq

    from lineage_platform import attest
    from lineage_platform.allocation import CallPolicy, Policy
    from lineage_platform.records import AttributionRecord, Contributor, DvcRef, InputRef
    from lineage_platform.settlement import settle, verify_settlements
    from tests.ledger_world import NOW, RECORDED

    store = backend.open()
    rng = np.random.default_rng(1)
    refs = []
    (tmp_path / "parts").mkdir()
    for i, who in enumerate(("ann", "ben")):
        x = rng.normal(loc=4.0 * i, size=(30, 3))
        rel = f"parts/{who}.parquet"
        pq.write_table(pa.table({"f0": x[:, 0], "f1": x[:, 1], "f2": x[:, 2],
                                 "label": np.full(30, i)}), tmp_path / rel)
        data = (tmp_path / rel).read_bytes()
        rec = AttributionRecord(
            kind="dataset", asset="contributions", partition=who,
            sha256=hashlib.sha256(data).hexdigest(), recorded_at=RECORDED,
            contributors=(Contributor(who, rows=30),),
            dvc=DvcRef(rel, hashlib.md5(data).hexdigest()))
        refs.append(InputRef("contributions", rec.sha256,
                             attest.append_records(store, key, [rec]).indices[0]))
    model = AttributionRecord(kind="model", asset="m_calls", sha256="f" * 64,
                              recorded_at=RECORDED, inputs=tuple(refs))
    attest.append_records(store, key, [model])
    near_ben = rng.normal(loc=4.0, size=(6, 3))
    table = with_calls(events(EPOCH, [("m_calls", 101)] * 7),
                       [row.tolist() for row in near_ben] + [None], ["1"] * 6 + [None])
    usage.ingest(store, usage.validate_events(table, now=NOW))
    policy = Policy(500, 1500, 8000, calls=(("m_calls", CallPolicy(k=3, neighbours=6)),))
    [st] = settle(store, key, policy, NOW, project_dir=tmp_path)
    assert st.fees_total == st.paid_total == 707
    paid = {p.account: p.amount for p in store.payouts(epoch=EPOCH)}
    # Six calls near ben's rows served ben's label: their data share (6 x 80.8) is all ben's;
    # the call without input follows the lineage (equally to both parts, then by rows).
    from fractions import Fraction

    exact = Fraction(6 * 101 * 8_000, 10_000) + Fraction(101 * 8_000, 10_000) / 2  # 525.2
    assert abs(paid["contributor:ben"] - exact) < 1
    assert abs(paid["contributor:ann"] - Fraction(101 * 8_000, 10_000) / 2) < 1
    with store.snapshot() as view:
        assert view.receipt_leaves(EPOCH).num_rows == 7
    assert verify_settlements(store, tmp_path) == 1
