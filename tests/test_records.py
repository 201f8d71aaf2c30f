"""Canonical JSON against RFC 8785 and the `rfc8785` package; records built, parsed, refused."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import pickle
import re
import struct
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from lineage_platform import identifiers
from lineage_platform import records as records_module
from lineage_platform.attest import append_records, check_not_future
from lineage_platform.canonical import es6_number, json_string, loads_strict
from lineage_platform.errors import RecordError
from lineage_platform.records import (
    KINDS,
    LAST_YEAR,
    MAX_RECORD_BYTES,
    PREDICATE_TYPE,
    PREDICATE_TYPE_V1,
    RECORD_FIELDS,
    RECORD_FIELDS_V1,
    STATEMENT_TYPE,
    AttributionRecord,
    Contributor,
    DvcRef,
    InputRef,
    Kind,
    MlflowRef,
    RecordFacts,
    RunRef,
    SettlementDetails,
    ValuationDetails,
    canonical_json,
    details_json,
    idempotency_key,
    scan_canonical,
    scan_payload,
    utc_timestamp,
)
from lineage_platform.signing import Envelope, SigningKey
from lineage_platform.stores import MAX_SKEW_S

H1 = hashlib.sha256(b"one").hexdigest()
H2 = hashlib.sha256(b"two").hexdigest()
MD5 = "d41d8cd98f00b204e9800998ecf8427e"
T = "2026-11-24T20:00:00.123456Z"


def loose(value: object) -> Any:
    """A value of the wrong type, for tests of runtime validation."""
    return value


def full_record(**overrides: Any) -> AttributionRecord:
    fields: dict[str, Any] = dict(
        kind="model",
        asset="models/digits",
        sha256=H1,
        recorded_at=T,
        data_version="v3",
        code_version="git:abc123",
        run=RunRef("dagster", "run-1", 42),
        dvc=DvcRef("data/datanet.parquet", MD5),
        mlflow=MlflowRef("mlrun", "m-1"),
        inputs=(InputRef("datanet", H2, 3),),
        contributors=(
            Contributor("alice", rows=10, sha256=H2),
            Contributor("bob", weight=0.25, value=-1.5, stderr=0.0),
        ),
        details=details_json({"method": "exact", "seed": 7, "samples": 64}),
        supersedes=1,
        partition="alice",
    )
    fields.update(overrides)
    return AttributionRecord(**fields)


# --- canonical JSON -------------------------------------------------------------------------------


def test_rfc8785_section_3_2_2_example() -> None:
    text = (
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}'
    )
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert canonical_json(json.loads(text)) == expected.encode("utf-8")


def test_rfc8785_key_sorting_by_utf16_code_units() -> None:
    obj = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    keys = list(json.loads(canonical_json(obj)))
    assert keys == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


# RFC 8785 Appendix B: IEEE 754 bit patterns and their required serialization.
APPENDIX_B = [
    (0x0000000000000000, "0"),
    (0x8000000000000000, "0"),
    (0x0000000000000001, "5e-324"),
    (0x8000000000000001, "-5e-324"),
    (0x7FEFFFFFFFFFFFFF, "1.7976931348623157e+308"),
    (0xFFEFFFFFFFFFFFFF, "-1.7976931348623157e+308"),
    (0x4340000000000000, "9007199254740992"),
    (0xC340000000000000, "-9007199254740992"),
    (0x4430000000000000, "295147905179352830000"),
    (0x44B52D02C7E14AF5, "9.999999999999997e+22"),
    (0x44B52D02C7E14AF6, "1e+23"),
    (0x44B52D02C7E14AF7, "1.0000000000000001e+23"),
    (0x444B1AE4D6E2EF4E, "999999999999999700000"),
    (0x444B1AE4D6E2EF4F, "999999999999999900000"),
    (0x444B1AE4D6E2EF50, "1e+21"),
    (0x3EB0C6F7A0B5ED8C, "9.999999999999997e-7"),
    (0x3EB0C6F7A0B5ED8D, "0.000001"),
    (0x41B3DE4355555553, "333333333.3333332"),
    (0x41B3DE4355555554, "333333333.33333325"),
    (0x41B3DE4355555555, "333333333.3333333"),
    (0x41B3DE4355555556, "333333333.3333334"),
    (0x41B3DE4355555557, "333333333.33333343"),
    (0xBECBF647612F3696, "-0.0000033333333333333333"),
    (0x43143FF3C1CB0959, "1424953923781206.2"),
]


@pytest.mark.parametrize(("bits", "expected"), APPENDIX_B)
def test_rfc8785_appendix_b_numbers(bits: int, expected: str) -> None:
    (f,) = struct.unpack(">d", bits.to_bytes(8, "big"))
    assert es6_number(f) == expected
    assert canonical_json([f]) == f"[{expected}]".encode()
    assert canonical_json({"k": f}) == f'{{"k":{expected}}}'.encode()


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()  # includes control characters, quotes, backslashes, astral characters
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_canonical_json_matches_rfc8785_package(obj: object) -> None:
    assert canonical_json(obj) == rfc8785.dumps(obj)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_es6_number_matches_rfc8785_package(f: float) -> None:
    assert es6_number(f).encode() == rfc8785.dumps(f)


@settings(max_examples=100, deadline=None)
@given(json_values)
def test_canonical_json_round_trips_through_strict_parser(obj: object) -> None:
    data = canonical_json(obj)
    assert canonical_json(loads_strict(data, "x")) == data


def test_canonical_json_handles_tuples_and_subclasses() -> None:
    from enum import IntEnum

    class Color(IntEnum):
        RED = 1

    assert canonical_json({"a": (1, 2.0, Color.RED)}) == b'{"a":[1,2,1]}'


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        ({"a": [1, float("nan")]}, "$.a[1]: nan"),
        ({"a": {"b": float("inf")}}, "$.a.b: inf"),
        ([float("-inf")], "$[0]: -inf"),
        ({1: "x"}, "$: object key 1 is not a string"),
        ({"n": 2**53}, "$.n: integer"),
        ({"n": -(2**53)}, "$.n: integer"),
        ({"s": {1, 2}}, "$.s: set cannot be encoded"),
        ({"b": b"x"}, "$.b: bytes cannot be encoded"),
        ({"bad key": [object()]}, "$['bad key'][0]: object cannot be encoded"),
        ({"s": "\ud800"}, "lone surrogate"),
    ],
)
def test_canonical_json_rejects(obj: object, fragment: str) -> None:
    with pytest.raises(RecordError) as exc:
        canonical_json(obj)
    assert fragment in str(exc.value)


def test_canonical_json_rejects_deep_nesting() -> None:
    obj: Any = []
    for _ in range(100_000):
        obj = [obj]
    with pytest.raises(RecordError, match="nested too deeply"):
        canonical_json(obj)


def test_canonical_json_safe_integer_edges() -> None:
    assert canonical_json([2**53 - 1, -(2**53) + 1]) == b"[9007199254740991,-9007199254740991]"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b'{"a":1,"a":2}', "duplicate key 'a'"),
        (b'{"a":NaN}', "NaN is not valid JSON"),
        (b'{"a":Infinity}', "Infinity"),
        (b'{"a":"\xff"}', "not valid UTF-8"),
        (b'{"a":', "malformed JSON"),
        (b"\xef\xbb\xbf{}", "malformed JSON"),
    ],
)
def test_loads_strict_rejects(data: bytes, fragment: str) -> None:
    with pytest.raises(RecordError) as exc:
        loads_strict(data, "payload")
    assert str(exc.value).startswith("payload: ")
    assert fragment in str(exc.value)


def test_loads_strict_reads_huge_integers_as_doubles() -> None:
    assert loads_strict(b"[295147905179352830000, 5]", "x") == [2.9514790517935283e20, 5]


# --- records: construction ------------------------------------------------------------------------


def test_minimal_record_and_defaults() -> None:
    r = AttributionRecord(kind="dataset", asset="datanet", sha256=H1, recorded_at=T)
    assert r.inputs == () and r.contributors == () and r.details is None
    assert r.details_obj() is None
    assert r.idempotency_key() == f"sha256:{r.digest()}"
    assert hash(r) == hash(AttributionRecord("dataset", "datanet", H1, T))


def test_every_kind_is_accepted() -> None:
    for kind in KINDS:
        AttributionRecord(kind=kind, asset="a", sha256=H1, recorded_at=T)


def test_statement_shape() -> None:
    st_ = full_record().to_statement()
    assert st_["_type"] == STATEMENT_TYPE
    assert st_["predicateType"] == PREDICATE_TYPE
    assert st_["subject"] == [{"name": "models/digits", "digest": {"sha256": H1}}]
    p = st_["predicate"]
    assert p["run"] == {"orchestrator": "dagster", "run_id": "run-1", "event_id": 42}
    assert "dagster" not in p
    assert p["dvc"] == {"path": "data/datanet.parquet", "md5": MD5}
    assert p["mlflow"] == {"run_id": "mlrun", "model_id": "m-1"}
    assert p["inputs"] == [{"asset": "datanet", "sha256": H2, "log_index": 3}]
    assert p["contributors"][0] == {
        "id": "alice",
        "rows": 10,
        "sha256": H2,
        "weight": None,
        "value": None,
        "stderr": None,
    }
    assert p["details"] == {"method": "exact", "seed": 7, "samples": 64}
    assert p["supersedes"] == 1
    assert p["partition"] == "alice"
    empty = AttributionRecord("dataset", "d", H1, T).to_statement()["predicate"]
    assert empty["run"] is None and empty["dvc"] is None and empty["mlflow"] is None
    assert empty["details"] is None and empty["inputs"] == [] and empty["contributors"] == []
    assert empty["partition"] is None


def test_to_bytes_is_canonical_and_digest_is_its_sha256() -> None:
    r = full_record()
    data = r.to_bytes()
    assert data == rfc8785.dumps(r.to_statement())
    assert r.digest() == hashlib.sha256(data).hexdigest()
    assert r.idempotency_key() == "dagster:run-1:42"


def test_details_are_normalized_to_canonical_text() -> None:
    r = full_record(details='{ "seed": 7,\n "method": "exact", "w": 1.0 }')
    assert r.details == '{"method":"exact","seed":7,"w":1}'
    assert r == full_record(details=details_json({"w": 1, "seed": 7, "method": "exact"}))
    assert r.details_obj() == {"method": "exact", "seed": 7, "w": 1}


def test_lists_are_stored_as_tuples_and_ints_as_floats() -> None:
    r = full_record(inputs=[InputRef("datanet", H2)])
    assert isinstance(r.inputs, tuple)
    c = Contributor("x", weight=1, value=0)
    assert isinstance(c.weight, float) and isinstance(c.value, float)
    assert c == Contributor("x", weight=1.0, value=0.0)


def test_records_pickle_for_worker_processes() -> None:
    r = full_record()
    assert pickle.loads(pickle.dumps(r)) == r


def test_utc_timestamp() -> None:
    t = utc_timestamp(datetime(2026, 11, 24, 21, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1))))
    assert t == "2026-11-24T20:00:00.123456Z"
    assert utc_timestamp().endswith("Z")
    AttributionRecord("dataset", "d", H1, utc_timestamp())
    with pytest.raises(RecordError, match="naive"):
        utc_timestamp(datetime(2026, 1, 1))
    assert utc_timestamp(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00.000000Z"


BAD_FIELDS: list[tuple[dict[str, Any], str]] = [
    ({"kind": "thing"}, "predicate.kind: expected one of"),
    ({"asset": ""}, "predicate.asset: must not be empty"),
    ({"asset": "a\nb"}, "predicate.asset: must not contain control characters"),
    ({"asset": "a\x7fb"}, "predicate.asset: must not contain control characters"),
    ({"asset": "a\x00"}, "predicate.asset: must not contain control characters"),
    ({"asset": 5}, "predicate.asset: expected a string"),
    ({"sha256": H1.upper()}, "subject[0].digest.sha256: expected 64 lowercase hex"),
    ({"sha256": H1[:-1]}, "subject[0].digest.sha256: expected 64 lowercase hex"),
    ({"recorded_at": "2026-11-24T20:00:00+00:00"}, "predicate.recorded_at: expected an RFC 3339"),
    ({"recorded_at": "2026-11-24 20:00:00Z"}, "predicate.recorded_at: expected an RFC 3339"),
    ({"recorded_at": "2026-02-30T20:00:00Z"}, "predicate.recorded_at: day is out of range"),
    ({"recorded_at": "2026-11-24T24:00:00Z"}, "predicate.recorded_at: hour must be"),
    ({"recorded_at": "２026-11-24T20:00:00Z"}, "predicate.recorded_at: expected"),
    ({"recorded_at": "9999-12-31T23:59:59Z"}, "predicate.recorded_at: year 9999 is after 2200"),
    ({"recorded_at": "2201-01-01T00:00:00Z"}, "predicate.recorded_at: year 2201 is after 2200"),
    ({"asset": "d\u200bnet"}, "predicate.asset: has a format or bidi character (U+200B)"),
    ({"data_version": ""}, "predicate.data_version: must not be empty"),
    ({"code_version": "x\ty"}, "predicate.code_version: must not contain control"),
    ({"run": ("dagster", "r", 1)}, "predicate.run: expected RunRef or None"),
    ({"version": 3}, "predicateType: version 3 is not 1 or 2"),
    ({"version": True}, "predicateType: version True is not 1 or 2"),
    ({"version": 1, "run": RunRef("airflow", "r", 1)}, "predicate.dagster: a v1 record's run"),
    ({"inputs": (("a", H1),)}, "predicate.inputs[0]: expected InputRef"),
    ({"inputs": "abc"}, "predicate.inputs: expected a tuple"),
    ({"contributors": (Contributor("a"), "b")}, "predicate.contributors[1]: expected Contributor"),
    ({"details": '["not", "an", "object"]'}, "predicate.details: expected an object"),
    ({"details": '{"a": NaN}'}, "predicate.details: malformed JSON"),
    ({"details": '{"a": 1, "a": 2}'}, "predicate.details: malformed JSON (duplicate key"),
    ({"details": {"a": 1}}, "predicate.details: expected canonical JSON text"),
    ({"supersedes": -1}, "predicate.supersedes: expected a non-negative integer"),
    ({"supersedes": True}, "predicate.supersedes: expected a non-negative integer"),
    ({"supersedes": 2**53}, "predicate.supersedes: expected a non-negative integer below"),
    ({"partition": ""}, "predicate.partition: must not be empty"),
    ({"partition": "a\x1b[31m"}, "predicate.partition: must not contain control characters"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_FIELDS)
def test_invalid_record_fields_name_the_field(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(RecordError) as exc:
        full_record(**overrides)
    assert str(exc.value).startswith(message), str(exc.value)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: RunRef("dagster", "", 1), "run_id: must not be empty"),
        (lambda: RunRef("dagster", "r", -1), "event_id: expected a non-negative integer"),
        (lambda: RunRef("dagster", "r", True), "event_id: expected a non-negative integer"),
        (lambda: RunRef("dagster", "r", loose(1.0)), "event_id: expected a non-negative integer"),
        (lambda: RunRef("Dagster", "r", 1), "orchestrator: expected a lowercase name"),
        (lambda: RunRef("a:b", "r", 1), "orchestrator: expected a lowercase name"),
        (lambda: RunRef("sha256", "r", 1), "orchestrator: expected a lowercase name"),
        (lambda: RunRef("", "r", 1), "orchestrator: expected a lowercase name"),
        (lambda: RunRef(loose(None), "r", 1), "orchestrator: expected a lowercase name"),
        (lambda: DvcRef("p", MD5.upper()), "md5: expected 32 lowercase hex"),
        (lambda: DvcRef("p\r", MD5), "path: must not contain control characters"),
        (lambda: MlflowRef("r", ""), "model_id: must not be empty"),
        (lambda: InputRef("a", "xyz"), "sha256: expected 64 lowercase hex"),
        (lambda: InputRef("a", H1, -2), "log_index: expected a non-negative integer"),
        (lambda: Contributor(""), "id: must not be empty"),
        (lambda: Contributor("a\x1f"), "id: must not contain control characters"),
        (lambda: Contributor("ali\u202ece"), "id: has a format or bidi character (U+202E)"),
        (lambda: Contributor("al\ufeffice"), "id: has a format or bidi character (U+FEFF)"),
        (lambda: Contributor("p\u0430ypal"), "id: mixes Latin and Cyrillic letters"),
        (lambda: InputRef("p\u0430ypal", H1), "asset: mixes Latin and Cyrillic letters"),
        (lambda: Contributor("Zoe\u0308"), "id: is not in Unicode NFC"),
        (lambda: Contributor("a", rows=-1), "rows: expected a non-negative integer"),
        (lambda: Contributor("a", sha256="0" * 63), "sha256: expected 64 lowercase hex"),
        (lambda: Contributor("a", weight=float("nan")), "weight: must be finite"),
        (lambda: Contributor("a", value=float("inf")), "value: must be finite"),
        (lambda: Contributor("a", stderr=-0.1), "stderr: must not be negative"),
        (lambda: Contributor("a", weight=loose("1")), "weight: expected a number"),
        (lambda: Contributor("a", weight=True), "weight: expected a number"),
    ],
)
def test_invalid_parts_name_the_field(build: Any, message: str) -> None:
    with pytest.raises(RecordError) as exc:
        build()
    assert str(exc.value).startswith(message), str(exc.value)


# --- records: strict parsing ----------------------------------------------------------------------


def test_from_bytes_round_trip_full_record() -> None:
    r = full_record()
    assert AttributionRecord.from_bytes(r.to_bytes()) == r
    assert AttributionRecord.from_statement(r.to_statement()) == r


def mutate(edit: Any) -> bytes:
    """The canonical bytes of a full record's statement after `edit(statement)`."""
    obj = full_record().to_statement()
    edit(obj)
    return rfc8785.dumps(obj)


