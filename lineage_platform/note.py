"""C2SP signed notes (c2sp.org/signed-note) and cosignatures (c2sp.org/tlog-cosignature).

    note = Note.parse(data)                                  # RecordError when malformed
    NoteVerifier.from_vkey("example.org/log+1a2b3c4d+AQ…").verify(note)   # or SignatureError

A note is UTF-8 text ending in a newline, a blank line, then one line per signature:
`— <key name> base64(4-byte key hash ‖ signature)`. The key hash of an Ed25519 key is the first
four bytes of SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key); of a witness's cosignature key,
SHA-256(name ‖ 0x0A ‖ 0x04 ‖ public key), whose signature is a big-endian 8-byte timestamp
followed by Ed25519 over `cosignature/v1\\ntime <t>\\n` ‖ the note text. Go's
golang.org/x/mod/sumdb/note reads and writes the same bytes. Verification returns or raises.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lineage_platform.errors import RecordError, SignatureError
from lineage_platform.signing import PublicKey, SigningKey

__all__ = [
    "ALG_COSIGNATURE_V1",
    "ALG_ED25519",
    "MAX_NOTE_BYTES",
    "Note",
    "NoteSignature",
    "NoteVerifier",
    "check_key_name",
    "cosign",
    "key_hash",
    "sign_note",
]

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
SIG_PREFIX = "— "
MAX_NOTE_BYTES = 16 * 1024
_MAX_SIGNATURES = 100  # as Go's note.Open


def key_hash(name: str, alg: int, raw_public: bytes) -> bytes:
    """The 4-byte key hash that names a key in a signature line."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([alg]) + raw_public).digest()[:4]


def check_key_name(name: str) -> str:
    """A key name is non-empty, has no whitespace and no '+' (signed-note)."""
    if not isinstance(name, str) or not name or "+" in name or any(c.isspace() for c in name):
        raise RecordError(f"note key name {name!r:.60}: must be non-empty, no spaces, no '+'")
    return name


def _b64decode(text: str, what: str) -> bytes:
    try:
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise RecordError(f"{what}: not valid base64") from None


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: key name, 4-byte key hash and the signature bytes after it."""

    name: str
    key_hash: bytes
    signature: bytes

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if not isinstance(self.key_hash, bytes) or len(self.key_hash) != 4:
            raise RecordError("note signature: key hash must be 4 bytes")
        if not isinstance(self.signature, bytes) or not self.signature:
            raise RecordError("note signature: empty signature")

    def line(self) -> bytes:
        blob = base64.b64encode(self.key_hash + self.signature).decode("ascii")
        return f"{SIG_PREFIX}{self.name} {blob}\n".encode()


def _check_text(text: bytes, what: str) -> str:
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        raise RecordError(f"{what}: not UTF-8") from None
    if any(ord(c) < 0x20 and c != "\n" for c in decoded):
        raise RecordError(f"{what}: control characters other than newline")
    return decoded


@dataclass(frozen=True, slots=True)
class Note:
    """The text (ending in a newline) and its signatures, in the order they appear."""

    text: bytes
    signatures: tuple[NoteSignature, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.text, bytes) or not self.text.endswith(b"\n"):
            raise RecordError("note: the text must end with a newline")
        if b"\n\n" in self.text or self.text.startswith(b"\n"):
            raise RecordError("note: the text must not hold a blank line")
        _check_text(self.text, "note")

    @classmethod
    def parse(cls, data: bytes) -> Note:
        """Parse strictly, as Go's note.Open does (without judging any signature)."""
        if not isinstance(data, bytes):
            raise RecordError("note: expected bytes")
        if len(data) > MAX_NOTE_BYTES:
            raise RecordError(f"note: {len(data)} bytes exceeds {MAX_NOTE_BYTES}")
        _check_text(data, "note")
        split = data.rfind(b"\n\n")
        if split < 0:
            raise RecordError("note: no blank line before the signatures")
        text, block = data[: split + 1], data[split + 2 :]
        if not block or not block.endswith(b"\n"):
            raise RecordError("note: no signature lines, or the last one lacks its newline")
        lines = block.decode("utf-8").split("\n")[:-1]
        if len(lines) > _MAX_SIGNATURES:
            raise RecordError(f"note: more than {_MAX_SIGNATURES} signatures")
        sigs = []
        for n, line in enumerate(lines):
            what = f"note signature {n}"
            if not line.startswith(SIG_PREFIX):
                raise RecordError(f"{what}: does not start with '— '")
            name, sep, blob = line[len(SIG_PREFIX) :].partition(" ")
            if not sep or not blob:
                raise RecordError(f"{what}: expected '— <name> <base64>'")
            raw = _b64decode(blob, what)
            if len(raw) < 5:
                raise RecordError(f"{what}: too short")
            sigs.append(NoteSignature(check_key_name(name), raw[:4], raw[4:]))
        return cls(text, tuple(sigs))

    def to_bytes(self) -> bytes:
        return self.text + b"\n" + b"".join(s.line() for s in self.signatures)

    def with_signatures(self, extra: Iterable[NoteSignature]) -> Note:
        """This note with more signature lines; an exact repeat of a line is dropped."""
        sigs = list(self.signatures)
        for s in extra:
            if s not in sigs:
                sigs.append(s)
        return Note(self.text, tuple(sigs))


