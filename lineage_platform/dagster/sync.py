"""Dagster as a source of the lineage sync: materializations read as `SourceEvent`s.

    source = source_for(instance, [defs])          # each location's translator describes it
    result = sync(source, store, signer, cursor)   # lineage_platform.sync: sign, append, cursor
    sync_locations(instance, [defs], store, signer, until_caught_up=True)  # + check status

Events are read per asset key with a storage-id cursor (`instance.fetch_materializations`), so
several events in one tick, partitions, and assets added later are all seen; the storage id is
the event id, and (run id, storage id) the run reference its record is keyed by. Each input names
the upstream materialization the run actually read (Dagster's input event pointer), so its log
index is that event's own record even when several records share the same content hash.
Everything Dagster-specific lives here: the event log, metadata keys, asset keys, partitions.

What a record says is decided by the asset's `LineageTranslator` (`translator.py`; the one a
location got from `with_lineage`): an asset it leaves out, or whose run reported no content
digest, is `Skipped` with the reason, never signed under Dagster's data version; an input that
points at such an upstream is left out of its reader's record (a record names only artifacts
the log holds, so the reader's earnings go to its own contributors and attributed inputs).
"""

from __future__ import annotations

import heapq
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import dagster as dg

from lineage_platform.config import Settings
from lineage_platform.dagster import metadata as M
from lineage_platform.dagster.settlement import SETTLEMENT_KEY
from lineage_platform.dagster.translator import LineageTranslator, reported_contributors
from lineage_platform.errors import ConfigError, RecordError
from lineage_platform.keys import KeyRing
from lineage_platform.records import (
    Contributor,
    DvcRef,
    MlflowRef,
    RunRef,
    details_json,
    idempotency_key,
)
from lineage_platform.signing import SigningKey
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

if TYPE_CHECKING:  # the graph `Definitions` and a sensor's repository both resolve to
    from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph

ORCHESTRATOR = "dagster"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
INPUT_VERSION = "dagster/input_data_version/"
INPUT_POINTER = "dagster/input_event_pointer/"
MAX_FETCH = 10_000  # Dagster refuses to return more event records per call
RUNLESS_RUN_ID = "runless"


def _meta(mat: dg.AssetMaterialization, key: str) -> str | None:
    return M.read_text(mat.metadata.get(key))


def _details(mat: dg.AssetMaterialization) -> str | None:
    raw = mat.metadata.get(M.DETAILS)
    value = getattr(raw, "value", None) if raw is not None else None
    return details_json(value) if isinstance(value, dict) else None


def lineage_of(
    mat: dg.AssetMaterialization, contributors: tuple[Contributor, ...] | None = None
) -> Lineage:
    """The lineage metadata an asset reported (`dagster.metadata` keys) and Dagster's tags;
    `contributors` as the translator described them (default: as reported)."""
    tags = mat.tags or {}
    dvc_path, dvc_md5 = _meta(mat, M.DVC_PATH), _meta(mat, M.DVC_MD5)
    run_id, model_id = _meta(mat, M.MLFLOW_RUN), _meta(mat, M.MLFLOW_MODEL)
    return Lineage(
        data_version=tags.get("dagster/data_version"),
        code_version=tags.get("dagster/code_version"),
        dvc=DvcRef(dvc_path, dvc_md5) if dvc_path and dvc_md5 else None,
        mlflow=MlflowRef(run_id, model_id) if run_id else None,
        contributors=(
            reported_contributors(mat) or () if contributors is None else contributors
        ),
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
        digest_of: Callable[[dg.EventLogRecord], str | None],
    ) -> None:
        self.instance = instance
        self.digest_of = digest_of
        self.cursor = cursor
        self.synced = synced
        self.in_batch: dict[str, list[dg.EventLogRecord]] = {}
        for e in batch:
            self.in_batch.setdefault(_asset(e), []).append(e)
        self.states: dict[tuple[str, int], dict[str | None, dg.EventLogRecord]] = {}
        # storage id -> its input pointer (content hash read once), shared by every reader;
        # None: the upstream event is not attributed, so no record can name it
        self.pointers: dict[int, InputPointer | None] = {}

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
                if event.storage_id not in self.pointers:
                    sha = self.digest_of(event)
                    self.pointers[event.storage_id] = (
                        InputPointer(upstream, part, sha, dagster_ref(event)) if sha else None
                    )
                pointer = self.pointers[event.storage_id]
                if pointer is not None:
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


