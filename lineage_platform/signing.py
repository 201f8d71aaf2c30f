"""Ed25519 keys, key files, trust stores and DSSE envelopes (any DSSE verifier can check ours).

    env = sign_envelope(record.to_bytes(), SigningKey.load(path, passphrase_from_env()))
    verify_envelope(Envelope.from_json(stored), TrustStore.load(trust_path), what="record 42")

Verification returns None or raises SignatureError; nothing here returns a boolean to forget.
A keyid is the lowercase hex SHA-256 of the raw 32-byte public key, so anyone can recompute it.
Private key material never appears in a message, a repr or a log line.
"""

from __future__ import annotations

import binascii
import contextlib
import functools
import hashlib
import json
import operator
import os
import stat
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pybase64
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lineage_platform.canonical import loads_strict
from lineage_platform.errors import KeyFileError, RecordError, SignatureError, shown
from lineage_platform.records import MAX_RECORD_BYTES, PAYLOAD_TYPE

__all__ = [
    "MAX_ENVELOPE_BYTES",
    "MAX_TRUST_STORE_BYTES",
    "Envelope",
    "PublicKey",
    "Signature",
    "SigningKey",
    "TrustStore",
    "b64decode_strict",
    "keyid_for",
    "pae",
    "passphrase_from_env",
    "sign_envelope",
    "verify_envelope",
]

#: A record payload base64-encoded, plus room for a few signatures.
MAX_ENVELOPE_BYTES = MAX_RECORD_BYTES * 4 // 3 + 64 * 1024
#: About 9,000 keys: far more than any rotation history; a larger file is refused unparsed.
MAX_TRUST_STORE_BYTES = 1024 * 1024
_SIG_LEN = 64
_RAW_KEY_LEN = 32


def keyid_for(raw_public: bytes) -> str:
    """Lowercase hex SHA-256 of a raw 32-byte Ed25519 public key."""
    return hashlib.sha256(raw_public).hexdigest()


def passphrase_from_env(var: str = "LINEAGE_KEY_PASSPHRASE") -> bytes | None:
    """The key passphrase from an environment variable, or None when unset or empty.

    Called explicitly by the CLI and Dagster resources; nothing reads the environment on import.
    """
    value = os.environ.get(var)
    # surrogateescape gives back the exact bytes of a non-UTF-8 environment value.
    return value.encode("utf-8", "surrogateescape") if value else None


def b64decode_strict(text: object, what: str, error: type[Exception] = RecordError) -> bytes:
    """Strict base64 (standard alphabet, or URL-safe as DSSE also allows); no whitespace."""
    if not isinstance(text, str):
        raise error(f"{what}: expected a base64 string")
    if "-" in text or "_" in text:
        text = text.replace("-", "+").replace("_", "/")
        text += "=" * (-len(text) % 4)
    try:
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise error(f"{what}: not valid base64") from None


def _b64(data: bytes) -> str:
    return pybase64.b64encode(data).decode("ascii")


# What json.dumps does for a str with its default ensure_ascii=True, minus the Python overhead.
_json_ascii = json.encoder.encode_basestring_ascii