def cosigned_message(text: bytes, timestamp: int) -> bytes:
    return b"cosignature/v1\ntime %d\n" % timestamp + text


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    """A named public key and its algorithm (0x01 note signer, 0x04 cosignature/v1)."""

    name: str
    public_key: PublicKey
    alg: int = ALG_ED25519

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if self.alg not in (ALG_ED25519, ALG_COSIGNATURE_V1):
            raise RecordError(f"note verifier {self.name}: unsupported algorithm {self.alg:#04x}")

    @property
    def key_hash(self) -> bytes:
        return key_hash(self.name, self.alg, self.public_key.raw)

    def vkey(self) -> str:
        """The signed-note verifier key `<name>+<hash hex>+<base64(alg ‖ key)>`."""
        blob = base64.b64encode(bytes([self.alg]) + self.public_key.raw).decode("ascii")
        return f"{self.name}+{self.key_hash.hex()}+{blob}"

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        name, _, rest = vkey.strip().partition("+")
        hash_hex, _, blob = rest.partition("+")
        what = f"verifier key {name or vkey!r:.60}"
        raw = _b64decode(blob, what)
        if len(hash_hex) != 8 or len(raw) != 33:
            raise RecordError(f"{what}: expected <name>+<8 hex>+<base64 of 33 bytes>")
        verifier = cls(check_key_name(name), PublicKey.from_raw(raw[1:]), raw[0])
        if verifier.key_hash.hex() != hash_hex.lower():
            raise RecordError(f"{what}: key hash {hash_hex} does not match the key")
        return verifier

    def matches(self, sig: NoteSignature) -> bool:
        return sig.name == self.name and sig.key_hash == self.key_hash

    def verify(self, note: Note) -> NoteSignature:
        """This key's signature on the note (the first that verifies), else SignatureError.

        For a cosignature key the timestamp is checked as part of the signed message; read it
        with `cosignature_time`.
        """
        what = f"note signed by {self.name}"
        found = [s for s in note.signatures if self.matches(s)]
        if not found:
            raise SignatureError(f"{what}: no signature by key {self.key_hash.hex()}")
        for sig in found:
            try:
                self._verify_one(note.text, sig, what)
                return sig
            except SignatureError:
                continue
        raise SignatureError(f"{what}: signature does not verify")

    def _verify_one(self, text: bytes, sig: NoteSignature, what: str) -> None:
        if self.alg == ALG_ED25519:
            if len(sig.signature) != 64:
                raise SignatureError(f"{what}: expected a 64-byte Ed25519 signature")
            self.public_key.verify(sig.signature, text, what)
            return
        if len(sig.signature) != 72:
            raise SignatureError(f"{what}: expected an 8-byte time and a 64-byte signature")
        (timestamp,) = struct.unpack(">Q", sig.signature[:8])
        if timestamp >= 1 << 63:
            raise SignatureError(f"{what}: cosignature time out of range")
        self.public_key.verify(sig.signature[8:], cosigned_message(text, timestamp), what)


def cosignature_time(sig: NoteSignature) -> int:
    """The POSIX time a cosignature/v1 was made (its first 8 bytes, big-endian)."""
    if len(sig.signature) != 72:
        raise RecordError("cosignature: expected 72 bytes")
    return int(struct.unpack(">Q", sig.signature[:8])[0])


def sign_note(text: bytes, name: str, key: SigningKey) -> NoteSignature:
    """An Ed25519 note signature by `key` under `name`."""
    Note(text)  # the text must be a valid note text
    return NoteSignature(name, key_hash(name, ALG_ED25519, key.public_key.raw), key.sign(text))


def cosign(text: bytes, name: str, key: SigningKey, timestamp: int) -> NoteSignature:
    """A C2SP cosignature/v1 of the note text by a witness key under `name`."""
    Note(text)
    if not 0 <= timestamp < 1 << 63:
        raise RecordError(f"cosignature: timestamp {timestamp} out of range")
    sig = key.sign(cosigned_message(text, timestamp))
    return NoteSignature(
        name,
        key_hash(name, ALG_COSIGNATURE_V1, key.public_key.raw),
        struct.pack(">Q", timestamp) + sig,
    )


def signatures_from_lines(data: bytes, what: str = "signature lines") -> list[NoteSignature]:
    """Parse bare signature lines (a witness's add-checkpoint response)."""
    if not data.endswith(b"\n"):
        raise RecordError(f"{what}: must end with a newline")
    # Borrow Note.parse's line rules with a placeholder text.
    return list(Note.parse(b"x\n\n" + data).signatures)


def unique_names(verifiers: Sequence[NoteVerifier]) -> None:
    names = [v.name for v in verifiers]
    if len(set(names)) != len(names):
        raise RecordError("note verifiers: names repeat")
