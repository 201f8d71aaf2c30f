"""Witnesses (C2SP tlog-witness, tlog-cosignature): two on 127.0.0.1, a 2-of-2 policy.

The witnesses are real `lineage witness serve` processes with their own keys and state; the
log asks them through HTTP. An operator who forks the log cannot get the fork cosigned, so a
verifier with the policy, even one that never saw the log before, refuses it.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lineage_platform.attest import append_records
from lineage_platform.errors import WitnessError
from lineage_platform.log import (
    Checkpoint,
    SignedCheckpoint,
    consistency_proof,
    leaf_hash,
    root_from_leaves,
)
from lineage_platform.note import Note, NoteVerifier
from lineage_platform.signing import SigningKey
from lineage_platform.witness import AddCheckpoint, Witness, WitnessRefusal
from tests.gokit import go_checker
from tests.logkit import Project, dataset

ORIGIN = "example.org/log"


# -- the witness itself, in process -------------------------------------------------------------
@dataclass
class Log:
    key: SigningKey
    leaves: list[bytes]

    def note(self, size: int | None = None) -> bytes:
        n = len(self.leaves) if size is None else size
        cp = Checkpoint(ORIGIN, n, root_from_leaves(self.leaves[:n]))
        return SignedCheckpoint.sign(cp, self.key).to_note(self.key.public_key)

    def request(self, old: int, size: int | None = None) -> bytes:
        n = len(self.leaves) if size is None else size
        proof = consistency_proof(self.leaves, old, n) if 0 < old < n else []
        return AddCheckpoint(old, tuple(proof), self.note(n)).to_bytes()


@pytest.fixture
def log() -> Log:
    return Log(SigningKey.generate(), [leaf_hash(b"%d" % i) for i in range(20)])


@pytest.fixture
def witness(tmp_path: Path, log: Log) -> Witness:
    w = Witness.init(tmp_path / "w1", "witness.example/w1")
    w.follow(NoteVerifier(ORIGIN, log.key.public_key).vkey())
    return w


def refusal(w: Witness, body: bytes) -> WitnessRefusal:
    with pytest.raises(WitnessRefusal) as info:
        w.add_checkpoint(body)
    return info.value


def test_a_witness_cosigns_only_consistent_growth(witness: Witness, log: Log) -> None:
    lines = witness.add_checkpoint(log.request(0, 7))
    note = Note.parse(log.note(7) + lines)
    assert witness.verifier.verify(note)
    assert witness.witnessed(ORIGIN).tree_size == 7  # type: ignore[union-attr]
    # The size it last saw must be named; a 409 says which it is.
    stale = refusal(witness, log.request(0, 12))
    assert (stale.status, stale.body) == (409, b"7\n")
    witness.add_checkpoint(log.request(7, 12))
    # A fork: same size 12, other leaves; or growth with a proof that does not hold.
    forked = Log(log.key, log.leaves[:10] + [leaf_hash(b"x%d" % i) for i in range(10)])
    assert refusal(witness, forked.request(12, 12)).status == 409
    assert refusal(witness, forked.request(12, 15)).status == 422
    assert witness.witnessed(ORIGIN).tree_size == 12  # type: ignore[union-attr]
    # Rolled back: an old size above the new size is a bad request.
    assert refusal(witness, log.request(12, 9)).status == 400


def test_a_witness_refuses_unknown_logs_and_keys(witness: Witness, log: Log) -> None:
    other = Log(SigningKey.generate(), log.leaves)
    assert refusal(witness, other.request(0)).status == 403
    cp = Checkpoint("other.example/log", 3, root_from_leaves(log.leaves[:3]))
    note = SignedCheckpoint.sign(cp, log.key).to_note(log.key.public_key)
    assert refusal(witness, AddCheckpoint(0, (), note).to_bytes()).status == 404
    assert refusal(witness, b"old 01\n\n" + log.note()).status == 400


def test_state_survives_a_restart(witness: Witness, log: Log) -> None:
    witness.add_checkpoint(log.request(0, 5))
    again = Witness.open(witness.folder)
    assert refusal(again, log.request(0, 8)).body == b"5\n"


# -- two witnesses over HTTP, a 2-of-2 policy ---------------------------------------------------
@dataclass
class Served:
    folder: Path
    vkey: str
    url: str
    process: subprocess.Popen[str]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lineage_platform.cli", *args],
        capture_output=True, text=True, timeout=60, check=True,
    )


@pytest.fixture
def witnesses(tmp_path: Path) -> Iterator[list[Served]]:
    started: list[Served] = []
    try:
        for n in (1, 2):
            folder = tmp_path / f"witness{n}"
            vkey = cli("witness", "init", str(folder), "--name", f"w{n}.test").stdout.strip()
            process = subprocess.Popen(
                [sys.executable, "-m", "lineage_platform.cli", "witness", "serve", str(folder),
                 "--port", "0"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                start_new_session=True,
            )
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.startswith("witness listening on http://127.0.0.1:"), line
            started.append(Served(folder, vkey, line.split()[-1], process))
        yield started
    finally:
        for s in started:
            os.killpg(s.process.pid, signal.SIGTERM)
            s.process.wait(timeout=10)


@pytest.fixture
def project(tmp_path: Path, witnesses: list[Served]) -> Project:
    proj = Project.create(tmp_path / "proj")
    append_records(proj.store, proj.signer(), [dataset(i) for i in range(4)])
    append_records(proj.store, proj.signer(), [dataset(i) for i in range(4, 6)])
    log_vkey = proj.cli("checkpoint", "--vkey")[1].strip()
    for w in witnesses:
        cli("witness", "follow", str(w.folder), log_vkey)
    policy = "quorum = 2\n" + "".join(
        f'[[witness]]\nvkey = "{w.vkey}"\nurl = "{w.url}"\n' for w in witnesses
    )
    (proj.root / "witnesses.toml").write_text(policy)
    return proj


def run(proj: Project, *args: str, **env: str) -> tuple[int, str, str]:
    return proj.cli(*args, **env)


def test_two_witnesses_cosign_and_verify_requires_them(
    project: Project, witnesses: list[Served], tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    code, out, err = run(project, "verify")
    assert code == 17 and "no witnessed checkpoint" in err, err
    code, out, err = run(project, "witness", "publish")
    assert code == 0, err
    assert "size 6 cosigned by 2 witnesses (w1.test, w2.test)" in out
    append_records(project.store, project.signer(), [dataset(i) for i in range(6, 11)])
    code, out, err = run(project, "witness", "publish")  # from 6 to 11, with a proof
    assert code == 0 and "size 11 cosigned by 2" in out, err
    code, out, err = run(project, "verify")
    assert code == 0, err
    assert "witnessed: size 11 of 11 cosigned by w1.test, w2.test (2 of 2 required)" in out
    # Go's sumdb/note checks the log's signature and a witness's cosignature/v1.
    check = go_checker(tmp_path_factory)
    cosigned = project.home / "cosigned-checkpoint"
    log_vkey = project.cli("checkpoint", "--vkey")[1].strip()
    for w in witnesses:
        check("cosigned", log_vkey, w.vkey, str(cosigned))


def test_an_operator_who_forks_the_log_gets_no_cosignature(
    project: Project, witnesses: list[Served], tmp_path: Path
) -> None:
    assert run(project, "witness", "publish")[0] == 0  # size 6, cosigned
    # The operator rolls back to size 4 and appends other records: a fork of size 8.
    project.sql("DELETE FROM log_entries WHERE idx >= 4")
    project.sql("DELETE FROM checkpoints WHERE tree_size > 4")
    append_records(project.store, project.signer(), [dataset(100 + i) for i in range(4)])
    code, _, err = run(project, "witness", "publish")
    assert code == 17, err
    assert "w1.test refused" in err and "w2.test refused" in err
    # Asking as if the witnesses had seen nothing does not help: they say what they saw.
    body = AddCheckpoint(0, (), project.cli("checkpoint")[1].encode()).to_bytes()
    from lineage_platform.witness import post

    assert post(witnesses[0].url, body) == (409, b"6\n")
    # A verifier that never saw this log, with the policy, refuses the fork.
    fresh = str(tmp_path / "fresh")
    code, _, err = run(project, "verify", LINEAGE_VERIFIER_STATE=fresh)
    assert code == 7, err
    assert "is not consistent with size 6" in err and "witnessed checkpoint" in err


def test_a_re_keyed_history_fails_on_a_fresh_verifier_with_the_policy(
    project: Project, witnesses: list[Served], tmp_path: Path
) -> None:
    assert run(project, "witness", "publish")[0] == 0
    # The attacker re-signs the whole history with a key of their own and trusts only it.
    import shutil

    from lineage_platform.keys import KeyRing

    cosigned = (project.home / "cosigned-checkpoint").read_bytes()
    shutil.rmtree(project.home)
    ring = KeyRing(project.home / "keys")
    ring.init(None)
    forged = [dataset(i) for i in range(6)]
    forged[2] = dataset(2, asset="datanet/renamed")
    append_records(project.store, ring.signer(None), forged)
    fresh = {"LINEAGE_VERIFIER_STATE": str(tmp_path / "fresh")}
    code, _, err = run(project, "verify", **fresh)
    assert code == 17 and "no witnessed checkpoint" in err, err
    code, _, err = run(project, "witness", "publish")  # the witnesses know the real log's key
    assert code == 17 and "403" in err, err
    (project.home / "cosigned-checkpoint").write_bytes(cosigned)  # the real one, kept
    code, _, err = run(project, "verify", **fresh)
    assert code == 4 and "no signature by a trusted key" in err, err


def test_settlement_refuses_a_log_the_witnesses_do_not_cosign(
    project: Project, witnesses: list[Served], tmp_path: Path
) -> None:
    assert run(project, "witness", "publish")[0] == 0
    project.sql("DELETE FROM log_entries WHERE idx >= 4")
    project.sql("DELETE FROM checkpoints WHERE tree_size > 4")
    code, _, err = run(project, "settle", LINEAGE_VERIFIER_STATE=str(tmp_path / "fresh"))
    assert code == 17, err
    assert "has cosigned size 6, the log is at size 4" in err


def test_a_policy_names_each_witness_once_and_a_reachable_quorum(tmp_path: Path) -> None:
    from lineage_platform.errors import ConfigError
    from lineage_platform.witness import WitnessPolicy

    w = Witness.init(tmp_path / "w", "w.test")
    path = tmp_path / "witnesses.toml"
    path.write_text(f'quorum = 2\n[[witness]]\nvkey = "{w.verifier.vkey()}"\n')
    with pytest.raises(ConfigError, match="quorum 2 of 1"):
        WitnessPolicy.load(path)
    plain = NoteVerifier("w.test", w.key.public_key).vkey()
    path.write_text(f'quorum = 1\n[[witness]]\nvkey = "{plain}"\n')
    with pytest.raises(ConfigError, match="not a cosignature key"):
        WitnessPolicy.load(path)
    note = Note.parse(b"x\n\n" + base64.b64encode(b"") + b"\xe2\x80\x94 a AAAAAAAA\n")
    path.write_text(f'quorum = 1\n[[witness]]\nvkey = "{w.verifier.vkey()}"\n')
    with pytest.raises(WitnessError, match="cosigned by 0 of the 1"):
        WitnessPolicy.load(path).check(note, "x")


def test_concurrent_requests_from_one_size_are_cosigned_once(witness: Witness, log: Log) -> None:
    """The check of the old size and the update are one atomic step (tlog-witness's race)."""
    import threading

    witness.add_checkpoint(log.request(0, 4))
    results: list[int] = []

    def submit(size: int) -> None:
        try:
            witness.add_checkpoint(log.request(4, size))
            results.append(200)
        except WitnessRefusal as exc:
            results.append(exc.status)

    threads = [threading.Thread(target=submit, args=(size,)) for size in range(5, 17)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200] + [409] * 11
    assert witness.witnessed(ORIGIN).tree_size in range(5, 17)  # type: ignore[union-attr]


def test_the_file_exchange_gives_the_same_answers(tmp_path: Path, log: Log) -> None:
    folder = tmp_path / "offline-witness"
    vkey = cli("witness", "init", str(folder), "--name", "offline.test").stdout.strip()
    cli("witness", "follow", str(folder), NoteVerifier(ORIGIN, log.key.public_key).vkey())
    request = tmp_path / "request"
    request.write_bytes(log.request(0, 9))
    lines = cli("witness", "add", str(folder), str(request)).stdout.encode()
    assert NoteVerifier.from_vkey(vkey).verify(Note.parse(log.note(9) + lines))
    request.write_bytes(log.request(0, 12))
    done = subprocess.run(
        [sys.executable, "-m", "lineage_platform.cli", "witness", "add", str(folder),
         str(request)], capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 17 and "refused (409)" in done.stderr, done.stderr
