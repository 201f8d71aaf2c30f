"""Tampering with a real DuckDB log, or with an exported bundle, is caught by `lineage verify`.

Each test copies one signed log (eight records in five batches, with input references, a
partition and a record keyed by its digest), edits it the way someone with write access to the
file could, and expects `lineage verify` to exit non-zero with one line naming the bad record.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest
from logkit import Project, dataset, sha, uses

from lineage_platform.attest import append_records
from lineage_platform.log import Checkpoint, SignedCheckpoint, leaf_hash, root_from_leaves
from lineage_platform.records import PAYLOAD_TYPE
from lineage_platform.signing import Envelope, SigningKey, TrustStore, sign_envelope

N = 8
BATCHES = ((0, 2), (2, 3), (3, 6), (6, 7), (7, 8))  # [start, stop) of each append


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Project:
    project = Project.create(tmp_path_factory.mktemp("tamper") / "proj")
    key = project.signer()
    r = [dataset(0), dataset(1, partition="2026-11-23")]
    r.append(dataset(2, inputs=(uses(r[0], 0), uses(r[1], 1))))
    r += [dataset(3), dataset(4, kind="model", inputs=(uses(r[2], 2),)), dataset(5, dagster=False)]
    r += [dataset(6), dataset(7, partition="p1", inputs=(uses(r[4], 4),))]
    for start, stop in BATCHES:
        append_records(project.store, key, r[start:stop])
    return project


@pytest.fixture
def proj(base: Project, tmp_path: Path) -> Project:
    return base.copy(tmp_path / "proj")


def named(err: str) -> set[int]:
    """Every record index the error line names ("record 3", or every one of "records 3–5")."""
    found: set[int] = set()
    for lo, hi in re.findall(r"\brecords? (\d+)(?:–(\d+))?", err):
        found.update(range(int(lo), int(hi or lo) + 1))
    return found


def fails(result: tuple[int, str, str], index: int | None = None) -> str:
    """Non-zero exit, exactly one line on stderr and no traceback; the line names `index`."""
    code, _, err = result
    assert code != 0, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    if index is not None:
        assert index in named(err), err
    return err


def envelope_of(proj: Project, idx: int) -> bytes:
    return bytes(proj.sql("SELECT envelope FROM log_entries WHERE idx = ?", [idx])[0][0])


def set_envelope(proj: Project, idx: int, data: bytes) -> None:
    proj.sql("UPDATE log_entries SET envelope = ? WHERE idx = ?", [data, idx])


def other_char(byte: int) -> int:
    """A different byte of the same kind: base64 stays base64, so some edits parse and reach
    the signature check; others break the JSON or the base64."""
    c = chr(byte)
    for alphabet in ("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz", "0123456789"):
        if c in alphabet:
            return ord(alphabet[(alphabet.index(c) + 1) % len(alphabet)])
    return byte ^ 0x01


# --- the untampered log -------------------------------------------------------------------------


def test_the_untampered_log_verifies_through_the_cli(proj: Project) -> None:
    code, out, err = proj.cli("verify")
    assert (code, err) == (0, "")
    assert out.startswith(f"OK: {N} records, {len(BATCHES)} checkpoints")
    code, out, _ = proj.cli("verify", "--json")
    assert code == 0
    assert json.loads(out)["records"] == N


# --- the envelopes ------------------------------------------------------------------------------


@pytest.mark.parametrize("idx", [0, 2, 5, 7])
@pytest.mark.parametrize("where", ["first", "payload", "middle", "signature", "last"])
def test_changing_any_byte_of_a_stored_envelope(
    proj: Project,
    idx: int,
    where: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = bytearray(envelope_of(proj, idx))
    pos = {
        "first": 0,
        "payload": len('{"payload":"') + 7,
        "middle": len(data) // 2,
        "signature": len(data) - len('"}]}') - 9,
        "last": len(data) - 1,
    }[where]
    data[pos] = other_char(data[pos])
    set_envelope(proj, idx, bytes(data))
    err = fails(proj.main(monkeypatch, capsys, "verify"), idx)
    assert err.startswith(f"error: record {idx}: ")


def test_a_changed_envelope_through_the_cli_subprocess(proj: Project) -> None:
    data = bytearray(envelope_of(proj, 4))
    data[100] = other_char(data[100])
    set_envelope(proj, 4, bytes(data))
    err = fails(proj.cli("verify"), 4)
    assert "record 4: signature does not verify" in err


def test_an_edited_record_with_every_derived_column_recomputed(
    proj: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The attacker rewrites the content hash in the payload and fixes every column to match."""
    env = Envelope.from_json(envelope_of(proj, 3))
    old = json.loads(env.payload)["subject"][0]["digest"]["sha256"]
    payload = env.payload.replace(old.encode(), sha("forged").encode())
    forged = Envelope(payload, env.payload_type, env.signatures).to_json()
    proj.sql(
        "UPDATE log_entries SET envelope = ?, leaf_hash = ?, record_digest = ?, sha256 = ? "
        "WHERE idx = 3",
        [forged, leaf_hash(forged), hashlib.sha256(payload).hexdigest(), sha("forged")],
    )
    err = fails(proj.main(monkeypatch, capsys, "verify"), 3)
    assert "record 3: signature does not verify" in err