def _attributed(translator: LineageTranslator, spec: dg.AssetSpec) -> bool:
    return translator.attributed(spec)


class DagsterSource:
    """The materializations of `asset_keys` in a Dagster instance, as a sync `Source`.

    `described` gives, per asset key, the translator and `AssetSpec` that say what its
    records hold (`source_for` builds it from each code location); an asset not in it is
    described by the default `LineageTranslator` from its key alone.
    """

    orchestrator = ORCHESTRATOR

    def __init__(
        self,
        instance: dg.DagsterInstance,
        asset_keys: Iterable[dg.AssetKey],
        described: Mapping[dg.AssetKey, tuple[LineageTranslator, dg.AssetSpec]] | None = None,
    ) -> None:
        self.instance = instance
        self.asset_keys = list(asset_keys)
        self._names = {k.to_user_string() for k in self.asset_keys}
        self._described_by = dict(described or {})
        self._default = LineageTranslator()

    def translator(self, key: dg.AssetKey) -> tuple[LineageTranslator, dg.AssetSpec]:
        """Who describes `key`'s materializations, with the asset's definition."""
        found = self._described_by.get(key)
        return found if found is not None else (self._default, dg.AssetSpec(key))

    def events(self, after: Cursor, limit: int) -> list[SourceEvent | Skipped]:
        """The oldest `limit` materializations after the cursor, with their inputs resolved."""
        records, _ = pending_events(self.instance, self.asset_keys, after, limit)
        pointers = {r.storage_id: _pointers(r) for r in records}
        wanted: dict[str, set[int]] = {}
        for found in pointers.values():
            for upstream, at, _version in found:
                wanted.setdefault(upstream, set()).add(at)
        states = _UpstreamStates(self.instance, records, after, self._names, self.digest)
        states.resolve(wanted)
        return [self._described(r, states.inputs(pointers[r.storage_id])) for r in records]

    def digest(self, record: dg.EventLogRecord) -> str | None:
        """The content digest `record`'s own record signs; None when it is not attributed.
        An input pointing at such an upstream is left out of its reader's record."""
        mat = record.asset_materialization
        assert mat is not None
        translator, spec = self.translator(mat.asset_key)
        if not translator.attributed(spec):
            return None
        return translator.digest(spec, mat)

    def _described(
        self, record: dg.EventLogRecord, inputs: tuple[InputPointer, ...]
    ) -> SourceEvent | Skipped:
        """`event`, or `Skipped` with the reason when the materialization cannot be a record
        (a spoofed contributor id, a malformed hash, a bad translator setting): one hostile
        event must not stop the sync of every event after it."""
        try:
            return self.event(record, inputs)
        except (RecordError, ConfigError) as exc:
            return Skipped(_asset(record), record.storage_id, f"not signed: {exc}")

    def event(
        self, record: dg.EventLogRecord, inputs: tuple[InputPointer, ...]
    ) -> SourceEvent | Skipped:
        """One materialization as a source event: what its record will say, as the asset's
        translator describes it (the one place that decides it). An asset the translator
        leaves out, or whose run reported no content digest, is `Skipped` with the reason:
        never signed under a digest it did not report."""
        mat = record.asset_materialization
        assert mat is not None
        asset = mat.asset_key.to_user_string()
        translator, spec = self.translator(mat.asset_key)
        if not translator.attributed(spec):
            return Skipped(
                asset, record.storage_id, "not attributed (its translator leaves it out)"
            )
        sha = translator.digest(spec, mat)
        if sha is None:
            return Skipped(
                asset,
                record.storage_id,
                "not signed: no content digest reported (return a DataFrame, Arrow table or "
                "file through the IO manager with_lineage wraps, or report lineage/sha256)",
            )
        return SourceEvent(
            orchestrator=ORCHESTRATOR,
            run_id=run_id_of(record),
            event_id=record.storage_id,
            asset=asset,
            partition=mat.partition,
            sha256=sha,
            kind=translator.record_kind(spec, mat),
            timestamp=record.timestamp,
            lineage=lineage_of(mat, translator.contributors(spec, mat, sha)),
            inputs=inputs,
        )

    def backlog(self, after: Cursor, cap: int = 10_000) -> tuple[int, float | None]:
        """(materializations after the cursor that a sync would sign, timestamp of the
        oldest), reading up to `cap`. What the translator leaves out, or what reported no
        digest, is never signed, so it never moves the log's cursor: counting it would show a
        backlog that no sync can clear and a lag that grows forever."""
        keys = [k for k in self.asset_keys if _attributed(*self.translator(k))]
        records, _ = pending_events(self.instance, keys, after, cap)
        signable = [r for r in records if self.digest(r) is not None]
        return len(signable), (min(r.timestamp for r in signable) if signable else None)


