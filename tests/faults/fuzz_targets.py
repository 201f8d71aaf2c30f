"""Hypothesis fuzz targets for everything that parses untrusted bytes: one list, two runners.

    for target in targets(workdir):     # tests/faults/test_hostile.py runs each briefly,
        target.run(examples=200)         # benchmarks/fuzz.py for minutes

A target draws hostile input (random bytes, valid inputs with bytes flipped, inserted, deleted or
spliced, structurally valid JSON with a field replaced by a random value, random Arrow tables),
feeds it to one parser and checks two things: only a `LineageError` subclass may escape (never
KeyError, TypeError, ValueError, UnicodeError, RecursionError, ArrowInvalid...), and nothing
changed verifies (a parsed-then-verified envelope, checkpoint or bundle means the same as the
signed original).
"""

from __future__ import annotations

import copy
import io
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as with_seed
from hypothesis import strategies as st

from lineage_platform import usage
from lineage_platform.attest import append_records
from lineage_platform.audit import CHECKPOINT, ENVELOPES, KEYS, export_bundle, verify_bundle
from lineage_platform.errors import LineageError
from lineage_platform.log import SignedCheckpoint
from lineage_platform.records import (
    AttributionRecord,
    Contributor,
    DvcRef,
    InputRef,
    MlflowRef,
    RecordFacts,
    RunRef,
    details_json,
    scan_payload,
)
from lineage_platform.signing import (
    Envelope,
    SigningKey,
    TrustStore,
    open_stored,
    sign_envelope,
    verify_envelope,
)
from lineage_platform.stores import open_store

H1 = "3f" * 32
H2 = "a0" * 32
T = "2026-11-24T20:00:00.123456Z"


def sample_records() -> list[AttributionRecord]:
    """Every field used at least once, so mutations reach every part of the parser."""
    part = AttributionRecord(
        kind="dataset", asset="contributions", partition="alice", sha256=H1, recorded_at=T,
        data_version=H1, code_version="1", run=RunRef("dagster", "run-a", 3),
        dvc=DvcRef("data/parts/alice.parquet", "d41d8cd98f00b204e9800998ecf8427e"),
        contributors=(Contributor("alice", rows=30, sha256=H1),),
    )
    model = AttributionRecord(
        kind="model", asset="clf", sha256=H2, recorded_at=T, run=RunRef("dagster", "run-b", 9),
        mlflow=MlflowRef("a" * 32, "m-1"), inputs=(InputRef("contributions", H1, 0),),
    )
    valuation = AttributionRecord(
        kind="valuation", asset="clf_valuation", sha256=H1, recorded_at=T,
        inputs=(InputRef("clf", H2, 1),),
        contributors=(Contributor("alice", value=0.61, stderr=0.05, weight=0.7),
                      Contributor("bob", value=-0.2, stderr=1e-7)),
        details=details_json({"method": "permutation", "seed": 7, "samples": [1, 2.5, None]}),
        supersedes=0,
    )
    return [part, model, valuation]


# --- mutation strategies ------------------------------------------------------------------------

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def mutated_bytes(draw: st.DrawFn, bases: list[bytes]) -> bytes:
    """A valid input with one to four byte-level edits (the classic fuzzer mutations)."""
    data = bytearray(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(("flip", "set", "insert", "delete", "dup", "truncate", "splice")))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[i] = draw(st.sampled_from(b'"\\{}[],:0 \x00\x7f\xff\xc3ne-+.Eu/='))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 16))]
        elif op == "dup":
            n = draw(st.integers(1, 32))
            data[i:i] = data[i : i + n]
        elif op == "truncate":
            del data[i:]
        elif op == "splice":
            other = draw(st.sampled_from(bases))
            j = draw(st.integers(0, max(0, len(other) - 1)))
            data[i:] = other[j:]
    return bytes(data)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.extend(_paths(v, (*prefix, i)))
    return out


@st.composite
def mutated_json(draw: st.DrawFn, bases: list[Any]) -> bytes:
    """Valid JSON structure with a value replaced, a key dropped or added, or a type swapped."""
    obj = copy.deepcopy(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(1, 2))):
        path = draw(st.sampled_from(_paths(obj)))
        if not path:
            obj = draw(json_values)
            continue
        parent = obj
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        op = draw(st.sampled_from(("replace", "drop", "add", "wrap")))
        if op == "replace":
            parent[last] = draw(json_values)
        elif op == "drop":
            del parent[last]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(json_values)
        elif op == "add" and isinstance(parent, list):
            parent.append(draw(json_values))
        else:
            parent[last] = [parent[last]]
    style = draw(st.sampled_from(("compact", "spaced", "ascii")))
    if style == "compact":
        text = json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    elif style == "spaced":
        text = json.dumps(obj, indent=1)
    else:
        text = json.dumps(obj, sort_keys=True)
    return text.encode("utf-8", "surrogatepass")