@functools.lru_cache(maxsize=64)
def _crypto_public(raw: bytes) -> Ed25519PublicKey:
    # Building the key object costs about as much as a verify; cache it per raw key.
    return Ed25519PublicKey.from_public_bytes(raw)


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A raw 32-byte Ed25519 public key; identified by `keyid`."""

    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != _RAW_KEY_LEN:
            raise KeyFileError("public key: expected 32 raw Ed25519 bytes")
        try:
            _crypto_public(self.raw)
        except ValueError:
            raise KeyFileError("public key: not a valid Ed25519 public key") from None

    @classmethod
    def from_raw(cls, raw: bytes | bytearray) -> PublicKey:
        return cls(bytes(raw))

    @classmethod
    def from_b64(cls, text: str) -> PublicKey:
        return cls(b64decode_strict(text, "public key", KeyFileError))

    def to_b64(self) -> str:
        return _b64(self.raw)

    @property
    def keyid(self) -> str:
        return keyid_for(self.raw)

    def verify(self, signature: bytes, data: bytes, what: str) -> None:
        """Return None if `signature` is this key's over `data`, else raise SignatureError."""
        try:
            _crypto_public(self.raw).verify(signature, data)
        except (InvalidSignature, TypeError, ValueError):
            raise SignatureError(
                f"{what}: signature does not verify with key {self.keyid[:12]}…"
            ) from None

    def __repr__(self) -> str:
        return f"PublicKey(keyid={self.keyid[:12]}…)"


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class SigningKey:
    """An Ed25519 private key. Its repr shows only the keyid; it never prints key material."""

    _key: Ed25519PrivateKey
    _public: PublicKey = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self._key, Ed25519PrivateKey):
            raise KeyFileError("private key: not an Ed25519 key")
        raw = self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        object.__setattr__(self, "_public", PublicKey(raw))

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, data: bytes, passphrase: bytes | None) -> SigningKey:
        """Load a PKCS#8 PEM key; every failure is one KeyFileError line without key material."""
        if passphrase is not None and not passphrase:
            raise KeyFileError("private key: the passphrase is empty")
        encrypted = b"ENCRYPTED" in data
        if encrypted and passphrase is None:
            raise KeyFileError(
                "private key: the key is encrypted and no passphrase was given "
                "(set LINEAGE_KEY_PASSPHRASE)"
            )
        if not encrypted and passphrase is not None:
            raise KeyFileError("private key: a passphrase was given but the key is not encrypted")
        try:
            key = serialization.load_pem_private_key(data, password=passphrase)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            if encrypted:
                raise KeyFileError(
                    "private key: wrong passphrase, or the encrypted key is corrupt"
                ) from None
            raise KeyFileError("private key: not a readable PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(
                f"private key: expected an Ed25519 key, found {type(key).__name__.lstrip('_')}"
            )
        return cls(key)

    def to_pem(self, passphrase: bytes | None) -> bytes:
        """PKCS#8 PEM; encrypted with the best available scheme when a passphrase is given."""
        encryption: serialization.KeySerializationEncryption
        if passphrase is None:
            encryption = serialization.NoEncryption()
        elif not passphrase:
            raise KeyFileError("private key: the passphrase is empty")
        else:
            encryption = serialization.BestAvailableEncryption(passphrase)
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    def save(
        self, path: str | os.PathLike[str], passphrase: bytes | None, *, overwrite: bool = False
    ) -> None:
        """Write the PEM atomically with mode 0600; refuse to replace a key unless asked."""
        _write_atomic(Path(path), self.to_pem(passphrase), 0o600, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike[str], passphrase: bytes | None) -> SigningKey:
        """Read a key file, refusing one that group or others can access (like ssh does)."""
        p = Path(path)
        try:
            st = p.stat()
            data = p.read_bytes()
        except FileNotFoundError:
            raise KeyFileError(f"{p}: no such key file") from None
        except OSError as e:
            raise KeyFileError(f"{p}: cannot read key file ({e.strerror})") from None
        if os.name == "posix" and st.st_mode & 0o077:
            raise KeyFileError(
                f"{p}: permissions {stat.S_IMODE(st.st_mode):04o} are too open; run `chmod 600 {p}`"
            )
        try:
            return cls.from_pem(data, passphrase)
        except KeyFileError as e:
            raise KeyFileError(f"{p}: {str(e).removeprefix('private key: ')}") from None

    @property
    def public_key(self) -> PublicKey:
        return self._public

    @property
    def keyid(self) -> str:
        return self._public.keyid

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def __repr__(self) -> str:
        return f"SigningKey(keyid={self.keyid[:12]}…)"

    def __reduce__(self) -> Any:
        # Pickling would write the private key to wherever the pickle goes.
        raise TypeError("SigningKey cannot be pickled; pass the key file path instead")

    def __copy__(self) -> SigningKey:
        return self  # immutable

    def __deepcopy__(self, memo: dict[int, Any]) -> SigningKey:
        return self


