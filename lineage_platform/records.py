"""Attribution records: the in-toto Statement v1 the log signs, as frozen, validated values.

    rec = AttributionRecord("dataset", "datanet", sha256=digest, recorded_at=utc_timestamp())
    assert AttributionRecord.from_bytes(rec.to_bytes()) == rec  # canonical bytes, strict parse

A record is validated when it is built, so an invalid one cannot exist; parsing is strict (unknown,
missing or duplicate keys, wrong types, non-canonical bytes are all refused) because the bytes are
what gets signed and hashed, and a lenient parser would let two byte strings mean one record.
Every error is a RecordError whose message starts with the JSON path of the offending field.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from lineage_platform.canonical import (
    MAX_SAFE_INT,
    canonical_json,
    es6_number,
    json_string,
    loads_strict,
)
from lineage_platform.errors import RecordError, shown

__all__ = [
    "KINDS",
    "MAX_RECORD_BYTES",
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "AttributionRecord",
    "Contributor",
    "DagsterRef",
    "DvcRef",
    "InputRef",
    "MlflowRef",
    "canonical_json",
    "details_json",
    "utc_timestamp",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "urn:lineage-platform:attribution:v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
KINDS = ("dataset", "model", "valuation", "settlement", "usage-epoch")
#: Refuse larger payloads before parsing them: a log entry is metadata, never data.
MAX_RECORD_BYTES = 1_000_000

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX32 = re.compile(r"[0-9a-f]{32}")
# Control characters (C0, DEL and C1, which holds the 8-bit terminal escape CSI) break logs and
# terminals; lone surrogates cannot be encoded as UTF-8.
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_RFC3339_UTC = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?Z"
)


# --- field checks: each raises RecordError("<field>: <problem>") --------------------------------


def _text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise RecordError(f"{field}: expected a string, got {type(value).__name__}")
    if not value:
        raise RecordError(f"{field}: must not be empty")
    # For ASCII text, "printable" is exactly "none of _FORBIDDEN" and much cheaper to ask.
    if not (value.isascii() and value.isprintable()) and _FORBIDDEN.search(value):
        raise RecordError(f"{field}: must not contain control characters")
    return value


def _opt_text(value: object, field: str) -> str | None:
    return None if value is None else _text(value, field)


def _count(value: object, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise RecordError(f"{field}: expected a non-negative integer, got {type(value).__name__}")
    if not 0 <= value <= MAX_SAFE_INT:
        raise RecordError(f"{field}: expected a non-negative integer below 2**53, got {value}")
    return int(value)


def _opt_count(value: object, field: str) -> int | None:
    return None if value is None else _count(value, field)


def _hex(value: object, field: str, pattern: re.Pattern[str], n: int) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise RecordError(f"{field}: expected {n} lowercase hex characters")
    return value


def _opt_float(value: object, field: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise RecordError(f"{field}: expected a number, got {type(value).__name__}")
    f = float(value)
    if not math.isfinite(f):
        raise RecordError(f"{field}: must be finite, got {value}")
    return f


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
        and value[:4] != "0000"
    ):
        return value
    y, mo, d, h, mi, sec = map(int, m.group(1, 2, 3, 4, 5, 6))
    try:
        datetime(y, mo, d, h, mi, sec)
    except ValueError as e:
        raise RecordError(f"{field}: {e}") from None
    return value


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)  # normalizing a frozen instance inside __post_init__


_KEYSETS: dict[tuple[str, ...], frozenset[str]] = {}


def _keyset(keys: tuple[str, ...]) -> frozenset[str]:
    keyset = _KEYSETS.get(keys)
    if keyset is None:
        keyset = _KEYSETS[keys] = frozenset(keys)
    return keyset


def _strict_object(obj: object, path: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if type(obj) is dict and obj.keys() == _keyset(keys):  # fast accept: exactly those keys
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


def _json_type(obj: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(obj), "number")


def _child(path: str, build: Any, fields: dict[str, Any]) -> Any:
    try:
        return build(**fields)
    except RecordError as e:
        raise RecordError(f"{path}.{e}") from None


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
class DagsterRef:
    """The Dagster materialization a record came from; (run_id, storage_id) is its identity."""

    run_id: str
    storage_id: int

    def __post_init__(self) -> None:
        _text(self.run_id, "run_id")
        _count(self.storage_id, "storage_id")

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "storage_id": self.storage_id}


@dataclass(frozen=True, slots=True)
class DvcRef:
    """A DVC-tracked output: its path in the repo and the md5 DVC recorded in dvc.lock."""

    path: str
    md5: str

    def __post_init__(self) -> None:
        _text(self.path, "path")
        _hex(self.md5, "md5", _HEX32, 32)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "md5": self.md5}


@dataclass(frozen=True, slots=True)
class MlflowRef:
    """The MLflow run that trained a model and, when logged, the LoggedModel id."""

    run_id: str
    model_id: str | None = None

    def __post_init__(self) -> None:
        _text(self.run_id, "run_id")
        _opt_text(self.model_id, "model_id")

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "model_id": self.model_id}


@dataclass(frozen=True, slots=True)
class InputRef:
    """An upstream asset by content hash, plus the log index of its own record when known."""

    asset: str
    sha256: str
    log_index: int | None = None

    def __post_init__(self) -> None:
        _text(self.asset, "asset")
        _hex(self.sha256, "sha256", _HEX64, 64)
        _opt_count(self.log_index, "log_index")

    def to_dict(self) -> dict[str, Any]:
        return {"asset": self.asset, "sha256": self.sha256, "log_index": self.log_index}


@dataclass(frozen=True, slots=True)
class Contributor:
    """One contributor's part (rows, content hash) or share (weight, value and its stderr).

    All six keys are always serialized (null when absent) so the schema is fixed. A contributor
    with several parts appears once per part, so ids may repeat.
    """

    id: str
    rows: int | None = None
    sha256: str | None = None
    weight: float | None = None
    value: float | None = None
    stderr: float | None = None

    def __post_init__(self) -> None:
        _text(self.id, "id")
        _opt_count(self.rows, "rows")
        if self.sha256 is not None:
            _hex(self.sha256, "sha256", _HEX64, 64)
        # Stored as float so 1 and 1.0 (which canonical JSON writes identically) are one value.
        for name in ("weight", "value"):
            given = getattr(self, name)
            if given is not None and (normal := _opt_float(given, name)) is not given:
                _set(self, name, normal)
        stderr = _opt_float(self.stderr, "stderr")
        if stderr is not None and stderr < 0:
            raise RecordError(f"stderr: must not be negative, got {stderr}")
        if stderr is not self.stderr:
            _set(self, "stderr", stderr)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rows": self.rows,
            "sha256": self.sha256,
            "weight": self.weight,
            "value": self.value,
            "stderr": self.stderr,
        }


_REFS: tuple[tuple[str, type], ...] = (
    ("dagster", DagsterRef),
    ("dvc", DvcRef),
    ("mlflow", MlflowRef),
)
_LISTS: tuple[tuple[str, type], ...] = (("inputs", InputRef), ("contributors", Contributor))
_TOP_KEYS = ("_type", "subject", "predicateType", "predicate")
_TOP_KEYSET = frozenset(_TOP_KEYS)
_SUBJECT_KEYS = ("name", "digest")
_PREDICATE_KEYS = (
    "kind",
    "asset",
    "data_version",
    "code_version",
    "dagster",
    "dvc",
    "mlflow",
    "partition",
    "inputs",
    "contributors",
    "recorded_at",
    "details",
    "supersedes",
)


@dataclass(frozen=True, slots=True)
class AttributionRecord:
    """What was materialized (asset, content sha256), from what, by whom, and where it is tracked.

    `details` is the kind-specific body as canonical JSON text (so the record stays hashable);
    any JSON object text is accepted and normalized to canonical form. `supersedes` is the log
    index of a record this one corrects: the log is never edited. `partition` is the Dagster
    partition key of a partitioned asset's materialization (each partition is its own artifact).
    """

    kind: str
    asset: str
    sha256: str
    recorded_at: str
    data_version: str | None = None
    code_version: str | None = None
    dagster: DagsterRef | None = None
    dvc: DvcRef | None = None
    mlflow: MlflowRef | None = None
    inputs: tuple[InputRef, ...] = ()
    contributors: tuple[Contributor, ...] = ()
    details: str | None = None
    supersedes: int | None = None
    partition: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise RecordError(
                f"predicate.kind: expected one of {', '.join(KINDS)}, got {self.kind!r:.60}"
            )
        _text(self.asset, "predicate.asset")
        _hex(self.sha256, "subject[0].digest.sha256", _HEX64, 64)
        _timestamp(self.recorded_at, "predicate.recorded_at")
        _opt_text(self.data_version, "predicate.data_version")
        _opt_text(self.code_version, "predicate.code_version")
        for name, cls in _REFS:
            ref = getattr(self, name)
            if ref is not None and not isinstance(ref, cls):
                raise RecordError(f"predicate.{name}: expected {cls.__name__} or None")
        for name, cls in _LISTS:
            items = getattr(self, name)
            if not isinstance(items, list | tuple):
                raise RecordError(f"predicate.{name}: expected a tuple of {cls.__name__}")
            for i, item in enumerate(items):
                if not isinstance(item, cls):
                    raise RecordError(f"predicate.{name}[{i}]: expected {cls.__name__}")
            if not isinstance(items, tuple):
                _set(self, name, tuple(items))
        if self.details is not None:
            if not isinstance(self.details, str):
                raise RecordError(
                    "predicate.details: expected canonical JSON text (see details_json)"
                )
            parsed = loads_strict(self.details, "predicate.details")
            if not isinstance(parsed, dict):
                raise RecordError(
                    f"predicate.details: expected an object, got {_json_type(parsed)}"
                )
            _set(self, "details", _canonical_details(parsed))
        _opt_count(self.supersedes, "predicate.supersedes")
        _opt_text(self.partition, "predicate.partition")

    # --- serialization --------------------------------------------------------------------------

    def details_obj(self) -> dict[str, Any] | None:
        """The kind-specific body as a dict, or None."""
        if self.details is None:
            return None
        parsed: dict[str, Any] = loads_strict(self.details, "predicate.details")
        return parsed

    def to_statement(self) -> dict[str, Any]:
        """The in-toto Statement v1 as plain JSON values."""
        return {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": self.asset, "digest": {"sha256": self.sha256}}],
            "predicateType": PREDICATE_TYPE,
            "predicate": {
                "kind": self.kind,
                "asset": self.asset,
                "data_version": self.data_version,
                "code_version": self.code_version,
                "dagster": None if self.dagster is None else self.dagster.to_dict(),
                "dvc": None if self.dvc is None else self.dvc.to_dict(),
                "mlflow": None if self.mlflow is None else self.mlflow.to_dict(),
                "partition": self.partition,
                "inputs": [i.to_dict() for i in self.inputs],
                "contributors": [c.to_dict() for c in self.contributors],
                "recorded_at": self.recorded_at,
                "details": self.details_obj(),
                "supersedes": self.supersedes,
            },
        }

    def to_bytes(self) -> bytes:
        """RFC 8785 canonical JSON of the statement: the exact bytes that get signed.

        Written field by field in sorted-key order rather than via `canonical_json`, because the
        schema is fixed and validated: this is the hot path of every append (equality with
        `canonical_json(self.to_statement())` is property-tested).
        """
        q = json_string
        data = "".join(
            (
                _PREFIX,
                q(self.asset),
                ',"code_version":',
                _opt_str(self.code_version),
                ',"contributors":[',
                ",".join([_contributor_json(c) for c in self.contributors]),
                '],"dagster":',
                _dagster_json(self.dagster),
                ',"data_version":',
                _opt_str(self.data_version),
                ',"details":',
                "null" if self.details is None else self.details,
                ',"dvc":',
                _dvc_json(self.dvc),
                ',"inputs":[',
                ",".join([_input_json(i) for i in self.inputs]),
                '],"kind":',
                q(self.kind),
                ',"mlflow":',
                _mlflow_json(self.mlflow),
                ',"partition":',
                _opt_str(self.partition),
                ',"recorded_at":"',
                self.recorded_at,
                '","supersedes":',
                "null" if self.supersedes is None else str(self.supersedes),
                _MIDDLE,
                self.sha256,
                '"},"name":',
                q(self.asset),
                "}]}",
            )
        ).encode("utf-8")
        if len(data) > MAX_RECORD_BYTES:
            raise RecordError(
                f"statement: {len(data)} bytes exceeds the {MAX_RECORD_BYTES}-byte record limit"
            )
        return data

    def digest(self) -> str:
        """Lowercase hex SHA-256 of `to_bytes()`."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def idempotency_key(self) -> str:
        """One materialization is logged at most once: keyed by its Dagster event, else content."""
        if self.dagster is not None:
            return f"dagster:{self.dagster.run_id}:{self.dagster.storage_id}"
        return f"sha256:{self.digest()}"

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
        if obj["predicateType"] != PREDICATE_TYPE:
            raise RecordError(
                f"predicateType: expected {PREDICATE_TYPE!r}, got {obj['predicateType']!r:.60}"
            )
        subjects = obj["subject"]
        if not isinstance(subjects, list) or len(subjects) != 1:
            raise RecordError("subject: expected an array with exactly one subject")
        subject = _strict_object(subjects[0], "subject[0]", _SUBJECT_KEYS)
        digest = _strict_object(subject["digest"], "subject[0].digest", ("sha256",))
        p = _strict_object(obj["predicate"], "predicate", _PREDICATE_KEYS)
        if subject["name"] != p["asset"]:
            raise RecordError("subject[0].name: must equal predicate.asset")

        # Both build straight from an object with exactly the right keys (the common case),
        # naming the path only when something is wrong; the messages are _child's.
        def ref(name: str, build: type[Any], keys: tuple[str, ...]) -> Any:
            value = p[name]
            if value is None:
                return None
            if type(value) is dict and value.keys() == _keyset(keys):
                try:
                    return build(**value)
                except RecordError as e:
                    raise RecordError(f"predicate.{name}.{e}") from None
            return _child(
                f"predicate.{name}", build, _strict_object(value, f"predicate.{name}", keys)
            )

        def items(name: str, build: type[Any], keys: tuple[str, ...]) -> tuple[Any, ...]:
            raw = p[name]
            if not isinstance(raw, list):
                raise RecordError(f"predicate.{name}: expected an array, got {_json_type(raw)}")
            keyset = _keyset(keys)
            out = []
            for i, item in enumerate(raw):
                if type(item) is dict and item.keys() == keyset:
                    try:
                        out.append(build(**item))
                        continue
                    except RecordError as e:
                        raise RecordError(f"predicate.{name}[{i}].{e}") from None
                path = f"predicate.{name}[{i}]"
                out.append(_child(path, build, _strict_object(item, path, keys)))
            return tuple(out)

        details = p["details"]
        if details is not None:
            if not isinstance(details, dict):
                raise RecordError(
                    f"predicate.details: expected an object or null, got {_json_type(details)}"
                )
            details = _canonical_details(details)
        return cls(
            kind=p["kind"],
            asset=p["asset"],
            sha256=digest["sha256"],
            recorded_at=p["recorded_at"],
            data_version=p["data_version"],
            code_version=p["code_version"],
            dagster=ref("dagster", DagsterRef, ("run_id", "storage_id")),
            dvc=ref("dvc", DvcRef, ("path", "md5")),
            mlflow=ref("mlflow", MlflowRef, ("run_id", "model_id")),
            inputs=items("inputs", InputRef, ("asset", "sha256", "log_index")),
            contributors=items(
                "contributors", Contributor, ("id", "rows", "sha256", "weight", "value", "stderr")
            ),
            details=details,
            supersedes=p["supersedes"],
            partition=p["partition"],
        )

    @classmethod
    def _from_canonical(cls, obj: Any) -> AttributionRecord:
        """The record a canonical statement holds, for `from_bytes` to check by re-encoding.

        Only safe behind that check: the statement's shape is not checked here.
        """
        p = obj["predicate"]
        dagster, dvc, mlflow, details = p["dagster"], p["dvc"], p["mlflow"], p["details"]
        return cls(
            kind=p["kind"],
            asset=p["asset"],
            sha256=obj["subject"][0]["digest"]["sha256"],
            recorded_at=p["recorded_at"],
            data_version=p["data_version"],
            code_version=p["code_version"],
            dagster=None if dagster is None else DagsterRef(**dagster),
            dvc=None if dvc is None else DvcRef(**dvc),
            mlflow=None if mlflow is None else MlflowRef(**mlflow),
            inputs=tuple([InputRef(**i) for i in p["inputs"]]),
            contributors=tuple([Contributor(**c) for c in p["contributors"]]),
            details=None if details is None else _canonical_details(details),
            supersedes=p["supersedes"],
            partition=p["partition"],
        )

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
        # Fast path for canonical bytes (what every stored envelope carries): the C decoder
        # without hooks, the fields taken without the structural checks, then the re-encoding
        # must equal the input. Canonical bytes hold no duplicate keys, NaN, unsafe integers
        # or bad UTF-8, and have exactly the statement's shape (to_bytes writes it), so the
        # strict parser would build the same record; the field values are validated either
        # way. Anything else goes the strict way, which also names the problem.
        try:
            # orjson: strict UTF-8, no NaN, no trailing data, and about twice the C json's speed.
            fast = cls._from_canonical(orjson.loads(data))
            if fast.to_bytes() == data:
                return fast
        except Exception:  # the strict path below decides, with its own message
            pass
        record = cls.from_statement(loads_strict(data, "payload"))
        if require_canonical and record.to_bytes() != data:
            raise RecordError("payload: not RFC 8785 canonical JSON (re-encoding differs)")
        return record