def _set(path: str, value: Any) -> Any:
    def edit(obj: Any) -> None:
        *head, last = path.split(".")
        for part in head:
            obj = obj[int(part)] if part.isdigit() else obj[part]
        obj[int(last) if last.isdigit() else last] = value

    return edit


def _del(path: str) -> Any:
    def edit(obj: Any) -> None:
        *head, last = path.split(".")
        for part in head:
            obj = obj[int(part)] if part.isdigit() else obj[part]
        del obj[last]

    return edit


PARSE_ERRORS: list[tuple[Any, str]] = [
    (_set("_type", "https://in-toto.io/Statement/v0.1"), "_type: expected"),
    (_set("predicateType", "https://slsa.dev/provenance/v1"), "predicateType: expected"),
    (_set("extra", 1), "extra: unknown key"),
    (_del("predicate"), "predicate: missing"),
    (_set("predicate.extra", 1), "predicate.extra: unknown key"),
    (_del("predicate.supersedes"), "predicate.supersedes: missing"),
    (_del("predicate.partition"), "predicate.partition: missing"),
    (_set("predicate.partition", 1), "predicate.partition: expected a string"),
    (_set("predicate.run.extra", 1), "predicate.run.extra: unknown key"),
    (_del("predicate.run.event_id"), "predicate.run.event_id: missing"),
    (_set("predicate.run.event_id", "42"), "predicate.run.event_id: expected"),
    (_set("predicate.run.orchestrator", "x:y"), "predicate.run.orchestrator: expected"),
    (_set("predicate.run", []), "predicate.run: expected an object, got array"),
    (_set("predicate.dagster", None), "predicate.dagster: unknown key"),
    (_del("predicate.run"), "predicate.run: missing"),
    (_set("predicateType", PREDICATE_TYPE_V1), "predicate.run: unknown key"),
    (_set("predicateType", "urn:lineage-platform:attribution:v3"), "predicateType: expected"),
    (_set("predicateType", None), "predicateType: expected"),
    (_set("predicate.dvc.md5", "x"), "predicate.dvc.md5: expected 32 lowercase hex"),
    (_set("predicate.mlflow.model_id", 3), "predicate.mlflow.model_id: expected a string"),
    (_set("predicate.inputs.0.sha256", "ab"), "predicate.inputs[0].sha256: expected 64"),
    (_set("predicate.inputs.0.log_index", -1), "predicate.inputs[0].log_index: expected"),
    (_del("predicate.inputs.0.log_index"), "predicate.inputs[0].log_index: missing"),
    (_set("predicate.inputs", {}), "predicate.inputs: expected an array, got object"),
    (_set("predicate.contributors.1.weight", "x"), "predicate.contributors[1].weight: expected"),
    (_set("predicate.contributors.0.x", None), "predicate.contributors[0].x: unknown key"),
    (_set("predicate.contributors.0", "alice"), "predicate.contributors[0]: expected an object"),
    (_set("predicate.details", [1]), "predicate.details: expected an object or null"),
    (_set("predicate.kind", 3), "predicate.kind: expected one of"),
    (_set("predicate.recorded_at", None), "predicate.recorded_at: expected an RFC 3339"),
    (_set("predicate.asset", "other"), "subject[0].name: must equal predicate.asset"),
    (_set("subject", []), "subject: expected an array with exactly one subject"),
    (_set("subject.0.digest", {"sha512": "00"}), "subject[0].digest.sha512: unknown key"),
    (_set("subject.0.digest.sha256", "AB"), "subject[0].digest.sha256: expected 64"),
    (_del("subject.0.name"), "subject[0].name: missing"),
    # issue 15: ids a person reads, and a time no record can have been made at
    (_set("predicate.contributors.0.id", "ali\u202ece"), "predicate.contributors[0].id: has a"),
    (_set("predicate.contributors.1.id", "b\u043eb"), "predicate.contributors[1].id: mixes"),
    (_set("predicate.contributors.0.id", "Zoe\u0308"), "predicate.contributors[0].id: is not"),
    (_set("predicate.inputs.0.asset", "data\u200dnet"), "predicate.inputs[0].asset: has a"),
    (_set("predicate.recorded_at", "9999-12-31T23:59:59.999999Z"), "predicate.recorded_at: year"),
]


