"""Witnesses (c2sp.org/tlog-witness): cosign a log's checkpoint only if it grew consistently.

    w = Witness.open(Path("/srv/witness"))                     # its own key and state
    lines = w.add_checkpoint(request_body)                     # or WitnessRefusal(status, …)
    serve(w, port=7380)                                        # POST /add-checkpoint, 127.0.0.1

    policy = WitnessPolicy.load(project_dir / "witnesses.toml")    # k of n witnesses
    cosigned = request_cosignatures(policy, note, leaves, seen)    # the log asks each witness
    policy.check(cosigned, "checkpoint size 12")                   # or WitnessError

A witness keeps, per log origin, the latest checkpoint it cosigned (size and root, one JSON file
written atomically under a lock) and accepts a new one only with a consistency proof from that
size; it answers with C2SP cosignature/v1 lines. The log asks its witnesses after an append; a
verifier or a settler that is configured with a policy requires k valid cosignatures from its
n witnesses. A log that was rolled back or forked cannot get them: the witnesses remember.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from lineage_platform.errors import (
    ConfigError,
    LineageError,
    ProofError,
    RecordError,
    SignatureError,
    WitnessError,
)
from lineage_platform.log import (
    Checkpoint,
    SignedCheckpoint,
    consistency_proof,
    verify_consistency,
)
from lineage_platform.note import (
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    Note,
    NoteSignature,
    NoteVerifier,
    cosign,
    signatures_from_lines,
)
from lineage_platform.signing import SigningKey, TrustStore, passphrase_from_env
from lineage_platform.stores.base import LogStore

CONFIG = "witness.json"
KEY = "witness.pem"
STATE = "state"
MAX_REQUEST_BYTES = 64 * 1024
MAX_PROOF_LINES = 63
POLICY_FILE = "witnesses.toml"


class WitnessRefusal(LineageError):
    """A witness's refusal, with the HTTP status tlog-witness assigns to it."""

    def __init__(self, status: int, message: str, body: bytes = b"") -> None:
        super().__init__(message)
        self.status = status
        self.body = body or (message + "\n").encode()


@dataclass(frozen=True, slots=True)
class AddCheckpoint:
    """An add-checkpoint request: the size the client thinks the witness saw, a consistency
    proof from it, and the log's signed checkpoint note."""

    old_size: int
    proof: tuple[bytes, ...]
    checkpoint: bytes

    def to_bytes(self) -> bytes:
        lines = [f"old {self.old_size}\n".encode()]
        lines += [base64.b64encode(p) + b"\n" for p in self.proof]
        return b"".join(lines) + b"\n" + self.checkpoint

    @classmethod
    def parse(cls, data: bytes) -> AddCheckpoint:
        if len(data) > MAX_REQUEST_BYTES:
            raise WitnessRefusal(400, f"request of {len(data)} bytes is too large")
        head, sep, checkpoint = data.partition(b"\n\n")
        if not sep:
            raise WitnessRefusal(400, "request: no blank line before the checkpoint")
        lines = head.split(b"\n")
        old = lines[0].decode("ascii", "replace")
        if not old.startswith("old ") or not old[4:].isdigit() or (
            len(old) > 5 and old[4] == "0"
        ):
            raise WitnessRefusal(400, "request: the first line must be `old <size>`")
        if len(lines) - 1 > MAX_PROOF_LINES:
            raise WitnessRefusal(400, f"request: more than {MAX_PROOF_LINES} proof lines")
        proof = []
        for line in lines[1:]:
            try:
                raw = base64.b64decode(line, validate=True)
            except ValueError:
                raw = b""
            if len(raw) != 32:
                raise WitnessRefusal(400, "request: a proof line is not a base64 SHA-256 hash")
            proof.append(raw)
        return cls(int(old[4:]), tuple(proof), checkpoint)


@dataclass(frozen=True, slots=True)
class Witnessed:
    """What a witness remembers of one log: the latest checkpoint it cosigned."""

    origin: str
    tree_size: int
    root: bytes


