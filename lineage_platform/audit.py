"""What an auditor runs: verify the stored log or an exported bundle, export it, prove inclusion.

    report = verify_store(open_store(url), ring.trust())      # raises VerificationError
    export_bundle(open_store(url), ring.trust(), Path("out")) # envelopes, checkpoint, keys
    verify_bundle(Path("out"))                            # no database, no project code needed
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import pyarrow as pa

from lineage_platform.errors import ConfigError, KeyFileError, RecordError, VerificationError
from lineage_platform.log import SignedCheckpoint, inclusion_proof, leaf_hash, verify_inclusion
from lineage_platform.signing import TrustStore
from lineage_platform.stores import Store
from lineage_platform.verify import (
    DERIVED_FIELDS,
    Ahead,
    LogView,
    VerifyReport,
    ahead_size,
    check_origin,
    verify_log,
)

ENVELOPES = "envelopes.jsonl"
CHECKPOINT = "checkpoint.json"
KEYS = "keys.json"


class ArrowColumn(Sequence[Any]):
    """A snapshot column as a sequence whose slices become Python objects only when taken.

    Verification's forked workers slice their own chunks out of the parent's Arrow buffers:
    the parent converts nothing it does not read, and no worker writes (by reference counts)
    to pages it shares with the parent, which would copy them.
    """

    def __init__(self, column: pa.ChunkedArray) -> None:
        self._column = column

    def __len__(self) -> int:
        return len(self._column)

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self._column))
            values = self._column.slice(start, max(stop - start, 0)).to_pylist()
            return values if step == 1 else values[::step]
        if not -len(self._column) <= index < len(self._column):
            raise IndexError(index)
        return self._column[index].as_py()

    def __iter__(self) -> Iterator[Any]:
        return iter(self._column.to_pylist())


def verify_store(
    store: Store,
    trust: TrustStore,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
    project_dir: Path | None = None,
) -> VerifyReport:
    """Read-only: every envelope, every derived column, every checkpoint and its frontier.

    `project_dir`: the project whose training parts re-derive per-call settlements (issue 18)."""
    started: list[Ahead] = []

    def start(head: pa.Table) -> None:  # the first records, verified while the rest is read
        derived = [head.column(name).to_pylist() for name in DERIVED_FIELDS]
        started.append(Ahead(head.column("envelope").to_pylist(), derived, trust))

    try:
        # One connection: no append can fall in between.
        table, rows = store.read_snapshot(head=(lambda n: ahead_size(n, workers), start))
        view = LogView(
            envelopes=ArrowColumn(table.column("envelope")),
            checkpoints=[cp for _, cp, _ in rows],
            derived=[ArrowColumn(table.column(name)) for name in DERIVED_FIELDS],
            frontiers=[(size, frontier) for size, _, frontier in rows],
            indices=table.column("idx").to_pylist(),
        )
        report = verify_log(view, trust, workers, progress, started[0] if started else None)
    finally:
        for ahead in started:
            ahead.close()
    for size, cp_json, _ in rows:
        if SignedCheckpoint.from_json(cp_json).checkpoint.tree_size != size:
            raise VerificationError(f"checkpoint row {size}: tree size column was edited", None)
    from lineage_platform.settlement import verify_settlements

    return dataclasses.replace(report, epochs=verify_settlements(store, project_dir))


def export_bundle(store: Store, trust: TrustStore, out: Path) -> int:
    """Exactly the stored bytes, so the exported leaves hash to the signed root."""
    table, rows = store.read_snapshot()  # the envelopes and the checkpoint of one moment
    if not rows:
        raise VerificationError("the log is empty: nothing to export", None)
    latest = rows[-1][1]
    try:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / ENVELOPES, "wb") as fh:
            for env in table.column("envelope").to_pylist():
                fh.write(bytes(env) + b"\n")
        (out / CHECKPOINT).write_bytes(latest + b"\n")
        (out / KEYS).write_bytes(trust.to_json() + b"\n")
    except OSError as exc:
        raise ConfigError(f"cannot write the bundle to {out}: {exc.strerror or exc}") from exc
    return int(table.num_rows)


def read_bundle(folder: Path) -> tuple[LogView, TrustStore]:
    try:
        lines = (folder / ENVELOPES).read_bytes().split(b"\n")
        checkpoint = (folder / CHECKPOINT).read_bytes().strip()
        keys = (folder / KEYS).read_bytes().strip()
    except FileNotFoundError as exc:
        raise RecordError(f"bundle {folder}: missing {Path(exc.filename).name}") from exc
    except OSError as exc:
        raise RecordError(f"bundle {folder}: cannot read {exc.filename} ({exc.strerror})") from exc
    try:
        trust = TrustStore.from_json(keys)
    except KeyFileError as exc:
        raise KeyFileError(f"bundle {folder}: {KEYS}: {exc}") from exc
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
    """An RFC 9162 inclusion proof against the latest signed checkpoint, checked before return.

    Leaves are hashed from the stored envelopes, not read from the leaf_hash column, so the
    proof is about the bytes an auditor would export.
    """
    table, rows = store.read_snapshot()
    if not rows or not 0 <= index < table.num_rows:
        raise VerificationError(f"no record {index} in a log of {table.num_rows}", index)
    checkpoint = SignedCheckpoint.from_json(rows[-1][1])
    checkpoint.verify(trust)
    check_origin(checkpoint, "latest checkpoint")
    leaves = [leaf_hash(e) for e in table.column("envelope").to_pylist()]
    size = checkpoint.checkpoint.tree_size
    if index >= size:
        raise VerificationError(
            f"record {index}: not covered by the latest signed checkpoint (size {size})", index
        )
    path = inclusion_proof(leaves[:size], index, size)
    verify_inclusion(leaves[index], index, size, path, checkpoint.checkpoint.root_hash)
    return InclusionProof(index, size, leaves[index], tuple(path), checkpoint)