def test_a_record_re_signed_with_a_key_that_is_not_trusted(
    proj: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    attacker = SigningKey.generate()
    env = Envelope.from_json(envelope_of(proj, 5))
    forged = sign_envelope(env.payload, attacker).to_json()
    proj.sql(
        "UPDATE log_entries SET envelope = ?, leaf_hash = ?, keyid = ? WHERE idx = 5",
        [forged, leaf_hash(forged), attacker.keyid],
    )
    err = fails(proj.main(monkeypatch, capsys, "verify"), 5)
    assert f"record 5: key {attacker.keyid[:12]}… is not trusted" in err


# --- rows: deleted, inserted, swapped ----------------------------------------------------------


@pytest.mark.parametrize(
    ("idx", "message"),
    [
        (0, "record 0: stored index 1, expected 0"),
        (3, "record 3: stored index 4, expected 3"),
        (7, "record 7: missing (the latest signed checkpoint covers 8 records"),
    ],
)
def test_deleting_a_row(
    proj: Project,
    idx: int,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    proj.sql("DELETE FROM log_entries WHERE idx = ?", [idx])
    assert message in fails(proj.main(monkeypatch, capsys, "verify"), idx)


@pytest.mark.parametrize(
    ("idx", "batch"), [(1, "records 0–1"), (3, "records 3–5"), (6, "record 6")]
)
def test_deleting_a_row_and_renumbering_the_rest(
    proj: Project,
    idx: int,
    batch: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No gap left: only the signed roots can tell, so the batch holding the row is named."""
    proj.sql("DELETE FROM log_entries WHERE idx = ?", [idx])
    proj.sql("UPDATE log_entries SET idx = idx - 1 WHERE idx > ?", [idx])
    err = fails(proj.main(monkeypatch, capsys, "verify"), idx)
    assert f"error: {batch}: the Merkle root" in err


def test_inserting_a_row(
    proj: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = sign_envelope(dataset(99).to_bytes(), proj.signer()).to_json()
    proj.sql(
        "INSERT INTO log_entries SELECT 8, ?, ?, record_digest, 'dagster:x:1', kind, asset, "
        "partition, sha256, keyid, recorded_at FROM log_entries WHERE idx = 6",
        [extra, leaf_hash(extra)],
    )
    fails(proj.main(monkeypatch, capsys, "verify"), 8)


@pytest.mark.parametrize(
    ("a", "b", "first"), [(6, 7, "record 6"), (0, 1, "records 0–1"), (2, 5, "record 2")]
)
def test_swapping_two_rows(
    proj: Project,
    a: int,
    b: int,
    first: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Whole rows trade places (their idx values are swapped): every row is self-consistent."""
    proj.sql("UPDATE log_entries SET idx = -1 WHERE idx = ?", [a])
    proj.sql("UPDATE log_entries SET idx = ? WHERE idx = ?", [a, b])
    proj.sql("UPDATE log_entries SET idx = ? WHERE idx = -1", [b])
    err = fails(proj.main(monkeypatch, capsys, "verify"), a)
    assert err.startswith(f"error: {first}: ")


def test_swapping_two_envelopes_only(
    proj: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    three, six = envelope_of(proj, 3), envelope_of(proj, 6)
    set_envelope(proj, 3, six)
    set_envelope(proj, 6, three)
    err = fails(proj.main(monkeypatch, capsys, "verify"), 3)
    assert "record 3: stored column leaf_hash does not match the signed record" in err


def test_swapped_rows_through_the_cli_subprocess(proj: Project) -> None:
    proj.sql("UPDATE log_entries SET idx = -1 WHERE idx = 6")
    proj.sql("UPDATE log_entries SET idx = 6 WHERE idx = 7")
    proj.sql("UPDATE log_entries SET idx = 7 WHERE idx = -1")
    err = fails(proj.cli("verify"), 6)
    assert "record 6: the Merkle root at size 7 does not match the signed checkpoint" in err


# --- every derived column ----------------------------------------------------------------------

LOG_COLUMN_EDITS = {
    "leaf_hash": "leaf_hash = sha256(envelope)::BLOB",
    "record_digest": "record_digest = sha256('x')",
    "idem_key": "idem_key = 'dagster:run-a:999'",
    "kind": "kind = CASE kind WHEN 'model' THEN 'dataset' ELSE 'model' END",
    "asset": "asset = asset || '_x'",
    "partition": "partition = CASE WHEN partition IS NULL THEN 'p9' ELSE NULL END",
    "sha256": "sha256 = sha256('x')",
    "keyid": "keyid = sha256('someone else')",
    "recorded_at": "recorded_at = '2020-01-01T00:00:00.000000Z'",
}


@pytest.mark.parametrize("column", sorted(LOG_COLUMN_EDITS))
@pytest.mark.parametrize("idx", [1, 5, 7])
def test_editing_a_derived_log_column(
    proj: Project,
    column: str,
    idx: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    proj.sql(f"UPDATE log_entries SET {LOG_COLUMN_EDITS[column]} WHERE idx = ?", [idx])
    err = fails(proj.main(monkeypatch, capsys, "verify"), idx)
    assert f"record {idx}: stored column {column} does not match the signed record" in err


def test_editing_a_derived_column_through_the_cli_subprocess(proj: Project) -> None:
    proj.sql("UPDATE log_entries SET asset = 'someone/else' WHERE idx = 2")
    err = fails(proj.cli("verify"), 2)
    assert "record 2: stored column asset does not match the signed record" in err


@pytest.mark.parametrize("size", [2, 6, 8])
def test_editing_a_checkpoint_frontier(
    proj: Project, size: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blob = bytearray(proj.sql("SELECT frontier FROM checkpoints WHERE tree_size = ?", [size])[0][0])
    blob[5] ^= 0xFF
    proj.sql("UPDATE checkpoints SET frontier = ? WHERE tree_size = ?", [bytes(blob), size])
    err = fails(proj.main(monkeypatch, capsys, "verify"))
    assert f"checkpoint at size {size}: stored frontier is wrong" in err


@pytest.mark.parametrize(("size", "edited"), [(3, 4), (7, 100), (8, 5), (2, 0)])
def test_editing_a_checkpoint_tree_size_column(
    proj: Project,
    size: int,
    edited: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    proj.sql("UPDATE checkpoints SET tree_size = ? WHERE tree_size = ?", [edited, size])
    fails(proj.main(monkeypatch, capsys, "verify"))


# --- the signed checkpoints --------------------------------------------------------------------


def edit_checkpoint(proj: Project, size: int, change: dict[str, object]) -> None:
    raw = proj.sql("SELECT checkpoint FROM checkpoints WHERE tree_size = ?", [size])[0][0]
    obj = json.loads(bytes(raw))
    obj.update(change)
    data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    proj.sql("UPDATE checkpoints SET checkpoint = ? WHERE tree_size = ?", [data, size])


@pytest.mark.parametrize("size", [3, 8])
@pytest.mark.parametrize(
    "change",
    [
        {"tree_size": 5},
        {"root_hash": sha("another tree")},
        {"signature": base64.b64encode(bytes(64)).decode()},
        {"signature": base64.b64encode(bytes(40)).decode()},
        {"keyid": sha("nobody")},
        {"origin": "another.log/x"},
    ],
    ids=["tree_size", "root_hash", "signature", "truncated_signature", "keyid", "origin"],
)
def test_editing_a_signed_checkpoint(
    proj: Project,
    size: int,
    change: dict[str, object],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    edit_checkpoint(proj, size, change)
    err = fails(proj.main(monkeypatch, capsys, "verify"))
    assert "checkpoint" in err


def test_a_checkpoint_re_signed_by_an_untrusted_key_over_a_new_root(
    proj: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    attacker = SigningKey.generate()
    forged = SignedCheckpoint.sign(Checkpoint("lineage-platform.local/log", 8, bytes(32)), attacker)
    proj.sql("UPDATE checkpoints SET checkpoint = ? WHERE tree_size = 8", [forged.to_json()])
    err = fails(proj.main(monkeypatch, capsys, "verify"))
    assert "is not trusted" in err


def test_dropping_the_latest_checkpoint(
    proj: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    proj.sql("DELETE FROM checkpoints WHERE tree_size = 8")
    err = fails(proj.main(monkeypatch, capsys, "verify"), 7)
    assert "record 7: not covered by a signed checkpoint" in err


def test_verify_leaves_the_database_unchanged(
    proj: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = proj.db.read_bytes()
    assert proj.main(monkeypatch, capsys, "verify")[0] == 0
    assert proj.db.read_bytes() == before


# --- the exported bundle ------------------------------------------------------------------------


@pytest.fixture
def bundle(
    proj: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Path:
    out = proj.root / "bundle"
    code, stdout, err = proj.main(monkeypatch, capsys, "export", "--out", str(out))
    assert (code, err) == (0, ""), err
    assert f"exported {N} envelopes" in stdout
    return out


def test_an_export_verifies_offline(proj: Project) -> None:
    bundle = proj.root / "bundle"
    code, stdout, err = proj.cli("export", "--out", str(bundle))
    assert (code, err) == (0, "")
    assert f"exported {N} envelopes" in stdout
    assert sorted(p.name for p in bundle.iterdir()) == [
        "checkpoint.json",
        "envelopes.jsonl",
        "keys.json",
    ]
    lines = (bundle / "envelopes.jsonl").read_bytes().splitlines()
    assert lines == [envelope_of(proj, i) for i in range(N)]  # exactly the stored bytes
    checkpoint = json.loads((bundle / "checkpoint.json").read_text())
    assert set(checkpoint) == {"origin", "tree_size", "root_hash", "keyid", "signature"}
    assert checkpoint["tree_size"] == N
    keys = json.loads((bundle / "keys.json").read_text())
    assert list(keys) == [proj.signer().keyid]

    proj.db.unlink()  # no database needed
    code, out, err = proj.cli("verify", "--bundle", str(bundle))
    assert (code, err) == (0, "")
    assert out.startswith(f"OK: {N} records, 1 checkpoints")


@pytest.mark.parametrize("line", [0, 4, 7])
def test_a_changed_byte_in_envelopes_jsonl(
    proj: Project,
    bundle: Path,
    line: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines = (bundle / "envelopes.jsonl").read_bytes().split(b"\n")
    data = bytearray(lines[line])
    data[60] = other_char(data[60])
    lines[line] = bytes(data)
    (bundle / "envelopes.jsonl").write_bytes(b"\n".join(lines))
    fails(proj.main(monkeypatch, capsys, "verify", "--bundle", str(bundle)), line)


@pytest.mark.parametrize("edit", ["drop", "swap", "duplicate"])
def test_lines_removed_swapped_or_repeated_in_envelopes_jsonl(
    proj: Project,
    bundle: Path,
    edit: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines = (bundle / "envelopes.jsonl").read_bytes().splitlines()
    if edit == "drop":
        del lines[3]
    elif edit == "swap":
        lines[2], lines[5] = lines[5], lines[2]
    else:
        lines.append(lines[6])
    (bundle / "envelopes.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    fails(proj.main(monkeypatch, capsys, "verify", "--bundle", str(bundle)))


@pytest.mark.parametrize(
    "change",
    [
        {"tree_size": 7},
        {"root_hash": sha("x")},
        {"signature": base64.b64encode(bytes(64)).decode()},
    ],
    ids=["tree_size", "root_hash", "signature"],
)
def test_an_edited_checkpoint_json(
    proj: Project,
    bundle: Path,
    change: dict[str, object],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    obj = json.loads((bundle / "checkpoint.json").read_text())
    obj.update(change)
    (bundle / "checkpoint.json").write_text(json.dumps(obj))
    err = fails(proj.main(monkeypatch, capsys, "verify", "--bundle", str(bundle)))
    assert "checkpoint" in err


def test_keys_json_with_the_key_swapped_for_an_attackers(proj: Project, bundle: Path) -> None:
    attacker = SigningKey.generate()
    (bundle / "keys.json").write_bytes(TrustStore.of(attacker).to_json())
    err = fails(proj.cli("verify", "--bundle", str(bundle)))
    assert "is not trusted" in err


def test_keys_json_claiming_the_real_keyid_for_an_attackers_key(
    proj: Project,
    bundle: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    attacker = SigningKey.generate()
    keyid = proj.signer().keyid
    (bundle / "keys.json").write_text(json.dumps({keyid: attacker.public_key.to_b64()}))
    err = fails(proj.main(monkeypatch, capsys, "verify", "--bundle", str(bundle)))
    assert "does not match its key" in err


def test_a_bundle_re_signed_throughout_passes_alone_but_not_against_pinned_keys(
    proj: Project,
    bundle: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A forger who re-signs every record and the checkpoint is consistent with their own
    keys.json; an auditor who pins the keys they already trust catches it."""
    attacker = SigningKey.generate()
    lines = []
    for raw in (bundle / "envelopes.jsonl").read_bytes().splitlines():
        payload = Envelope.from_json(raw).payload
        lines.append(sign_envelope(payload, attacker, PAYLOAD_TYPE).to_json())
    (bundle / "envelopes.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    root = root_from_leaves([leaf_hash(line) for line in lines])
    forged = SignedCheckpoint.sign(Checkpoint("lineage-platform.local/log", N, root), attacker)
    (bundle / "checkpoint.json").write_bytes(forged.to_json())
    (bundle / "keys.json").write_bytes(TrustStore.of(attacker).to_json())

    code, out, _ = proj.main(monkeypatch, capsys, "verify", "--bundle", str(bundle))
    assert code == 0 and attacker.keyid[:12] in out  # the report says whose keys vouched
    pinned = proj.ring.trust_path
    err = fails(
        proj.main(monkeypatch, capsys, "verify", "--bundle", str(bundle), "--keys", str(pinned))
    )
    assert "is not trusted" in err