def _write_atomic(path: Path, data: bytes, mode: int, *, overwrite: bool) -> None:
    """Write via a temp file in the same directory; link (no overwrite) or rename into place."""
    directory = path.parent
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise KeyFileError(f"{path}: cannot write in {directory} ({e.strerror})") from None
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic create-if-absent, unlike exists() + rename
            except FileExistsError:
                raise KeyFileError(f"{path}: already exists; refusing to overwrite it") from None
            except OSError:  # no hard links on this filesystem: next best, check then rename
                if path.exists():
                    raise KeyFileError(
                        f"{path}: already exists; refusing to overwrite it"
                    ) from None
                os.rename(tmp, path)
    except OSError as e:
        raise KeyFileError(f"{path}: cannot write ({e.strerror})") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    with contextlib.suppress(OSError):  # make the new name durable; not all systems allow it
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@dataclass(frozen=True, slots=True)
class TrustStore:
    """The public keys whose signatures are accepted, by keyid; several allow key rotation."""

    public_keys: tuple[PublicKey, ...] = ()
    _by_id: dict[str, PublicKey] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        by_id: dict[str, PublicKey] = {}
        for k in self.public_keys:
            if not isinstance(k, PublicKey):
                raise KeyFileError("trust store: expected PublicKey values")
            by_id[k.keyid] = k
        ordered = tuple(by_id[i] for i in sorted(by_id))  # order-independent equality
        object.__setattr__(self, "public_keys", ordered)
        object.__setattr__(self, "_by_id", {k.keyid: k for k in ordered})

    @classmethod
    def of(cls, *keys: PublicKey | SigningKey) -> TrustStore:
        return cls(tuple(k.public_key if isinstance(k, SigningKey) else k for k in keys))

    def with_key(self, key: PublicKey | SigningKey) -> TrustStore:
        return TrustStore.of(*self.public_keys, key)

    def get(self, keyid: str, what: str = "signature") -> PublicKey:
        """The trusted key with this id, or SignatureError naming `what`."""
        try:
            return self._by_id[keyid]
        except (KeyError, TypeError):
            raise SignatureError(f"{what}: key {shown(str(keyid)[:12])}… is not trusted") from None

    def keyids(self) -> tuple[str, ...]:
        return tuple(self._by_id)

    @property
    def keys(self) -> Mapping[str, PublicKey]:
        """Read-only view keyid -> PublicKey."""
        return MappingProxyType(self._by_id)

    def __contains__(self, keyid: object) -> bool:
        return keyid in self._by_id

    def __getitem__(self, keyid: str) -> PublicKey:
        return self._by_id[keyid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def to_json(self) -> bytes:
        """`{keyid: base64 raw public key}`, sorted, one key per line."""
        body = {k.keyid: k.to_b64() for k in self.public_keys}
        return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode("ascii")

    @classmethod
    def from_json(cls, data: bytes) -> TrustStore:
        """Parse a trust store, checking each keyid against its key (a mismatch is tampering)."""
        if len(data) > MAX_TRUST_STORE_BYTES:
            raise KeyFileError(f"trust store: {len(data)} bytes exceeds {MAX_TRUST_STORE_BYTES}")
        try:
            obj = loads_strict(data, "trust store")
        except RecordError as e:
            raise KeyFileError(str(e)) from None
        if not isinstance(obj, dict) or not obj:
            raise KeyFileError("trust store: expected a non-empty object {keyid: base64 key}")
        keys = []
        for keyid, b64 in obj.items():
            try:
                key = PublicKey.from_b64(b64)
            except KeyFileError as e:
                raise KeyFileError(f"trust store: key {shown(keyid[:12])}…: {e}") from None
            if key.keyid != keyid:
                raise KeyFileError(
                    f"trust store: keyid {shown(keyid[:12])}… does not match its key "
                    f"(which is {key.keyid[:12]}…)"
                )
            keys.append(key)
        return cls(tuple(keys))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically (public keys: mode 0644), replacing the previous store."""
        _write_atomic(Path(path), self.to_json(), 0o644, overwrite=True)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrustStore:
        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as e:
            raise KeyFileError(f"{p}: cannot read trust store ({e.strerror})") from None
        try:
            return cls.from_json(data)
        except KeyFileError as e:
            raise KeyFileError(f"{p}: {e}") from None


# --- DSSE v1 ------------------------------------------------------------------------------------


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what is actually signed."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(payload), payload)


@dataclass(frozen=True, slots=True)
class Signature:
    """One DSSE signature: the signer's keyid (a lookup hint) and 64 Ed25519 signature bytes."""

    keyid: str
    sig: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.keyid, str):
            raise RecordError("signature.keyid: expected a string")
        if not isinstance(self.sig, bytes) or len(self.sig) != _SIG_LEN:
            raise RecordError(f"signature.sig: expected {_SIG_LEN} bytes")