#: The resource key `with_lineage` stores its translator under, where `source_for` finds it.
TRANSLATOR_RESOURCE = "lineage_translator"


def translator_of(defs: dg.Definitions) -> LineageTranslator:
    """The translator a code location was given by `with_lineage` (else the default one)."""
    found = (defs.resources or {}).get(TRANSLATOR_RESOURCE)
    return found if isinstance(found, LineageTranslator) else LineageTranslator()


def graph_described(
    graph: BaseAssetGraph, translator: LineageTranslator
) -> dict[dg.AssetKey, tuple[LineageTranslator, dg.AssetSpec]]:
    """Every materializable asset of one code location's graph, with its translator; but the
    platform's `settlement` asset, whose record is the settlement statement itself (a user's
    translator that attributes "everything but X" must not make it a second record)."""
    return {
        k: (translator, graph.get(k).to_asset_spec())
        for k in graph.get_all_asset_keys()
        if graph.get(k).is_materializable and k != SETTLEMENT_KEY
    }


def materializable_keys(defs: dg.Definitions) -> list[dg.AssetKey]:
    graph = defs.resolve_asset_graph()
    return sorted(
        (k for k in graph.get_all_asset_keys() if graph.get(k).is_materializable),
        key=lambda k: k.to_user_string(),
    )


def source_for(instance: dg.DagsterInstance, locations: Sequence[dg.Definitions]) -> DagsterSource:
    """The sync source for every code location's materializable assets: the one place the CLI
    and the sensor's callers build it. Each location's assets are described by the translator
    `with_lineage` gave that location (`translator_of`), so `lineage sync` signs what the
    sensor would."""
    described: dict[dg.AssetKey, tuple[LineageTranslator, dg.AssetSpec]] = {}
    for defs in locations:
        described.update(graph_described(defs.resolve_asset_graph(), translator_of(defs)))
    keys = sorted(described, key=lambda k: k.to_user_string())
    return DagsterSource(instance, keys, described)


CHECK_NAME = "attribution_recorded"


def latest_record(instance: dg.DagsterInstance, key: dg.AssetKey) -> dg.EventLogRecord | None:
    """The newest materialization with its storage id (the idempotency key needs both ids)."""
    records = instance.fetch_materializations(key, limit=1).records
    return records[0] if records else None