# --- the targets --------------------------------------------------------------------------------


@dataclass
class Target:
    """One parser under fuzz: a strategy and a check that raises AssertionError on a finding."""

    name: str
    strategy: st.SearchStrategy[Any]
    check: Callable[[Any], None]
    examples: int = field(default=0)

    def _counted(self, value: Any) -> None:
        self.examples += 1
        self.check(value)

    def run(self, examples: int, seed: int | None = None) -> None:
        """Run `examples` hypothesis examples; a finding raises (hypothesis shrinks it first)."""

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=seed is None,
            phases=(Phase.generate, Phase.shrink),
            suppress_health_check=list(HealthCheck),
        )
        @given(self.strategy)
        def fuzz(value: Any) -> None:
            self._counted(value)

        if seed is not None:
            fuzz = with_seed(seed)(fuzz)
        fuzz()


def only_lineage_errors(call: Callable[[], Any]) -> Any:
    """The call's result, or None when it raised a LineageError; anything else is a finding."""
    try:
        return call()
    except LineageError as exc:
        message = str(exc)
        assert message and "\n" not in message, f"unclear error message {message!r:.300}"
        assert len(message) <= 500, f"error message of {len(message)} characters: {message:.300}"
        return None


@dataclass(frozen=True)
class World:
    """Signed samples and an exported bundle, built once per run in `folder`."""

    folder: Path
    key: SigningKey
    trust: TrustStore
    record_bytes: list[bytes]
    statements: list[Any]
    envelopes: list[bytes]
    envelope_objs: list[Any]
    checkpoint: bytes
    bundle: dict[str, bytes]


def build_world(folder: Path) -> World:
    key = SigningKey.generate()
    trust = TrustStore.of(key)
    records = sample_records()
    store = open_store(folder / "log.duckdb")
    for record in records:
        append_records(store, key, [record])  # three batches: three checkpoints
    export_bundle(store, trust, folder / "bundle")
    bundle = {n: (folder / "bundle" / n).read_bytes() for n in (ENVELOPES, CHECKPOINT, KEYS)}
    envelopes = [sign_envelope(r.to_bytes(), key).to_json() for r in records]
    return World(
        folder=folder,
        key=key,
        trust=trust,
        record_bytes=[r.to_bytes() for r in records],
        statements=[r.to_statement() for r in records],
        envelopes=envelopes,
        envelope_objs=[json.loads(e) for e in envelopes],
        checkpoint=bundle[CHECKPOINT].strip(),
        bundle=bundle,
    )


def _record_target(world: World) -> Target:
    def check(data: bytes) -> None:
        for canonical in (True, False):
            parsed = only_lineage_errors(
                lambda c=canonical: AttributionRecord.from_bytes(data, require_canonical=c)
            )
            if parsed is not None and canonical:
                # Accepted bytes are the record's one canonical encoding: no two byte strings
                # decode to the same record, so the payload hash identifies it.
                assert parsed.to_bytes() == data
            if parsed is not None:
                assert AttributionRecord.from_bytes(parsed.to_bytes()) == parsed
            if canonical:  # verify's scan accepts exactly what the strict parse accepts
                facts = only_lineage_errors(lambda: scan_payload(data))
                assert facts == (None if parsed is None else RecordFacts.of(parsed))

    strategy = (
        st.binary(max_size=300)
        | mutated_bytes(world.record_bytes)
        | mutated_json(world.statements)
    )
    return Target("AttributionRecord.from_bytes", strategy, check)


def _envelope_target(world: World) -> Target:
    originals = {}
    for data in world.envelopes:
        env = Envelope.from_json(data)
        originals[(env.payload, env.payload_type)] = env

    def check(data: bytes) -> None:
        opened = only_lineage_errors(lambda: open_stored(data, world.trust) or False)
        if opened:  # verify's hot path opened it: the canonical envelope, signed and trusted
            env = Envelope.from_stored(data)
            assert env is not None and (env.payload, env.payload_type) in originals
        env = only_lineage_errors(lambda: Envelope.from_json(data))
        if env is None:
            return
        assert Envelope.from_json(env.to_json()) == env
        verified = only_lineage_errors(lambda: verify_envelope(env, world.trust) or True)
        if verified:
            # A signature covers PAE(payloadType, payload): nothing else may have changed.
            assert (env.payload, env.payload_type) in originals, "a changed envelope verified"

    strategy = (
        st.binary(max_size=300)
        | mutated_bytes(world.envelopes)
        | mutated_json(world.envelope_objs)
    )
    return Target("Envelope.from_json", strategy, check)


