"""Usage events: validate in bulk (Arrow), reject bad amounts and unknown models, ingest once.

    table = read_events(Path("calls.parquet"))         # or .csv, .jsonl, .arrow
    inserted, replays = ingest(store, validate_events(table))

Amounts are integer minor units: a float, a negative, a null or anything past signed 64-bit is
refused with the column and row named, and nothing is stored (`ingest_files`: of any file).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lineage_platform.errors import UsageError, shown
from lineage_platform.stores import Store

REQUIRED = ("model", "caller", "units", "fee")
OPTIONAL = ("event_id", "occurred_at")
SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("model", pa.string()),
        ("caller", pa.string()),
        ("units", pa.int64()),
        ("fee", pa.int64()),
        ("occurred_at", pa.timestamp("us")),
    ]
)
INT64_MAX = 2**63 - 1
_CONTROL = r"[\x00-\x1f\x7f-\x9f]"  # C0, DEL and C1 control characters


def _first_row(mask: pa.Array) -> int:
    return int(pc.index(mask, True).as_py())


def _column_names(table: pa.Table) -> list[str]:
    try:
        return list(table.column_names)
    except UnicodeDecodeError:  # a file's header, read as bytes, that is not UTF-8
        raise UsageError("usage events: column names are not valid UTF-8") from None


def _strings(col: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    """Text as Arrow strings; numbers become their digits, anything else is refused."""
    if pa.types.is_string(col.type):
        return col
    try:
        return pc.cast(col, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        what = "invalid UTF-8" if pa.types.is_binary(col.type) else f"{col.type} values"
        raise UsageError(f"{name}: expected text, got {what}") from None


def _amount(table: pa.Table, name: str) -> pa.Array:
    col = table.column(name)
    if col.null_count:
        raise UsageError(f"{name}: row {_first_row(col.is_null())} is empty")
    if pa.types.is_floating(col.type) and len(col) and pc.max(col).as_py() >= 2.0**63:
        # CSV and JSON readers fall back to float64 for integers beyond 64 bits.
        raise UsageError(f"{name}: row {_first_row(pc.greater_equal(col, 2.0**63))} exceeds 2^63-1")
    if pa.types.is_floating(col.type) or pa.types.is_decimal(col.type):
        raise UsageError(f"{name}: {col.type} values are refused; amounts are integer minor units")
    if not pa.types.is_integer(col.type):
        raise UsageError(f"{name}: expected integers, got {col.type} (too large for 64 bits?)")
    if len(col) and pc.min(col).as_py() < 0:
        raise UsageError(f"{name}: row {_first_row(pc.less(col, 0))} is negative")
    if pa.types.is_uint64(col.type) and len(col) and pc.max(col).as_py() > INT64_MAX:
        over = pc.greater(col, pa.scalar(INT64_MAX, pa.uint64()))
        raise UsageError(f"{name}: row {_first_row(over)} exceeds 2^63-1")
    return pc.cast(col, pa.int64()).combine_chunks()


def _text(table: pa.Table, name: str) -> pa.Array:
    col = _strings(table.column(name), name)
    if col.null_count:
        raise UsageError(f"{name}: row {_first_row(col.is_null())} is empty")
    bad = pc.or_(pc.equal(pc.utf8_length(col), 0), pc.match_substring_regex(col, _CONTROL))
    if len(col) and pc.any(bad).as_py():
        raise UsageError(f"{name}: row {_first_row(bad)} is empty or has control characters")
    return pc.cast(col, pa.string()).combine_chunks()


def validate_events(table: pa.Table, now: datetime | None = None) -> pa.Table:
    """The canonical usage table, or a `UsageError` naming the first bad column and row."""
    names = set(_column_names(table))
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise UsageError(f"usage events: missing column(s) {', '.join(missing)}")
    unknown = sorted(names - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise UsageError(f"usage events: unknown column(s) {', '.join(map(shown, unknown))}")
    n = table.num_rows
    if "event_id" in names:
        ids = _strings(table.column("event_id"), "event_id")
        bad = pc.match_substring_regex(ids, _CONTROL)
        if n and pc.any(bad).as_py():
            raise UsageError(f"event_id: row {_first_row(bad)} has control characters")
        # An empty CSV cell means "no id", as null does; as a key, "" would make every such
        # event a replay of the first.
        empty = pc.equal(pc.utf8_length(ids), 0)
        event_id = pc.if_else(empty, pa.scalar(None, pa.string()), ids).combine_chunks()
    else:
        event_id = pa.nulls(n, pa.string())
    if "occurred_at" in names:
        col = table.column("occurred_at")
        try:
            if not pa.types.is_timestamp(col.type):
                col = pc.cast(pc.cast(col, pa.string()), pa.timestamp("us"))
            # Stored naive in UTC: a zoned value is converted through its UTC instant.
            col = col.cast(pa.timestamp("us", tz=col.type.tz))
            col = col.cast(pa.int64()).cast(pa.timestamp("us"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UsageError(f"occurred_at: not a timestamp ({shown(first, 200)})") from exc
        if col.null_count:
            raise UsageError(f"occurred_at: row {_first_row(col.is_null())} is empty")
        occurred = col.combine_chunks()
    else:
        stamp = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
        occurred = pa.array([stamp] * n, pa.timestamp("us"))
    return pa.table(
        [
            event_id,
            _text(table, "model"),
            _text(table, "caller"),
            _amount(table, "units"),
            _amount(table, "fee"),
            occurred,
        ],
        schema=SCHEMA,
    )


def _checked(table: pa.Table) -> pa.Table:
    """Parquet and Arrow IPC buffers come from the file as they are: check every offset, length
    and UTF-8 string before a kernel reads them (a damaged file could otherwise crash the
    process, not just fail)."""
    table.validate(full=True)
    return table


def read_events(path: Path) -> pa.Table:
    """Parquet, CSV, JSON lines or Arrow IPC, chosen by the file suffix."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return _checked(pq.read_table(path))
        if suffix == ".csv":
            import pyarrow.csv as pcsv

            return pcsv.read_csv(path)
        if suffix in (".jsonl", ".json", ".ndjson"):
            import pyarrow.json as pjson

            return pjson.read_json(path)
        if suffix in (".arrow", ".feather", ".ipc"):
            import pyarrow.feather as feather

            return _checked(feather.read_table(path))
    except FileNotFoundError as exc:
        raise UsageError(f"{path}: no such file") from exc
    except (pa.ArrowException, OSError) as exc:  # a damaged file: any of Arrow's errors
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"{path}: unreadable ({shown(first, 200)})") from exc
    raise UsageError(f"{path}: unknown format {suffix!r} (use .parquet, .csv, .jsonl or .arrow)")


