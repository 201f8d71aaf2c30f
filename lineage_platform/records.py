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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
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

__all__ = [
    "KINDS",
    "MAX_RECORD_BYTES",
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "PREDICATE_TYPE_V1",
    "STATEMENT_TYPE",
    "AttributionRecord",
    "Contributor",
    "DvcRef",
    "InputRef",
    "MlflowRef",
    "PayloadFacts",
    "RunRef",
    "canonical_json",
    "details_json",
    "idempotency_key",
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
KINDS = ("dataset", "model", "valuation", "settlement", "usage-epoch")
#: Refuse larger payloads before parsing them: a log entry is metadata, never data.
MAX_RECORD_BYTES = 1_000_000

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


# --- what each value object requires, as plain-value checks: the dataclasses run them on
# construction and `scan_payload` on parsed JSON, so both accept exactly the same values. -------


def _check_run(orchestrator: object, run_id: object, event_id: object) -> None:
    if (
        not isinstance(orchestrator, str)
        or not _ORCHESTRATOR.fullmatch(orchestrator)
        or orchestrator == "sha256"
    ):
        raise RecordError(
            "orchestrator: expected a lowercase name like 'dagster' (a-z, 0-9, '.', '_', '-'; "
            f"not 'sha256'), got {orchestrator!r:.60}"
        )
    _text(run_id, "run_id")
    _count(event_id, "event_id")


def _check_dagster(run_id: object, storage_id: object) -> None:
    """A v1 record's `dagster` object: the run reference as v1 wrote it."""
    _text(run_id, "run_id")
    _count(storage_id, "storage_id")


def idempotency_key(orchestrator: str, run_id: str, event_id: int) -> str:
    """The log's key for one source event: `<orchestrator>:<run_id>:<event_id>`.

    The one place the format is written (stores parse it back in `source_cursor`); for Dagster
    it is `dagster:<run_id>:<storage_id>`, as v1 records were keyed, so re-syncing an old log
    stays idempotent. A record without a run reference is keyed `sha256:<digest>` instead.
    """
    return f"{orchestrator}:{run_id}:{event_id}"


def _check_dvc(path: object, md5: object) -> None:
    _text(path, "path")
    _hex(md5, "md5", _HEX32, 32)


def _check_mlflow(run_id: object, model_id: object) -> None:
    _text(run_id, "run_id")
    _opt_text(model_id, "model_id")


def _check_input(asset: object, sha256: object, log_index: object) -> None:
    _text(asset, "asset")
    _hex(sha256, "sha256", _HEX64, 64)
    _opt_count(log_index, "log_index")


def _check_contributor(
    id: object, rows: object, sha256: object, weight: object, value: object, stderr: object
) -> tuple[float | None, float | None, float | None]:
    """Checks, and returns weight, value and stderr as floats (1 and 1.0 are one value)."""
    _text(id, "id")
    _opt_count(rows, "rows")
    if sha256 is not None:
        _hex(sha256, "sha256", _HEX64, 64)
    if weight is None and value is None and stderr is None:  # a part, not a share
        return None, None, None
    normal = _opt_float(weight, "weight"), _opt_float(value, "value")
    err = _opt_float(stderr, "stderr")
    if err is not None and err < 0:
        raise RecordError(f"stderr: must not be negative, got {err}")
    return normal[0], normal[1], err


def _check_statement(
    kind: object,
    asset: object,
    sha256: object,
    recorded_at: object,
    data_version: object,
    code_version: object,
    supersedes: object,
    partition: object,
) -> None:
    """The record's own scalar fields (the nested values check themselves)."""
    if kind not in KINDS:
        raise RecordError(f"predicate.kind: expected one of {', '.join(KINDS)}, got {kind!r:.60}")
    _text(asset, "predicate.asset")
    _hex(sha256, "subject[0].digest.sha256", _HEX64, 64)
    _timestamp(recorded_at, "predicate.recorded_at")
    _opt_text(data_version, "predicate.data_version")
    _opt_text(code_version, "predicate.code_version")
    _opt_count(supersedes, "predicate.supersedes")
    _opt_text(partition, "predicate.partition")


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
class RunRef:
    """The orchestrator event a record came from: (orchestrator, run_id, event_id) is its
    identity and its idempotency key. `event_id` orders one orchestrator's events (Dagster's
    event storage id); a v1 record's `dagster` object reads as RunRef("dagster", ...)."""

    orchestrator: str
    run_id: str
    event_id: int

    def __post_init__(self) -> None:
        _check_run(self.orchestrator, self.run_id, self.event_id)

    def to_dict(self) -> dict[str, Any]:
        return {"orchestrator": self.orchestrator, "run_id": self.run_id, "event_id": self.event_id}

    def key(self) -> str:
        """This event's idempotency key (see `idempotency_key`)."""
        return idempotency_key(self.orchestrator, self.run_id, self.event_id)


@dataclass(frozen=True, slots=True)
class DvcRef:
    """A DVC-tracked output: its path in the repo and the md5 DVC recorded in dvc.lock."""

    path: str
    md5: str

    def __post_init__(self) -> None:
        _check_dvc(self.path, self.md5)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "md5": self.md5}


