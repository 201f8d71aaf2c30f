"""Sign attribution records and append them to the log: the one path every record takes.

    result = append_records(store, key, [record, ...], origin=ORIGIN)
    result.indices   # log index of each record (an already-recorded one keeps its index)

Records are signed before the store transaction opens, so the DuckDB lock is held only for the
bulk insert and one checkpoint signature. A large backlog given with `batch_size` goes in as
several transactions, and worker processes sign the next batches while one commits.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta

from lineage_platform.errors import RecordError
from lineage_platform.log import Checkpoint, SignedCheckpoint, leaf_hash
from lineage_platform.records import AttributionRecord, utc_timestamp
from lineage_platform.signing import SigningKey, signed_envelope_json
from lineage_platform.stores import MAX_SKEW_S, AppendResult, Entry, EntryColumns, Store

ORIGIN = "lineage-platform.local/log"
# Below this many records, starting worker processes costs more than it saves.
PARALLEL_MIN = 4_000
WORKER_NICENESS = 10

_worker_key: SigningKey | None = None
# What forked workers sign: the records themselves, shared by fork instead of pickled.
_shared_records: Sequence[AttributionRecord] | None = None


def entry_for(record: AttributionRecord, key: SigningKey) -> Entry:
    return sign_records([record], key)[0]


def _init_worker(pem: bytes) -> None:
    global _worker_key
    _worker_key = SigningKey.from_pem(pem, None)
    # The process that commits holds the DuckDB lock: when cores are short, it goes first, so
    # the lock is held for as short a time as possible and signing fills the gaps.
    with suppress(OSError):
        os.nice(WORKER_NICENESS)


# Envelopes, record digests, idempotency keys and leaf hashes of a span of records.
_Signed = tuple[list[bytes], list[str], list[str], list[bytes]]


def _signed(records: Sequence[AttributionRecord], key: SigningKey) -> _Signed:
    """All the per-record work of an append, as columns: no Envelope or Entry per record (the
    objects cost a seventh of the work besides the signature itself)."""
    envelopes: list[bytes] = []
    digests: list[str] = []
    keys: list[str] = []
    leaves: list[bytes] = []
    sha256 = hashlib.sha256
    for r in records:
        payload = r.to_bytes()
        digest = sha256(payload).hexdigest()
        envelope = signed_envelope_json(payload, key)
        envelopes.append(envelope)
        digests.append(digest)
        keys.append(r.idempotency_key(digest))
        leaves.append(leaf_hash(envelope))  # in a worker, not in the process that holds the lock
    return envelopes, digests, keys, leaves


def _sign_span(job: tuple[int, int, Sequence[AttributionRecord] | None]) -> _Signed:
    start, stop, records = job
    if records is None:
        assert _shared_records is not None
        records = _shared_records[start:stop]
    assert _worker_key is not None
    return _signed(records, _worker_key)


_Submit = Callable[[int, int], "Future[_Signed]"]


@contextmanager
def _signing_pool(
    records: Sequence[AttributionRecord], key: SigningKey, workers: int
) -> Iterator[_Submit]:
    """`submit(start, stop)` signs records[start:stop] in a worker; the records reach the
    workers by fork where that is the start method, so nothing is pickled on the way in."""
    global _shared_records
    context = multiprocessing.get_context()
    shared = context.get_start_method() == "fork"
    _shared_records = records if shared else None
    try:
        # The key crosses to the workers in memory only, as an unencrypted PEM.
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init_worker, initargs=(key.to_pem(None),)
        ) as ex:

            def submit(start: int, stop: int) -> Future[_Signed]:
                return ex.submit(_sign_span, (start, stop, None if shared else records[start:stop]))

            yield submit
    finally:
        _shared_records = None


def _spans(start: int, stop: int, size: int) -> list[tuple[int, int]]:
    return [(a, min(a + size, stop)) for a in range(start, stop, size)]


def _entries(
    records: Sequence[AttributionRecord], parts: Sequence[_Signed], keyid: str
) -> EntryColumns:
    """The workers' parts and the records' own fields as columns: no object per entry."""
    return EntryColumns(
        envelope=[e for part in parts for e in part[0]],
        record_digest=[d for part in parts for d in part[1]],
        idem_key=[k for part in parts for k in part[2]],
        kind=[str(r.kind) for r in records],  # the Kind's value
        asset=[r.asset for r in records],
        partition=[r.partition for r in records],
        sha256=[r.sha256 for r in records],
        keyid=[keyid] * len(records),
        recorded_at=[r.recorded_at for r in records],
        leaf_hash=[h for part in parts for h in part[3]],
    )


def sign_records(
    records: Sequence[AttributionRecord], key: SigningKey, workers: int = 1
) -> list[Entry]:
    """Sign in this process, or across `workers` processes for large backlogs."""
    return _sign(records, key, workers).entries()


def _sign(records: Sequence[AttributionRecord], key: SigningKey, workers: int) -> EntryColumns:
    """In parallel the workers do all the per-record work (encode, sign, hash) and send back
    only the bytes and hashes that are new; the result is then columns."""
    if workers <= 1 or len(records) < PARALLEL_MIN:
        return _entries(records, [_signed(records, key)], key.keyid)
    size = max(1000, -(-len(records) // (workers * 4)))
    with _signing_pool(records, key, workers) as submit:
        futures = [submit(a, b) for a, b in _spans(0, len(records), size)]
        parts = [f.result() for f in futures]
    return _entries(records, parts, key.keyid)


def check_not_future(records: Sequence[AttributionRecord], now: datetime | None = None) -> None:
    """Refuse to sign a record whose `recorded_at` is after now + `MAX_SKEW_S`: a record is
    signed when it is made. (The parser's own bound is a fixed year, `records.LAST_YEAR`,
    because it verifies old logs without a clock.) One pass of string comparisons: the
    timestamps' fixed layout orders them as text."""
    if not records:
        return
    latest = max(records, key=lambda r: r.recorded_at)
    horizon = utc_timestamp((now or datetime.now(UTC)) + timedelta(seconds=MAX_SKEW_S))
    # The fractional part may be shorter than ours, or absent: compare to the second first.
    if latest.recorded_at[:19] > horizon[:19]:
        raise RecordError(
            f"predicate.recorded_at: {latest.recorded_at} ({latest.asset}) is after now + "
            f"{MAX_SKEW_S} s; a record is signed when it is made"
        )