def parse_amount(text: str, name: str) -> int:
    """Command-line amounts: digits only, so "1.5", "-3" and "1e3" are refused, not rounded."""
    if not text.isdigit() or not text.isascii():
        raise UsageError(f"{name}: {text!r} is not a non-negative integer (minor units)")
    value = int(text)
    if value > INT64_MAX:
        raise UsageError(f"{name}: {text} exceeds 2^63-1")
    return value


def one_event(
    model: str, caller: str, units: int, fee: int, event_id: str | None, when: datetime
) -> pa.Table:
    row: dict[str, list[Any]] = {
        "event_id": [event_id], "model": [model], "caller": [caller], "units": [units],
        "fee": [fee], "occurred_at": [when.astimezone(UTC).replace(tzinfo=None)],
    }
    return pa.table(row, schema=SCHEMA)


def ingest(store: Store, events: pa.Table) -> tuple[int, int]:
    """All or nothing: every model must have a signed model record in the log."""
    known = store.known_models()
    models = pc.unique(events.column("model")).to_pylist()
    unknown = sorted(set(models) - known)
    if unknown:
        names = ", ".join(map(shown, unknown[:3])) + (" …" if len(unknown) > 3 else "")
        raise UsageError(f"unknown model(s): {names} (no signed model record in the log)")
    return store.ingest_usage(events)


def ingest_files(store: Store, paths: Iterable[Path]) -> tuple[int, int]:
    """All files or none: every file is read and validated before one transaction stores them.

    A file needs an `event_id` or an `occurred_at` column: without either, replaying it could
    not be told from new calls made now.
    """
    tables = []
    for path in paths:
        try:
            table = read_events(path)
            if not {"event_id", "occurred_at"} & set(_column_names(table)):
                raise UsageError(
                    "needs an event_id or occurred_at column (else a replay counts twice)"
                )
            tables.append(validate_events(table))
        except UsageError as exc:
            message = str(exc)
            named = message if message.startswith(f"{path}:") else f"{path}: {message}"
            raise UsageError(named) from exc
    if not tables:
        return 0, 0
    return ingest(store, pa.concat_tables(tables))