@dataclass(frozen=True, slots=True)
class MlflowRef:
    """The MLflow run that trained a model and, when logged, the LoggedModel id."""

    run_id: str
    model_id: str | None = None

    def __post_init__(self) -> None:
        _check_mlflow(self.run_id, self.model_id)

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "model_id": self.model_id}


@dataclass(frozen=True, slots=True)
class InputRef:
    """An upstream asset by content hash, plus the log index of its own record when known."""

    asset: str
    sha256: str
    log_index: int | None = None

    def __post_init__(self) -> None:
        _check_input(self.asset, self.sha256, self.log_index)

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
        normal = _check_contributor(
            self.id, self.rows, self.sha256, self.weight, self.value, self.stderr
        )
        # Stored as float so 1 and 1.0 (which canonical JSON writes identically) are one value.
        for name, given, value in zip(
            ("weight", "value", "stderr"),
            (self.weight, self.value, self.stderr),
            normal,
            strict=True,
        ):
            if value is not given:
                _set(self, name, value)

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
    ("run", RunRef),
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
    "run",
    "dvc",
    "mlflow",
    "partition",
    "inputs",
    "contributors",
    "recorded_at",
    "details",
    "supersedes",
)
_PREDICATE_KEYS_V1 = tuple("dagster" if k == "run" else k for k in _PREDICATE_KEYS)


