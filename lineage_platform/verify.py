"""Offline verification of the whole log: signatures, parses, references, Merkle root, checkpoints.

    report = verify_log(LogView(envelopes=[...], checkpoints=[...]), trust)   # raises on failure
    print(report.summary())   # "OK: 1204 records, 37 checkpoints, root 3f2a…, keys ab12…"

Pure core: takes bytes, returns a report or raises `VerificationError` naming the first bad
index. The CLI feeds it from DuckDB (`lineage verify`) or from an export (`--bundle DIR`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from lineage_platform.errors import LineageError, VerificationError
from lineage_platform.log import CompactRange, SignedCheckpoint, leaf_hash
from lineage_platform.records import PAYLOAD_TYPE, AttributionRecord
from lineage_platform.signing import Envelope, TrustStore, verify_envelope

# Below this many records a process pool costs more than it saves.
PARALLEL_MIN = 2_000


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
    inputs: tuple[tuple[str, str, int | None], ...]
    supersedes: int | None


@dataclass(frozen=True, slots=True)
class LogView:
    envelopes: Sequence[bytes]
    checkpoints: Sequence[bytes]  # signed checkpoint JSON, ascending tree size
    derived: Sequence[Derived] | None = None  # a store's denormalized columns, if any
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
    what = f"record {index}"
    try:
        env = Envelope.from_json(data)
        if env.to_json() != data:
            raise VerificationError(f"{what}: stored bytes are not the canonical envelope", index)
        if env.payload_type != PAYLOAD_TYPE:
            raise VerificationError(f"{what}: payloadType {env.payload_type!r}", index)
        verify_envelope(env, trust, what=what)
        record = AttributionRecord.from_bytes(env.payload)
    except VerificationError:
        raise
    except LineageError as exc:
        msg = str(exc)
        raise VerificationError(msg if msg.startswith(what) else f"{what}: {msg}", index) from exc
    keyid = next(s.keyid for s in env.signatures if s.keyid in trust.keys)
    derived = Derived(
        leaf_hash=leaf_hash(data),
        record_digest=hashlib.sha256(env.payload).hexdigest(),
        idem_key=record.idempotency_key(),
        kind=record.kind,
        asset=record.asset,
        partition=record.partition,
        sha256=record.sha256,
        keyid=keyid,
        recorded_at=record.recorded_at,
    )
    inputs = tuple((i.asset, i.sha256, i.log_index) for i in record.inputs)
    return Checked(derived, inputs, record.supersedes)


def _check_chunk(args: tuple[int, Sequence[bytes], bytes]) -> list[Checked]:
    start, chunk, trust_json = args
    trust = TrustStore.from_json(trust_json)
    return [check_envelope(start + i, data, trust) for i, data in enumerate(chunk)]


def _check_all(
    envelopes: Sequence[bytes],
    trust: TrustStore,
    workers: int,
    progress: Callable[[int], None] | None,
) -> list[Checked]:
    n = len(envelopes)
    if workers <= 1 or n < PARALLEL_MIN:
        out = []
        for i, data in enumerate(envelopes):
            out.append(check_envelope(i, data, trust))
            if progress and i % 1000 == 999:
                progress(1000)
        return out
    size = max(500, n // (workers * 8))
    jobs = [(s, envelopes[s : s + size], trust.to_json()) for s in range(0, n, size)]
    out = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for (_, chunk, _), done in zip(jobs, pool.map(_check_chunk, jobs), strict=True):
            out.extend(done)
            if progress:
                progress(len(chunk))
    return out


def verify_log(
    view: LogView,
    trust: TrustStore,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Every check, in log order; the first failure raises with its index."""
    n = len(view.envelopes)
    if view.indices is not None:
        for pos, idx in enumerate(view.indices):
            if idx != pos:
                raise VerificationError(f"record {pos}: stored index {idx}, expected {pos}", pos)
    checked = _check_all(view.envelopes, trust, workers or os.cpu_count() or 1, progress)

    seen_keys: dict[str, int] = {}
    kinds: dict[str, int] = {}
    for i, item in enumerate(checked):
        d = item.derived
        if view.derived is not None:
            stored = view.derived[i]
            for name in Derived.__slots__:
                if getattr(stored, name) != getattr(d, name):
                    raise VerificationError(
                        f"record {i}: stored column {name} does not match the signed record", i
                    )
        if d.idem_key in seen_keys:
            raise VerificationError(
                f"record {i}: replays record {seen_keys[d.idem_key]} ({d.idem_key})", i
            )
        seen_keys[d.idem_key] = i
        kinds[d.kind] = kinds.get(d.kind, 0) + 1
        for asset, sha, ref in item.inputs:
            if ref is None:
                continue
            if ref >= i:
                raise VerificationError(f"record {i}: input {asset} points forward to {ref}", i)
            target = checked[ref].derived
            if target.asset != asset or target.sha256 != sha:
                raise VerificationError(
                    f"record {i}: input {asset} names record {ref}, which attests "
                    f"{target.asset} sha256 {target.sha256[:12]}…, not {sha[:12]}…",
                    i,
                )
        if item.supersedes is not None and item.supersedes >= i:
            raise VerificationError(f"record {i}: supersedes {item.supersedes}, not earlier", i)

    if not view.checkpoints:
        if n:
            raise VerificationError(f"no signed checkpoint covers the {n} records", 0)
        return VerifyReport(0, 0, CompactRange().root().hex(), ())
    signed = []
    for c, data in enumerate(view.checkpoints):
        try:
            parsed = SignedCheckpoint.from_json(data)
            parsed.verify(trust)
        except LineageError as exc:
            raise VerificationError(f"checkpoint {c}: {exc}", None) from exc
        signed.append(parsed)
    frontiers = dict(view.frontiers or [])
    sizes = [s.checkpoint.tree_size for s in signed]
    if sizes != sorted(set(sizes)):
        raise VerificationError("checkpoints are not in strictly increasing tree size", None)
    if sizes[-1] != n:
        raise VerificationError(
            f"latest checkpoint covers {sizes[-1]} records but the log holds {n}",
            min(n, sizes[-1]),
        )
    rng = CompactRange()
    pending = iter(signed)
    cp: SignedCheckpoint | None = next(pending)
    for i in range(n + 1):
        while cp is not None and cp.checkpoint.tree_size == i:
            if rng.root() != cp.checkpoint.root_hash:
                raise VerificationError(
                    f"record {max(i - 1, 0)}: Merkle root at size {i} does not match the signed "
                    "checkpoint (a record was changed, removed, inserted or reordered)",
                    max(i - 1, 0),
                )
            if i in frontiers and frontiers[i] != b"".join(rng.to_hashes()):
                raise VerificationError(f"checkpoint at size {i}: stored frontier is wrong", None)
            cp = next(pending, None)
        if i < n:
            rng.append(checked[i].derived.leaf_hash)
    keyids = tuple(sorted({c.derived.keyid for c in checked} | {s.keyid for s in signed}))
    return VerifyReport(n, len(signed), signed[-1].checkpoint.root_hash.hex(), keyids, kinds)