@pytest.mark.parametrize(("edit", "message"), PARSE_ERRORS)
def test_from_bytes_is_strict(edit: Any, message: str) -> None:
    with pytest.raises(RecordError) as exc:
        AttributionRecord.from_bytes(mutate(edit))
    assert str(exc.value).startswith(message), str(exc.value)


@pytest.mark.parametrize(("edit", "message"), PARSE_ERRORS)
def test_scan_payload_refuses_what_from_bytes_refuses(edit: Any, message: str) -> None:
    with pytest.raises(RecordError) as exc:
        scan_payload(mutate(edit))
    assert str(exc.value).startswith(message), str(exc.value)


def test_scan_payload_reads_the_facts_verify_compares() -> None:
    r = full_record()
    data = r.to_bytes()
    facts = scan_payload(data)
    assert facts.record_digest == hashlib.sha256(data).hexdigest()
    assert facts.idem_key == "dagster:run-1:42"
    assert (facts.kind, facts.asset, facts.partition) == ("model", "models/digits", "alice")
    assert (facts.sha256, facts.recorded_at, facts.supersedes) == (H1, T, 1)
    assert facts.inputs == (("datanet", H2, 3),)
    bare = AttributionRecord("dataset", "datanet", sha256=H2, recorded_at=T)
    bare_bytes = bare.to_bytes()
    expected = f"sha256:{hashlib.sha256(bare_bytes).hexdigest()}"
    assert scan_payload(bare_bytes).idem_key == expected


