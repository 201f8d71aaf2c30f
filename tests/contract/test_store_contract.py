"""The store protocol's contract (lineage_platform/stores/base.py), run against every driver.

No SQL and no driver internals: only what `open_store(url)` returns. A new driver passes this
file before anything else uses it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime, timedelta

import pyarrow as pa
import pytest

from lineage_platform import attest, usage
from lineage_platform.allocation import Policy
from lineage_platform.errors import StoreBusyError, StoreError
from lineage_platform.log import SignedCheckpoint
from lineage_platform.settlement import account_statement, settle, verify_settlements
from lineage_platform.signing import SigningKey
from lineage_platform.stores import Entry, LedgerStore, LogStore, Store
from lineage_platform.stores.base import LOG_COLUMNS
from tests.contract.conftest import Backend
from tests.ledger_world import EPOCH, NOW, events, sign_lineage
from tests.logkit import dataset

CALLS = [("m_lineage", 10_000), ("m_valued", 1_000), ("m_zero", 100)]


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


def _append(store: Store, key: SigningKey, records: list[object]) -> attest.AppendResult:
    return attest.append_records(store, key, records)  # type: ignore[arg-type]


def test_the_driver_is_a_store(backend: Backend) -> None:
    store = backend.open()
    assert isinstance(store, Store) and isinstance(store, LogStore)
    assert isinstance(store, LedgerStore)
    described = store.describe()
    assert described and "lineage-test-pw" not in described  # no password in messages


# -- the log ---------------------------------------------------------------------------------------
def test_batches_get_increasing_indices_and_one_checkpoint_each(
    backend: Backend, key: SigningKey
) -> None:
    store = backend.open()
    batches = [[dataset(i) for i in range(3)], [dataset(3)], [dataset(i) for i in range(4, 8)]]
    results = [_append(store, key, batch) for batch in batches]
    assert [r.indices for r in results] == [(0, 1, 2), (3,), (4, 5, 6, 7)]
    assert [r.appended for r in results] == [3, 1, 4]
    sizes = [r.checkpoint.checkpoint.tree_size for r in results if r.checkpoint is not None]
    assert sizes == [3, 4, 8]
    table, checkpoints = store.read_log()
    assert table.column_names == list(LOG_COLUMNS)
    assert table.column("idx").to_pylist() == list(range(8))
    assert table.column("asset").to_pylist() == [f"datanet/part_{i}" for i in range(8)]
    assert [SignedCheckpoint.from_json(c).checkpoint.tree_size for c in checkpoints] == sizes
    assert store.tree_size() == 8
    latest = store.latest_checkpoint()
    assert latest is not None and SignedCheckpoint.from_json(latest).checkpoint.tree_size == 8


def test_a_retried_append_adds_nothing_and_returns_the_same_indices(
    backend: Backend, key: SigningKey
) -> None:
    store = backend.open()
    first = _append(store, key, [dataset(i) for i in range(3)])
    before = store.read_log()
    again = _append(store, key, [dataset(i) for i in range(3)])  # rebuilt: new recorded_at
    assert again.indices == first.indices == (0, 1, 2)
    assert (again.appended, again.skipped, again.checkpoint) == (0, 3, None)
    after = store.read_log()
    assert after[0].equals(before[0]) and after[1] == before[1]
    # Known ones keep their index; a repeat inside the batch is written once.
    mixed = _append(store, key, [dataset(1), dataset(3), dataset(3), dataset(0)])
    assert mixed.indices == (1, 3, 3, 0) and (mixed.appended, mixed.skipped) == (1, 3)
    assert store.tree_size() == 4


def test_records_without_a_run_are_keyed_by_their_digest(backend: Backend, key: SigningKey) -> None:
    store = backend.open()
    record = dataset(0, dagster=False)
    first = _append(store, key, [record])
    again = _append(store, key, [record])
    assert again.indices == first.indices == (0,) and again.appended == 0
    table, _ = store.read_log()
    assert table.column("idem_key").to_pylist() == [f"sha256:{record.digest()}"]
    assert table.column("record_digest").to_pylist() == [record.digest()]


def test_lookups_by_key_asset_content_and_the_source_cursor(
    backend: Backend, key: SigningKey
) -> None:
    store = backend.open()
    assert (store.indices_for(["x"]), store.latest_index("a"), store.source_cursor("dagster")) == (
        {}, None, {}
    )
    assert (store.tree_size(), store.known_models(), store.usage_count()) == (0, set(), 0)
    records = [
        dataset(5, asset="a", run="r1"),
        dataset(9, asset="a", run="r2", partition="p1"),
        dataset(7, asset="b", run="r1", kind="model"),
        dataset(2, asset="a", run="r3", dagster=False),
    ]
    result = _append(store, key, records)
    keys = store.read_log()[0].column("idem_key").to_pylist()
    assert store.indices_for([keys[1], "nope", keys[3]]) == {keys[1]: 1, keys[3]: 3}
    assert store.indices_for([]) == {}
    assert (store.latest_index("a"), store.earliest_index("a")) == (3, 0)
    assert store.latest_index("a", partition="p1") == 1
    assert store.latest_index("a", sha256=records[0].sha256) == 0
    assert store.latest_index("a", sha256=records[0].sha256, partition="p1") is None
    assert store.latest_index("zzz") is None and store.earliest_index("zzz") is None
    # Newest event id per asset among `<orchestrator>:<run>:<event>` keys (not the digest one).
    assert store.source_cursor("dagster") == {"a": 9, "b": 7}
    assert store.source_cursor("airflow") == {}
    assert store.known_models() == {"b"}
    assert result.indices == (0, 1, 2, 3)


def test_entries_ranges_and_indices(backend: Backend, key: SigningKey) -> None:
    store = backend.open()
    _append(store, key, [dataset(i) for i in range(6)])
    whole = store.entries()
    assert whole.column_names == list(LOG_COLUMNS) and whole.num_rows == 6
    assert store.entries(2, 4).column("idx").to_pylist() == [2, 3]
    assert store.entries(4).column("idx").to_pylist() == [4, 5]
    assert store.entries(6).num_rows == 0
    picked = store.entries_at([5, 1, 42])
    assert picked.column("idx").to_pylist() == [1, 5]
    assert picked.column("envelope").to_pylist() == [
        whole.column("envelope")[i].as_py() for i in (1, 5)
    ]


def test_a_snapshot_hands_over_its_head_first_and_matches_itself(
    backend: Backend, key: SigningKey
) -> None:
    store = backend.open()
    _append(store, key, [dataset(i) for i in range(5)])
    _append(store, key, [dataset(i) for i in range(5, 9)])
    heads: list[pa.Table] = []
    table, checkpoints = store.read_snapshot(head=(lambda n: n // 3, heads.append))
    assert [h.num_rows for h in heads] == [3]
    assert heads[0].equals(table.slice(0, 3))
    assert [c.tree_size for c in checkpoints] == [5, 9]
    assert all(len(c.frontier) % 32 == 0 and c.frontier for c in checkpoints)
    assert table.num_rows == checkpoints[-1].tree_size
    none: list[pa.Table] = []
    store.read_snapshot(head=(lambda n: 0, none.append))
    assert none == []


def test_entries_as_columns_append_what_entries_as_rows_append(
    backend: Backend, key: SigningKey
) -> None:
    from lineage_platform.stores import EntryColumns

    rows, columns = backend.open(), Backend(backend.name, backend.url).open()
    entries: list[Entry] = attest.sign_records([dataset(i) for i in range(4)], key)
    sign = lambda cp: SignedCheckpoint.sign(cp, key)  # noqa: E731
    first = rows.append_entries(entries, sign, attest.ORIGIN)
    second = columns.append_entries(EntryColumns.of(entries), sign, attest.ORIGIN)
    assert first.indices == (0, 1, 2, 3) and second.indices == first.indices
    assert second.appended == 0  # the same store: the columns were the same entries


# -- usage -----------------------------------------------------------------------------------------
def test_usage_ingest_drops_replays_and_assigns_utc_days(backend: Backend, key: SigningKey) -> None:
    store = backend.open()
    sign_lineage(store, key)
    batch = usage.validate_events(events(EPOCH, CALLS))
    assert usage.ingest(store, batch) == (3, 0)
    assert usage.ingest(store, batch) == (0, 3)  # a replay of the same ids
    # Events without an id are keyed by their content: a replayed file is a no-op too.
    anonymous = events("2026-01-06", [("m_valued", 5), ("m_valued", 5)]).drop_columns(["event_id"])
    anonymous = usage.validate_events(anonymous)
    assert usage.ingest(store, anonymous) == (2, 0)  # different times: two events
    assert usage.ingest(store, anonymous) == (0, 2)
    # In one batch, the first of several events with one id wins (by time, not row order).
    twice = usage.validate_events(
        pa.concat_tables([events("2026-01-06", [("m_zero", 9)], prefix="dup", hour=13),
                          events("2026-01-06", [("m_zero", 8)], prefix="dup", hour=1)])
    )
    assert usage.ingest(store, twice) == (1, 1)
    assert store.usage_count() == 6
    assert store.open_epochs() == [(EPOCH, 3, 11_100), ("2026-01-06", 3, 18)]
    # 23:59:59 UTC of a day is still that day.
    late_night = events("2026-01-08", [("m_zero", 1)], prefix="night", hour=0)
    late_night = late_night.set_column(
        5, "occurred_at", pa.array([datetime(2026, 1, 8, 23, 59, 59)], pa.timestamp("us"))
    )
    usage.ingest(store, usage.validate_events(late_night))
    assert store.open_epochs()[-1] == ("2026-01-08", 1, 1)


def test_late_events_move_past_the_last_settled_epoch(backend: Backend, key: SigningKey) -> None:
    store = backend.open()
    sign_lineage(store, key)
    usage.ingest(store, usage.validate_events(events(EPOCH, CALLS)))
    [first] = settle(store, key, Policy.default(), NOW)
    late = pa.concat_tables([
        events(EPOCH, [("m_valued", 40)], prefix="late", hour=23),  # the settled day
        events("2026-01-02", [("m_valued", 50)], prefix="older"),  # before it
        events("2026-01-09", [("m_valued", 60)], prefix="future"),  # still open
    ])
    assert usage.ingest(store, usage.validate_events(late)) == (3, 0)
    assert store.open_epochs() == [("2026-01-06", 2, 90), ("2026-01-09", 1, 60)]
    with store.snapshot() as view:
        assert view.inputs(EPOCH).events == 3  # the settled epoch did not change
        assert view.inputs(EPOCH).fees == {"m_lineage": 10_000, "m_valued": 1_000, "m_zero": 100}
    again = settle(store, key, Policy.default(), NOW, EPOCH)
    assert again[0].root == first.root and again[0].already_settled


# -- settlement ------------------------------------------------------------------------------------
def test_settlement_is_exactly_once_and_a_second_settle_returns_the_same_statement(
    backend: Backend, key: SigningKey
) -> None:
    store = backend.open()
    sign_lineage(store, key)
    usage.ingest(store, usage.validate_events(events(EPOCH, CALLS)))
    [st] = settle(store, key, Policy.default(), NOW)
    assert not st.already_settled and st.fees_total == st.paid_total == 11_100
    size = store.tree_size()
    other = backend.open()  # another handle, as another process would have
    [again] = settle(other, key, Policy.default(), NOW + timedelta(days=3), EPOCH)
    assert again.already_settled and store.tree_size() == size
    assert (again.root, again.log_index, again.payouts, again.fees_total) == (
        st.root, st.log_index, tuple(sorted(st.payouts)), st.fees_total
    )
    assert settle(other, key, Policy.default(), NOW) == []
    assert store.open_epochs() == []

    summary = store.settled_epoch(EPOCH)
    assert summary is not None and summary == store.settled_epoch()
    assert (summary.epoch, summary.root, summary.log_index, summary.payouts) == (
        EPOCH, st.root, st.log_index, len(st.payouts)
    )
    assert summary.starts_at == datetime(2026, 1, 5) and summary.ends_at == datetime(2026, 1, 6)
    assert store.settled_epoch("2026-01-04") is None
    # Reads of what was settled: payouts by amount (largest first), then account.
    paid = store.payouts()
    assert sum(p.amount for p in paid) == 11_100 and {p.epoch for p in paid} == {EPOCH}
    assert [p.amount for p in paid] == sorted((p.amount for p in paid), reverse=True)
    assert store.payouts(account="contributor:alice") == [(EPOCH, "contributor:alice", 3_600)]
    assert store.payouts(epoch="2026-01-04") == []
    with store.snapshot() as view:
        assert [e.epoch for e in view.settled_epochs()] == [EPOCH]
        ledger = view.ledger(EPOCH)
        assert [e.epoch for e in view.account_epochs("contributor:alice")] == [EPOCH]
        assert view.account_epochs("contributor:nobody") == []
        assert view.strays() == []
        assert view.envelope_at(st.log_index) is not None and view.envelope_at(10**6) is None
        assert [p.account for p in view.payouts(EPOCH)] == sorted(a for a, _ in st.payouts)
    clearing = f"clearing:{EPOCH}"
    assert sum(p.amount for p in ledger if p.credit == clearing) == 11_100
    assert sum(p.amount for p in ledger if p.debit == clearing) == 11_100
    [proof] = account_statement(store, "contributor:alice")
    assert (proof.amount, proof.log_index) == (3_600, st.log_index)
    assert verify_settlements(store) == 1


def test_a_failed_unit_leaves_nothing_behind(backend: Backend, key: SigningKey) -> None:
    store = backend.open()
    sign_lineage(store, key)
    usage.ingest(store, usage.validate_events(events(EPOCH, CALLS)))
    size = store.tree_size()
    kinds = store.read_log()[0].column("kind").to_pylist()
    entry = attest.sign_records([dataset(99)], key)
    with pytest.raises(RuntimeError, match="crash"), store.settling(EPOCH) as unit:
        assert unit.settled(EPOCH) is None
        assert unit.inputs(EPOCH).events == 3
        models = [e.log_index for e in unit.envelopes(("model",))]
        assert models == [i for i, k in enumerate(kinds) if k == "model"]
        assert [e.log_index for e in unit.envelopes(("model",), before=models[1])] == models[:1]
        assert unit.append(entry, lambda cp: SignedCheckpoint.sign(cp, key), "o").indices == (
            size,
        )
        raise RuntimeError("crash")
    assert store.tree_size() == size and store.settled_epoch(EPOCH) is None
    assert store.open_epochs() == [(EPOCH, 3, 11_100)]


def test_the_events_digest_is_the_same_on_every_driver(backend: Backend, key: SigningKey) -> None:
    """sha256 of `id|model|caller|units|fee|epoch_us` lines sorted by id, newline-joined."""
    import hashlib

    store = backend.open()
    sign_lineage(store, key)
    usage.ingest(store, usage.validate_events(events(EPOCH, CALLS)))
    start = datetime(2026, 1, 5, 12)
    us = timedelta(microseconds=1)
    epoch_us = [(start + timedelta(seconds=i) - datetime(1970, 1, 1)) // us for i in range(3)]
    lines = [f"e-{i}|{m}|acme|1|{f}|{epoch_us[i]}" for i, (m, f) in enumerate(CALLS)]
    with store.snapshot() as view:
        got = view.inputs(EPOCH)
    assert got.events == 3
    assert got.events_digest == hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


# -- failures --------------------------------------------------------------------------------------
def test_reading_a_store_that_does_not_exist_is_a_store_error(backend: Backend) -> None:
    store = backend.open()
    with pytest.raises(StoreError):
        store.read_snapshot()
    with pytest.raises(StoreError), store.snapshot():
        pass


HOLD = """
import sys, time
from lineage_platform.stores import open_store
store = open_store(sys.argv[1])
with store.settling("2026-01-05"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_a_writer_held_elsewhere_makes_others_wait_then_give_up(
    backend: Backend, key: SigningKey
) -> None:
    store = backend.open(lock_timeout_s=0.5)
    _append(store, key, [dataset(0)])
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, backend.url, "20"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(StoreBusyError):
            _append(store, key, [dataset(1)])
        with pytest.raises(StoreBusyError), store.settling("2026-01-06"):
            pass
        assert time.monotonic() - started >= 0.9  # each waited its lock_timeout_s first
    finally:
        holder.kill()
        holder.wait()
    assert _append(store, key, [dataset(1)]).indices == (1,)  # free again
