"""Turn Dagster materializations into signed attribution records: the lineage sensor's logic.

    result = sync_once(instance, asset_keys, store, key, cursor=None, limit=1000)
    result.cursor   # store it only after the append committed (it already has, on return)

Events are read per asset key with a storage-id cursor (`instance.fetch_materializations`), so
several events in one tick, partitions, and assets added later are all seen. The append commits
before the cursor moves; a tick retried after a crash finds the records by their idempotency key
(Dagster run id + storage id) and appends nothing twice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
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
    DagsterRef,
    DvcRef,
    InputRef,
    MlflowRef,
    canonical_json,
    details_json,
)
from lineage_platform.signing import SigningKey
from lineage_platform.store import Store

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
INPUT_VERSION = "dagster/input_data_version/"
INPUT_POINTER = "dagster/input_event_pointer/"
CURSOR_VERSION = 1


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
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class _Pending:
    event: dg.EventLogRecord
    inputs: list[tuple[str, str | None, str]]  # (asset, partition, sha256) of each input


def _inputs(
    instance: dg.DagsterInstance, record: dg.EventLogRecord
) -> list[tuple[str, str | None, str]]:
    """Each upstream asset's content hash at the time of the run, from Dagster's input tags.

    A partitioned upstream yields one input per partition: its latest materialization at or
    before the event Dagster points to.
    """
    mat = record.asset_materialization
    assert mat is not None
    tags = mat.tags or {}
    out: list[tuple[str, str | None, str]] = []
    for tag, version in sorted(tags.items()):
        if not tag.startswith(INPUT_VERSION):
            continue
        upstream = tag[len(INPUT_VERSION) :]
        pointer = tags.get(INPUT_POINTER + upstream)
        before = int(pointer) + 1 if pointer and pointer.isdigit() else record.storage_id
        key = dg.AssetKey.from_user_string(upstream)
        events = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, before_storage_id=before), limit=1000
        ).records
        partitions = {e.asset_materialization.partition for e in events if e.asset_materialization}
        if partitions == {None}:
            out.append((upstream, None, _sha_of(events[0]) if events else version))
            continue
        latest: dict[str, dg.EventLogRecord] = {}
        for e in events:  # newest first
            part = e.asset_materialization.partition if e.asset_materialization else None
            if part is not None and part not in latest:
                latest[part] = e
        out.extend((upstream, p, _sha_of(latest[p])) for p in sorted(latest))
    return out


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
        dagster=DagsterRef(record.run_id, record.storage_id),
        dvc=DvcRef(dvc_path, dvc_md5) if dvc_path and dvc_md5 else None,
        mlflow=MlflowRef(run_id, model_id) if run_id else None,
        inputs=tuple(inputs),
        contributors=_contributors(mat),
        details=_details(mat),
    )


def pending_events(
    instance: dg.DagsterInstance, asset_keys: Iterable[dg.AssetKey], cursor: Cursor, limit: int
) -> tuple[list[dg.EventLogRecord], bool]:
    """The oldest `limit` unrecorded materializations across all assets, in storage-id order."""
    events: list[dg.EventLogRecord] = []
    more = False
    for key in asset_keys:
        after = cursor.after.get(key.to_user_string())
        res = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, after_storage_id=after),
            limit=limit,
            ascending=True,
        )
        events.extend(res.records)
        more = more or res.has_more
    events.sort(key=lambda e: e.storage_id)
    if len(events) > limit:
        events, more = events[:limit], True
    return events, more


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
    cursor = cursor or Cursor()
    events, more = pending_events(instance, list(asset_keys), cursor, limit)
    pending = [_Pending(e, _inputs(instance, e)) for e in events]
    wanted = sorted({pair for p in pending for pair in p.inputs})
    known: dict[tuple[str, str | None, str], int] = {}
    for asset, part, sha in wanted:
        idx = store.latest_index(asset, sha, part)
        if idx is not None:
            known[(asset, part, sha)] = idx

    indices: dict[tuple[str, int], int] = {}
    appended = skipped = 0
    batch: list[tuple[_Pending, AttributionRecord]] = []

    def flush() -> None:
        nonlocal appended, skipped
        if not batch:
            return
        result = append_records(store, key, [r for _, r in batch], workers=workers)
        appended += result.appended
        skipped += result.skipped
        for (p, rec), idx in zip(batch, result.indices, strict=True):
            ref = (rec.asset, rec.partition, rec.sha256)
            known[ref] = max(idx, known.get(ref, -1))
            indices[(p.event.run_id, p.event.storage_id)] = idx
        if on_append:
            on_append(len(batch))
        batch.clear()

    in_batch: set[tuple[str, str | None, str]] = set()
    for p in pending:
        if any(ref in in_batch for ref in p.inputs):
            flush()  # an input attested in this batch needs its log index first
            in_batch.clear()
        refs = [InputRef(a, s, known.get((a, part, s))) for a, part, s in p.inputs]
        rec = build_record(p.event, refs)
        batch.append((p, rec))
        in_batch.add((rec.asset, rec.partition, rec.sha256))
    flush()

    seen: dict[str, int] = {}
    for e in events:
        mat = e.asset_materialization
        if mat is None:
            continue
        name = mat.asset_key.to_user_string()
        seen[name] = max(e.storage_id, seen.get(name, 0))
    return SyncResult(cursor.advanced(seen), len(events), appended, skipped, more, indices, seen)


def sync_all(
    instance: dg.DagsterInstance,
    asset_keys: Sequence[dg.AssetKey],
    store: Store,
    key: SigningKey,
    limit: int = 5000,
    workers: int = 1,
    on_batch: Callable[[SyncResult], None] | None = None,
) -> SyncResult:
    """Catch up completely (`lineage sync`), resuming from what the log already holds."""
    cursor = Cursor(store.dagster_cursor())
    total_read = total_appended = total_skipped = 0
    indices: dict[tuple[str, int], int] = {}
    seen: dict[str, int] = {}
    while True:
        result = sync_once(instance, asset_keys, store, key, cursor, limit, workers)
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
) -> SyncResult:
    """`lineage sync`: the sensor's logic once, against the instance under the state folder."""
    from lineage_platform.dagster.workspace import load_definitions, open_instance

    defs = load_definitions(settings.project_dir)
    ring = KeyRing(settings.keys_dir)
    ring.init(passphrase)
    store = Store(settings.duckdb_path, lock_timeout_s=settings.lock_timeout_s)
    with open_instance(settings) as instance:
        return sync_all(
            instance,
            materializable_keys(defs),
            store,
            ring.signer(passphrase),
            workers=workers,
            on_batch=on_batch,
        )


def backlog(
    instance: dg.DagsterInstance, asset_keys: Sequence[dg.AssetKey], store: Store, cap: int = 10_000
) -> tuple[int, float | None]:
    """(materializations not yet in the log, timestamp of the oldest), counting up to `cap`."""
    cursor = Cursor(store.dagster_cursor())
    events, _ = pending_events(instance, asset_keys, cursor, cap)
    return len(events), (min(e.timestamp for e in events) if events else None)


def project_backlog(settings: Settings) -> tuple[int, float | None]:
    from lineage_platform.dagster.workspace import load_definitions, open_instance

    defs = load_definitions(settings.project_dir)
    store = Store(settings.duckdb_path, lock_timeout_s=settings.lock_timeout_s)
    with open_instance(settings) as instance:
        return backlog(instance, materializable_keys(defs), store)