def test_scan_payload_refuses_non_canonical_bytes() -> None:
    r = full_record()
    pretty = json.dumps(r.to_statement(), indent=2).encode()
    with pytest.raises(RecordError, match=r"^payload: not RFC 8785 canonical"):
        scan_payload(pretty)
    # Values the C decoder reads back to the same record but canonical JSON writes otherwise.
    data = r.to_bytes()
    for old, new in ((b'"weight":0.25', b'"weight":2.5e-1'), (b'"rows":10', b'"rows":10.0')):
        assert old in data
        with pytest.raises(RecordError):
            scan_payload(data.replace(old, new))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_scan_payload_agrees_with_from_bytes_on_mutated_bytes(data: st.DataObject) -> None:
    """The verify hot path accepts exactly what the strict parser accepts, with its facts."""
    good = bytearray(full_record(version=data.draw(st.sampled_from([1, 2]))).to_bytes())
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(good) - 1))
        good[at] = data.draw(st.integers(0, 255))
    payload = bytes(good)
    try:
        expected: RecordFacts | None = RecordFacts.of(AttributionRecord.from_bytes(payload))
    except RecordError:
        expected = None
    if expected is None:
        with pytest.raises(RecordError):
            scan_payload(payload)
    else:
        assert scan_payload(payload) == expected


def test_from_bytes_refuses_bad_bytes() -> None:
    good = full_record().to_bytes()
    with pytest.raises(RecordError, match=r"^payload: malformed JSON"):
        AttributionRecord.from_bytes(good[:-1])
    with pytest.raises(RecordError, match=r"^payload: not valid UTF-8"):
        AttributionRecord.from_bytes(good[:-2] + b"\xc3}")
    with pytest.raises(RecordError, match=r"^statement: expected an object, got array"):
        AttributionRecord.from_bytes(b"[]")
    dup = good.replace(b'{"_type":', b'{"_type":"x","_type":', 1)
    with pytest.raises(RecordError, match="duplicate key '_type'"):
        AttributionRecord.from_bytes(dup)
    with pytest.raises(RecordError, match=r"^payload: expected bytes"):
        AttributionRecord.from_bytes(good.decode())  # type: ignore[arg-type]


