"""The PostgreSQL driver: one database shared by every machine that syncs, settles or verifies.

    store = open_store("postgresql://lineage:…@db.internal/lineage")  # lineage_platform.stores
    result = store.append_entries(entries, sign_checkpoint, ORIGIN)      # one transaction, COPY

Exactly once under concurrent writers rests on two transaction-scoped advisory locks (DESIGN §7,
docs/scaling.md): every append takes the **log lock** (so leaf indices stay dense and checkpoints
follow one another), a settlement unit takes the log lock and then the **ledger lock**, and a
usage ingest takes the ledger lock shared (so no event lands in an epoch while it is being
settled). Writers run at READ COMMITTED *after* taking their lock, so each statement sees what
the previous holder committed; readers (verify, statements) take no lock and read one REPEATABLE
READ snapshot. A wait longer than `lock_timeout_s` is PostgreSQL's `lock_timeout` firing, which
becomes `StoreBusyError`; a lost connection or a refused login becomes one `StoreError` line.
Bulk writes go through COPY (binary for log entries, CSV written by Arrow for usage events).
The only module that imports psycopg. Needs PostgreSQL 14 or newer.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import psycopg
import psycopg.errors
import pyarrow as pa
import pyarrow.csv as pa_csv

from lineage_platform.errors import StoreBusyError, StoreError, UsageError
from lineage_platform.log import Checkpoint, CompactRange
from lineage_platform.stores.base import (
    CALLS_SCHEMA,
    ENTRY_FIELDS,
    LOG_COLUMNS,
    MAX_AMOUNT,
    MAX_EPOCH_FEES,
    MAX_SKEW_S,
    RECEIPTS_SCHEMA,
    USAGE_SCHEMA,
    AppendPlan,
    AppendResult,
    Entry,
    EntryColumns,
    EpochInputs,
    LoggedEnvelope,
    OpenEpoch,
    Payout,
    Posting,
    QuarantinedEvent,
    SettledEpoch,
    SignCheckpoint,
    SnapshotHead,
    StoredCheckpoint,
    Stray,
    UsageConflict,
    UsageIngest,
    usage_table,
)

Connection = psycopg.Connection[tuple[Any, ...]]

HASH_LEN = 32
_FETCH_ROWS = 20_000  # log rows per round trip of a read
MIN_SERVER = 140000  # numeric `extract(epoch …)` (exact epoch_us) and `split_part` of PG 14
_COLUMNS = ", ".join(LOG_COLUMNS)
_LOG_TYPES = ["int8", "bytea", "bytea"] + ["text"] * (len(LOG_COLUMNS) - 3)
_LOG_SCHEMA = pa.schema(
    [(c, pa.int64() if c == "idx" else pa.binary() if t == "bytea" else pa.string())
     for c, t in zip(LOG_COLUMNS, _LOG_TYPES, strict=True)]
)
_EPOCH_COLUMNS = "epoch, starts_at, ends_at, fees_total, paid_total, payouts, root, log_index"
_EPOCH_US = "(extract(epoch FROM {0}) * 1000000)::bigint"  # exact: numeric since PG 14
_EPOCH_OF = "to_char({0}, 'YYYY-MM-DD')"  # an event's natural epoch: its UTC day
_NEXT_EPOCH = "to_char({0}::date + 1, 'YYYY-MM-DD')"  # the day after a settled epoch
# Where a new event goes: its day, or past the last settled epoch if its day is settled.
_PLACE = (
    "CASE WHEN last.settled IS NOT NULL AND {day} <= last.settled "
    "THEN " + _NEXT_EPOCH.format("last.settled") + " ELSE {day} END"
)
# A timestamp as text the way Python prints a naive datetime (microseconds only when non-zero).
_TS_TEXT = (
    "to_char({0}, 'YYYY-MM-DD HH24:MI:SS') || CASE WHEN "
    "mod(extract(microseconds FROM {0})::bigint, 1000000) <> 0 THEN to_char({0}, '.US') "
    "ELSE '' END"
)
# Why a stored event breaks the usage bounds (NULL when it does not); the clock is UTC.
_BOUNDS_REASON = f"""(CASE
    WHEN fee > {MAX_AMOUNT} THEN 'fee ' || fee || ' exceeds 10^15'
    WHEN units > {MAX_AMOUNT} THEN 'units ' || units || ' exceed 10^15'
    WHEN occurred_at < TIMESTAMP '1970-01-01' THEN 'occurred_at before 1970'
    WHEN occurred_at > (now() AT TIME ZONE 'UTC') + make_interval(secs => {MAX_SKEW_S})
        THEN 'occurred_at ' || ({_TS_TEXT.format("occurred_at")}) || ' is in the future'
    WHEN epoch !~ '^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}$' THEN 'epoch ' || epoch || ' is not a date'
    END)"""
_QUARANTINE_COLUMNS = (
    f"event_id, model, caller, units, fee, {_TS_TEXT.format('occurred_at')}, epoch, reason, "
    "state"
)

# Advisory lock keys (classid, objid), per database: the class is the store's schema (the first
# of `search_path`), so stores in two schemas of one database do not wait on each other.
_LOCK_CLASS = "hashtext(current_schema())"
LOG_LOCK, LEDGER_LOCK, MIGRATE_LOCK = 1, 2, 3

# Text columns compare byte-wise (COLLATE "C") whatever the database's locale: the events
# digest sorts by id in byte order, as the DuckDB driver does.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE log_entries (
            idx           BIGINT PRIMARY KEY,           -- leaf index = position in the log
            envelope      BYTEA NOT NULL,               -- the exact DSSE bytes the leaf hashes
            leaf_hash     BYTEA NOT NULL,               -- derived: SHA-256(0x00 || envelope)
            record_digest TEXT COLLATE "C" NOT NULL,    -- derived: sha256 of the signed payload
            idem_key      TEXT COLLATE "C" NOT NULL UNIQUE,  -- derived: run reference or digest
            kind          TEXT COLLATE "C" NOT NULL,    -- derived query columns, re-checked
            asset         TEXT COLLATE "C" NOT NULL,
            partition     TEXT COLLATE "C",
            sha256        TEXT COLLATE "C" NOT NULL,
            keyid         TEXT COLLATE "C" NOT NULL,
            recorded_at   TEXT COLLATE "C" NOT NULL
        );
        -- Envelopes are signed, random-looking JSON: compressing them costs more than it saves.
        ALTER TABLE log_entries ALTER COLUMN envelope SET STORAGE EXTERNAL;
        CREATE INDEX log_entries_asset ON log_entries (asset, partition, sha256);
        CREATE INDEX log_entries_kind ON log_entries (kind, idx);
        CREATE TABLE checkpoints (
            tree_size  BIGINT PRIMARY KEY,
            checkpoint BYTEA NOT NULL,                  -- signed checkpoint JSON (size, root)
            frontier   BYTEA NOT NULL                   -- derived: compact-range hashes
        );
        """,
    ),
    (
        2,
        """
        CREATE TABLE usage_events (
            event_id    TEXT COLLATE "C" PRIMARY KEY,   -- idempotency key: a replay is dropped
            model       TEXT COLLATE "C" NOT NULL,
            caller      TEXT COLLATE "C" NOT NULL,
            units       BIGINT NOT NULL,
            fee         BIGINT NOT NULL,                -- integer minor units
            occurred_at TIMESTAMP NOT NULL,             -- UTC
            epoch       TEXT COLLATE "C" NOT NULL,      -- fixed at ingestion; never settled
            ingested_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
        );
        CREATE INDEX usage_events_epoch ON usage_events (epoch);
        CREATE TABLE epochs (
            epoch       TEXT COLLATE "C" PRIMARY KEY,   -- one row per settled epoch
            starts_at   TIMESTAMP NOT NULL,             -- UTC, half-open [starts_at, ends_at)
            ends_at     TIMESTAMP NOT NULL,
            fees_total  BIGINT NOT NULL,
            paid_total  BIGINT NOT NULL,
            payouts     INTEGER NOT NULL,
            root        TEXT COLLATE "C" NOT NULL,      -- Merkle root over payout leaves
            log_index   BIGINT NOT NULL,                -- the settlement record in the log
            settled_at  TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
        );
        CREATE TABLE ledger (
            epoch   TEXT COLLATE "C" NOT NULL,
            seq     INTEGER NOT NULL,
            debit   TEXT COLLATE "C" NOT NULL,
            credit  TEXT COLLATE "C" NOT NULL,
            amount  BIGINT NOT NULL,
            PRIMARY KEY (epoch, seq)
        );
        CREATE TABLE payouts (
            epoch   TEXT COLLATE "C" NOT NULL,
            account TEXT COLLATE "C" NOT NULL,
            amount  BIGINT NOT NULL,
            PRIMARY KEY (epoch, account)
        );
        """,
    ),
    (
        3,
        # Lock waits of every process on every machine (`lineage status` shows contention);
        # operational only: nothing signed or verified reads it.
        """
        CREATE TABLE lock_waits (
            at       TIMESTAMPTZ NOT NULL DEFAULT now(),
            waited_s DOUBLE PRECISION NOT NULL,
            host     TEXT NOT NULL,
            pid      INTEGER NOT NULL
        );
        CREATE INDEX lock_waits_at ON lock_waits (at);
        """,
    ),
    (
        # Issue 15: conflicting bodies are listed, and unsettled events that break the usage
        # bounds move to the quarantine, which settlement does not read (as the DuckDB
        # driver's migration 5 does for stores written before the bounds existed).
        4,
        f"""
        CREATE TABLE usage_conflicts (
            event_id    TEXT COLLATE "C" NOT NULL,
            model       TEXT COLLATE "C" NOT NULL,
            caller      TEXT COLLATE "C" NOT NULL,
            units       BIGINT NOT NULL,
            fee         BIGINT NOT NULL,
            occurred_at TIMESTAMP NOT NULL,
            seen_at     TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
        );
        CREATE INDEX usage_conflicts_id ON usage_conflicts (event_id);
        CREATE TABLE usage_quarantine (
            event_id    TEXT COLLATE "C" PRIMARY KEY,
            model       TEXT COLLATE "C" NOT NULL,
            caller      TEXT COLLATE "C" NOT NULL,
            units       BIGINT NOT NULL,
            fee         BIGINT NOT NULL,
            occurred_at TIMESTAMP NOT NULL,
            epoch       TEXT COLLATE "C" NOT NULL,
            reason      TEXT NOT NULL,
            state       TEXT NOT NULL,                  -- held | released | dropped (audit)
            changed_at  TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
        );
        INSERT INTO usage_quarantine
            (event_id, model, caller, units, fee, occurred_at, epoch, reason, state)
        SELECT event_id, model, caller, units, fee, occurred_at, epoch, {_BOUNDS_REASON}, 'held'
        FROM usage_events
        WHERE epoch NOT IN (SELECT epoch FROM epochs) AND {_BOUNDS_REASON} IS NOT NULL;
        DELETE FROM usage_events
        WHERE epoch NOT IN (SELECT epoch FROM epochs) AND {_BOUNDS_REASON} IS NOT NULL;
        """,
    ),
    (
        # Issue 18 (the DuckDB driver's migration 6): a call's input (little-endian float64
        # bytes) and served label, and each settled call's receipt leaf.
        5,
        """
        ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS call_input BYTEA;
        ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS call_output TEXT COLLATE "C";
        CREATE TABLE IF NOT EXISTS call_receipts (
            epoch    TEXT COLLATE "C" NOT NULL,
            seq      INTEGER NOT NULL,                  -- leaf index in the calls tree
            event_id TEXT COLLATE "C" NOT NULL,
            leaf_hash BYTEA NOT NULL,                   -- SHA-256(0x00 || the call's JSON)
            PRIMARY KEY (epoch, seq)
        );
        CREATE INDEX IF NOT EXISTS call_receipts_event ON call_receipts (event_id);
        """,
    ),
)
LATEST = MIGRATIONS[-1][0]

