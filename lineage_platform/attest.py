"""Sign attribution records and append them to the log: the one path every record takes.

    result = append_records(store, key, [record, ...], origin=ORIGIN)
    result.indices   # log index of each record (an already-recorded one keeps its index)

Records are signed before the store transaction opens, so the DuckDB lock is held only for the
bulk insert and one checkpoint signature.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from lineage_platform.log import Checkpoint, SignedCheckpoint
from lineage_platform.records import AttributionRecord
from lineage_platform.signing import SigningKey, sign_envelope
from lineage_platform.store import AppendResult, Entry, Store

ORIGIN = "lineage-platform.local/log"
PARALLEL_MIN = 20_000

_worker_key: SigningKey | None = None


def entry_for(record: AttributionRecord, key: SigningKey) -> Entry:
    payload = record.to_bytes()
    envelope = sign_envelope(payload, key).to_json()
    return Entry(
        envelope=envelope,
        record_digest=hashlib.sha256(payload).hexdigest(),
        idem_key=record.idempotency_key(),
        kind=record.kind,
        asset=record.asset,
        partition=record.partition,
        sha256=record.sha256,
        keyid=key.keyid,
        recorded_at=record.recorded_at,
    )


def _init_worker(pem: bytes) -> None:
    global _worker_key
    _worker_key = SigningKey.from_pem(pem, None)


def _sign_chunk(records: Sequence[AttributionRecord]) -> list[Entry]:
    assert _worker_key is not None
    return [entry_for(r, _worker_key) for r in records]


def sign_records(
    records: Sequence[AttributionRecord], key: SigningKey, workers: int = 1
) -> list[Entry]:
    """Sign in this process, or across `workers` processes for large backlogs."""
    if workers <= 1 or len(records) < PARALLEL_MIN:
        return [entry_for(r, key) for r in records]
    size = max(1000, len(records) // (workers * 4))
    chunks = [records[i : i + size] for i in range(0, len(records), size)]
    # The key crosses to the workers in memory only, as an unencrypted PEM through the pipe.
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(key.to_pem(None),)) as ex:
        return [entry for part in ex.map(_sign_chunk, chunks) for entry in part]


def append_records(
    store: Store,
    key: SigningKey,
    records: Sequence[AttributionRecord],
    origin: str = ORIGIN,
    workers: int = 1,
) -> AppendResult:
    entries = sign_records(records, key, workers)

    def sign_checkpoint(checkpoint: Checkpoint) -> SignedCheckpoint:
        return SignedCheckpoint.sign(checkpoint, key)

    return store.append_entries(entries, sign_checkpoint, origin)