_PREFIX = f'{{"_type":{json_string(STATEMENT_TYPE)},"predicate":{{"asset":'
_MIDDLE = f'}},"predicateType":{json_string(PREDICATE_TYPE)},"subject":[{{"digest":{{"sha256":"'


def _opt_str(s: str | None) -> str:
    return "null" if s is None else json_string(s)


def _opt_num(x: float | int | None) -> str:
    if x is None:
        return "null"
    return str(x) if type(x) is int else es6_number(x)


def _dagster_json(d: DagsterRef | None) -> str:
    if d is None:
        return "null"
    return f'{{"run_id":{json_string(d.run_id)},"storage_id":{d.storage_id}}}'


def _dvc_json(d: DvcRef | None) -> str:
    return "null" if d is None else f'{{"md5":"{d.md5}","path":{json_string(d.path)}}}'


def _mlflow_json(m: MlflowRef | None) -> str:
    if m is None:
        return "null"
    return f'{{"model_id":{_opt_str(m.model_id)},"run_id":{json_string(m.run_id)}}}'


def _contributor_json(c: Contributor) -> str:
    sha = "null" if c.sha256 is None else '"' + c.sha256 + '"'
    return (
        f'{{"id":{json_string(c.id)},"rows":{_opt_num(c.rows)},"sha256":{sha},'
        f'"stderr":{_opt_num(c.stderr)},"value":{_opt_num(c.value)},'
        f'"weight":{_opt_num(c.weight)}}}'
    )


def _input_json(i: InputRef) -> str:
    return (
        f'{{"asset":{json_string(i.asset)},"log_index":{_opt_num(i.log_index)},'
        f'"sha256":"{i.sha256}"}}'
    )


def _canonical_details(obj: dict[str, Any]) -> str:
    try:
        return canonical_json(obj).decode("utf-8")
    except RecordError as e:
        # canonical_json names paths from "$"; re-root them at the field.
        raise RecordError(f"predicate.details{str(e)[1:]}") from None
