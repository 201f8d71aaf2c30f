"""The one place tests reach under the store protocol, into the DuckDB driver's file.

    rows(world.store, "SELECT count(*) FROM ledger")      # inspect what the driver stored
    tamper(world.store, "UPDATE usage_events SET fee = 1") # edit it behind the platform's back

For tamper and fault tests (an attacker with file access, a crash half-way) and for comparing a
DuckDB file byte for byte before and after a failed command. Everything about the protocol
itself belongs in tests/contract/, which runs against every driver without SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb

from lineage_platform.stores import Store
from lineage_platform.stores.duckdb import DuckDBStore

SETTLEMENT_TABLES = ("usage_events", "ledger", "payouts")


def db_path(store: Store | Path) -> Path:
    if isinstance(store, Path):
        return store
    if not isinstance(store, DuckDBStore):
        raise TypeError(f"{store!r}: driver-level access is for the DuckDB driver only")
    return store.path


def rows(store: Store | Path, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
    """A read-only query on the DuckDB file behind `store`."""
    with duckdb.connect(str(db_path(store)), read_only=True) as con:
        return [tuple(r) for r in con.execute(sql, list(params)).fetchall()]


def tamper(
    store: Store | Path, sql: str, params: Sequence[object] = ()
) -> list[tuple[object, ...]]:
    """Edit the file behind the platform's back, as an attacker with file access would."""
    with duckdb.connect(str(db_path(store))) as con:
        return [tuple(r) for r in con.execute(sql, list(params)).fetchall()]


def count(store: Store | Path, table: str) -> int:
    return int(rows(store, f"SELECT count(*) FROM {table}")[0][0])  # type: ignore[call-overload]


def dump(store: Store | Path, tables: tuple[str, ...] = SETTLEMENT_TABLES) -> str:
    """Every row of the settlement tables, in key order, as text (for byte-for-byte compares)."""
    order = {
        "usage_events": "event_id",
        "ledger": "epoch, seq",
        "payouts": "epoch, account",
        "epochs": "epoch",
    }
    cols = {"usage_events": "* EXCLUDE (ingested_at)", "epochs": "* EXCLUDE (settled_at)"}
    parts = []
    for t in tables:
        found = rows(store, f"SELECT {cols.get(t, '*')} FROM {t} ORDER BY {order[t]}")
        parts.append(f"-- {t}\n" + "\n".join(repr(r) for r in found))
    return "\n".join(parts)
