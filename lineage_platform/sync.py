"""Turn an orchestrator's events into signed attribution records: the sync every source shares.

    result = sync(DagsterSource(instance, keys), store, signer)  # one batch, from the log's cursor
    result = sync(source, store, signer, until_caught_up=True)    # `lineage sync`: all of it

A source (Dagster today: `lineage_platform.dagster.sync.DagsterSource`) yields `SourceEvent`s:
plain values naming one materialization (orchestrator, run id, event id, asset, partition, content
digest, kind, lineage metadata) and the upstream events it read (`InputPointer`s). This module
owns everything after that: the `Cursor` (per asset, the newest event id recorded), resolving each
input to its record's log index, signing before the store transaction opens, appending in
batches, and exactly-once. An event is keyed in the log by `records.idempotency_key(orchestrator,
run_id, event_id)`, so an event recorded before a crash is found again and never appended twice;
the cursor moves only after the append committed. A new orchestrator is one new `Source`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Protocol, runtime_checkable

from lineage_platform.attest import append_records
from lineage_platform.errors import LineageError, RecordError
from lineage_platform.records import (
    KINDS,
    AttributionRecord,
    Contributor,
    DvcRef,
    InputRef,
    MlflowRef,
    RunRef,
    idempotency_key,
    utc_timestamp,
)
from lineage_platform.signing import SigningKey
from lineage_platform.stores import Store

__all__ = [
    "Cursor",
    "InputPointer",
    "Lineage",
    "Skipped",
    "Source",
    "SourceEvent",
    "SyncResult",
    "sync",
]

CURSOR_VERSION = 1
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Lineage:
    """What a materialization says about itself beyond its content: the record's metadata.

    `details` is canonical JSON text (`records.details_json`), as the record stores it.
    """

    data_version: str | None = None
    code_version: str | None = None
    dvc: DvcRef | None = None
    mlflow: MlflowRef | None = None
    contributors: tuple[Contributor, ...] = ()
    details: str | None = None


NO_LINEAGE = Lineage()


@dataclass(frozen=True, slots=True)
class InputPointer:
    """An upstream artifact an event read: its asset, partition and content digest, and the
    upstream event itself (`upstream`) when the source knows it. With `upstream`, the input
    resolves to that event's own record even when several records share the content; without,
    to the newest record of (asset, partition, digest)."""

    asset: str
    partition: str | None
    sha256: str
    upstream: RunRef | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.sha256, str) or not _HEX64.fullmatch(self.sha256):
            raise RecordError(f"input {self.asset!r:.60}: sha256 must be 64 lowercase hex")


@dataclass(frozen=True, slots=True)
class SourceEvent:
    """One materialization as a source reports it; the sync turns it into one signed record.

    `event_id` increases with every event of one source (Dagster's storage id), so "the newest
    event id per asset" is a cursor. `timestamp` is Unix seconds: the record's `recorded_at`.
    """

    orchestrator: str
    run_id: str
    event_id: int
    asset: str
    partition: str | None
    sha256: str
    kind: str
    timestamp: float
    lineage: Lineage = NO_LINEAGE
    inputs: tuple[InputPointer, ...] = ()

    def __post_init__(self) -> None:
        RunRef(self.orchestrator, self.run_id, self.event_id)  # raises on a malformed reference
        if not isinstance(self.sha256, str) or not _HEX64.fullmatch(self.sha256):
            raise RecordError(f"{self.key}: sha256 must be 64 lowercase hex")
        if self.kind not in KINDS:
            raise RecordError(f"{self.key}: kind {self.kind!r:.40} is not one of {KINDS}")

    @property
    def key(self) -> str:
        """Its idempotency key in the log."""
        return idempotency_key(self.orchestrator, self.run_id, self.event_id)

    @property
    def run(self) -> RunRef:
        return RunRef(self.orchestrator, self.run_id, self.event_id)


@dataclass(frozen=True, slots=True)
class Skipped:
    """An event the source read but does not attribute (it cannot say what the asset holds):
    nothing is signed for it, and the cursor moves past it so it is not read again (a sync
    resuming from the log instead, with no cursor, reads it again and skips it again)."""

    asset: str
    event_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class Cursor:
    """The newest recorded event id per asset; assets never seen start from the beginning.

    Serialized as `{"v": 1, "after": {asset: event id}}` (the lineage sensor's cursor).
    """

    after: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str | None) -> Cursor:
        if not raw:
            return cls()
        try:
            doc = json.loads(raw)
            return cls({str(k): int(v) for k, v in doc["after"].items()})
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LineageError(f"lineage sync cursor is unreadable: {raw[:80]!r}") from exc

    @classmethod
    def of_store(cls, store: Store, orchestrator: str) -> Cursor:
        """Where the log stands for one orchestrator: what a lost or reset cursor resumes from."""
        return cls(store.source_cursor(orchestrator))

    def serialize(self) -> str:
        return json.dumps({"v": CURSOR_VERSION, "after": self.after}, sort_keys=True)

    def advanced(self, seen: dict[str, int]) -> Cursor:
        merged = dict(self.after)
        for asset, event_id in seen.items():
            merged[asset] = max(event_id, merged.get(asset, 0))
        return Cursor(merged)


@runtime_checkable
class Source(Protocol):
    """Where events come from. `events` yields, oldest first (by `event_id`), the events of
    every asset newer than `after` gives for it, up to `limit` of them, each a `SourceEvent`
    or, for one it does not attribute, `Skipped`. It only reads (the sync may call it from a
    reader thread while the previous batch commits, one call at a time). An input's upstream
    event, when in the same read, comes before its reader."""

    @property
    def orchestrator(self) -> str: ...

    def events(self, after: Cursor, limit: int) -> Iterable[SourceEvent | Skipped]: ...


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What a sync did. `cursor` is committed state (every event before it is in the log);
    `has_more` says the source holds events past it (the backlog left)."""

    cursor: Cursor
    read: int
    appended: int  # records signed and appended
    skipped: int  # already in the log (a retry after a crash, a lost cursor)
    has_more: bool
    indices: dict[str, int]  # idempotency key -> log index, for every event read
    seen: dict[str, int]  # asset -> newest event id read
    unattributed: int = 0  # read, and `Skipped` by the source: nothing signed
    passed: tuple[Skipped, ...] = ()  # those events with the reasons (the first PASSED_SHOWN)


PASSED_SHOWN = 100  # skipped events a result keeps with their reasons (all are counted)


@dataclass(frozen=True, slots=True)
class _Batch:
    cursor: Cursor  # where it was read from
    events: list[SourceEvent]
    passed: list[Skipped]
    more: bool

    @property
    def seen(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for asset, event_id in [(e.asset, e.event_id) for e in self.events] + [
            (p.asset, p.event_id) for p in self.passed
        ]:
            out[asset] = max(event_id, out.get(asset, 0))
        return out


def _read(source: Source, cursor: Cursor, limit: int) -> _Batch:
    # One event past the limit says whether more are waiting; it is read again next batch.
    found = list(islice(source.events(cursor, limit + 1), limit + 1))
    events: list[SourceEvent] = []
    passed: list[Skipped] = []
    for e in found[:limit]:
        if isinstance(e, SourceEvent):
            events.append(e)
        elif isinstance(e, Skipped):
            passed.append(e)
        else:
            raise TypeError(f"{source.orchestrator} source yielded {type(e).__name__}")
    return _Batch(cursor, events, passed, len(found) > limit)


def _record(e: SourceEvent, inputs: Sequence[InputRef]) -> AttributionRecord:
    meta = e.lineage
    try:
        return AttributionRecord(
            kind=e.kind,
            asset=e.asset,
            partition=e.partition,
            sha256=e.sha256,
            recorded_at=utc_timestamp(datetime.fromtimestamp(e.timestamp, UTC)),
            data_version=meta.data_version,
            code_version=meta.code_version,
            run=e.run,
            dvc=meta.dvc,
            mlflow=meta.mlflow,
            inputs=tuple(inputs),
            contributors=meta.contributors,
            details=meta.details,
        )
    except RecordError as exc:
        raise RecordError(f"{e.key} ({e.asset}): {exc}") from exc


def _write(
    batch: _Batch, store: Store, signer: SigningKey, workers: int = 1
) -> SyncResult:
    """Sign and append what is not in the log yet; returns the cursor past the whole batch.

    A record names the log index of each input's own record, so an event whose input is
    recorded in this same batch waits for a later append: the batch goes in as a few layers
    (its depth of dependencies within the batch, 3 for the example), one transaction each.
    """
    events = batch.events
    own = [e.key for e in events]
    upstream: dict[InputPointer, str] = {}
    for e in events:
        for p in e.inputs:
            if p.upstream is not None and p not in upstream:
                upstream[p] = p.upstream.key()
    logged = store.indices_for(sorted(set(own) | set(upstream.values()))) if events else {}

    indices: dict[str, int] = {}
    skipped = appended = 0
    depth: dict[str, int] = {}  # unrecorded events of this batch -> their append layer
    layers: list[list[tuple[str, SourceEvent]]] = []
    in_batch = set(own)
    for key, e in zip(own, events, strict=True):  # oldest first: an input before its reader
        if key in logged:  # recorded before the cursor moved (a crash, a retry)
            indices[key] = logged[key]
            skipped += 1
            continue
        below = []
        for p in e.inputs:
            k = upstream.get(p)
            if k is None:
                continue
            if k in depth:
                below.append(depth[k])
            elif k in in_batch and k not in logged:  # it would resolve to no record, silently
                raise LineageError(
                    f"{e.orchestrator} source: {key} came before its input {k}; "
                    "a source yields events oldest first"
                )
        layer = max(below, default=-1) + 1
        depth[key] = layer
        if layer == len(layers):
            layers.append([])
        layers[layer].append((key, e))

    by_content: dict[tuple[str, str | None, str], int | None] = {}

    def log_index(p: InputPointer) -> int | None:
        k = upstream.get(p)
        if k is not None and (idx := logged.get(k)) is not None:
            return idx
        # An upstream this sync does not record itself: the newest record of that content.
        ref = (p.asset, p.partition, p.sha256)
        if ref not in by_content:
            by_content[ref] = store.latest_index(p.asset, p.sha256, p.partition)
        return by_content[ref]

    refused: list[Skipped] = []
    for level in layers:
        group: list[tuple[str, SourceEvent]] = []
        records: list[AttributionRecord] = []
        for key, e in level:
            try:
                records.append(
                    _record(e, [InputRef(p.asset, p.sha256, log_index(p)) for p in e.inputs])
                )
            except RecordError as exc:  # one hostile event must not stop every later one
                refused.append(Skipped(e.asset, e.event_id, f"not signed: {exc}"))
                continue
            group.append((key, e))
        if not records:
            continue
        result = append_records(store, signer, records, workers=workers)
        appended += result.appended
        skipped += result.skipped
        for (key, _), idx in zip(group, result.indices, strict=True):
            logged[key] = idx
            indices[key] = idx

    seen = batch.seen
    passed = [*batch.passed, *refused]
    return SyncResult(
        batch.cursor.advanced(seen),
        len(events) + len(batch.passed),
        appended,
        skipped,
        batch.more,
        indices,
        seen,
        len(passed),
        tuple(passed[:PASSED_SHOWN]),
    )


def sync(
    source: Source,
    store: Store,
    signer: SigningKey,
    cursor: Cursor | None = None,
    limit: int = 1000,
    workers: int = 1,
    until_caught_up: bool = False,
    on_batch: Callable[[SyncResult], None] | None = None,
) -> SyncResult:
    """Read up to `limit` events after `cursor`, sign them, append them (committed), and
    return the new cursor; with `until_caught_up`, batch after batch until the source has
    no more (each batch commits before its cursor is returned to `on_batch`).

    Without a `cursor`, it resumes from what the log holds for the source's orchestrator.
    While a batch is signed and committed (the store releases the GIL), the next is read.
    """
    if limit < 1:
        raise ValueError(f"limit must be positive, got {limit}")
    start = cursor if cursor is not None else Cursor.of_store(store, source.orchestrator)
    if not until_caught_up:
        result = _write(_read(source, start, limit), store, signer, workers)
        if on_batch:
            on_batch(result)
        return result

    read = appended = skipped = unattributed = 0
    passed: list[Skipped] = []
    indices: dict[str, int] = {}
    seen: dict[str, int] = {}
    now = start
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lineage-read") as reader:
        upcoming = reader.submit(_read, source, start, limit)
        while True:
            batch = upcoming.result()
            if batch.more:
                upcoming = reader.submit(_read, source, batch.cursor.advanced(batch.seen), limit)
            result = _write(batch, store, signer, workers)
            read += result.read
            appended += result.appended
            skipped += result.skipped
            unattributed += result.unattributed
            passed.extend(result.passed[: PASSED_SHOWN - len(passed)])
            indices.update(result.indices)
            for asset, event_id in result.seen.items():
                seen[asset] = max(event_id, seen.get(asset, 0))
            now = result.cursor
            if on_batch:
                on_batch(result)
            if not result.has_more:
                break
    return SyncResult(
        now, read, appended, skipped, False, indices, seen, unattributed, tuple(passed)
    )
