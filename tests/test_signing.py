"""Keys, key files, trust stores and DSSE envelopes, including interop with securesystemslib."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import pickle
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from lineage_platform.errors import KeyFileError, RecordError, SignatureError
from lineage_platform.records import PAYLOAD_TYPE
from lineage_platform.signing import (
    Envelope,
    PublicKey,
    Signature,
    SigningKey,
    TrustStore,
    keyid_for,
    open_stored,
    pae,
    passphrase_from_env,
    sign_envelope,
    signed_envelope_json,
    verify_envelope,
)

PAYLOAD = b'{"_type":"https://in-toto.io/Statement/v1","x":1}'


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="module")
def other() -> SigningKey:
    return SigningKey.generate()


# --- keys -----------------------------------------------------------------------------------------


def test_keyid_is_sha256_of_raw_public_key(key: SigningKey) -> None:
    raw = key.public_key.raw
    assert len(raw) == 32
    assert key.keyid == keyid_for(raw) == hashlib.sha256(raw).hexdigest()
    assert key.public_key.keyid == key.keyid


def test_public_key_round_trips(key: SigningKey) -> None:
    pk = key.public_key
    assert PublicKey.from_b64(pk.to_b64()) == pk
    assert PublicKey.from_raw(bytearray(pk.raw)) == pk
    assert base64.b64decode(pk.to_b64()) == pk.raw
    assert pk.keyid[:12] in repr(pk)


@pytest.mark.parametrize("raw", [b"", b"\x01" * 31, b"\x01" * 33])
def test_public_key_rejects_wrong_length(raw: bytes) -> None:
    with pytest.raises(KeyFileError, match="32 raw Ed25519 bytes"):
        PublicKey.from_raw(raw)
    with pytest.raises(KeyFileError):
        PublicKey.from_b64(base64.b64encode(raw).decode())
    with pytest.raises(KeyFileError, match="not valid base64"):
        PublicKey.from_b64("not base64!")


def test_sign_and_verify(key: SigningKey, other: SigningKey) -> None:
    sig = key.sign(b"data")
    assert len(sig) == 64
    key.public_key.verify(sig, b"data", "record 7")
    with pytest.raises(SignatureError) as exc:
        key.public_key.verify(sig, b"datA", "record 7")
    assert str(exc.value) == f"record 7: signature does not verify with key {key.keyid[:12]}…"
    with pytest.raises(SignatureError, match="record 7"):
        other.public_key.verify(sig, b"data", "record 7")
    with pytest.raises(SignatureError):
        key.public_key.verify(sig[:63], b"data", "record 7")


def test_signing_key_never_shows_key_material(key: SigningKey) -> None:
    pem = key.to_pem(None).decode()
    body = "".join(pem.splitlines()[1:-1])
    assert repr(key) == f"SigningKey(keyid={key.keyid[:12]}…)"
    assert str(key) == repr(key)
    assert body not in repr(key)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(key)
    assert copy.deepcopy(key) is key


def test_pem_round_trip_unencrypted_and_encrypted(key: SigningKey) -> None:
    plain = key.to_pem(None)
    assert plain.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert SigningKey.from_pem(plain, None).keyid == key.keyid
    enc = key.to_pem(b"correct horse")
    assert enc.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert SigningKey.from_pem(enc, b"correct horse").keyid == key.keyid


@pytest.mark.parametrize(
    ("passphrase_used", "passphrase_given", "message"),
    [
        (b"right", b"wrong", "wrong passphrase"),
        (b"right", None, "encrypted and no passphrase was given"),
        (None, b"spurious", "a passphrase was given but the key is not encrypted"),
        (b"right", b"", "passphrase is empty"),
    ],
)
def test_pem_passphrase_errors(
    key: SigningKey, passphrase_used: bytes | None, passphrase_given: bytes | None, message: str
) -> None:
    pem = key.to_pem(passphrase_used)
    with pytest.raises(KeyFileError) as exc:
        SigningKey.from_pem(pem, passphrase_given)
    text = str(exc.value)
    assert message in text
    assert "\n" not in text and "BEGIN" not in text


def test_pem_refuses_corrupt_and_foreign_keys() -> None:
    with pytest.raises(KeyFileError, match="not a readable PEM private key"):
        SigningKey.from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", None)
    with pytest.raises(KeyFileError, match="not a readable PEM"):
        SigningKey.from_pem(b"garbage", None)
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(KeyFileError, match="expected an Ed25519 key"):
        SigningKey.from_pem(ec_pem, None)
    with pytest.raises(KeyFileError, match="passphrase is empty"):
        SigningKey.generate().to_pem(b"")


def test_save_load_file_mode_and_overwrite(tmp_path: Path, key: SigningKey) -> None:
    path = tmp_path / "signing.pem"
    key.save(path, b"pw")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SigningKey.load(path, b"pw").keyid == key.keyid
    with pytest.raises(KeyFileError, match="already exists"):
        SigningKey.generate().save(path, b"pw")
    assert SigningKey.load(str(path), b"pw").keyid == key.keyid  # unchanged
    new = SigningKey.generate()
    new.save(path, None, overwrite=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SigningKey.load(path, None).keyid == new.keyid
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signing.pem"]  # no temp files left


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_load_refuses_readable_key_files(tmp_path: Path, key: SigningKey, mode: int) -> None:
    path = tmp_path / "k.pem"
    key.save(path, None)
    os.chmod(path, mode)
    with pytest.raises(KeyFileError) as exc:
        SigningKey.load(path, None)
    assert f"permissions {mode:04o} are too open" in str(exc.value)
    assert "chmod 600" in str(exc.value)


def test_load_errors_name_the_file(tmp_path: Path, key: SigningKey) -> None:
    with pytest.raises(KeyFileError, match="no such key file"):
        SigningKey.load(tmp_path / "missing.pem", None)
    path = tmp_path / "k.pem"
    key.save(path, b"pw")
    with pytest.raises(KeyFileError) as exc:
        SigningKey.load(path, b"nope")
    assert str(exc.value).startswith(f"{path}: wrong passphrase")


def test_passphrase_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LINEAGE_KEY_PASSPHRASE", raising=False)
    assert passphrase_from_env() is None
    monkeypatch.setenv("LINEAGE_KEY_PASSPHRASE", "")
    assert passphrase_from_env() is None
    monkeypatch.setenv("LINEAGE_KEY_PASSPHRASE", "sésame")
    assert passphrase_from_env() == "sésame".encode()
    monkeypatch.setenv("OTHER_VAR", "x")
    assert passphrase_from_env("OTHER_VAR") == b"x"


# --- trust store ----------------------------------------------------------------------------------


def test_trust_store_lookup(key: SigningKey, other: SigningKey) -> None:
    trust = TrustStore.of(key)
    assert trust.get(key.keyid, "record 1") == key.public_key
    assert key.keyid in trust and other.keyid not in trust
    assert trust.keys[key.keyid] == key.public_key
    assert list(trust) == [key.keyid] and len(trust) == 1
    with pytest.raises(SignatureError) as exc:
        trust.get(other.keyid, "record 1")
    assert str(exc.value) == f"record 1: key {other.keyid[:12]}… is not trusted"
    both = trust.with_key(other.public_key)
    assert set(both.keyids()) == {key.keyid, other.keyid}
    assert both == TrustStore.of(other, key) == TrustStore.of(key, other, key)
    assert hash(both) == hash(TrustStore.of(other.public_key, key.public_key))
    assert len(trust) == 1  # with_key returns a new store


def test_trust_store_json_round_trip(tmp_path: Path, key: SigningKey, other: SigningKey) -> None:
    trust = TrustStore.of(key, other)
    data = trust.to_json()
    assert json.loads(data) == {
        key.keyid: key.public_key.to_b64(),
        other.keyid: other.public_key.to_b64(),
    }
    assert TrustStore.from_json(data) == trust
    path = tmp_path / "trust.json"
    trust.save(path)
    assert TrustStore.load(path) == trust
    TrustStore.of(key).save(path)  # replacing is allowed: rotation rewrites the store
    assert TrustStore.load(path) == TrustStore.of(key)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{", "malformed JSON"),
        (b"[]", "expected a non-empty object"),
        (b"{}", "expected a non-empty object"),
        (b'{"ab": 5}', "expected a base64 string"),
        (b'{"ab": "%%%"}', "not valid base64"),
        (b'{"ab": "AAAA"}', "32 raw Ed25519 bytes"),
    ],
)
def test_trust_store_rejects_malformed(data: bytes, message: str) -> None:
    with pytest.raises(KeyFileError, match=message):
        TrustStore.from_json(data)


def test_trust_store_rejects_mismatched_keyid(key: SigningKey, other: SigningKey) -> None:
    forged = json.dumps({key.keyid: other.public_key.to_b64()}).encode()
    with pytest.raises(KeyFileError, match="does not match its key"):
        TrustStore.from_json(forged)


def test_trust_store_load_missing(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read trust store"):
        TrustStore.load(tmp_path / "none.json")


# --- DSSE -----------------------------------------------------------------------------------------


def test_pae_matches_dsse_spec_example() -> None:
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert pae("", b"") == b"DSSEv1 0  0 "
    assert pae("t\u00e9", b"x") == b"DSSEv1 3 t\xc3\xa9 1 x"  # length in bytes, not characters


def test_envelope_json_is_compact_sorted_and_round_trips(key: SigningKey) -> None:
    env = sign_envelope(PAYLOAD, key)
    data = env.to_json()
    obj = json.loads(data)
    assert data == json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    assert obj == {
        "payload": base64.b64encode(PAYLOAD).decode(),
        "payloadType": PAYLOAD_TYPE,
        "signatures": [
            {"keyid": key.keyid, "sig": base64.b64encode(env.signatures[0].sig).decode()}
        ],
    }
    assert Envelope.from_json(data) == env
    assert Envelope.from_json(data).to_json() == data
    verify_envelope(env, TrustStore.of(key), what="record 0")


@pytest.mark.parametrize("payload_type", [PAYLOAD_TYPE, "application/vnd.x+json", "t\"\u00e9"])
def test_the_append_path_writes_the_envelope_to_json_writes(
    key: SigningKey, other: SigningKey, payload_type: str
) -> None:
    """`signed_envelope_json` skips building the Envelope: its bytes must be the envelope's,
    with either key, any payload type (escaped as JSON) and payloads of any length."""
    for payload in (PAYLOAD, b"", b"x", b"\x00\xff" * 37):
        for signer in (key, other):
            data = signed_envelope_json(payload, signer, payload_type)
            env = Envelope.from_json(data)
            assert (env.payload, env.payload_type, env.keyids()) == (
                payload,
                payload_type,
                (signer.keyid,),
            )
            assert data == env.to_json()
            assert data == json.dumps(
                json.loads(data), sort_keys=True, separators=(",", ":")
            ).encode()
            verify_envelope(env, TrustStore.of(signer))  # Ed25519 is deterministic: same sig
            assert env == sign_envelope(payload, signer, payload_type)


def _env_json(**changes: Any) -> bytes:
    key = SigningKey.generate()
    obj: dict[str, Any] = json.loads(sign_envelope(PAYLOAD, key).to_json())
    for k, v in changes.items():
        if v is None:
            del obj[k]
        else:
            obj[k] = v
    return json.dumps(obj).encode()


SIG64 = base64.b64encode(b"\x00" * 64).decode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{", "envelope: malformed JSON"),
        (b"[]", "envelope: expected a JSON object"),
        (b'{"payload":"","payload":""}', "duplicate key"),
        (_env_json(payload=None), "payload: missing"),
        (_env_json(payload="***"), "payload: not valid base64"),
        (_env_json(payload="QQ"), "payload: not valid base64"),
        (_env_json(payload=5), "payload: expected a base64 string"),
        (_env_json(payloadType=None), "payloadType: missing"),
        (_env_json(payloadType=""), "payloadType: expected a non-empty string"),
        (_env_json(payloadType=1), "payloadType: expected a non-empty string"),
        (_env_json(extra=1), "extra: unknown key"),
        (_env_json(signatures=[]), "signatures: expected a non-empty array"),
        (_env_json(signatures={}), "signatures: expected a non-empty array"),
        (_env_json(signatures=["x"]), "signatures[0]: expected an object"),
        (_env_json(signatures=[{"sig": SIG64}]), "signatures[0].keyid: missing"),
        (_env_json(signatures=[{"keyid": "k"}]), "signatures[0].sig: missing"),
        (
            _env_json(signatures=[{"keyid": 1, "sig": SIG64}]),
            "signatures[0].keyid: expected a string",
        ),
        (
            _env_json(signatures=[{"keyid": "k", "sig": SIG64, "cert": ""}]),
            "signatures[0].cert: unknown key",
        ),
        (
            _env_json(signatures=[{"keyid": "k", "sig": base64.b64encode(b"\x00" * 63).decode()}]),
            "signatures[0].sig: expected 64 bytes, got 63",
        ),
        (
            _env_json(signatures=[{"keyid": "k", "sig": "@@"}]),
            "signatures[0].sig: not valid base64",
        ),
    ],
)
def test_envelope_from_json_is_strict(data: bytes, message: str) -> None:
    with pytest.raises(RecordError) as exc:
        Envelope.from_json(data)
    assert message in str(exc.value)


def test_envelope_construction_is_validated() -> None:
    with pytest.raises(RecordError, match="at least one signature"):
        Envelope(PAYLOAD, PAYLOAD_TYPE, ())
    with pytest.raises(RecordError, match="64 bytes"):
        Signature("k", b"\x00" * 10)


def test_envelope_accepts_url_safe_base64(key: SigningKey) -> None:
    env = sign_envelope(b"\xfb\xff\xfe" * 10, key)
    obj = json.loads(env.to_json())
    obj["payload"] = base64.urlsafe_b64encode(env.payload).decode().rstrip("=")
    parsed = Envelope.from_json(json.dumps(obj).encode())
    assert parsed == env
    verify_envelope(parsed, TrustStore.of(key))


def test_every_byte_of_payload_and_signature_is_covered(key: SigningKey) -> None:
    env = sign_envelope(PAYLOAD, key)
    trust = TrustStore.of(key)
    for i in range(len(env.payload)):
        bad = bytearray(env.payload)
        bad[i] ^= 0x01
        with pytest.raises(SignatureError, match="record 3: signature does not verify"):
            verify_envelope(
                Envelope(bytes(bad), env.payload_type, env.signatures), trust, "record 3"
            )
    sig = env.signatures[0]
    for i in range(64):
        bad = bytearray(sig.sig)
        bad[i] ^= 0x80
        forged = Envelope(env.payload, env.payload_type, (Signature(sig.keyid, bytes(bad)),))
        with pytest.raises(SignatureError):
            verify_envelope(forged, trust)
    for t in ("application/json", PAYLOAD_TYPE + " ", "Application/vnd.in-toto+json"):
        with pytest.raises(SignatureError):
            verify_envelope(Envelope(env.payload, t, env.signatures), trust)


@settings(max_examples=60, deadline=None)
@given(payload=st.binary(max_size=200), data=st.data())
def test_tampering_with_serialized_envelope_never_verifies(
    payload: bytes, data: st.DataObject
) -> None:
    key = _module_key()
    trust = TrustStore.of(key)
    blob = bytearray(sign_envelope(payload, key).to_json())
    i = data.draw(st.integers(0, len(blob) - 1))
    blob[i] = data.draw(st.integers(0, 255).filter(lambda b: b != blob[i]))
    try:
        env = Envelope.from_json(bytes(blob))
    except RecordError:
        return  # malformed is refused
    try:
        verify_envelope(env, trust)
    except SignatureError:
        return
    # Verification may pass only if what was signed is unchanged (e.g. a non-canonical base64
    # spelling of the same bytes; the verifier separately insists on canonical stored bytes).
    assert env.payload == payload and env.payload_type == PAYLOAD_TYPE
    assert env.signatures[0].keyid == key.keyid


@settings(max_examples=150, deadline=None)
@given(payload=st.binary(max_size=120), data=st.data())
def test_open_stored_agrees_with_the_general_path(payload: bytes, data: st.DataObject) -> None:
    """The verify hot path opens exactly the canonical one-signature envelopes, raising what
    `verify_envelope` raises; whatever else it leaves (None) to the general path."""
    key = _module_key()
    trust = TrustStore.of(key)
    blob = bytearray(sign_envelope(payload, key).to_json())
    for _ in range(data.draw(st.integers(0, 2))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    stored = bytes(blob)
    env = Envelope.from_stored(stored)  # the canonical bytes parse; nothing else does
    try:
        opened = open_stored(stored, trust, "record 9")
    except SignatureError as exc:
        assert env is not None
        with pytest.raises(SignatureError) as general:
            verify_envelope(env, trust, "record 9")
        assert str(exc) == str(general.value)
        return
    if opened is None:
        return  # not the usual form: the general path judges it
    assert env is not None
    verify_envelope(env, trust)
    assert opened == (env.payload, env.payload_type, key.keyid)


def test_open_stored_refuses_untrusted_and_forged(key: SigningKey, other: SigningKey) -> None:
    stored = sign_envelope(PAYLOAD, other).to_json()
    assert open_stored(stored, TrustStore.of(other)) == (PAYLOAD, PAYLOAD_TYPE, other.keyid)
    with pytest.raises(SignatureError) as exc:
        open_stored(stored, TrustStore.of(key), "record 42")
    assert str(exc.value) == f"record 42: key {other.keyid[:12]}… is not trusted"
    forged = stored.replace(other.keyid.encode(), key.keyid.encode())
    with pytest.raises(SignatureError, match=f"does not verify with key {key.keyid[:12]}"):
        open_stored(forged, TrustStore.of(key), "record 5")
    both = Envelope(PAYLOAD, PAYLOAD_TYPE, sign_envelope(PAYLOAD, key).signatures * 2)
    assert open_stored(both.to_json(), TrustStore.of(key)) is None  # the general path's case
    assert open_stored(stored.replace(b",", b", ", 1), TrustStore.of(other)) is None


_KEY: list[SigningKey] = []


def _module_key() -> SigningKey:
    if not _KEY:
        _KEY.append(SigningKey.generate())
    return _KEY[0]


def test_untrusted_key_is_refused(key: SigningKey, other: SigningKey) -> None:
    env = sign_envelope(PAYLOAD, other)
    with pytest.raises(SignatureError) as exc:
        verify_envelope(env, TrustStore.of(key), what="record 42")
    assert str(exc.value) == f"record 42: key {other.keyid[:12]}… is not trusted"
    with pytest.raises(SignatureError, match="not trusted"):
        verify_envelope(env, TrustStore.of())


def test_keyid_claiming_a_trusted_key_does_not_help(key: SigningKey, other: SigningKey) -> None:
    env = sign_envelope(PAYLOAD, other)
    lying = Envelope(env.payload, env.payload_type, (Signature(key.keyid, env.signatures[0].sig),))
    with pytest.raises(SignatureError, match=f"does not verify with key {key.keyid[:12]}"):
        verify_envelope(lying, TrustStore.of(key), what="record 5")


def test_key_rotation_keeps_old_records_verifiable(key: SigningKey, other: SigningKey) -> None:
    old_env = sign_envelope(b"old record", key)
    new_env = sign_envelope(b"new record", other)
    rotated = TrustStore.of(key).with_key(other.public_key)
    verify_envelope(old_env, rotated)
    verify_envelope(new_env, rotated)
    with pytest.raises(SignatureError, match="not trusted"):
        verify_envelope(old_env, TrustStore.of(other))


def test_multiple_signatures(key: SigningKey, other: SigningKey) -> None:
    a = sign_envelope(PAYLOAD, key)
    b = sign_envelope(PAYLOAD, other)
    both = Envelope(PAYLOAD, PAYLOAD_TYPE, a.signatures + b.signatures)
    verify_envelope(both, TrustStore.of(other))  # the untrusted extra signer is skipped
    verify_envelope(Envelope.from_json(both.to_json()), TrustStore.of(key))
    broken = Envelope(PAYLOAD, PAYLOAD_TYPE, (Signature(key.keyid, b"\x00" * 64), *b.signatures))
    verify_envelope(broken, TrustStore.of(key, other))  # one good trusted signature suffices
    with pytest.raises(SignatureError, match="does not verify"):
        verify_envelope(broken, TrustStore.of(key))


# --- interoperability with securesystemslib -------------------------------------------------------


def _sslib_key(private: Ed25519PrivateKey, keyid: str | None) -> Any:
    from securesystemslib.signer import SSlibKey  # type: ignore[attr-defined]

    return SSlibKey.from_crypto(private.public_key(), keyid=keyid)


def test_our_envelope_verifies_with_securesystemslib() -> None:
    from securesystemslib.dsse import Envelope as SslibEnvelope

    private = Ed25519PrivateKey.generate()
    ours = SigningKey(private)
    data = sign_envelope(PAYLOAD, ours).to_json()
    theirs = SslibEnvelope.from_dict(json.loads(data))
    assert theirs.payload == PAYLOAD and theirs.payload_type == PAYLOAD_TYPE
    accepted = theirs.verify([_sslib_key(private, ours.keyid)], 1)
    assert list(accepted) == [ours.keyid]

    from securesystemslib.exceptions import VerificationError

    stranger = Ed25519PrivateKey.generate()
    with pytest.raises(VerificationError):
        theirs.verify([_sslib_key(stranger, ours.keyid)], 1)


def test_securesystemslib_envelope_verifies_with_ours() -> None:
    from securesystemslib.dsse import Envelope as SslibEnvelope
    from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]

    private = Ed25519PrivateKey.generate()
    ours = SigningKey(private)
    signer = CryptoSigner(private, _sslib_key(private, ours.keyid))
    theirs = SslibEnvelope(PAYLOAD, PAYLOAD_TYPE, {})
    theirs.sign(signer)
    data = json.dumps(theirs.to_dict()).encode()
    env = Envelope.from_json(data)
    verify_envelope(env, TrustStore.of(ours.public_key), what="sslib envelope")
    with pytest.raises(SignatureError, match="not trusted"):
        verify_envelope(env, TrustStore.of(SigningKey.generate()))

    # With securesystemslib's own keyid scheme the signature is still ours to check, by that id.
    default = CryptoSigner(private)
    other_id = SslibEnvelope(PAYLOAD, PAYLOAD_TYPE, {})
    other_id.sign(default)
    env2 = Envelope.from_json(json.dumps(other_id.to_dict()).encode())
    assert env2.signatures[0].keyid != ours.keyid
    ours.public_key.verify(env2.signatures[0].sig, env2.pae(), "sslib default keyid")


_B64_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ \n"


def _reencodes(text: bytes) -> bytes | None:
    """The definition the fast check must agree with: decode leniently, re-encode, compare."""
    try:
        raw = base64.b64decode(text)
    except ValueError:
        return None
    return raw if base64.b64encode(raw) == text else None


@settings(max_examples=3000, deadline=None)
@given(
    st.binary(max_size=12),
    st.lists(st.tuples(st.integers(0, 20), st.sampled_from(_B64_CHARS)), max_size=3),
)
def test_stored_base64_is_accepted_exactly_when_it_is_the_standard_encoding(
    raw: bytes, edits: list[tuple[int, str]]
) -> None:
    from lineage_platform.signing import _b64_standard

    text = bytearray(base64.b64encode(raw))
    for pos, char in edits:  # replace, or append past the end: padding, stray bits, junk
        if pos < len(text):
            text[pos] = ord(char)
        else:
            text.append(ord(char))
    assert _b64_standard(bytes(text)) == _reencodes(bytes(text))
    assert _b64_standard(base64.b64encode(raw)) == raw


_EDITS = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.sampled_from(b'"\\=A/+ \x00\xff')),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.just(0)),
)


@settings(max_examples=400, deadline=None)
@given(
    payload=st.binary(max_size=90),
    payload_type=st.sampled_from([PAYLOAD_TYPE, "x", 'a"b', "a\\b", "é", "\x7f", " "]),
    keyid=st.one_of(st.sampled_from(["", " k ", "k\t"]), st.text(max_size=12)),
    edits=st.lists(_EDITS, max_size=3),
)
def test_the_envelope_reader_reads_what_the_split_reads(
    payload: bytes, payload_type: str, keyid: str, edits: list[tuple[str, int, int]]
) -> None:
    """`_one_signature` reads the bytes between payload and signature once per signer
    (`_header`): it returns exactly what reading every piece returns, and that only for the
    exact bytes `to_json()` writes (edited near the header or anywhere else)."""
    from lineage_platform.signing import _one_signature, _split_one_signature

    sig = bytes(range(64))
    try:
        blob = bytearray(Envelope(payload, payload_type, (Signature(keyid, sig),)).to_json())
    except UnicodeEncodeError:
        return  # a lone surrogate: no envelope to write
    for what, at, byte in edits:
        i = at % (len(blob) + 1)
        if what == "set" and i < len(blob):
            blob[i] = byte
        elif what == "insert":
            blob.insert(i, byte)
        elif what == "delete" and i < len(blob):
            del blob[i]
    data = bytes(blob)

    def outcome(reader: Any) -> Any:
        try:
            return reader(data)
        except UnicodeDecodeError:  # non-ASCII in a field: `stored_parts` returns None
            return "raises"

    read = outcome(_one_signature)
    assert read == outcome(_split_one_signature)
    if read == "raises":
        return
    if read is not None:
        got = Envelope(read[0], read[1], (Signature(read[2], read[3]),))
        assert got.to_json() == data
    if not edits and payload_type.isascii() and keyid.isascii():
        unescaped = all(c not in '"\\' and c.isprintable() for c in payload_type + keyid)
        assert (read == (payload, payload_type, keyid, sig)) == unescaped


@pytest.mark.parametrize("length", [0, 1, 63, 65, 66, 67, 128])
def test_the_envelope_reader_takes_only_64_byte_signatures(key: SigningKey, length: int) -> None:
    from lineage_platform.signing import _one_signature, _split_one_signature

    stored = sign_envelope(PAYLOAD, key).to_json()
    sig_b64 = json.loads(stored)["signatures"][0]["sig"].encode()
    other = stored.replace(sig_b64, base64.b64encode(os.urandom(length)))
    assert _one_signature(other) is None and _split_one_signature(other) is None
    assert Envelope.from_stored(other) is None
    assert _one_signature(stored) == _split_one_signature(stored) is not None
