"""Offline verification of the whole log: signatures, parses, references, Merkle root, checkpoints.

    report = verify_log(LogView(envelopes=[...], checkpoints=[...]), trust)   # raises on failure
    print(report.summary())   # "OK: 1204 records, 37 checkpoints, root 3f2a…, keys ab12…"

Pure core: takes bytes, returns a report or raises `VerificationError` naming the first bad
index. The CLI feeds it from DuckDB (`lineage verify`) or from an export (`--bundle DIR`).
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, fields
from typing import Any

from lineage_platform.errors import LineageError, VerificationError
from lineage_platform.log import CompactRange, SignedCheckpoint, leaf_hash
from lineage_platform.records import PAYLOAD_TYPE, scan_payload
from lineage_platform.signing import Envelope, TrustStore, open_stored, verify_envelope

# Below this many records a process pool costs more than it saves.
PARALLEL_MIN = 2_000
# Reading an entry from the store costs about a thirtieth of verifying it: that share of the
# log is verified while the rest is read (see Ahead), when it comes to this many records (fewer
# do not repay starting one more process).
AHEAD_SHARE = 32
AHEAD_MIN = 1_000


@dataclass(frozen=True, slots=True)
class Derived:
    """Columns a store keeps beside each envelope; verify recomputes and compares every one."""

    leaf_hash: bytes
    record_digest: str
    idem_key: str
    kind: str
    asset: str
    partition: str | None
    sha256: str
    keyid: str
    recorded_at: str


@dataclass(frozen=True, slots=True)
class Checked:
    """What one verified envelope says, kept for the cross-record checks."""

    derived: Derived
    inputs: tuple[tuple[str, str, int | None], ...]  # (asset, sha256, log_index) where indexed
    supersedes: int | None


@dataclass(frozen=True, slots=True)
class LogView:
    envelopes: Sequence[bytes]
    checkpoints: Sequence[bytes]  # signed checkpoint JSON, ascending tree size
    # A store's denormalized columns, if any: one sequence per name in DERIVED_FIELDS, in that
    # order, each holding one value per record.
    derived: Sequence[Sequence[object]] | None = None
    frontiers: Sequence[tuple[int, bytes]] | None = None  # a store's (tree size, frontier blob)
    indices: Sequence[int] | None = None  # a store's idx column


@dataclass(frozen=True, slots=True)
class VerifyReport:
    records: int
    checkpoints: int
    root_hex: str
    keyids: tuple[str, ...]
    kinds: dict[str, int] = field(default_factory=dict)
    epochs: int = 0  # settled epochs re-derived from events, records and the signed policy

    def summary(self) -> str:
        keys = ", ".join(k[:12] for k in self.keyids) or "none"
        settled = f", {self.epochs} settled epochs re-derived" if self.epochs else ""
        return (
            f"OK: {self.records} records, {self.checkpoints} checkpoints{settled}, "
            f"root {self.root_hex[:16]}…, keys {keys}"
        )


def check_envelope(index: int, data: bytes, trust: TrustStore) -> Checked:
    """Signature, canonical storage and record parse of one stored envelope."""
    row, inputs, supersedes = _derive(index, data, trust)
    return Checked(Derived(*row), inputs, supersedes)


DERIVED_FIELDS = tuple(f.name for f in fields(Derived))
# One record's Derived values as a plain tuple (in DERIVED_FIELDS order): cheap to build,
# compare and pickle, which matters at 100,000 records.
_Row = tuple[bytes, str, str, str, str, str | None, str, str, str]
_Inputs = tuple[tuple[str, str, int | None], ...]


def _derive(index: int, data: bytes, trust: TrustStore) -> tuple[_Row, _Inputs, int | None]:
    what = f"record {index}"
    if not isinstance(data, bytes):
        data = bytes(data)
    try:
        opened = open_stored(data, trust, what)  # the usual form, without building the Envelope
        if opened is None:
            env = Envelope.from_stored(data)  # only the exact canonical bytes parse here
            if env is None:
                Envelope.from_json(data)  # malformed: raises with the field named
                raise VerificationError(
                    f"{what}: stored bytes are not the canonical envelope", index
                )
            verify_envelope(env, trust, what=what)
            opened = env.payload, env.payload_type, _signer(env, trust)
        payload, payload_type, keyid = opened
        if payload_type != PAYLOAD_TYPE:
            raise VerificationError(f"{what}: payloadType {payload_type!r:.60}", index)
        facts = scan_payload(payload)  # the record's parse, without building the record
    except VerificationError:
        raise
    except LineageError as exc:
        msg = str(exc)
        raise VerificationError(msg if msg.startswith(what) else f"{what}: {msg}", index) from exc
    digest, idem_key, kind, asset, partition, sha256, recorded_at, every_input, supersedes = facts
    row: _Row = (
        leaf_hash(data),
        digest,
        idem_key,
        kind,
        asset,
        partition,
        sha256,
        keyid,
        recorded_at,
    )
    # Only inputs that name a log index take part in the cross-record checks.
    inputs = tuple([i for i in every_input if i[2] is not None])
    return row, inputs, supersedes


def _signer(env: Envelope, trust: TrustStore) -> str:
    """The keyid whose signature verified (verify_envelope accepted the first one that does)."""
    sigs = env.signatures
    if len(sigs) == 1:
        return sigs[0].keyid
    message = env.pae()
    for s in sigs:
        if s.keyid in trust:
            try:
                trust.get(s.keyid).verify(s.sig, message, "signature")
                return s.keyid
            except LineageError:
                continue
    raise VerificationError("no trusted signature verifies", None)  # verify_envelope ran first


# --- the work, in chunks that run in this process or in a pool --------------------------------


@dataclass(frozen=True, slots=True)
class _Failure:
    """A worker's first failure, returned rather than raised so its index survives pickling."""

    message: str
    index: int | None


