"""What an auditor runs: verify the stored log or an exported bundle, export it, prove inclusion.

    report = verify_store(Store(path), ring.trust())      # raises VerificationError
    export_bundle(Store(path), ring.trust(), Path("out")) # envelopes, checkpoint, keys
    verify_bundle(Path("out"))                            # no database, no project code needed
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lineage_platform.errors import RecordError, VerificationError
from lineage_platform.log import SignedCheckpoint, inclusion_proof, verify_inclusion
from lineage_platform.signing import TrustStore
from lineage_platform.store import Store
from lineage_platform.verify import Derived, LogView, VerifyReport, verify_log

ENVELOPES = "envelopes.jsonl"
CHECKPOINT = "checkpoint.json"
KEYS = "keys.json"


def verify_store(
    store: Store, trust: TrustStore, progress: Callable[[int], None] | None = None
) -> VerifyReport:
    """Read-only: every envelope, every derived column, every checkpoint and its frontier."""
    table, _ = store.read_log()
    cols = table.to_pydict()
    derived = [
        Derived(bytes(lh), rd, ik, k, a, p, s, kid, ra)
        for lh, rd, ik, k, a, p, s, kid, ra in zip(
            cols["leaf_hash"],
            cols["record_digest"],
            cols["idem_key"],
            cols["kind"],
            cols["asset"],
            cols["partition"],
            cols["sha256"],
            cols["keyid"],
            cols["recorded_at"],
            strict=True,
        )
    ]
    rows = store.read_checkpoint_rows()
    view = LogView(
        envelopes=[bytes(e) for e in cols["envelope"]],
        checkpoints=[cp for _, cp, _ in rows],
        derived=derived,
        frontiers=[(size, frontier) for size, _, frontier in rows],
        indices=cols["idx"],
    )
    report = verify_log(view, trust, progress=progress)
    for size, cp_json, _ in rows:
        if SignedCheckpoint.from_json(cp_json).checkpoint.tree_size != size:
            raise VerificationError(f"checkpoint row {size}: tree size column was edited", None)
    from lineage_platform.settlement import verify_settlements

    return dataclasses.replace(report, epochs=verify_settlements(store))


def export_bundle(store: Store, trust: TrustStore, out: Path) -> int:
    """Exactly the stored bytes, so the exported leaves hash to the signed root."""
    table, _ = store.read_log()
    latest = store.latest_checkpoint()
    if latest is None:
        raise VerificationError("the log is empty: nothing to export", None)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ENVELOPES, "wb") as fh:
        for env in table.column("envelope").to_pylist():
            fh.write(bytes(env) + b"\n")
    (out / CHECKPOINT).write_bytes(latest + b"\n")
    (out / KEYS).write_bytes(trust.to_json() + b"\n")
    return int(table.num_rows)


def read_bundle(folder: Path) -> tuple[LogView, TrustStore]:
    try:
        lines = (folder / ENVELOPES).read_bytes().split(b"\n")
        checkpoint = (folder / CHECKPOINT).read_bytes().strip()
        trust = TrustStore.from_json((folder / KEYS).read_bytes().strip())
    except FileNotFoundError as exc:
        raise RecordError(f"bundle {folder}: missing {Path(exc.filename).name}") from exc
    if lines and lines[-1] == b"":
        lines.pop()
    return LogView(envelopes=lines, checkpoints=[checkpoint]), trust


def verify_bundle(
    folder: Path, trust: TrustStore | None = None, progress: Callable[[int], None] | None = None
) -> VerifyReport:
    """`trust` overrides the bundle's own keys.json (an auditor's pinned keys)."""
    view, bundled = read_bundle(folder)
    return verify_log(view, trust or bundled, progress=progress)


@dataclass(frozen=True, slots=True)
class InclusionProof:
    index: int
    tree_size: int
    leaf_hash: bytes
    path: tuple[bytes, ...]
    checkpoint: SignedCheckpoint

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "tree_size": self.tree_size,
            "leaf_hash": self.leaf_hash.hex(),
            "proof": [p.hex() for p in self.path],
            "checkpoint": json.loads(self.checkpoint.to_json()),
        }


def prove_inclusion(store: Store, trust: TrustStore, index: int) -> InclusionProof:
    """An RFC 9162 inclusion proof against the latest signed checkpoint, checked before return."""
    table, _ = store.read_log()
    latest = store.latest_checkpoint()
    if latest is None or not 0 <= index < table.num_rows:
        raise VerificationError(f"no record {index} in a log of {table.num_rows}", index)
    checkpoint = SignedCheckpoint.from_json(latest)
    checkpoint.verify(trust)
    leaves = [bytes(h) for h in table.column("leaf_hash").to_pylist()]
    size = checkpoint.checkpoint.tree_size
    path = inclusion_proof(leaves[:size], index, size)
    verify_inclusion(leaves[index], index, size, path, checkpoint.checkpoint.root_hash)
    return InclusionProof(index, size, leaves[index], tuple(path), checkpoint)
