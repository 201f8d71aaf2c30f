"""Turn Dagster materializations into signed attribution records: the lineage sensor's logic.

    result = sync_once(instance, asset_keys, store, key, cursor=None, limit=1000)
    result.cursor   # store it only after the append committed (it already has, on return)

Events are read per asset key with a storage-id cursor (`instance.fetch_materializations`), so
several events in one tick, partitions, and assets added later are all seen. The append commits
before the cursor moves; a tick retried after a crash finds the records by their idempotency key
(Dagster run id + storage id) and appends nothing twice. Each input names the upstream
materialization the run actually read (Dagster's input event pointer), so its log index is that
event's own record even when several records share the same content hash.
"""

from __future__ import annotations

import heapq
import json
import re
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import dagster as dg

from lineage_platform.attest import append_records
from lineage_platform.config import Settings
from lineage_platform.dagster import metadata as M
from lineage_platform.errors import LineageError
from lineage_platform.hashing import sha256_bytes
from lineage_platform.keys import KeyRing
from lineage_platform.records import (
    AttributionRecord,
    Contributor,
    DvcRef,
    InputRef,
    MlflowRef,
    RunRef,
    canonical_json,
    details_json,
    utc_timestamp,
)
from lineage_platform.signing import SigningKey
from lineage_platform.stores import Store, open_store

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
INPUT_VERSION = "dagster/input_data_version/"
INPUT_POINTER = "dagster/input_event_pointer/"
CURSOR_VERSION = 1
MAX_FETCH = 10_000  # Dagster refuses to return more event records per call


@dataclass(frozen=True, slots=True)
class Cursor:
    """Last recorded storage id per asset key; keys never seen start from the beginning."""

    after: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str | None) -> Cursor:
        if not raw:
            return cls()
        try:
            doc = json.loads(raw)
            return cls({str(k): int(v) for k, v in doc["after"].items()})
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LineageError(f"lineage sensor cursor is unreadable: {raw[:80]!r}") from exc

    def serialize(self) -> str:
        return json.dumps({"v": CURSOR_VERSION, "after": self.after}, sort_keys=True)

    def advanced(self, seen: dict[str, int]) -> Cursor:
        merged = dict(self.after)
        for key, sid in seen.items():
            merged[key] = max(sid, merged.get(key, 0))
        return Cursor(merged)


@dataclass(frozen=True, slots=True)
class SyncResult:
    cursor: Cursor
    read: int
    appended: int
    skipped: int
    has_more: bool
    indices: dict[tuple[str, int], int]  # (run id, storage id) -> log index
    seen: dict[str, int]  # asset key -> newest storage id read in this batch


def _meta(mat: dg.AssetMaterialization, key: str) -> str | None:
    return M.read_text(mat.metadata.get(key))


def _sha_of(record: dg.EventLogRecord) -> str:
    """The content hash the asset reported, else its data version, else a hash of the event."""
    mat = record.asset_materialization
    assert mat is not None
    reported = _meta(mat, M.SHA256)
    if reported and _HEX64.match(reported):
        return reported
    version = mat.tags.get("dagster/data_version") if mat.tags else None
    if version and _HEX64.match(version):
        return version
    return sha256_bytes(
        canonical_json(
            {
                "asset": mat.asset_key.to_user_string(),
                "partition": mat.partition,
                "data_version": version,
                "storage_id": record.storage_id,
            }
        )
    )


def _kind(mat: dg.AssetMaterialization) -> str:
    kind = _meta(mat, M.KIND)
    return kind if kind in ("dataset", "model", "valuation") else "dataset"


def _contributors(mat: dg.AssetMaterialization) -> tuple[Contributor, ...]:
    raw = mat.metadata.get(M.CONTRIBUTORS)
    value = getattr(raw, "value", None) if raw is not None else None
    if not isinstance(value, dict):
        return ()
    out = []
    for c in value.get("contributors", []):
        out.append(
            Contributor(
                id=str(c["id"]),
                rows=c.get("rows"),
                sha256=c.get("sha256"),
                weight=c.get("weight"),
                value=c.get("value"),
                stderr=c.get("stderr"),
            )
        )
    return tuple(out)


def _details(mat: dg.AssetMaterialization) -> str | None:
    raw = mat.metadata.get(M.DETAILS)
    value = getattr(raw, "value", None) if raw is not None else None
    return details_json(value) if isinstance(value, dict) else None


