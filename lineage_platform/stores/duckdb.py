"""The DuckDB driver: one file on one machine, opened only for one short transaction at a time.

    store = open_store("duckdb:///srv/lineage/lineage.duckdb")   # lineage_platform.stores
    result = store.append_entries(entries, sign_checkpoint, ORIGIN)  # one transaction, Arrow

DuckDB allows one writing process per file, so no process keeps the file open while idle: every
call opens, does one short transaction and closes; a lock conflict is retried with backoff until
`lock_timeout_s`, then `StoreBusyError` (DESIGN §7). That file lock is also what makes appends
and settlement units exclusive. The only module that imports duckdb.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

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

HASH_LEN = 32
_COLUMNS = ", ".join(LOG_COLUMNS)
_EPOCH_OF = "strftime(f.occurred_at, '%Y-%m-%d')"  # an event's natural epoch: its UTC day
_EPOCH_COLUMNS = "epoch, starts_at, ends_at, fees_total, paid_total, payouts, root, log_index"

# Why a stored event breaks the usage bounds (NULL when it does not); the clock is UTC.
_BOUNDS_REASON = f"""(CASE
    WHEN fee > {MAX_AMOUNT} THEN 'fee ' || fee || ' exceeds 10^15'
    WHEN units > {MAX_AMOUNT} THEN 'units ' || units || ' exceed 10^15'
    WHEN occurred_at < TIMESTAMP '1970-01-01' THEN 'occurred_at before 1970'
    WHEN epoch_us(occurred_at) > epoch_us(get_current_timestamp()) + {MAX_SKEW_S * 10**6}
        THEN 'occurred_at ' || occurred_at || ' is in the future'
    WHEN NOT regexp_full_match(epoch, '[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}')
        THEN 'epoch ' || epoch || ' is not a date'
    END)"""

# Each migration runs once, in order, inside the transaction that records its version.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE log_entries (
            idx           BIGINT PRIMARY KEY,   -- leaf index = position in the Merkle log
            envelope      BLOB NOT NULL,        -- the exact DSSE bytes the leaf hashes
            leaf_hash     BLOB NOT NULL,        -- derived: SHA-256(0x00 || envelope)
            record_digest VARCHAR NOT NULL,     -- derived: sha256 of the signed payload
            idem_key      VARCHAR NOT NULL UNIQUE,  -- derived: dagster run+storage id, or digest
            kind          VARCHAR NOT NULL,     -- derived query columns, re-checked by verify
            asset         VARCHAR NOT NULL,
            partition     VARCHAR,
            sha256        VARCHAR NOT NULL,
            keyid         VARCHAR NOT NULL,
            recorded_at   VARCHAR NOT NULL
        );
        CREATE INDEX log_entries_asset ON log_entries (asset, partition, sha256);
        CREATE TABLE checkpoints (
            tree_size  BIGINT PRIMARY KEY,
            checkpoint BLOB NOT NULL,           -- signed checkpoint JSON (covers size and root)
            frontier   BLOB NOT NULL,           -- derived: compact-range hashes for appends
            created_at TIMESTAMP NOT NULL DEFAULT now()
        );
        """,
    ),
    (
        2,
        """
        CREATE TABLE usage_events (
            event_id    VARCHAR NOT NULL,       -- idempotency key: a replayed event is dropped
            model       VARCHAR NOT NULL,
            caller      VARCHAR NOT NULL,
            units       BIGINT NOT NULL,
            fee         BIGINT NOT NULL,        -- integer minor units
            occurred_at TIMESTAMP NOT NULL,     -- UTC
            epoch       VARCHAR NOT NULL,       -- fixed at ingestion; never a settled epoch
            ingested_at TIMESTAMP NOT NULL DEFAULT current_localtimestamp()
        );
        CREATE TABLE epochs (
            epoch       VARCHAR PRIMARY KEY,    -- one row per settled epoch; its presence = settled
            starts_at   TIMESTAMP NOT NULL,     -- UTC, half-open [starts_at, ends_at)
            ends_at     TIMESTAMP NOT NULL,
            fees_total  BIGINT NOT NULL,
            paid_total  BIGINT NOT NULL,
            payouts     INTEGER NOT NULL,
            root        VARCHAR NOT NULL,       -- Merkle root over payout leaves (signed record)
            log_index   BIGINT NOT NULL,        -- the settlement record in the log
            settled_at  TIMESTAMP NOT NULL DEFAULT current_localtimestamp()
        );
        CREATE TABLE ledger (
            epoch   VARCHAR NOT NULL,
            seq     INTEGER NOT NULL,
            debit   VARCHAR NOT NULL,
            credit  VARCHAR NOT NULL,
            amount  BIGINT NOT NULL,
            PRIMARY KEY (epoch, seq)
        );
        CREATE TABLE payouts (
            epoch   VARCHAR NOT NULL,
            account VARCHAR NOT NULL,
            amount  BIGINT NOT NULL,
            PRIMARY KEY (epoch, account)
        );
        """,
    ),
    # Every log value must be signed or re-derivable by verify; a local clock reading is neither.
    (3, "ALTER TABLE checkpoints DROP COLUMN created_at"),
    (
        # Column compression picked for append speed: every commit re-compresses the open row
        # group, and DuckDB's default (FSST) on the envelopes and on random hashes costs about
        # as much as signing. zstd for the envelopes, none for hashes: on 60,000 records a
        # 10,000-record batch commits in 30 µs/record instead of 57, in a 43% smaller file.
        4,
        f"""
        CREATE TABLE log_entries_v4 (
            idx           BIGINT PRIMARY KEY,
            envelope      BLOB NOT NULL USING COMPRESSION zstd,
            leaf_hash     BLOB NOT NULL USING COMPRESSION uncompressed,
            record_digest VARCHAR NOT NULL USING COMPRESSION uncompressed,
            idem_key      VARCHAR NOT NULL UNIQUE,
            kind          VARCHAR NOT NULL,
            asset         VARCHAR NOT NULL,
            partition     VARCHAR,
            sha256        VARCHAR NOT NULL USING COMPRESSION uncompressed,
            keyid         VARCHAR NOT NULL,
            recorded_at   VARCHAR NOT NULL
        );
        INSERT INTO log_entries_v4 ({_COLUMNS}) SELECT {_COLUMNS} FROM log_entries;
        DROP INDEX log_entries_asset;
        DROP TABLE log_entries;
        ALTER TABLE log_entries_v4 RENAME TO log_entries;
        CREATE INDEX log_entries_asset ON log_entries (asset, partition, sha256);
        """,
    ),
    (
        # Issue 15: conflicting bodies are listed, and unsettled events stored before the usage
        # bounds existed that break them (an amount past MAX_AMOUNT, a time before 1970 or
        # past the clock, an epoch id that is not a 4-digit-year date) move to the quarantine,
        # which settlement does not read.
        5,
        f"""
        CREATE TABLE usage_conflicts (
            event_id    VARCHAR NOT NULL,
            model       VARCHAR NOT NULL,
            caller      VARCHAR NOT NULL,
            units       BIGINT NOT NULL,
            fee         BIGINT NOT NULL,
            occurred_at TIMESTAMP NOT NULL,
            seen_at     TIMESTAMP NOT NULL DEFAULT current_localtimestamp()
        );
        CREATE TABLE usage_quarantine (
            event_id    VARCHAR PRIMARY KEY,
            model       VARCHAR NOT NULL,
            caller      VARCHAR NOT NULL,
            units       BIGINT NOT NULL,
            fee         BIGINT NOT NULL,
            occurred_at TIMESTAMP NOT NULL,
            epoch       VARCHAR NOT NULL,
            reason      VARCHAR NOT NULL,
            state       VARCHAR NOT NULL,       -- held | released | dropped (kept for audit)
            changed_at  TIMESTAMP NOT NULL DEFAULT current_localtimestamp()
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
        # Issue 18: a call may carry its input (little-endian float64 bytes) and the label
        # served; each settled call's receipt leaf (in the epoch's signed calls root) is kept.
        6,
        """
        ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS call_input BLOB;
        ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS call_output VARCHAR;
        CREATE TABLE IF NOT EXISTS call_receipts (
            epoch    VARCHAR NOT NULL,
            seq      INTEGER NOT NULL,          -- leaf index in the epoch's calls tree
            event_id VARCHAR NOT NULL,
            leaf_hash BLOB NOT NULL,            -- SHA-256(0x00 || the call's canonical JSON)
            PRIMARY KEY (epoch, seq)
        );
        CREATE INDEX IF NOT EXISTS call_receipts_event ON call_receipts (event_id);
        """,
    ),
)


# Rows per row group where the log is appended. A checkpoint rewrites the last, partly filled
# row group of a table, so with DuckDB's default (122,880 rows) every batch appended to a log of
# under 122,880 entries re-compressed every entry before it: bench_log's 100,000 records in
# batches of 10,000 wrote each entry 5.5 times and spent 32 µs/record in DuckDB, against 15
# with 2,048 (the smallest DuckDB takes). Usage ingest keeps the default: its batches fill
# whole row groups, and small ones cost it a fifth of its rate. Not stored in the file.
LOG_ROW_GROUP_SIZE = 2048


def _open(path: Path, read_only: bool, row_group_size: int | None) -> duckdb.DuckDBPyConnection:
    """A connection whose default catalog is the file at `path`."""
    if row_group_size is None or read_only:
        return duckdb.connect(str(path), read_only=read_only)
    con = duckdb.connect()  # the row group size is an option of ATTACH only
    try:
        quoted = str(path).replace("'", "''")
        con.execute(f"ATTACH '{quoted}' AS lineage (ROW_GROUP_SIZE {int(row_group_size)})")
        con.execute("USE lineage")
    except BaseException:
        con.close()
        raise
    return con


def _is_lock_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "lock" in text and ("conflict" in text or "could not set" in text)


def _joined_lines_digest(column: pa.ChunkedArray) -> str:
    """sha256 of newline-terminated strings with the final newline left out, without a copy."""
    digest = hashlib.sha256()
    views: list[memoryview] = []
    for chunk in column.chunks:
        if not len(chunk):
            continue
        if not pa.types.is_string(chunk.type):
            chunk = chunk.cast(pa.large_string())
        width = pa.int32() if pa.types.is_string(chunk.type) else pa.int64()
        _, offset_buf, data = chunk.buffers()
        assert data is not None
        offsets = pa.Array.from_buffers(width, len(chunk) + 1, [None, offset_buf], 0, chunk.offset)
        views.append(memoryview(data)[offsets[0].as_py() : offsets[-1].as_py()])
    if views:
        views[-1] = views[-1][:-1]
    for view in views:
        digest.update(view)
    return digest.hexdigest()


class DuckDBStore:
    """A DuckDB file opened only for one short transaction at a time (a `Store`)."""

    def __init__(
        self,
        path: Path,
        lock_timeout_s: float = 30.0,
        on_lock_wait: Callable[[float], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s
        self.on_lock_wait = on_lock_wait
        self.lock_waits = 0
        self.lock_wait_s = 0.0

    def __repr__(self) -> str:
        return f"DuckDBStore({str(self.path)!r})"

    def describe(self) -> str:
        return str(self.path)

    def exists(self) -> bool:
        return self.path.exists()

    # -- connections -------------------------------------------------------------------------
    @contextmanager
    def connect(
        self, read_only: bool = False, row_group_size: int | None = None
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        if read_only and not self.path.exists():
            raise StoreError(
                f"no log database at {self.path}: run `lineage demo` or `lineage sync`"
            )
        if not read_only:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create {self.path.parent}: {exc.strerror}") from exc
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.005
        started = time.monotonic()
        conflicts = 0
        while True:
            try:
                con = _open(self.path, read_only, row_group_size)
                break
            except duckdb.Error as exc:
                if not _is_lock_error(exc):
                    raise StoreError(f"cannot open {self.path}: {exc}") from exc
                conflicts += 1
                now = time.monotonic()
                if now >= deadline:
                    raise StoreBusyError(
                        f"{self.path} is locked by another process (waited "
                        f"{self.lock_timeout_s:g}s); retry, or raise the lock timeout"
                    ) from exc
                time.sleep(min(delay * (0.5 + random.random()), deadline - now))
                delay = min(delay * 2, 0.25)
        waited = time.monotonic() - started
        # Only a lock conflict counts: opening a file is itself slow under load.
        if conflicts:
            self.lock_waits += 1
            self.lock_wait_s += waited
            self._note_lock_wait(waited)
            if self.on_lock_wait:
                self.on_lock_wait(waited)
        try:
            yield con
        finally:
            con.close()

    @property
    def lock_wait_log(self) -> Path:
        return self.path.with_name(self.path.name + ".lockwaits")

    def _note_lock_wait(self, waited: float) -> None:
        """One line per wait, so `lineage status` shows contention across all processes."""
        try:
            with open(self.lock_wait_log, "a", encoding="utf-8") as fh:
                fh.write(f"{time.time():.3f} {waited:.4f} {os.getpid()}\n")
        except OSError:
            pass  # a full disk must not turn a slow write into a failed one

    def recent_lock_waits(self, window_s: float = 3600.0) -> tuple[int, float]:
        """(count, total seconds) of lock waits recorded in the last `window_s` seconds."""
        try:
            lines = self.lock_wait_log.read_text(encoding="utf-8").splitlines()
        except OSError:
            return 0, 0.0
        since = time.time() - window_s
        waits = []
        for line in lines[-10_000:]:
            parts = line.split()
            if len(parts) >= 2 and float(parts[0]) >= since:
                waits.append(float(parts[1]))
        return len(waits), sum(waits)

    @contextmanager
    def transaction(
        self, row_group_size: int | None = None
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        with self.connect(row_group_size=row_group_size) as con, self._translated():
            self._migrate(con)
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (disk full) has already ended the transaction: a second error
                # from ROLLBACK must not hide the first, which says what went wrong.
                with suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                raise

    @contextmanager
    def reader(self, min_version: int | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """Read-only; `min_version` is the oldest schema the caller's queries work on."""
        with self.connect(read_only=True) as con, self._translated():
            version = self._version(con)
            if version < (MIGRATIONS[-1][0] if min_version is None else min_version):
                raise StoreError(f"{self.path} has schema {version}; run any write command first")
            yield con

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """DuckDB's own errors (a damaged file, an altered schema) become one StoreError line."""
        try:
            yield
        except duckdb.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(f"{self.path}: {first}") from exc
        except OSError as exc:  # a full or failing disk under Python's own writes
            raise StoreError(f"{self.path}: {exc.strerror or exc}") from exc

    @staticmethod
    def _version(con: duckdb.DuckDBPyConnection) -> int:
        found = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
        ).fetchall()
        if not found or not found[0][0]:
            return 0
        row = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()
        return int(row[0][0]) if row else 0

    def _migrate(self, con: duckdb.DuckDBPyConnection) -> None:
        if self._version(con) >= MIGRATIONS[-1][0]:
            return
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(version INTEGER PRIMARY KEY, applied_at TIMESTAMP DEFAULT now())"
            )
            current = self._version(con)
            for version, sql in MIGRATIONS:
                if version > current:
                    con.execute(sql)
                    con.execute("INSERT INTO schema_version (version) VALUES (?)", [version])
            con.execute("COMMIT")
        except BaseException:
            with suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise

    def migrate(self) -> None:
        with self.connect() as con:
            self._migrate(con)

    # -- the log -----------------------------------------------------------------------------
    @staticmethod
    def _frontier(con: duckdb.DuckDBPyConnection) -> CompactRange:
        rows = con.execute(
            "SELECT tree_size, frontier FROM checkpoints ORDER BY tree_size DESC LIMIT 1"
        ).fetchall()
        if not rows:
            return CompactRange()
        blob = bytes(rows[0][1])
        hashes = [blob[i : i + HASH_LEN] for i in range(0, len(blob), HASH_LEN)]
        return CompactRange.from_hashes(int(rows[0][0]), hashes)

    def append_entries(
        self,
        entries: Sequence[Entry] | EntryColumns,
        sign_checkpoint: SignCheckpoint,
        origin: str,
    ) -> AppendResult:
        """Append in one transaction; entries whose idempotency key is known are skipped."""
        with self.transaction(LOG_ROW_GROUP_SIZE) as con:
            return self._append(con, entries, sign_checkpoint, origin)

    def _append(
        self,
        con: duckdb.DuckDBPyConnection,
        entries: Sequence[Entry] | EntryColumns,
        sign_checkpoint: SignCheckpoint,
        origin: str,
    ) -> AppendResult:
        """The append itself, inside a transaction the caller holds (a settlement unit's)."""
        batch = entries if isinstance(entries, EntryColumns) else EntryColumns.of(entries)
        frontier = self._frontier(con)
        start = frontier.size
        plan = AppendPlan.of(batch, self._indices_for(con, batch.idem_key), start)
        if not plan.fresh:
            return plan.result(None)
        leaves = plan.leaves()
        frontier.extend(leaves)
        table = pa.table(
            {
                "idx": pa.array(range(start, start + len(plan.fresh)), pa.int64()),
                "envelope": pa.array(plan.column("envelope"), pa.binary()),
                "leaf_hash": pa.array(leaves, pa.binary()),
                **{name: pa.array(plan.column(name), pa.string()) for name in ENTRY_FIELDS[1:]},
            }
        )
        con.register("new_entries", table)
        con.execute(f"INSERT INTO log_entries ({_COLUMNS}) SELECT * FROM new_entries")
        con.unregister("new_entries")
        signed = sign_checkpoint(Checkpoint(origin, frontier.size, frontier.root()))
        con.execute(
            "INSERT INTO checkpoints (tree_size, checkpoint, frontier) VALUES (?, ?, ?)",
            [frontier.size, signed.to_json(), b"".join(frontier.to_hashes())],
        )
        return plan.result(signed)

    @staticmethod
    def _indices_for(con: duckdb.DuckDBPyConnection, keys: Sequence[str]) -> dict[str, int]:
        if not keys:
            return {}
        con.register("wanted", pa.table({"k": pa.array(list(keys), pa.string())}))
        rows = con.execute(
            "SELECT idem_key, idx FROM log_entries JOIN wanted ON idem_key = k"
        ).fetchall()
        con.unregister("wanted")
        return {str(k): int(i) for k, i in rows}

    def indices_for(self, keys: Sequence[str]) -> dict[str, int]:
        """Which idempotency keys are already in the log, and where."""
        if not self.path.exists():
            return {}
        with self.transaction() as con:
            return self._indices_for(con, keys)

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
        if not self.path.exists():
            return None
        sql = f"SELECT {which}(idx) FROM log_entries WHERE asset = ?"
        args: list[Any] = [asset]
        if partition is not None:
            sql += " AND partition = ?"
            args.append(partition)
        if sha256 is not None:
            sql += " AND sha256 = ?"
            args.append(sha256)
        with self.transaction() as con:
            rows = con.execute(sql, args).fetchall()
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    def tree_size(self) -> int:
        if not self.path.exists():
            return 0
        with self.reader(min_version=1) as con:
            rows = con.execute("SELECT count(*) FROM log_entries").fetchall()
        return int(rows[0][0])

    def read_log(self) -> tuple[pa.Table, list[bytes]]:
        """Every entry (Arrow, in index order) and every stored checkpoint, read-only."""
        table, rows = self.read_snapshot()
        return table, [cp for _, cp, _ in rows]

    def read_snapshot(
        self, head: SnapshotHead | None = None
    ) -> tuple[pa.Table, list[StoredCheckpoint]]:
        """Every entry and every checkpoint row (size, signed JSON, frontier) in one read-only
        connection, so that no append can land between the reads.

        `head` = (how many of the log's n entries, what to do with them): the first entries as
        stored are read and handed over before the rest is read, so that work on them
        (verification) overlaps the long read.
        """
        with self.reader(min_version=1) as con:  # verify needs only the log tables
            if head is not None:
                size, take = head
                n = int(con.execute("SELECT count(*) FROM log_entries").fetchall()[0][0])
                if (k := size(n)) > 0:
                    # The first k rows as stored (idx order, unless idx was edited: the taker
                    # checks). Not `WHERE idx < k`: for up to 2,048 rows DuckDB fetches them
                    # through the index, which took over a second for rows 0-2,047.
                    sql = f"SELECT {_COLUMNS} FROM log_entries LIMIT ?"
                    take(con.sql(sql, params=[k]).to_arrow_table())
            # Rows come back in insertion order, which is idx order unless someone edited idx;
            # sorting here only then saves DuckDB sorting 100,000 envelopes every time.
            table = con.sql(f"SELECT {_COLUMNS} FROM log_entries").to_arrow_table()
            idx = table.column("idx")
            if len(idx) > 1 and not pc.all(pc.greater(idx[1:], idx[:-1])).as_py():
                table = table.sort_by("idx")
            rows = con.execute(
                "SELECT tree_size, checkpoint, frontier FROM checkpoints ORDER BY tree_size"
            ).fetchall()
        return table, [StoredCheckpoint(int(r[0]), bytes(r[1]), bytes(r[2])) for r in rows]

    def latest_checkpoint(self) -> bytes | None:
        with self.reader(min_version=1) as con:  # log reads work on every schema (verify)
            rows = con.execute(
                "SELECT checkpoint FROM checkpoints ORDER BY tree_size DESC LIMIT 1"
            ).fetchall()
        return bytes(rows[0][0]) if rows else None

    def entries(self, start: int = 0, stop: int | None = None) -> pa.Table:
        with self.reader(min_version=1) as con:  # log reads work on every schema (verify)
            sql = f"SELECT {_COLUMNS} FROM log_entries WHERE idx >= ?"
            args: list[Any] = [start]
            if stop is not None:
                sql += " AND idx < ?"
                args.append(stop)
            return con.sql(sql + " ORDER BY idx", params=args).to_arrow_table()

    def entries_at(self, indices: Sequence[int]) -> pa.Table:
        with self.reader() as con:
            return con.sql(
                f"SELECT {_COLUMNS} FROM log_entries WHERE list_contains($wanted, idx) "
                "ORDER BY idx",
                params={"wanted": [int(i) for i in indices]},
            ).to_arrow_table()

    def source_cursor(self, orchestrator: str) -> dict[str, int]:
        if not self.path.exists():
            return {}
        with self.transaction() as con:
            rows = con.execute(
                "SELECT asset, max(CAST(string_split(idem_key, ':')[-1] AS BIGINT)) "
                "FROM log_entries WHERE starts_with(idem_key, ?) GROUP BY asset",
                [f"{orchestrator}:"],
            ).fetchall()
        return {str(a): int(s) for a, s in rows}

    # -- usage and settlement ----------------------------------------------------------------
    def known_models(self) -> set[str]:
        if not self.path.exists():
            return set()
        with self.transaction() as con:
            rows = con.execute(
                "SELECT DISTINCT asset FROM log_entries WHERE kind = 'model'"
            ).fetchall()
        return {str(r[0]) for r in rows}

    def ingest_usage(self, events: pa.Table) -> UsageIngest:
        keyed = (
            "SELECT coalesce(event_id, 'sha256:' || sha256(model || '|' || caller || '|' "
            "|| units || '|' || fee || '|' || epoch_us(occurred_at))) AS event_id, "
            "model, caller, units, fee, occurred_at, call_input, call_output FROM incoming"
        )
        body_differs = (
            "(k.model, k.caller, k.units, k.fee) "
            "IS DISTINCT FROM (u.model, u.caller, u.units, u.fee)"
        )
        events = usage_table(events)
        with self.transaction() as con:
            con.register("incoming", events)
            try:
                # One join tells which rows are new and which reuse a stored id with another
                # body; a pure replay then writes nothing, and a fresh batch inserts without a
                # second anti-join. The in-batch window costs as much as the insert itself; a
                # distinct count (a tenth of that) tells when it is needed.
                (repeats,) = con.execute(
                    f"SELECT count(*) - count(DISTINCT event_id) FROM ({keyed})"
                ).fetchall()[0]
                fresh_rows, conflicts = con.execute(
                    "SELECT count(*) FILTER (WHERE u.event_id IS NULL), "
                    f"count(*) FILTER (WHERE u.event_id IS NOT NULL AND {body_differs}) "
                    f"FROM ({keyed}) k LEFT JOIN usage_events u USING (event_id)"
                ).fetchall()[0]
                fresh_rows, conflicts = int(fresh_rows), int(conflicts)
                once = (
                    " QUALIFY row_number() OVER (PARTITION BY event_id "
                    "ORDER BY occurred_at, model, caller, units, fee) = 1"
                    if repeats
                    else ""
                )
                new_only = (
                    "WHERE NOT EXISTS (SELECT 1 FROM usage_events u WHERE u.event_id = f.event_id)"
                    if fresh_rows < events.num_rows
                    else ""
                )
                inserted = 0
                if fresh_rows:
                    rows = con.execute(
                        f"""
                        INSERT INTO usage_events
                            (event_id, model, caller, units, fee, occurred_at, call_input,
                             call_output, epoch)
                        WITH fresh AS (SELECT * FROM ({keyed}){once}),
                        last AS (SELECT max(epoch) AS settled FROM epochs)
                        SELECT f.event_id, f.model, f.caller, f.units, f.fee, f.occurred_at,
                               f.call_input, f.call_output,
                               CASE WHEN last.settled IS NOT NULL AND ({_EPOCH_OF}) <= last.settled
                                    THEN strftime(CAST(last.settled AS DATE) + INTERVAL 1 DAY,
                                                  '%Y-%m-%d')
                                    ELSE ({_EPOCH_OF}) END
                        FROM fresh f CROSS JOIN last {new_only}
                        """
                    ).fetchall()
                    inserted = int(rows[0][0]) if rows else 0
                if repeats:
                    # Rows of the batch that lost to another of the same id: every id is stored
                    # now, so compare each row with what is stored.
                    conflicts = int(con.execute(
                        f"SELECT count(*) FROM ({keyed}) k JOIN usage_events u USING (event_id) "
                        f"WHERE {body_differs}"
                    ).fetchall()[0][0])
                if conflicts:
                    con.execute(
                        "INSERT INTO usage_conflicts "
                        "(event_id, model, caller, units, fee, occurred_at) "
                        "SELECT DISTINCT ON (k.event_id, k.model, k.caller, k.units, k.fee) "
                        "k.event_id, k.model, k.caller, k.units, k.fee, k.occurred_at "
                        f"FROM ({keyed}) k JOIN usage_events u USING (event_id) "
                        f"WHERE {body_differs} AND NOT EXISTS (SELECT 1 FROM usage_conflicts c "
                        "WHERE (c.event_id, c.model, c.caller, c.units, c.fee) = "
                        "(k.event_id, k.model, k.caller, k.units, k.fee)) "
                        "ORDER BY k.event_id, k.model, k.caller, k.units, k.fee, k.occurred_at"
                    )
                if inserted:
                    self._check_epoch_fees(
                        con,
                        "SELECT DISTINCT strftime(occurred_at, '%Y-%m-%d') FROM incoming "
                        "UNION ALL SELECT strftime(CAST(max(epoch) AS DATE) + INTERVAL 1 DAY, "
                        "'%Y-%m-%d') FROM epochs",
                    )
            finally:
                con.unregister("incoming")
        return UsageIngest(inserted, events.num_rows - inserted, conflicts)

    @staticmethod
    def _check_epoch_fees(
        con: duckdb.DuckDBPyConnection, epochs_sql: str, args: Sequence[Any] = ()
    ) -> None:
        """Refuse (roll back) a write that takes an epoch's fees past MAX_EPOCH_FEES."""
        over = con.execute(
            f"SELECT epoch, sum(fee) FROM usage_events WHERE epoch IN ({epochs_sql}) "
            f"GROUP BY epoch HAVING sum(fee) > {MAX_EPOCH_FEES} ORDER BY epoch LIMIT 1",
            list(args),
        ).fetchall()
        if over:
            raise UsageError(
                f"epoch {over[0][0]}: fees would total {over[0][1]}, past 2^63-1; nothing stored"
            )

    def usage_conflicts(self) -> list[UsageConflict]:
        if not self.path.exists():
            return []
        with self.transaction() as con:
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

    _QUARANTINE_COLUMNS = (
        "event_id, model, caller, units, fee, occurred_at, epoch, reason, state"
    )

    @staticmethod
    def _quarantined(row: Sequence[Any]) -> QuarantinedEvent:
        e, m, c, n, f, t, epoch, reason, state = row
        return QuarantinedEvent(
            str(e), str(m), str(c), int(n), int(f), str(t), str(epoch), str(reason), str(state)
        )

    def quarantined(self, state: str | None = "held") -> list[QuarantinedEvent]:
        if not self.path.exists():
            return []
        with self.transaction() as con:
            rows = con.execute(
                f"SELECT {self._QUARANTINE_COLUMNS} FROM usage_quarantine "
                "WHERE ? IS NULL OR state = ? ORDER BY event_id",
                [state, state],
            ).fetchall()
        return [self._quarantined(r) for r in rows]

    def _held(self, con: duckdb.DuckDBPyConnection, event_id: str) -> QuarantinedEvent:
        rows = con.execute(
            f"SELECT {self._QUARANTINE_COLUMNS} FROM usage_quarantine WHERE event_id = ?",
            [event_id],
        ).fetchall()
        if not rows:
            raise UsageError(f"no quarantined event {event_id!r}")
        event = self._quarantined(rows[0])
        if event.state != "held":
            raise UsageError(f"quarantined event {event_id!r} is already {event.state}")
        return event

    def release_quarantined(self, event_id: str, now: datetime) -> QuarantinedEvent:
        with self.transaction() as con:
            event = self._held(con, event_id)
            limit = now.astimezone(UTC).replace(tzinfo=None) + timedelta(seconds=MAX_SKEW_S)
            if event.fee > MAX_AMOUNT or event.units > MAX_AMOUNT:
                raise UsageError(f"{event_id!r}: an amount still exceeds 10^15")
            (micros,) = con.execute(
                "SELECT epoch_us(occurred_at) FROM usage_quarantine WHERE event_id = ?",
                [event_id],
            ).fetchall()[0]
            if not 0 <= int(micros) <= (limit - datetime(1970, 1, 1)) // timedelta(microseconds=1):
                raise UsageError(
                    f"{event_id!r}: occurred_at {event.occurred_at} is still out of bounds"
                )
            if con.execute(
                "SELECT count(*) FROM usage_events WHERE event_id = ?", [event_id]
            ).fetchall()[0][0]:
                raise UsageError(f"{event_id!r}: an event with this id is stored meanwhile")
            con.execute(
                f"""
                INSERT INTO usage_events (event_id, model, caller, units, fee, occurred_at, epoch)
                WITH last AS (SELECT max(epoch) AS settled FROM epochs)
                SELECT f.event_id, f.model, f.caller, f.units, f.fee, f.occurred_at,
                       CASE WHEN last.settled IS NOT NULL AND ({_EPOCH_OF}) <= last.settled
                            THEN strftime(CAST(last.settled AS DATE) + INTERVAL 1 DAY, '%Y-%m-%d')
                            ELSE ({_EPOCH_OF}) END
                FROM usage_quarantine f CROSS JOIN last WHERE f.event_id = ?
                """,
                [event_id],
            )
            self._check_epoch_fees(
                con, "SELECT epoch FROM usage_events WHERE event_id = ?", [event_id]
            )
            con.execute(
                "UPDATE usage_quarantine SET state = 'released', "
                "changed_at = current_localtimestamp() WHERE event_id = ?",
                [event_id],
            )
        return event._replace(state="released")

    def drop_quarantined(self, event_id: str) -> QuarantinedEvent:
        with self.transaction() as con:
            event = self._held(con, event_id)
            con.execute(
                "UPDATE usage_quarantine SET state = 'dropped', "
                "changed_at = current_localtimestamp() WHERE event_id = ?",
                [event_id],
            )
        return event._replace(state="dropped")

    def usage_count(self) -> int:
        if not self.path.exists():
            return 0
        with self.transaction() as con:
            return int(con.execute("SELECT count(*) FROM usage_events").fetchall()[0][0])

    def input_dimensions(self) -> dict[str, tuple[int, int]]:
        if not self.path.exists():
            return {}
        with self.transaction() as con:
            rows = con.execute(
                "SELECT model, min(octet_length(call_input)), max(octet_length(call_input)) "
                "FROM usage_events WHERE call_input IS NOT NULL GROUP BY model"
            ).fetchall()
        return {str(m): (int(lo), int(hi)) for m, lo, hi in rows}

    def open_epochs(self) -> list[OpenEpoch]:
        if not self.path.exists():
            return []
        with self.transaction() as con:
            rows = con.execute(
                "SELECT u.epoch, count(*), sum(u.fee) FROM usage_events u "
                "LEFT JOIN epochs e ON e.epoch = u.epoch WHERE e.epoch IS NULL "
                "GROUP BY u.epoch ORDER BY u.epoch"
            ).fetchall()
        return [OpenEpoch(str(e), int(n), int(f)) for e, n, f in rows]

    @contextmanager
    def settling(self, epoch: str) -> Iterator[_Unit]:
        # The read-write connection holds DuckDB's file lock: one unit (or append) at a time.
        with self.transaction() as con:
            yield _Unit(self, con, epoch)

    @contextmanager
    def snapshot(self) -> Iterator[_View]:
        # Ledger reads work from schema 2 on (schema 5's quarantine is read through writes),
        # so a read-only verify of an older store needs no upgrade first.
        with self.reader(min_version=2) as con:
            yield _View(con)

    def settled_epoch(self, epoch: str | None = None) -> SettledEpoch | None:
        with self.reader(min_version=2) as con:
            if epoch is None:
                rows = con.execute(
                    f"SELECT {_EPOCH_COLUMNS} FROM epochs ORDER BY epoch DESC LIMIT 1"
                ).fetchall()
            else:
                rows = con.execute(
                    f"SELECT {_EPOCH_COLUMNS} FROM epochs WHERE epoch = ?", [epoch]
                ).fetchall()
        return _settled(rows[0]) if rows else None

    def payouts(self, epoch: str | None = None, account: str | None = None) -> list[Payout]:
        sql = "SELECT epoch, account, amount FROM payouts WHERE true"
        args: list[Any] = []
        if epoch is not None:
            sql += " AND epoch = ?"
            args.append(epoch)
        if account is not None:
            sql += " AND account = ?"
            args.append(account)
        with self.reader(min_version=2) as con:
            rows = con.execute(sql + " ORDER BY epoch, amount DESC, account", args).fetchall()
        return [Payout(str(e), str(a), int(n)) for e, a, n in rows]


