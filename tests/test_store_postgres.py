"""The PostgreSQL driver beyond the contract suite: what only a shared server shows.

    pytest -q tests/test_store_postgres.py        # one throwaway server (tests/deploy_world.py)

Byte-identical ledger results to the DuckDB driver on the same events (in a database whose
default collation is not byte order), exactly-once appends from several processes at once
(dense indices, one checkpoint per batch, the log verifies), lock waits seen by every process,
and the failures a user meets (server down, wrong password, no such database) as one line.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from lineage_platform.allocation import Policy
from lineage_platform.audit import verify_store
from lineage_platform.errors import StoreBusyError, StoreError
from lineage_platform.log import SignedCheckpoint
from lineage_platform.settlement import settle
from lineage_platform.signing import SigningKey, TrustStore
from lineage_platform.stores import Store, open_store
from tests.deploy_world import Postgres, free_port, postgres_server
from tests.ledger_world import EPOCH, NOW, sign_lineage

_fresh = itertools.count()


@pytest.fixture(scope="module")
def server() -> Iterator[Postgres]:
    with postgres_server() as pg:
        yield pg


def base_url(pg: Postgres, password: str | None = None) -> str:
    return f"postgresql://{pg.user}:{password or pg.password}@{pg.host}:{pg.port}"


def new_database(pg: Postgres, icu: bool = False) -> str:
    """A fresh database; with `icu`, one whose default collation sorts "a" before "B"."""
    import psycopg

    name = f"pgstore_{next(_fresh)}"
    locale = " TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
    with psycopg.connect(f"{base_url(pg)}/{pg.db_name}", autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"' + (locale if icu else ""))
        if icu:  # the premise of the digest test: this database's own order is not bytes
            with psycopg.connect(f"{base_url(pg)}/{name}") as db:
                row = db.execute("SELECT 'a' < 'B', 'B' < 'a' COLLATE \"C\"").fetchone()
                assert row == (True, True)
    return f"{base_url(pg)}/{name}"


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


# -- the same results as the DuckDB driver ---------------------------------------------------------
def tricky_events(day: str, prefix: str, hour: int = 9) -> pa.Table:
    """Ids and names whose byte order differs from a locale's, pipes, non-ASCII, no ids."""
    start = datetime.strptime(day, "%Y-%m-%d") + timedelta(hours=hour)
    ids = ["B-2", "a-1", "Z", "é-3", "e-4", "日本-5", "a|b", "_x", "~y", None, None, "B-2"]
    n = len(ids)
    return pa.table(
        {
            "event_id": [None if i is None else f"{prefix}{i}" for i in ids],
            "model": ["m_lineage", "m_valued", "m_zero"] * (n // 3),
            "caller": ["acme", "Ärger GmbH", "pipe|caller", "x"] * (n // 4),
            "units": pa.array([1 + i % 4 for i in range(n)], pa.int64()),
            "fee": pa.array([7 * i + 1 for i in range(n)], pa.int64()),
            "occurred_at": pa.array(
                [start + timedelta(seconds=37 * i, microseconds=i * 1001) for i in range(n)],
                pa.timestamp("us"),
            ),
        }
    )


def ledger_state(store: Store) -> tuple[object, ...]:
    epochs = sorted({e.epoch for e in store.open_epochs()} | {"2026-01-05"})
    with store.snapshot() as view:
        inputs = [(e, view.inputs(e)) for e in epochs]
        settled = [(s.epoch, s.fees_total, s.paid_total, s.root) for s in view.settled_epochs()]
    return store.usage_count(), store.open_epochs(), inputs, settled


def test_usage_settlement_and_the_events_digest_match_the_duckdb_driver(
    server: Postgres, key: SigningKey, tmp_path: Path
) -> None:
    pg = open_store(new_database(server, icu=True))
    duck = open_store(f"duckdb://{tmp_path / 'lineage.duckdb'}")
    first = pa.concat_tables([tricky_events(EPOCH, "p-"), tricky_events("2026-01-06", "q-", 23)])
    late = pa.concat_tables([
        tricky_events(EPOCH, "late-", 22),  # the settled day: moves to the day after it
        tricky_events("2026-01-02", "older-"),  # before it: the same
        tricky_events("2026-01-08", "future-"),  # open: stays
        tricky_events(EPOCH, "p-"),  # replays (ids), and the id-less ones again
    ])
    results = []
    for store in (pg, duck):
        sign_lineage(store, key)
        got = [store.ingest_usage(first)]
        [statement] = settle(store, key, Policy.default(), NOW, EPOCH)
        got.append(store.ingest_usage(late))
        results.append((tuple(got), statement.root, statement.fees_total, ledger_state(store)))
    assert results[0] == results[1]
    _, _, _, (count, open_epochs, inputs, _) = results[0]
    assert count == 11 + 11 + 11 * 3  # in-batch repeat of "B-2" dropped; replays dropped
    assert [e.epoch for e in open_epochs] == ["2026-01-06", "2026-01-08"]
    assert all(i.events for _, i in inputs)


# -- exactly once from several processes -----------------------------------------------------------
WRITER = """
import random, sys
from lineage_platform import attest
from lineage_platform.signing import SigningKey
from lineage_platform.stores import open_store
from tests.logkit import dataset
url, pem, seed = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
key = SigningKey.from_pem(pem, None)
order = list(range(60))
random.Random(seed).shuffle(order)
store = open_store(url, lock_timeout_s=60)
appended = 0
for start in range(0, 60, 7):
    records = [dataset(i) for i in order[start:start + 7]]
    appended += attest.append_records(store, key, records).appended
print(appended, store.lock_waits)
"""


def test_appenders_in_several_processes_log_each_record_once_with_dense_indices(
    server: Postgres, key: SigningKey
) -> None:
    url = new_database(server)
    pem = key.to_pem(None).decode()
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, url, pem, str(seed)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for seed in range(4)
    ]
    outputs = [w.communicate(timeout=300) for w in writers]
    assert [w.returncode for w in writers] == [0] * 4, [err[-2000:] for _, err in outputs]
    appended = [int(out.split()[0]) for out, _ in outputs]
    assert sum(appended) == 60  # every record once, whoever got there first
    store = open_store(url)
    table, checkpoints = store.read_snapshot()
    assert table.column("idx").to_pylist() == list(range(60))
    assert sorted(table.column("idem_key").to_pylist()) == sorted(
        f"dagster:run-a:{i}" for i in range(60)
    )
    sizes = [c.tree_size for c in checkpoints]
    assert sizes == sorted(set(sizes)) and sizes[-1] == 60
    assert [SignedCheckpoint.from_json(c.checkpoint).checkpoint.tree_size for c in checkpoints] \
        == sizes
    report = verify_store(store, TrustStore.of(key))
    assert report.records == 60


# -- lock waits and failures -----------------------------------------------------------------------
HOLD = """
import sys, time
from lineage_platform.stores import open_store
with open_store(sys.argv[1]).settling("2026-01-05"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_a_wait_for_another_machine_is_counted_where_every_process_sees_it(
    server: Postgres, key: SigningKey
) -> None:
    url = new_database(server)
    store = open_store(url, lock_timeout_s=30)
    sign_lineage(store, key)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, url, "1.5"], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        waited: list[float] = []
        waiter = open_store(url, lock_timeout_s=30, on_lock_wait=waited.append)
        started = time.monotonic()
        with waiter.settling("2026-01-06") as unit:
            assert unit.settled("2026-01-06") is None
        assert time.monotonic() - started >= 0.5
    finally:
        holder.wait(timeout=30)
        if holder.stdout is not None:
            holder.stdout.close()
    assert (waiter.lock_waits, len(waited)) == (1, 1) and waited[0] >= 0.5
    count, seconds = open_store(url).recent_lock_waits()  # a third process's view
    assert count == 1 and seconds == pytest.approx(waited[0], abs=0.01)


def test_a_server_that_is_down_is_one_line_naming_it(tmp_path: Path) -> None:
    url = f"postgresql://lineage:secret-pw@127.0.0.1:{free_port()}/lineage"
    store = open_store(url)
    assert "secret-pw" not in store.describe() and "127.0.0.1" in store.describe()
    for call in (store.tree_size, store.exists, store.read_snapshot):
        with pytest.raises(StoreError) as caught:
            call()
        text = str(caught.value)
        assert text.startswith("cannot connect to postgresql://lineage@127.0.0.1:")
        assert "\n" not in text and "secret-pw" not in text
        assert not isinstance(caught.value, StoreBusyError)


def test_a_wrong_password_and_a_missing_database_are_one_line_each(server: Postgres) -> None:
    wrong = open_store(f"{base_url(server, 'not-the-password')}/{server.db_name}")
    with pytest.raises(StoreError, match="password authentication failed") as caught:
        wrong.tree_size()
    assert "\n" not in str(caught.value) and "not-the-password" not in str(caught.value)
    missing = open_store(f"{base_url(server)}/no_such_db")
    assert missing.exists() is False  # a database that is not there holds no store
    with pytest.raises(StoreError, match='database "no_such_db" does not exist'):
        missing.read_snapshot()


def test_a_new_database_is_migrated_once_by_concurrent_first_writers(
    server: Postgres, key: SigningKey
) -> None:
    """Two processes' first writes at once: one creates the schema, the other waits and uses it."""
    url = new_database(server)
    pem = key.to_pem(None).decode()
    first = """
import sys
from lineage_platform import attest
from lineage_platform.signing import SigningKey
from lineage_platform.stores import open_store
from tests.logkit import dataset
key = SigningKey.from_pem(sys.argv[2].encode(), None)
print(attest.append_records(open_store(sys.argv[1]), key, [dataset(int(sys.argv[3]))]).appended)
"""
    procs = [
        subprocess.Popen([sys.executable, "-c", first, url, pem, str(i)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for i in range(3)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e[-1500:] for _, e in outs]
    store = open_store(url)
    assert store.exists() and store.tree_size() == 3
    store.migrate()  # idempotent
    assert store.read_snapshot()[0].column("idx").to_pylist() == [0, 1, 2]


def test_a_connection_the_server_ended_fails_one_call_in_one_line_and_the_next_reconnects(
    server: Postgres, key: SigningKey
) -> None:
    import psycopg

    url = new_database(server)
    store = open_store(url)
    sign_lineage(store, key)
    size = store.tree_size()  # the store keeps this connection for its next call
    with psycopg.connect(url, autocommit=True) as admin:
        ended = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'lineage' AND pid <> pg_backend_pid()"
        ).fetchone()
    assert ended == (1,)
    with pytest.raises(StoreError) as caught:
        store.tree_size()
    assert "\n" not in str(caught.value) and server.password not in str(caught.value)
    assert str(caught.value).startswith(("lost the connection to postgresql://", "postgresql://"))
    assert store.tree_size() == size  # a fresh connection


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@db:5432/lineage", "postgresql://u@db:5432/lineage"),
        ("postgresql://u:pw@[::1]:5432/l?sslmode=require",
         "postgresql://u@[::1]:5432/l?sslmode=require"),
        ("postgresql://u@db/lineage?password=pw&sslmode=require", "postgresql://u@db/lineage"),
        ("postgresql:///lineage?host=/run/pg", "postgresql:///lineage?host=/run/pg"),
    ],
)
def test_messages_name_the_store_without_its_password(url: str, shown: str) -> None:
    assert open_store(url).describe() == shown