def _timestamp(ts: float) -> str:
    return utc_timestamp(datetime.fromtimestamp(ts, UTC))


RUNLESS_RUN_ID = "runless"


def dagster_ref(record: dg.EventLogRecord) -> RunRef:
    """The event's identity. Events reported outside any run have an empty run id in Dagster."""
    return RunRef("dagster", record.run_id or RUNLESS_RUN_ID, record.storage_id)


def idempotency_key(record: dg.EventLogRecord) -> str:
    """The log's key for one materialization, as `AttributionRecord.idempotency_key` builds it."""
    return dagster_ref(record).key()


def _asset(record: dg.EventLogRecord) -> str:
    mat = record.asset_materialization
    assert mat is not None
    return mat.asset_key.to_user_string()


def _partition(record: dg.EventLogRecord) -> str | None:
    mat = record.asset_materialization
    return mat.partition if mat is not None else None


@dataclass(frozen=True, slots=True)
class _Input:
    asset: str
    partition: str | None
    sha256: str
    event: dg.EventLogRecord | None  # the upstream materialization the run read, when known


def _pointers(record: dg.EventLogRecord) -> list[tuple[str, int, str]]:
    """(upstream asset, storage id the run read it at, data version) from Dagster's input tags."""
    mat = record.asset_materialization
    assert mat is not None
    tags = mat.tags or {}
    out = []
    for tag, version in sorted(tags.items()):
        if tag.startswith(INPUT_VERSION):
            upstream = tag[len(INPUT_VERSION) :]
            pointer = tags.get(INPUT_POINTER + upstream)
            at = int(pointer) if pointer and pointer.isdigit() else record.storage_id - 1
            out.append((upstream, at, version))
    return out


class _UpstreamStates:
    """What each upstream asset was at the storage ids runs read it at, for one batch.

    For a partitioned upstream that is the newest materialization of every partition at or
    before that id (Dagster's pointer names only the newest one overall). The state at the
    earliest id needed takes a few queries; the upstream's later events are then replayed in
    order, from the batch itself when it holds them, so a batch costs a handful of queries per
    upstream asset rather than some per event.
    """

    def __init__(
        self,
        instance: dg.DagsterInstance,
        batch: Sequence[dg.EventLogRecord],
        cursor: Cursor,
        synced: set[str],
    ) -> None:
        self.instance = instance
        self.cursor = cursor
        self.synced = synced
        self.in_batch: dict[str, list[dg.EventLogRecord]] = {}
        for e in batch:
            self.in_batch.setdefault(_asset(e), []).append(e)
        self.states: dict[tuple[str, int], dict[str | None, dg.EventLogRecord]] = {}
        self.shas: dict[int, str] = {}  # storage id -> content hash, read once per batch

    def resolve(self, wanted: dict[str, set[int]]) -> None:
        for upstream, ats in wanted.items():
            key = dg.AssetKey.from_user_string(upstream)
            ordered = sorted(ats)
            state = self._state_at(key, ordered[0])
            window = iter(self._window(upstream, key, ordered[0], ordered[-1]))
            nxt = next(window, None)
            for at in ordered:
                while nxt is not None and nxt.storage_id <= at:
                    state[_partition(nxt)] = nxt
                    nxt = next(window, None)
                self.states[(upstream, at)] = dict(state)

    def inputs(self, pointers: Sequence[tuple[str, int, str]]) -> list[_Input]:
        out = []
        for upstream, at, version in pointers:
            state = self.states[(upstream, at)]
            if not state:
                if _HEX64.match(version):
                    out.append(_Input(upstream, None, version, None))
                continue
            for part in sorted(state, key=lambda p: (p is not None, p or "")):
                event = state[part]
                sha = self.shas.get(event.storage_id)
                if sha is None:
                    sha = self.shas[event.storage_id] = _sha_of(event)
                out.append(_Input(upstream, part, sha, event))
        return out

    def _fetch(self, records_filter: dg.AssetRecordsFilter, limit: int) -> list[dg.EventLogRecord]:
        return list(self.instance.fetch_materializations(records_filter, limit=limit).records)

    def _state_at(self, key: dg.AssetKey, at: int) -> dict[str | None, dg.EventLogRecord]:
        newest = self._fetch(dg.AssetRecordsFilter(asset_key=key, before_storage_id=at + 1), 1)
        if not newest:
            return {}
        if _partition(newest[0]) is None:
            return {None: newest[0]}
        latest = self.instance.get_latest_storage_id_by_partition(
            key, dg.DagsterEventType.ASSET_MATERIALIZATION
        )
        state: dict[str | None, dg.EventLogRecord] = {}
        ids = [sid for sid in latest.values() if sid <= at]
        for i in range(0, len(ids), MAX_FETCH):
            chunk = ids[i : i + MAX_FETCH]
            by_id = dg.AssetRecordsFilter(asset_key=key, storage_ids=chunk)
            for r in self._fetch(by_id, len(chunk)):
                state[_partition(r)] = r
        for part, sid in latest.items():
            if sid > at:  # re-materialized since: its newest version at `at`, if any
                older = self._fetch(
                    dg.AssetRecordsFilter(
                        asset_key=key, asset_partitions=[part], before_storage_id=at + 1
                    ),
                    1,
                )
                if older:
                    state[part] = older[0]
        return state

    def _window(
        self, upstream: str, key: dg.AssetKey, after: int, last: int
    ) -> Iterable[dg.EventLogRecord]:
        """The upstream's materializations with `after` < storage id <= `last`, oldest first."""
        if upstream in self.synced and after >= self.cursor.after.get(upstream, 0):
            # Every pending event older than the batch's newest is in the batch.
            return [e for e in self.in_batch.get(upstream, []) if after < e.storage_id <= last]
        out: list[dg.EventLogRecord] = []
        while True:
            res = self.instance.fetch_materializations(
                dg.AssetRecordsFilter(
                    asset_key=key, after_storage_id=after, before_storage_id=last + 1
                ),
                limit=1000,
                ascending=True,
            )
            out.extend(res.records)
            if not res.has_more or not res.records:
                return out
            after = res.records[-1].storage_id


