"""Offline verification of the whole log: signatures, parses, references, Merkle root, checkpoints.

    report = verify_log(LogView(envelopes=[...], checkpoints=[...]), trust)   # raises on failure
    print(report.summary())   # "OK: 1204 records, 37 checkpoints, root 3f2a…, keys ab12…"

Pure core: takes bytes, returns a report or raises `VerificationError` naming the first bad
index. The CLI feeds it from a store (`lineage verify`) or from an export (`--bundle DIR`).

Two parts. **What is checked** (pure, no processes): `check_envelope` for one envelope,
`check_records` for a chunk of them, and `LogChecker`, fed the chunks in log order, for what
spans records (its docstring lists every check, in order). **How it is scheduled**: `verify_log`
runs the chunks serially or in a process pool, with the log's first records already under way
in `Ahead` while a store reads the rest, and feeds the results to one `LogChecker`.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from lineage_platform.errors import LineageError, VerificationError, shown
from lineage_platform.log import CompactRange, SignedCheckpoint, leaf_hash
from lineage_platform.records import (
    PAYLOAD_TYPE,
    STORED_FACTS,
    RecordFacts,
    scan_canonical,
    scan_payload,
)
from lineage_platform.signing import (
    Envelope,
    TrustStore,
    open_stored,
    pae,
    stored_parts,
    verify_envelope,
)

# Below this many records a process pool costs more than it saves.
PARALLEL_MIN = 2_000
# Reading an entry from the store costs about a thirtieth of verifying it: that share of the
# log is verified while the rest is read (see Ahead), when it comes to this many records (fewer
# do not repay starting one more process).
AHEAD_SHARE = 32
AHEAD_MIN = 1_000
# Envelopes parsed before their signatures are checked, in `check_records` (see
# `_checked_in_phases`): enough to keep each phase's working set in cache, few enough that
# a bad record early in a chunk is found without parsing much past it.
PHASE = 256

#: The columns a store keeps beside each envelope, all derived from it: verify recomputes and
#: compares every one (`LogView.derived` holds them in this order).
DERIVED_FIELDS = ("leaf_hash", "keyid", *STORED_FACTS)


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


# --- what is checked: one envelope, a chunk, the log ------------------------------------------


class Checked(NamedTuple):
    """One verified envelope: the leaf its bytes hash to, the key whose signature verified, and
    what its record says (`RecordFacts`)."""

    leaf_hash: bytes
    keyid: str
    facts: RecordFacts

    def columns(self) -> tuple[object, ...]:
        """The values a store keeps for this envelope, in DERIVED_FIELDS order."""
        return (self.leaf_hash, self.keyid, *self.facts[: len(STORED_FACTS)])


def check_envelope(index: int, data: bytes, trust: TrustStore) -> Checked:
    """Signature, canonical storage and record parse of one stored envelope.

    Raises VerificationError("record <index>: ...") naming the first problem.
    """
    if not isinstance(data, bytes):
        data = bytes(data)
    return _checked(index, data, trust, _parsed(data))


#: What `_parsed` reads from an envelope in the usual form: (payload, payloadType, keyid,
#: sig) and the record's facts.
_Parsed = tuple[tuple[bytes, str, str, bytes], RecordFacts]


def _parsed(data: bytes) -> _Parsed | None:
    """The envelope and record of `data` when it is the usual stored form: a canonical
    one-signature envelope of in-toto's payloadType over a canonical valid record; None for
    anything else (`_checked` then takes the general path, which names the problem). Nothing
    here is trusted until `_checked` verifies the signature."""
    parts = stored_parts(data)
    if parts is None or parts[1] != PAYLOAD_TYPE:
        return None
    facts = scan_canonical(parts[0])
    return None if facts is None else (parts, facts)


def _checked(index: int, data: bytes, trust: TrustStore, parsed: _Parsed | None) -> Checked:
    """check_envelope, given `_parsed(data)`: its checks in its order (the signature before
    anything the payload says), so the same failure is named whichever way it is found."""
    what = f"record {index}"
    try:
        if parsed is not None:
            (payload, payload_type, keyid, sig), facts = parsed
            trust.get(keyid, what).verify(sig, pae(payload_type, payload), what)
            return Checked(leaf_hash(data), keyid, facts)
        # Anything else, by the general path, which names the problem.
        opened = open_stored(data, trust, what)
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
    return Checked(leaf_hash(data), keyid, facts)


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


_Inputs = tuple[tuple[str, str, int | None], ...]


class References(NamedTuple):
    """A record's references to earlier records, for the cross-record checks."""

    record: int  # its log index
    inputs: _Inputs  # (asset, sha256, log_index) of the inputs that name a log index
    supersedes: int | None