def test_from_bytes_refuses_non_canonical_unless_asked() -> None:
    r = full_record()
    pretty = json.dumps(r.to_statement(), indent=2).encode()
    with pytest.raises(RecordError, match=r"^payload: not RFC 8785 canonical"):
        AttributionRecord.from_bytes(pretty)
    assert AttributionRecord.from_bytes(pretty, require_canonical=False) == r


# --- records: v1 statements (`dagster` instead of `run`) -----------------------------------------

V1_LOG = Path(__file__).parent / "fixtures" / "v1_log" / "bundle" / "envelopes.jsonl"


def test_idempotency_key_format() -> None:
    assert idempotency_key("dagster", "run-1", 42) == "dagster:run-1:42"
    assert RunRef("airflow", "r:x", 7).key() == "airflow:r:x:7"
    assert full_record(run=RunRef("prefect", "p", 3)).idempotency_key() == "prefect:p:3"


def test_v1_record_is_written_as_v1_and_keyed_as_before() -> None:
    v1 = full_record(version=1)
    st_ = v1.to_statement()
    assert st_["predicateType"] == PREDICATE_TYPE_V1
    assert st_["predicate"]["dagster"] == {"run_id": "run-1", "storage_id": 42}
    assert "run" not in st_["predicate"]
    data = v1.to_bytes()
    assert data == rfc8785.dumps(st_)
    back = AttributionRecord.from_bytes(data)
    assert back == v1 and back.version == 1 and back.run == RunRef("dagster", "run-1", 42)
    assert AttributionRecord.from_statement(st_) == v1
    # The same event keys the same in both versions: re-syncing an old log appends nothing.
    assert v1.idempotency_key() == full_record().idempotency_key() == "dagster:run-1:42"
    assert scan_payload(data) == RecordFacts.of(v1)
    assert v1.digest() != full_record().digest()
    bare = AttributionRecord("dataset", "d", H1, T, version=1)
    assert AttributionRecord.from_bytes(bare.to_bytes()) == bare
    assert bare.to_statement()["predicate"]["dagster"] is None


def test_v1_records_written_by_the_old_code_keep_their_bytes() -> None:
    payloads = [Envelope.from_json(line).payload for line in V1_LOG.read_bytes().splitlines()]
    assert len(payloads) == 10
    kinds = set()
    for data in payloads:
        r = AttributionRecord.from_bytes(data)
        assert r.version == 1 and r.to_bytes() == data
        assert rfc8785.dumps(r.to_statement()) == data
        assert scan_payload(data) == RecordFacts.of(r)
        if r.run is not None:
            assert r.run.orchestrator == "dagster"
            assert r.idempotency_key() == f"dagster:{r.run.run_id}:{r.run.event_id}"
        kinds.add(r.kind)
    assert kinds == {"dataset", "model", "valuation", "settlement"}


def mutate_v1(edit: Any) -> bytes:
    obj = full_record(version=1).to_statement()
    edit(obj)
    return rfc8785.dumps(obj)


V1_PARSE_ERRORS: list[tuple[Any, str]] = [
    (_set("predicate.dagster.extra", 1), "predicate.dagster.extra: unknown key"),
    (_del("predicate.dagster.storage_id"), "predicate.dagster.storage_id: missing"),
    (_set("predicate.dagster.storage_id", "42"), "predicate.dagster.storage_id: expected"),
    (_set("predicate.dagster.run_id", ""), "predicate.dagster.run_id: must not be empty"),
    (_set("predicate.dagster", []), "predicate.dagster: expected an object, got array"),
    (_set("predicate.run", None), "predicate.run: unknown key"),
    (_del("predicate.dagster"), "predicate.dagster: missing"),
    (_set("predicateType", PREDICATE_TYPE), "predicate.dagster: unknown key"),
]


@pytest.mark.parametrize(("edit", "message"), V1_PARSE_ERRORS)
def test_v1_parsing_is_strict(edit: Any, message: str) -> None:
    for parse in (AttributionRecord.from_bytes, scan_payload):
        with pytest.raises(RecordError) as exc:
            parse(mutate_v1(edit))
        assert str(exc.value).startswith(message), str(exc.value)


def test_size_limit() -> None:
    with pytest.raises(RecordError, match=r"^payload: .* exceeds"):
        AttributionRecord.from_bytes(b" " * (MAX_RECORD_BYTES + 1))
    big = full_record(details=details_json({"blob": "x" * MAX_RECORD_BYTES}))
    with pytest.raises(RecordError, match=r"^statement: .* exceeds"):
        big.to_bytes()


# --- records: properties --------------------------------------------------------------------------

names = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=12)
#: Ids a person reads (asset, contributor): what `identifiers` accepts, in NFC.
ids = names.filter(lambda s: identifiers.problem(s) is None and identifiers.is_nfc(s))
hex64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
counts = st.integers(min_value=0, max_value=2**53 - 1)
numbers = st.none() | st.floats(allow_nan=False, allow_infinity=False)
timestamps = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(LAST_YEAR, 12, 31), timezones=st.just(UTC)
).map(utc_timestamp)

contributors = st.builds(
    Contributor,
    id=ids,
    rows=st.none() | counts,
    sha256=st.none() | hex64,
    weight=numbers,
    value=numbers,
    stderr=st.none() | st.floats(min_value=0, allow_nan=False, allow_infinity=False),
)
orchestrators = st.sampled_from(["dagster", "airflow", "prefect.io", "x_1-y"])
runs = st.builds(RunRef, orchestrator=orchestrators, run_id=names, event_id=counts)
dagster_runs = st.builds(RunRef, orchestrator=st.just("dagster"), run_id=names, event_id=counts)


@st.composite
def versioned(draw: st.DrawFn) -> tuple[int, RunRef | None]:
    """A predicate version and a run reference it can hold (v1 holds only Dagster's)."""
    version = draw(st.sampled_from([1, 2]))
    return version, draw(st.none() | (dagster_runs if version == 1 else runs))


def _record(version_run: tuple[int, RunRef | None], **fields: Any) -> AttributionRecord:
    version, run = version_run
    return AttributionRecord(version=version, run=run, **fields)