def _checkpoint_target(world: World) -> Target:
    original = SignedCheckpoint.from_json(world.checkpoint)

    def check(data: bytes) -> None:
        cp = only_lineage_errors(lambda: SignedCheckpoint.from_json(data))
        if cp is None:
            return
        assert SignedCheckpoint.from_json(cp.to_json()) == cp
        if only_lineage_errors(lambda: cp.verify(world.trust) or True):
            assert cp.checkpoint.body() == original.checkpoint.body(), "changed checkpoint verified"

    strategy = (
        st.binary(max_size=300)
        | mutated_bytes([world.checkpoint])
        | mutated_json([json.loads(world.checkpoint)])
    )
    return Target("SignedCheckpoint.from_json", strategy, check)


@st.composite
def mutated_bundle(draw: st.DrawFn, bundle: dict[str, bytes]) -> dict[str, bytes]:
    files = dict(bundle)
    name = draw(st.sampled_from((ENVELOPES, ENVELOPES, ENVELOPES, CHECKPOINT, KEYS)))
    data = files[name]
    if name == ENVELOPES and draw(st.booleans()):
        lines = data.split(b"\n")
        op = draw(st.sampled_from(("drop", "dup", "swap", "replace", "blank")))
        i = draw(st.integers(0, len(lines) - 1))
        j = draw(st.integers(0, len(lines) - 1))
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(j, lines[i])
        elif op == "swap":
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "replace":
            lines[i] = draw(mutated_bytes([lines[i] or b"{}"]))
        else:
            lines.insert(i, b"")
        files[name] = b"\n".join(lines)
    else:
        files[name] = draw(mutated_bytes([data]))
    return files


def _bundle_target(world: World) -> Target:
    folder = world.folder / "mutated"
    folder.mkdir(exist_ok=True)
    lines = world.bundle[ENVELOPES].split(b"\n")[:-1]
    original = SignedCheckpoint.from_json(world.checkpoint)

    def check(files: dict[str, bytes]) -> None:
        for name, data in files.items():
            (folder / name).write_bytes(data)
        for pinned in (world.trust, None):
            report = only_lineage_errors(lambda pinned=pinned: verify_bundle(folder, pinned))
            if report is None:
                continue
            # It verified: then it says exactly what was signed (a final newline, whitespace
            # around the checkpoint JSON or in keys.json change no signed byte).
            got = files[ENVELOPES].split(b"\n")
            if got and got[-1] == b"":
                got.pop()
            assert got == lines, "changed envelopes verified"
            assert SignedCheckpoint.from_json(files[CHECKPOINT].strip()) == original
            if pinned is None:
                assert TrustStore.from_json(files[KEYS].strip()) == world.trust

    return Target("audit.verify_bundle", mutated_bundle(world.bundle), check)


# -- usage events: random Arrow tables ------------------------------------------------------------

_TEXT = st.text(max_size=6)
_INTS = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_TYPES: dict[str, tuple[Callable[[], pa.DataType], st.SearchStrategy[Any]]] = {
    "string": (pa.string, _TEXT),
    "large_string": (pa.large_string, _TEXT),
    "binary": (pa.binary, st.binary(max_size=6)),
    "int64": (pa.int64, _INTS),
    "int8": (pa.int8, st.integers(-128, 127)),
    "uint64": (pa.uint64, st.integers(0, 2**64 - 1)),
    "uint32": (pa.uint32, st.integers(0, 2**32 - 1)),
    "float64": (pa.float64, st.floats()),
    "float32": (pa.float32, st.floats(width=32)),
    "bool": (pa.bool_, st.booleans()),
    "decimal": (lambda: pa.decimal128(20, 2), st.decimals(-(10**17), 10**17, places=2,
                                                          allow_nan=False, allow_infinity=False)),
    "timestamp_us": (lambda: pa.timestamp("us"), st.datetimes()),
    "timestamp_ns_utc": (
        lambda: pa.timestamp("ns", tz="UTC"),
        st.datetimes(datetime(1700, 1, 1), datetime(2250, 1, 1), timezones=st.just(UTC)),
    ),
    "timestamp_s_zone": (
        lambda: pa.timestamp("s", tz="+05:30"), st.datetimes(timezones=st.just(UTC))
    ),
    "date32": (pa.date32, st.dates()),
    "list_int": (lambda: pa.list_(pa.int64()), st.lists(_INTS, max_size=2)),
    "struct": (lambda: pa.struct([("a", pa.int64())]), st.fixed_dictionaries({"a": _INTS})),
    "null": (pa.null, st.none()),
    "dict_string": (lambda: pa.dictionary(pa.int32(), pa.string()), _TEXT),
    "duration": (lambda: pa.duration("us"), st.timedeltas()),
}


