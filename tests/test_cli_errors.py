"""Bad input to `lineage keys|verify|export|prove`: one line, a non-zero exit, nothing changed.

Also the key ring's life cycle: init, rotate (old records stay verifiable), show.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from logkit import Project, dataset

from lineage_platform.attest import append_records
from lineage_platform.config import Settings
from lineage_platform.errors import ConfigError
from lineage_platform.log import leaf_hash, verify_inclusion
from lineage_platform.signing import Envelope, SigningKey, sign_envelope


def one_line(result: tuple[int, str, str], code: int | None = None) -> str:
    """The command failed with exactly one line on stderr, and no traceback."""
    status, _, err = result
    assert status != 0, err
    if code is not None:
        assert status == code, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture
def proj(tmp_path: Path) -> Project:
    project = Project.create(tmp_path / "proj")
    key = project.signer()
    append_records(project.store, key, [dataset(0), dataset(1)])
    append_records(project.store, key, [dataset(2)])
    return project


@pytest.fixture
def bundle(
    proj: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Path:
    out = proj.root / "bundle"
    assert proj.main(monkeypatch, capsys, "export", "--out", str(out))[0] == 0
    return out


# --- malformed input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "expected", "code"),
    [
        ("envelopes.jsonl", b'{"payload": "abc",\n', "record 0: envelope: malformed JSON", 7),
        ("envelopes.jsonl", b"[1, 2]\n", "record 0: envelope: expected a JSON object", 7),
        ("checkpoint.json", b"{not json", "checkpoint 0: checkpoint: malformed JSON", 7),
        ("keys.json", b'{"ab": ', "keys.json: trust store: malformed JSON", 5),
        ("keys.json", b"{}", "keys.json: trust store: expected a non-empty object", 5),
    ],
)
def test_malformed_json_in_a_bundle(
    proj: Project,
    bundle: Path,
    name: str,
    content: bytes,
    expected: str,
    code: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (bundle / name).write_bytes(content)
    line = one_line(proj.main(monkeypatch, capsys, "verify", "--bundle", str(bundle)), code)
    assert expected in line


def test_malformed_json_in_a_bundle_through_the_cli_subprocess(
    proj: Project, bundle: Path
) -> None:
    lines = (bundle / "envelopes.jsonl").read_bytes().splitlines()
    lines[1] = lines[1][:-5]
    (bundle / "envelopes.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    line = one_line(proj.cli("verify", "--bundle", str(bundle)), 7)
    assert "record 1: envelope: malformed JSON" in line


def test_a_bundle_folder_that_is_missing_or_incomplete(
    proj: Project,
    bundle: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = proj.root / "nowhere"
    line = one_line(proj.main(monkeypatch, capsys, "verify", "--bundle", str(missing)))
    assert "missing envelopes.jsonl" in line
    (bundle / "keys.json").unlink()
    line = one_line(proj.main(monkeypatch, capsys, "verify", "--bundle", str(bundle)))
    assert "missing keys.json" in line
    (bundle / "keys.json").mkdir()  # unreadable as a file
    one_line(proj.main(monkeypatch, capsys, "verify", "--bundle", str(bundle)))


# --- keys and signatures ----------------------------------------------------------------------


def test_a_record_signed_by_an_unknown_key(
    proj: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stranger = SigningKey.generate()
    append_records(proj.store, stranger, [dataset(3)])
    before = proj.snapshot()
    line = one_line(proj.main(monkeypatch, capsys, "verify"), 7)
    # Its batch checkpoint is the stranger's too; the checkpoints are checked first.
    assert f"key {stranger.keyid[:12]}… is not trusted" in line
    assert proj.snapshot() == before


def test_a_record_whose_keyid_names_no_known_key(
    proj: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = Envelope.from_json(bytes(proj.sql("SELECT envelope FROM log_entries WHERE idx=1")[0][0]))
    renamed = env.to_json().replace(env.signatures[0].keyid.encode(), b"0" * 64)
    proj.sql("UPDATE log_entries SET envelope = ? WHERE idx = 1", [renamed])
    before = proj.snapshot()
    line = one_line(proj.main(monkeypatch, capsys, "verify"), 7)
    assert "record 1: key 000000000000… is not trusted" in line
    assert proj.snapshot() == before


def test_a_bundle_with_a_key_missing_from_keys_json(
    proj: Project, bundle: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    other = SigningKey.generate()
    (bundle / "keys.json").write_text(json.dumps({other.keyid: other.public_key.to_b64()}))
    line = one_line(proj.main(monkeypatch, capsys, "verify", "--bundle", str(bundle)), 7)
    assert "is not trusted" in line


@pytest.mark.parametrize("keep", [0, 40, 85])
def test_a_truncated_signature(
    proj: Project, keep: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = Envelope.from_json(bytes(proj.sql("SELECT envelope FROM log_entries WHERE idx=2")[0][0]))
    sig = env.to_json().split(b'"sig":"')[1].split(b'"')[0]
    short = env.to_json().replace(sig, sig[:keep])
    proj.sql("UPDATE log_entries SET envelope = ? WHERE idx = 2", [short])
    before = proj.snapshot()
    line = one_line(proj.main(monkeypatch, capsys, "verify"), 7)
    assert line.startswith("error: record 2: signatures[0].sig: ")
    assert proj.snapshot() == before


def test_a_truncated_signature_in_a_bundle(proj: Project, bundle: Path) -> None:
    lines = (bundle / "envelopes.jsonl").read_bytes().splitlines()
    env = Envelope.from_json(lines[0])
    signed = sign_envelope(env.payload, proj.signer())
    sig = signed.to_json().split(b'"sig":"')[1].split(b'"')[0]
    lines[0] = signed.to_json().replace(sig, sig[:60])
    (bundle / "envelopes.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    line = one_line(proj.cli("verify", "--bundle", str(bundle)), 7)
    assert "record 0: signatures[0].sig: expected 64 bytes, got 45" in line


# --- passphrases ------------------------------------------------------------------------------


def test_a_wrong_passphrase(tmp_path: Path) -> None:
    proj = Project.create(tmp_path / "proj", passphrase="a")
    append_records(proj.store, proj.signer("a"), [dataset(0)])
    keys = {p.name: p.read_bytes() for p in proj.ring.folder.iterdir() if p.is_file()}
    before = proj.snapshot()

    line = one_line(proj.cli("keys", "rotate", LINEAGE_KEY_PASSPHRASE="b"), 5)
    assert "wrong passphrase" in line
    line = one_line(proj.cli("keys", "init", LINEAGE_KEY_PASSPHRASE="b"), 5)
    assert "wrong passphrase" in line
    line = one_line(proj.cli("keys", "rotate"), 5)
    assert "no passphrase was given" in line

    assert {p.name: p.read_bytes() for p in proj.ring.folder.iterdir() if p.is_file()} == keys
    assert not (proj.ring.folder / "retired").exists()
    assert proj.snapshot() == before
    # Showing and verifying need no private key, so no passphrase.
    code, out, _ = proj.cli("keys", "show", "--json", LINEAGE_KEY_PASSPHRASE="b")
    assert code == 0 and json.loads(out)[0]["current"] is True
    assert proj.cli("verify")[0] == 0


# --- the database -----------------------------------------------------------------------------


def test_a_missing_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    proj = Project.create(tmp_path / "proj")
    for args in (("verify",), ("export", "--out", str(tmp_path / "out")), ("prove", "0")):
        line = one_line(proj.main(monkeypatch, capsys, *args), 8)
        assert f"no log database at {proj.db}" in line
    assert not proj.db.exists()
    assert not (tmp_path / "out").exists()
    assert "no log database" in one_line(proj.cli("verify"), 8)


def test_a_file_that_is_not_a_database(
    proj: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    proj.db.write_bytes(b"this is not DuckDB" * 100)
    line = one_line(proj.main(monkeypatch, capsys, "verify"), 8)
    assert f"cannot open {proj.db}" in line


HOLD_LOCK = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])  # read-write: an exclusive lock on the file
con.execute("SELECT count(*) FROM log_entries").fetchall()
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_a_database_locked_by_another_process_for_longer_than_the_timeout(
    proj: Project,
) -> None:
    before = proj.snapshot()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(proj.db), "30"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        for args in (("verify",), ("export", "--out", str(proj.root / "out"))):
            started = time.monotonic()
            line = one_line(proj.cli(*args, LINEAGE_LOCK_TIMEOUT="0.5"), 9)
            assert time.monotonic() - started >= 0.5
            assert f"{proj.db} is locked by another process (waited 0.5s)" in line
    finally:
        holder.kill()
        holder.wait()
    assert proj.snapshot() == before
    assert proj.cli("verify")[0] == 0


def test_the_lock_timeout_setting() -> None:
    env = {"LINEAGE_PROJECT": "/tmp/p"}
    assert Settings.from_env(env, Path("/")).lock_timeout_s == 30.0
    short = Settings.from_env({**env, "LINEAGE_LOCK_TIMEOUT": "2.5"}, Path("/"))
    assert short.lock_timeout_s == 2.5
    for bad in ("soon", "-1", "nan", "inf"):
        with pytest.raises(ConfigError, match="LINEAGE_LOCK_TIMEOUT"):
            Settings.from_env({**env, "LINEAGE_LOCK_TIMEOUT": bad}, Path("/"))


def test_a_bad_lock_timeout_is_one_line(
    proj: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    line = one_line(proj.main(monkeypatch, capsys, "verify", LINEAGE_LOCK_TIMEOUT="soon"), 2)
    assert "LINEAGE_LOCK_TIMEOUT='soon'" in line


# --- prove and export -------------------------------------------------------------------------


def test_prove_prints_a_proof_that_verifies_against_the_checkpoint(
    proj: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = proj.main(monkeypatch, capsys, "prove", "1")
    assert (code, err) == (0, "")
    proof = json.loads(out)
    envelope = bytes(proj.sql("SELECT envelope FROM log_entries WHERE idx = 1")[0][0])
    assert proof["leaf_hash"] == leaf_hash(envelope).hex()
    verify_inclusion(
        leaf_hash(envelope),
        1,
        proof["tree_size"],
        [bytes.fromhex(h) for h in proof["proof"]],
        bytes.fromhex(proof["checkpoint"]["root_hash"]),
    )
    line = one_line(proj.main(monkeypatch, capsys, "prove", "3"), 7)
    assert "no record 3 in a log of 3" in line


def test_export_to_a_place_it_cannot_write(
    proj: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = proj.root / "file"
    blocker.write_text("not a folder")
    line = one_line(proj.main(monkeypatch, capsys, "export", "--out", str(blocker / "sub")), 2)
    assert "cannot write the bundle" in line


# --- keys: init, rotate, show -----------------------------------------------------------------


def test_keys_init_rotate_show(tmp_path: Path) -> None:
    proj = Project.create(tmp_path / "proj", keys=False)
    code, out, err = proj.cli("keys", "init", LINEAGE_KEY_PASSPHRASE="pw")
    assert (code, err) == (0, "")
    first = out.split()[-1]
    assert proj.cli("keys", "init", LINEAGE_KEY_PASSPHRASE="pw")[1].split()[-1] == first
    assert (proj.ring.private_path.stat().st_mode & 0o777) == 0o600
    append_records(proj.store, proj.signer("pw"), [dataset(0), dataset(1)])

    code, out, err = proj.cli("keys", "rotate", LINEAGE_KEY_PASSPHRASE="pw")
    assert (code, err) == (0, "")
    second = proj.signer("pw").keyid
    assert second != first and second in out
    append_records(proj.store, proj.signer("pw"), [dataset(2)])
    assert not (proj.ring.folder / "retired").exists()  # destroyed by default (issue 16)

    code, out, _ = proj.cli("keys", "show", "--json")
    shown = {row["keyid"]: row["current"] for row in json.loads(out)}
    assert shown == {first: False, second: True}
    table, _ = proj.store.read_log()
    # The old key signed the key-transition record that names the new one.
    assert table.column("keyid").to_pylist() == [first, first, first, second]
    assert table.column("kind").to_pylist()[2] == "key-transition"
    code, out, _ = proj.cli("verify", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["records"] == 4 and sorted(report["keyids"]) == sorted([first, second])