records = st.builds(
    _record,
    versioned(),
    kind=st.sampled_from(KINDS),
    asset=ids,
    sha256=hex64,
    recorded_at=timestamps,
    data_version=st.none() | names,
    code_version=st.none() | names,
    dvc=st.none()
    | st.builds(DvcRef, path=names, md5=st.binary(min_size=16, max_size=16).map(bytes.hex)),
    mlflow=st.none() | st.builds(MlflowRef, run_id=names, model_id=st.none() | names),
    inputs=st.lists(
        st.builds(InputRef, asset=ids, sha256=hex64, log_index=st.none() | counts), max_size=3
    ).map(tuple),
    contributors=st.lists(contributors, max_size=4).map(tuple),
    details=st.none()
    | st.dictionaries(st.text(max_size=6), json_values, max_size=4).map(details_json),
    supersedes=st.none() | counts,
    partition=st.none() | names,
)


@settings(max_examples=200, deadline=None)
@given(records)
def test_record_bytes_round_trip(r: AttributionRecord) -> None:
    data = r.to_bytes()
    assert data == rfc8785.dumps(r.to_statement())
    assert data == canonical_json(r.to_statement())
    back = AttributionRecord.from_bytes(data)
    assert back == r
    assert back.to_bytes() == data
    assert back.digest() == r.digest()
    facts = scan_payload(data)
    assert facts == RecordFacts.of(r)
    assert facts.record_digest == hashlib.sha256(data).hexdigest()


# --- one schema: kinds, typed details, the field table -------------------------------------------


def test_kind_is_one_enum_whose_values_are_the_stored_strings() -> None:
    assert tuple(k.value for k in Kind) == KINDS
    r = AttributionRecord("dataset", "d", H1, T)
    assert r.kind is Kind.DATASET and r.kind == "dataset"
    assert r == AttributionRecord(Kind.DATASET, "d", H1, T)
    assert b'"kind":"dataset"' in r.to_bytes()
    assert type(scan_payload(r.to_bytes()).kind) is str
    assert RecordFacts.of(r) == scan_payload(r.to_bytes())


def test_the_field_table_is_the_classes_schema() -> None:
    assert [f.name for f in RECORD_FIELDS] == [
        f.name for f in dataclasses.fields(AttributionRecord)
    ][:-1]
    keys = {f.json_key for f in RECORD_FIELDS} - {"sha256"}
    assert keys == set(full_record().to_statement()["predicate"])
    v1_keys = {f.json_key for f in RECORD_FIELDS_V1} - {"sha256"}
    assert v1_keys == set(full_record(version=1).to_statement()["predicate"])


SETTLEMENT = {
    "epoch": "2026-12-02",
    "starts_at": "2026-12-02T00:00:00.000000Z",
    "ends_at": "2026-12-03T00:00:00.000000Z",
    "fees_total": 61800,
    "paid_total": 61800,
    "payout_count": 6,
    "root": H1,
    "policy": {"data_bps": 8000, "owner_bps": 1500, "protocol_bps": 500},
    "fees_by_model": {"digits_classifier": 61800},
    "events": 480,
    "events_digest": H2,
    "reserve_reason": None,
}


def test_settlement_details_are_typed_and_keep_their_text() -> None:
    typed = SettlementDetails(**SETTLEMENT)
    assert typed.to_json() == details_json(SETTLEMENT)
    r = AttributionRecord("settlement", "settlement", H1, T, details=typed, partition="2026-12-02")
    assert r.details == details_json(SETTLEMENT)
    assert r.typed_details() == typed
    with pytest.raises(RecordError, match=r"^details\.root: expected 64"):
        SettlementDetails(**{**SETTLEMENT, "root": "x"})
    bad = AttributionRecord("settlement", "s", H1, T, details=details_json({"epoch": "e"}))
    with pytest.raises(RecordError, match=r"^predicate\.details\.starts_at: missing"):
        bad.typed_details()


def test_valuation_details_are_typed_and_keep_what_the_method_added() -> None:
    body = {
        "method": "exact",
        "seed": 7,
        "samples": 64,
        "utility": "accuracy",
        "digest": "sha256:" + H1,
        "values": {"a": 0.5},
        "model": "clf",
    }
    r = full_record(kind="valuation", details=details_json(body))
    typed = r.typed_details()
    assert isinstance(typed, ValuationDetails)
    assert (typed.method, typed.seed, typed.samples) == ("exact", 7, 64)
    assert typed.extra == {"values": {"a": 0.5}, "model": "clf"}
    assert typed.to_json() == r.details
    assert full_record(kind="model").typed_details() is None
    with pytest.raises(RecordError, match=r"^details\.method: must not be empty"):
        ValuationDetails("")
    with pytest.raises(RecordError, match=r"^details\.seed: given twice"):
        ValuationDetails("exact", extra={"seed": 1})


def test_typed_details_of_the_old_log_parse() -> None:
    for line in V1_LOG.read_bytes().splitlines():
        r = AttributionRecord.from_bytes(Envelope.from_json(line).payload)
        typed = r.typed_details()
        if r.kind in (Kind.SETTLEMENT, Kind.VALUATION):
            assert typed is not None and typed.to_json() == r.details


def test_a_record_is_not_signed_with_a_time_after_now() -> None:
    """The parser bounds `recorded_at` by a fixed year (it verifies old logs without a clock);
    signing bounds it by now + the usage skew (issue 15)."""
    now = datetime(2026, 11, 24, 20, 0, tzinfo=UTC)
    soon = utc_timestamp(now + timedelta(seconds=MAX_SKEW_S - 1))
    check_not_future([full_record(recorded_at=T), full_record(recorded_at=soon)], now)
    check_not_future([], now)
    late = utc_timestamp(now + timedelta(seconds=MAX_SKEW_S + 2))
    with pytest.raises(RecordError, match=r"^predicate\.recorded_at: 2026-11-24T20:05:02"):
        check_not_future([full_record(recorded_at=T), full_record(recorded_at=late)], now)
    # Signing refuses it before anything is written.
    with pytest.raises(RecordError, match="after now"):
        append_records(
            None,  # type: ignore[arg-type]  # never reached
            SigningKey.generate(),
            [full_record(recorded_at="2200-01-01T00:00:00Z")],
        )


# --- verify's hot path: the pattern and the check-only scanner ----------------------------------
# `scan_canonical` takes a record of plain ASCII text, small counts and nulls by a regex of its
# whole text (`_PATTERNS`), other records of strings, integers and nulls through
# `_match_record_v*` (keys and values checked, orjson's sorted dump compared with the bytes), and
# the rest through the rewrite (`_scan_record_v*`). Each must accept only what the rewrite (and
# the strict parser) accepts: these tests compare the paths, each run alone.

