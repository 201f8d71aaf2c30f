"""Hostile input: fuzzed parsers, forged, replayed and malformed bundles, a 100 MB payload, and
private keys that must never leak (file mode checked, never printed, passphrase only from the
environment).

The fuzz targets are shared with `benchmarks/fuzz.py`, which runs them for minutes; here each runs
LINEAGE_FUZZ_EXAMPLES (300) examples, seeded by LINEAGE_FAULT_SEED when set.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import re
import struct
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import click
import dagster as dg
import pyarrow as pa
import pyarrow.feather as feather
import pytest
import typer.main
from cryptography.hazmat.primitives import serialization

from lineage_platform import usage
from lineage_platform.attest import ORIGIN
from lineage_platform.audit import CHECKPOINT, ENVELOPES, KEYS, verify_bundle
from lineage_platform.canonical import loads_strict
from lineage_platform.cli import app
from lineage_platform.dagster.resources import platform_resources
from lineage_platform.errors import (
    KeyFileError,
    LineageError,
    RecordError,
    UsageError,
    VerificationError,
)
from lineage_platform.log import Checkpoint, SignedCheckpoint, leaf_hash, root_from_leaves
from lineage_platform.records import (
    PAYLOAD_TYPE,
    AttributionRecord,
    Contributor,
    InputRef,
    utc_timestamp,
)
from lineage_platform.signing import (
    MAX_ENVELOPE_BYTES,
    Envelope,
    Signature,
    SigningKey,
    TrustStore,
    pae,
    sign_envelope,
)
from tests.faults.faultkit import SEED, cli_env, one_line, run
from tests.faults.fuzz_targets import BUILDERS, World, build_world

EXAMPLES = int(os.environ.get("LINEAGE_FUZZ_EXAMPLES") or 300)


# --- fuzzing ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("fuzz"))


@pytest.mark.parametrize("name", list(BUILDERS))
def test_fuzzed_input_raises_only_lineage_errors_and_never_verifies_changed(
    fuzz_world: World, name: str
) -> None:
    target = BUILDERS[name](fuzz_world)
    target.run(EXAMPLES, seed=SEED)
    assert target.examples >= EXAMPLES // 2, f"{name}: only {target.examples} examples ran"


NESTED = b"[" * 200_000 + b"]" * 200_000


@pytest.mark.parametrize(
    "parse",
    [
        AttributionRecord.from_bytes,
        Envelope.from_json,
        SignedCheckpoint.from_json,
        TrustStore.from_json,
        lambda data: loads_strict(data, "input"),
    ],
    ids=["record", "envelope", "checkpoint", "trust store", "loads_strict"],
)
def test_deep_nesting_is_refused_not_a_recursion_error(parse: object) -> None:
    with pytest.raises(LineageError, match=r"(nested|malformed|exceeds)"):
        parse(NESTED)  # type: ignore[operator]


# --- hostile bundles ----------------------------------------------------------------------------

H = [f"{i:02x}" * 32 for i in range(4)]


@pytest.fixture(scope="module")
def trusted() -> SigningKey:
    return SigningKey.generate()


def record(i: int, **changes: object) -> AttributionRecord:
    fields: dict[str, object] = dict(
        kind="dataset", asset=f"part_{i}", sha256=H[i], recorded_at=utc_timestamp(),
        contributors=(Contributor("alice", rows=10, sha256=H[i]),),
    )
    fields.update(changes)
    return AttributionRecord(**fields)  # type: ignore[arg-type]


def write_bundle(
    folder: Path, envelopes: list[bytes], signer: SigningKey, keys: TrustStore
) -> Path:
    """A bundle whose checkpoint `signer` signed over exactly these envelopes."""
    folder.mkdir(parents=True, exist_ok=True)
    root = root_from_leaves([leaf_hash(e) for e in envelopes])
    checkpoint = Checkpoint(ORIGIN, len(envelopes), root, utc_timestamp())
    (folder / ENVELOPES).write_bytes(b"".join(e + b"\n" for e in envelopes))
    (folder / CHECKPOINT).write_bytes(SignedCheckpoint.sign(checkpoint, signer).to_json() + b"\n")
    (folder / KEYS).write_bytes(keys.to_json())
    return folder


def signed(payload: bytes, key: SigningKey) -> bytes:
    return sign_envelope(payload, key).to_json()


def hostile_bundle(case: str, folder: Path, key: SigningKey) -> Path:
    trust = TrustStore.of(key)
    first = signed(record(0).to_bytes(), key)
    if case.startswith("forged"):
        # Someone else's key signs a record claiming a million rows ("as trusted": under the
        # trusted key's id); "throughout", it signs the checkpoint too and ships its own key.
        mallory = SigningKey.generate()
        lie = record(1, contributors=(Contributor("mallory", rows=10**6),)).to_bytes()
        if case == "forged":
            return write_bundle(folder, [first, signed(lie, mallory)], key, trust)
        if case == "forged as trusted":
            sig = Signature(key.keyid, mallory.sign(pae(PAYLOAD_TYPE, lie)))
            forged = Envelope(lie, PAYLOAD_TYPE, (sig,)).to_json()
            return write_bundle(folder, [first, forged], key, trust)
        return write_bundle(folder, [first, signed(lie, mallory)], mallory, TrustStore.of(mallory))
    if case == "replayed":
        # The same signed record twice, even under a checkpoint the trusted key signed.
        second = signed(record(1).to_bytes(), key)
        return write_bundle(folder, [first, second, first], key, trust)
    if case == "forward":
        # Record 0 claims an input that is only recorded later, at index 1.
        ahead = signed(record(0, inputs=(InputRef("part_1", H[1], 1),)).to_bytes(), key)
        return write_bundle(folder, [ahead, signed(record(1).to_bytes(), key)], key, trust)
    if case in ("control", "c1 control"):
        # Canonical JSON escapes U+001B as \u001b; C1 controls (U+009B, CSI) stay raw UTF-8.
        bad = "\\u001b[31m" if case == "control" else "\u009b31m"
        payload = record(1).to_bytes().replace(b'"id":"alice"', f'"id":"al{bad}ice"'.encode())
        assert payload != record(1).to_bytes()
        return write_bundle(folder, [first, signed(payload, key)], key, trust)
    raise AssertionError(case)


HOSTILE = {
    "forged": r"record 1: key [0-9a-f]{12}… is not trusted",
    "forged as trusted": r"record 1: signature does not verify with key [0-9a-f]{12}…",
    "forged throughout": r"checkpoint 0: .* key [0-9a-f]{12}… is not trusted",
    "replayed": r"record 2: replays record 0",
    "forward": r"record 0: input part_1 points forward to 1",
    "control": r"record 1: predicate\.contributors\[0\]\.id: must not contain control characters",
    "c1 control": r"record 1: predicate\.contributors\[0\]\.id: must not contain control char",
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_bundles_are_refused_with_one_clear_line(
    case: str, tmp_path: Path, trusted: SigningKey
) -> None:
    folder = hostile_bundle(case, tmp_path / "bundle", trusted)
    pinned = TrustStore.of(trusted)
    with pytest.raises(VerificationError, match=HOSTILE[case]):
        verify_bundle(folder, pinned)
    if case != "forged throughout":  # the forger's own keys.json vouches for it: pin keys
        with pytest.raises(VerificationError, match=HOSTILE[case]):
            verify_bundle(folder)
    pinned.save(tmp_path / "pinned.json")
    env = cli_env(tmp_path, tmp_path / "state")
    line = one_line(
        run(["verify", "--bundle", str(folder), "--keys", str(tmp_path / "pinned.json")], env),
        VerificationError.exit_code,
    )
    assert re.search(HOSTILE[case], line), line


@pytest.mark.parametrize("bad", ["al\x1bice", "al\nice", "al\x00ice", "al\x9bice", "al\x7fice"])
def test_records_and_usage_refuse_control_characters_in_ids(bad: str) -> None:
    with pytest.raises(RecordError, match=r"^id: must not contain control characters"):
        Contributor(bad)
    table = usage.one_event("clf", bad, 1, 5, "e1", datetime.now(UTC))
    with pytest.raises(UsageError, match="caller: row 0 is empty or has control characters"):
        usage.validate_events(table)


def test_an_arrow_file_with_forged_offsets_is_refused_not_a_crash(tmp_path: Path) -> None:
    """Found by benchmarks/fuzz.py: one changed byte in an Arrow file's string offsets read
    fine, then crashed the process (SIGSEGV) in the first kernel that read the column."""
    table = pa.table({"event_id": ["a", "b"], "model": ["clf", "clf"], "caller": ["x", "y"],
                      "units": [1, 2], "fee": [1, 2]})
    path = tmp_path / "calls.arrow"
    feather.write_feather(table, path, compression="uncompressed")
    offsets = struct.pack("<3i", 0, 3, 6)  # "clf", "clf"
    assert path.read_bytes().count(offsets) == 1
    path.write_bytes(path.read_bytes().replace(offsets, struct.pack("<3i", 0, 3, 1 << 30)))
    with pytest.raises(UsageError, match=r"calls\.arrow: unreadable \(.*offsets"):
        usage.read_events(path)


def test_a_usage_file_full_of_control_characters_gets_one_short_line(tmp_path: Path) -> None:
    """Found by atheris: Arrow's CSV error quotes the bad row, whose escaped control characters
    made a 700-character message."""
    path = tmp_path / "calls.csv"
    path.write_bytes(b"\x18" * 9 + b"\n" + b"\x18" * 60 + b"," + b"\x1b[2J" * 60 + b"\n")
    with pytest.raises(UsageError) as refused:
        usage.read_events(path)
    message = str(refused.value)
    assert "\n" not in message and "\x1b" not in message and len(message) < 300, message


HUGE = 100 * 1024 * 1024


def test_a_100_mb_payload_is_refused_fast_without_being_parsed(
    tmp_path: Path, trusted: SigningKey
) -> None:
    blob = b"A" * HUGE
    payload = b'{"_type":"' + blob + b'"}'
    envelope = b'{"payload":"' + blob + b'","payloadType":"x","signatures":[]}'
    for parse, what in (
        (AttributionRecord.from_bytes, "payload"),
        (Envelope.from_json, "envelope"),
        (SignedCheckpoint.from_json, "checkpoint"),
        (TrustStore.from_json, "trust store"),
    ):
        data = payload if parse is AttributionRecord.from_bytes else envelope
        took = []
        for _ in range(3):  # the fastest of three: a busy machine may pause any one of them
            started = time.perf_counter()
            with pytest.raises(LineageError, match=rf"{what}: {len(data)} bytes exceeds") as no:
                parse(data)  # type: ignore[operator]
            took.append(time.perf_counter() - started)
        assert min(took) < 0.01, (what, took)  # a length check: JSON-parsing 100 MB takes 100x
        assert len(str(no.value)) < 200

    # The same envelope inside a bundle, under a checkpoint the trusted key signed over it.
    first = signed(record(0).to_bytes(), trusted)
    folder = write_bundle(tmp_path / "bundle", [first, envelope], trusted, TrustStore.of(trusted))
    started = time.perf_counter()
    with pytest.raises(VerificationError, match=r"^record 1: envelope: \d+ bytes exceeds"):
        verify_bundle(folder, TrustStore.of(trusted))
    assert time.perf_counter() - started < 5  # reading the file, not decoding 100 MB of base64


def test_an_oversized_line_in_a_bundle_fails_the_cli_with_one_short_line(
    tmp_path: Path, trusted: SigningKey
) -> None:
    huge = b'{"payload":"' + b"A" * (MAX_ENVELOPE_BYTES + 10) + b'"}'
    folder = write_bundle(tmp_path / "b", [huge], trusted, TrustStore.of(trusted))
    done = run(["verify", "--bundle", str(folder)], cli_env(tmp_path, tmp_path / "state"))
    line = one_line(done, VerificationError.exit_code)
    assert "exceeds" in line and len(line) < 300, line[:300]


# --- private keys -------------------------------------------------------------------------------

PASSPHRASE = "correct horse battery staple"


def _secrets(key: SigningKey, pem_on_disk: bytes) -> set[str]:
    """Every form in which the private key (or its passphrase) could leak into a message."""
    raw = key._key.private_bytes(  # the test may look; nothing else should
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    der = key._key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    clear_pem = key.to_pem(None).decode()
    forms = {
        PASSPHRASE,
        raw.hex(),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        base64.b64encode(der).decode(),
        repr(raw)[2:-1],
    }
    for pem in (clear_pem, pem_on_disk.decode()):
        forms.update(line for line in pem.splitlines() if len(line) >= 16 and "-----" not in line)
    return forms


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A state folder whose signing key `lineage keys init` encrypted under PASSPHRASE."""
    env = cli_env(tmp_path, tmp_path / "state", LINEAGE_KEY_PASSPHRASE=PASSPHRASE)
    done = run(["keys", "init"], env)
    assert done.returncode == 0, done.stderr
    yield tmp_path / "state" / "keys", env