def _settled(row: Sequence[Any]) -> SettledEpoch:
    epoch, starts, ends, fees, paid, payouts, root, log_index = row
    return SettledEpoch(
        str(epoch), _naive(starts), _naive(ends), int(fees), int(paid), int(payouts), str(root),
        int(log_index),
    )


def _naive(value: Any) -> datetime:
    if not isinstance(value, datetime):
        raise StoreError(f"epoch window {value!r} is not a timestamp")
    return value.replace(tzinfo=None)


class _Reads:
    """The reads a settlement and a verify share, inside one connection (one moment)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con

    def settled(self, epoch: str) -> SettledEpoch | None:
        rows = self._con.execute(
            f"SELECT {_EPOCH_COLUMNS} FROM epochs WHERE epoch = ?", [epoch]
        ).fetchall()
        return _settled(rows[0]) if rows else None

    def payouts(self, epoch: str) -> list[Payout]:
        rows = self._con.execute(
            "SELECT account, amount FROM payouts WHERE epoch = ? ORDER BY account", [epoch]
        ).fetchall()
        return [Payout(epoch, str(a), int(n)) for a, n in rows]

    def inputs(self, epoch: str) -> EpochInputs:
        """DuckDB builds and sorts the event lines; hashlib reads them straight from Arrow's
        buffers, three times faster than `sha256(string_agg(…))`."""
        con = self._con
        fees = {
            str(m): int(f)
            for m, f in con.execute(
                "SELECT model, sum(fee) FROM usage_events WHERE epoch = ? GROUP BY model",
                [epoch],
            ).fetchall()
        }
        lines = con.sql(
            "SELECT event_id || '|' || model || '|' || caller || '|' || units || '|' || fee "
            "|| '|' || epoch_us(occurred_at) || chr(10) AS line "
            "FROM usage_events WHERE epoch = $epoch ORDER BY event_id",
            params={"epoch": epoch},
        ).to_arrow_table()
        return EpochInputs(fees, _joined_lines_digest(lines.column("line")), lines.num_rows)

    def envelopes(self, kinds: Sequence[str], before: int | None = None) -> list[LoggedEnvelope]:
        sql = "SELECT idx, envelope FROM log_entries WHERE list_contains(?, kind)"
        args: list[Any] = [list(kinds)]
        if before is not None:
            sql += " AND idx < ?"
            args.append(before)
        rows = self._con.execute(sql + " ORDER BY idx", args).fetchall()
        return [LoggedEnvelope(int(i), bytes(e)) for i, e in rows]

    def calls(self, epoch: str) -> pa.Table:
        table = self._con.sql(
            "SELECT event_id, model, fee, call_input, call_output FROM usage_events "
            "WHERE epoch = $epoch ORDER BY event_id",
            params={"epoch": epoch},
        ).to_arrow_table()
        return table.cast(CALLS_SCHEMA)


class _Unit(_Reads):
    """A settlement unit: the reads and writes of one epoch in the store's one transaction."""

    def __init__(self, store: DuckDBStore, con: duckdb.DuckDBPyConnection, epoch: str) -> None:
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
            f"INSERT INTO epochs ({_EPOCH_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [epoch, settled.starts_at, settled.ends_at, settled.fees_total, settled.paid_total,
             settled.payouts, settled.root, settled.log_index],
        )
        if ledger:
            con.register("new_ledger", pa.table({
                "epoch": [epoch] * len(ledger),
                "seq": pa.array(range(len(ledger)), pa.int32()),
                "debit": [p.debit for p in ledger],
                "credit": [p.credit for p in ledger],
                "amount": pa.array([p.amount for p in ledger], pa.int64()),
            }))
            con.execute("INSERT INTO ledger SELECT * FROM new_ledger")
            con.unregister("new_ledger")
        if payouts:
            con.register("new_payouts", pa.table({
                "epoch": [epoch] * len(payouts),
                "account": [p.account for p in payouts],
                "amount": pa.array([p.amount for p in payouts], pa.int64()),
            }))
            con.execute("INSERT INTO payouts SELECT * FROM new_payouts")
            con.unregister("new_payouts")
        if receipts is not None and receipts.num_rows:
            leaves = receipts.select(RECEIPTS_SCHEMA.names).cast(RECEIPTS_SCHEMA)
            # The leaf index as a column: an unordered row_number() may not follow row order.
            leaves = leaves.append_column("seq", pa.array(range(leaves.num_rows), pa.int32()))
            con.register("new_receipts", leaves)
            con.execute(
                "INSERT INTO call_receipts (epoch, seq, event_id, leaf_hash) "
                "SELECT ?, seq, event_id, leaf_hash FROM new_receipts",
                [epoch],
            )
            con.unregister("new_receipts")


