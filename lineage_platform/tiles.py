"""The log as C2SP tlog-tiles: static files any client reads, and proofs built from them.

    export_tiles(store, trust, Path("tiles/"))         # checkpoint, tile/<L>/<N>, tile/entries/<N>
    tiles = TileDir.open(Path("tiles/"), trust)         # checks the checkpoint's signature
    proof = tiles.inclusion_proof(index)                # a few tile reads, no re-hashing

Layout (c2sp.org/tlog-tiles): `checkpoint` is the signed note; `tile/<L>/<N>` holds 256 hashes
of level L (level 0: leaf hashes; level L: roots of 256^L leaves), `tile/<L>/<N>.p/<W>` the W
hashes of a partial tile at the right edge; `tile/entries/<N>[.p/<W>]` holds the entries
themselves (the stored DSSE envelope bytes), each as a big-endian uint16 length and the bytes.
`<N>` is written in groups of three digits, all but the last prefixed with `x` (x001/x234/067).
Exports are incremental: after appends only the new and the right-edge partial tiles are
written, and the old ones are checked to lead to the new signed root first.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lineage_platform.errors import ProofError, RecordError, VerificationError
from lineage_platform.log import (
    EMPTY_ROOT,
    HASH_SIZE,
    SignedCheckpoint,
    consistency_proof_with,
    inclusion_proof_with,
    leaf_hash,
    node_hash,
)
from lineage_platform.signing import TrustStore
from lineage_platform.stores.base import LogStore

if TYPE_CHECKING:
    from lineage_platform.audit import InclusionProof

WIDTH = 256  # hashes (or entries) per full tile
TILE_HEIGHT = 8  # log2(WIDTH)
CHECKPOINT = "checkpoint"
MAX_ENTRY = 0xFFFF


def tile_path(level: int | str, index: int, width: int = WIDTH) -> str:
    """`tile/<L>/<N>[.p/<W>]` with N in x-prefixed groups of three digits."""
    digits = f"{index:d}"
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    path = "/".join([f"x{g}" for g in groups[:-1]] + [groups[-1]])
    suffix = "" if width == WIDTH else f".p/{width}"
    return f"tile/{level}/{path}{suffix}"


def _subtree_root(hashes: Sequence[bytes]) -> bytes:
    """Root of a complete subtree given its 2^k bottom hashes."""
    level = list(hashes)
    sha = hashlib.sha256
    while len(level) > 1:
        pairs = zip(level[::2], level[1::2], strict=True)
        level = [sha(b"\x01" + a + b).digest() for a, b in pairs]
    return level[0]


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def pack_entries(entries: Sequence[bytes]) -> bytes:
    out = []
    for e in entries:
        if len(e) > MAX_ENTRY:
            raise RecordError(f"entry of {len(e)} bytes: a tile bundle holds at most {MAX_ENTRY}")
        out.append(struct.pack(">H", len(e)) + e)
    return b"".join(out)


def unpack_entries(data: bytes, what: str) -> list[bytes]:
    entries, pos = [], 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise VerificationError(f"{what}: truncated entry length")
        (n,) = struct.unpack_from(">H", data, pos)
        if pos + 2 + n > len(data):
            raise VerificationError(f"{what}: truncated entry")
        entries.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return entries


class TileDir:
    """A tile tree of `size` leaves in a folder: read hashes, roots and proofs from it."""

    def __init__(self, folder: Path, size: int) -> None:
        self.folder = folder
        self.size = size
        self._cache: dict[tuple[int, int], list[bytes]] = {}

    @classmethod
    def open(cls, folder: Path, trust: TrustStore) -> tuple[TileDir, SignedCheckpoint]:
        """The folder's checkpoint (signature checked) and its tiles."""
        try:
            data = (folder / CHECKPOINT).read_bytes()
        except OSError as exc:
            raise VerificationError(f"{folder}: no readable checkpoint ({exc.strerror})") from exc
        signed = SignedCheckpoint.parse(data, trust)
        return cls(folder, signed.checkpoint.tree_size), signed

    def _tile(self, level: int, index: int) -> list[bytes]:
        key = (level, index)
        if key in self._cache:
            return self._cache[key]
        count = self.size >> (TILE_HEIGHT * level)
        width = min(WIDTH, count - index * WIDTH)
        if width <= 0:
            raise ProofError(f"tile {level}/{index} is beyond a tree of size {self.size}")
        path = self.folder / tile_path(level, index, width)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ProofError(f"{path}: cannot read ({exc.strerror})") from exc
        if len(data) != width * HASH_SIZE:
            raise ProofError(f"{path}: {len(data)} bytes, expected {width * HASH_SIZE}")
        hashes = [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]
        self._cache[key] = hashes
        return hashes

    def hash_at(self, level: int, index: int) -> bytes:
        """The root of the complete subtree of 256^level leaves number `index`."""
        return self._tile(level, index // WIDTH)[index % WIDTH]

    def subtree(self, lo: int, hi: int) -> bytes:
        """MTH of leaves [lo, hi): complete aligned subtrees from tiles, the rest by splitting."""
        n = hi - lo
        if n <= 0:
            return EMPTY_ROOT
        if n & (n - 1) == 0 and lo % n == 0:
            k = n.bit_length() - 1
            level, rest = divmod(k, TILE_HEIGHT)
            start = lo >> (TILE_HEIGHT * level)
            tile = self._tile(level, start // WIDTH)
            offset = start % WIDTH
            return _subtree_root(tile[offset : offset + (1 << rest)])
        k = 1 << ((n - 1).bit_length() - 1)
        return node_hash(self.subtree(lo, lo + k), self.subtree(lo + k, hi))

    def root(self) -> bytes:
        return self.subtree(0, self.size)

    def leaf(self, index: int) -> bytes:
        return self.hash_at(0, index)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return inclusion_proof_with(self.subtree, index, self.size if size is None else size)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        return consistency_proof_with(
            self.subtree, old_size, self.size if new_size is None else new_size
        )

    def entries(self) -> list[bytes]:
        """Every entry, from the entry bundles."""
        out: list[bytes] = []
        for t in range((self.size + WIDTH - 1) // WIDTH):
            width = min(WIDTH, self.size - t * WIDTH)
            path = self.folder / tile_path("entries", t, width)
            try:
                bundle = unpack_entries(path.read_bytes(), str(path))
            except OSError as exc:
                raise VerificationError(f"{path}: cannot read ({exc.strerror})") from exc
            if len(bundle) != width:
                raise VerificationError(f"{path}: {len(bundle)} entries, expected {width}")
            out.extend(bundle)
        return out


@dataclass(frozen=True, slots=True)
class TileExport:
    old_size: int
    size: int
    tiles_written: int
    bundles_written: int

    def describe(self) -> str:
        return (
            f"tiles: size {self.old_size} -> {self.size}, {self.tiles_written} hash tiles and "
            f"{self.bundles_written} entry bundles written"
        )


def extend_tiles(
    folder: Path,
    old_size: int,
    envelopes: Sequence[bytes],
    leaves: Sequence[bytes] | None = None,
    write_entries: bool = True,
) -> tuple[int, int]:
    """Write the tiles for entries [old_size, old_size + len(envelopes)) on top of a folder
    holding the tiles of `old_size`: (hash tiles, entry bundles) written."""
    new_size = old_size + len(envelopes)
    if leaves is None:
        leaves = [leaf_hash(e) for e in envelopes]
    old = TileDir(folder, old_size)
    written = bundles = 0
    fresh: list[bytes] = list(leaves)  # the new hashes of the current level
    level = 0
    while True:
        old_count = old_size >> (TILE_HEIGHT * level)
        new_count = new_size >> (TILE_HEIGHT * level)
        if new_count == old_count:
            break
        base = old_count - old_count % WIDTH
        prefix = old._tile(level, base // WIDTH)[: old_count - base] if old_count > base else []
        run = prefix + fresh[: new_count - old_count]
        above: list[bytes] = []
        for t in range(base // WIDTH, (new_count - 1) // WIDTH + 1):
            chunk = run[(t * WIDTH - base) : (t * WIDTH - base) + WIDTH]
            _write(folder / tile_path(level, t, len(chunk)), b"".join(chunk))
            written += 1
            if len(chunk) == WIDTH:  # completed now (it was partial or absent before)
                above.append(_subtree_root(chunk))
        fresh = above
        level += 1
    if write_entries and envelopes:
        base = old_size - old_size % WIDTH
        prefix = []
        if old_size > base:
            path = folder / tile_path("entries", base // WIDTH, old_size - base)
            prefix = unpack_entries(path.read_bytes(), str(path))
        run = prefix + [bytes(e) for e in envelopes]
        for t in range(base // WIDTH, (new_size - 1) // WIDTH + 1):
            chunk = run[(t * WIDTH - base) : (t * WIDTH - base) + WIDTH]
            _write(folder / tile_path("entries", t, len(chunk)), pack_entries(chunk))
            bundles += 1
    return written, bundles


def export_tiles(
    store: LogStore,
    trust: TrustStore,
    folder: Path,
    entries: bool = True,
    progress: Callable[[int], None] | None = None,
    latest: bytes | None = None,
) -> TileExport:
    """Bring `folder` up to the store's latest signed checkpoint (`latest`, if the caller has
    just read it), incrementally.

    The tiles already there must lead to the root they were signed with and, with the new
    entries, to the new signed root: a folder of another history is refused, never mixed.
    """
    raw = latest if latest is not None else store.latest_checkpoint()  # StoreError if missing
    if raw is None:
        raise VerificationError("the log is empty: nothing to export")
    signed = SignedCheckpoint.parse(raw, trust)
    size = signed.checkpoint.tree_size
    old_size = 0
    if (folder / CHECKPOINT).exists():
        tiles, previous = TileDir.open(folder, trust)
        old_size = previous.checkpoint.tree_size
        if tiles.root() != previous.checkpoint.root_hash:
            raise VerificationError(f"{folder}: its tiles do not lead to its checkpoint's root")
        if old_size > size:
            raise VerificationError(
                f"{folder}: holds size {old_size}, the log only {size} (rolled back?)"
            )
    written = bundles = 0
    step = 65_536
    for start in range(old_size, size, step):
        stop = min(start + step, size)
        table = store.entries(start, stop)
        envelopes = [bytes(e) for e in table.column("envelope").to_pylist()]
        if len(envelopes) != stop - start:
            raise VerificationError(f"the store holds {start + len(envelopes)} of {size} entries")
        w, b = extend_tiles(folder, start, envelopes, write_entries=entries)
        written, bundles = written + w, bundles + b
        if progress:
            progress(stop - start)
    if TileDir(folder, size).root() != signed.checkpoint.root_hash:
        raise VerificationError(
            f"{folder}: the tiles for size {size} do not lead to the signed root "
            f"(the folder holds another history from size {old_size}; use a new folder)"
        )
    public = trust.get(signed.keyid, signed.checkpoint.describe())
    _write(folder / CHECKPOINT, signed.to_note(public))
    return TileExport(old_size, size, written, bundles)


def read_tiles(folder: Path, trust: TrustStore) -> tuple[SignedCheckpoint, list[bytes]]:
    """The checkpoint and every entry of a tile folder, the hash tiles checked against the
    entries' own hashes (so every proof an auditor builds from them is of these entries)."""
    tiles, signed = TileDir.open(folder, trust)
    envelopes = tiles.entries()
    leaves = [leaf_hash(e) for e in envelopes]
    count, level, current = len(leaves), 0, leaves
    while count:
        for t in range((count + WIDTH - 1) // WIDTH):
            chunk = current[t * WIDTH : t * WIDTH + WIDTH]
            if tiles._tile(level, t) != chunk:
                raise VerificationError(
                    f"{folder}/{tile_path(level, t, len(chunk))}: does not match the entries"
                )
        current = [
            _subtree_root(current[i : i + WIDTH])
            for i in range(0, count - count % WIDTH, WIDTH)
        ]
        count, level = len(current), level + 1
    return signed, envelopes


def prove(store: LogStore, trust: TrustStore, index: int, cache: Path) -> InclusionProof:
    """An inclusion proof of record `index` against the latest signed checkpoint, from a tile
    cache (hash tiles only) brought up to date with just the entries appended since: one read
    of the store (its latest checkpoint) when nothing was appended, a few tile reads and about
    2·log2(n) hashes, instead of re-hashing every envelope. The leaf is the hash of the stored
    envelope, taken when the cache took it in. Checked against the signed root before it is
    returned; a cache that does not lead to the signed root (edited, or of another history)
    is rebuilt once from the store."""
    from lineage_platform.audit import InclusionProof
    from lineage_platform.log import verify_inclusion

    latest = store.latest_checkpoint()  # StoreError for a missing store
    for attempt in (1, 2):
        try:
            export_tiles(store, trust, cache, entries=False, latest=latest)
            break
        except VerificationError:
            if attempt == 2:
                raise
            import shutil

            shutil.rmtree(cache, ignore_errors=True)
    tiles, signed = TileDir.open(cache, trust)
    from lineage_platform.verify import check_origin

    check_origin(signed, "latest checkpoint")
    size = signed.checkpoint.tree_size
    if not 0 <= index < size:
        raise VerificationError(f"no record {index} in a log of {size}", index)
    path = tiles.inclusion_proof(index)
    leaf = tiles.leaf(index)
    verify_inclusion(leaf, index, size, path, signed.checkpoint.root_hash)
    return InclusionProof(index, size, leaf, tuple(path), signed)
