"""What a verifier remembers between runs: the newest checkpoint it verified, per log.

    known = KnownLogs.from_env(os.environ)        # $LINEAGE_VERIFIER_STATE, else XDG state
    print(check_store(known, store, trust).describe())   # or RollbackError, both sizes named

Like SSH's known_hosts or Go's checksum-database cache, this lives with the *verifier* (by
default `$XDG_STATE_HOME/lineage/known`, else `~/.local/state/lineage/known`), never under
`LINEAGE_HOME`: whoever can rewrite the log's folder cannot rewrite what its readers saw. On
the next run the log must prove it grew from the remembered tree (an RFC 9162 consistency
proof, built from the log's leaf hashes and checked against both signed roots); a log that
shrank or forked raises `RollbackError` naming both sizes. An entry also lists the epochs
whose settlement records the remembered tree holds, so a settler refuses to settle them again.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path

import pyarrow as pa

from lineage_platform.errors import ConfigError, ProofError, RollbackError
from lineage_platform.log import (
    SignedCheckpoint,
    consistency_proof,
    leaf_hash,
    verify_consistency,
)
from lineage_platform.signing import Envelope, TrustStore
from lineage_platform.stores.base import LogStore

STATE_ENV = "LINEAGE_VERIFIER_STATE"
CONFIG_ENV = "LINEAGE_USER_CONFIG"

#: The first n leaf hashes of the log being checked (the proof is checked, not trusted).
LeafHashes = Callable[[int], Sequence[bytes]]


def default_state_dir(environ: Mapping[str, str]) -> Path:
    """$LINEAGE_VERIFIER_STATE, else $XDG_STATE_HOME/lineage/known, else ~/.local/state/…"""
    if environ.get(STATE_ENV):
        return Path(environ[STATE_ENV])
    base = environ.get("XDG_STATE_HOME") or str(Path(environ.get("HOME", "~")) / ".local/state")
    return Path(base).expanduser() / "lineage" / "known"


def user_config_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The user's own config (trusted keys, witness policy), outside any state folder:
    $LINEAGE_USER_CONFIG, else $XDG_CONFIG_HOME/lineage, else ~/.config/lineage."""
    env = os.environ if environ is None else environ
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")) / ".config")
    return Path(base).expanduser() / "lineage"


@dataclass(frozen=True, slots=True)
class LogKey:
    """Which log: its origin, and where it is read from (`store:<url>`), or for an exported
    copy, whose folder may move, `bundle:<keyid of its first record's signer>`: every log of
    this project has the same origin, so an auditor of several deployments tells them apart
    by the key their history starts with."""

    origin: str
    scope: str = "bundle"

    def filename(self) -> str:
        # A store is known by where it is, whatever origin it now claims (an emptied log has
        # none); an exported copy only by its origin.
        name = self.scope if self.scope.startswith("store:") else f"{self.origin}\n{self.scope}"
        return sha256(name.encode()).hexdigest()[:32] + ".json"