def test_private_key_file_mode_is_checked(keyed: tuple[Path, dict[str, str]]) -> None:
    keys, env = keyed
    pem = keys / "signing.pem"
    assert pem.stat().st_mode & 0o777 == 0o600
    assert b"ENCRYPTED" in pem.read_bytes()  # the passphrase came from the environment
    for mode in (0o644, 0o640, 0o604):
        pem.chmod(mode)
        line = one_line(run(["keys", "rotate"], env), KeyFileError.exit_code)
        assert f"permissions {mode:04o} are too open; run `chmod 600 {pem}`" in line, line
    pem.chmod(0o600)
    assert run(["keys", "rotate"], env).returncode == 0


def test_private_key_material_never_appears_in_output(keyed: tuple[Path, dict[str, str]]) -> None:
    keys, env = keyed
    pem_path = keys / "signing.pem"
    pem = pem_path.read_bytes()
    key = SigningKey.load(pem_path, PASSPHRASE.encode())
    secrets = _secrets(key, pem)
    wrong = {**env, "LINEAGE_KEY_PASSPHRASE": "not it"}
    none = {k: v for k, v in env.items() if k != "LINEAGE_KEY_PASSPHRASE"}
    outputs = []

    def attempt(args: list[str], environ: dict[str, str], fails: bool = True) -> None:
        done = run(args, environ)
        assert (done.returncode != 0) == fails, (args, done.stdout, done.stderr)
        outputs.append(done.stdout + done.stderr)

    attempt(["keys", "rotate"], wrong)
    attempt(["keys", "rotate"], none)
    attempt(["keys", "rotate"], {**wrong, "LINEAGE_DEBUG": "1"})  # a traceback, still no key
    attempt(["settle"], wrong)
    attempt(["keys", "show", "--json"], env, fails=False)
    pem_path.write_bytes(pem[: len(pem) // 2])  # a key file cut short
    attempt(["keys", "rotate"], env)
    pem_path.write_bytes(key.to_pem(None))  # readable without a passphrase, yet one is given
    attempt(["keys", "rotate"], env)
    pem_path.chmod(0o644)
    attempt(["keys", "rotate"], none)
    assert "Traceback" in outputs[2]
    for text in outputs:
        leaked = [s for s in secrets if s in text]
        assert not leaked, f"private key material in output: {text[:500]}"
    for shown in (repr(key), str(key), repr(TrustStore.of(key)), repr(key.public_key)):
        assert not [s for s in secrets if s in shown], shown
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(key)


def _commands(command: click.Command) -> Iterator[click.Command]:
    yield command
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            yield from _commands(sub)


def test_the_passphrase_comes_only_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No command takes it as an argument (it would show in shell history and `ps`).
    for command in _commands(typer.main.get_command(app)):
        for param in command.params:
            names = [param.name or "", *getattr(param, "opts", [])]
            assert not any("pass" in n.lower() or "secret" in n.lower() for n in names), names
    # Dagster resources name the variable (dg.EnvVar, read at launch), never hold its value.
    (tmp_path / "workspace.yaml").write_text("load_from: []\n")
    monkeypatch.setenv("LINEAGE_PROJECT", str(tmp_path))
    monkeypatch.setenv("LINEAGE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("LINEAGE_KEY_PASSPHRASE", PASSPHRASE)
    resources = platform_resources(tmp_path)
    signer = resources["lineage_signer"]
    assert isinstance(signer.passphrase, dg.EnvVar)
    assert PASSPHRASE not in repr(resources) and PASSPHRASE not in json.dumps(
        {k: repr(v) for k, v in resources.items()}
    )
