"""C2SP tlog-tiles: the layout, incremental exports, proofs from tiles, and Go reading them.

Roots and proofs built from tiles must equal the ones log.py builds from every leaf, at every
size around the tile boundaries and however the appends were split; Go's sumdb/tlog proves
records straight from an exported folder.
"""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

import pytest

from lineage_platform.attest import append_records
from lineage_platform.audit import prove_inclusion
from lineage_platform.errors import VerificationError
from lineage_platform.log import (
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_from_leaves,
)
from lineage_platform.tiles import TileDir, export_tiles, extend_tiles, tile_path
from tests.gokit import go_checker
from tests.logkit import Project, dataset


def test_tile_paths_follow_c2sp() -> None:
    assert tile_path(0, 0) == "tile/0/000"
    assert tile_path(0, 1234067) == "tile/0/x001/x234/067"
    assert tile_path(1, 5, 12) == "tile/1/005.p/12"
    assert tile_path("entries", 1000, 3) == "tile/entries/x001/000.p/3"


@pytest.mark.parametrize("size", [1, 2, 255, 256, 257, 511, 512, 65_536 + 300])
def test_tiles_give_the_roots_and_proofs_of_the_leaves(size: int, tmp_path: Path) -> None:
    rng = random.Random(size)
    entries = [b"entry %d" % i for i in range(size)]
    leaves = [leaf_hash(e) for e in entries]
    done = 0
    while done < size:  # appends of random sizes, as batches arrive
        step = min(size - done, rng.choice([1, 3, 255, 256, 700, 40_000]))
        extend_tiles(tmp_path, done, entries[done : done + step], write_entries=size < 1000)
        done += step
        tiles = TileDir(tmp_path, done)
        assert tiles.root() == root_from_leaves(leaves[:done])
    for index in {0, size // 2, size - 1, rng.randrange(size)}:
        assert tiles.inclusion_proof(index) == inclusion_proof(leaves, index, size)
        assert tiles.leaf(index) == leaves[index]
    for old in {1, size // 3, size - 1}:
        if 0 < old <= size:
            assert tiles.consistency_proof(old) == consistency_proof(leaves, old, size)
    if size < 1000:
        assert tiles.entries() == entries


@pytest.fixture
def project(tmp_path: Path) -> Project:
    proj = Project.create(tmp_path / "proj")
    key = proj.signer()
    append_records(proj.store, key, [dataset(i) for i in range(300)])
    append_records(proj.store, key, [dataset(i) for i in range(300, 600)])
    return proj


def export(proj: Project, folder: Path) -> str:
    code, out, err = proj.cli("export", "--format", "tiles", "--out", str(folder))
    assert code == 0, err
    return out


def test_export_is_incremental_and_verify_reads_tiles_alone(
    project: Project, tmp_path: Path
) -> None:
    folder = tmp_path / "tiles"
    # Level 0: two full tiles and 000/002.p/88; level 1: 000.p/2 (the two full tiles' roots).
    assert "size 0 -> 600, 4 hash tiles and 3 entry bundles" in export(project, folder)
    full = folder / "tile/0/000"
    stamp = full.stat().st_mtime_ns
    append_records(project.store, project.signer(), [dataset(i) for i in range(600, 700)])
    # 600 -> 700: only level 0's right edge (partial 88 -> 188); level 1 still holds 2.
    assert "size 600 -> 700, 1 hash tiles and 1 entry bundles" in export(project, folder)
    assert full.stat().st_mtime_ns == stamp  # full tiles are never rewritten
    assert (folder / "tile/0/002.p/188").stat().st_size == 188 * 32
    assert (folder / "checkpoint").read_text().startswith("lineage-platform.local/log\n700\n")
    code, out, err = project.cli("verify", "--tiles", str(folder))
    assert code == 0, err
    assert out.startswith("OK: 700 records, 1 checkpoints")
    # A changed hash tile (an auditor's proofs would be wrong) fails, naming the tile.
    data = bytearray((folder / "tile/1/000.p/2").read_bytes())
    data[0] ^= 1
    (folder / "tile/1/000.p/2").write_bytes(bytes(data))
    code, out, err = project.cli("verify", "--tiles", str(folder))
    assert code == 7 and "tile/1/000.p/2: does not match the entries" in err, err


def test_a_folder_of_another_history_is_refused(project: Project, tmp_path: Path) -> None:
    folder = tmp_path / "tiles"
    export(project, folder)
    other = Project.create(tmp_path / "other")
    append_records(other.store, other.signer(), [dataset(1000 + i) for i in range(650)])
    from lineage_platform.signing import TrustStore

    trust = TrustStore.of(project.signer(), other.signer())
    with pytest.raises(VerificationError, match="another history"):
        export_tiles(other.store, trust, folder)


def test_prove_reads_tiles_and_matches_the_full_rehash(project: Project) -> None:
    for index in (0, 255, 256, 599):
        code, out, err = project.cli("prove", str(index))
        assert code == 0, err
        got = json.loads(out)
        want = prove_inclusion(project.store, project.ring.trust(), index).to_json()
        assert got == want
    append_records(project.store, project.signer(), [dataset(700)])
    got = json.loads(project.cli("prove", "600")[1])
    assert got["tree_size"] == 601
    code, _, err = project.cli("prove", "601")
    assert code == 7 and "no record 601" in err


def test_go_sumdb_tlog_proves_records_from_the_exported_tiles(
    project: Project, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    check = go_checker(tmp_path_factory)
    folder = tmp_path / "tiles"
    export(project, folder)
    vkey = project.cli("checkpoint", "--vkey")[1].strip()
    table, _ = project.store.read_log()
    envelopes = table.column("envelope").to_pylist()
    for index in (0, 300, 599):
        entry = base64.b64encode(bytes(envelopes[index])).decode()
        check("tiles", vkey, str(folder), str(index), entry)