def attribution_events(
    instance: dg.DagsterInstance,
    result: SyncResult,
    store: Store,
    checked: Iterable[dg.AssetKey] = (),
    recorded_by: str = "lineage sync",
) -> list[dg.AssetCheckEvaluation | dg.AssetObservation]:
    """What a sync tells Dagster, per asset whose newest materialization it read: one
    observation on the asset's timeline, the platform's view of the record that attests it
    (`views.observations_at`: contributors, log index, digest, key id, inputs' records, a
    model's valuation and earnings, a valuation's chart), and, for the
    assets in `checked` (those with an `attribution_recorded` check), that check's evaluation:
    passed with the record, or failed with the reason the event was not signed. The sensor
    returns these in its tick; `sync_locations` reports them runless. Either way the check's
    latest status is the truth once the record exists, whichever ran first."""
    checked = set(checked)
    seen = {dg.AssetKey.from_user_string(a) for a in result.seen}
    not_signed = {(p.asset, p.event_id): p.reason for p in result.passed}
    recorded: dict[dg.AssetKey, tuple[dg.EventLogRecord, int]] = {}
    events: list[dg.AssetCheckEvaluation | dg.AssetObservation] = []
    for key in sorted(seen, key=lambda k: k.to_user_string()):
        latest = latest_record(instance, key)
        if latest is None:
            continue
        idx = result.indices.get(event_key(latest))
        reason = not_signed.get((key.to_user_string(), latest.storage_id))
        if idx is not None:
            recorded[key] = (latest, idx)
        elif reason is not None and key in checked:
            events.append(
                dg.AssetCheckEvaluation(
                    asset_key=key,
                    check_name=CHECK_NAME,
                    passed=False,
                    metadata={"reason": reason, "storage_id": latest.storage_id,
                              "recorded_by": recorded_by},
                )
            )
    if not recorded:
        return events
    # Views imports this module (the lag check reads a `DagsterSource`), hence here.
    from lineage_platform.dagster.views import observations_at

    by_index = {idx: (key, latest) for key, (latest, idx) in recorded.items()}
    for obs in observations_at(store, by_index):
        idx = int(_shown(obs.metadata["log index"]))
        key, latest = by_index[idx]
        # One observation per signed asset: the platform's page view of its record, naming
        # the materialization it attests.
        events.append(dg.AssetObservation(
            asset_key=obs.asset_key,
            partition=obs.partition,
            metadata={**obs.metadata, "materialization storage_id": latest.storage_id},
        ))
        if key in checked:
            events.append(
                dg.AssetCheckEvaluation(
                    asset_key=key,
                    check_name=CHECK_NAME,
                    passed=True,
                    metadata={
                        "log_index": idx,
                        "record_digest": _shown(obs.metadata["record digest"]),
                        "key_id": _shown(obs.metadata["key id"]),
                        "storage_id": latest.storage_id,
                        "recorded_by": recorded_by,
                    },
                )
            )
    return events


def _shown(value: object) -> str:
    """A scalar metadata entry as text (Dagster wraps what an event carries)."""
    return str(getattr(value, "value", value))


def checked_keys(graph: BaseAssetGraph) -> set[dg.AssetKey]:
    """The assets of a code location that carry an `attribution_recorded` check."""
    return {
        k
        for k in graph.get_all_asset_keys()
        if any(c.name == CHECK_NAME for c in graph.get(k).check_keys)
    }


