"""The signing key and the trust store on disk: init, rotate, show.

    ring = KeyRing(settings.keys_dir)
    key = ring.signer(passphrase)      # the current private key (file mode 0600)
    trust = ring.trust()               # every public key ever used here, for verification

Rotation adds the new public key to the trust store and retires the old private key, so every
old record stays verifiable while only the new key signs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from lineage_platform.errors import KeyFileError
from lineage_platform.signing import SigningKey, TrustStore


@dataclass(frozen=True, slots=True)
class KeyRing:
    folder: Path

    @property
    def private_path(self) -> Path:
        return self.folder / "signing.pem"

    @property
    def trust_path(self) -> Path:
        return self.folder / "trusted.json"

    @property
    def current_path(self) -> Path:
        """The current signer's keyid in plain text, so showing keys needs no passphrase."""
        return self.folder / "signing.keyid"

    def exists(self) -> bool:
        return self.private_path.exists()

    def init(self, passphrase: bytes | None) -> str:
        """Create the first key; an existing key is kept (init is re-runnable)."""
        if self.exists():
            return self.signer(passphrase).keyid
        return self._install(SigningKey.generate(), passphrase)

    def _install(self, key: SigningKey, passphrase: bytes | None) -> str:
        """Trust the new public key first, then replace the private key in one rename: a crash
        in between leaves the old key signing, never a signer nobody trusts."""
        _mkdir(self.folder)
        trust = TrustStore.load(self.trust_path) if self.trust_path.exists() else TrustStore.of()
        trust.with_key(key.public_key).save(self.trust_path)
        key.save(self.private_path, passphrase, overwrite=True)
        try:
            self.current_path.write_text(key.keyid + "\n", encoding="ascii")
        except OSError as exc:
            raise KeyFileError(f"{self.current_path}: cannot write ({exc.strerror})") from exc
        return key.keyid

    def rotate(self, passphrase: bytes | None) -> tuple[str, str]:
        """A new signing key; the old one is kept (as it was, encrypted) under retired/."""
        old = self.signer(passphrase)  # a wrong passphrase fails here, before any change
        retired = self.folder / "retired"
        _mkdir(retired)
        copy = retired / f"{old.keyid}-{int(time.time())}.pem"
        try:
            fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(self.private_path.read_bytes())
        except OSError as exc:
            raise KeyFileError(f"{copy}: cannot retire the old key ({exc.strerror})") from exc
        return old.keyid, self._install(SigningKey.generate(), passphrase)

    def current_keyid(self, passphrase: bytes | None = None) -> str | None:
        """The signer's keyid without decrypting it when possible (older rings: by loading)."""
        try:
            keyid = self.current_path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            keyid = ""
        if keyid:
            return keyid
        if not self.exists():
            return None
        try:
            return self.signer(passphrase).keyid
        except KeyFileError:
            return None

    def signer(self, passphrase: bytes | None) -> SigningKey:
        if not self.exists():
            raise KeyFileError(f"no signing key at {self.private_path}: run `lineage keys init`")
        return SigningKey.load(self.private_path, passphrase)

    def trust(self) -> TrustStore:
        if not self.trust_path.exists():
            raise KeyFileError(f"no trust store at {self.trust_path}: run `lineage keys init`")
        return TrustStore.load(self.trust_path)


def _mkdir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise KeyFileError(f"{folder}: cannot create the key folder ({exc.strerror})") from exc