def test_stores_in_two_schemas_of_one_database_are_apart_and_do_not_wait_on_each_other(
    server: Postgres, key: SigningKey
) -> None:
    import psycopg

    from lineage_platform import attest
    from tests.logkit import dataset

    url = new_database(server)
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("CREATE SCHEMA team_a; CREATE SCHEMA team_b")
    team_a, team_b = (f"{url}?options=-csearch_path%3D{s}" for s in ("team_a", "team_b"))
    attest.append_records(open_store(team_a), key, [dataset(0)])
    holder = subprocess.Popen([sys.executable, "-c", HOLD, team_a, "20"], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        b = open_store(team_b, lock_timeout_s=0.5)
        assert attest.append_records(b, key, [dataset(0), dataset(1)]).indices == (0, 1)
        with pytest.raises(StoreBusyError):  # the same schema's lock is held
            attest.append_records(open_store(team_a, lock_timeout_s=0.5), key, [dataset(1)])
    finally:
        holder.kill()
        holder.wait(timeout=30)
        if holder.stdout is not None:
            holder.stdout.close()
    assert (open_store(team_a).tree_size(), open_store(team_b).tree_size()) == (1, 2)


KILLED = """
import sys, time
from contextlib import contextmanager
from lineage_platform.allocation import Policy
from lineage_platform.settlement import settle
from lineage_platform.signing import SigningKey
from lineage_platform.stores import open_store
from tests.ledger_world import NOW
store = open_store(sys.argv[1])
real = store.settling

@contextmanager
def stalled(epoch):
    with real(epoch) as unit:
        yield unit  # the record, ledger, payouts and epoch row are written, not committed
        print("written", flush=True)
        time.sleep(120)

store.settling = stalled
settle(store, SigningKey.from_pem(sys.argv[2].encode(), None), Policy.default(), NOW)
"""


def test_a_settler_killed_before_its_commit_leaves_nothing_and_frees_the_locks(
    server: Postgres, key: SigningKey
) -> None:
    """SIGKILL (a machine gone) inside the unit: the server rolls it back and releases the
    advisory locks; the next settle settles the epoch exactly once and verify passes."""
    import signal

    from lineage_platform import usage
    from tests.ledger_world import events

    calls = [("m_lineage", 10_000), ("m_valued", 1_000), ("m_zero", 100)]
    url = new_database(server)
    store = open_store(url, lock_timeout_s=30)
    sign_lineage(store, key)
    usage.ingest(store, usage.validate_events(events(EPOCH, calls)))
    size = store.tree_size()
    victim = subprocess.Popen([sys.executable, "-c", KILLED, url, key.to_pem(None).decode()],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert victim.stdout is not None
        line = victim.stdout.readline().strip()
        assert line == "written", victim.communicate(timeout=30)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
        victim.communicate(timeout=30)
    assert store.tree_size() == size and store.settled_epoch(EPOCH) is None
    started = time.monotonic()
    [statement] = settle(store, key, Policy.default(), NOW)
    assert time.monotonic() - started < 10  # the locks died with the killed session
    assert statement.epoch == EPOCH and not statement.already_settled
    assert store.tree_size() == size + 1 and store.open_epochs() == []
    assert verify_store(store, TrustStore.of(key)).records == size + 1


def test_usage_that_arrives_while_its_day_is_being_settled_waits_and_goes_to_the_next_day(
    server: Postgres, key: SigningKey
) -> None:
    """The ledger lock: without it the ingest would land in the epoch being settled, and the
    settled events digest would no longer match what verify recomputes."""
    from lineage_platform import usage
    from lineage_platform.settlement import verify_settlements
    from tests.ledger_world import events

    calls = [("m_lineage", 10_000), ("m_valued", 1_000), ("m_zero", 100)]
    url = new_database(server)
    store = open_store(url, lock_timeout_s=30)
    sign_lineage(store, key)
    usage.ingest(store, usage.validate_events(events(EPOCH, calls)))
    stalled = KILLED.replace("time.sleep(120)", "time.sleep(2)")
    settler = subprocess.Popen([sys.executable, "-c", stalled, url, key.to_pem(None).decode()],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert settler.stdout is not None and settler.stdout.readline().strip() == "written"
        started = time.monotonic()
        late = usage.validate_events(events(EPOCH, [("m_valued", 7)], prefix="during", hour=20))
        assert usage.ingest(store, late) == (1, 0)
        assert time.monotonic() - started > 0.5  # it waited for the settlement's commit
    finally:
        _, err = settler.communicate(timeout=60)
    assert settler.returncode == 0, err[-2000:]
    assert store.open_epochs() == [("2026-01-06", 1, 7)]
    with store.snapshot() as view:
        assert view.inputs(EPOCH).events == 3
    assert verify_settlements(store) == 1
