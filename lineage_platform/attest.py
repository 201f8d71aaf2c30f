"""Sign attribution records and append them to the log: the one path every record takes.

    result = append_records(store, key, [record, ...], origin=ORIGIN)
    result.indices   # log index of each record (an already-recorded one keeps its index)

Records are signed before the store transaction opens, so the DuckDB lock is held only for the
bulk insert and one checkpoint signature.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from lineage_platform.log import Checkpoint, SignedCheckpoint
from lineage_platform.records import AttributionRecord
from lineage_platform.signing import SigningKey, sign_envelope
from lineage_platform.store import AppendResult, Entry, Store

ORIGIN = "lineage-platform.local/log"
# Below this many records, starting worker processes costs more than it saves.
PARALLEL_MIN = 4_000

_worker_key: SigningKey | None = None
# What forked workers sign: the records themselves, shared by fork instead of pickled.
_shared_records: Sequence[AttributionRecord] | None = None


def entry_for(record: AttributionRecord, key: SigningKey) -> Entry:
    payload = record.to_bytes()
    return _entry(record, payload, sign_envelope(payload, key).to_json(), key.keyid)


def _entry(record: AttributionRecord, payload: bytes, envelope: bytes, keyid: str) -> Entry:
    digest = hashlib.sha256(payload).hexdigest()
    return Entry(
        envelope=envelope,
        record_digest=digest,
        # Without a Dagster event the key is the record's digest: the payload's, computed once.
        idem_key=record.idempotency_key() if record.dagster is not None else f"sha256:{digest}",
        kind=record.kind,
        asset=record.asset,
        partition=record.partition,
        sha256=record.sha256,
        keyid=keyid,
        recorded_at=record.recorded_at,
    )


def _init_worker(pem: bytes) -> None:
    global _worker_key
    _worker_key = SigningKey.from_pem(pem, None)


_Signed = tuple[list[bytes], list[str], list[str]]  # envelopes, record digests, idempotency keys


def _sign_span(job: tuple[int, int, Sequence[AttributionRecord] | None]) -> _Signed:
    start, stop, records = job
    if records is None:
        assert _shared_records is not None
        records = _shared_records[start:stop]
    assert _worker_key is not None
    entries = [entry_for(r, _worker_key) for r in records]
    return (
        [e.envelope for e in entries],
        [e.record_digest for e in entries],
        [e.idem_key for e in entries],
    )


def sign_records(
    records: Sequence[AttributionRecord], key: SigningKey, workers: int = 1
) -> list[Entry]:
    """Sign in this process, or across `workers` processes for large backlogs.

    In parallel the workers do all the per-record work (encode, sign, hash) and send back
    only the bytes and hashes that are new; the records reach them by fork where that is
    the start method, so nothing is pickled on the way in.
    """
    global _shared_records
    if workers <= 1 or len(records) < PARALLEL_MIN:
        return [entry_for(r, key) for r in records]
    size = max(1000, -(-len(records) // (workers * 4)))
    spans = [(a, min(a + size, len(records))) for a in range(0, len(records), size)]
    context = multiprocessing.get_context()
    shared = context.get_start_method() == "fork"
    jobs = [(a, b, None if shared else records[a:b]) for a, b in spans]
    _shared_records = records if shared else None
    try:
        # The key crosses to the workers in memory only, as an unencrypted PEM.
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init_worker, initargs=(key.to_pem(None),)
        ) as ex:
            parts = list(ex.map(_sign_span, jobs))
    finally:
        _shared_records = None
    keyid = key.keyid
    envelopes = [e for part in parts for e in part[0]]
    digests = [d for part in parts for d in part[1]]
    idem_keys = [k for part in parts for k in part[2]]
    return [
        Entry(env, digest, idem, r.kind, r.asset, r.partition, r.sha256, keyid, r.recorded_at)
        for r, env, digest, idem in zip(records, envelopes, digests, idem_keys, strict=True)
    ]


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