# The derived columns the cross-record checks read, in the order _Records.columns holds them.
_KEPT = ("leaf_hash", "idem_key", "kind", "asset", "sha256", "keyid")


@dataclass(frozen=True, slots=True)
class _Records:
    """A chunk's results. `columns` (the _KEPT ones) only when there were no stored columns
    to compare with: else those, now checked, serve."""

    start: int
    stop: int
    columns: tuple[list[bytes], list[str], list[str], list[str], list[str], list[str]] | None
    extras: list[tuple[int, _Inputs, int | None]]  # records with indexed inputs or supersedes


# (envelopes, stored derived columns or None, checkpoints, trust): what forked workers read
# instead of unpickling their chunk of it.
_Shared = tuple[Sequence[bytes], Sequence[Sequence[object]] | None, Sequence[bytes], TrustStore]
_shared: _Shared | None = None
# ("records" | "checkpoints", start, stop, the chunk itself or None when shared by fork)
_Job = tuple[str, int, int, _Shared | None]
_Done = _Records | list[SignedCheckpoint] | _Failure


def _run(job: _Job) -> _Done:
    kind, start, stop, data = job
    if data is None:
        assert _shared is not None
        envelopes, stored, checkpoints, trust = _shared
        envelopes = envelopes[start:stop]
        stored = None if stored is None else [column[start:stop] for column in stored]
        checkpoints = checkpoints[start:stop]
    else:
        envelopes, stored, checkpoints, trust = data
    if kind == "records":
        return _check_records(start, envelopes, stored, trust)
    return _check_checkpoints(start, checkpoints, trust)


class Ahead:
    """The log's first records, verified in one background process that starts before the
    rest of the log is read, so that the read does not leave the other core idle."""

    def __init__(
        self, envelopes: list[bytes], derived: list[list[object]], trust: TrustStore
    ) -> None:
        global _shared
        self.envelopes, self.derived = envelopes, derived
        context = multiprocessing.get_context()
        data: _Shared = (envelopes, derived, (), trust)
        shared = context.get_start_method() == "fork"
        job: _Job = ("records", 0, len(envelopes), None if shared else data)
        self._receive, send = context.Pipe(duplex=False)
        self._process = context.Process(target=_run_ahead, args=(job, send), daemon=True)
        _shared = data if shared else None
        try:
            self._process.start()
        finally:
            _shared = None
            send.close()

    @property
    def size(self) -> int:
        return len(self.envelopes)

    def matches(self, view: LogView) -> bool:
        """Whether `view` begins with exactly these entries (else they are verified anew)."""
        k = self.size
        if view.derived is None or len(view.envelopes) < k:
            return False
        if list(view.envelopes[:k]) != self.envelopes:
            return False
        return all(list(c[:k]) == d for c, d in zip(view.derived, self.derived, strict=True))

    def result(self) -> _Done | None:
        """The records' results, or None if the process died without them."""
        try:
            done: _Done = self._receive.recv()
            return done
        except (EOFError, OSError):
            return None
        finally:
            self.close()

    def close(self) -> None:
        if self._process.is_alive():
            self._process.kill()
        self._process.join()
        self._receive.close()


