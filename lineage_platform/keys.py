"""The signing key and the trust store on disk: init, rotate, show; and key lifecycle checks.

    ring = KeyRing(settings.keys_dir)
    key = ring.signer(passphrase)      # the current private key (file mode 0600)
    trust = ring.trust()               # every public key ever used here, for verification
    rotate_in_log(ring, store, passphrase)   # a signed key-transition record, then the new key

Rotation appends a `key-transition` record signed by the old key that names the new one (and
carries the new key's own signature of the handover), then installs the new key. From that
record's index on, the old key is retired: a record after it, or a checkpoint over more than
it, signed by the old key fails `check_retired_keys`. The old private key is destroyed unless
kept (encrypted) on request. The user's own trust store (`~/.config/lineage/trusted.json`,
outside the state folder) pins the public keys `keys init` and `keys rotate` made here.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from lineage_platform.errors import KeyFileError, RecordError, VerificationError
from lineage_platform.log import SignedCheckpoint
from lineage_platform.signing import Envelope, PublicKey, SigningKey, TrustStore

if TYPE_CHECKING:
    from lineage_platform.stores.base import Store

TRANSITION = "key-transition"
#: What the new key signs to accept the handover (proof that its holder took part).
HANDOVER = "lineage-platform key-transition v1\n{old}\n{new}\n"


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

    def rotate(
        self,
        passphrase: bytes | None,
        new: SigningKey | None = None,
        keep_retired: bool = False,
    ) -> tuple[str, str]:
        """Install a new signing key. The old private key is destroyed, or with `keep_retired`
        kept under retired/ (only encrypted: a passphrase is required)."""
        old = self.signer(passphrase)  # a wrong passphrase fails here, before any change
        if keep_retired:
            if passphrase is None:
                raise KeyFileError(
                    "--keep-retired keeps retired keys only encrypted: set LINEAGE_KEY_PASSPHRASE"
                )
            retired = self.folder / "retired"
            _mkdir(retired)
            copy = retired / f"{old.keyid}-{int(time.time())}.pem"
            try:
                fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(self.private_path.read_bytes())
            except OSError as exc:
                raise KeyFileError(f"{copy}: cannot retire the old key ({exc.strerror})") from exc
        new_id = self._install(new or SigningKey.generate(), passphrase)
        return old.keyid, new_id

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


# -- the user's own trust store, outside the state folder ----------------------------------------
def user_trust_path() -> Path:
    from lineage_platform.known import user_config_dir

    return user_config_dir() / "trusted.json"


def user_trust() -> TrustStore | None:
    path = user_trust_path()
    return TrustStore.load(path) if path.exists() else None


def pin_user_trust(*keys: PublicKey) -> Path:
    """Add public keys to the user's own trust store (created if needed); its path."""
    path = user_trust_path()
    trust = TrustStore.load(path) if path.exists() else TrustStore.of()
    for key in keys:
        trust = trust.with_key(key)
    _mkdir(path.parent)
    trust.save(path)
    return path


# -- rotation as a signed record -----------------------------------------------------------------
def rotate_in_log(
    ring: KeyRing,
    store: Store,
    passphrase: bytes | None,
    keep_retired: bool = False,
    origin: str | None = None,
) -> tuple[str, str, int]:
    """Append a key-transition record signed by the current key, then install its successor:
    (old keyid, new keyid, the record's index, from which the old key is retired).

    The successor is written to `signing.next.pem` first, so a crash after the append leaves
    the key the record names on disk (a rerun installs it instead of making another).
    """
    from lineage_platform.attest import ORIGIN, append_records
    from lineage_platform.records import AttributionRecord, details_json, utc_timestamp

    old = ring.signer(passphrase)
    pending = ring.folder / "signing.next.pem"
    if pending.exists():
        new = SigningKey.load(pending, passphrase)
    else:
        new = SigningKey.generate()
        new.save(pending, passphrase)
    handover = HANDOVER.format(old=old.keyid, new=new.keyid).encode()
    record = AttributionRecord(
        kind=TRANSITION,
        asset="keys",
        sha256=new.keyid,
        recorded_at=utc_timestamp(),
        details=details_json(
            {
                "old_keyid": old.keyid,
                "new_keyid": new.keyid,
                "new_public_key": new.public_key.to_b64(),
                "new_key_signature": base64.b64encode(new.sign(handover)).decode("ascii"),
            }
        ),
    )
    index = append_records(store, old, [record], origin=origin or ORIGIN).indices[0]
    old_id, new_id = ring.rotate(passphrase, new, keep_retired)
    pending.unlink()
    return old_id, new_id, index