@dataclass(frozen=True, slots=True)
class AttributionRecord:
    """What was materialized (asset, content sha256), from what, by whom, and where it is tracked.

    `details` is the kind-specific body as canonical JSON text (so the record stays hashable);
    any JSON object text is accepted and normalized to canonical form. `supersedes` is the log
    index of a record this one corrects: the log is never edited. `partition` is the Dagster
    partition key of a partitioned asset's materialization (each partition is its own artifact).
    `run` is the orchestrator event it came from. `version` is the predicate version it is
    written as: 2 for new records, 1 for records parsed from v1 bytes (their `run` is
    Dagster's; they keep their exact bytes and digest).
    """

    kind: str
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
        _check_statement(
            self.kind,
            self.asset,
            self.sha256,
            self.recorded_at,
            self.data_version,
            self.code_version,
            self.supersedes,
            self.partition,
        )
        if type(self.version) is not int or self.version not in _PREDICATE_TYPES:
            raise RecordError(f"predicateType: version {self.version!r:.20} is not 1 or 2")
        if self.version == 1 and self.run is not None and self.run.orchestrator != "dagster":
            raise RecordError("predicate.dagster: a v1 record's run is Dagster's")
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

    # --- serialization --------------------------------------------------------------------------

    def details_obj(self) -> dict[str, Any] | None:
        """The kind-specific body as a dict, or None."""
        if self.details is None:
            return None
        parsed: dict[str, Any] = loads_strict(self.details, "predicate.details")
        return parsed

    def to_statement(self) -> dict[str, Any]:
        """The in-toto Statement v1 as plain JSON values."""
        run = self.run
        predicate: dict[str, Any] = {"kind": self.kind}
        if self.version == 1:
            predicate["dagster"] = (
                None if run is None else {"run_id": run.run_id, "storage_id": run.event_id}
            )
        else:
            predicate["run"] = None if run is None else run.to_dict()
        return {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": self.asset, "digest": {"sha256": self.sha256}}],
            "predicateType": _PREDICATE_TYPES[self.version],
            "predicate": predicate
            | {
                "asset": self.asset,
                "data_version": self.data_version,
                "code_version": self.code_version,
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
        r, v, m = self.run, self.dvc, self.mlflow
        data = _statement_bytes(
            self.version,
            self.kind,
            self.asset,
            self.sha256,
            self.recorded_at,
            self.data_version,
            self.code_version,
            "null" if r is None else _run_json(self.version, r.orchestrator, r.run_id, r.event_id),
            "null" if v is None else _dvc_json(v.path, v.md5),
            "null" if m is None else _mlflow_json(m.run_id, m.model_id),
            ",".join([_input_json(i.asset, i.sha256, i.log_index) for i in self.inputs]),
            ",".join(
                [
                    _contributor_json(c.id, c.rows, c.sha256, c.weight, c.value, c.stderr)
                    for c in self.contributors
                ]
            ),
            self.details,
            self.supersedes,
            self.partition,
        )
        if len(data) > MAX_RECORD_BYTES:
            raise RecordError(
                f"statement: {len(data)} bytes exceeds the {MAX_RECORD_BYTES}-byte record limit"
            )
        return data

    def digest(self) -> str:
        """Lowercase hex SHA-256 of `to_bytes()`."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def idempotency_key(self) -> str:
        """One event is logged at most once: keyed by its run reference, else by content."""
        if self.run is not None:
            return self.run.key()
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
        ptype = obj["predicateType"]
        version = _VERSIONS.get(ptype) if type(ptype) is str else None
        if version is None:
            raise RecordError(
                f"predicateType: expected {PREDICATE_TYPE!r} (or v1), got {ptype!r:.60}"
            )
        subjects = obj["subject"]
        if not isinstance(subjects, list) or len(subjects) != 1:
            raise RecordError("subject: expected an array with exactly one subject")
        subject = _strict_object(subjects[0], "subject[0]", _SUBJECT_KEYS)
        digest = _strict_object(subject["digest"], "subject[0].digest", ("sha256",))
        p = _strict_object(
            obj["predicate"], "predicate", _PREDICATE_KEYS if version == 2 else _PREDICATE_KEYS_V1
        )
        if subject["name"] != p["asset"]:
            raise RecordError("subject[0].name: must equal predicate.asset")

        # Both build straight from an object with exactly the right keys (the common case),
        # naming the path only when something is wrong; the messages are _child's.
        def ref(name: str, build: Callable[..., Any], keys: tuple[str, ...]) -> Any:
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
            run=ref("run", RunRef, ("orchestrator", "run_id", "event_id"))
            if version == 2
            else ref("dagster", _dagster_run, ("run_id", "storage_id")),
            dvc=ref("dvc", DvcRef, ("path", "md5")),
            mlflow=ref("mlflow", MlflowRef, ("run_id", "model_id")),
            inputs=items("inputs", InputRef, ("asset", "sha256", "log_index")),
            contributors=items(
                "contributors", Contributor, ("id", "rows", "sha256", "weight", "value", "stderr")
            ),
            details=details,
            supersedes=p["supersedes"],
            partition=p["partition"],
            version=version,
        )

    @classmethod
    def _from_canonical(cls, obj: Any) -> AttributionRecord:
        """The record a canonical statement holds, for `from_bytes` to check by re-encoding.

        Only safe behind that check: the statement's shape is not checked here.
        """
        p = obj["predicate"]
        dvc, mlflow, details = p["dvc"], p["mlflow"], p["details"]
        version = _VERSIONS[obj["predicateType"]]
        if version == 2:
            run = None if p["run"] is None else RunRef(**p["run"])
        else:
            run = None if p["dagster"] is None else _dagster_run(**p["dagster"])
        return cls(
            kind=p["kind"],
            asset=p["asset"],
            sha256=obj["subject"][0]["digest"]["sha256"],
            recorded_at=p["recorded_at"],
            data_version=p["data_version"],
            code_version=p["code_version"],
            run=run,
            dvc=None if dvc is None else DvcRef(**dvc),
            mlflow=None if mlflow is None else MlflowRef(**mlflow),
            inputs=tuple([InputRef(**i) for i in p["inputs"]]),
            contributors=tuple([Contributor(**c) for c in p["contributors"]]),
            details=None if details is None else _canonical_details(details),
            supersedes=p["supersedes"],
            partition=p["partition"],
            version=version,
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
        # Fast path for canonical bytes (what every stored envelope carries): the record built
        # from the parsed statement without the structural checks (its values are checked on
        # construction), then its re-encoding must equal the input, which only the canonical
        # bytes of exactly the statement's shape do. Anything else goes the strict way, which
        # also names the problem. (`scan_payload` is the same gate without the record.)
        try:
            fast = cls._from_canonical(orjson.loads(data))
            if fast.to_bytes() == data:
                return fast
        except Exception:  # the strict path below decides, with its own message
            pass
        record = cls.from_statement(loads_strict(data, "payload"))
        if require_canonical and record.to_bytes() != data:
            raise RecordError("payload: not RFC 8785 canonical JSON (re-encoding differs)")
        return record


class PayloadFacts(NamedTuple):
    """What verification reads from one signed payload (see `scan_payload`).

    A named tuple, not a frozen dataclass: one is built per record on the hot path of
    `lineage verify`, where building the whole record cost a seventh of the work.
    """

    digest: str  # lowercase hex SHA-256 of the (canonical) payload
    idem_key: str
    kind: str
    asset: str
    partition: str | None
    sha256: str
    recorded_at: str
    inputs: tuple[tuple[str, str, int | None], ...]  # (asset, sha256, log_index)
    supersedes: int | None

    @classmethod
    def of(cls, record: AttributionRecord) -> PayloadFacts:
        return cls(
            record.digest(),
            record.idempotency_key(),
            record.kind,
            record.asset,
            record.partition,
            record.sha256,
            record.recorded_at,
            tuple([(i.asset, i.sha256, i.log_index) for i in record.inputs]),
            record.supersedes,
        )


def scan_payload(data: bytes) -> PayloadFacts:
    """The facts of signed payload bytes, checked exactly as `AttributionRecord.from_bytes`
    checks them (canonical bytes required) but without building the record.

    Raises RecordError naming the field, as `from_bytes` does.
    """
    facts = _scan_canonical(data)
    return facts if facts is not None else PayloadFacts.of(AttributionRecord.from_bytes(data))


def _scan_canonical(data: object) -> PayloadFacts | None:
    """The facts of `data` when it is exactly the canonical bytes of a valid record, else None
    (the strict parser then decides, and names the problem).

    Each value goes through the dataclasses' own checks and `to_bytes`'s own writers; bytes
    equal to that rewrite hold no unknown, missing or duplicate key, no other type or layout,
    no NaN or unsafe integer (orjson refuses bad UTF-8, NaN and trailing data), so the strict
    parser would build the same record.
    """
    if type(data) is not bytes or len(data) > MAX_RECORD_BYTES:
        return None
    try:
        obj = orjson.loads(data)
        version = _VERSIONS[obj["predicateType"]]
        p = obj["predicate"]
        kind, asset, recorded_at = p["kind"], p["asset"], p["recorded_at"]
        data_version, code_version = p["data_version"], p["code_version"]
        supersedes, partition = p["supersedes"], p["partition"]
        sha256 = obj["subject"][0]["digest"]["sha256"]
        _check_statement(
            kind, asset, sha256, recorded_at, data_version, code_version, supersedes, partition
        )
        dvc, mlflow = p["dvc"], p["mlflow"]
        idem_key = None
        run_json = dvc_json = mlflow_json = "null"
        if version == 2:
            run = p["run"]
            if run is not None:
                orchestrator, run_id, event_id = run["orchestrator"], run["run_id"], run["event_id"]
                _check_run(orchestrator, run_id, event_id)
        else:
            run = p["dagster"]
            if run is not None:
                orchestrator, run_id, event_id = "dagster", run["run_id"], run["storage_id"]
                _check_dagster(run_id, event_id)
        if run is not None:
            run_json = _run_json(version, orchestrator, run_id, event_id)
            idem_key = idempotency_key(orchestrator, run_id, event_id)
        if dvc is not None:
            path, md5 = dvc["path"], dvc["md5"]
            _check_dvc(path, md5)
            dvc_json = _dvc_json(path, md5)
        if mlflow is not None:
            run_id, model_id = mlflow["run_id"], mlflow["model_id"]
            _check_mlflow(run_id, model_id)
            mlflow_json = _mlflow_json(run_id, model_id)
        inputs = tuple([(i["asset"], i["sha256"], i["log_index"]) for i in p["inputs"]])
        for asset_, sha_, index in inputs:
            _check_input(asset_, sha_, index)
        contributors = []
        for c in p["contributors"]:
            id_, rows, sha = c["id"], c["rows"], c["sha256"]
            shares = _check_contributor(id_, rows, sha, c["weight"], c["value"], c["stderr"])
            contributors.append(_contributor_json(id_, rows, sha, *shares))
        details = p["details"]
        if details is not None:
            if type(details) is not dict:
                return None
            details = _canonical_details(details)
        text = _statement_bytes(
            version,
            kind,
            asset,
            sha256,
            recorded_at,
            data_version,
            code_version,
            run_json,
            dvc_json,
            mlflow_json,
            ",".join([_input_json(*i) for i in inputs]),
            ",".join(contributors),
            details,
            supersedes,
            partition,
        )
    except Exception:  # anything unexpected: the strict parser judges (and names) it
        return None
    if text != data:
        return None
    digest = hashlib.sha256(data).hexdigest()
    return PayloadFacts(
        digest,
        idem_key or f"sha256:{digest}",
        kind,
        asset,
        partition,
        sha256,
        recorded_at,
        inputs,
        supersedes,
    )


def _dagster_run(run_id: str, storage_id: int) -> RunRef:
    """A v1 record's `dagster` object as the run reference it is (checked with v1's names)."""
    _check_dagster(run_id, storage_id)
    return RunRef("dagster", run_id, storage_id)


_PREFIX = f'{{"_type":{json_string(STATEMENT_TYPE)},"predicate":{{"asset":'
_MIDDLE = {
    version: f'}},"predicateType":{json_string(t)},"subject":[{{"digest":{{"sha256":"'
    for version, t in _PREDICATE_TYPES.items()
}


def _opt_str(s: str | None) -> str:
    return "null" if s is None else json_string(s)


def _opt_num(x: float | int | None) -> str:
    if x is None:
        return "null"
    return str(x) if type(x) is int else es6_number(x)


# The canonical writers take checked plain values, so that `to_bytes` and `scan_payload` write
# (and therefore accept) byte for byte the same statement.


def _statement_bytes(
    version: int,
    kind: str,
    asset: str,
    sha256: str,
    recorded_at: str,
    data_version: str | None,
    code_version: str | None,
    run: str,
    dvc: str,
    mlflow: str,
    inputs: str,
    contributors: str,
    details: str | None,
    supersedes: int | None,
    partition: str | None,
) -> bytes:
    """The statement's canonical bytes; nested values come already written (arrays without
    their brackets), `details` as canonical JSON text. `run` sits where its key sorts: v1's
    "dagster" after "contributors", v2's "run" after "recorded_at"."""
    q = json_string
    v1 = version == 1
    return "".join(
        (
            _PREFIX,
            q(asset),
            ',"code_version":',
            _opt_str(code_version),
            ',"contributors":[',
            contributors,
            '],"dagster":' if v1 else "]",
            run if v1 else "",
            ',"data_version":',
            _opt_str(data_version),
            ',"details":',
            "null" if details is None else details,
            ',"dvc":',
            dvc,
            ',"inputs":[',
            inputs,
            '],"kind":',
            q(kind),
            ',"mlflow":',
            mlflow,
            ',"partition":',
            _opt_str(partition),
            ',"recorded_at":"',
            recorded_at,
            '"' if v1 else '","run":',
            "" if v1 else run,
            ',"supersedes":',
            "null" if supersedes is None else str(supersedes),
            _MIDDLE[version],
            sha256,
            '"},"name":',
            q(asset),
            "}]}",
        )
    ).encode("utf-8")