def append_records(
    store: Store,
    key: SigningKey,
    records: Sequence[AttributionRecord],
    origin: str = ORIGIN,
    workers: int = 1,
    batch_size: int | None = None,
) -> AppendResult:
    """Sign and append; with `batch_size`, one transaction and checkpoint per batch.

    In batches, every batch is durable once its transaction commits (a crash loses only the
    batch in flight, and a retry skips what is in), and with `workers` > 1 the workers sign
    batch k+1 while this process commits batch k: signing and DuckDB's commit overlap.
    """

    def sign_checkpoint(checkpoint: Checkpoint) -> SignedCheckpoint:
        return SignedCheckpoint.sign(checkpoint, key)

    check_not_future(records)
    n = len(records)
    if batch_size is None or batch_size >= n:
        return store.append_entries(_sign(records, key, workers), sign_checkpoint, origin)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    results: list[AppendResult] = []
    if workers <= 1 or n < PARALLEL_MIN:
        for a, b in _spans(0, n, batch_size):
            entries = sign_records(records[a:b], key)
            results.append(store.append_entries(entries, sign_checkpoint, origin))
        return _combined(results)
    # Chunks small enough that the first batch is ready soon and both workers share each batch.
    chunk = max(250, -(-batch_size // (2 * workers)))
    with _signing_pool(records, key, workers) as submit:
        # Everything is queued at once: the workers run ahead while batches commit in order.
        batches = [
            (a, b, [submit(c, d) for c, d in _spans(a, b, chunk)])
            for a, b in _spans(0, n, batch_size)
        ]
        for a, b, futures in batches:
            columns = _entries(records[a:b], [f.result() for f in futures], key.keyid)
            results.append(store.append_entries(columns, sign_checkpoint, origin))
    return _combined(results)


def _combined(results: Sequence[AppendResult]) -> AppendResult:
    checkpoints = [r.checkpoint for r in results if r.checkpoint is not None]
    return AppendResult(
        tuple(i for r in results for i in r.indices),
        sum(r.appended for r in results),
        sum(r.skipped for r in results),
        checkpoints[-1] if checkpoints else None,
    )
