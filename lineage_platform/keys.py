"""The signing key and the trust store on disk: init, rotate, show.

    ring = KeyRing(settings.keys_dir)
    key = ring.signer(passphrase)      # the current private key (file mode 0600)
    trust = ring.trust()               # every public key ever used here, for verification

Rotation adds the new public key to the trust store and retires the old private key, so every
old record stays verifiable while only the new key signs.
"""

from __future__ import annotations

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

    def exists(self) -> bool:
        return self.private_path.exists()

    def init(self, passphrase: bytes | None) -> str:
        """Create the first key; an existing key is kept (init is re-runnable)."""
        if self.exists():
            return self.signer(passphrase).keyid
        return self._install(SigningKey.generate(), passphrase)

    def _install(self, key: SigningKey, passphrase: bytes | None) -> str:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        trust = TrustStore.load(self.trust_path) if self.trust_path.exists() else TrustStore.of()
        trust.with_key(key.public_key).save(self.trust_path)
        key.save(self.private_path, passphrase, overwrite=True)
        return key.keyid

    def rotate(self, passphrase: bytes | None) -> tuple[str, str]:
        old = self.signer(passphrase)
        retired = self.folder / "retired"
        retired.mkdir(exist_ok=True, mode=0o700)
        self.private_path.rename(retired / f"{old.keyid}-{int(time.time())}.pem")
        return old.keyid, self._install(SigningKey.generate(), passphrase)

    def signer(self, passphrase: bytes | None) -> SigningKey:
        if not self.exists():
            raise KeyFileError(f"no signing key at {self.private_path}: run `lineage keys init`")
        return SigningKey.load(self.private_path, passphrase)

    def trust(self) -> TrustStore:
        if not self.trust_path.exists():
            raise KeyFileError(f"no trust store at {self.trust_path}: run `lineage keys init`")
        return TrustStore.load(self.trust_path)