def _run_json(version: int, orchestrator: str, run_id: str, event_id: int) -> str:
    if version == 1:  # orchestrator is "dagster", checked on construction
        return f'{{"run_id":{json_string(run_id)},"storage_id":{event_id}}}'
    return (
        f'{{"event_id":{event_id},"orchestrator":"{orchestrator}","run_id":{json_string(run_id)}}}'
    )


def _dvc_json(path: str, md5: str) -> str:
    return f'{{"md5":"{md5}","path":{json_string(path)}}}'


def _mlflow_json(run_id: str, model_id: str | None) -> str:
    return f'{{"model_id":{_opt_str(model_id)},"run_id":{json_string(run_id)}}}'


def _contributor_json(
    id: str,
    rows: int | None,
    sha256: str | None,
    weight: float | None,
    value: float | None,
    stderr: float | None,
) -> str:
    sha = "null" if sha256 is None else '"' + sha256 + '"'
    return (
        f'{{"id":{json_string(id)},"rows":{_opt_num(rows)},"sha256":{sha},'
        f'"stderr":{_opt_num(stderr)},"value":{_opt_num(value)},'
        f'"weight":{_opt_num(weight)}}}'
    )


def _input_json(asset: str, sha256: str, log_index: int | None) -> str:
    return f'{{"asset":{json_string(asset)},"log_index":{_opt_num(log_index)},"sha256":"{sha256}"}}'


def _canonical_details(obj: dict[str, Any]) -> str:
    try:
        return canonical_json(obj).decode("utf-8")
    except RecordError as e:
        # canonical_json names paths from "$"; re-root them at the field.
        raise RecordError(f"predicate.details{str(e)[1:]}") from None