PATHS = ("pattern", "match", "rewrite")


def _refuse(_: object) -> Any:
    raise RecordError("path switched off by the test")


@contextlib.contextmanager
def only_path(path: str) -> Iterator[None]:
    """Scan with only one of the three ways (`PATHS`)."""
    with contextlib.ExitStack() as stack:
        if path != "pattern":
            stack.enter_context(mock.patch.object(records_module, "_PATTERN_ORDER", []))
        tables = {"match": records_module._MATCH_RECORD, "rewrite": records_module._SCAN_RECORD}
        for name, table in tables.items():
            if path != name:
                stack.enter_context(mock.patch.dict(table, {v: _refuse for v in table}))
        yield


def scanned(payload: bytes, path: str) -> RecordFacts | None:
    with only_path(path):
        return scan_canonical(payload)


def plain(r: AttributionRecord) -> AttributionRecord:
    """`r` without what only the rewrite takes (numbers, details)."""
    people = tuple(
        dataclasses.replace(c, weight=None, value=None, stderr=None) for c in r.contributors
    )
    return dataclasses.replace(r, contributors=people, details=None)


def ascii_record(version: int = 2) -> AttributionRecord:
    """Every field the pattern takes, set: plain ASCII text, small counts."""
    return plain(full_record(version=version, kind="dataset", inputs=(
        InputRef("datanet", H2, 3), InputRef("raw/part one", H1, None),
    )))


def plain_record(version: int = 2) -> AttributionRecord:
    """Every field the check-only scanner takes, set."""
    return plain(full_record(version=version, kind="dataset", inputs=(
        InputRef("datanet", H2, 3), InputRef("raw/\"quoted\" \\ part", H1, None),
    )))


def test_orjson_writes_every_string_as_the_canonical_writer() -> None:
    """The premise of the check-only scanner: for every code point (so for every string, as
    both escape one code point at a time), orjson writes what `json_string` writes."""
    points = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    differ = [p for p in points if orjson.dumps(p) != json_string(p).encode()]
    assert differ == []
    assert orjson.dumps("".join(points)) == json_string("".join(points)).encode()
    for lone in ("\ud800", "x\udfff"):  # unwritable: orjson raises, and the rewrite decides
        with pytest.raises(orjson.JSONEncodeError):
            orjson.dumps(lone)


@pytest.mark.parametrize("version", [1, 2])
def test_a_plain_record_takes_the_check_only_scanner(version: int) -> None:
    r = plain_record(version)
    data = r.to_bytes()
    assert b'\\"quoted\\" \\\\ part' in data  # escapes in a string the check-only path takes
    assert scanned(data, "match") == scanned(data, "rewrite") == RecordFacts.of(r)
    assert scanned(data, "pattern") is None  # escapes: not for the pattern
    assert scan_payload(data) == RecordFacts.of(r)
    ascii_only = ascii_record(version)
    facts = RecordFacts.of(ascii_only)
    assert [scanned(ascii_only.to_bytes(), path) for path in PATHS] == [facts] * 3
    # Numbers and details: the check-only scanner declines; the rewrite takes them.
    for other in (full_record(version=version), plain(r)):
        if other.details is not None:
            assert scanned(other.to_bytes(), "match") is None
        assert scanned(other.to_bytes(), "rewrite") == RecordFacts.of(other)
    weighed = dataclasses.replace(r, contributors=(Contributor("alice", weight=1.0),))
    assert scanned(weighed.to_bytes(), "match") is None
    assert scan_payload(weighed.to_bytes()) == RecordFacts.of(weighed)


@settings(max_examples=300, deadline=None)
@given(records.map(plain))
def test_the_check_only_scanner_takes_every_plain_record(r: AttributionRecord) -> None:
    data = r.to_bytes()
    facts = RecordFacts.of(r)
    assert scanned(data, "match") == facts
    assert scanned(data, "pattern") in (None, facts)


def _ascii(text: str) -> str:
    return "".join(c for c in text if " " <= c <= "~" and c not in '"\\') or "x"


def ascii_only(r: AttributionRecord) -> AttributionRecord:
    """`r` with every text field's text cut to what the pattern takes, and counts small."""
    def small(n: int | None) -> int | None:
        return None if n is None else n % 10**15

    def fix(v: object) -> object:
        if isinstance(v, RunRef):
            return RunRef(v.orchestrator, _ascii(v.run_id), small(v.event_id) or 0)
        if isinstance(v, DvcRef):
            return DvcRef(_ascii(v.path), v.md5)
        if isinstance(v, MlflowRef):
            return MlflowRef(_ascii(v.run_id), None if v.model_id is None else _ascii(v.model_id))
        return v

    return dataclasses.replace(
        r,
        asset=_ascii(r.asset),
        data_version=None if r.data_version is None else _ascii(r.data_version),
        code_version=None if r.code_version is None else _ascii(r.code_version),
        partition=None if r.partition is None else _ascii(r.partition),
        run=fix(r.run),
        dvc=fix(r.dvc),
        mlflow=fix(r.mlflow),
        supersedes=small(r.supersedes),
        inputs=tuple(InputRef(_ascii(i.asset), i.sha256, small(i.log_index)) for i in r.inputs),
        contributors=tuple(
            Contributor(_ascii(c.id), rows=small(c.rows), sha256=c.sha256) for c in r.contributors
        ),
    )


@settings(max_examples=300, deadline=None)
@given(records.map(plain).map(ascii_only))
def test_the_pattern_takes_every_plain_ascii_record(r: AttributionRecord) -> None:
    facts = RecordFacts.of(r)
    assert [scanned(r.to_bytes(), path) for path in PATHS] == [facts] * 3