@dataclass(frozen=True, slots=True)
class Retirement:
    old_keyid: str
    new_keyid: str
    index: int  # the key-transition record; the old key signs nothing after it


def _transition(index: int, envelope: bytes, signer: str) -> Retirement:
    from lineage_platform.records import AttributionRecord

    what = f"record {index} (key transition)"
    try:
        record = AttributionRecord.from_bytes(Envelope.from_json(envelope).payload)
        details = json.loads(record.details or "{}")
        old, new = str(details["old_keyid"]), str(details["new_keyid"])
        public = PublicKey.from_b64(str(details["new_public_key"]))
        sig = base64.b64decode(str(details["new_key_signature"]), validate=True)
    except (RecordError, KeyFileError, KeyError, TypeError, ValueError) as exc:
        raise VerificationError(f"{what}: malformed ({exc})", index) from exc
    if signer != old:
        raise VerificationError(
            f"{what}: retires key {old[:12]}… but is signed by {signer[:12]}…", index
        )
    if public.keyid != new or record.sha256 != new:
        raise VerificationError(f"{what}: the new key does not match its keyid", index)
    public.verify(sig, HANDOVER.format(old=old, new=new).encode(), what)
    return Retirement(old, new, index)


def check_retired_keys(
    records: Iterable[tuple[int, str, str, bytes | None]],
    checkpoints: Sequence[SignedCheckpoint],
) -> list[Retirement]:
    """(index, kind, signer keyid, envelope if kind is a key transition) in log order, and the
    log's signed checkpoints: nothing signed by a key after its retirement. The retirements,
    or VerificationError naming the record (or checkpoint) and the key."""
    retired: dict[str, Retirement] = {}
    for index, kind, keyid, envelope in records:
        if keyid in retired:
            r = retired[keyid]
            raise VerificationError(
                f"record {index}: signed by key {keyid[:12]}…, retired at record {r.index} "
                f"(succeeded by {r.new_keyid[:12]}…)",
                index,
            )
        if kind == TRANSITION:
            if envelope is None:
                raise VerificationError(f"record {index}: key transition without its envelope")
            r = _transition(index, envelope, keyid)
            retired[r.old_keyid] = r
    for cp in checkpoints:
        r2 = retired.get(cp.keyid)
        if r2 is not None and cp.checkpoint.tree_size > r2.index + 1:
            raise VerificationError(
                f"{cp.checkpoint.describe()}: signed by key {cp.keyid[:12]}…, retired at "
                f"record {r2.index}",
                r2.index + 1,
            )
    return list(retired.values())


def lifecycle_of_table(table: pa.Table) -> Iterable[tuple[int, str, str, bytes | None]]:
    """`check_retired_keys` input from a store's entries (idx, kind, keyid, envelope)."""
    kinds = table.column("kind").to_pylist()
    envelopes = table.column("envelope")
    for i, (idx, kind, keyid) in enumerate(
        zip(table.column("idx").to_pylist(), kinds, table.column("keyid").to_pylist(), strict=True)
    ):
        yield idx, kind, keyid, (envelopes[i].as_py() if kind == TRANSITION else None)


def lifecycle_of_envelopes(
    envelopes: Sequence[bytes],
) -> Iterable[tuple[int, str, str, bytes | None]]:
    """The same from exported envelopes (a bundle): the signer is the first signature's key."""
    marker = b'"kind":"key-transition"'
    for index, data in enumerate(envelopes):
        env = Envelope.from_json(bytes(data))
        if marker in env.payload:
            yield index, TRANSITION, env.signatures[0].keyid, bytes(data)
        else:
            yield index, "", env.signatures[0].keyid, None