@st.composite
def arrow_tables(draw: st.DrawFn) -> pa.Table:
    names = draw(
        st.lists(
            st.sampled_from([*usage.REQUIRED, *usage.OPTIONAL, "extra", ""]),
            unique=True,
            max_size=7,
        )
        | st.just([*usage.REQUIRED, *usage.OPTIONAL])
    )
    rows = draw(st.integers(0, 5))
    chunks = draw(st.integers(1, 2))
    columns = {}
    for name in names:
        kind = draw(st.sampled_from(sorted(_TYPES)))
        make_type, values = _TYPES[kind]
        parts = []
        for _ in range(chunks):
            data = draw(st.lists(st.none() | values, min_size=rows, max_size=rows))
            try:
                parts.append(pa.array(data, make_type()))
            except (pa.ArrowException, ValueError, TypeError, OverflowError):
                parts.append(pa.nulls(rows, make_type()))
        columns[name] = pa.chunked_array(parts, make_type())
    return pa.table(columns) if columns else pa.table({})


def _usage_target(_: World) -> Target:
    def check(table: pa.Table) -> None:
        clean = only_lineage_errors(lambda: usage.validate_events(table, datetime(2026, 1, 1)))
        if clean is None:
            return
        assert clean.schema == usage.SCHEMA
        assert clean.num_rows == table.num_rows
        for name in ("model", "caller", "units", "fee", "occurred_at"):
            assert clean.column(name).null_count == 0, name
        for name in ("units", "fee"):
            assert all(v >= 0 for v in clean.column(name).to_pylist()), name

    return Target("usage.validate_events", arrow_tables(), check)


def _event_file_bases() -> list[tuple[str, bytes]]:
    import pyarrow.csv as pcsv
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    table = pa.table({
        "event_id": ["a", "b"], "model": ["clf", "clf"], "caller": ["x", "y"],
        "units": pa.array([1, 2], pa.int64()), "fee": pa.array([10, 20], pa.int64()),
        "occurred_at": pa.array([datetime(2026, 1, 1), datetime(2026, 1, 2)], pa.timestamp("us")),
    })
    out = []
    for suffix, write in (
        (".parquet", lambda sink: pq.write_table(table, sink)),
        (".csv", lambda sink: pcsv.write_csv(table, sink)),
        (".arrow", lambda sink: feather.write_feather(table, sink)),
    ):
        sink = io.BytesIO()
        write(sink)
        out.append((suffix, sink.getvalue()))
    lines = [json.dumps(row, default=str) for row in table.to_pylist()]
    out.append((".jsonl", "\n".join(lines).encode()))
    return out


def _event_file_target(world: World) -> Target:
    bases = _event_file_bases()
    folder = world.folder / "events"
    folder.mkdir(exist_ok=True)

    @st.composite
    def files(draw: st.DrawFn) -> tuple[str, bytes]:
        suffix, data = draw(st.sampled_from(bases))
        return suffix, draw(mutated_bytes([data]) | st.binary(max_size=64))

    def check(file: tuple[str, bytes]) -> None:
        suffix, data = file
        path = folder / f"events{suffix}"
        path.write_bytes(data)
        table = only_lineage_errors(lambda: usage.read_events(path))
        if table is not None:
            only_lineage_errors(lambda: usage.validate_events(table, datetime(2026, 1, 1)))

    return Target("usage.read_events", files(), check)


# Out-of-range values a hostile usage file may carry (issue 15): amounts around the per-event
# bound and 64 bits, times before 1970, in year 9999 and past Python's datetime, spoofed ids.
_HOSTILE_AMOUNTS = st.sampled_from(
    [0, 1, 10**15, 10**15 + 1, 2**53 + 1, 2**62, 2**63 - 1, -1, -(2**63)]
) | st.integers(-(2**63), 2**63 - 1)
_HOSTILE_MICROS = st.sampled_from([
    -1, -(2**62), 0, 1_767_225_600_000_000, 253_402_300_799_000_000, 4_611_686_018_427_387_000,
    2**63 - 1,
]) | st.integers(-(2**63) + 1, 2**63 - 1)
_HOSTILE_IDS = st.sampled_from(
    ["clf", "acme", "p\u0430ypal", "al\u200bice", "a\u202eb", "\ufeffx", "Zoe\u0308", "",
     "x\ny", "\u03bfpenai"]
) | st.text(max_size=6)


