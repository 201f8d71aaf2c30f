"""Dagster as a source of the lineage sync: materializations read as `SourceEvent`s.

    source = DagsterSource(instance, materializable_keys(defs))
    result = sync(source, store, signer, cursor)   # lineage_platform.sync: sign, append, cursor

Events are read per asset key with a storage-id cursor (`instance.fetch_materializations`), so
several events in one tick, partitions, and assets added later are all seen; the storage id is
the event id, and (run id, storage id) the run reference its record is keyed by. Each input names
the upstream materialization the run actually read (Dagster's input event pointer), so its log
index is that event's own record even when several records share the same content hash.
Everything Dagster-specific lives here: the event log, metadata keys, asset keys, partitions.
"""

from __future__ import annotations

import heapq
import re
from collections import deque
from collections.abc import Callable, Iterable, Sequence

import dagster as dg

from lineage_platform.config import Settings
from lineage_platform.dagster import metadata as M
from lineage_platform.errors import RecordError
from lineage_platform.hashing import sha256_bytes
from lineage_platform.keys import KeyRing
from lineage_platform.records import (
    Contributor,
    DvcRef,
    MlflowRef,
    RunRef,
    canonical_json,
    details_json,
    idempotency_key,
)
from lineage_platform.stores import Store, open_store
from lineage_platform.sync import (
    Cursor,
    InputPointer,
    Lineage,
    Skipped,
    SourceEvent,
    SyncResult,
    sync,
)

ORCHESTRATOR = "dagster"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
INPUT_VERSION = "dagster/input_data_version/"
INPUT_POINTER = "dagster/input_event_pointer/"
MAX_FETCH = 10_000  # Dagster refuses to return more event records per call
RUNLESS_RUN_ID = "runless"


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


def lineage_of(mat: dg.AssetMaterialization) -> Lineage:
    """The lineage metadata an asset reported (`dagster.metadata` keys) and Dagster's tags."""
    tags = mat.tags or {}
    dvc_path, dvc_md5 = _meta(mat, M.DVC_PATH), _meta(mat, M.DVC_MD5)
    run_id, model_id = _meta(mat, M.MLFLOW_RUN), _meta(mat, M.MLFLOW_MODEL)
    return Lineage(
        data_version=tags.get("dagster/data_version"),
        code_version=tags.get("dagster/code_version"),
        dvc=DvcRef(dvc_path, dvc_md5) if dvc_path and dvc_md5 else None,
        mlflow=MlflowRef(run_id, model_id) if run_id else None,
        contributors=_contributors(mat),
        details=_details(mat),
    )


def run_id_of(record: dg.EventLogRecord) -> str:
    """Events reported outside any run have an empty run id in Dagster."""
    return record.run_id or RUNLESS_RUN_ID


def dagster_ref(record: dg.EventLogRecord) -> RunRef:
    """The event's identity: what its record names and is keyed by."""
    return RunRef(ORCHESTRATOR, run_id_of(record), record.storage_id)


def event_key(record: dg.EventLogRecord) -> str:
    """The log's key for one materialization (`records.idempotency_key`)."""
    return idempotency_key(ORCHESTRATOR, run_id_of(record), record.storage_id)


def _asset(record: dg.EventLogRecord) -> str:
    mat = record.asset_materialization
    assert mat is not None
    return mat.asset_key.to_user_string()


def _partition(record: dg.EventLogRecord) -> str | None:
    mat = record.asset_materialization
    return mat.partition if mat is not None else None


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
        # storage id -> its input pointer (content hash read once), shared by every reader
        self.pointers: dict[int, InputPointer] = {}

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

    def inputs(self, pointers: Sequence[tuple[str, int, str]]) -> tuple[InputPointer, ...]:
        out = []
        for upstream, at, version in pointers:
            state = self.states[(upstream, at)]
            if not state:
                if _HEX64.match(version):  # read, but its materialization is not in this instance
                    out.append(InputPointer(upstream, None, version))
                continue
            for part in sorted(state, key=lambda p: (p is not None, p or "")):
                event = state[part]
                pointer = self.pointers.get(event.storage_id)
                if pointer is None:
                    pointer = self.pointers[event.storage_id] = InputPointer(
                        upstream, part, _sha_of(event), dagster_ref(event)
                    )
                out.append(pointer)
        return tuple(out)

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