_ENVELOPE_KEYS = ("payload", "payloadType", "signatures")
# The usual stored form: one signature, no escapes in the strings (see Envelope.from_stored),
# as its pieces between `"`s: the fixed ones, and None for each string's value.
_ONE_SIGNATURE = (
    *(b"{", b"payload", b":", None, b",", b"payloadType", b":", None, b","),
    *(b"signatures", b":[{", b"keyid", b":", None, b",", b"sig", b":", None, b"}]}"),
)
_ONE_SIGNATURE_FIXED = operator.itemgetter(
    *[i for i, piece in enumerate(_ONE_SIGNATURE) if piece is not None]
)
_FIXED_PIECES = _ONE_SIGNATURE_FIXED(_ONE_SIGNATURE)
_ONE_SIGNATURE_VALUES = operator.itemgetter(
    *[i for i, piece in enumerate(_ONE_SIGNATURE) if piece is None]
)


def _b64_standard(text: bytes) -> bytes | None:
    """The bytes whose standard base64 (RFC 4648 §4, padded) is exactly `text`, else None.

    pybase64's SIMD codec: on the hot path of verification, where the C binascii codec took
    a tenth of the per-record work besides the signature itself.
    """
    try:
        raw = pybase64.b64decode(text, None, True)  # validate; by position: a third of the call
    except (binascii.Error, ValueError):
        return None
    return raw if pybase64.b64encode(raw) == text else None


# The stored form's first and last bytes, and the base64 of a 64-byte signature: a whole
# envelope is _PAYLOAD_AT + payload + header (its payloadType, keyid) + sig + _SIG_END.
_PAYLOAD_AT = b'{"payload":"'
_SIG_END = b'"}]}'
_SIG_B64 = 88 + len(_SIG_END)  # bytes from the signature's base64 to the end


def _one_signature(data: bytes) -> tuple[bytes, str, str, bytes] | None:
    """(payload, payloadType, keyid, sig) when `data` is exactly what `Envelope.to_json()`
    writes for a one-signature envelope (the usual stored form), else None."""
    # The bytes between the payload and the signature repeat from envelope to envelope of one
    # signer: judged once each (`_header`), the rest is two base64 fields. Anything else is
    # judged by `_split_one_signature` (which this returns only what it would return).
    if data[:12] == _PAYLOAD_AT and data[-4:] == _SIG_END:
        end = data.find(b'"', 12)
        header = _header(data[end:-_SIG_B64])  # no quote (end -1): b"", not a header
        if header is not None:
            payload, sig = _b64_standard(data[12:end]), _b64_standard(data[-_SIG_B64:-4])
            if payload is not None and sig is not None and len(sig) == _SIG_LEN:
                return payload, header[0], header[1], sig
    return _split_one_signature(data)


@functools.lru_cache(maxsize=64)
def _header(between: bytes) -> tuple[str, str] | None:
    """(payloadType, keyid) when `between` is exactly what a one-signature envelope holds
    between its payload and its signature: what `_split_one_signature` reads there."""
    parts = _split_one_signature(_PAYLOAD_AT + between + b"A" * 86 + b"==" + _SIG_END)
    return None if parts is None else (parts[1], parts[2])


def _split_one_signature(data: bytes) -> tuple[bytes, str, str, bytes] | None:
    """`_one_signature`, by its pieces between quotes."""
    # Split at every quote (memchr, where a regex stepped through the payload byte by byte):
    # the layout is exact when the pieces are as many and the fixed ones are equal.
    pieces = data.split(b'"')
    if len(pieces) != len(_ONE_SIGNATURE) or _ONE_SIGNATURE_FIXED(pieces) != _FIXED_PIECES:
        return None
    b64_payload, b64_type, b64_keyid, b64_sig = _ONE_SIGNATURE_VALUES(pieces)
    if b"\\" in b64_type or b"\\" in b64_keyid:  # an escape: the general path judges it
        return None
    payload_type, keyid = b64_type.decode("ascii"), b64_keyid.decode("ascii")
    payload, sig = _b64_standard(b64_payload), _b64_standard(b64_sig)
    # What to_json() would write, piece by piece: printable ASCII strings need no escapes, a
    # signature is 64 bytes, and both base64 fields must be the standard encoding.
    if payload is None or sig is None or len(sig) != _SIG_LEN or not payload_type:
        return None
    if not (payload_type.isprintable() and keyid.isprintable()):
        return None
    return payload, payload_type, keyid, sig