@st.composite
def _hostile_events(draw: st.DrawFn) -> tuple[str, pa.Table]:
    n = draw(st.integers(1, 6))
    table = pa.table({
        "event_id": [f"e{i}" for i in range(n)],
        "model": draw(st.lists(_HOSTILE_IDS, min_size=n, max_size=n)),
        "caller": draw(st.lists(_HOSTILE_IDS, min_size=n, max_size=n)),
        "units": pa.array(draw(st.lists(_HOSTILE_AMOUNTS, min_size=n, max_size=n)), pa.int64()),
        "fee": pa.array(draw(st.lists(_HOSTILE_AMOUNTS, min_size=n, max_size=n)), pa.int64()),
        "occurred_at": pa.array(
            draw(st.lists(_HOSTILE_MICROS, min_size=n, max_size=n)), pa.int64()
        ).cast(pa.timestamp("us")),
    })
    return draw(st.sampled_from([".parquet", ".csv", ".jsonl", ".arrow"])), table


def _usage_bounds_target(world: World) -> Target:
    """Every ingest format with out-of-range values: each row is kept within the bounds or
    refused with one line; nothing escapes as another exception."""
    import pyarrow.csv as pcsv
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    from lineage_platform.identifiers import problem
    from lineage_platform.stores import MAX_AMOUNT

    folder = world.folder / "bounds"
    folder.mkdir(exist_ok=True)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    earliest = datetime(2025, 12, 1)

    def check(case: tuple[str, pa.Table]) -> None:
        suffix, table = case
        path = folder / f"events{suffix}"
        if suffix == ".parquet":
            pq.write_table(table, path)
        elif suffix == ".arrow":
            feather.write_feather(table, path)
        elif suffix == ".csv":
            pcsv.write_csv(table, path)
        else:
            rows = []
            plain = table.drop_columns(["occurred_at"]).to_pylist()
            stamps = table.column("occurred_at").cast(pa.int64()).to_pylist()
            for row, micros in zip(plain, stamps, strict=True):
                row["occurred_at"] = micros  # JSON: the raw number (a datetime may not exist)
                rows.append(json.dumps(row))
            path.write_text("\n".join(rows) + "\n")
        read = only_lineage_errors(lambda: usage.read_events(path))
        if read is None:
            return
        screened = only_lineage_errors(lambda: usage.screen_events(read, now, earliest))
        if screened is None:
            return
        kept = screened.events
        assert kept.num_rows + screened.refused == read.num_rows
        assert len(screened.refusals) == screened.refused
        for refusal in screened.refusals:
            assert refusal.reason and "\n" not in refusal.reason and len(refusal.reason) < 300
        for name in ("units", "fee"):
            assert all(0 <= v <= MAX_AMOUNT for v in kept.column(name).to_pylist()), name
        micros = kept.column("occurred_at").cast(pa.int64()).to_pylist()
        low = (earliest - datetime(1970, 1, 1)).total_seconds() * 1e6
        high = (now.replace(tzinfo=None) - datetime(1970, 1, 1)).total_seconds() * 1e6 + 300e6
        assert all(low <= m <= high for m in micros), micros
        for name in ("model", "caller"):
            assert all(v and problem(v) is None for v in kept.column(name).to_pylist()), name

    return Target("usage.screen_events (bounds)", _hostile_events(), check)


def _trust_target(world: World) -> Target:
    base = world.trust.to_json()

    def check(data: bytes) -> None:
        only_lineage_errors(lambda: TrustStore.from_json(data))

    return Target("TrustStore.from_json", mutated_bytes([base]) | st.binary(max_size=100), check)


BUILDERS: dict[str, Callable[[World], Target]] = {
    "records": _record_target,
    "envelopes": _envelope_target,
    "checkpoints": _checkpoint_target,
    "bundles": _bundle_target,
    "usage_tables": _usage_target,
    "usage_files": _event_file_target,
    "usage_bounds": _usage_bounds_target,
    "trust_stores": _trust_target,
}


def targets(folder: Path, names: list[str] | None = None) -> list[Target]:
    """The named targets (all by default), sharing one signed world built under `folder`."""
    world = build_world(folder)
    return [BUILDERS[name](world) for name in names or BUILDERS]


def scratch() -> Path:
    """A scratch folder for runners without pytest's tmp_path."""
    return Path(tempfile.mkdtemp(prefix="lineage-fuzz-"))