class KeptColumns(NamedTuple):
    """The per-record values the cross-record checks read, as columns of one chunk."""

    leaf_hash: list[bytes]
    idem_key: list[str]
    kind: list[str]
    asset: list[str]
    sha256: list[str]
    keyid: list[str]


@dataclass(frozen=True, slots=True)
class RecordsChecked:
    """A chunk of records that passed `check_records`. `columns` only when there were no stored
    columns to compare with: else those, now checked, serve."""

    start: int
    stop: int
    columns: KeptColumns | None
    references: list[References]  # records with indexed inputs or a supersedes


def check_records(
    start: int,
    envelopes: Sequence[bytes],
    stored: Sequence[Sequence[object]] | None,
    trust: TrustStore,
) -> RecordsChecked:
    """Checks 1-2 of `LogChecker` for records start.. (their envelopes, and the store's columns
    for them in DERIVED_FIELDS order, if any); raises VerificationError at the first failure."""
    rows = None if stored is None else list(zip(*stored, strict=True))
    kept: list[Checked] = []
    references: list[References] = []
    for j, checked in enumerate(_checked_in_phases(start, envelopes, trust)):
        i = start + j
        if rows is None:
            kept.append(checked)
        elif rows[j] != (derived := checked.columns()):
            name = next(
                n for n, a, b in zip(DERIVED_FIELDS, rows[j], derived, strict=True) if a != b
            )
            raise VerificationError(
                f"record {i}: stored column {name} does not match the signed record", i
            )
        facts = checked.facts
        if facts.supersedes is not None or any(x[2] is not None for x in facts.inputs):
            # Only inputs that name a log index take part in the cross-record checks.
            inputs = tuple([x for x in facts.inputs if x[2] is not None])
            references.append(References(i, inputs, facts.supersedes))
    stop = start + len(envelopes)
    if rows is not None:
        return RecordsChecked(start, stop, None, references)
    columns = KeptColumns(
        [c.leaf_hash for c in kept],
        [c.facts.idem_key for c in kept],
        [c.facts.kind for c in kept],
        [c.facts.asset for c in kept],
        [c.facts.sha256 for c in kept],
        [c.keyid for c in kept],
    )
    return RecordsChecked(start, stop, columns, references)


def _checked_in_phases(
    start: int, envelopes: Sequence[bytes], trust: TrustStore
) -> Iterator[Checked]:
    """check_envelope for each envelope in turn (the same results, the same first failure),
    PHASE envelopes at a time: all their parses, then all their signatures. Interleaved per
    record, the signature check and the parser evict each other's working set from the CPU's
    caches: ~7% of a worker's time with both cores busy (docs/performance.md)."""
    for a in range(0, len(envelopes), PHASE):
        chunk = [d if type(d) is bytes else bytes(d) for d in envelopes[a : a + PHASE]]
        parsed = [_parsed(data) for data in chunk]
        for j, (data, p) in enumerate(zip(chunk, parsed, strict=True), start + a):
            yield _checked(j, data, trust, p)


def check_origin(signed: SignedCheckpoint, what: str) -> None:
    """A checkpoint names this log (`attest.ORIGIN`): one signed for another log, even by a
    trusted key, says nothing about this one (issue 15)."""
    from lineage_platform.attest import ORIGIN

    if signed.checkpoint.origin != ORIGIN:
        raise VerificationError(
            f"{what}: origin {shown(signed.checkpoint.origin)} is not this log's ({ORIGIN})", None
        )


def check_checkpoints(
    start: int, checkpoints: Sequence[bytes], trust: TrustStore
) -> list[SignedCheckpoint]:
    """Check 3's signatures: each checkpoint parses, names this log, and a trusted key signed
    it."""
    out = []
    for c, data in enumerate(checkpoints, start):
        try:
            parsed = SignedCheckpoint.from_json(data)
            parsed.verify(trust)
        except LineageError as exc:
            raise VerificationError(f"checkpoint {c}: {exc}", None) from exc
        check_origin(parsed, f"checkpoint {c}")
        out.append(parsed)
    return out


