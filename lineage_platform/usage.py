"""Usage events: validate in bulk (Arrow), refuse what could break settlement, ingest once.

    table = read_events(Path("calls.parquet"))         # or .csv, .jsonl, .arrow
    inserted, replays = ingest(store, validate_events(table))
    batch = ingest_batch(store, [Path("calls.csv")], strict=False)  # refusals per row

Amounts are integer minor units: a float, a negative, a null or anything past signed 64-bit is
refused with the column and row named. Bounds (issue 15), so that no event can block settlement:
- `fee` and `units` are at most `MAX_AMOUNT` (10^15) per event, and an ingest that would take an
  epoch's fees past 2^63-1 is refused whole by the store: every sum a settlement stores fits the
  64-bit integers of the ledger (we bound the inputs rather than widen the ledger to 128 bits);
- `occurred_at` lies in [the log's first record - `GRACE` (31 days), now + `MAX_SKEW_S` (5 min)]
  and never before 1970, so every epoch id is a real `YYYY-MM-DD` date;
- `model` and `caller` follow `lineage_platform.identifiers` (NFC; no hidden or bidi characters,
  no mixed-script look-alikes).
`validate_events` and `ingest` refuse a whole batch on the first bad row (the API, `--strict`);
`ingest_batch(strict=False)` stores the good rows and names each refused one (`Refusal`).
A malformed file (unreadable, a missing, unknown or duplicated column, a float amount column)
is always refused whole.

Issue 18, per-call attribution: an event may carry the call's `input` (a list of numbers; in
CSV, JSON text such as `[0.5, 1]`; or `input_ref`, `<file>#<row>` naming a row of a batch file
beside the events file: `.npy` or a Parquet file of numeric columns) and the label the model
`output` (served). An input must be finite, at most `MAX_INPUT_DIM` numbers long and as long as
every other stored input of its model; a call with an input needs its output. Inputs are stored
as little-endian float64 bytes (`call_input`), outputs as text (`call_output`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lineage_platform.errors import UsageError, shown
from lineage_platform.identifiers import arrow_nfc, arrow_problems
from lineage_platform.stores import MAX_AMOUNT, MAX_SKEW_S, Store, UsageIngest
from lineage_platform.stores.base import USAGE_SCHEMA

REQUIRED = ("model", "caller", "units", "fee")
OPTIONAL = ("event_id", "occurred_at", "input", "input_ref", "output")
SCHEMA = USAGE_SCHEMA
#: The longest call input taken (numbers): bounds what one event can make settlement read.
MAX_INPUT_DIM = 4096
#: The longest served label taken (characters).
MAX_OUTPUT_LEN = 256
INT64_MAX = 2**63 - 1
EARLIEST = datetime(1970, 1, 1)  # naive UTC, as stored
GRACE = timedelta(days=31)
SKEW = timedelta(seconds=MAX_SKEW_S)
LISTED = 1000  # refusals named one by one; the rest are counted
_CONTROL = r"[\x00-\x1f\x7f-\x9f]"  # C0, DEL and C1 control characters


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refused row: `<source>: <column>: row <n> <why>` (row counted from 0 in its file)."""

    row: int
    reason: str
    source: str = ""

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}" if self.source else self.reason


@dataclass(frozen=True, slots=True)
class Screened:
    """The canonical table of the rows that pass, and why the others did not."""

    events: pa.Table
    refusals: tuple[Refusal, ...]  # the first `LISTED`, in row order
    refused: int  # how many rows were refused in all


@dataclass(frozen=True, slots=True)
class Batch:
    """What one `ingest_batch` stored and refused."""

    ingested: UsageIngest
    refusals: tuple[Refusal, ...]
    refused: int


# A row check: (mask of failing rows, "column: row {i} <why>" for a failing row index).
Check = tuple[pa.Array, Callable[[int], str]]


def _first_row(mask: pa.Array) -> int:
    return int(pc.index(mask, True).as_py())


def _column_names(table: pa.Table) -> list[str]:
    try:
        names = list(table.column_names)
    except UnicodeDecodeError:  # a file's header, read as bytes, that is not UTF-8
        raise UsageError("usage events: column names are not valid UTF-8") from None
    twice = sorted(n for n, k in Counter(names).items() if k > 1)
    if twice:
        raise UsageError(f"usage events: column(s) {', '.join(map(shown, twice))} appear twice")
    return names