class Witness:
    """A witness: a name, an Ed25519 key, the logs it follows (origin -> log verifier keys)
    and its state folder. `add_checkpoint` is the whole protocol."""

    def __init__(
        self,
        folder: Path,
        name: str,
        key: SigningKey,
        logs: Mapping[str, Sequence[NoteVerifier]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.folder = folder
        self.name = name
        self.key = key
        self.logs = {origin: tuple(vs) for origin, vs in logs.items()}
        self.clock = clock
        self._lock = threading.Lock()  # threads of one server; the file lock covers processes

    # -- setup ----------------------------------------------------------------------------------
    @classmethod
    def init(cls, folder: Path, name: str, passphrase: bytes | None = None) -> Witness:
        """Create a witness folder (key 0600, config); an existing one is kept."""
        if (folder / CONFIG).exists():
            return cls.open(folder, passphrase)
        NoteVerifier(name, SigningKey.generate().public_key)  # name check before any write
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = SigningKey.generate()
        key.save(folder / KEY, passphrase)
        _write_json(folder / CONFIG, {"name": name, "logs": {}})
        return cls(folder, name, key, {})

    @classmethod
    def open(cls, folder: Path, passphrase: bytes | None = None) -> Witness:
        try:
            config = json.loads((folder / CONFIG).read_bytes())
        except FileNotFoundError:
            raise ConfigError(f"{folder}: no witness here (run `lineage witness init`)") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{folder / CONFIG}: unreadable ({exc})") from exc
        logs = {
            origin: [NoteVerifier.from_vkey(v) for v in vkeys]
            for origin, vkeys in dict(config.get("logs") or {}).items()
        }
        key = SigningKey.load(folder / KEY, passphrase)
        return cls(folder, str(config["name"]), key, logs)

    def follow(self, vkey: str) -> NoteVerifier:
        """Trust a log's checkpoint key; the log is the key's name (its origin)."""
        verifier = NoteVerifier.from_vkey(vkey)
        if verifier.alg != ALG_ED25519:
            raise ConfigError(f"{verifier.name}: a log's key must be an Ed25519 note key")
        config = json.loads((self.folder / CONFIG).read_bytes())
        keys = list(config["logs"].get(verifier.name, []))
        if verifier.vkey() not in keys:
            keys.append(verifier.vkey())
        config["logs"][verifier.name] = keys
        _write_json(self.folder / CONFIG, config)
        self.logs[verifier.name] = tuple(NoteVerifier.from_vkey(k) for k in keys)
        return verifier

    def _followed(self) -> dict[str, tuple[NoteVerifier, ...]]:
        """The logs followed now: a running server sees `follow` without a restart."""
        try:
            config = json.loads((self.folder / CONFIG).read_bytes())
            self.logs = {
                origin: tuple(NoteVerifier.from_vkey(v) for v in vkeys)
                for origin, vkeys in dict(config.get("logs") or {}).items()
            }
        except (OSError, ValueError, RecordError):
            pass  # keep what was loaded: a config being rewritten must not stop the witness
        return self.logs

    @property
    def verifier(self) -> NoteVerifier:
        """What a policy names this witness by: its cosignature/v1 key."""
        return NoteVerifier(self.name, self.key.public_key, ALG_COSIGNATURE_V1)

    # -- state ----------------------------------------------------------------------------------
    def _state_path(self, origin: str) -> Path:
        return self.folder / STATE / (hashlib.sha256(origin.encode()).hexdigest()[:32] + ".json")

    def witnessed(self, origin: str) -> Witnessed | None:
        try:
            obj = json.loads(self._state_path(origin).read_bytes())
        except FileNotFoundError:
            return None
        return Witnessed(str(obj["origin"]), int(obj["tree_size"]), bytes.fromhex(obj["root"]))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        (self.folder / STATE).mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._lock, open(self.folder / STATE / ".lock", "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- the protocol ---------------------------------------------------------------------------
    def add_checkpoint(self, body: bytes) -> bytes:
        """Cosign the request's checkpoint if it extends what was cosigned before; the
        response body (cosignature lines), or `WitnessRefusal` with the spec's status."""
        request = AddCheckpoint.parse(body)
        try:
            note = Note.parse(request.checkpoint)
            checkpoint = Checkpoint.from_body(note.text)
        except RecordError as exc:
            raise WitnessRefusal(400, f"checkpoint: {exc}") from exc
        origin = checkpoint.origin
        keys = self._followed().get(origin)
        if not keys:
            raise WitnessRefusal(404, f"unknown log {origin}")
        if not any(_verifies(k, note) for k in keys):
            raise WitnessRefusal(403, f"{origin}: no signature by the log's key verifies")
        size = checkpoint.tree_size
        if request.old_size > size:
            raise WitnessRefusal(400, f"old size {request.old_size} exceeds size {size}")
        with self._locked():
            seen = self.witnessed(origin)
            seen_size = seen.tree_size if seen is not None else 0
            if request.old_size != seen_size:
                raise WitnessRefusal(
                    409, f"{origin}: cosigned size is {seen_size}, not {request.old_size}",
                    f"{seen_size}\n".encode(),
                )
            if seen is not None and seen_size == size and seen.root != checkpoint.root_hash:
                raise WitnessRefusal(409, f"{origin}: a different root at size {size}")
            if seen is not None and seen_size and seen_size < size:
                try:
                    verify_consistency(
                        seen_size, size, seen.root, checkpoint.root_hash, request.proof
                    )
                except ProofError as exc:
                    raise WitnessRefusal(422, f"{origin}: {exc}") from exc
            elif request.proof:
                raise WitnessRefusal(422, f"{origin}: a proof from size {seen_size} must be empty")
            _write_json(
                self._state_path(origin),
                {"origin": origin, "tree_size": size, "root": checkpoint.root_hash.hex()},
            )
            sig = cosign(note.text, self.name, self.key, int(self.clock()))
        return sig.line()


def _verifies(verifier: NoteVerifier, note: Note) -> bool:
    try:
        verifier.verify(note)
        return True
    except SignatureError:
        return False


def _write_json(path: Path, obj: object) -> None:
    """Atomically: a temp file, fsync, rename; a crash leaves the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


# -- HTTP ------------------------------------------------------------------------------------------
def make_server(witness: Witness, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """An HTTP server answering POST /add-checkpoint (tlog-witness); `serve_forever()` it."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/add-checkpoint":
                self._reply(404, b"not found\n")
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_REQUEST_BYTES:
                self._reply(400, b"request too large\n")
                return
            try:
                self._reply(200, witness.add_checkpoint(self.rfile.read(length)))
            except WitnessRefusal as exc:
                kind = "text/x.tlog.size" if exc.status == 409 else "text/plain; charset=utf-8"
                self._reply(exc.status, exc.body, kind)

        def _reply(self, status: int, body: bytes, kind: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # quiet: refusals reach the client, which names them

    return ThreadingHTTPServer((host, port), Handler)


# -- the log's side: a policy and asking for cosignatures ------------------------------------------
@dataclass(frozen=True, slots=True)
class WitnessEndpoint:
    verifier: NoteVerifier  # a cosignature/v1 key
    url: str | None  # the submission prefix; None for a witness reached by file exchange


@dataclass(frozen=True, slots=True)
class WitnessPolicy:
    """k of these n witnesses must cosign a checkpoint."""

    witnesses: tuple[WitnessEndpoint, ...]
    quorum: int

    def __post_init__(self) -> None:
        names = [w.verifier.name for w in self.witnesses]
        if len(set(names)) != len(names):
            raise ConfigError("witness policy: a witness is named twice")
        if not 1 <= self.quorum <= len(self.witnesses):
            raise ConfigError(
                f"witness policy: quorum {self.quorum} of {len(self.witnesses)} witnesses"
            )

    @classmethod
    def load(cls, path: Path) -> WitnessPolicy:
        """`quorum = k` and `[[witness]]` tables with `vkey` (cosignature key) and `url`."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        try:
            endpoints = []
            for w in data.get("witness", []):
                verifier = NoteVerifier.from_vkey(str(w["vkey"]))
                if verifier.alg != ALG_COSIGNATURE_V1:
                    raise ConfigError(f"{path}: witness {verifier.name}: not a cosignature key")
                endpoints.append(WitnessEndpoint(verifier, w.get("url")))
            return cls(tuple(endpoints), int(data.get("quorum", len(endpoints))))
        except (KeyError, TypeError, ValueError, RecordError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc

    @classmethod
    def find(cls, *paths: Path | None) -> WitnessPolicy | None:
        """The first of these files that exists, loaded; None when none does."""
        for path in paths:
            if path is not None and path.is_file():
                return cls.load(path)
        return None

    def cosigners(self, note: Note) -> list[str]:
        """Names of the policy's witnesses whose cosignature on `note` verifies."""
        return [w.verifier.name for w in self.witnesses if _verifies(w.verifier, note)]

    def check(self, note: Note, what: str) -> list[str]:
        """Return the cosigners if at least `quorum` of them verify, else WitnessError."""
        names = self.cosigners(note)
        if len(names) < self.quorum:
            raise WitnessError(
                f"{what}: cosigned by {len(names)} of the {self.quorum} witnesses the policy "
                f"requires ({', '.join(names) or 'none'})"
            )
        return names


def post(url: str, body: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    """POST to `<url>/add-checkpoint`: (status, body)."""
    request = urllib.request.Request(
        url.rstrip("/") + "/add-checkpoint", data=body, method="POST",
        headers={"Content-Type": "text/plain"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise WitnessError(f"witness at {url}: unreachable ({exc})") from exc


Transport = Callable[[WitnessEndpoint, bytes], tuple[int, bytes]]


def _http(endpoint: WitnessEndpoint, body: bytes) -> tuple[int, bytes]:
    if endpoint.url is None:
        raise WitnessError(f"witness {endpoint.verifier.name}: no url to reach it")
    return post(endpoint.url, body)


def request_cosignatures(
    policy: WitnessPolicy,
    checkpoint_note: bytes,
    leaves: Callable[[int], Sequence[bytes]],
    sizes: dict[str, int] | None = None,
    transport: Transport = _http,
) -> tuple[Note, dict[str, str]]:
    """Ask every witness of the policy to cosign; the note with the cosignatures received and
    each refusal by witness name. `sizes` (witness name -> size it last cosigned, as the log
    believes) saves a round trip and is updated; a 409 tells the real size, and the request is
    retried once with a proof from there. Never raises for a single witness: `policy.check`
    decides whether enough of them cosigned."""
    note = Note.parse(checkpoint_note)
    size = Checkpoint.from_body(note.text).tree_size
    sizes = {} if sizes is None else sizes
    refusals: dict[str, str] = {}
    cosigs: list[NoteSignature] = []
    for endpoint in policy.witnesses:
        name = endpoint.verifier.name
        old = sizes.get(name, 0)
        try:
            for _ in range(2):
                if old > size:
                    raise WitnessError(
                        f"witness {name} has cosigned size {old}, the log is at size {size}"
                    )
                proof = consistency_proof(leaves(size), old, size) if 0 < old < size else []
                status, body = transport(
                    endpoint, AddCheckpoint(old, tuple(proof), checkpoint_note).to_bytes()
                )
                if status == 409 and body.strip().isdigit() and int(body) != old:
                    old = int(body)
                    continue
                break
            if status != 200:
                raise WitnessError(
                    f"witness {name} refused size {size} from size {old}: "
                    f"{status} {body.decode('utf-8', 'replace').strip()[:200]}"
                )
            got = [s for s in signatures_from_lines(body) if endpoint.verifier.matches(s)]
            if not got:
                raise WitnessError(f"witness {name}: no cosignature by its key in the reply")
            cosigs.extend(got)
            sizes[name] = size
        except (WitnessError, RecordError, ProofError) as exc:
            refusals[name] = str(exc)
    return note.with_signatures(cosigs), refusals


def witness_passphrase() -> bytes | None:
    return passphrase_from_env("LINEAGE_WITNESS_PASSPHRASE")


# -- the log's published, cosigned checkpoint -----------------------------------------------------
COSIGNED = "cosigned-checkpoint"
SIZES = "witness-sizes.json"


@dataclass(frozen=True, slots=True)
class Published:
    note: Note
    tree_size: int
    cosigners: tuple[str, ...]
    refusals: dict[str, str]

    def describe(self) -> str:
        refused = "".join(f"; {name} refused: {why}" for name, why in self.refusals.items())
        return (
            f"checkpoint size {self.tree_size} cosigned by {len(self.cosigners)} witnesses "
            f"({', '.join(self.cosigners) or 'none'}){refused}"
        )


def find_policy(project_dir: Path, explicit: Path | None = None) -> WitnessPolicy | None:
    """The witness policy in force: `explicit` (--witnesses FILE), else the user's own
    (~/.config/lineage/witnesses.toml), else the project's witnesses.toml; None when none."""
    from lineage_platform.known import user_config_dir

    if explicit is not None:
        return WitnessPolicy.load(explicit)
    return WitnessPolicy.find(user_config_dir() / POLICY_FILE, project_dir / POLICY_FILE)


def publish(
    store: LogStore, trust: TrustStore, policy: WitnessPolicy, state_dir: Path,
    transport: Transport = _http,
) -> Published:
    """Ask the policy's witnesses to cosign the store's latest checkpoint; keep it (under
    `state_dir`) when the policy is met, else raise WitnessError naming each refusal."""
    from lineage_platform.known import read_store_tree

    raw = store.latest_checkpoint() if store.exists() else None
    if raw is None:
        raise WitnessError("the log is empty: nothing to cosign")
    signed = SignedCheckpoint.parse(raw, trust)
    note_bytes = signed.to_note(trust.get(signed.keyid, signed.checkpoint.describe()))
    size = signed.checkpoint.tree_size
    try:
        sizes = {str(k): int(v) for k, v in json.loads((state_dir / SIZES).read_bytes()).items()}
    except (OSError, ValueError, AttributeError):
        sizes = {}
    cache: list[list[bytes]] = []

    def leaves(n: int) -> Sequence[bytes]:
        if not cache:
            cache.append(read_store_tree(store, size)[0])
        return cache[0][:n]

    note, refusals = request_cosignatures(policy, note_bytes, leaves, sizes, transport)
    _write_json(state_dir / SIZES, sizes)
    names = policy.cosigners(note)
    result = Published(note, size, tuple(names), refusals)
    if len(names) < policy.quorum:
        raise WitnessError(f"the policy needs {policy.quorum} cosignatures: {result.describe()}")
    try:
        current = cosigned_checkpoint(state_dir, trust)
    except LineageError:
        current = None
    if current is None or current[0].checkpoint.tree_size <= size:
        tmp = state_dir / (COSIGNED + ".tmp")
        tmp.write_bytes(note.to_bytes())
        os.replace(tmp, state_dir / COSIGNED)
    return result


def cosigned_checkpoint(state_dir: Path, trust: TrustStore) -> tuple[SignedCheckpoint, Note] | None:
    """The log's latest cosigned checkpoint (the log's signature checked), or None."""
    try:
        data = (state_dir / COSIGNED).read_bytes()
    except FileNotFoundError:
        return None
    return SignedCheckpoint.from_note(data, trust), Note.parse(data)


def require_policy(
    store: LogStore, trust: TrustStore, policy: WitnessPolicy, state_dir: Path
) -> str:
    """The log holds a checkpoint the policy's witnesses cosigned, and extends it: a line
    saying so, else WitnessError (none, too few cosignatures) or RollbackError (not extended)."""
    from lineage_platform.known import check_growth, read_store_tree

    found = cosigned_checkpoint(state_dir, trust)
    if found is None:
        raise WitnessError(
            f"no witnessed checkpoint in {state_dir} (run `lineage witness publish`), "
            "and the witness policy requires one"
        )
    signed, note = found
    what = f"witnessed {signed.checkpoint.describe()}"
    names = policy.check(note, what)
    raw = store.latest_checkpoint() if store.exists() else None
    if raw is None:
        raise WitnessError(f"{what}: the log is empty")
    latest = SignedCheckpoint.parse(raw, trust)
    check_growth(
        signed.checkpoint.tree_size, signed.checkpoint.root_hash, latest,
        lambda n: read_store_tree(store, latest.checkpoint.tree_size)[0][:n],
        f"log {latest.checkpoint.origin} (witnessed checkpoint)",
    )
    return (
        f"witnessed: size {signed.checkpoint.tree_size} of {latest.checkpoint.tree_size} "
        f"cosigned by {', '.join(names)} ({len(names)} of {policy.quorum} required)"
    )