class DagsterSource:
    """The materializations of `asset_keys` in a Dagster instance, as a sync `Source`."""

    orchestrator = ORCHESTRATOR

    def __init__(self, instance: dg.DagsterInstance, asset_keys: Iterable[dg.AssetKey]) -> None:
        self.instance = instance
        self.asset_keys = list(asset_keys)
        self._names = {k.to_user_string() for k in self.asset_keys}

    def events(self, after: Cursor, limit: int) -> list[SourceEvent | Skipped]:
        """The oldest `limit` materializations after the cursor, with their inputs resolved."""
        records, _ = pending_events(self.instance, self.asset_keys, after, limit)
        pointers = {r.storage_id: _pointers(r) for r in records}
        wanted: dict[str, set[int]] = {}
        for found in pointers.values():
            for upstream, at, _version in found:
                wanted.setdefault(upstream, set()).add(at)
        states = _UpstreamStates(self.instance, records, after, self._names)
        states.resolve(wanted)
        return [self._described(r, states.inputs(pointers[r.storage_id])) for r in records]

    def _described(
        self, record: dg.EventLogRecord, inputs: tuple[InputPointer, ...]
    ) -> SourceEvent | Skipped:
        """`event`, or `Skipped` with the reason when the materialization cannot be a record
        (a spoofed contributor id, a malformed hash): one hostile event must not stop the
        sync of every event after it."""
        try:
            return self.event(record, inputs)
        except RecordError as exc:
            return Skipped(_asset(record), record.storage_id, f"not signed: {exc}")

    def event(
        self, record: dg.EventLogRecord, inputs: tuple[InputPointer, ...]
    ) -> SourceEvent | Skipped:
        """One materialization as a source event: what its record will say (the one place
        that decides it: a subclass may describe an asset otherwise, or skip it)."""
        mat = record.asset_materialization
        assert mat is not None
        return SourceEvent(
            orchestrator=ORCHESTRATOR,
            run_id=run_id_of(record),
            event_id=record.storage_id,
            asset=mat.asset_key.to_user_string(),
            partition=mat.partition,
            sha256=_sha_of(record),
            kind=_kind(mat),
            timestamp=record.timestamp,
            lineage=lineage_of(mat),
            inputs=inputs,
        )

    def backlog(self, after: Cursor, cap: int = 10_000) -> tuple[int, float | None]:
        """(materializations after the cursor, timestamp of the oldest), counting up to `cap`."""
        records, _ = pending_events(self.instance, self.asset_keys, after, cap)
        return len(records), (min(r.timestamp for r in records) if records else None)


def materializable_keys(defs: dg.Definitions) -> list[dg.AssetKey]:
    graph = defs.resolve_asset_graph()
    return sorted(
        (k for k in graph.get_all_asset_keys() if graph.get(k).is_materializable),
        key=lambda k: k.to_user_string(),
    )


def source_for(instance: dg.DagsterInstance, locations: Sequence[dg.Definitions]) -> DagsterSource:
    """The sync source for every code location's materializable assets: the one place the CLI
    and the sensor's callers build it, so how each location's assets are described is decided
    here (the integration's translator, issue 14)."""
    keys = {k for defs in locations for k in materializable_keys(defs)}
    return DagsterSource(instance, sorted(keys, key=lambda k: k.to_user_string()))


def sync_project(
    settings: Settings,
    passphrase: bytes | None,
    on_batch: Callable[[SyncResult], None] | None = None,
    workers: int = 1,
    limit: int = 5000,
) -> SyncResult:
    """`lineage sync`: the sensor's logic until caught up, against the project's instance.

    It resumes from what the log already holds; each batch of `limit` materializations commits
    before the next is read, so a sync that is killed resumes where its last commit left off.
    """
    from lineage_platform.dagster.workspace import load_definitions, open_instance

    defs = load_definitions(settings.project_dir)
    ring = KeyRing(settings.keys_dir)
    ring.init(passphrase)
    store = open_store(settings.store_url, lock_timeout_s=settings.lock_timeout_s)
    with open_instance(settings) as instance:
        return sync(
            source_for(instance, [defs]),
            store,
            ring.signer(passphrase),
            limit=limit,
            workers=workers,
            until_caught_up=True,
            on_batch=on_batch,
        )


def project_backlog(settings: Settings) -> tuple[int, float | None]:
    """`lineage status`: what the sensor has not recorded yet, from what the log holds."""
    from lineage_platform.dagster.workspace import load_definitions, open_instance

    defs = load_definitions(settings.project_dir)
    store: Store = open_store(settings.store_url, lock_timeout_s=settings.lock_timeout_s)
    with open_instance(settings) as instance:
        source = source_for(instance, [defs])
        return source.backlog(Cursor.of_store(store, ORCHESTRATOR))