def _strings(col: pa.ChunkedArray, name: str) -> pa.Array:
    """Text as Arrow strings; numbers become their digits, anything else is refused."""
    if not pa.types.is_string(col.type):
        try:
            col = pc.cast(col, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            what = "invalid UTF-8" if pa.types.is_binary(col.type) else f"{col.type} values"
            raise UsageError(f"{name}: expected text, got {what}") from None
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _mask(values: pa.Array) -> pa.Array:
    return pc.fill_null(values, False)


def _amount(table: pa.Table, name: str) -> tuple[pa.Array, list[Check]]:
    """The column as it is (converted once the bad rows are gone) and its row checks."""
    col = table.column(name).combine_chunks()
    if pa.types.is_floating(col.type) and len(col) and (pc.max(col).as_py() or 0.0) >= 2.0**63:
        # CSV and JSON readers fall back to float64 for integers beyond 64 bits.
        raise UsageError(f"{name}: row {_first_row(_mask(pc.greater_equal(col, 2.0**63)))} "
                         "exceeds 2^63-1")
    if pa.types.is_floating(col.type) or pa.types.is_decimal(col.type):
        raise UsageError(f"{name}: {col.type} values are refused; amounts are integer minor units")
    if not pa.types.is_integer(col.type) and not pa.types.is_null(col.type):
        raise UsageError(f"{name}: expected integers, got {col.type} (too large for 64 bits?)")
    checks: list[Check] = [(col.is_null(), lambda i: f"{name}: row {i} is empty")]
    if pa.types.is_null(col.type):
        return col, checks
    if pa.types.is_signed_integer(col.type):
        checks.append((_mask(pc.less(col, 0)), lambda i: f"{name}: row {i} is negative"))
    if pa.types.is_uint64(col.type):
        over = _mask(pc.greater(col, pa.scalar(INT64_MAX, pa.uint64())))
        checks.append((over, lambda i: f"{name}: row {i} exceeds 2^63-1"))
    big = _mask(pc.greater(col, pa.scalar(MAX_AMOUNT, pa.uint64() if pa.types.is_unsigned_integer(
        col.type) else pa.int64())))
    checks.append((big, lambda i: f"{name}: row {i} exceeds 10^15 (the bound per event)"))
    return col, checks


def _text(table: pa.Table, name: str, identifier: bool) -> tuple[pa.Array, list[Check]]:
    """The column (in NFC for identifiers) and its row checks. One regex pass decides whether
    any value has more than printable ASCII; only then do the finer checks run."""
    col = _strings(table.column(name), name)
    checks: list[Check] = [
        (col.is_null(), lambda i: f"{name}: row {i} is empty"),
        (_mask(pc.equal(pc.utf8_length(col), 0)), lambda i: f"{name}: row {i} is empty"),
    ]
    if not len(col) or not pc.any(_mask(pc.match_substring_regex(col, r"[^\x20-\x7e]"))).as_py():
        return col, checks
    control = _mask(pc.match_substring_regex(col, _CONTROL))
    checks.append((control, lambda i: f"{name}: row {i} is empty or has control characters"))
    if identifier:
        mask, reasons = arrow_problems(pc.fill_null(col, ""))
        if reasons:
            values = col

            def why(i: int) -> str:
                value = values[i].as_py()
                return f"{name}: row {i} {ascii(value)[:60]} {reasons.get(value, 'is refused')}"

            checks.append((_mask(mask), why))
        col = arrow_nfc(col)
    return col, checks


def _occurred(
    table: pa.Table, names: set[str], now: datetime, earliest: datetime
) -> tuple[pa.Array, list[Check]]:
    n = table.num_rows
    stamp = now.astimezone(UTC).replace(tzinfo=None)
    if "occurred_at" not in names:
        return pa.array([stamp] * n, pa.timestamp("us")), []
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
    col = col.combine_chunks()
    latest = stamp + SKEW
    early = pa.scalar(earliest, pa.timestamp("us"))
    late = pa.scalar(latest, pa.timestamp("us"))
    return col, [
        (col.is_null(), lambda i: f"occurred_at: row {i} is empty"),
        (_mask(pc.less(col, early)),
         lambda i: f"occurred_at: row {i} is before {earliest:%Y-%m-%d %H:%M} (the earliest "
                   "allowed: the log's first record - 31 days, never before 1970)"),
        (_mask(pc.greater(col, late)),
         lambda i: f"occurred_at: row {i} is after {latest:%Y-%m-%d %H:%M:%S} UTC (now + 5 min)"),
    ]


_FLOATS = pa.list_(pa.float64())


def _parsed_json(col: pa.Array) -> tuple[pa.Array, pa.Array]:
    """CSV inputs: JSON text per row, to a list of floats; the mask marks text that is not a
    JSON list of numbers (such a row becomes null)."""
    lists: list[list[float] | None] = []
    bad: list[bool] = []
    for text in col.to_pylist():
        if text is None or text == "":
            lists.append(None)
            bad.append(False)
            continue
        try:
            value = json.loads(text)
            ok = isinstance(value, list) and all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        except (ValueError, RecursionError):
            ok = False
        lists.append([float(v) for v in value] if ok else None)
        bad.append(not ok)
    return pa.array(lists, _FLOATS), pa.array(bad, pa.bool_())


def _referenced(refs: pa.Array, base: Path | None) -> tuple[pa.Array, pa.Array, dict[int, str]]:
    """`input_ref` (`<file>#<row>`, the file beside the events file) to lists of floats; the
    mask and reasons name rows whose reference cannot be read."""
    import numpy as np

    lists: list[list[float] | None] = []
    bad: dict[int, str] = {}
    loaded: dict[str, Any] = {}
    root = (base or Path.cwd()).resolve()
    for i, ref in enumerate(refs.to_pylist()):
        if ref is None or ref == "":
            lists.append(None)
            continue
        name, _, row = str(ref).rpartition("#")
        path = (root / name).resolve()
        if not name or not row.isdigit() or not path.is_relative_to(root):
            bad[i] = f"input_ref: row {i} {shown(str(ref))} is not <file beside it>#<row>"
            lists.append(None)
            continue
        if name not in loaded:
            try:
                if path.suffix == ".npy":
                    loaded[name] = np.load(path, allow_pickle=False)
                else:
                    import pyarrow.parquet as pq

                    frame = _checked(pq.read_table(path))
                    loaded[name] = np.column_stack(
                        [frame.column(c).to_numpy().astype(np.float64)
                         for c in frame.column_names])
            except (OSError, ValueError, TypeError, pa.ArrowException) as exc:
                first = (str(exc).splitlines() or [type(exc).__name__])[0]
                loaded[name] = f"cannot be read ({shown(first, 80)})"
        batch = loaded[name]
        if isinstance(batch, str) or batch.ndim != 2 or batch.dtype.kind not in "biuf":
            why = batch if isinstance(batch, str) else "is not a 2-d numeric batch"
            bad[i] = f"input_ref: row {i} {shown(name)} {why}"
            lists.append(None)
        elif int(row) >= batch.shape[0]:
            bad[i] = f"input_ref: row {i} {shown(name)} has no row {row}"
            lists.append(None)
        else:
            lists.append(batch[int(row)].astype(np.float64).tolist())
    mask = pa.array([i in bad for i in range(len(refs))], pa.bool_())
    return pa.array(lists, _FLOATS), mask, bad


def _call_columns(
    table: pa.Table,
    names: set[str],
    model: pa.Array,
    dimensions: Mapping[str, int],
    base: Path | None,
) -> tuple[pa.Array, pa.Array, list[Check]]:
    """The input (list of floats, null without one) and served output (text) columns, checked:
    finite, 1..MAX_INPUT_DIM numbers, one length per model (`dimensions`: the stored one), and
    an output wherever there is an input."""
    n = table.num_rows
    checks: list[Check] = []
    if "input" in names and "input_ref" in names:
        raise UsageError("usage events: give input or input_ref, not both")
    if "input" in names:
        col = table.column("input").combine_chunks()
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            inputs, bad = _parsed_json(col)
            checks.append((bad, lambda i: f"input: row {i} is not a JSON list of numbers"))
        elif pa.types.is_null(col.type):
            inputs = pa.nulls(n, _FLOATS)
        else:
            try:
                inputs = pc.cast(col, _FLOATS)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise UsageError(f"input: expected lists of numbers, got {col.type}") from None
    elif "input_ref" in names:
        inputs, bad, reasons = _referenced(_strings(table.column("input_ref"), "input_ref"), base)
        checks.append((bad, lambda i: reasons.get(i, f"input_ref: row {i} is refused")))
    else:
        inputs = pa.nulls(n, _FLOATS)
    if isinstance(inputs, pa.ChunkedArray):
        inputs = inputs.combine_chunks()
    lengths = pc.list_value_length(inputs)
    checks.append((_mask(pc.or_(pc.equal(lengths, 0), pc.greater(lengths, MAX_INPUT_DIM))),
                   lambda i: f"input: row {i} must have 1 to {MAX_INPUT_DIM} numbers"))
    if n and inputs.null_count < n:
        values = pc.list_flatten(inputs)
        wrong = pc.invert(_mask(pc.is_finite(values)))
        parents = pc.filter(pc.list_parent_indices(inputs), wrong)
        rows = pc.is_in(pa.array(range(n), pa.int64()),
                        value_set=pc.cast(parents, pa.int64()))
        checks.append((rows, lambda i: f"input: row {i} has a number that is not finite"))
        # Each model's length: the stored one, else its first input in this batch (in bulk).
        given = pa.table({"m": model, "n": pc.cast(lengths, pa.int64())}).filter(
            _mask(pc.and_(pc.is_valid(model), pc.greater(lengths, 0))))
        firsts = given.group_by("m", use_threads=False).aggregate([("n", "first")])
        known = dict(zip(firsts["m"].to_pylist(), firsts["n_first"].to_pylist(), strict=True))
        known.update(dimensions)
        keys = pa.array(list(known), pa.string())
        expected = pc.take(pa.array(list(known.values()), pa.int64()),
                           pc.index_in(model, value_set=keys))
        other = _mask(pc.not_equal(pc.cast(lengths, pa.int64()), expected))
        checks.append((other, lambda i: f"input: row {i} has {lengths[i].as_py()} numbers, its "
                                        f"model's inputs {expected[i].as_py()}"))
    if "output" in names:
        output = _strings(table.column("output"), "output")
        checks.append((_mask(pc.match_substring_regex(output, _CONTROL)),
                       lambda i: f"output: row {i} has control characters"))
        checks.append((_mask(pc.greater(pc.utf8_length(output), MAX_OUTPUT_LEN)),
                       lambda i: f"output: row {i} is longer than {MAX_OUTPUT_LEN} characters"))
        output = pc.if_else(_mask(pc.equal(pc.utf8_length(output), 0)),
                            pa.scalar(None, pa.string()), output)
    else:
        output = pa.nulls(n, pa.string())
    checks.append((pc.and_(inputs.is_valid(), output.is_null()),
                   lambda i: f"output: row {i} is empty (a call with an input needs the label "
                             "it was served)"))
    return inputs, output, checks


def _input_bytes(inputs: pa.Array) -> pa.Array:
    """Lists of floats as little-endian float64 bytes (-0.0 stored as 0.0), nulls kept."""
    import numpy as np

    if isinstance(inputs, pa.ChunkedArray):
        inputs = inputs.combine_chunks()
    if not len(inputs) or inputs.null_count == len(inputs):
        return pa.nulls(len(inputs), pa.binary())
    values = np.asarray(pc.list_flatten(inputs).to_numpy(zero_copy_only=False), dtype="<f8")
    data = pa.py_buffer((values + 0.0).tobytes())
    lengths = pc.fill_null(pc.list_value_length(inputs), 0).to_numpy().astype(np.int64)
    offsets = np.zeros(len(inputs) + 1, dtype=np.int64)
    np.cumsum(lengths * 8, out=offsets[1:])
    return pa.Array.from_buffers(
        pa.large_binary(), len(inputs),
        [inputs.is_valid().buffers()[1] if inputs.null_count else None,
         pa.py_buffer(offsets.tobytes()), data],
    ).cast(pa.binary())


def screen_events(
    table: pa.Table,
    now: datetime | None = None,
    earliest: datetime | None = None,
    models: set[str] | None = None,
    dimensions: Mapping[str, int] | None = None,
    base: Path | None = None,
) -> Screened:
    """The rows that pass every bound, as the canonical table, and why each other row failed.

    `earliest`: the oldest time allowed (naive UTC; default 1970); `models`: when given, a row
    naming any other model is refused too; `dimensions`: each model's stored input length;
    `base`: where `input_ref` files are. A malformed table raises `UsageError` instead.
    """
    names = set(_column_names(table))
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise UsageError(f"usage events: missing column(s) {', '.join(missing)}")
    unknown = sorted(names - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise UsageError(f"usage events: unknown column(s) {', '.join(map(shown, unknown))}")
    n = table.num_rows
    clock = now or datetime.now(UTC)
    floor = max(earliest or EARLIEST, EARLIEST)
    checks: list[Check] = []
    if "event_id" in names:
        ids = _strings(table.column("event_id"), "event_id")
        bad = _mask(pc.match_substring_regex(ids, _CONTROL))
        checks.append((bad, lambda i: f"event_id: row {i} has control characters"))
        # An empty CSV cell means "no id", as null does; as a key, "" would make every such
        # event a replay of the first.
        empty = pc.equal(pc.utf8_length(ids), 0)
        event_id = pc.if_else(empty, pa.scalar(None, pa.string()), ids)
    else:
        event_id = pa.nulls(n, pa.string())
    occurred, more = _occurred(table, names, clock, floor)
    checks += more
    model, more = _text(table, "model", identifier=True)
    checks += more
    if models is not None and n:
        known = pa.array(sorted(models), pa.string())
        stranger = pc.invert(_mask(pc.is_in(model, value_set=known)))
        checks.append(
            (stranger, lambda i: f"model: row {i} {shown(str(model[i].as_py()))} has no "
                                 "signed model record in the log")
        )
    caller, more = _text(table, "caller", identifier=True)
    checks += more
    units, more = _amount(table, "units")
    checks += more
    fee, more = _amount(table, "fee")
    checks += more
    inputs, output, more = _call_columns(table, names, model, dimensions or {}, base)
    checks += more
    refused_mask: pa.Array | None = None
    for mask, _ in checks:
        refused_mask = mask if refused_mask is None else pc.or_(refused_mask, mask)
    refusals: list[Refusal] = []
    refused = 0
    columns: list[pa.Array] = [event_id, model, caller, units, fee, occurred, inputs, output]
    if n and refused_mask is not None and pc.any(refused_mask).as_py():
        rows = pc.indices_nonzero(refused_mask)
        refused = len(rows)
        for i in rows.slice(0, LISTED).to_pylist():
            reason = next(why(i) for mask, why in checks if mask[i].as_py())
            refusals.append(Refusal(i, reason))
        keep = pc.invert(refused_mask)
        columns = [pc.filter(c, keep) for c in columns]
    event_id, model, caller, units, fee, occurred, inputs, output = columns
    return Screened(
        pa.table(
            [
                event_id,
                pc.cast(model, pa.string()),
                pc.cast(caller, pa.string()),
                pc.cast(units, pa.int64()),
                pc.cast(fee, pa.int64()),
                occurred,
                _input_bytes(inputs),
                output,
            ],
            schema=SCHEMA,
        ),
        tuple(refusals),
        refused,
    )


def _refused(screened: Screened) -> UsageError:
    first = screened.refusals[0]
    more = screened.refused - 1
    return UsageError(str(first) + (f" (and {more} more row(s) refused)" if more else ""))


def validate_events(
    table: pa.Table, now: datetime | None = None, earliest: datetime | None = None
) -> pa.Table:
    """The canonical usage table, or a `UsageError` naming the first bad row (and the count)."""
    screened = screen_events(table, now, earliest)
    if screened.refused:
        raise _refused(screened)
    return screened.events


def earliest_allowed(store: Store) -> datetime:
    """The oldest `occurred_at` the store takes: its log's first record - `GRACE` (naive UTC)."""
    if not store.exists() or not store.tree_size():
        return EARLIEST
    first = store.entries(0, 1).column("recorded_at")[0].as_py()
    try:
        when = datetime.fromisoformat(str(first).replace("Z", "+00:00"))
    except ValueError:
        return EARLIEST
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return max(when - GRACE, EARLIEST)


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
    except UnicodeDecodeError:  # a damaged file whose column names are not UTF-8
        raise UsageError(f"{path}: unreadable (column names are not valid UTF-8)") from None
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
    return pa.table(row, schema=pa.schema([SCHEMA.field(name) for name in row]))


def stored_dimensions(store: Store) -> dict[str, int]:
    """Each model's input length (numbers) among its stored calls, where they agree."""
    return {m: lo // 8 for m, (lo, hi) in store.input_dimensions().items() if lo == hi}


def _dimensions_of(events: pa.Table) -> dict[str, set[int]]:
    """Input lengths (numbers) per model in a canonical table."""
    if "call_input" not in events.column_names:
        return {}
    lengths = pc.binary_length(events.column("call_input"))
    pairs = pa.table({"m": events.column("model"), "n": lengths}).filter(pc.is_valid(lengths))
    found: dict[str, set[int]] = {}
    distinct = pairs.group_by(["m", "n"]).aggregate([])
    for m, n in zip(distinct["m"].to_pylist(), distinct["n"].to_pylist(), strict=True):
        found.setdefault(m, set()).add(n // 8)
    return found


def ingest(store: Store, events: pa.Table) -> UsageIngest:
    """All or nothing: every model must have a signed model record in the log, and no event may
    be older than `earliest_allowed(store)`. Returns (inserted, dropped) with `.conflicts`."""
    known = store.known_models()
    models = pc.unique(events.column("model")).to_pylist()
    unknown = sorted(set(models) - known)
    if unknown:
        names = ", ".join(map(shown, unknown[:3])) + (" …" if len(unknown) > 3 else "")
        raise UsageError(f"unknown model(s): {names} (no signed model record in the log)")
    batch = _dimensions_of(events)
    stored = stored_dimensions(store) if batch else {}
    for m, found in sorted(batch.items()):
        wanted = found | ({stored[m]} if m in stored else set())
        if len(wanted) > 1:
            raise UsageError(f"input: model {shown(m)} gets inputs of {sorted(wanted)} numbers; "
                             "each model takes one length")
    if events.num_rows:
        floor = earliest_allowed(store)
        early = _mask(pc.less(events.column("occurred_at"), pa.scalar(floor, pa.timestamp("us"))))
        if pc.any(early).as_py():
            raise UsageError(
                f"occurred_at: row {_first_row(early)} is before {floor:%Y-%m-%d %H:%M} (the "
                "earliest allowed: the log's first record - 31 days)"
            )
    return store.ingest_usage(events)


def _read_checked(path: Path) -> pa.Table:
    table = read_events(path)
    if not {"event_id", "occurred_at"} & set(_column_names(table)):
        raise UsageError("needs an event_id or occurred_at column (else a replay counts twice)")
    return table


def _named(path: Path, exc: UsageError) -> UsageError:
    message = str(exc)
    return UsageError(message if message.startswith(f"{path}:") else f"{path}: {message}")


def ingest_batch(
    store: Store, paths: Sequence[Path], strict: bool = True, now: datetime | None = None
) -> Batch:
    """Read and screen every file, then store what passed in one transaction.

    `strict`: any refused row refuses the whole batch (`UsageError` naming the first); else the
    good rows are stored and each refused row is named. A malformed file always refuses all.
    A file needs an `event_id` or an `occurred_at` column: without either, replaying it could
    not be told from new calls made now.
    """
    floor = earliest_allowed(store)
    known = store.known_models()
    dimensions = stored_dimensions(store)
    tables: list[pa.Table] = []
    refusals: list[Refusal] = []
    refused = 0
    for path in paths:
        try:
            screened = screen_events(_read_checked(path), now, floor, known, dimensions,
                                     path.parent)
            for m, found in _dimensions_of(screened.events).items():
                dimensions.setdefault(m, min(found))
        except UsageError as exc:
            raise _named(path, exc) from exc
        if screened.refused and strict:
            raise _named(path, _refused(screened))
        refused += screened.refused
        room = max(LISTED - len(refusals), 0)
        refusals += [Refusal(r.row, r.reason, str(path)) for r in screened.refusals[:room]]
        tables.append(screened.events)
    if not tables:
        return Batch(UsageIngest(0, 0), (), 0)
    return Batch(ingest(store, pa.concat_tables(tables)), tuple(refusals), refused)


def ingest_files(store: Store, paths: Iterable[Path]) -> UsageIngest:
    """All files or none: every file is read and validated before one transaction stores them."""
    return ingest_batch(store, list(paths), strict=True).ingested