class LogChecker:
    """The whole log's checks, fed in log order; the first failure raises VerificationError
    naming its index. In order:

    0. (`begin`) a store's idx column numbers the records 0..n-1, and its derived columns hold
       one value per record;
    1. (`check_records`, per record) the stored bytes are the canonical DSSE envelope, a
       trusted key's Ed25519 signature verifies, the payloadType is in-toto's, and the payload
       is the canonical bytes of a valid record (`records.scan_payload`);
    2. (`check_records`) a store's derived columns equal what the envelope derives (leaf hash,
       keyid, digest, idempotency key, kind, asset, partition, sha256, recorded_at);
    3. (`check_checkpoints`, then here) every checkpoint verifies with a trusted key, and their
       tree sizes strictly increase; some checkpoint covers a non-empty log;
    4. (`records`, per chunk) no idempotency key repeats an earlier record's (a replay);
    5. every input that names a log index names an earlier record of that asset and content
       hash, and `supersedes` names an earlier record;
    6. the Merkle root of the first n leaves equals each checkpoint's root for tree size n
       (a mismatch is placed to the batch it covers), and equals a store's frontier for n;
    7. (`finish`) the latest checkpoint covers exactly the log's records.
    """

    def __init__(
        self,
        view: LogView,
        checkpoints: Sequence[SignedCheckpoint],
    ) -> None:
        n = len(view.envelopes)
        self.n = n
        stored = view.derived
        # The stored columns the cross-record checks read (in KeptColumns order), if any.
        self._kept: list[Sequence[Any]] | None = (
            None
            if stored is None
            else [stored[DERIVED_FIELDS.index(f)] for f in KeptColumns._fields]
        )
        self._columns = KeptColumns([], [], [], [], [], [])
        self._seen_keys: dict[str, int] = {}
        self._signed = checkpoints
        self._tree = _Tree(checkpoints, dict(view.frontiers or []), n)

    @staticmethod
    def begin(view: LogView) -> None:
        """Check 0, before any record is read."""
        n = len(view.envelopes)
        if view.indices is not None:
            for pos, idx in enumerate(view.indices):
                if idx != pos:
                    raise VerificationError(
                        f"record {pos}: stored index {idx}, expected {pos}", pos
                    )
            if len(view.indices) != n:
                raise VerificationError(
                    f"record {n}: {len(view.indices)} indices, {n} envelopes", n
                )
        stored = view.derived
        if stored is not None and [len(c) for c in stored] != [n] * len(DERIVED_FIELDS):
            raise VerificationError(f"stored columns do not hold one value per record ({n})", None)

    def records(self, done: RecordsChecked) -> None:
        """Checks 4-6 for the next chunk (chunks come in log order, each passed check_records)."""
        got: Sequence[Sequence[Any]]
        if done.columns is not None:
            got = list[Sequence[Any]](done.columns)  # mypy 2 joins a NamedTuple's fields to object
        else:
            assert self._kept is not None  # no columns back only when there were stored ones
            got = [column[done.start : done.stop] for column in self._kept]
        have: tuple[list[Any], ...] = tuple(self._columns)
        for target, values in zip(have, got, strict=True):
            target.extend(values)
        cols = self._columns
        first = _first_replay(done.start, cols.idem_key[done.start : done.stop], self._seen_keys)
        for ref in done.references:
            if first is not None and first.index is not None and first.index <= ref.record:
                break
            bad = _check_references(ref, cols.asset, cols.sha256)
            if bad is not None:
                first = bad
                break
        # A root mismatch is placed only to its batch; when that batch starts before a
        # reference error, the mismatch is the first thing wrong (e.g. a deleted row).
        wrong = self._tree.advance(cols.leaf_hash, done.stop)
        if wrong is not None and (first is None or wrong[0] <= (first.index or 0)):
            raise wrong[1]
        if first is not None:
            raise first

    def finish(self) -> VerifyReport:
        """Check 6 for what is left, and check 7; the report."""
        wrong = self._tree.advance(self._columns.leaf_hash, self.n)
        if wrong is not None:
            raise wrong[1]
        self._tree.finish()
        signed = self._signed
        if not signed:
            return VerifyReport(0, 0, CompactRange().root().hex(), ())
        keys = tuple(sorted(set(self._columns.keyid) | {s.keyid for s in signed}))
        kinds = dict(Counter(self._columns.kind))
        return VerifyReport(self.n, len(signed), signed[-1].checkpoint.root_hash.hex(), keys, kinds)


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
    ref: References, assets: Sequence[str], sha256s: Sequence[str]
) -> VerificationError | None:
    """Each input's log_index names an earlier record of that asset and content hash."""
    i = ref.record
    for asset, sha, target in ref.inputs:
        if target is None:
            continue
        if target >= i:
            return VerificationError(f"record {i}: input {asset} points forward to {target}", i)
        if assets[target] != asset or sha256s[target] != sha:
            return VerificationError(
                f"record {i}: input {asset} names record {target}, which attests "
                f"{assets[target]} sha256 {sha256s[target][:12]}…, not {sha[:12]}…",
                i,
            )
    if ref.supersedes is not None and ref.supersedes >= i:
        return VerificationError(f"record {i}: supersedes {ref.supersedes}, not earlier", i)
    return None