# Connections a forked child inherited: never closed there (that would end the parent's session).
_inherited: list[Connection] = []


def redact(url: str) -> str:
    """The URL without its password (for messages and `describe`)."""
    parts = urlsplit(url)
    query = "" if "password" in parts.query.lower() else parts.query  # ?password=… too
    netloc = parts.netloc
    if parts.password is not None:
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        netloc = f"{parts.username or ''}@{host}" + (f":{parts.port}" if parts.port else "")
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def _first_line(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = str(primary or exc).strip()
    for line in text.splitlines():
        if line.strip():
            # libpq says "connection failed: connection to server at …, port … failed: FATAL:
            # <why>": the why is what a user acts on (the caller names the server).
            why = line.rsplit(" failed: ", 1)[-1] if line.startswith("connection") else line
            return why.removeprefix("FATAL:").strip()
    return type(exc).__name__


class _NoDatabase(StoreError):
    """The server is there, the database is not (so there is no store in it either)."""


class PostgresStore:
    """A PostgreSQL database holding one log and its ledger (a `Store`).

    Connections are opened on first use and kept for the next call (one per concurrent use
    in this process); a connection that failed is dropped, and a fork starts afresh.
    """

    def __init__(
        self,
        url: str,
        lock_timeout_s: float = 30.0,
        on_lock_wait: Callable[[float], None] | None = None,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.url = url
        self.lock_timeout_s = lock_timeout_s
        self.on_lock_wait = on_lock_wait
        self.connect_timeout_s = connect_timeout_s
        self.lock_waits = 0
        self.lock_wait_s = 0.0
        self._idle: list[Connection] = []
        self._pid = os.getpid()
        self._guard = threading.Lock()
        self._schema_ok = False  # the schema was seen at the latest version (it never goes back)

    def __repr__(self) -> str:
        return f"PostgresStore({self.describe()!r})"

    def describe(self) -> str:
        return redact(self.url)

    # -- connections -------------------------------------------------------------------------
    def _open(self) -> Connection:
        kwargs: dict[str, Any] = {
            "autocommit": True,  # transactions are explicit BEGIN … COMMIT below
            "application_name": "lineage",
            # This side notices a server that vanished instead of hanging (the session settings
            # below make the server notice a client that vanished, and free its locks).
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        }
        if "connect_timeout" not in self.url:
            kwargs["connect_timeout"] = max(1, round(self.connect_timeout_s))
        try:
            con: Connection = psycopg.connect(self.url, **kwargs)
        except psycopg.Error as exc:  # unreachable, refused login, a malformed URL or option
            why = _first_line(exc)
            kind = _NoDatabase if re.fullmatch(r'database ".*" does not exist', why) else StoreError
            raise kind(f"cannot connect to {self.describe()}: {why}") from exc
        try:
            if con.info.server_version < MIN_SERVER:
                version = con.info.server_version
                con.close()
                raise StoreError(
                    f"{self.describe()}: PostgreSQL {version // 10000} is too old "
                    f"(the store needs {MIN_SERVER // 10000} or newer)"
                )
            con.execute(
                "SET TIME ZONE 'UTC'; SET tcp_keepalives_idle = 30; "
                "SET tcp_keepalives_interval = 10; SET tcp_keepalives_count = 3"
            )
        except psycopg.Error as exc:
            con.close()
            raise StoreError(f"{self.describe()}: {_first_line(exc)}") from exc
        return con

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        with self._guard:
            if self._pid != os.getpid():
                _inherited.extend(self._idle)
                self._idle, self._pid = [], os.getpid()
            con = self._idle.pop() if self._idle else None
        if con is None or con.closed:
            con = self._open()
        try:
            yield con
        finally:
            # Back to the pool only when it is idle and sound (a failed unit's is, after its
            # ROLLBACK; a lost connection is not).
            if not con.closed and not con.broken and con.info.transaction_status.name == "IDLE":
                with self._guard:
                    if self._pid == os.getpid():
                        self._idle.append(con)
                        con = None
            if con is not None:
                with suppress(psycopg.Error):
                    con.close()

    def close(self) -> None:
        """Close the idle connections (a store is usable again afterwards)."""
        with self._guard:
            idle, self._idle = self._idle, []
        for con in idle:
            with suppress(psycopg.Error):
                con.close()

    def __del__(self) -> None:
        # A store dropped (a sensor tick's, a command's) closes its idle connections; a forked
        # child's copy leaves them alone: closing would end the parent's sessions.
        with suppress(Exception):
            if self._pid == os.getpid():
                self.close()

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """psycopg's errors become one StoreError (or StoreBusyError) line naming the store."""
        where = self.describe()
        try:
            yield
        except StoreError:
            raise
        except psycopg.errors.LockNotAvailable as exc:
            raise StoreBusyError(
                f"{where} is locked by another writer (waited {self.lock_timeout_s:g}s); "
                "retry, or raise the lock timeout (LINEAGE_LOCK_TIMEOUT)"
            ) from exc
        except psycopg.errors.QueryCanceled as exc:  # the server's statement_timeout, a cancel
            raise StoreBusyError(f"{where}: {_first_line(exc)}; retry") from exc
        except (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected) as exc:
            raise StoreBusyError(f"{where}: {_first_line(exc)}; retry") from exc
        except psycopg.Error as exc:
            # No SQLSTATE: the connection itself failed (server gone, network down).
            lost = "lost the connection to " if exc.sqlstate is None else ""
            raise StoreError(f"{lost}{where}: {_first_line(exc)}") from exc

    @contextmanager
    def transaction(self, *locks: tuple[int, bool]) -> Iterator[Connection]:
        """A read-write transaction holding these advisory locks ((key, exclusive), in order)."""
        with self._translated(), self._connection() as con:
            self._migrate(con)
            con.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
            try:
                # Row and advisory lock waits alike give up after the store's timeout.
                timeout = max(1, round(self.lock_timeout_s * 1000))
                con.execute(f"SET LOCAL lock_timeout = {timeout}")
                for key, exclusive in locks:
                    self._lock(con, key, exclusive)
                yield con
                con.execute("COMMIT")
            except BaseException:
                # A failed COMMIT has already ended the transaction: a second error from
                # ROLLBACK (or a dead connection) must not hide the first.
                with suppress(psycopg.Error):
                    con.execute("ROLLBACK")
                raise

    def _lock(self, con: Connection, key: int, exclusive: bool) -> None:
        mode = "" if exclusive else "_shared"
        row = con.execute(
            f"SELECT pg_try_advisory_xact_lock{mode}({_LOCK_CLASS}, %s)", (key,)
        ).fetchone()
        if row is not None and row[0]:
            return
        started = time.monotonic()
        con.execute(f"SELECT pg_advisory_xact_lock{mode}({_LOCK_CLASS}, %s)", (key,))
        waited = time.monotonic() - started
        self.lock_waits += 1
        self.lock_wait_s += waited
        con.execute(
            "INSERT INTO lock_waits (waited_s, host, pid) VALUES (%s, %s, %s)",
            (waited, socket.gethostname(), os.getpid()),
        )
        if self.on_lock_wait:
            self.on_lock_wait(waited)

    @contextmanager
    def reader(self, min_version: int | None = None) -> Iterator[Connection]:
        """One read-only snapshot; `min_version` is the oldest schema the caller's reads need."""
        with self._translated(), self._connection() as con:
            con.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                version = self._version(con)
                if version == 0:
                    raise StoreError(
                        f"no lineage store in {self.describe()}: "
                        "run `lineage demo` or `lineage sync`"
                    )
                if version < (LATEST if min_version is None else min_version):
                    raise StoreError(
                        f"{self.describe()} has schema {version}; run any write command first"
                    )
                yield con
            finally:
                with suppress(psycopg.Error):
                    con.execute("ROLLBACK")

    @contextmanager
    def _existing(self) -> Iterator[Connection | None]:
        """An autocommit connection for one-statement reads, or None if there is no store yet."""
        with self._translated(), self._connection() as con:
            yield con if self._schema_ok or self._version(con) > 0 else None

    @staticmethod
    def _version(con: Connection) -> int:
        row = con.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
        if row is None or not row[0]:
            return 0
        found = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
        return int(found[0]) if found else 0

    def _migrate(self, con: Connection) -> None:
        if self._schema_ok:
            return
        if self._version(con) < LATEST:
            con.execute("BEGIN")
            try:
                # Two processes migrating a new database at once: the second waits, then sees.
                con.execute(
                    f"SELECT pg_advisory_xact_lock({_LOCK_CLASS}, %s)", (MIGRATE_LOCK,)
                )
                con.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                    "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                )
                current = self._version(con)
                for version, sql in MIGRATIONS:
                    if version > current:
                        con.execute(sql)
                        con.execute(
                            "INSERT INTO schema_version (version) VALUES (%s)", (version,)
                        )
                con.execute("COMMIT")
            except BaseException:
                with suppress(psycopg.Error):
                    con.execute("ROLLBACK")
                raise
        self._schema_ok = True

    def exists(self) -> bool:
        try:
            with self._existing() as con:
                return con is not None
        except _NoDatabase:
            return False

    def migrate(self) -> None:
        with self._translated(), self._connection() as con:
            self._migrate(con)

    def recent_lock_waits(self, window_s: float = 3600.0) -> tuple[int, float]:
        with self._existing() as con:
            if con is None:
                return 0, 0.0
            row = con.execute(
                "SELECT count(*), coalesce(sum(waited_s), 0) FROM lock_waits "
                "WHERE at >= now() - make_interval(secs => %s)",
                (float(window_s),),
            ).fetchone()
        return (int(row[0]), float(row[1])) if row else (0, 0.0)

    # -- the log -----------------------------------------------------------------------------
    @staticmethod
    def _frontier(con: Connection) -> CompactRange:
        row = con.execute(
            "SELECT tree_size, frontier FROM checkpoints ORDER BY tree_size DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return CompactRange()
        blob = bytes(row[1])
        hashes = [blob[i : i + HASH_LEN] for i in range(0, len(blob), HASH_LEN)]
        return CompactRange.from_hashes(int(row[0]), hashes)

    def append_entries(
        self,
        entries: Sequence[Entry] | EntryColumns,
        sign_checkpoint: SignCheckpoint,
        origin: str,
    ) -> AppendResult:
        """Append in one transaction under the log lock; known idempotency keys are skipped."""
        with self.transaction((LOG_LOCK, True)) as con:
            return self._append(con, entries, sign_checkpoint, origin)

    def _append(
        self,
        con: Connection,
        entries: Sequence[Entry] | EntryColumns,
        sign_checkpoint: SignCheckpoint,
        origin: str,
    ) -> AppendResult:
        """The append itself, in a transaction holding the log lock (an append's or a unit's).

        The lock makes the lookups, the frontier and the new indices one consistent step, so
        the rows go straight into the log with COPY (no conflict handling needed; the unique
        key and primary key would still refuse a duplicate).
        """
        batch = entries if isinstance(entries, EntryColumns) else EntryColumns.of(entries)
        frontier = self._frontier(con)
        start = frontier.size
        plan = AppendPlan.of(batch, self._indices_for(con, batch.idem_key), start)
        if not plan.fresh:
            return plan.result(None)
        leaves = plan.leaves()
        frontier.extend(leaves)
        rows = zip(
            range(start, start + len(plan.fresh)),
            plan.column("envelope"),
            leaves,
            *(plan.column(name) for name in ENTRY_FIELDS[1:]),
            strict=True,
        )
        with con.cursor().copy(
            f"COPY log_entries ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(_LOG_TYPES)
            for row in rows:
                copy.write_row(row)
        signed = sign_checkpoint(Checkpoint(origin, frontier.size, frontier.root()))
        con.execute(
            "INSERT INTO checkpoints (tree_size, checkpoint, frontier) VALUES (%s, %s, %s)",
            (frontier.size, signed.to_json(), b"".join(frontier.to_hashes())),
        )
        return plan.result(signed)

    @staticmethod
    def _indices_for(con: Connection, keys: Sequence[str]) -> dict[str, int]:
        if not len(keys):
            return {}
        rows = con.execute(
            "SELECT idem_key, idx FROM log_entries WHERE idem_key = ANY(%s::text[])",
            (list(keys),),
        ).fetchall()
        return {str(k): int(i) for k, i in rows}

    def indices_for(self, keys: Sequence[str]) -> dict[str, int]:
        with self._existing() as con:
            return {} if con is None else self._indices_for(con, keys)

    def latest_index(
        self, asset: str, sha256: str | None = None, partition: str | None = None
    ) -> int | None:
        return self._index_of("max", asset, sha256, partition)

    def earliest_index(
        self, asset: str, sha256: str | None = None, partition: str | None = None
    ) -> int | None:
        return self._index_of("min", asset, sha256, partition)

    def _index_of(
        self, which: str, asset: str, sha256: str | None, partition: str | None
    ) -> int | None:
        sql = f"SELECT {which}(idx) FROM log_entries WHERE asset = %s"
        args: list[Any] = [asset]
        if partition is not None:
            sql += " AND partition = %s"
            args.append(partition)
        if sha256 is not None:
            sql += " AND sha256 = %s"
            args.append(sha256)
        with self._existing() as con:
            if con is None:
                return None
            row = con.execute(sql, args).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def tree_size(self) -> int:
        with self._existing() as con:
            if con is None:
                return 0
            row = con.execute("SELECT count(*) FROM log_entries").fetchone()
        return int(row[0]) if row else 0

    def latest_checkpoint(self) -> bytes | None:
        with self.reader() as con:
            row = con.execute(
                "SELECT checkpoint FROM checkpoints ORDER BY tree_size DESC LIMIT 1"
            ).fetchone()
        return bytes(row[0]) if row else None

    @staticmethod
    def _log_table(con: Connection, where: str = "", args: Sequence[Any] = ()) -> pa.Table:
        """Log rows as Arrow (`LOG_COLUMNS`), fetched in binary (bytea arrives as bytes) through
        a server-side cursor, so a large log is never all Python objects at once."""
        parts: list[pa.Table] = []
        with con.cursor(name="log_rows", binary=True) as cur:
            cur.execute(f"SELECT {_COLUMNS} FROM log_entries {where}", args)
            while rows := cur.fetchmany(_FETCH_ROWS):
                columns = zip(*rows, strict=True)
                parts.append(pa.table(
                    [pa.array(c, type=f.type) for c, f in zip(columns, _LOG_SCHEMA, strict=True)],
                    schema=_LOG_SCHEMA,
                ))  # fmt: skip
        if not parts:
            return _LOG_SCHEMA.empty_table()
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts).combine_chunks()

    def read_log(self) -> tuple[pa.Table, list[bytes]]:
        table, rows = self.read_snapshot()
        return table, [cp for _, cp, _ in rows]

    def read_snapshot(
        self, head: SnapshotHead | None = None
    ) -> tuple[pa.Table, list[StoredCheckpoint]]:
        """Every entry and every checkpoint of one REPEATABLE READ snapshot (no lock taken:
        appends go on meanwhile and are simply not seen)."""
        with self.reader(min_version=1) as con:
            first: pa.Table | None = None
            if head is not None:
                size, take = head
                row = con.execute("SELECT count(*) FROM log_entries").fetchone()
                if (k := size(int(row[0]) if row else 0)) > 0:
                    first = self._log_table(con, "ORDER BY idx LIMIT %s", [k])
                    take(first)
            if first is None:
                table = self._log_table(con, "ORDER BY idx")
            else:
                rest = self._log_table(con, "ORDER BY idx OFFSET %s", [first.num_rows])
                table = pa.concat_tables([first, rest]).combine_chunks()
            rows = con.execute(
                "SELECT tree_size, checkpoint, frontier FROM checkpoints ORDER BY tree_size"
            ).fetchall()
        return table, [StoredCheckpoint(int(r[0]), bytes(r[1]), bytes(r[2])) for r in rows]

    def entries(self, start: int = 0, stop: int | None = None) -> pa.Table:
        where = "WHERE idx >= %s"
        args: list[Any] = [start]
        if stop is not None:
            where += " AND idx < %s"
            args.append(stop)
        with self.reader() as con:
            return self._log_table(con, where + " ORDER BY idx", args)

    def entries_at(self, indices: Sequence[int]) -> pa.Table:
        with self.reader() as con:
            return self._log_table(
                con, "WHERE idx = ANY(%s::bigint[]) ORDER BY idx", [[int(i) for i in indices]]
            )

    def source_cursor(self, orchestrator: str) -> dict[str, int]:
        with self._existing() as con:
            if con is None:
                return {}
            rows = con.execute(
                "SELECT asset, max(split_part(idem_key, ':', -1)::bigint) FROM log_entries "
                "WHERE starts_with(idem_key, %s) GROUP BY asset",
                (f"{orchestrator}:",),
            ).fetchall()
        return {str(a): int(s) for a, s in rows}

    # -- usage and settlement ----------------------------------------------------------------
    def known_models(self) -> set[str]:
        with self._existing() as con:
            if con is None:
                return set()
            rows = con.execute(
                "SELECT DISTINCT asset FROM log_entries WHERE kind = 'model'"
            ).fetchall()
        return {str(r[0]) for r in rows}

    def ingest_usage(self, events: pa.Table) -> UsageIngest:
        """COPY the batch (as CSV written by Arrow) into a temporary table, then one INSERT …
        SELECT de-duplicates, assigns epochs and skips stored keys (ON CONFLICT)."""
        table = usage_table(events)
        # CSV has no bytes: the input travels as hex text and is decoded by the server.
        hexed = pa.array(
            [None if b is None else b.hex() for b in table.column("call_input").to_pylist()],
            pa.string(),
        )
        table = table.set_column(
            USAGE_SCHEMA.names.index("call_input"), "call_input", hexed
        )
        data = io.BytesIO()
        # Strings are always quoted and nulls left empty: PostgreSQL's CSV reads "" as an empty
        # string and an empty field as NULL, so nothing is lost either way.
        pa_csv.write_csv(table, data, pa_csv.WriteOptions(include_header=False))
        epoch_us = _EPOCH_US.format("occurred_at")
        key = (
            "'sha256:' || encode(sha256(convert_to(model || '|' || caller || '|' || units "
            f"|| '|' || fee || '|' || {epoch_us}, 'UTF8')), 'hex')"
        )
        place = _PLACE.format(day=_EPOCH_OF.format("f.occurred_at"))
        # The shared ledger lock: ingests run side by side, never beside a settlement unit.
        with self.transaction((LEDGER_LOCK, False)) as con:
            con.execute(
                'CREATE TEMPORARY TABLE incoming (event_id TEXT COLLATE "C", '
                'model TEXT COLLATE "C", caller TEXT COLLATE "C", units BIGINT, fee BIGINT, '
                "occurred_at TIMESTAMP, call_input TEXT, call_output TEXT COLLATE \"C\") "
                "ON COMMIT DROP"
            )
            with con.cursor().copy(
                "COPY incoming (event_id, model, caller, units, fee, occurred_at, call_input, "
                "call_output) FROM STDIN (FORMAT csv)"
            ) as copy:
                copy.write(data.getbuffer())
            con.execute(f"UPDATE incoming SET event_id = {key} WHERE event_id IS NULL")
            cur = con.execute(
                f"""
                WITH fresh AS (
                    SELECT DISTINCT ON (event_id) * FROM incoming
                    ORDER BY event_id, occurred_at, model, caller, units, fee
                ),
                last AS (SELECT max(epoch) AS settled FROM epochs)
                INSERT INTO usage_events
                    (event_id, model, caller, units, fee, occurred_at, call_input, call_output,
                     epoch)
                SELECT f.event_id, f.model, f.caller, f.units, f.fee, f.occurred_at,
                       decode(f.call_input, 'hex'), f.call_output, {place}
                FROM fresh f CROSS JOIN last
                ON CONFLICT (event_id) DO NOTHING
                """
            )
            inserted = max(cur.rowcount, 0)
            conflicts = 0
            if inserted < table.num_rows:
                # Every id of the batch is stored now (kept before, or just inserted): a row
                # whose body differs from the stored one is a conflict.
                differs = (
                    "FROM incoming k JOIN usage_events u USING (event_id) "
                    "WHERE (k.model, k.caller, k.units, k.fee) "
                    "IS DISTINCT FROM (u.model, u.caller, u.units, u.fee)"
                )
                row = con.execute(f"SELECT count(*) {differs}").fetchone()
                conflicts = int(row[0]) if row else 0
                if conflicts:
                    con.execute(
                        "INSERT INTO usage_conflicts "
                        "(event_id, model, caller, units, fee, occurred_at) "
                        "SELECT DISTINCT ON (k.event_id, k.model, k.caller, k.units, k.fee) "
                        "k.event_id, k.model, k.caller, k.units, k.fee, k.occurred_at "
                        f"{differs} AND NOT EXISTS (SELECT 1 FROM usage_conflicts c "
                        "WHERE (c.event_id, c.model, c.caller, c.units, c.fee) = "
                        "(k.event_id, k.model, k.caller, k.units, k.fee)) "
                        "ORDER BY k.event_id, k.model, k.caller, k.units, k.fee, k.occurred_at"
                    )
            if inserted:
                self._check_epoch_fees(
                    con,
                    f"SELECT DISTINCT {_EPOCH_OF.format('occurred_at')} FROM incoming "
                    f"UNION ALL SELECT {_NEXT_EPOCH.format('max(epoch)')} FROM epochs",
                )
        return UsageIngest(inserted, events.num_rows - inserted, conflicts)

    @staticmethod
    def _check_epoch_fees(con: Connection, epochs_sql: str, args: Sequence[Any] = ()) -> None:
        """Refuse (roll back) a write that takes an epoch's fees past MAX_EPOCH_FEES."""
        row = con.execute(
            f"SELECT epoch, sum(fee) FROM usage_events WHERE epoch IN ({epochs_sql}) "
            f"GROUP BY epoch HAVING sum(fee) > {MAX_EPOCH_FEES} ORDER BY epoch LIMIT 1",
            args,
        ).fetchone()
        if row is not None:
            raise UsageError(
                f"epoch {row[0]}: fees would total {row[1]}, past 2^63-1; nothing stored"
            )

    def usage_conflicts(self) -> list[UsageConflict]:
        with self._existing() as con:
            if con is None:
                return []
            rows = con.execute(
                "SELECT c.event_id, c.model, c.caller, c.units, c.fee, c.occurred_at, "
                "coalesce(u.model || '|' || u.caller || '|' || u.units || '|' || u.fee, "
                "q.model || '|' || q.caller || '|' || q.units || '|' || q.fee, '?'), c.seen_at "
                "FROM usage_conflicts c LEFT JOIN usage_events u USING (event_id) "
                "LEFT JOIN usage_quarantine q USING (event_id) "
                "ORDER BY c.event_id, c.seen_at, c.model, c.caller, c.units, c.fee"
            ).fetchall()
        return [
            UsageConflict(str(e), str(m), str(c), int(n), int(f), _naive(t), str(k), _naive(w))
            for e, m, c, n, f, t, k, w in rows
        ]

    def quarantined(self, state: str | None = "held") -> list[QuarantinedEvent]:
        with self._existing() as con:
            if con is None:
                return []
            rows = con.execute(
                f"SELECT {_QUARANTINE_COLUMNS} FROM usage_quarantine "
                "WHERE %(state)s::text IS NULL OR state = %(state)s ORDER BY event_id",
                {"state": state},
            ).fetchall()
        return [_quarantined(r) for r in rows]

    @staticmethod
    def _held(con: Connection, event_id: str) -> QuarantinedEvent:
        row = con.execute(
            f"SELECT {_QUARANTINE_COLUMNS} FROM usage_quarantine WHERE event_id = %s FOR UPDATE",
            (event_id,),
        ).fetchone()
        if row is None:
            raise UsageError(f"no quarantined event {event_id!r}")
        event = _quarantined(row)
        if event.state != "held":
            raise UsageError(f"quarantined event {event_id!r} is already {event.state}")
        return event

    def release_quarantined(self, event_id: str, now: datetime) -> QuarantinedEvent:
        # Exclusive ledger lock: the event's epoch is placed as an ingest would place it.
        with self.transaction((LEDGER_LOCK, True)) as con:
            event = self._held(con, event_id)
            limit = now.astimezone(UTC).replace(tzinfo=None) + timedelta(seconds=MAX_SKEW_S)
            if event.fee > MAX_AMOUNT or event.units > MAX_AMOUNT:
                raise UsageError(f"{event_id!r}: an amount still exceeds 10^15")
            row = con.execute(
                f"SELECT {_EPOCH_US.format('occurred_at')} FROM usage_quarantine "
                "WHERE event_id = %s",
                (event_id,),
            ).fetchone()
            micros = int(row[0]) if row else -1
            if not 0 <= micros <= (limit - datetime(1970, 1, 1)) // timedelta(microseconds=1):
                raise UsageError(
                    f"{event_id!r}: occurred_at {event.occurred_at} is still out of bounds"
                )
            stored = con.execute(
                "SELECT count(*) FROM usage_events WHERE event_id = %s", (event_id,)
            ).fetchone()
            if stored and stored[0]:
                raise UsageError(f"{event_id!r}: an event with this id is stored meanwhile")
            place = _PLACE.format(day=_EPOCH_OF.format("f.occurred_at"))
            con.execute(
                f"""
                WITH last AS (SELECT max(epoch) AS settled FROM epochs)
                INSERT INTO usage_events (event_id, model, caller, units, fee, occurred_at, epoch)
                SELECT f.event_id, f.model, f.caller, f.units, f.fee, f.occurred_at, {place}
                FROM usage_quarantine f CROSS JOIN last WHERE f.event_id = %s
                """,
                (event_id,),
            )
            self._check_epoch_fees(
                con, "SELECT epoch FROM usage_events WHERE event_id = %s", (event_id,)
            )
            con.execute(
                "UPDATE usage_quarantine SET state = 'released', "
                "changed_at = now() AT TIME ZONE 'UTC' WHERE event_id = %s",
                (event_id,),
            )
        return event._replace(state="released")

    def drop_quarantined(self, event_id: str) -> QuarantinedEvent:
        with self.transaction((LEDGER_LOCK, True)) as con:
            event = self._held(con, event_id)
            con.execute(
                "UPDATE usage_quarantine SET state = 'dropped', "
                "changed_at = now() AT TIME ZONE 'UTC' WHERE event_id = %s",
                (event_id,),
            )
        return event._replace(state="dropped")

    def usage_count(self) -> int:
        with self._existing() as con:
            if con is None:
                return 0
            row = con.execute("SELECT count(*) FROM usage_events").fetchone()
        return int(row[0]) if row else 0

    def input_dimensions(self) -> dict[str, tuple[int, int]]:
        with self._existing() as con:
            if con is None:
                return {}
            self._migrate(con)
            rows = con.execute(
                "SELECT model, min(octet_length(call_input)), max(octet_length(call_input)) "
                "FROM usage_events WHERE call_input IS NOT NULL GROUP BY model"
            ).fetchall()
        return {str(m): (int(lo), int(hi)) for m, lo, hi in rows}

    def open_epochs(self) -> list[OpenEpoch]:
        with self._existing() as con:
            if con is None:
                return []
            rows = con.execute(
                "SELECT u.epoch, count(*), sum(u.fee) FROM usage_events u "
                "LEFT JOIN epochs e ON e.epoch = u.epoch WHERE e.epoch IS NULL "
                "GROUP BY u.epoch ORDER BY u.epoch"
            ).fetchall()
        return [OpenEpoch(str(e), int(n), int(f)) for e, n, f in rows]

    @contextmanager
    def settling(self, epoch: str) -> Iterator[_Unit]:
        # The log lock first (as appends take it), then the ledger lock (as ingests take it):
        # one order for everyone, so no two writers wait on each other.
        with self.transaction((LOG_LOCK, True), (LEDGER_LOCK, True)) as con:
            yield _Unit(self, con, epoch)

    @contextmanager
    def snapshot(self) -> Iterator[_View]:
        with self.reader() as con:
            yield _View(con)

    def settled_epoch(self, epoch: str | None = None) -> SettledEpoch | None:
        with self.reader() as con:
            if epoch is None:
                row = con.execute(
                    f"SELECT {_EPOCH_COLUMNS} FROM epochs ORDER BY epoch DESC LIMIT 1"
                ).fetchone()
            else:
                row = con.execute(
                    f"SELECT {_EPOCH_COLUMNS} FROM epochs WHERE epoch = %s", (epoch,)
                ).fetchone()
        return _settled(row) if row else None

    def payouts(self, epoch: str | None = None, account: str | None = None) -> list[Payout]:
        sql = "SELECT epoch, account, amount FROM payouts WHERE true"
        args: list[Any] = []
        if epoch is not None:
            sql += " AND epoch = %s"
            args.append(epoch)
        if account is not None:
            sql += " AND account = %s"
            args.append(account)
        with self.reader() as con:
            rows = con.execute(
                sql + " ORDER BY epoch, amount DESC, account", args
            ).fetchall()
        return [Payout(str(e), str(a), int(n)) for e, a, n in rows]


def _settled(row: Sequence[Any]) -> SettledEpoch:
    epoch, starts, ends, fees, paid, payouts, root, log_index = row
    return SettledEpoch(
        str(epoch), _naive(starts), _naive(ends), int(fees), int(paid), int(payouts), str(root),
        int(log_index),
    )


def _quarantined(row: Sequence[Any]) -> QuarantinedEvent:
    e, m, c, n, f, t, epoch, reason, state = row
    return QuarantinedEvent(
        str(e), str(m), str(c), int(n), int(f), str(t), str(epoch), str(reason), str(state)
    )


def _naive(value: Any) -> datetime:
    if not isinstance(value, datetime):
        raise StoreError(f"epoch window {value!r} is not a timestamp")
    return value.replace(tzinfo=None)


class _Reads:
    """The reads a settlement and a verify share, inside one transaction (one moment)."""

    def __init__(self, con: Connection) -> None:
        self._con = con

    def settled(self, epoch: str) -> SettledEpoch | None:
        row = self._con.execute(
            f"SELECT {_EPOCH_COLUMNS} FROM epochs WHERE epoch = %s", (epoch,)
        ).fetchone()
        return _settled(row) if row else None

    def payouts(self, epoch: str) -> list[Payout]:
        rows = self._con.execute(
            "SELECT account, amount FROM payouts WHERE epoch = %s ORDER BY account", (epoch,)
        ).fetchall()
        return [Payout(epoch, str(a), int(n)) for a, n in rows]

    def inputs(self, epoch: str) -> EpochInputs:
        """The server builds and sorts the event lines (byte order); hashlib reads them as
        they stream in, in batches, so an epoch of millions of events never sits in memory."""
        con = self._con
        fees = {
            str(m): int(f)
            for m, f in con.execute(
                "SELECT model, sum(fee) FROM usage_events WHERE epoch = %s GROUP BY model",
                (epoch,),
            ).fetchall()
        }
        digest = hashlib.sha256()
        count = 0
        epoch_us = _EPOCH_US.format("occurred_at")
        with con.cursor(name="epoch_lines", binary=True) as cur:
            cur.itersize = 20_000
            cur.execute(
                f"SELECT convert_to(event_id || '|' || model || '|' || caller || '|' || units "
                f"|| '|' || fee || '|' || {epoch_us}, 'UTF8') FROM usage_events "
                "WHERE epoch = %s ORDER BY event_id",
                (epoch,),
            )
            while batch := cur.fetchmany(20_000):
                if count:
                    digest.update(b"\n")
                digest.update(b"\n".join(bytes(line) for (line,) in batch))
                count += len(batch)
        return EpochInputs(fees, digest.hexdigest(), count)

    def envelopes(self, kinds: Sequence[str], before: int | None = None) -> list[LoggedEnvelope]:
        sql = "SELECT idx, envelope FROM log_entries WHERE kind = ANY(%s::text[])"
        args: list[Any] = [list(kinds)]
        if before is not None:
            sql += " AND idx < %s"
            args.append(before)
        cur = self._con.cursor(binary=True)
        rows = cur.execute(sql + " ORDER BY idx", args).fetchall()
        return [LoggedEnvelope(int(i), bytes(e)) for i, e in rows]

    def calls(self, epoch: str) -> pa.Table:
        cur = self._con.cursor(binary=True)
        rows = cur.execute(
            "SELECT event_id, model, fee, call_input, call_output FROM usage_events "
            "WHERE epoch = %s ORDER BY event_id",
            (epoch,),
        ).fetchall()
        columns: list[Sequence[Any]] = (
            list(zip(*rows, strict=True)) if rows else [()] * len(CALLS_SCHEMA)
        )
        return pa.table(
            [
                pa.array(columns[0], pa.string()),
                pa.array(columns[1], pa.string()),
                pa.array([int(f) for f in columns[2]], pa.int64()),
                pa.array([None if b is None else bytes(b) for b in columns[3]], pa.binary()),
                pa.array(columns[4], pa.string()),
            ],
            schema=CALLS_SCHEMA,
        )


class _Unit(_Reads):
    """A settlement unit: one epoch's reads and writes in one transaction holding both locks."""

    def __init__(self, store: PostgresStore, con: Connection, epoch: str) -> None:
        super().__init__(con)
        self._store = store
        self.epoch = epoch

    def append(
        self, entries: Sequence[Entry], sign_checkpoint: SignCheckpoint, origin: str
    ) -> AppendResult:
        return self._store._append(self._con, entries, sign_checkpoint, origin)

    def write_settlement(
        self,
        settled: SettledEpoch,
        ledger: Sequence[Posting],
        payouts: Sequence[Payout],
        receipts: pa.Table | None = None,
    ) -> None:
        con, epoch = self._con, settled.epoch
        if self.settled(epoch) is not None:
            raise StoreError(f"epoch {epoch} is already settled")
        con.execute(
            f"INSERT INTO epochs ({_EPOCH_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (epoch, settled.starts_at, settled.ends_at, settled.fees_total, settled.paid_total,
             settled.payouts, settled.root, settled.log_index),
        )
        cur = con.cursor()
        if ledger:
            with cur.copy(
                "COPY ledger (epoch, seq, debit, credit, amount) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["text", "int4", "text", "text", "int8"])
                for seq, posting in enumerate(ledger):
                    copy.write_row((epoch, seq, posting.debit, posting.credit, posting.amount))
        if payouts:
            with cur.copy(
                "COPY payouts (epoch, account, amount) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["text", "text", "int8"])
                for payout in payouts:
                    copy.write_row((epoch, payout.account, payout.amount))
        if receipts is not None and receipts.num_rows:
            leaves = receipts.select(RECEIPTS_SCHEMA.names).cast(RECEIPTS_SCHEMA)
            with cur.copy(
                "COPY call_receipts (epoch, seq, event_id, leaf_hash) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["text", "int4", "text", "bytea"])
                ids = leaves.column("event_id").to_pylist()
                for seq, (event_id, leaf) in enumerate(
                    zip(ids, leaves.column("leaf_hash").to_pylist(), strict=True)
                ):
                    copy.write_row((epoch, seq, event_id, leaf))


class _View(_Reads):
    """A read-only view of one moment (one REPEATABLE READ transaction)."""

    def settled_epochs(self) -> list[SettledEpoch]:
        rows = self._con.execute(f"SELECT {_EPOCH_COLUMNS} FROM epochs ORDER BY epoch").fetchall()
        return [_settled(r) for r in rows]

    def ledger(self, epoch: str) -> list[Posting]:
        rows = self._con.execute(
            "SELECT debit, credit, amount FROM ledger WHERE epoch = %s ORDER BY seq", (epoch,)
        ).fetchall()
        return [Posting(str(d), str(c), int(n)) for d, c, n in rows]

    def envelope_at(self, index: int) -> bytes | None:
        row = self._con.execute(
            "SELECT envelope FROM log_entries WHERE idx = %s", (index,)
        ).fetchone()
        return bytes(row[0]) if row else None

    def account_epochs(self, account: str) -> list[SettledEpoch]:
        rows = self._con.execute(
            f"SELECT {', '.join('e.' + c for c in _EPOCH_COLUMNS.split(', '))} "
            "FROM payouts p JOIN epochs e USING (epoch) WHERE p.account = %s ORDER BY e.epoch",
            (account,),
        ).fetchall()
        return [_settled(r) for r in rows]

    def strays(self) -> list[Stray]:
        con = self._con
        records = con.execute(
            "SELECT l.idx, l.partition FROM log_entries l "
            "LEFT JOIN epochs e ON e.log_index = l.idx WHERE l.kind = 'settlement' "
            "AND (e.epoch IS NULL OR e.epoch IS DISTINCT FROM l.partition) ORDER BY l.idx"
        ).fetchall()
        tables = {"payouts": "payouts", "ledger": "ledger", "receipts": "call_receipts"}
        rows = [
            Stray(what, str(epoch), None)
            for what, table in tables.items()
            for (epoch,) in con.execute(
                f"SELECT DISTINCT epoch FROM {table} "
                "WHERE epoch NOT IN (SELECT epoch FROM epochs) ORDER BY epoch"
            ).fetchall()
        ]
        return [Stray("record", str(p), int(i)) for i, p in records] + rows

    def receipt_leaves(self, epoch: str) -> pa.Table:
        cur = self._con.cursor(binary=True)
        rows = cur.execute(
            "SELECT event_id, leaf_hash FROM call_receipts WHERE epoch = %s ORDER BY seq", (epoch,)
        ).fetchall()
        return pa.table(
            [pa.array([str(e) for e, _ in rows], pa.string()),
             pa.array([bytes(leaf) for _, leaf in rows], pa.binary())],
            schema=RECEIPTS_SCHEMA,
        )

    def receipt_epoch(self, event_id: str) -> str | None:
        row = self._con.execute(
            "SELECT epoch FROM call_receipts WHERE event_id = %s ORDER BY epoch LIMIT 1",
            (event_id,),
        ).fetchone()
        return str(row[0]) if row else None