def test_the_pattern_leaves_what_its_form_cannot_judge_to_the_scanners() -> None:
    r = ascii_record()
    # Counts from 10**15 to 2**53 - 1 are valid; the pattern's form stops below them.
    for big in (10**15, 2**53 - 1):
        other = dataclasses.replace(r, supersedes=big)
        facts = RecordFacts.of(other)
        assert scanned(other.to_bytes(), "pattern") is None
        assert scanned(other.to_bytes(), "match") == facts == scan_payload(other.to_bytes())
    # A date the form takes but the calendar refuses: refused, with the checks' message.
    for day in ("2026-02-29", "2100-02-29", "2026-04-31", "0000-01-01", "2201-01-01"):
        obj = r.to_statement()
        obj["predicate"]["recorded_at"] = f"{day}T00:00:00Z"
        data = rfc8785.dumps(obj)
        assert [scanned(data, path) for path in PATHS] == [None] * 3
        with pytest.raises(RecordError, match=r"^predicate\.recorded_at: "):
            scan_payload(data)
    leap = dataclasses.replace(r, recorded_at="2000-02-29T23:59:59.5Z")
    assert scanned(leap.to_bytes(), "pattern") == RecordFacts.of(leap)
    # "sha256" is no orchestrator's name (it keys records without a run).
    obj = r.to_statement()
    obj["predicate"]["run"]["orchestrator"] = "sha256"
    data = rfc8785.dumps(obj)
    assert [scanned(data, path) for path in PATHS] == [None] * 3


#: Edits that keep a plain record's JSON valid and its values the same, but not its bytes.
NON_CANONICAL_EDITS = [
    (b'"rows":10', b'"rows":10.0'),
    (b'"rows":10', b'"rows":010'),
    (b'"event_id":42', b'"event_id":0042'),
    (b'"supersedes":1', b'"supersedes":-1'),
    (b'"asset":"', b'"asset": "'),
    (b'"rows":10', b'"rows":1e1'),
    (b'"rows":10', b'"rows":true'),
    (b'"event_id":42', b'"event_id":42.0'),
    (b'"supersedes":1', b'"supersedes":1,"supersedes":1'),
    (b'{"_type":', b'{"_type":"x","_type":'),
    (b'"asset":"datanet"', b'"asset":"\\u0064atanet"'),
    (b'"data_version":"v3"', b'"data_version":"v\\u0033"'),
    (b'"data_version":"v3"', b'"data_version" :"v3"'),
    (b'"partition":"alice"', b'"partition":"alice" '),
    (b'\\"quoted\\"', b'\\u0022quoted\\u0022'),
    (b' \\\\ part', b' \\u005c part'),
    (b'"kind":"dataset",', b''),  # a key the table needs, missing
    (b'"kind":"dataset",', b'"kind":"dataset","kinds":"dataset",'),  # one more key
    (b'"supersedes":1', b'"supersedes":null,"Supersedes":1'),
    (b'"mlflow":{"model_id":"m-1","run_id":"mlrun"}',
     b'"mlflow":{"model_id":"m-1","run_id":"mlrun","x":null}'),
    (b'{"digest":{"sha256"', b'{"digest":{"sha512":null,"sha256"'),
]


@pytest.mark.parametrize("make", [plain_record, ascii_record])
@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize(("old", "new"), NON_CANONICAL_EDITS)
def test_the_fast_scanners_refuse_what_the_rewrite_refuses(
    make: Any, version: int, old: bytes, new: bytes
) -> None:
    data = make(version).to_bytes()
    if old not in data:  # v1 names its run `dagster`, without `event_id`; only one has escapes
        assert (version == 1 and b"event_id" in old) or b"\\" in old
        return
    edited = data.replace(old, new, 1)
    assert [scanned(edited, path) for path in PATHS] == [None] * 3
    with pytest.raises(RecordError):
        scan_payload(edited)
    with pytest.raises(RecordError):
        AttributionRecord.from_bytes(edited)


@pytest.mark.parametrize("make", [plain_record, ascii_record])
@pytest.mark.parametrize(("edit", "message"), PARSE_ERRORS)
def test_the_fast_scanners_refuse_invalid_plain_records(
    make: Any, edit: Any, message: str
) -> None:
    obj = make().to_statement()
    try:
        edit(obj)
    except (KeyError, IndexError, TypeError):  # the edit names a field the plain record lacks
        return
    data = rfc8785.dumps(obj)
    assert [scanned(data, path) for path in PATHS] == [None] * 3
    with pytest.raises(RecordError):
        scan_payload(data)


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_the_two_scanners_agree_on_mutated_plain_records(data: st.DataObject) -> None:
    """What the pattern or the check-only scanner accepts, the rewrite and the strict parser
    accept, with the same facts; the check-only scanner accepts every such plain record."""
    make = data.draw(st.sampled_from([plain_record, ascii_record]))
    good = bytearray(make(version=data.draw(st.sampled_from([1, 2]))).to_bytes())
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(good) - 1))
        good[at] = data.draw(st.integers(0, 255))
    payload = bytes(good)
    matched, rewritten = scanned(payload, "match"), scanned(payload, "rewrite")
    assert matched == rewritten
    try:
        expected: RecordFacts | None = RecordFacts.of(AttributionRecord.from_bytes(payload))
    except RecordError:
        expected = None
    assert matched == expected
    assert scanned(payload, "pattern") in (None, expected)


def _accepts(check: Any, value: str) -> bool:
    try:
        check(value, "t")
    except RecordError:
        return False
    return True


def test_the_time_pattern_accepts_exactly_the_times_the_check_accepts() -> None:
    """Every date of years 0000-2300 (months 00-13, days 00-32) and every hour, minute and
    second from 00 to 99: the pattern, which the verify path trusts without the check after
    it, says what `_timestamp` says."""
    pattern = re.compile(records_module._TIMESTAMP_PATTERN)
    check = records_module._timestamp
    dates = [
        f"{y:04d}-{m:02d}-{d:02d}" for y in range(2301) for m in range(14) for d in range(33)
    ]
    differ = [
        date
        for date in dates
        if (pattern.fullmatch(f'"{date}T00:00:00Z"'.encode()) is not None)
        != _accepts(check, f"{date}T00:00:00Z")
    ]
    assert differ == []
    assert sum(pattern.fullmatch(f'"{d}T00:00:00Z"'.encode()) is not None for d in dates) == (
        datetime(2200, 12, 31) - datetime(1, 1, 1)
    ).days + 1
    times = [f"2026-02-28T{h:02d}:{m:02d}:{s:02d}{f}Z" for h in range(100)
             for m in (0, 59, 60) for s in (0, 59, 60, 99) for f in ("", ".5", ".123456789")]
    times += [f"2026-02-28T12:{m:02d}:{s:02d}Z" for m in range(100) for s in range(100)]
    times += ["2026-02-28T12:00:00.Z", "2026-02-28T12:00:00.1234567890Z", "2026-02-28 12:00:00Z"]
    assert [t for t in times if (pattern.fullmatch(f'"{t}"'.encode()) is not None)
            != _accepts(check, t)] == []
