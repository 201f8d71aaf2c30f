"""Attribution records: the in-toto Statement v1 the log signs, as frozen, validated values.

    rec = AttributionRecord(Kind.DATASET, "datanet", sha256=digest, recorded_at=utc_timestamp())
    assert AttributionRecord.from_bytes(rec.to_bytes()) == rec  # canonical bytes, strict parse

A record is validated when it is built, so an invalid one cannot exist; parsing is strict (unknown,
missing or duplicate keys, wrong types, non-canonical bytes are all refused) because the bytes are
what gets signed and hashed, and a lenient parser would let two byte strings mean one record.
Every error is a RecordError whose message starts with the JSON path of the offending field.

One schema: each value class has one ordered field table (`Field`s, in the class's field order),
and everything else is built from those tables once, at import: the checks the classes run on
construction, the canonical writer (`to_bytes`), the strict parser (`from_statement`) and the
fast paths (`from_bytes`' canonical gate, and `scan_payload`, which verify runs per record). A new
field is one `Field` line (and its attribute); a new record kind is one `Kind` member.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

import orjson

from lineage_platform.canonical import (
    MAX_SAFE_INT,
    canonical_json,
    es6_number,
    json_string,
    loads_strict,
)
from lineage_platform.errors import RecordError, shown
from lineage_platform.identifiers import is_nfc
from lineage_platform.identifiers import problem as id_problem

__all__ = [
    "KINDS",
    "LAST_YEAR",
    "MAX_RECORD_BYTES",
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "PREDICATE_TYPE_V1",
    "RECORD_FIELDS",
    "RECORD_FIELDS_V1",
    "STATEMENT_TYPE",
    "STORED_FACTS",
    "AttributionRecord",
    "Contributor",
    "DvcRef",
    "InputRef",
    "Kind",
    "MlflowRef",
    "RecordFacts",
    "RunRef",
    "SettlementDetails",
    "ValuationDetails",
    "canonical_json",
    "details_json",
    "idempotency_key",
    "scan_canonical",
    "scan_payload",
    "utc_timestamp",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
#: What new records are written as: v2 names a generic run reference (`run`).
PREDICATE_TYPE = "urn:lineage-platform:attribution:v2"
#: Records written before v2 name a Dagster event (`dagster`); they still parse and verify.
PREDICATE_TYPE_V1 = "urn:lineage-platform:attribution:v1"
_VERSIONS = {PREDICATE_TYPE_V1: 1, PREDICATE_TYPE: 2}
_PREDICATE_TYPES = {1: PREDICATE_TYPE_V1, 2: PREDICATE_TYPE}
PAYLOAD_TYPE = "application/vnd.in-toto+json"
#: Refuse larger payloads before parsing them: a log entry is metadata, never data.
MAX_RECORD_BYTES = 1_000_000


class Kind(StrEnum):
    """What a record attests. A str: stored and signed as its value ("dataset", ...)."""

    DATASET = "dataset"
    MODEL = "model"
    VALUATION = "valuation"
    SETTLEMENT = "settlement"
    USAGE_EPOCH = "usage-epoch"
    KEY_TRANSITION = "key-transition"  # signed by the retiring key, names its successor


KINDS = tuple(k.value for k in Kind)
_KIND_OF: dict[str, Kind] = {k.value: k for k in Kind}

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX32 = re.compile(r"[0-9a-f]{32}")
# An orchestrator's name is the first part of an idempotency key: no ':' (which separates the
# parts), and not "sha256", which keys a record without a run by its digest.
_ORCHESTRATOR = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# Control characters (C0, DEL and C1, which holds the 8-bit terminal escape CSI) break logs and
# terminals; lone surrogates cannot be encoded as UTF-8.
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_RFC3339_UTC = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?Z"
)
#: The last year a record's time may name. A parser that verifies old logs offline has no "now"
#: to bound against, so the bound is fixed: far past any real record, far enough below
#: datetime's year 9999 that every later sum (skews, grace windows, the next epoch) stays a
#: date. "Not after now" is checked where a record is signed (`attest.append_records`).
LAST_YEAR = 2200
_LAST_YEAR = str(LAST_YEAR)


def idempotency_key(orchestrator: str, run_id: str, event_id: int) -> str:
    """The log's key for one source event: `<orchestrator>:<run_id>:<event_id>`.

    The one place the format is written (stores parse it back in `source_cursor`); for Dagster
    it is `dagster:<run_id>:<storage_id>`, as v1 records were keyed, so re-syncing an old log
    stays idempotent. A record without a run reference is keyed by `content_key` instead.
    """
    return f"{orchestrator}:{run_id}:{event_id}"


def content_key(digest: str) -> str:
    """The log's key for a record without a run reference: `sha256:<its digest>`."""
    return f"sha256:{digest}"


# --- value checks: each takes (value, path), raises RecordError("<path>: <problem>") and returns
# the value as stored (ints become floats where a number is meant) -------------------------------


def _text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise RecordError(f"{field}: expected a string, got {type(value).__name__}")
    if not value:
        raise RecordError(f"{field}: must not be empty")
    # For ASCII text, "printable" is exactly "none of _FORBIDDEN" and much cheaper to ask.
    if not (value.isascii() and value.isprintable()) and _FORBIDDEN.search(value):
        raise RecordError(f"{field}: must not contain control characters")
    return value


def _ident(value: object, field: str) -> str:
    """An id a person reads (contributor, asset): `_text`, plus the rules of `identifiers`
    (NFC, no format/bidi/zero-width characters, no look-alike script mix). A signed record
    holds one spelling of an id, so a non-NFC id is refused rather than normalized: the bytes
    are the record."""
    if type(value) is str and value and value.isascii() and value.isprintable():
        return value  # printable ASCII: one script, nothing hidden, already NFC
    text = _text(value, field)
    why = id_problem(text)
    if why is not None:
        raise RecordError(f"{field}: {why}")
    if not is_nfc(text):
        raise RecordError(f"{field}: is not in Unicode NFC (normalize it before recording)")
    return text