# --- how it is scheduled: chunks in this process or a pool, and Ahead ---------------------------


@dataclass(frozen=True, slots=True)
class _Failure:
    """A worker's first failure, returned rather than raised so its index survives pickling."""

    message: str
    index: int | None


# (envelopes, stored derived columns or None, checkpoints, trust): what forked workers read
# instead of unpickling their chunk of it.
_Shared = tuple[Sequence[bytes], Sequence[Sequence[object]] | None, Sequence[bytes], TrustStore]
_shared: _Shared | None = None


class _Job(NamedTuple):
    what: str  # "records" | "checkpoints"
    start: int
    stop: int
    data: _Shared | None  # the chunk itself, or None when shared by fork


_Done = RecordsChecked | list[SignedCheckpoint] | _Failure


def _run(job: _Job) -> _Done:
    if job.data is None:
        assert _shared is not None
        envelopes, stored, checkpoints, trust = _shared
        a, b = job.start, job.stop
        envelopes = envelopes[a:b]
        stored = None if stored is None else [column[a:b] for column in stored]
        checkpoints = checkpoints[a:b]
    else:
        envelopes, stored, checkpoints, trust = job.data
    try:
        if job.what == "records":
            return check_records(job.start, envelopes, stored, trust)
        return check_checkpoints(job.start, checkpoints, trust)
    except VerificationError as exc:
        return _Failure(str(exc), exc.index)


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
        job = _Job("records", 0, len(envelopes), None if shared else data)
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
        # Slices: a view's sequences may convert to Python objects only when sliced.
        whole = None if stored is None else [column[0:n] for column in stored]
        yield _run(_Job("checkpoints", 0, m, ((), None, view.checkpoints, trust)))
        yield _run(_Job("records", 0, n, (view.envelopes[0:n], whole, (), trust)))
        return
    checkpoint_spans = [("checkpoints", a, b) for a, b in _chunks(m, workers)]
    spans = checkpoint_spans + [("records", a + k, b + k) for a, b in _chunks(n - k, workers)]
    context = multiprocessing.get_context()
    jobs: list[_Job]
    if context.get_start_method() == "fork":
        _shared = (view.envelopes, stored, view.checkpoints, trust)
        jobs = [_Job(what, a, b, None) for what, a, b in spans]
    else:  # spawn / forkserver: each job carries its own slice
        jobs = [
            _Job(
                what,
                a,
                b,
                (
                    view.envelopes[a:b],
                    None if stored is None else [column[a:b] for column in stored],
                    (),
                    trust,
                )
                if what == "records"
                else ((), None, view.checkpoints[a:b], trust),
            )
            for what, a, b in spans
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
                head = _run(_Job("records", 0, k, (view.envelopes[:k], head_stored, (), trust)))
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
    """Every check (see `LogChecker`), in log order; the first failure raises with its index.

    `ahead`: the first records' verification already under way (used if `view` begins with
    exactly its entries).
    """
    LogChecker.begin(view)
    signed: list[SignedCheckpoint] = []
    checker: LogChecker | None = None
    for done in _results(view, trust, workers or os.cpu_count() or 1, ahead):
        if isinstance(done, _Failure):
            raise VerificationError(done.message, done.index)
        if isinstance(done, list):
            signed.extend(done)
            continue
        if checker is None:  # every checkpoint is in: they come first
            checker = LogChecker(view, signed)
        checker.records(done)
        if progress:
            progress(done.stop - done.start)
    if checker is None:
        checker = LogChecker(view, signed)
    return checker.finish()


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
