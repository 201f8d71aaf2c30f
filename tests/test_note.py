"""Checkpoints as C2SP signed notes: Python writes them, Python and Go's sumdb/note read them.

The Go half is an outside auditor with nothing of this project: golang.org/x/mod/sumdb/note
opens the checkpoint `lineage checkpoint` prints, and sumdb/tlog checks `lineage prove`'s
inclusion proof against its root.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from lineage_platform.attest import append_records
from lineage_platform.errors import RecordError, SignatureError
from lineage_platform.log import Checkpoint, SignedCheckpoint, leaf_hash, root_from_leaves
from lineage_platform.note import (
    ALG_COSIGNATURE_V1,
    Note,
    NoteVerifier,
    cosign,
    cosignature_time,
    key_hash,
    sign_note,
)
from lineage_platform.signing import SigningKey, TrustStore
from tests.gokit import go_checker, go_rejects
from tests.logkit import Project, dataset

ORIGIN = "example.org/log"


def signed(size: int = 5, timestamp: str | None = "2026-12-03T10:00:00Z") -> tuple[
    SigningKey, SignedCheckpoint
]:
    key = SigningKey.generate()
    leaves = [leaf_hash(b"%d" % i) for i in range(size)]
    cp = Checkpoint(ORIGIN, size, root_from_leaves(leaves), timestamp)
    return key, SignedCheckpoint.sign(cp, key)


def test_note_form_is_the_c2sp_layout() -> None:
    key, s = signed()
    text = s.to_note(key.public_key).decode()
    body, sigs = text.split("\n\n")
    assert body.split("\n") == [
        ORIGIN, "5", base64.b64encode(s.checkpoint.root_hash).decode(),
        "time 2026-12-03T10:00:00Z",
    ]
    name, blob = sigs.removeprefix("— ").rstrip("\n").split(" ")
    raw = base64.b64decode(blob)
    assert name == ORIGIN
    # signed-note: the key hash is SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[:4].
    import hashlib

    expected = hashlib.sha256(ORIGIN.encode() + b"\n\x01" + key.public_key.raw).digest()[:4]
    assert raw[:4] == expected == key_hash(ORIGIN, 1, key.public_key.raw)
    assert raw[4:] == s.signature  # the same signature as the JSON form's


def test_json_and_note_forms_convert_both_ways() -> None:
    key, s = signed()
    trust = TrustStore.of(key)
    assert SignedCheckpoint.parse(s.to_note(key.public_key), trust) == s
    assert SignedCheckpoint.parse(s.to_json(), trust) == s
    note = s.to_note(key.public_key)
    forged = note.replace(b"\n5\n", b"\n6\n")
    with pytest.raises(SignatureError, match="does not verify"):
        SignedCheckpoint.parse(forged, trust)
    with pytest.raises(SignatureError, match="no signature by a trusted key"):
        SignedCheckpoint.parse(note, TrustStore.of(SigningKey.generate()))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"a\n1\nAAAA\n", "no blank line"),
        (b"a\n01\n" + base64.b64encode(bytes(32)) + b"\n\n\xe2\x80\x94 a AAAAAAAA\n", "leading"),
        (b"a\n1\n" + base64.b64encode(bytes(32)) + b"\nx 1\n\n\xe2\x80\x94 a AAAAAAAA\n",
         "extension"),
        (b"a\n1\nAAAA\n\n- a AAAAAAAA\n", "does not start"),
        (b"a\x01\n1\nAAAA\n\n\xe2\x80\x94 a AAAAAAAA\n", "control"),
    ],
)
def test_malformed_notes_are_refused_naming_why(data: bytes, message: str) -> None:
    with pytest.raises((RecordError, SignatureError), match=message):
        SignedCheckpoint.parse(data, TrustStore.of(SigningKey.generate()))


def test_verifier_keys_round_trip_and_check_their_hash() -> None:
    key = SigningKey.generate()
    v = NoteVerifier(ORIGIN, key.public_key)
    assert NoteVerifier.from_vkey(v.vkey()) == v
    name, _, blob = v.vkey().split("+", 2)
    with pytest.raises(RecordError, match="does not match"):
        NoteVerifier.from_vkey(f"{name}+00000000+{blob}")
    note = Note(b"hello\n", (sign_note(b"hello\n", ORIGIN, key),))
    assert v.verify(Note.parse(note.to_bytes())) == note.signatures[0]


def test_cosignature_v1_signs_time_and_body() -> None:
    log_key, s = signed()
    witness = SigningKey.generate()
    body = s.checkpoint.body()
    sig = cosign(body, "witness.example/w1", witness, 1_700_000_000)
    assert cosignature_time(sig) == 1_700_000_000
    v = NoteVerifier("witness.example/w1", witness.public_key, ALG_COSIGNATURE_V1)
    note = Note.parse(s.to_note(log_key.public_key) + sig.line())
    assert v.verify(note) == sig
    # The same bytes under the plain Ed25519 algorithm byte are another key hash: not found.
    with pytest.raises(SignatureError, match="no signature"):
        NoteVerifier("witness.example/w1", witness.public_key).verify(note)
    tampered = sig.signature[:7] + bytes([sig.signature[7] ^ 1]) + sig.signature[8:]
    bad = Note(note.text, (note.signatures[0], type(sig)(sig.name, sig.key_hash, tampered)))
    with pytest.raises(SignatureError, match="does not verify"):
        v.verify(bad)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    proj = Project.create(tmp_path / "proj")
    key = proj.signer()
    for start in (0, 7, 20):  # three batches, three checkpoints
        append_records(proj.store, key, [dataset(i) for i in range(start, start + 7 + start)])
    return proj


def test_go_sumdb_note_verifies_the_projects_checkpoint(
    project: Project, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    check = go_checker(tmp_path_factory)
    code, note, err = project.cli("checkpoint")
    assert code == 0, err
    code, vkey, err = project.cli("checkpoint", "--vkey")
    assert code == 0, err
    path = tmp_path / "checkpoint"
    path.write_text(note)
    check("note", vkey.strip(), str(path))
    # Go refuses a checkpoint whose size was changed, and one checked with another log's key.
    path.write_text(note.replace("\n47\n", "\n46\n"))
    assert "invalid signature" in go_rejects(check, "note", vkey.strip(), str(path))
    other = NoteVerifier("lineage-platform.local/log", SigningKey.generate().public_key).vkey()
    path.write_text(note)
    assert "no verifiable signatures" in go_rejects(check, "note", other, str(path))


def test_go_sumdb_tlog_checks_the_projects_inclusion_proof(
    project: Project, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    check = go_checker(tmp_path_factory)
    (tmp_path / "checkpoint").write_text(project.cli("checkpoint")[1])
    vkey = project.cli("checkpoint", "--vkey")[1].strip()
    for index in (0, 11, 46):
        code, out, err = project.cli("prove", str(index))
        assert code == 0, err
        proof = json.loads(out)
        b64 = [base64.b64encode(bytes.fromhex(h)).decode() for h in proof["proof"]]
        leaf = base64.b64encode(bytes.fromhex(proof["leaf_hash"])).decode()
        check("inclusion", vkey, str(tmp_path / "checkpoint"), str(index), leaf, *b64)
        wrong = base64.b64encode(bytes(32)).decode()
        go_rejects(check, "inclusion", vkey, str(tmp_path / "checkpoint"), str(index), wrong, *b64)
