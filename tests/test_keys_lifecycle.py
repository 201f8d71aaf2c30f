"""Key lifecycle: pinned outside the state folder, rotated by a signed record, retired for good.

`lineage keys init` pins the public key in the user's config (here the per-test
LINEAGE_USER_CONFIG of conftest.py); `keys rotate` appends a key-transition record signed by
the old key and destroys the old private key; anything the old key signs after that record
fails verify, naming the record (or checkpoint) and the key.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from lineage_platform.attest import ORIGIN, append_records, entry_for
from lineage_platform.keys import KeyRing, user_trust_path
from lineage_platform.log import SignedCheckpoint
from lineage_platform.signing import SigningKey, TrustStore
from tests.logkit import Project, dataset


@pytest.fixture
def project(tmp_path: Path) -> Project:
    proj = Project.create(tmp_path / "proj", keys=False)
    code, _, err = proj.cli("keys", "init")
    assert code == 0, err
    append_records(proj.store, proj.signer(), [dataset(i) for i in range(4)])
    return proj


def test_keys_init_prints_the_keyid_and_pins_it_outside_the_state_folder(
    project: Project,
) -> None:
    code, out, _ = project.cli("keys", "init")  # re-runnable: same key
    keyid = out.split()[-1]
    assert keyid == project.signer().keyid
    pinned = TrustStore.load(Path(os.environ["LINEAGE_USER_CONFIG"]) / "trusted.json")
    assert pinned.keyids() == (keyid,)
    assert not str(user_trust_path()).startswith(str(project.home))
    code, out, _ = project.cli("verify")
    assert code == 0 and "keys:" not in out, out


def test_verify_says_when_it_trusts_keys_found_only_next_to_the_data(tmp_path: Path) -> None:
    proj = Project.create(tmp_path / "other")  # a key ring made without `lineage keys init`
    append_records(proj.store, proj.signer(), [dataset(0)])
    code, out, _ = proj.cli("verify")
    assert code == 0
    assert f"keys: trusting keys found only next to the data ({proj.ring.trust_path})" in out
    code, out, _ = proj.cli("verify", "--json")
    assert "next to the data" in json.loads(out)["trust"]


def test_a_re_keyed_history_fails_where_the_real_key_is_pinned(
    project: Project, tmp_path: Path
) -> None:
    shutil.rmtree(project.home)
    ring = KeyRing(project.home / "keys")
    ring.init(None)  # the attacker's key, trusted next to the data only
    append_records(project.store, ring.signer(None), [dataset(i) for i in range(4)])
    fresh = str(tmp_path / "never-saw-the-log")
    code, out, err = project.cli("verify", LINEAGE_VERIFIER_STATE=fresh)
    assert code == 7, (out, err)
    assert "is not trusted" in err
    code, out, _ = project.cli("verify", "--json", LINEAGE_VERIFIER_STATE=fresh + "2",
                               LINEAGE_USER_CONFIG=str(tmp_path / "no-config"))
    assert code == 0  # without anything pinned or remembered, nothing tells the forgery apart


def test_rotate_appends_a_signed_transition_and_destroys_the_old_key(project: Project) -> None:
    old = project.signer()
    code, out, err = project.cli("keys", "rotate")
    assert code == 0, err
    new = project.signer()
    assert f"{old.keyid[:16]}… retired at record 4 (private key destroyed)" in out
    assert not (project.ring.folder / "retired").exists()
    assert not (project.ring.folder / "signing.next.pem").exists()
    pem = project.ring.private_path.read_bytes()
    assert SigningKey.from_pem(pem, None).keyid == new.keyid != old.keyid
    table, _ = project.store.read_log()
    row = table.slice(4, 1).to_pylist()[0]
    assert (row["kind"], row["keyid"], row["sha256"]) == ("key-transition", old.keyid, new.keyid)
    pinned = TrustStore.load(user_trust_path())
    assert set(pinned.keyids()) == {old.keyid, new.keyid}
    append_records(project.store, new, [dataset(10)])
    code, out, err = project.cli("verify")
    assert code == 0, err


def test_keep_retired_keeps_the_old_key_only_encrypted(tmp_path: Path) -> None:
    proj = Project.create(tmp_path / "p", passphrase="pw")
    append_records(proj.store, proj.signer("pw"), [dataset(0)])
    code, _, err = proj.cli("keys", "rotate", "--keep-retired")
    assert code == 5 and "no passphrase was given" in err
    code, _, err = proj.cli("keys", "rotate", "--keep-retired", LINEAGE_KEY_PASSPHRASE="pw")
    assert code == 0, err
    [kept] = (proj.ring.folder / "retired").iterdir()
    assert b"ENCRYPTED" in kept.read_bytes()


def test_a_record_signed_by_a_retired_key_fails_naming_record_and_key(
    project: Project, tmp_path: Path
) -> None:
    old = project.signer()  # a copy of the old private key, taken before the rotation
    assert project.cli("keys", "rotate")[0] == 0
    append_records(project.store, old, [dataset(20)])  # index 5, after retirement at 4
    code, out, err = project.cli("verify")
    assert code == 7, (out, err)
    assert f"record 5: signed by key {old.keyid[:12]}…, retired at record 4" in err
    bundle = tmp_path / "bundle"
    assert project.cli("export", "--out", str(bundle))[0] == 0
    code, out, err = project.cli("verify", "--bundle", str(bundle))
    assert code == 7 and "record 5: signed by key" in err, err


def test_a_checkpoint_signed_by_a_retired_key_fails(project: Project) -> None:
    old = project.signer()
    assert project.cli("keys", "rotate")[0] == 0
    new = project.signer()
    # A record by the new key, but the operator signs the batch's checkpoint with the old one.
    project.store.append_entries(
        [entry_for(dataset(30), new)], lambda cp: SignedCheckpoint.sign(cp, old), ORIGIN
    )
    code, out, err = project.cli("verify")
    assert code == 7, (out, err)
    assert f"size 6: signed by key {old.keyid[:12]}…, retired at record 4" in err