def open_stored(
    data: bytes, trust: TrustStore, what: str = "envelope"
) -> tuple[bytes, str, str] | None:
    """(payload, payloadType, signer's keyid) of stored one-signature envelope bytes whose
    signature verifies with a trusted key; raises SignatureError as `verify_envelope` does.

    None when `data` is not exactly such an envelope's `to_json()`: the caller then takes
    `Envelope.from_json` and `verify_envelope`, which judge the other forms. The hot path of
    `lineage verify`, which skips building the Envelope.
    """
    one = stored_parts(data)
    if one is None:
        return None
    payload, payload_type, keyid, sig = one
    trust.get(keyid, what).verify(sig, pae(payload_type, payload), what)
    return payload, payload_type, keyid


def stored_parts(data: object) -> tuple[bytes, str, str, bytes] | None:
    """(payload, payloadType, keyid, sig) of stored one-signature envelope bytes, their
    signature not yet checked; None when `data` is not exactly such an envelope's `to_json()`
    (as for `open_stored`, which is this and the signature check)."""
    if type(data) is not bytes or len(data) > MAX_ENVELOPE_BYTES:
        return None
    try:
        return _one_signature(data)
    except Exception:  # e.g. non-ASCII in a field: the general path judges and names it
        return None


@dataclass(frozen=True, slots=True)
class Envelope:
    """A DSSE envelope. `to_json()` bytes are what the log stores and hashes into its leaf."""

    payload: bytes
    payload_type: str
    signatures: tuple[Signature, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.payload, bytes):
            raise RecordError("payload: expected bytes")
        if not isinstance(self.payload_type, str) or not self.payload_type:
            raise RecordError("payloadType: expected a non-empty string")
        if isinstance(self.signatures, list):
            object.__setattr__(self, "signatures", tuple(self.signatures))
        if not isinstance(self.signatures, tuple) or not self.signatures:
            raise RecordError("signatures: expected at least one signature")
        for i, s in enumerate(self.signatures):
            if not isinstance(s, Signature):
                raise RecordError(f"signatures[{i}]: expected a Signature")

    def pae(self) -> bytes:
        return pae(self.payload_type, self.payload)

    def keyids(self) -> tuple[str, ...]:
        return tuple(s.keyid for s in self.signatures)

    def to_json(self) -> bytes:
        """Compact JSON with sorted keys and no whitespace (standard base64 with padding)."""
        if len(self.signatures) == 1:
            s = self.signatures[0]
            return _one_signature_json(self.payload, self.payload_type, s.keyid, s.sig)
        sigs = ",".join(
            [f'{{"keyid":{_json_ascii(s.keyid)},"sig":"{_b64(s.sig)}"}}' for s in self.signatures]
        )
        return (
            f'{{"payload":"{_b64(self.payload)}","payloadType":{_json_ascii(self.payload_type)},'
            f'"signatures":[{sigs}]}}'
        ).encode("ascii")

    @classmethod
    def from_json(cls, data: bytes) -> Envelope:
        """Parse strictly: every malformed or missing or unknown field is a RecordError."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise RecordError(f"envelope: expected bytes, got {type(data).__name__}")
        if len(data) > MAX_ENVELOPE_BYTES:
            raise RecordError(f"envelope: {len(data)} bytes exceeds {MAX_ENVELOPE_BYTES}")
        data = bytes(data)
        env = cls.from_stored(data)
        if env is not None:
            return env
        return cls._from_obj(loads_strict(data, "envelope"))

    @classmethod
    def from_stored(cls, data: bytes) -> Envelope | None:
        """The envelope whose `to_json()` is exactly `data` (what the log stores), else None.

        The hot path of verification: the C decoder without hooks, then the re-encoding must
        equal the input. Canonical bytes hold no duplicate keys, NaN or bad UTF-8, so whenever
        this returns an envelope, `from_json` would have parsed the same one.
        """
        if not isinstance(data, bytes) or len(data) > MAX_ENVELOPE_BYTES:
            return None
        try:
            if one := _one_signature(data):
                payload, payload_type, keyid, sig = one
                return cls(payload, payload_type, (Signature(keyid, sig),))
            else:
                # Lenient parsing is fine: the re-encoding must reproduce every byte.
                obj = json.loads(data)
                a2b = binascii.a2b_base64
                sigs = tuple([Signature(s["keyid"], a2b(s["sig"])) for s in obj["signatures"]])
                env = cls(binascii.a2b_base64(obj["payload"]), obj["payloadType"], sigs)
            return env if env.to_json() == data else None
        except Exception:  # anything unexpected: let the strict parser judge (and name) it
            return None

    @classmethod
    def _from_obj(cls, obj: object) -> Envelope:
        if not isinstance(obj, dict):
            raise RecordError("envelope: expected a JSON object")
        _exact_keys(obj, "", _ENVELOPE_KEYS)
        payload = b64decode_strict(obj["payload"], "payload")
        payload_type = obj["payloadType"]
        if not isinstance(payload_type, str) or not payload_type:
            raise RecordError("payloadType: expected a non-empty string")
        raw_sigs = obj["signatures"]
        if not isinstance(raw_sigs, list) or not raw_sigs:
            raise RecordError("signatures: expected a non-empty array")
        sigs = []
        for i, s in enumerate(raw_sigs):
            path = f"signatures[{i}]"
            if not isinstance(s, dict):
                raise RecordError(f"{path}: expected an object")
            _exact_keys(s, path + ".", ("keyid", "sig"))
            if not isinstance(s["keyid"], str):
                raise RecordError(f"{path}.keyid: expected a string")
            sig = b64decode_strict(s["sig"], f"{path}.sig")
            if len(sig) != _SIG_LEN:
                raise RecordError(f"{path}.sig: expected {_SIG_LEN} bytes, got {len(sig)}")
            sigs.append(Signature(s["keyid"], sig))
        return cls(payload, payload_type, tuple(sigs))


def _exact_keys(obj: dict[str, Any], prefix: str, keys: tuple[str, ...]) -> None:
    for k in obj:
        if k not in keys:
            raise RecordError(f"{prefix}{shown(k)}: unknown key")
    for k in keys:
        if k not in obj:
            raise RecordError(f"{prefix}{k}: missing")


def _one_signature_json(payload: bytes, payload_type: str, keyid: str, sig: bytes) -> bytes:
    """`Envelope.to_json()` of a one-signature envelope (what `_ONE_SIGNATURE` reads back)."""
    return b"".join(
        (
            b'{"payload":"',
            pybase64.b64encode(payload),
            b'","payloadType":',
            _json_ascii(payload_type).encode("ascii"),
            b',"signatures":[{"keyid":',
            _json_ascii(keyid).encode("ascii"),
            b',"sig":"',
            pybase64.b64encode(sig),
            b'"}]}',
        )
    )


def signed_envelope_json(
    payload: bytes, key: SigningKey, payload_type: str = PAYLOAD_TYPE
) -> bytes:
    """`sign_envelope(payload, key).to_json()` without building the Envelope: the per-record
    path of an append, where the objects cost a seventh of the work besides the signature."""
    sig = key.sign(pae(payload_type, payload))
    return _one_signature_json(payload, payload_type, key.keyid, sig)


def sign_envelope(payload: bytes, key: SigningKey, payload_type: str = PAYLOAD_TYPE) -> Envelope:
    """Sign PAE(payload_type, payload) with `key` into a one-signature envelope."""
    return Envelope(
        payload, payload_type, (Signature(key.keyid, key.sign(pae(payload_type, payload))),)
    )


def verify_envelope(env: Envelope, trust: TrustStore, what: str = "envelope") -> None:
    """Return None if at least one signature is by a trusted key and verifies, else raise.

    Signatures by unknown keys are skipped (DSSE allows extra signers); the error names the
    first trusted key that failed, or the untrusted keyid when no trusted key signed.
    """
    message = env.pae()
    failure: SignatureError | None = None
    for s in env.signatures:
        if s.keyid not in trust:
            continue
        try:
            trust.get(s.keyid, what).verify(s.sig, message, what)
            return
        except SignatureError as e:
            failure = failure or e
    if failure is not None:
        raise failure
    raise SignatureError(f"{what}: key {shown(env.signatures[0].keyid[:12])}… is not trusted")
