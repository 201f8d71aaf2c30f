"""The Merkle log: RFC 9162 §2.1 hashing, proofs, and signed C2SP-style checkpoints.

    proof = inclusion_proof(leaves, index=5, size=len(leaves))
    verify_inclusion(leaves[5], 5, len(leaves), proof, root_from_leaves(leaves))  # or ProofError

Leaf = SHA-256(0x00 ‖ envelope bytes), node = SHA-256(0x01 ‖ left ‖ right), so any Certificate
Transparency style verifier computes the same roots. Proofs are built from the list of leaf
hashes alone and verified from hashes alone: no database is needed on either side.
Verification returns None or raises ProofError (SignatureError for checkpoint signatures).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from lineage_platform.canonical import loads_strict
from lineage_platform.errors import ProofError, RecordError, SignatureError, shown
from lineage_platform.note import ALG_ED25519, Note, NoteSignature, NoteVerifier, key_hash
from lineage_platform.signing import PublicKey, SigningKey, TrustStore, b64decode_strict

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_CHECKPOINT_BYTES",
    "Checkpoint",
    "CompactRange",
    "SignedCheckpoint",
    "consistency_proof",
    "consistency_proof_with",
    "inclusion_proof",
    "inclusion_proof_with",
    "leaf_hash",
    "microbenchmark",
    "node_hash",
    "root_from_leaves",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 ‖ data): the prefix keeps a leaf from ever equalling an interior node."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 ‖ left ‖ right)."""
    return _sha256(b"\x01" + left + right).digest()


def _check_hash(h: object, what: str) -> bytes:
    if not isinstance(h, bytes) or len(h) != HASH_SIZE:
        raise ProofError(f"{what}: expected a {HASH_SIZE}-byte hash")
    return h


def _check_leaves(leaf_hashes: Sequence[bytes], size: int) -> None:
    if len(leaf_hashes) < size:
        raise ProofError(f"tree size {size} exceeds the {len(leaf_hashes)} leaves given")


def _largest_pow2_below(n: int) -> int:
    """k with k < n <= 2k: the RFC 9162 split point (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaves(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) per RFC 9162 §2.1.1.

    Computed bottom-up: pairing neighbours level by level and carrying an odd last node up
    unchanged builds exactly the tree the RFC's split at the largest power of two < n defines.
    """
    level = list(leaf_hashes)
    for i, h in enumerate(level):
        _check_hash(h, f"leaf {i}")
    if not level:
        return EMPTY_ROOT
    sha = _sha256
    while len(level) > 1:
        odd = level[-1] if len(level) & 1 else None
        it = iter(level)
        level = [sha(b"\x01" + left + right).digest() for left, right in zip(it, it, strict=False)]
        if odd is not None:
            level.append(odd)
    return level[0]