def ahead_size(n: int, workers: int | None = None) -> int:
    """How many of a log's n records `Ahead` should take: what one core verifies while the
    rest is read; none when there is no second core or too little to share."""
    k = n // AHEAD_SHARE
    if (workers or os.cpu_count() or 1) <= 1 or n < PARALLEL_MIN or k < AHEAD_MIN:
        return 0
    return k


def _run_ahead(job: _Job, send: Any) -> None:
    gc.disable()  # as in the pool's workers
    send.send(_run(job))
    send.close()


def _check_records(
    start: int,
    envelopes: Sequence[bytes],
    stored: Sequence[Sequence[object]] | None,
    trust: TrustStore,
) -> _Records | _Failure:
    rows = None if stored is None else list(zip(*stored, strict=True))
    keep: list[_Row] = []
    extras: list[tuple[int, _Inputs, int | None]] = []
    for j, data in enumerate(envelopes):
        i = start + j
        try:
            row, inputs, supersedes = _derive(i, data, trust)
        except VerificationError as exc:
            return _Failure(str(exc), exc.index)
        if rows is None:
            keep.append(row)
        elif rows[j] != row:
            name = next(n for n, a, b in zip(DERIVED_FIELDS, rows[j], row, strict=True) if a != b)
            return _Failure(f"record {i}: stored column {name} does not match the signed record", i)
        if inputs or supersedes is not None:
            extras.append((i, inputs, supersedes))
    if rows is not None:
        return _Records(start, start + len(envelopes), None, extras)
    columns = (
        [r[0] for r in keep],
        [r[2] for r in keep],
        [r[3] for r in keep],
        [r[4] for r in keep],
        [r[6] for r in keep],
        [r[7] for r in keep],
    )
    return _Records(start, start + len(envelopes), columns, extras)


def _check_checkpoints(
    start: int, checkpoints: Sequence[bytes], trust: TrustStore
) -> list[SignedCheckpoint] | _Failure:
    out = []
    for c, data in enumerate(checkpoints, start):
        try:
            parsed = SignedCheckpoint.from_json(data)
            parsed.verify(trust)
        except LineageError as exc:
            return _Failure(f"checkpoint {c}: {exc}", None)
        out.append(parsed)
    return out


def _results(
    view: LogView, trust: TrustStore, workers: int, ahead: Ahead | None = None
) -> Iterator[_Done]:
    """Every checkpoints chunk, then every records chunk in log order; lazily, so the caller
    checks chunk k while the pool works on the chunks after it."""
    global _shared
    n, m = len(view.envelopes), len(view.checkpoints)
    stored = view.derived
    k = 0
    if ahead is not None:
        if ahead.matches(view):
            k = ahead.size
        else:
            ahead.close()
    if workers <= 1 or n + m < PARALLEL_MIN:
        if ahead is not None:
            ahead.close()
        yield _check_checkpoints(0, view.checkpoints, trust)
        # Slices: a view's sequences may convert to Python objects only when sliced.
        whole = None if stored is None else [column[0:n] for column in stored]
        yield _check_records(0, view.envelopes[0:n], whole, trust)
        return
    checkpoint_spans = [("checkpoints", a, b) for a, b in _chunks(m, workers)]
    spans = checkpoint_spans + [("records", a + k, b + k) for a, b in _chunks(n - k, workers)]
    context = multiprocessing.get_context()
    jobs: list[_Job]
    if context.get_start_method() == "fork":
        _shared = (view.envelopes, stored, view.checkpoints, trust)
        jobs = [(kind, a, b, None) for kind, a, b in spans]
    else:  # spawn / forkserver: each job carries its own slice
        jobs = [
            (
                kind,
                a,
                b,
                (
                    view.envelopes[a:b],
                    None if stored is None else [column[a:b] for column in stored],
                    (),
                    trust,
                )
                if kind == "records"
                else ((), None, view.checkpoints[a:b], trust),
            )
            for kind, a, b in spans
        ]
    # The workers allocate no reference cycles worth collecting, and the collector's passes
    # over a heap shared with the parent cost a few percent of the whole verification.
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=gc.disable)
    try:
        results = pool.map(_run, jobs)
        for _ in checkpoint_spans:
            yield next(results)
        if ahead is not None and k:
            head = ahead.result()
            if head is None:  # the process died: verify those records here after all
                head_stored = None if stored is None else [c[:k] for c in stored]
                head = _check_records(0, view.envelopes[:k], head_stored, trust)
            yield head
        yield from results
    finally:  # also when the caller stops at the first failure: drop the chunks not started
        pool.shutdown(wait=True, cancel_futures=True)
        _shared = None
        if ahead is not None:
            ahead.close()