def build_record(
    record: dg.EventLogRecord, inputs: Sequence[InputRef], recorded_at: str | None = None
) -> AttributionRecord:
    mat = record.asset_materialization
    assert mat is not None
    tags = mat.tags or {}
    dvc_path, dvc_md5 = _meta(mat, M.DVC_PATH), _meta(mat, M.DVC_MD5)
    run_id, model_id = _meta(mat, M.MLFLOW_RUN), _meta(mat, M.MLFLOW_MODEL)
    return AttributionRecord(
        kind=_kind(mat),
        asset=mat.asset_key.to_user_string(),
        partition=mat.partition,
        sha256=_sha_of(record),
        recorded_at=recorded_at or _timestamp(record.timestamp),
        data_version=tags.get("dagster/data_version"),
        code_version=tags.get("dagster/code_version"),
        run=dagster_ref(record),
        dvc=DvcRef(dvc_path, dvc_md5) if dvc_path and dvc_md5 else None,
        mlflow=MlflowRef(run_id, model_id) if run_id else None,
        inputs=tuple(inputs),
        contributors=_contributors(mat),
        details=_details(mat),
    )


def pending_events(
    instance: dg.DagsterInstance, asset_keys: Iterable[dg.AssetKey], cursor: Cursor, limit: int
) -> tuple[list[dg.EventLogRecord], bool]:
    """The oldest `limit` unrecorded materializations across all assets, in storage-id order.

    Each asset is read in pages and the pages merged, so a batch deserializes little more than
    it returns (reading `limit` events of every asset would read several times that).
    """
    keys = list(asset_keys)
    page = min(limit, MAX_FETCH, max(100, limit // (4 * max(1, len(keys)))))
    after = {k: cursor.after.get(k.to_user_string()) for k in keys}
    buffers: dict[dg.AssetKey, deque[dg.EventLogRecord]] = {}
    more: dict[dg.AssetKey, bool] = {}

    def refill(k: dg.AssetKey) -> None:
        res = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=k, after_storage_id=after[k]),
            limit=page,
            ascending=True,
        )
        buffers[k] = deque(res.records)
        more[k] = res.has_more and bool(res.records)
        if res.records:
            after[k] = res.records[-1].storage_id

    heads: list[tuple[int, int]] = []
    for i, k in enumerate(keys):
        refill(k)
        if buffers[k]:
            heads.append((buffers[k][0].storage_id, i))
    heapq.heapify(heads)
    events: list[dg.EventLogRecord] = []
    while heads and len(events) < limit:
        _, i = heapq.heappop(heads)
        k = keys[i]
        events.append(buffers[k].popleft())
        if not buffers[k] and more[k]:
            refill(k)
        if buffers[k]:
            heapq.heappush(heads, (buffers[k][0].storage_id, i))
    return events, bool(heads) or any(more.values())