class CompactRange:
    """The Merkle frontier of a growing log: one subtree root per set bit of `size`.

    Mutable on purpose: the store keeps one, appends each batch's leaf hashes, persists
    `to_hashes()` with the size, and never has to re-read old leaves to get the next root.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @classmethod
    def from_hashes(cls, size: int, hashes: Sequence[bytes]) -> CompactRange:
        """Restore a persisted frontier (largest subtree first, as `to_hashes` returns it)."""
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ProofError(f"compact range: size must be a non-negative integer, got {size!r}")
        if len(hashes) != size.bit_count():
            raise ProofError(
                f"compact range: size {size} needs {size.bit_count()} hashes, got {len(hashes)}"
            )
        cr = cls()
        cr._size = size
        cr._hashes = [_check_hash(h, f"compact range hash {i}") for i, h in enumerate(hashes)]
        return cr

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf: bytes) -> None:
        _check_hash(leaf, f"leaf {self._size}")
        self._push(leaf, 1)

    def extend(self, leaves: Iterable[bytes]) -> None:
        """Append many leaves. Each complete subtree that starts where the range ends is
        hashed level by level, and joins the range as one node: the same hashes as leaf by
        leaf, with a fraction of the Python work (append and verify run through here)."""
        batch = list(leaves)
        if set(map(type, batch)) - {bytes} or set(map(len, batch)) - {HASH_SIZE}:  # in C
            for i, leaf in enumerate(batch):
                _check_hash(leaf, f"leaf {self._size + i}")  # names the first bad one
        sha256 = _sha256
        done = 0
        while done < len(batch):
            aligned = self._size & -self._size or len(batch)  # largest subtree that fits here
            block = 1 << (min(aligned, len(batch) - done).bit_length() - 1)
            level = batch[done : done + block]
            while len(level) > 1:
                level = [
                    sha256(b"\x01" + left + right).digest()
                    for left, right in zip(level[::2], level[1::2], strict=True)
                ]
            self._push(level[0], block)
            done += block

    def _push(self, root: bytes, width: int) -> None:
        """Add the root of a complete subtree of `width` (a power of two) leaves, which starts
        at `size` (a multiple of `width`)."""
        hashes = self._hashes
        hashes.append(root)
        s = self._size // width
        while s & 1:  # each trailing 1 bit is a complete subtree that now has a sibling
            right = hashes.pop()
            hashes[-1] = node_hash(hashes[-1], right)
            s >>= 1
        self._size += width

    def root(self) -> bytes:
        hashes = self._hashes
        if not hashes:
            return EMPTY_ROOT
        r = hashes[-1]
        for h in reversed(hashes[:-1]):
            r = node_hash(h, r)
        return r

    def to_hashes(self) -> list[bytes]:
        return list(self._hashes)

    def copy(self) -> CompactRange:
        return CompactRange.from_hashes(self._size, self._hashes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompactRange):
            return NotImplemented
        return self._size == other._size and self._hashes == other._hashes

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size}, root={self.root().hex()[:12]}…)"


#: MTH of the leaves [lo, hi): what the proofs below need, from leaves, tiles or a store.
Subtree = Callable[[int, int], bytes]


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """PATH(index, D[size]) per RFC 9162 §2.1.3.1, ordered from the leaf upward."""
    if not 0 <= index < size:
        raise ProofError(f"inclusion proof: index {index} is not in a tree of size {size}")
    _check_leaves(leaf_hashes, size)
    return inclusion_proof_with(lambda lo, hi: root_from_leaves(leaf_hashes[lo:hi]), index, size)


def inclusion_proof_with(subtree: Subtree, index: int, size: int) -> list[bytes]:
    """`inclusion_proof` from a subtree-hash function (e.g. tiles: O(log n) reads)."""
    if not 0 <= index < size:
        raise ProofError(f"inclusion proof: index {index} is not in a tree of size {size}")
    path: list[bytes] = []
    lo, hi, m = 0, size, index
    while hi - lo > 1:
        k = _largest_pow2_below(hi - lo)
        if m < k:
            path.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            path.append(subtree(lo, lo + k))
            lo, m = lo + k, m - k
    path.reverse()
    return path


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old_size, D[new_size]) per RFC 9162 §2.1.4.1; empty when old_size is 0 or equal."""
    if not 0 <= old_size <= new_size:
        raise ProofError(f"consistency proof: need 0 <= old {old_size} <= new {new_size}")
    _check_leaves(leaf_hashes, new_size)
    return consistency_proof_with(
        lambda lo, hi: root_from_leaves(leaf_hashes[lo:hi]), old_size, new_size
    )