class _View(_Reads):
    """A read-only view of one moment (one read-only connection)."""

    def settled_epochs(self) -> list[SettledEpoch]:
        rows = self._con.execute(f"SELECT {_EPOCH_COLUMNS} FROM epochs ORDER BY epoch").fetchall()
        return [_settled(r) for r in rows]

    def ledger(self, epoch: str) -> list[Posting]:
        rows = self._con.execute(
            "SELECT debit, credit, amount FROM ledger WHERE epoch = ? ORDER BY seq", [epoch]
        ).fetchall()
        return [Posting(str(d), str(c), int(n)) for d, c, n in rows]

    def envelope_at(self, index: int) -> bytes | None:
        rows = self._con.execute(
            "SELECT envelope FROM log_entries WHERE idx = ?", [index]
        ).fetchall()
        return bytes(rows[0][0]) if rows else None

    def account_epochs(self, account: str) -> list[SettledEpoch]:
        rows = self._con.execute(
            f"SELECT {', '.join('e.' + c for c in _EPOCH_COLUMNS.split(', '))} "
            "FROM payouts p JOIN epochs e USING (epoch) WHERE p.account = ? ORDER BY e.epoch",
            [account],
        ).fetchall()
        return [_settled(r) for r in rows]

    def strays(self) -> list[Stray]:
        con = self._con
        records = con.execute(
            "SELECT l.idx, l.partition FROM log_entries l "
            "LEFT JOIN epochs e ON e.log_index = l.idx WHERE l.kind = 'settlement' "
            "AND (e.epoch IS NULL OR e.epoch IS DISTINCT FROM l.partition) ORDER BY l.idx"
        ).fetchall()
        tables = {"payouts": "payouts", "ledger": "ledger"}
        if self._has_receipts():
            tables["receipts"] = "call_receipts"
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
        if not self._has_receipts():
            return RECEIPTS_SCHEMA.empty_table()
        return self._con.sql(
            "SELECT event_id, leaf_hash FROM call_receipts WHERE epoch = $epoch ORDER BY seq",
            params={"epoch": epoch},
        ).to_arrow_table().cast(RECEIPTS_SCHEMA)

    def receipt_epoch(self, event_id: str) -> str | None:
        if not self._has_receipts():
            return None
        rows = self._con.execute(
            "SELECT epoch FROM call_receipts WHERE event_id = ? ORDER BY epoch LIMIT 1",
            [event_id],
        ).fetchall()
        return str(rows[0][0]) if rows else None

    def _has_receipts(self) -> bool:
        """A read-only view of a store older than schema 6 has no receipts table yet."""
        return bool(self._con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'call_receipts'"
        ).fetchall()[0][0])