@dataclass(frozen=True, slots=True)
class _Batch:
    """What one batch read from the instance: its events and each event's inputs."""

    cursor: Cursor  # where this batch was read from
    events: list[dg.EventLogRecord]
    more: bool
    inputs: dict[int, list[_Input]]  # storage id -> inputs

    @property
    def seen(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.events:
            name = _asset(e)
            out[name] = max(e.storage_id, out.get(name, 0))
        return out


def _read_batch(
    instance: dg.DagsterInstance, keys: Sequence[dg.AssetKey], cursor: Cursor, limit: int
) -> _Batch:
    """Only reads the instance, so `sync_all` reads the next batch while this one commits."""
    events, more = pending_events(instance, keys, cursor, limit)
    pointers = {e.storage_id: _pointers(e) for e in events}
    wanted: dict[str, set[int]] = {}
    for found in pointers.values():
        for upstream, at, _ in found:
            wanted.setdefault(upstream, set()).add(at)
    states = _UpstreamStates(instance, events, cursor, {k.to_user_string() for k in keys})
    states.resolve(wanted)
    inputs = {e.storage_id: states.inputs(pointers[e.storage_id]) for e in events}
    return _Batch(cursor, events, more, inputs)


def _write_batch(
    batch: _Batch,
    store: Store,
    key: SigningKey,
    workers: int = 1,
    on_append: Callable[[int], None] | None = None,
) -> SyncResult:
    """Sign and append what is not in the log yet; returns the cursor past the whole batch.

    A record names the log index of each input's own record, so an event whose input is
    recorded in this same batch waits for a later append: the batch goes in as a few layers
    (its depth of dependencies within the batch, 3 for the example), one transaction each.
    """
    events, inputs = batch.events, batch.inputs
    own = {e.storage_id: idempotency_key(e) for e in events}
    read = {idempotency_key(i.event) for ins in inputs.values() for i in ins if i.event}
    logged = store.indices_for(sorted(set(own.values()) | read)) if events else {}

    indices: dict[tuple[str, int], int] = {}
    skipped = appended = 0
    depth: dict[int, int] = {}  # unrecorded events of this batch -> their append layer
    layers: list[list[dg.EventLogRecord]] = []
    for e in events:  # oldest first, so an input's event is placed before its reader
        if own[e.storage_id] in logged:  # recorded before the cursor moved (a crash, a retry)
            indices[(e.run_id, e.storage_id)] = logged[own[e.storage_id]]
            skipped += 1
            continue
        below = [
            depth[i.event.storage_id]
            for i in inputs[e.storage_id]
            if i.event is not None and i.event.storage_id in depth
        ]
        layer = max(below, default=-1) + 1
        depth[e.storage_id] = layer
        if layer == len(layers):
            layers.append([])
        layers[layer].append(e)

    by_content: dict[tuple[str, str | None, str], int | None] = {}

    def log_index(i: _Input) -> int | None:
        if i.event is not None:
            idx = logged.get(idempotency_key(i.event))
            if idx is not None:
                return idx
        # An upstream the sensor does not record itself: the newest record of that content.
        ref = (i.asset, i.partition, i.sha256)
        if ref not in by_content:
            by_content[ref] = store.latest_index(i.asset, i.sha256, i.partition)
        return by_content[ref]

    def record_for(e: dg.EventLogRecord) -> AttributionRecord:
        refs = [InputRef(i.asset, i.sha256, log_index(i)) for i in inputs[e.storage_id]]
        return build_record(e, refs)

    for layer_events in layers:
        records = [record_for(e) for e in layer_events]
        result = append_records(store, key, records, workers=workers)
        appended += result.appended
        skipped += result.skipped
        for e, idx in zip(layer_events, result.indices, strict=True):
            logged[own[e.storage_id]] = idx
            indices[(e.run_id, e.storage_id)] = idx
        if on_append:
            on_append(len(layer_events))

    seen = batch.seen
    return SyncResult(
        batch.cursor.advanced(seen), len(events), appended, skipped, batch.more, indices, seen
    )


def sync_once(
    instance: dg.DagsterInstance,
    asset_keys: Iterable[dg.AssetKey],
    store: Store,
    key: SigningKey,
    cursor: Cursor | None = None,
    limit: int = 1000,
    workers: int = 1,
    on_append: Callable[[int], None] | None = None,
) -> SyncResult:
    """One bounded batch: read, build, sign, append (committed), then return the new cursor."""
    batch = _read_batch(instance, list(asset_keys), cursor or Cursor(), limit)
    return _write_batch(batch, store, key, workers, on_append)


def sync_all(
    instance: dg.DagsterInstance,
    asset_keys: Sequence[dg.AssetKey],
    store: Store,
    key: SigningKey,
    limit: int = 5000,
    workers: int = 1,
    on_batch: Callable[[SyncResult], None] | None = None,
) -> SyncResult:
    """Catch up completely (`lineage sync`), resuming from what the log already holds.

    The next batch is read (Dagster's deserialization, Python) while this one is signed and
    committed (DuckDB, which releases the GIL). Reading never moves the cursor: each batch's
    cursor is returned only once its appends have committed.
    """
    keys = list(asset_keys)
    cursor = Cursor(store.source_cursor("dagster"))
    total_read = total_appended = total_skipped = 0
    indices: dict[tuple[str, int], int] = {}
    seen: dict[str, int] = {}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lineage-read") as reader:
        upcoming = reader.submit(_read_batch, instance, keys, cursor, limit)
        while True:
            batch = upcoming.result()
            if batch.more:
                upcoming = reader.submit(
                    _read_batch, instance, keys, batch.cursor.advanced(batch.seen), limit
                )
            result = _write_batch(batch, store, key, workers)
            total_read += result.read
            total_appended += result.appended
            total_skipped += result.skipped
            indices.update(result.indices)
            seen.update(result.seen)
            cursor = result.cursor
            if on_batch:
                on_batch(result)
            if not result.has_more:
                break
    return SyncResult(cursor, total_read, total_appended, total_skipped, False, indices, seen)


def materializable_keys(defs: dg.Definitions) -> list[dg.AssetKey]:
    graph = defs.resolve_asset_graph()
    return sorted(
        (k for k in graph.get_all_asset_keys() if graph.get(k).is_materializable),
        key=lambda k: k.to_user_string(),
    )


def sync_project(
    settings: Settings,
    passphrase: bytes | None,
    on_batch: Callable[[SyncResult], None] | None = None,
    workers: int = 1,
    limit: int = 5000,
) -> SyncResult:
    """`lineage sync`: the sensor's logic once, against the instance under the state folder.

    Each batch of `limit` materializations commits before the next is read, so a sync that is
    killed resumes where its last commit left off.
    """
    from lineage_platform.dagster.workspace import load_definitions, open_instance

    defs = load_definitions(settings.project_dir)
    ring = KeyRing(settings.keys_dir)
    ring.init(passphrase)
    store = open_store(settings.store_url, lock_timeout_s=settings.lock_timeout_s)
    with open_instance(settings) as instance:
        return sync_all(
            instance,
            materializable_keys(defs),
            store,
            ring.signer(passphrase),
            limit=limit,
            workers=workers,
            on_batch=on_batch,
        )


def backlog(
    instance: dg.DagsterInstance, asset_keys: Sequence[dg.AssetKey], store: Store, cap: int = 10_000
) -> tuple[int, float | None]:
    """(materializations not yet in the log, timestamp of the oldest), counting up to `cap`."""
    cursor = Cursor(store.source_cursor("dagster"))
    events, _ = pending_events(instance, asset_keys, cursor, cap)
    return len(events), (min(e.timestamp for e in events) if events else None)


def project_backlog(settings: Settings) -> tuple[int, float | None]:
    from lineage_platform.dagster.workspace import load_definitions, open_instance

    defs = load_definitions(settings.project_dir)
    store = open_store(settings.store_url, lock_timeout_s=settings.lock_timeout_s)
    with open_instance(settings) as instance:
        return backlog(instance, materializable_keys(defs), store)