def _chunks(count: int, workers: int, smallest: int = 250) -> list[tuple[int, int]]:
    """Guided chunks: each an eighth of what is left per worker, down to `smallest`, so that
    the first ones are cheap to hand out and the last ones leave a core idle only briefly."""
    spans = []
    start = 0
    while start < count:
        size = max(smallest, (count - start) // (workers * 8))
        spans.append((start, min(start + size, count)))
        start += size
    return spans


def verify_log(
    view: LogView,
    trust: TrustStore,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    ahead: Ahead | None = None,
) -> VerifyReport:
    """Every check, in log order; the first failure raises with its index.

    `ahead`: the first records' verification already under way (used if `view` begins with
    exactly its entries).
    """
    n = len(view.envelopes)
    if view.indices is not None:
        for pos, idx in enumerate(view.indices):
            if idx != pos:
                raise VerificationError(f"record {pos}: stored index {idx}, expected {pos}", pos)
        if len(view.indices) != n:
            raise VerificationError(f"record {n}: {len(view.indices)} indices, {n} envelopes", n)
    stored = view.derived
    if stored is not None and [len(c) for c in stored] != [n] * len(DERIVED_FIELDS):
        raise VerificationError(f"stored columns do not hold one value per record ({n})", None)

    # What the cross-record checks read, taken chunk by chunk as the results come in: the
    # stored columns once a worker has matched them to the signed records, else the worker's
    # own columns.
    leaves: list[bytes] = []
    idem_keys: list[str] = []
    kinds: list[str] = []
    assets: list[str] = []
    sha256s: list[str] = []
    keyids: list[str] = []
    kept = None if stored is None else [stored[DERIVED_FIELDS.index(name)] for name in _KEPT]
    seen_keys: dict[str, int] = {}
    signed: list[SignedCheckpoint] = []
    tree: _Tree | None = None
    for done in _results(view, trust, workers or os.cpu_count() or 1, ahead):
        if isinstance(done, _Failure):
            raise VerificationError(done.message, done.index)
        if isinstance(done, list):
            signed.extend(done)
            continue
        if tree is None:  # every checkpoint is in: they come first
            tree = _Tree(signed, dict(view.frontiers or []), n)
        got: list[Sequence[Any]]
        if done.columns is not None:
            got = list(done.columns)
        else:
            assert kept is not None  # a worker returns no columns only when it had stored ones
            got = [column[done.start : done.stop] for column in kept]
        have: tuple[list[Any], ...] = (leaves, idem_keys, kinds, assets, sha256s, keyids)
        for target, values in zip(have, got, strict=True):
            target.extend(values)
        first = _first_replay(done.start, idem_keys[done.start : done.stop], seen_keys)
        for i, inputs, supersedes in done.extras:
            if first is not None and first.index is not None and first.index <= i:
                break
            bad = _check_references(i, inputs, supersedes, assets, sha256s)
            if bad is not None:
                first = bad
                break
        # A root mismatch is placed only to its batch; when that batch starts before a
        # reference error, the mismatch is the first thing wrong (e.g. a deleted row).
        wrong = tree.advance(leaves, done.stop)
        if wrong is not None and (first is None or wrong[0] <= (first.index or 0)):
            raise wrong[1]
        if first is not None:
            raise first
        if progress:
            progress(done.stop - done.start)
    if tree is None:
        tree = _Tree(signed, dict(view.frontiers or []), n)
    wrong = tree.advance(leaves, n)
    if wrong is not None:
        raise wrong[1]
    tree.finish()
    if not signed:
        return VerifyReport(0, 0, CompactRange().root().hex(), ())
    keys = tuple(sorted(set(keyids) | {s.keyid for s in signed}))
    return VerifyReport(
        n, len(signed), signed[-1].checkpoint.root_hash.hex(), keys, dict(Counter(kinds))
    )


def _first_replay(
    start: int, idem_keys: Sequence[str], seen: dict[str, int]
) -> VerificationError | None:
    keys = set(idem_keys)
    if len(keys) == len(idem_keys) and seen.keys().isdisjoint(keys):  # the usual case, in C
        seen.update(zip(idem_keys, range(start, start + len(idem_keys)), strict=True))
        return None
    for i, key in enumerate(idem_keys, start):
        earlier = seen.setdefault(key, i)
        if earlier != i:
            return VerificationError(f"record {i}: replays record {earlier} ({key})", i)
    return None


def _check_references(
    i: int,
    inputs: _Inputs,
    supersedes: int | None,
    assets: Sequence[str],
    sha256s: Sequence[str],
) -> VerificationError | None:
    """Each input's log_index names an earlier record of that asset and content hash."""
    for asset, sha, ref in inputs:
        if ref is None:
            continue
        if ref >= i:
            return VerificationError(f"record {i}: input {asset} points forward to {ref}", i)
        if assets[ref] != asset or sha256s[ref] != sha:
            return VerificationError(
                f"record {i}: input {asset} names record {ref}, which attests "
                f"{assets[ref]} sha256 {sha256s[ref][:12]}…, not {sha[:12]}…",
                i,
            )
    if supersedes is not None and supersedes >= i:
        return VerificationError(f"record {i}: supersedes {supersedes}, not earlier", i)
    return None


class _Tree:
    """The Merkle frontier rebuilt leaf by leaf as chunks arrive, checked against every signed
    checkpoint (and the store's frontier) as soon as its size is reached.

    The log signs only batch roots, so a change inside a batch is placed to the batch.
    """

    def __init__(
        self, signed: Sequence[SignedCheckpoint], frontiers: dict[int, bytes], n: int
    ) -> None:
        sizes = [s.checkpoint.tree_size for s in signed]
        if sizes != sorted(set(sizes)):
            raise VerificationError("checkpoints are not in strictly increasing tree size", None)
        if not signed and n:
            raise VerificationError(f"record 0: no signed checkpoint covers the {n} records", 0)
        self.signed = signed
        self.frontiers = frontiers
        self.n = n
        self.next = 0  # the first checkpoint not yet checked
        self.range = CompactRange()
        self.covered = 0  # the size of the last checkpoint that matched

    def advance(self, leaves: Sequence[bytes], upto: int) -> tuple[int, VerificationError] | None:
        """Check every checkpoint of size <= upto; the first mismatch, with its sort index."""
        tree = self.range
        while self.next < len(self.signed):
            cp = self.signed[self.next].checkpoint
            if cp.tree_size > upto:
                return None
            tree.extend(leaves[tree.size : cp.tree_size])
            size, covered = tree.size, self.covered
            if tree.root() != cp.root_hash:
                last = size - 1
                what = f"records {covered}–{last}" if last > covered else f"record {covered}"
                return covered, VerificationError(
                    f"{what}: the Merkle root at size {size} does not match the signed "
                    "checkpoint (a record there was changed, removed, inserted or reordered)",
                    covered,
                )
            if size in self.frontiers and self.frontiers[size] != b"".join(tree.to_hashes()):
                error = VerificationError(f"checkpoint at size {size}: stored frontier is wrong")
                return size, error
            self.covered = size
            self.next += 1
        return None

    def finish(self) -> None:
        """After every record: the latest checkpoint must cover exactly the log."""
        if not self.signed:
            return
        latest = self.signed[-1].checkpoint.tree_size
        if latest < self.n:
            raise VerificationError(
                f"record {latest}: not covered by a signed checkpoint (the latest covers "
                f"{latest} records, the log holds {self.n})",
                latest,
            )
        if latest > self.n:
            raise VerificationError(
                f"record {self.n}: missing (the latest signed checkpoint covers {latest} "
                f"records, the log holds {self.n})",
                self.n,
            )