def sync_locations(
    instance: dg.DagsterInstance,
    locations: Sequence[dg.Definitions],
    store: Store,
    signer: SigningKey,
    **options: Any,
) -> SyncResult:
    """`lineage sync` for code locations: `sync(source_for(...), ...)` with `options`
    (limit, workers, until_caught_up, on_batch), then `attribution_events` reported to the
    instance as runless events, so an `attribution_recorded` check that failed in the run
    (the record did not exist yet) shows passing once this sync signed it; and, as the
    sensor's tick, `sensor_caught_up` from the backlog the sync left.

        result = sync_locations(instance, [defs], store, signer, until_caught_up=True)
    """
    from lineage_platform.dagster.sensor import BACKLOG_CAP, lag_checked_keys, lag_limits
    from lineage_platform.dagster.views import lag_result

    source = source_for(instance, locations)
    result = sync(source, store, signer, **options)
    checked: set[dg.AssetKey] = set()
    lagged: set[dg.AssetKey] = set()
    for defs in locations:
        graph = defs.resolve_asset_graph()
        checked |= checked_keys(graph)
        lagged |= set(lag_checked_keys(graph))
    events: list[dg.AssetCheckEvaluation | dg.AssetObservation] = attribution_events(
        instance, result, store, checked)
    if lagged:  # as the sensor's tick does: caught up (or not) is what the sync leaves
        pending, oldest = source.backlog(result.cursor, cap=BACKLOG_CAP)
        max_events, max_minutes = lag_limits()
        events += [lag_result(k, pending, oldest, max_events, max_minutes,
                              capped=pending >= BACKLOG_CAP)
                   for k in sorted(lagged, key=lambda k: k.to_user_string())]
    for event in events:
        instance.report_runless_asset_event(event)
    return result


def sync_project(
    settings: Settings,
    passphrase: bytes | None,
    on_batch: Callable[[SyncResult], None] | None = None,
    workers: int = 1,
    limit: int = 5000,
    notes: Callable[[str], None] | None = None,
) -> SyncResult:
    """`lineage sync`: the sensor's logic until caught up, against the user's instance
    ($DAGSTER_HOME, else the state folder's) and every code location of the workspace (or of
    `settings.code`); a location that cannot be loaded stops it before anything is signed.

    It resumes from what the log already holds; each batch of `limit` materializations commits
    before the next is read, so a sync that is killed resumes where its last commit left off.
    `notes` hears which instance and locations were read, and the assets none of them defines.
    """
    from lineage_platform.dagster.workspace import open_instance

    locations = [loaded.defs for loaded in _loaded(settings, notes)]
    ring = KeyRing(settings.keys_dir)
    ring.init(passphrase)
    store = open_store(settings.store_url, lock_timeout_s=settings.lock_timeout_s)
    with open_instance(settings) as instance:
        _note_unread(instance, locations, notes)
        return sync_locations(
            instance,
            locations,
            store,
            ring.signer(passphrase),
            limit=limit,
            workers=workers,
            until_caught_up=True,
            on_batch=on_batch,
        )


def project_backlog(
    settings: Settings, notes: Callable[[str], None] | None = None
) -> tuple[int, float | None]:
    """`lineage status`: what the sensor has not recorded yet, from what the log holds, over
    every code location (`notes` as for `sync_project`)."""
    from lineage_platform.dagster.workspace import open_instance

    locations = [loaded.defs for loaded in _loaded(settings, notes)]
    store: Store = open_store(settings.store_url, lock_timeout_s=settings.lock_timeout_s)
    with open_instance(settings) as instance:
        _note_unread(instance, locations, notes)
        source = source_for(instance, locations)
        return source.backlog(Cursor.of_store(store, ORCHESTRATOR))


def _loaded(settings: Settings, notes: Callable[[str], None] | None) -> list[Any]:
    """Every code location, loaded (or `CodeLocationError` naming each that is not)."""
    from lineage_platform.dagster.workspace import load_locations

    loaded = load_locations(settings)
    if notes is not None:
        notes(settings.describe_instance())
        notes("code locations: " + ", ".join(entry.location.describe() for entry in loaded))
    return loaded


def _note_unread(
    instance: dg.DagsterInstance,
    locations: Sequence[dg.Definitions],
    notes: Callable[[str], None] | None,
) -> None:
    from lineage_platform.dagster.workspace import unread_asset_keys

    unread = unread_asset_keys(instance, locations)
    if unread and notes is not None:
        shown = ", ".join(unread[:5]) + (f" and {len(unread) - 5} more" if len(unread) > 5 else "")
        notes(f"{len(unread)} asset(s) in the instance are in no loaded code location, so not "
              f"read: {shown}")