@dataclass(frozen=True, slots=True)
class Remembered:
    key: LogKey
    tree_size: int
    root: bytes
    checkpoint: bytes  # the signed checkpoint as verified (JSON or note)
    keyid: str
    settled: dict[str, int] = field(default_factory=dict)  # epoch -> settlement record index

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "origin": self.key.origin,
                "scope": self.key.scope,
                "tree_size": self.tree_size,
                "root": self.root.hex(),
                "checkpoint": self.checkpoint.decode("utf-8"),
                "keyid": self.keyid,
                "settled": dict(sorted(self.settled.items())),
            },
            indent=1,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes, where: Path) -> Remembered:
        try:
            obj = json.loads(data)
            return cls(
                LogKey(str(obj["origin"]), str(obj["scope"])),
                int(obj["tree_size"]),
                bytes.fromhex(obj["root"]),
                str(obj["checkpoint"]).encode("utf-8"),
                str(obj["keyid"]),
                {str(k): int(v) for k, v in dict(obj.get("settled") or {}).items()},
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{where}: not a remembered checkpoint ({exc})") from exc


def check_growth(
    old_size: int, old_root: bytes, new: SignedCheckpoint, leaves: LeafHashes, what: str
) -> None:
    """The log whose signed checkpoint is `new` extends the tree (old_size, old_root).

    Builds the consistency proof from the log's leaf hashes and verifies it against both
    roots; `RollbackError` (one line, both sizes) when the log shrank or forked.
    """
    size, root = new.checkpoint.tree_size, new.checkpoint.root_hash
    if size < old_size:
        raise RollbackError(
            f"{what}: the log shrank from size {old_size} (seen before) to size {size}"
        )
    try:
        hashes = list(leaves(size)) if old_size else []
        proof = consistency_proof(hashes, old_size, size) if old_size else []
        verify_consistency(old_size, size, old_root, root, proof)
    except ProofError as exc:
        raise RollbackError(
            f"{what}: the log at size {size} is not consistent with size {old_size} seen "
            f"before (forked or rewritten: {exc})"
        ) from exc


class KnownLogs:
    """A folder of remembered checkpoints, one JSON file per log, written atomically."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KnownLogs:
        return cls(default_state_dir(os.environ if environ is None else environ))

    def get(self, key: LogKey) -> Remembered | None:
        path = self.folder / key.filename()
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
        return Remembered.from_json(data, path)

    def put(self, entry: Remembered) -> None:
        path = self.folder / entry.key.filename()
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".known.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(entry.to_json())
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot remember the checkpoint ({exc.strerror})") from exc


@dataclass(frozen=True, slots=True)
class Seen:
    """What one check found: the log's checkpoint, and what was remembered before."""

    checkpoint: SignedCheckpoint | None
    before: Remembered | None
    remembered: bool

    def describe(self) -> str:
        if self.checkpoint is None:
            return "empty log: nothing to remember"
        size = self.checkpoint.checkpoint.tree_size
        if self.before is None:
            return f"first time this log is seen here: remembered size {size}"
        return f"consistent with size {self.before.tree_size} seen before (now {size})"


def store_key(store: LogStore, origin: str = "") -> LogKey:
    return LogKey(origin, f"store:{store.describe()}")


def read_store_tree(
    store: LogStore, size: int, table: pa.Table | None = None
) -> tuple[list[bytes], dict[str, int]]:
    """The first `size` leaf hashes as stored and the epochs of the settlement records there
    (from `table`, the log's entries, when the caller has read them already).

    Stored columns are not trusted: the leaf hashes only feed a proof checked against signed
    roots, and the epochs only ever make a settler refuse.
    """
    table = store.entries(0, size) if table is None else table.slice(0, size)
    leaves = [bytes(h) for h in table.column("leaf_hash").to_pylist()]
    settled: dict[str, int] = {}
    for idx, kind, partition in zip(
        table.column("idx").to_pylist(),
        table.column("kind").to_pylist(),
        table.column("partition").to_pylist(),
        strict=True,
    ):
        if kind == "settlement" and partition is not None:
            settled.setdefault(str(partition), int(idx))
    return leaves, settled


def check_store(
    known: KnownLogs,
    store: LogStore,
    trust: TrustStore,
    *,
    since: SignedCheckpoint | None = None,
    remember: bool = True,
    verified_root: bytes | None = None,
    table: pa.Table | None = None,
) -> Seen:
    """The store's latest signed checkpoint must extend what this verifier saw of it before
    (and `since`, an auditor's pinned checkpoint); then it is remembered, when `remember` and
    (if given) its root is the one a full verification just checked."""
    raw = store.latest_checkpoint() if store.exists() else None
    key = store_key(store)
    before = known.get(key)
    if raw is None:
        if before is not None and before.tree_size:
            raise RollbackError(
                f"log {before.key.origin} at {store.describe()}: the log shrank from size "
                f"{before.tree_size} (seen before) to size 0"
            )
        if since is not None and since.checkpoint.tree_size:
            raise RollbackError(
                f"log {since.checkpoint.origin}: the log shrank from size "
                f"{since.checkpoint.tree_size} (pinned) to size 0"
            )
        return Seen(None, before, False)
    signed = SignedCheckpoint.parse(raw, trust)
    origin = signed.checkpoint.origin
    key = store_key(store, origin)
    if before is not None and before.key.origin != origin:
        raise RollbackError(
            f"log at {store.describe()}: origin {origin} at size {signed.checkpoint.tree_size}, "
            f"but it was {before.key.origin} at size {before.tree_size} before"
        )
    cache: list[tuple[list[bytes], dict[str, int]]] = []

    def tree() -> tuple[list[bytes], dict[str, int]]:
        if not cache:
            cache.append(read_store_tree(store, signed.checkpoint.tree_size, table))
        return cache[0]

    def leaves(n: int) -> Sequence[bytes]:
        return tree()[0][:n]

    if since is not None:
        _check_pinned(since, signed, leaves)
    if before is not None:
        check_growth(before.tree_size, before.root, signed, leaves, f"log {origin}")
    stored = remember and (verified_root is None or verified_root == signed.checkpoint.root_hash)
    if stored:
        epochs = dict(before.settled) if before is not None else {}
        epochs.update(tree()[1])
        known.put(
            Remembered(
                key, signed.checkpoint.tree_size, signed.checkpoint.root_hash, raw,
                signed.keyid, epochs,
            )
        )
    return Seen(signed, before, stored)


def _check_pinned(
    since: SignedCheckpoint, signed: SignedCheckpoint, leaves: LeafHashes
) -> None:
    """An auditor's pinned checkpoint (--since): same log, and this one grew from it."""
    origin = signed.checkpoint.origin
    if since.checkpoint.origin != origin:
        raise RollbackError(
            f"pinned checkpoint is of log {since.checkpoint.origin}, this log is {origin}"
        )
    check_growth(
        since.checkpoint.tree_size, since.checkpoint.root_hash, signed, leaves,
        f"log {origin} (pinned checkpoint)",
    )


def check_bundle(
    known: KnownLogs,
    checkpoint: bytes,
    envelopes: Sequence[bytes],
    trust: TrustStore,
    *,
    since: SignedCheckpoint | None = None,
    remember: bool = True,
) -> Seen:
    """`check_store` for an exported copy (already verified): known by its origin and first
    signer, wherever it is read from, so an older copy after a newer one fails the same way as
    a store that shrank."""
    signed = SignedCheckpoint.parse(checkpoint, trust)
    origin = signed.checkpoint.origin
    first = Envelope.from_json(bytes(envelopes[0])).signatures[0].keyid if envelopes else ""
    key = LogKey(origin, f"bundle:{first}")
    hashes: list[bytes] = []

    def leaves(n: int) -> Sequence[bytes]:
        if not hashes:
            hashes.extend(leaf_hash(bytes(e)) for e in envelopes)
        return hashes[:n]

    if since is not None:
        _check_pinned(since, signed, leaves)
    before = known.get(key)
    if before is not None:
        check_growth(before.tree_size, before.root, signed, leaves, f"log {origin}")
    if remember and (before is None or signed.checkpoint.tree_size >= before.tree_size):
        known.put(
            Remembered(
                key, signed.checkpoint.tree_size, signed.checkpoint.root_hash, checkpoint,
                signed.keyid, dict(before.settled) if before is not None else {},
            )
        )
    return Seen(signed, before, remember)