def consistency_proof_with(subtree: Subtree, old_size: int, new_size: int) -> list[bytes]:
    """`consistency_proof` from a subtree-hash function."""
    if not 0 <= old_size <= new_size:
        raise ProofError(f"consistency proof: need 0 <= old {old_size} <= new {new_size}")
    if old_size in (0, new_size):
        return []
    path: list[bytes] = []
    lo, hi, m, complete = 0, new_size, old_size, True
    while True:
        if m == hi - lo:
            if not complete:  # the old tree's root is not derivable from what precedes: add it
                path.append(subtree(lo, hi))
            break
        k = _largest_pow2_below(hi - lo)
        if m <= k:
            path.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            path.append(subtree(lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    path.reverse()
    return path


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 §2.1.3.2. Returns None, or raises ProofError."""
    what = f"inclusion of leaf {index} in tree of size {size}"
    if not 0 <= index < size:
        raise ProofError(f"{what}: index out of range")
    _check_hash(leaf, f"{what}: leaf")
    _check_hash(root, f"{what}: root")
    fn, sn = index, size - 1
    r = leaf
    for i, p in enumerate(proof):
        _check_hash(p, f"{what}: proof[{i}]")
        if sn == 0:
            raise ProofError(f"{what}: proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"{what}: proof is too short")
    if r != root:
        raise ProofError(f"{what}: computed root does not match")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 §2.1.4.2: the tree of `new_size` extends the tree of `old_size` unchanged."""
    what = f"consistency of tree size {old_size} with {new_size}"
    if not 0 <= old_size <= new_size:
        raise ProofError(f"{what}: sizes out of order")
    _check_hash(old_root, f"{what}: old root")
    _check_hash(new_root, f"{what}: new root")
    for i, p in enumerate(proof):
        _check_hash(p, f"{what}: proof[{i}]")
    if old_size == 0 and old_root != EMPTY_ROOT:
        raise ProofError(f"{what}: the old root is not the empty-tree root")
    if old_size == new_size:
        if proof:
            raise ProofError(f"{what}: proof must be empty for equal sizes")
        if old_root != new_root:
            raise ProofError(f"{what}: roots differ for equal sizes")
        return
    if old_size == 0:  # every tree extends the empty tree
        if proof:
            raise ProofError(f"{what}: proof must be empty from size 0")
        return
    if not proof:
        raise ProofError(f"{what}: proof is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError(f"{what}: proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"{what}: proof is too short")
    if fr != old_root:
        raise ProofError(f"{what}: proof does not lead to the old root")
    if sr != new_root:
        raise ProofError(f"{what}: proof does not lead to the new root")


# --- checkpoints --------------------------------------------------------------------------------

_ORIGIN_FORBIDDEN = re.compile(r"[\x00-\x20\x7f\ud800-\udfff]")
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A tree head: origin (which log), size and root; optionally the time it was taken.

    `body()` is a C2SP tlog-checkpoint note body; the time, when set, is an extension line
    `time <RFC 3339 UTC>` so that it is signed too.
    """

    origin: str
    tree_size: int
    root_hash: bytes
    timestamp: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin:
            raise RecordError("checkpoint.origin: expected a non-empty string")
        if _ORIGIN_FORBIDDEN.search(self.origin):
            raise RecordError("checkpoint.origin: must not contain spaces or control characters")
        size = self.tree_size
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise RecordError("checkpoint.tree_size: expected a non-negative integer")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != HASH_SIZE:
            raise RecordError(f"checkpoint.root_hash: expected {HASH_SIZE} bytes")
        if self.timestamp is not None and (
            not isinstance(self.timestamp, str) or not _TIMESTAMP.fullmatch(self.timestamp)
        ):
            raise RecordError("checkpoint.timestamp: expected RFC 3339 UTC ending in Z")

    def body(self) -> bytes:
        text = f"{self.origin}\n{self.tree_size}\n{base64.b64encode(self.root_hash).decode()}\n"
        if self.timestamp is not None:
            text += f"time {self.timestamp}\n"
        return text.encode("utf-8")

    def describe(self) -> str:
        return f"checkpoint {self.origin} size {self.tree_size}"

    @classmethod
    def from_body(cls, text: bytes) -> Checkpoint:
        """Parse a note body: origin, size, base64 root, then at most our `time` extension."""
        try:
            lines = text.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            raise RecordError("checkpoint: not UTF-8") from None
        if len(lines) < 4 or lines[-1] != "":
            raise RecordError("checkpoint: expected origin, size and root lines")
        origin, size, root_b64, *extensions = lines[:-1]
        if not re.fullmatch(r"0|[1-9][0-9]{0,18}", size):
            raise RecordError("checkpoint: tree size is not a decimal without leading zeros")
        root = b64decode_strict(root_b64, "checkpoint.root_hash")
        timestamp = None
        for line in extensions:
            if line.startswith("time ") and timestamp is None:
                timestamp = line[len("time ") :]
            else:
                raise RecordError(f"checkpoint: unknown extension line {shown(line[:40])}")
        cp = cls(origin, int(size), root, timestamp)
        if cp.body() != text:
            raise RecordError("checkpoint: the body is not in canonical form")
        return cp


_SIGNED_KEYS = ("keyid", "origin", "root_hash", "signature", "tree_size")
#: A signed checkpoint is a few hundred bytes; refuse anything far larger before parsing it.
MAX_CHECKPOINT_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A checkpoint with the Ed25519 signature over its note body and the signer's keyid."""

    checkpoint: Checkpoint
    keyid: str
    signature: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.checkpoint, Checkpoint):
            raise RecordError("checkpoint: expected a Checkpoint")
        if not isinstance(self.keyid, str) or not self.keyid:
            raise RecordError("keyid: expected a non-empty string")
        if not isinstance(self.signature, bytes) or len(self.signature) != 64:
            raise RecordError("signature: expected 64 bytes")

    @classmethod
    def sign(cls, checkpoint: Checkpoint, key: SigningKey) -> SignedCheckpoint:
        return cls(checkpoint, key.keyid, key.sign(checkpoint.body()))

    def verify(self, trust: TrustStore) -> None:
        """Return None if a trusted key signed exactly this checkpoint, else SignatureError."""
        what = self.checkpoint.describe()
        trust.get(self.keyid, what).verify(self.signature, self.checkpoint.body(), what)

    def to_note(self, public_key: PublicKey) -> bytes:
        """The C2SP signed note: the body, a blank line and `— <origin> base64(hash ‖ sig)`.

        The key name is the origin (as tlog-checkpoint recommends); the signature is the same
        Ed25519 signature over the same body as in the JSON form, so either form converts.
        """
        if public_key.keyid != self.keyid:
            raise SignatureError(f"{self.checkpoint.describe()}: not signed by that key")
        origin = self.checkpoint.origin
        sig = NoteSignature(origin, key_hash(origin, ALG_ED25519, public_key.raw), self.signature)
        return Note(self.checkpoint.body(), (sig,)).to_bytes()

    @classmethod
    def from_note(cls, data: bytes, trust: TrustStore) -> SignedCheckpoint:
        """Parse a signed-note checkpoint and verify the log's signature (key name = origin)
        with a trusted key; other signature lines (cosignatures) are left to the caller."""
        note = Note.parse(data)
        checkpoint = Checkpoint.from_body(note.text)
        what = checkpoint.describe()
        for public in trust.keys.values():
            verifier = NoteVerifier(checkpoint.origin, public)
            if any(verifier.matches(s) for s in note.signatures):
                sig = verifier.verify(note)
                return cls(checkpoint, public.keyid, sig.signature)
        raise SignatureError(f"{what}: no signature by a trusted key named {checkpoint.origin}")

    @classmethod
    def parse(cls, data: bytes, trust: TrustStore) -> SignedCheckpoint:
        """Either form (JSON or signed note), verified with a trusted key."""
        if data.lstrip().startswith(b"{"):
            signed = cls.from_json(data.strip())
            signed.verify(trust)
            return signed
        return cls.from_note(data, trust)

    def to_json(self) -> bytes:
        cp = self.checkpoint
        obj: dict[str, Any] = {
            "origin": cp.origin,
            "tree_size": cp.tree_size,
            "root_hash": cp.root_hash.hex(),
            "keyid": self.keyid,
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }
        if cp.timestamp is not None:
            obj["timestamp"] = cp.timestamp
        return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("ascii")

    @classmethod
    def from_json(cls, data: bytes) -> SignedCheckpoint:
        if len(data) > MAX_CHECKPOINT_BYTES:
            raise RecordError(f"checkpoint: {len(data)} bytes exceeds {MAX_CHECKPOINT_BYTES}")
        obj = loads_strict(data, "checkpoint")
        if not isinstance(obj, dict):
            raise RecordError("checkpoint: expected a JSON object")
        for k in obj:
            if k not in _SIGNED_KEYS and k != "timestamp":
                raise RecordError(f"checkpoint.{shown(k)}: unknown key")
        for k in _SIGNED_KEYS:
            if k not in obj:
                raise RecordError(f"checkpoint.{k}: missing")
        root_hex = obj["root_hash"]
        if not isinstance(root_hex, str) or not re.fullmatch(r"[0-9a-f]{64}", root_hex):
            raise RecordError("checkpoint.root_hash: expected 64 lowercase hex characters")
        checkpoint = Checkpoint(
            origin=obj["origin"],
            tree_size=obj["tree_size"],
            root_hash=bytes.fromhex(root_hex),
            timestamp=obj.get("timestamp"),
        )
        signature = b64decode_strict(obj["signature"], "checkpoint.signature")
        return cls(checkpoint, obj["keyid"], signature)


# --- micro-benchmark ----------------------------------------------------------------------------


def microbenchmark(n: int = 2000) -> dict[str, float]:
    """Microseconds per record for each step of an append, and for verifying one.

    A quick, dependency-free sanity check (`python -c "from lineage_platform.log import
    microbenchmark as m; print(m())"`); the real benchmarks live in benchmarks/.
    """
    from lineage_platform.records import AttributionRecord, Contributor, RunRef
    from lineage_platform.signing import Envelope, sign_envelope, verify_envelope

    key = SigningKey.generate()
    trust = TrustStore.of(key)
    digest = "ab" * 32
    records = [
        AttributionRecord(
            kind="dataset",
            asset="datanet/part",
            sha256=digest,
            recorded_at="2026-11-24T20:00:00.000000Z",
            run=RunRef("dagster", "run", i),
            contributors=(Contributor("alice", rows=10, sha256=digest),),
        )
        for i in range(n)
    ]
    timings: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        start = time.perf_counter()
        out = fn()
        timings[name] = (time.perf_counter() - start) / n * 1e6
        return out

    payloads = timed("to_bytes_us", lambda: [r.to_bytes() for r in records])
    envs = timed("sign_envelope_us", lambda: [sign_envelope(p, key) for p in payloads])
    blobs = timed("envelope_to_json_us", lambda: [e.to_json() for e in envs])
    cr = CompactRange()
    timed("leaf_hash_and_append_us", lambda: cr.extend(leaf_hash(b) for b in blobs))
    parsed = timed("envelope_from_json_us", lambda: [Envelope.from_json(b) for b in blobs])

    def verify_all() -> None:
        for e in parsed:
            verify_envelope(e, trust)

    timed("verify_envelope_us", verify_all)
    timed("record_from_bytes_us", lambda: [AttributionRecord.from_bytes(e.payload) for e in parsed])
    timings["append_total_us"] = (
        timings["to_bytes_us"]
        + timings["sign_envelope_us"]
        + timings["envelope_to_json_us"]
        + timings["leaf_hash_and_append_us"]
    )
    return timings
