"""Where the log and the ledger live: `open_store(url)` is the one place a store is built.

    store = open_store(settings.store_url, lock_timeout_s=settings.lock_timeout_s)
    store = open_store("postgresql://lineage@db.internal/lineage")   # the PostgreSQL driver

`duckdb:///abs/path.duckdb` or a bare path is a DuckDB file (one machine); `postgresql://` or
`postgres://` is a PostgreSQL database (several machines). Drivers are imported only when their
URL is opened, so DuckDB-only installs never import psycopg and the other way round. The
protocol and its values are in `stores.base`; a new driver is a module here and a line below.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from lineage_platform.errors import ConfigError
from lineage_platform.stores.base import (
    MAX_AMOUNT,
    MAX_EPOCH_FEES,
    MAX_SKEW_S,
    AppendResult,
    Entry,
    EntryColumns,
    EpochInputs,
    LedgerStore,
    LedgerView,
    LoggedEnvelope,
    LogStore,
    OpenEpoch,
    Payout,
    Posting,
    QuarantinedEvent,
    SettledEpoch,
    SettlementUnit,
    Store,
    StoredCheckpoint,
    Stray,
    UsageConflict,
    UsageIngest,
)

__all__ = [
    "MAX_AMOUNT",
    "MAX_EPOCH_FEES",
    "MAX_SKEW_S",
    "AppendResult",
    "Entry",
    "EntryColumns",
    "EpochInputs",
    "LedgerStore",
    "LedgerView",
    "LogStore",
    "LoggedEnvelope",
    "OpenEpoch",
    "Payout",
    "Posting",
    "QuarantinedEvent",
    "SettledEpoch",
    "SettlementUnit",
    "Store",
    "StoredCheckpoint",
    "Stray",
    "UsageConflict",
    "UsageIngest",
    "duckdb_url",
    "open_store",
]

LockWait = Callable[[float], None]


def duckdb_url(path: Path) -> str:
    """The URL of a DuckDB file (absolute)."""
    return f"duckdb://{Path(path).resolve()}"


def open_store(
    url: str | Path, lock_timeout_s: float = 30.0, on_lock_wait: LockWait | None = None
) -> Store:
    """The store at `url`; nothing is opened or created until the first call needs it.

    `lock_timeout_s`: how long a write waits for another writer before `StoreBusyError`;
    `on_lock_wait(seconds)` is told about each wait (the sensor reports them).
    """
    text = str(url)
    scheme = urlsplit(text).scheme.lower() if "://" in text else ""
    if scheme in ("postgresql", "postgres"):
        from lineage_platform.extras import require

        require("psycopg", extra="postgres")
        from lineage_platform.stores.postgres import PostgresStore

        return PostgresStore(text, lock_timeout_s=lock_timeout_s, on_lock_wait=on_lock_wait)
    if scheme in ("", "duckdb"):
        path = text if not scheme else unquote(text[len("duckdb://") :])
        if not path:
            raise ConfigError(f"store URL {text!r}: no file path (expected duckdb:///abs/path)")
        from lineage_platform.stores.duckdb import DuckDBStore

        return DuckDBStore(Path(path), lock_timeout_s=lock_timeout_s, on_lock_wait=on_lock_wait)
    raise ConfigError(
        f"store URL {text.split('@')[-1]!r}: unknown scheme {scheme!r} "
        "(expected duckdb:///path or postgresql://…)"
    )