def _count(value: object, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise RecordError(f"{field}: expected a non-negative integer, got {type(value).__name__}")
    if not 0 <= value <= MAX_SAFE_INT:
        raise RecordError(f"{field}: expected a non-negative integer below 2**53, got {value}")
    return int(value)


def _hex64(value: object, field: str) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise RecordError(f"{field}: expected 64 lowercase hex characters")
    return value


def _hex32(value: object, field: str) -> str:
    if not isinstance(value, str) or not _HEX32.fullmatch(value):
        raise RecordError(f"{field}: expected 32 lowercase hex characters")
    return value


def _number(value: object, field: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise RecordError(f"{field}: expected a number, got {type(value).__name__}")
    f = float(value)
    if not math.isfinite(f):
        raise RecordError(f"{field}: must be finite, got {value}")
    return f


def _stderr(value: object, field: str) -> float:
    f = _number(value, field)
    if f < 0:
        raise RecordError(f"{field}: must not be negative, got {f}")
    return f


def _kind(value: object, field: str) -> Kind:
    kind = _KIND_OF.get(value) if isinstance(value, str) else None
    if kind is None:
        raise RecordError(f"{field}: expected one of {', '.join(KINDS)}, got {value!r:.60}")
    return kind


def _orchestrator(value: object, field: str) -> str:
    if not isinstance(value, str) or not _ORCHESTRATOR.fullmatch(value) or value == "sha256":
        raise RecordError(
            f"{field}: expected a lowercase name like 'dagster' (a-z, 0-9, '.', '_', '-'; "
            f"not 'sha256'), got {value!r:.60}"
        )
    return value


def _timestamp(value: object, field: str) -> str:
    if not isinstance(value, str) or (m := _RFC3339_UTC.fullmatch(value)) is None:
        raise RecordError(
            f"{field}: expected an RFC 3339 UTC time like 2026-11-24T20:00:00.123456Z"
        )
    # The regex fixed two ASCII digits per field, so comparing text compares numbers: a date
    # valid in every month needs no datetime (this is on the parse hot path).
    if (
        "01" <= value[5:7] <= "12"
        and "01" <= value[8:10] <= "28"
        and value[11:13] <= "23"
        and value[14:16] <= "59"
        and value[17:19] <= "59"
        and "0000" < value[:4] <= _LAST_YEAR
    ):
        return value
    y, mo, d, h, mi, sec = map(int, m.group(1, 2, 3, 4, 5, 6))
    if y > int(_LAST_YEAR):
        raise RecordError(f"{field}: year {y} is after {_LAST_YEAR} (see docs/record-format.md)")
    try:
        datetime(y, mo, d, h, mi, sec)
    except ValueError as e:
        raise RecordError(f"{field}: {e}") from None
    return value


def _opt_num(x: float | int | None) -> str:
    if x is None:
        return "null"
    return str(x) if type(x) is int else es6_number(x)


def _json_type(obj: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(obj), "number")


def _canonical_details(obj: dict[str, Any]) -> str:
    try:
        return canonical_json(obj).decode("utf-8")
    except RecordError as e:
        # canonical_json names paths from "$"; re-root them at the field.
        raise RecordError(f"predicate.details{str(e)[1:]}") from None


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)  # normalizing a frozen instance inside __post_init__


# --- the schema's vocabulary ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scalar:
    """A JSON scalar: its check, and how the canonical writer writes a checked value `{v}`."""

    check: Callable[[Any, str], Any]
    write: str  # a Python expression over {v}
    normalizes: bool = False  # the check may return another object (1 -> 1.0, "model" -> Kind)
    #: Whether `write` writes every checked value as JSON writes the value parsed (a number
    #: does not: 1.0 is written 1): the check-only scanner (`_match_*`) takes only such.
    plain: bool = True
    #: A regex over canonical JSON text that matches only values the check accepts, written
    #: as `write` writes them (not every such value: the others take the scanners); None if
    #: there is none. See `_pattern_of`.
    pattern: bytes | None = None


# The times `_timestamp` accepts, calendar included (a test holds the two equal over every
# date of years 0000-2300), so that the pattern's verdict needs no check after it.
_YEAR = rb"(?:(?!0000)[01][0-9]{3}|2[01][0-9]{2}|2200)"  # 0001..LAST_YEAR
_LEAP_YEAR = rb"(?:[01][0-9]|2[01])(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|1[26]|20)00"
_DATE = (
    rb"(?:" + _YEAR + rb"-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
    rb"|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
    rb"|(?:" + _LEAP_YEAR + rb")-02-29)"
)
_TIMESTAMP_PATTERN = (
    b'"' + _DATE + rb"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?Z" + b'"'
)

# Printable ASCII but `"` and `\\`: text that needs no escape, and that `_text` and `_ident`
# (whose rules are about other characters) accept whenever it is not empty.
_PRINTABLE_ASCII = rb'"[ !#-\[\]-~]+"'
TEXT = Scalar(_text, "_q({v})", pattern=_PRINTABLE_ASCII)
IDENT = Scalar(_ident, "_q({v})", pattern=_PRINTABLE_ASCII)  # an id a person reads
# Below 10**15 < 2**53: every such count is safe.
COUNT = Scalar(_count, "str({v})", pattern=rb"(?:0|[1-9][0-9]{0,14})")
HEX64 = Scalar(_hex64, "'\"' + {v} + '\"'", pattern=rb'"[0-9a-f]{64}"')  # nothing to escape
HEX32 = Scalar(_hex32, "'\"' + {v} + '\"'", pattern=rb'"[0-9a-f]{32}"')
NUMBER = Scalar(_number, "_num({v})", normalizes=True, plain=False)
STDERR = Scalar(_stderr, "_num({v})", normalizes=True, plain=False)
TIMESTAMP = Scalar(_timestamp, "'\"' + {v} + '\"'", pattern=_TIMESTAMP_PATTERN)
KIND = Scalar(  # a Kind is written as its value: the input
    _kind,
    "_q({v})",
    normalizes=True,
    pattern=b'"(?:' + b"|".join(re.escape(k.encode()) for k in KINDS) + b')"',
)
ORCHESTRATOR = Scalar(
    _orchestrator, "'\"' + {v} + '\"'", pattern=rb'"(?!sha256")[a-z0-9][a-z0-9._-]{0,63}"'
)


@dataclass(frozen=True, slots=True)
class Obj:
    """A nested object (null when optional), of a value class with its own field table."""

    shape: Shape


@dataclass(frozen=True, slots=True)
class Items:
    """An array of objects of one value class (a tuple in Python)."""

    shape: Shape


class _Details:
    """`predicate.details`: a JSON object or null, kept as its canonical JSON text."""


DETAILS = _Details()
FieldType = Scalar | Obj | Items | _Details


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a value class: attribute `name`, JSON `key` (default: the name), its type,
    whether null is allowed, and the `path` its errors start with (default: the key)."""

    name: str
    type: FieldType
    optional: bool = False
    key: str = ""
    path: str = ""

    @property
    def json_key(self) -> str:
        return self.key or self.name

    @property
    def error_path(self) -> str:
        return self.path or self.json_key


@dataclass(frozen=True, slots=True)
class Shape:
    """A value class's JSON object: its fields in the class's order, and how a checked set of
    values becomes the Python value (`build`, keyword arguments by attribute name)."""

    name: str
    fields: tuple[Field, ...]
    build: Callable[..., Any]
    #: For a run reference: its idempotency key from its parsed JSON object.
    identity: Callable[[dict[str, Any]], str] | None = None

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(f.json_key for f in self.fields)


# --- code generation from the tables -------------------------------------------------------------
# Each value class gets, built once from its table: a validator (its __post_init__), a writer
# of canonical JSON from an instance, and a scanner that checks a parsed JSON object and writes
# its canonical JSON (what a canonical payload must be byte for byte). Generated rather than
# interpreted because the scanner and the writer are the per-record hot paths of verify and
# append; the generated code is what one would write by hand for each class.

_NS: dict[str, Any] = {
    "_q": json_string,
    "_num": _opt_num,
    "_set": _set,
    "_RecordError": RecordError,
    "_canonical_details": _canonical_details,
    "_loads_strict": loads_strict,
    "_json_type": _json_type,
}


def _compile(source: str, name: str) -> Callable[..., Any]:
    code = compile(source, f"<records: {name}>", "exec")
    exec(code, _NS)  # source generated from the field tables above, never from input
    fn: Callable[..., Any] = _NS[name]
    return fn


def _register(value: object, hint: str) -> str:
    name = f"_{hint}_{len(_NS)}"
    _NS[name] = value
    return name


def _write_expr(f: Field, v: str, via: str) -> str:
    """A Python expression writing value `v` of field `f` as canonical JSON. `via` is "write"
    (from instances) or "scan" (from parsed JSON, checking as it goes)."""
    t = f.type
    if isinstance(t, Scalar):
        inner = t.write.format(v=v)
    elif isinstance(t, Obj):
        inner = f"_{via}_{t.shape.name}({v})"
    elif isinstance(t, Items):
        return f"'[' + ','.join([_{via}_{t.shape.name}(x) for x in {v}]) + ']'"
    else:  # details: canonical text when built, a parsed object when scanned
        if via == "write":
            return f"('null' if {v} is None else {v})"
        return f"('null' if {v} is None else _details_of({v}))"
    return f"('null' if {v} is None else {inner})" if f.optional else inner


def _details_of(obj: object) -> str:
    if type(obj) is not dict:
        raise RecordError("predicate.details: expected an object or null")
    return _canonical_details(obj)


_NS["_details_of"] = _details_of


def _sorted_object(exprs: dict[str, str]) -> list[str]:
    """The pieces of `{"key":value,...}` in canonical (sorted key) order."""
    parts: list[str] = []
    for i, key in enumerate(sorted(exprs)):
        parts.append(repr(("{" if i == 0 else ",") + json_string(key) + ":"))
        parts.append(exprs[key])
    parts.append("'}'")
    return parts


def _build_expr(f: Field, v: str) -> str:
    """A Python expression building field `f`'s value from parsed JSON `v` (unchecked shape)."""
    if isinstance(f.type, Obj):
        return f"(None if {v} is None else _build_{f.type.shape.name}({v}))"
    if isinstance(f.type, Items):
        return f"tuple([_build_{f.type.shape.name}(x) for x in {v}])"
    if f.type is DETAILS:
        return f"(None if {v} is None else _canonical_details({v}))"
    return v


def _generate(shape: Shape, full: bool = True) -> None:
    """For one shape: `_validate_<C>(obj)` (its checks, run on construction), `_write_<C>(obj)`
    (canonical JSON of an instance), `_scan_<C>(dict)` (checks a parsed JSON object and writes
    its canonical JSON) and `_build_<C>(dict)` (the instance, its keys unchecked)."""
    n = shape.name
    lines = [f"def _validate_{n}(self):"]
    for f in shape.fields:
        v, path = f"self.{f.name}", repr(f.error_path)
        t = f.type
        if isinstance(t, Scalar):
            ind = "    "
            if f.optional:
                lines.append(f"    if {v} is not None:")
                ind = "        "
            check = _register(t.check, "check")
            if t.normalizes:
                lines.append(f"{ind}n = {check}({v}, {path})")
                lines.append(f"{ind}if n is not {v}: _set(self, {f.name!r}, n)")
            else:
                lines.append(f"{ind}{check}({v}, {path})")
        elif isinstance(t, Obj):
            cls = _register(t.shape.build, "cls")
            expected = f"{f.error_path}: expected {t.shape.name}" + (
                " or None" if f.optional else ""
            )
            test = f"{v} is not None and " if f.optional else ""
            lines.append(f"    if {test}not isinstance({v}, {cls}):")
            lines.append(f"        raise _RecordError({expected!r})")
        elif isinstance(t, Items):
            cls = _register(t.shape.build, "cls")
            item = t.shape.name
            lines += [
                f"    items = {v}",
                "    if not isinstance(items, (list, tuple)):",
                f"        raise _RecordError({f.error_path + ': expected a tuple of ' + item!r})",
                "    for i, x in enumerate(items):",
                f"        if not isinstance(x, {cls}):",
                f"            raise _RecordError(f'{f.error_path}[{{i}}]: expected {item}')",
                f"    if type(items) is not tuple: _set(self, {f.name!r}, tuple(items))",
            ]
        else:
            lines.append(f"    _validate_details(self, {f.name!r})")
    _compile("\n".join(lines), f"_validate_{n}")
    _VALIDATORS[_NS[n]] = _NS[f"_validate_{n}"]
    if not full:  # the record: its writers and scanners are per version, below
        return
    exprs = {f.json_key: _write_expr(f, f"o.{f.name}", "write") for f in shape.fields}
    _compile(f"def _write_{n}(o):\n    return {' + '.join(_sorted_object(exprs))}", f"_write_{n}")
    lines = [f"def _scan_{n}(d):"]
    for i, f in enumerate(shape.fields):
        lines.append(f"    v{i} = d[{f.json_key!r}]")
        if isinstance(f.type, Scalar):
            check = _register(f.type.check, "check")
            call = f"v{i} = {check}(v{i}, {f.error_path!r})"
            lines.append(f"    if v{i} is not None: {call}" if f.optional else f"    {call}")
    exprs = {f.json_key: _write_expr(f, f"v{i}", "scan") for i, f in enumerate(shape.fields)}
    lines.append(f"    return {' + '.join(_sorted_object(exprs))}")
    _compile("\n".join(lines), f"_scan_{n}")
    lines = [f"def _match_{n}(d):", f"    if type(d) is not dict or len(d) != {len(shape.fields)}:"]
    lines.append("        raise _NotPlain")
    for i, f in enumerate(shape.fields):
        lines += _match_lines(f, f"v{i}", f"d[{f.json_key!r}]")
    _compile("\n".join(lines), f"_match_{n}")
    build = _register(shape.build, "build")
    args = ", ".join(f"{f.name}={_build_expr(f, f'd[{f.json_key!r}]')}" for f in shape.fields)
    _compile(f"def _build_{n}(d):\n    return {build}({args})", f"_build_{n}")


def _match_lines(f: Field, v: str, source: str) -> list[str]:
    """Lines of a check-only scanner reading field `f` from `source` into `v`: the value
    checked as `_scan_*` checks it, nested objects matched; `_NotPlain` (the rewriting scanner
    then decides) for what JSON might write otherwise than the canonical writer (numbers,
    details) and for a nested object with other keys than its table's."""
    lines = [f"    {v} = {source}"]
    t = f.type
    test = f"    if {v} is not None: " if f.optional else "    "
    if isinstance(t, Scalar):
        if not t.plain:
            lines.append(f"    if {v} is not None: raise _NotPlain")
        else:
            lines.append(f"{test}{_register(t.check, 'check')}({v}, {f.error_path!r})")
    elif isinstance(t, Obj):
        lines.append(f"{test}_match_{t.shape.name}({v})")
    elif isinstance(t, Items):
        lines.append(f"    if type({v}) is not list: raise _NotPlain")
        lines.append(f"    for x in {v}: _match_{t.shape.name}(x)")
    else:  # details: their canonical form is canonical_json's, with its number rules
        lines.append(f"    if {v} is not None: raise _NotPlain")
    return lines


def _pattern_of(t: FieldType, optional: bool) -> bytes | None:
    """A regex matching only canonical JSON texts of valid values of a nested field (None if
    the type has no exact pattern): what `to_bytes` writes for values of printable ASCII
    text, small counts and nulls. Numbers and details have none: only their null matches."""
    p: bytes | None
    if isinstance(t, Scalar):
        p = t.pattern
    elif isinstance(t, Obj):
        p = _object_pattern(t.shape.fields)
    elif isinstance(t, Items):
        item = _object_pattern(t.shape.fields)
        p = None if item is None else rb"\[(?:" + item + rb"(?:," + item + rb")*)?\]"
    else:
        p = None
    if optional:
        return b"null" if p is None else b"(?:null|" + p + b")"
    return p


def _object_pattern(table: tuple[Field, ...], named: Sequence[str] = ()) -> bytes | None:
    """`{"key":value,...}` in canonical key order; the values of the fields `named` are
    groups by field name."""
    parts = []
    for f in sorted(table, key=lambda f: f.json_key):
        p = _pattern_of(f.type, f.optional)
        if p is None:
            return None
        if f.name in named:
            p = b"(?P<" + f.name.encode() + b">" + p + b")"
        parts.append(re.escape(json_string(f.json_key).encode()) + b":" + p)
    return rb"\{" + b",".join(parts) + rb"\}"


def _plain_read(f: Field, v: str) -> str:
    """A Python expression for the value of field `f` from the JSON text `v` its pattern
    matched: null, an unescaped string or a count."""
    t = f.type
    assert isinstance(t, Scalar) and t.pattern is not None
    value = f"{v}[1:-1].decode('ascii')" if t.pattern.startswith(b'"') else f"int({v})"
    return f"(None if {v} == b'null' else {value})" if f.optional else value


class _NotPlain(Exception):
    """Not for the check-only scanner (`_match_*`): the rewriting one decides."""


_NS["_NotPlain"] = _NotPlain

_VALIDATORS: dict[type, Callable[[Any], None]] = {}


def _validate(obj: object) -> None:
    """Run the checks generated from `obj`'s field table (each value class's __post_init__)."""
    _VALIDATORS[type(obj)](obj)


def _validate_details(self: Any, name: str) -> None:
    details = getattr(self, name)
    if details is None:
        return
    if isinstance(details, SettlementDetails | ValuationDetails):
        _set(self, name, details.to_json())
        return
    if not isinstance(details, str):
        raise RecordError("predicate.details: expected canonical JSON text (see details_json)")
    parsed = loads_strict(details, "predicate.details")
    if not isinstance(parsed, dict):
        raise RecordError(f"predicate.details: expected an object, got {_json_type(parsed)}")
    text = _canonical_details(parsed)
    if text != details:
        _set(self, name, text)


_NS["_validate_details"] = _validate_details


def _schema(
    cls: type,
    name: str,
    table: tuple[Field, ...],
    build: Callable[..., Any] | None = None,
    identity: Callable[[dict[str, Any]], str] | None = None,
    extra: tuple[str, ...] = (),
    full: bool = True,
) -> Shape:
    """A value class's shape and its generated functions, after checking that the class
    declares exactly the table's fields in the table's order (plus `extra`, not in the JSON
    object): the table is the schema, the class its typed face."""
    declared = tuple(getattr(cls, "_fields", None) or (f.name for f in fields(cls)))
    if declared != tuple(f.name for f in table) + extra:
        raise AssertionError(f"{cls.__name__}: fields {declared} do not follow its table")
    shape = Shape(name, table, build or cls, identity)
    _NS[name] = cls
    _generate(shape, full)
    return shape


def _strict(shape: Shape, obj: object, path: str, *, prefix: bool = True) -> Any:
    """Parse `obj` as `shape` strictly: exact keys, every value checked, errors under `path`."""
    d = _strict_object(obj, path, shape.keys)
    values: dict[str, Any] = {}
    for f in shape.fields:
        v = d[f.json_key]
        where = f"{path}.{f.json_key}"
        if v is not None and isinstance(f.type, Obj):
            v = _strict(f.type.shape, v, where)
        elif isinstance(f.type, Items):
            if not isinstance(v, list):
                raise RecordError(f"{where}: expected an array, got {_json_type(v)}")
            v = tuple(_strict(f.type.shape, x, f"{where}[{i}]") for i, x in enumerate(v))
        elif v is not None and f.type is DETAILS:
            if not isinstance(v, dict):
                raise RecordError(f"{where}: expected an object or null, got {_json_type(v)}")
            v = _canonical_details(v)
        values[f.name] = v
    if not prefix:
        return shape.build(**values)
    try:
        return shape.build(**values)
    except RecordError as e:
        raise RecordError(f"{path}.{e}") from None


def _strict_object(obj: object, path: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if type(obj) is dict and len(obj) == len(keys) and all(k in obj for k in keys):
        return obj
    if not isinstance(obj, dict):
        raise RecordError(f"{path}: expected an object, got {_json_type(obj)}")
    for k in obj:
        if k not in keys:
            raise RecordError(f"{path}.{shown(k)}: unknown key")
    for k in keys:
        if k not in obj:
            raise RecordError(f"{path}.{k}: missing")
    return obj


def utc_timestamp(when: datetime | None = None) -> str:
    """RFC 3339 UTC with microseconds, the form `recorded_at` expects (now when `when` is None)."""
    if when is None:
        when = datetime.now(UTC)
    elif when.tzinfo is None:
        raise RecordError("recorded_at: a naive datetime has no time zone; pass an aware one")
    return when.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def details_json(obj: Mapping[str, object]) -> str:
    """The canonical JSON text for `AttributionRecord.details` (kind-specific body)."""
    return canonical_json(dict(obj)).decode("utf-8")


# --- value objects ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunRef:
    """The orchestrator event a record came from: (orchestrator, run_id, event_id) is its
    identity and its idempotency key. `event_id` orders one orchestrator's events (Dagster's
    event storage id); a v1 record's `dagster` object reads as RunRef("dagster", ...)."""

    orchestrator: str
    run_id: str
    event_id: int

    def __post_init__(self) -> None:
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        return _to_json(RUN_SHAPE, self)

    def key(self) -> str:
        """This event's idempotency key (see `idempotency_key`)."""
        return idempotency_key(self.orchestrator, self.run_id, self.event_id)


@dataclass(frozen=True, slots=True)
class DvcRef:
    """A DVC-tracked output: its path in the repo and the md5 DVC recorded in dvc.lock."""

    path: str
    md5: str

    def __post_init__(self) -> None:
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        return _to_json(DVC_SHAPE, self)


@dataclass(frozen=True, slots=True)
class MlflowRef:
    """The MLflow run that trained a model and, when logged, the LoggedModel id."""

    run_id: str
    model_id: str | None = None

    def __post_init__(self) -> None:
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        return _to_json(MLFLOW_SHAPE, self)


@dataclass(frozen=True, slots=True)
class InputRef:
    """An upstream asset by content hash, plus the log index of its own record when known."""

    asset: str
    sha256: str
    log_index: int | None = None

    def __post_init__(self) -> None:
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        return _to_json(INPUT_SHAPE, self)


@dataclass(frozen=True, slots=True)
class Contributor:
    """One contributor's part (rows, content hash) or share (weight, value and its stderr).

    All six keys are always serialized (null when absent) so the schema is fixed. A contributor
    with several parts appears once per part, so ids may repeat. Numbers are stored as floats,
    so 1 and 1.0 (which canonical JSON writes identically) are one value.
    """

    id: str
    rows: int | None = None
    sha256: str | None = None
    weight: float | None = None
    value: float | None = None
    stderr: float | None = None

    def __post_init__(self) -> None:
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        return _to_json(CONTRIBUTOR_SHAPE, self)


class _DagsterV1(NamedTuple):
    """v1's `dagster` object's values, checked under v1's names before they become a RunRef."""

    run_id: str
    event_id: int


def _dagster_run(run_id: str, event_id: int) -> RunRef:
    """A v1 record's `dagster` object as the run reference it is (checked with v1's names)."""
    _validate(_DagsterV1(run_id, event_id))
    return RunRef("dagster", run_id, event_id)


# The field tables: the schema, once. Order = the class's field order (positional arguments);
# the canonical writers sort by JSON key themselves.
RUN_SHAPE = _schema(
    RunRef,
    "RunRef",
    (Field("orchestrator", ORCHESTRATOR), Field("run_id", TEXT), Field("event_id", COUNT)),
    identity=lambda d: idempotency_key(d["orchestrator"], d["run_id"], d["event_id"]),
)
#: v1's `dagster: {run_id, storage_id}`: the same run reference under v1's names.
DAGSTER_V1_SHAPE = _schema(
    _DagsterV1,
    "DagsterV1",
    (Field("run_id", TEXT), Field("event_id", COUNT, key="storage_id")),
    build=_dagster_run,
    identity=lambda d: idempotency_key("dagster", d["run_id"], d["storage_id"]),
)
DVC_SHAPE = _schema(DvcRef, "DvcRef", (Field("path", TEXT), Field("md5", HEX32)))
MLFLOW_SHAPE = _schema(
    MlflowRef, "MlflowRef", (Field("run_id", TEXT), Field("model_id", TEXT, optional=True))
)
INPUT_SHAPE = _schema(
    InputRef,
    "InputRef",
    (Field("asset", IDENT), Field("sha256", HEX64), Field("log_index", COUNT, optional=True)),
)
CONTRIBUTOR_SHAPE = _schema(
    Contributor,
    "Contributor",
    (
        Field("id", IDENT),
        Field("rows", COUNT, optional=True),
        Field("sha256", HEX64, optional=True),
        Field("weight", NUMBER, optional=True),
        Field("value", NUMBER, optional=True),
        Field("stderr", STDERR, optional=True),
    ),
)


def _p(name: str, type_: FieldType, optional: bool = False, key: str = "") -> Field:
    """A predicate field: its errors are named from the statement's root."""
    return Field(name, type_, optional, key, f"predicate.{key or name}")


#: The record's fields, in AttributionRecord's order. `sha256` is the subject's digest (written
#: in `subject`, not in the predicate); `asset` is also the subject's name.
RECORD_FIELDS = (
    _p("kind", KIND),
    _p("asset", IDENT),
    Field("sha256", HEX64, path="subject[0].digest.sha256"),
    _p("recorded_at", TIMESTAMP),
    _p("data_version", TEXT, optional=True),
    _p("code_version", TEXT, optional=True),
    _p("run", Obj(RUN_SHAPE), optional=True),
    _p("dvc", Obj(DVC_SHAPE), optional=True),
    _p("mlflow", Obj(MLFLOW_SHAPE), optional=True),
    _p("inputs", Items(INPUT_SHAPE)),
    _p("contributors", Items(CONTRIBUTOR_SHAPE)),
    _p("details", DETAILS, optional=True),
    _p("supersedes", COUNT, optional=True),
    _p("partition", TEXT, optional=True),
)
#: v1 differs in one field: the run reference is `dagster: {run_id, storage_id}`.
RECORD_FIELDS_V1 = tuple(
    _p("run", Obj(DAGSTER_V1_SHAPE), optional=True, key="dagster") if f.name == "run" else f
    for f in RECORD_FIELDS
)
_PREDICATE = {
    version: tuple(f for f in table if f.name != "sha256")
    for version, table in ((1, RECORD_FIELDS_V1), (2, RECORD_FIELDS))
}
_TOP_KEYS = ("_type", "subject", "predicateType", "predicate")
_TOP_KEYSET = frozenset(_TOP_KEYS)


# --- typed details ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SettlementDetails:
    """A settlement record's `details`: what one epoch paid (`lineage verify` re-derives it)."""

    epoch: str
    starts_at: str
    ends_at: str
    fees_total: int
    paid_total: int
    payout_count: int
    root: str  # hex Merkle root over the payout leaves
    policy: dict[str, Any]
    fees_by_model: dict[str, int]
    events: int
    events_digest: str
    reserve_reason: str | None = None

    def __post_init__(self) -> None:
        _text(self.epoch, "details.epoch")
        _timestamp(self.starts_at, "details.starts_at")
        _timestamp(self.ends_at, "details.ends_at")
        for name in ("fees_total", "paid_total", "payout_count", "events"):
            _count(getattr(self, name), f"details.{name}")
        _hex64(self.root, "details.root")
        _hex64(self.events_digest, "details.events_digest")
        for name in ("policy", "fees_by_model"):
            if not isinstance(getattr(self, name), dict):
                raise RecordError(f"details.{name}: expected an object")
        if self.reserve_reason is not None:
            _text(self.reserve_reason, "details.reserve_reason")

    def to_json(self) -> str:
        """The canonical JSON text a record's `details` holds."""
        return details_json({f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def from_json(cls, text: str) -> SettlementDetails:
        names = tuple(f.name for f in fields(cls))
        obj = _strict_object(loads_strict(text, "predicate.details"), "predicate.details", names)
        try:
            return cls(**obj)
        except RecordError as e:
            raise RecordError(f"predicate.{e}") from None


@dataclass(frozen=True, slots=True)
class ValuationDetails:
    """A valuation record's `details`: the method that made the values and how; anything else
    the method reports is kept in `extra`, so the text round-trips exactly."""

    method: str
    seed: int | None = None
    samples: int | None = None
    utility: str | None = None
    digest: str | None = None  # "sha256:<hex>" of the result's canonical values
    extra: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        _text(self.method, "details.method")
        if self.seed is not None and (type(self.seed) is not int):
            raise RecordError("details.seed: expected an integer or null")
        if self.samples is not None:
            _count(self.samples, "details.samples")
        for name in ("utility", "digest"):
            if getattr(self, name) is not None:
                _text(getattr(self, name), f"details.{name}")
        extra = dict(self.extra or {})
        for k in extra:
            if k in _VALUATION_KNOWN:
                raise RecordError(f"details.{k}: given twice (a field and in extra)")
        _set(self, "extra", extra)

    def to_json(self) -> str:
        known = {name: getattr(self, name) for name in _VALUATION_KNOWN}
        return details_json({**(self.extra or {}), **known})

    @classmethod
    def from_json(cls, text: str) -> ValuationDetails:
        obj = loads_strict(text, "predicate.details")
        if not isinstance(obj, dict):
            raise RecordError(f"predicate.details: expected an object, got {_json_type(obj)}")
        for name in _VALUATION_KNOWN:
            if name not in obj:
                raise RecordError(f"predicate.details.{name}: missing")
        known = {name: obj[name] for name in _VALUATION_KNOWN}
        try:
            return cls(**known, extra={k: v for k, v in obj.items() if k not in known})
        except RecordError as e:
            raise RecordError(f"predicate.{e}") from None


_VALUATION_KNOWN = ("method", "seed", "samples", "utility", "digest")
#: The typed `details` of each kind that has them (other kinds: a plain JSON object, or null).
DETAILS_TYPES: dict[Kind, type[SettlementDetails] | type[ValuationDetails]] = {
    Kind.SETTLEMENT: SettlementDetails,
    Kind.VALUATION: ValuationDetails,
}


# --- the record ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttributionRecord:
    """What was materialized (asset, content sha256), from what, by whom, and where it is tracked.

    `details` is the kind-specific body as canonical JSON text (so the record stays hashable);
    any JSON object text, or a typed details value (`SettlementDetails`, `ValuationDetails`), is
    accepted and normalized to canonical text; `typed_details()` reads it back typed. `supersedes`
    is the log index of a record this one corrects: the log is never edited. `partition` is the
    partition key of a partitioned asset's materialization (each partition is its own artifact).
    `run` is the orchestrator event it came from. `version` is the predicate version it is
    written as: 2 for new records, 1 for records parsed from v1 bytes (their `run` is
    Dagster's; they keep their exact bytes and digest). Fields: see RECORD_FIELDS.
    """

    kind: str  # given as a Kind or its value, stored as the Kind (a str)
    asset: str
    sha256: str
    recorded_at: str
    data_version: str | None = None
    code_version: str | None = None
    run: RunRef | None = None
    dvc: DvcRef | None = None
    mlflow: MlflowRef | None = None
    inputs: tuple[InputRef, ...] = ()
    contributors: tuple[Contributor, ...] = ()
    details: str | None = None
    supersedes: int | None = None
    partition: str | None = None
    version: int = 2

    def __post_init__(self) -> None:
        _validate(self)
        if type(self.version) is not int or self.version not in _PREDICATE_TYPES:
            raise RecordError(f"predicateType: version {self.version!r:.20} is not 1 or 2")
        if self.version == 1 and self.run is not None and self.run.orchestrator != "dagster":
            raise RecordError("predicate.dagster: a v1 record's run is Dagster's")

    # --- serialization --------------------------------------------------------------------------

    def details_obj(self) -> dict[str, Any] | None:
        """The kind-specific body as a dict, or None."""
        if self.details is None:
            return None
        parsed: dict[str, Any] = loads_strict(self.details, "predicate.details")
        return parsed

    def typed_details(self) -> SettlementDetails | ValuationDetails | None:
        """The body as its kind's typed details (None when the kind has none, or no details)."""
        typed = DETAILS_TYPES.get(_KIND_OF[self.kind])
        if typed is None or self.details is None:
            return None
        return typed.from_json(self.details)

    def to_statement(self) -> dict[str, Any]:
        """The in-toto Statement v1 as plain JSON values."""
        table = _PREDICATE[self.version]
        return {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": self.asset, "digest": {"sha256": self.sha256}}],
            "predicateType": _PREDICATE_TYPES[self.version],
            "predicate": {f.json_key: _json_value(f, getattr(self, f.name)) for f in table},
        }

    def to_bytes(self) -> bytes:
        """RFC 8785 canonical JSON of the statement: the exact bytes that get signed.

        Written by the writer generated from the field table rather than via `canonical_json`,
        because the schema is fixed and validated: this is the hot path of every append
        (equality with `canonical_json(self.to_statement())` is property-tested).
        """
        data: bytes = _WRITE_RECORD[self.version](self)
        if len(data) > MAX_RECORD_BYTES:
            raise RecordError(
                f"statement: {len(data)} bytes exceeds the {MAX_RECORD_BYTES}-byte record limit"
            )
        return data

    def digest(self) -> str:
        """Lowercase hex SHA-256 of `to_bytes()`."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def idempotency_key(self, digest: str | None = None) -> str:
        """One event is logged at most once: keyed by its run reference, else by content
        (`digest`: this record's `digest()`, when the caller has it already)."""
        if self.run is not None:
            return self.run.key()
        return content_key(digest or self.digest())

    # --- parsing --------------------------------------------------------------------------------

    @classmethod
    def from_statement(cls, obj: object) -> AttributionRecord:
        """Parse a statement strictly; any deviation is a RecordError naming the field."""
        if not isinstance(obj, dict):
            raise RecordError(f"statement: expected an object, got {_json_type(obj)}")
        if obj.keys() != _TOP_KEYSET:
            for k in obj:
                if k not in _TOP_KEYS:
                    raise RecordError(f"{shown(k)}: unknown key")
            for k in _TOP_KEYS:
                if k not in obj:
                    raise RecordError(f"{k}: missing")
        if obj["_type"] != STATEMENT_TYPE:
            raise RecordError(f"_type: expected {STATEMENT_TYPE!r}, got {obj['_type']!r:.60}")
        ptype = obj["predicateType"]
        version = _VERSIONS.get(ptype) if type(ptype) is str else None
        if version is None:
            raise RecordError(
                f"predicateType: expected {PREDICATE_TYPE!r} (or v1), got {ptype!r:.60}"
            )
        subjects = obj["subject"]
        if not isinstance(subjects, list) or len(subjects) != 1:
            raise RecordError("subject: expected an array with exactly one subject")
        subject = _strict_object(subjects[0], "subject[0]", ("name", "digest"))
        digest = _strict_object(subject["digest"], "subject[0].digest", ("sha256",))
        predicate = _PREDICATE_SHAPES[version]
        p = _strict_object(obj["predicate"], "predicate", predicate.keys)
        if subject["name"] != p["asset"]:
            raise RecordError("subject[0].name: must equal predicate.asset")
        built: AttributionRecord = _strict(predicate, p, "predicate", prefix=False)(
            digest["sha256"]
        )
        return built

    @classmethod
    def from_bytes(cls, data: bytes, *, require_canonical: bool = True) -> AttributionRecord:
        """Parse signed payload bytes. By default they must be canonical, so that the payload
        hash and `digest()` agree and no two byte strings decode to the same record."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise RecordError(f"payload: expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) > MAX_RECORD_BYTES:
            raise RecordError(
                f"payload: {len(data)} bytes exceeds the {MAX_RECORD_BYTES}-byte record limit"
            )
        # Fast path for canonical bytes (what every stored envelope carries): the record built
        # from the parsed statement without the structural checks (its values are checked on
        # construction), then its re-encoding must equal the input, which only the canonical
        # bytes of exactly the statement's shape do. Anything else goes the strict way, which
        # also names the problem. (`scan_payload` is the same gate without the record.)
        try:
            obj = orjson.loads(data)
            fast: AttributionRecord = _BUILD_RECORD[_VERSIONS[obj["predicateType"]]](obj)
            if fast.to_bytes() == data:
                return fast
        except Exception:  # the strict path below decides, with its own message
            pass
        record = cls.from_statement(loads_strict(data, "payload"))
        if require_canonical and record.to_bytes() != data:
            raise RecordError("payload: not RFC 8785 canonical JSON (re-encoding differs)")
        return record


def _json_value(f: Field, value: Any) -> Any:
    """A field's value as plain JSON values (what `to_statement` holds)."""
    if value is None:
        return None
    if isinstance(f.type, Obj):
        return _to_json(f.type.shape, value)
    if isinstance(f.type, Items):
        return [_to_json(f.type.shape, x) for x in value]
    if f.type is DETAILS:
        return loads_strict(value, "predicate.details")
    return value.value if isinstance(value, Kind) else value


def _to_json(shape: Shape, obj: Any) -> dict[str, Any]:
    if shape is DAGSTER_V1_SHAPE:  # a RunRef, written under v1's names
        return {"run_id": obj.run_id, "storage_id": obj.event_id}
    return {f.json_key: _json_value(f, getattr(obj, f.name)) for f in shape.fields}


class RecordFacts(NamedTuple):
    """What the log indexes and verify compares of one signed record: its digest, idempotency
    key and the fields a store keeps as columns (`STORED_FACTS`), plus the references verify's
    cross-record checks read. From a record (`of`) or straight from payload bytes
    (`scan_payload`, without building the record).

    A named tuple, not a frozen dataclass: one is built per record on the hot path of
    `lineage verify`, where building the whole record cost a seventh of the work.
    """

    record_digest: str  # lowercase hex SHA-256 of the (canonical) payload
    idem_key: str
    kind: str
    asset: str
    partition: str | None
    sha256: str
    recorded_at: str
    inputs: tuple[tuple[str, str, int | None], ...]  # (asset, sha256, log_index)
    supersedes: int | None

    @classmethod
    def of(cls, record: AttributionRecord, payload: bytes | None = None) -> RecordFacts:
        """`payload`: the record's bytes when already written (saves writing them again)."""
        digest = hashlib.sha256(record.to_bytes() if payload is None else payload).hexdigest()
        return cls(
            digest,
            record.idempotency_key(digest),
            record.kind,  # the Kind: equal to (and stored as) its value
            record.asset,
            record.partition,
            record.sha256,
            record.recorded_at,
            tuple([(i.asset, i.sha256, i.log_index) for i in record.inputs]),
            record.supersedes,
        )


#: The facts a store keeps beside each envelope, in RecordFacts' order (verify compares them).
STORED_FACTS = RecordFacts._fields[:7]


def scan_payload(data: bytes) -> RecordFacts:
    """The facts of signed payload bytes, checked exactly as `AttributionRecord.from_bytes`
    checks them (canonical bytes required) but without building the record.

    Raises RecordError naming the field, as `from_bytes` does.
    """
    facts = scan_canonical(data)
    return facts if facts is not None else RecordFacts.of(AttributionRecord.from_bytes(data))


def scan_canonical(data: object) -> RecordFacts | None:
    """The facts of `data` when it is exactly the canonical bytes of a valid record, else None
    (the strict parser then decides, and names the problem). Three ways, fastest first, each
    taking only what it can judge; the tests hold each to the next:

    1. `_PATTERNS`: a regex of the whole canonical text, generated from the field tables, for
       records whose values are all printable ASCII text without escapes, small counts and
       nulls (most records). It matches only texts the writers would write for valid values
       (the calendar of the one date is checked after), with the subject's name equal to the
       asset, so nothing is parsed but the pointers the facts need.
    2. `_MATCH_RECORD`, for other text and integers: orjson's parse, every key and value
       checked as the rewrite checks them, and orjson's sorted-key dump compared with the
       bytes (orjson writes every string as the canonical writer: a test holds it).
    3. `_SCAN_RECORD`, for the rest (numbers, details): every value checked and written with
       the same writers as `to_bytes`; bytes equal to that rewrite hold no unknown, missing
       or duplicate key, no other type or layout, no NaN or unsafe integer (orjson refuses bad
       UTF-8, NaN and trailing data), so the strict parser would build the same record.
    """
    if type(data) is not bytes or len(data) > MAX_RECORD_BYTES:
        return None
    try:
        for version in _PATTERN_ORDER:
            m = _PATTERNS[version].fullmatch(data)
            if m is not None:
                return _PATTERN_FACTS[version](data, m)
        obj = orjson.loads(data)
        version = _VERSIONS[obj["predicateType"]]
        try:
            run_key = _MATCH_RECORD[version](obj)
            plain = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS) == data
        except Exception:  # not plain (or not valid): the rewrite decides
            plain = False
        if not plain:
            text, run_key = _SCAN_RECORD[version](obj)
            if text != data:
                return None
        p = obj["predicate"]
        facts = [p[name] for name in _FACT_FIELDS]
        return _facts(data, run_key, obj["subject"][0]["digest"]["sha256"], p["inputs"], *facts)
    except Exception:  # anything unexpected: the strict parser judges (and names) it
        return None


def _facts(
    data: bytes,
    run_key: str | None,
    sha256: str,
    inputs: list[dict[str, Any]],
    kind: str,
    asset: str,
    partition: str | None,
    recorded_at: str,
    supersedes: int | None,
) -> RecordFacts:
    """RecordFacts of canonical payload `data`, from its subject's digest, its parsed inputs
    and its predicate's values of `_FACT_FIELDS`."""
    digest = hashlib.sha256(data).hexdigest()
    return RecordFacts(
        digest,
        run_key or content_key(digest),
        kind,
        asset,
        partition,
        sha256,
        recorded_at,
        tuple([(i["asset"], i["sha256"], i["log_index"]) for i in inputs]),
        supersedes,
    )


#: The predicate's fields `_facts` takes as they are, by name (= JSON key for these).
_FACT_FIELDS = ("kind", "asset", "partition", "recorded_at", "supersedes")
#: The groups of `_PATTERNS`, read by `_pattern_facts_v*`.
_PATTERN_GROUPS = ("run", "inputs", *_FACT_FIELDS)


# --- the record's generated functions ------------------------------------------------------------


def _generate_record() -> None:
    """The record's validator, and per version its writer, scanner and fast builder."""
    _schema(AttributionRecord, "AttributionRecord", RECORD_FIELDS, extra=("version",), full=False)
    prefix = f'{{"_type":{json_string(STATEMENT_TYPE)},"predicate":'
    for version, table in _PREDICATE.items():
        middle = (
            f',"predicateType":{json_string(_PREDICATE_TYPES[version])},'
            '"subject":[{"digest":{"sha256":"'
        )

        def tail(asset: str) -> str:
            return " + " + repr('"},"name":') + " + _q(" + asset + ") + '}]}'"

        # Writer: from a record.
        exprs = {f.json_key: _write_expr(f, f"r.{f.name}", "write") for f in table}
        body = " + ".join([repr(prefix), *_sorted_object(exprs), repr(middle), "r.sha256"])
        _compile(
            f"def _write_record_v{version}(r):\n    return ({body}{tail('r.asset')}).encode()",
            f"_write_record_v{version}",
        )
        # Scanner: from a parsed statement, every value checked; returns (bytes, run key).
        lines = [f"def _scan_record_v{version}(obj):", "    p = obj['predicate']"]
        for i, f in enumerate(table):
            lines.append(f"    v{i} = p[{f.json_key!r}]")
            if isinstance(f.type, Scalar):
                check = _register(f.type.check, "check")
                call = f"v{i} = {check}(v{i}, {f.error_path!r})"
                lines.append(f"    if v{i} is not None: {call}" if f.optional else f"    {call}")
            if f.name == "run":
                assert isinstance(f.type, Obj) and f.type.shape.identity is not None
                identity = _register(f.type.shape.identity, "identity")
                lines.append(f"    key = None if v{i} is None else {identity}(v{i})")
        sha = _register(_hex64, "check")
        lines.append(
            f"    sha = {sha}(obj['subject'][0]['digest']['sha256'], 'subject[0].digest.sha256')"
        )
        exprs = {f.json_key: _write_expr(f, f"v{i}", "scan") for i, f in enumerate(table)}
        asset = f"v{next(i for i, f in enumerate(table) if f.name == 'asset')}"
        body = " + ".join([repr(prefix), *_sorted_object(exprs), repr(middle), "sha"])
        lines.append(f"    return ({body}{tail(asset)}).encode(), key")
        _compile("\n".join(lines), f"_scan_record_v{version}")
        # Check-only scanner: every key and value as the scanner above checks them, without
        # writing the text; returns the run key. `scan_canonical` compares the bytes.
        lines = [
            f"def _match_record_v{version}(obj):",
            f"    if len(obj) != 4 or obj['_type'] != {STATEMENT_TYPE!r}: raise _NotPlain",
            "    p = obj['predicate']",
            f"    if type(p) is not dict or len(p) != {len(table)}: raise _NotPlain",
        ]
        for i, f in enumerate(table):
            lines += _match_lines(f, f"v{i}", f"p[{f.json_key!r}]")
            if f.name == "run":
                lines.append(f"    key = None if v{i} is None else {identity}(v{i})")
        lines += [
            "    s = obj['subject']",
            "    if type(s) is not list or len(s) != 1: raise _NotPlain",
            "    s = s[0]",
            f"    if type(s) is not dict or len(s) != 2 or s['name'] != {asset}: raise _NotPlain",
            "    g = s['digest']",
            "    if type(g) is not dict or len(g) != 1: raise _NotPlain",
            f"    {sha}(g['sha256'], 'subject[0].digest.sha256')",
            "    return key",
        ]
        _compile("\n".join(lines), f"_match_record_v{version}")
        # Pattern: the whole statement's canonical text when every value is plain ASCII text,
        # a small count or null; the subject's name must repeat the asset (a backreference).
        predicate = _object_pattern(table, named=_PATTERN_GROUPS)
        if predicate is not None:
            pattern = _PATTERNS[version] = re.compile(
                re.escape(prefix.encode())
                + predicate
                + re.escape(middle.encode())
                + rb'(?P<subject_sha256>[0-9a-f]{64})'
                + re.escape(b'"},"name":')
                + rb"(?P=asset)"
                + re.escape(b"}]}")
            )
            # Its facts, from the groups: a matched value needs no check (every pattern is
            # exact), only reading: null, an unescaped string or a count.
            by_name = {f.name: f for f in table}
            groups = [pattern.groupindex[g] for g in (*_PATTERN_GROUPS, "subject_sha256")]
            values = [_plain_read(by_name[name], name) for name in _FACT_FIELDS]
            _compile(
                f"def _pattern_facts_v{version}(data, m):\n"
                f"    run, inputs, {', '.join(_FACT_FIELDS)}, sha = m.group{tuple(groups)}\n"
                "    key = None if run == b'null' else "
                f"{_register(_run_identity(table), 'identity')}(_loads(run))\n"
                "    return _facts(data, key, sha.decode('ascii'), _loads(inputs), "
                f"{', '.join(values)})",
                f"_pattern_facts_v{version}",
            )
        # Fast builder: the record from a parsed statement (shape unchecked: `from_bytes`
        # compares the record's bytes with the input after).
        args = [f"{f.name}={_build_expr(f, f'p[{f.json_key!r}]')}" for f in table]
        _compile(
            f"def _build_record_v{version}(obj):\n"
            "    p = obj['predicate']\n"
            "    return AttributionRecord(sha256=obj['subject'][0]['digest']['sha256'], "
            f"version={version}, {', '.join(args)})",
            f"_build_record_v{version}",
        )


def _run_identity(table: tuple[Field, ...]) -> Callable[[dict[str, Any]], str]:
    (run,) = [f.type for f in table if f.name == "run"]
    assert isinstance(run, Obj) and run.shape.identity is not None
    return run.shape.identity


_NS["AttributionRecord"] = AttributionRecord
_NS["_facts"] = _facts
_NS["_loads"] = orjson.loads
#: Per predicate version, the regex of a plain record's whole canonical text (`scan_canonical`).
_PATTERNS: dict[int, re.Pattern[bytes]] = {}
_generate_record()
_WRITE_RECORD: dict[int, Callable[[AttributionRecord], bytes]] = {
    v: _NS[f"_write_record_v{v}"] for v in _PREDICATE
}
_SCAN_RECORD: dict[int, Callable[[Any], tuple[bytes, str | None]]] = {
    v: _NS[f"_scan_record_v{v}"] for v in _PREDICATE
}
_PATTERN_ORDER = sorted(_PATTERNS, reverse=True)  # the newest version first
_PATTERN_FACTS: dict[int, Callable[[bytes, re.Match[bytes]], RecordFacts]] = {
    v: _NS[f"_pattern_facts_v{v}"] for v in _PATTERNS
}

_MATCH_RECORD: dict[int, Callable[[Any], str | None]] = {
    v: _NS[f"_match_record_v{v}"] for v in _PREDICATE
}
_BUILD_RECORD: dict[int, Callable[[Any], AttributionRecord]] = {
    v: _NS[f"_build_record_v{v}"] for v in _PREDICATE
}
_PREDICATE_SHAPES = {
    v: Shape(
        f"PredicateV{v}",
        table,
        lambda v=v, **values: lambda sha256: AttributionRecord(sha256=sha256, version=v, **values),
    )
    for v, table in _PREDICATE.items()
}
