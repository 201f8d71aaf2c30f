"""Rush-hour usage intake: producers append to their own spool files, one writer ingests in bulk.

    with SpoolWriter(settings.spool_dir) as spool:          # in each producer process
        spool.record("digits_classifier", "acme", units=3, fee=75, event_id="call-1")
    drain(store, settings.spool_dir)                          # one writer: lineage usage drain

DuckDB takes one writing process per file, so producers never open it: each appends JSON lines to
a file only it writes (no lock shared with anyone), and closes it into `*.ready.jsonl` every
`rotate_rows` events or `rotate_s` seconds. `drain` ingests every ready file, and the open file of
any producer that died, in one transaction; it deletes files only after the commit, and a crash
in between re-ingests them as replays, which the event ids make no-ops. A file that cannot be
ingested (unknown model, bad amount) moves to `rejected/` with a reason beside it: nothing is lost.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TextIO

import pyarrow as pa
import pyarrow.json as pjson

from lineage_platform.errors import LineageError, UsageError
from lineage_platform.stores import MAX_AMOUNT, Store
from lineage_platform.usage import SCHEMA, ingest, validate_events

# What a spool line holds (`SpoolWriter.record`): the ingest's columns without a call's input,
# which the spool does not carry (a call with an input is ingested from a file).
SPOOL_SCHEMA = pa.schema(
    [SCHEMA.field(n) for n in ("event_id", "model", "caller", "units", "fee", "occurred_at")]
)
READY = ".ready.jsonl"
OPEN = ".open.jsonl"


def _amount(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError(f"{name}: {value!r} is not a non-negative integer (minor units)")
    if value > MAX_AMOUNT:
        raise UsageError(f"{name}: {value} exceeds 10^15 (the bound per event)")
    return value


class SpoolWriter:
    """One per producer process; never shared, so appends take no lock at all."""

    def __init__(self, folder: Path, rotate_rows: int = 5_000, rotate_s: float = 2.0) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rotate_rows = rotate_rows
        self.rotate_s = rotate_s
        self.prefix = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.seq = 0
        self.rows = 0
        self.opened = time.monotonic()
        self._fh = self._open()

    def _path(self, suffix: str) -> Path:
        return self.folder / f"{self.prefix}-{self.seq:06d}{suffix}"

    def _open(self) -> TextIO:
        self.rows = 0
        self.opened = time.monotonic()
        return open(self._path(OPEN), "a", encoding="utf-8")

    def record(
        self,
        model: str,
        caller: str,
        units: int,
        fee: int,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> str:
        """Append one event (amounts checked here, models at ingestion); returns its id."""
        _amount(units, "units")
        _amount(fee, "fee")
        eid = event_id or f"uuid:{uuid.uuid4()}"
        when = (occurred_at or datetime.now(UTC)).astimezone(UTC)
        line = json.dumps(
            {"event_id": eid, "model": model, "caller": caller, "units": units, "fee": fee,
             "occurred_at": when.strftime("%Y-%m-%dT%H:%M:%S.%f")},
            ensure_ascii=False,
        )
        self._fh.write(line + "\n")
        self._fh.flush()  # in the OS after every event: a killed producer loses nothing
        self.rows += 1
        if self.rows >= self.rotate_rows or time.monotonic() - self.opened >= self.rotate_s:
            self.rotate()
        return eid

    def rotate(self) -> None:
        """Close the open file into a ready one the writer may ingest."""
        self._fh.close()
        if self.rows:
            os.replace(self._path(OPEN), self._path(READY))
            self.seq += 1
        self._fh = self._open()

    def close(self) -> None:
        self.rotate()
        self._fh.close()
        self._path(OPEN).unlink(missing_ok=True)

    def __enter__(self) -> SpoolWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _pid_alive(name: str) -> bool:
    try:
        host, pid = name.rsplit("-", 3)[0], int(name.rsplit("-", 3)[1])
    except (IndexError, ValueError):
        return False
    if host != socket.gethostname():
        return True  # another machine's producer: only its ready files are ours to take
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pending_files(folder: Path) -> list[Path]:
    """Ready files, plus open files whose producer is gone (what it wrote is in the OS)."""
    if not folder.is_dir():
        return []
    ready = sorted(folder.glob(f"*{READY}"))
    orphans = [p for p in sorted(folder.glob(f"*{OPEN}")) if not _pid_alive(p.name)]
    return ready + orphans


@dataclass(frozen=True, slots=True)
class DrainResult:
    files: int
    inserted: int
    replays: int
    rejected: tuple[str, ...]
    conflicts: int = 0  # of the replays, ids reused with a different body (listed)


def _read(path: Path) -> pa.Table:
    if path.stat().st_size == 0:
        return SPOOL_SCHEMA.empty_table()
    try:
        opts = pjson.ParseOptions(explicit_schema=SPOOL_SCHEMA, unexpected_field_behavior="error")
        return pjson.read_json(path, parse_options=opts)
    except pa.ArrowInvalid as exc:
        # A producer killed mid-line leaves a torn last line: keep every complete line.
        lines = path.read_bytes().split(b"\n")
        good = [ln for ln in lines if ln.strip() and ln.rstrip().endswith(b"}")]
        try:
            return pa.Table.from_pylist([json.loads(ln) for ln in good]).cast(SPOOL_SCHEMA)
        except (ValueError, pa.ArrowInvalid) as inner:
            raise UsageError(f"{path.name}: unreadable spool file ({inner})") from exc


def drain(store: Store, folder: Path, max_files: int = 10_000) -> DrainResult:
    """Ingest pending spool files in one bulk transaction; bad files go to rejected/."""
    files = pending_files(folder)[:max_files]
    tables: list[pa.Table] = []
    taken: list[Path] = []
    rejected: list[str] = []
    for path in files:
        try:
            tables.append(validate_events(_read(path)))
            taken.append(path)
        except LineageError as exc:
            _reject(folder, path, str(exc))
            rejected.append(f"{path.name}: {exc}")
    if not tables:
        return DrainResult(len(files), 0, 0, tuple(rejected))
    table = pa.concat_tables(tables)
    try:
        result = ingest(store, table)
    except UsageError:
        # Some file names an unknown model (or breaks an epoch's bound): find it, set it
        # aside, ingest the rest.
        inserted = replays = conflicts = 0
        for path, part in zip(taken, tables, strict=True):
            try:
                one = ingest(store, part)
            except UsageError as exc:
                _reject(folder, path, str(exc))
                rejected.append(f"{path.name}: {exc}")
                continue
            inserted, replays = inserted + one[0], replays + one[1]
            conflicts += one.conflicts
            path.unlink(missing_ok=True)
        return DrainResult(len(files), inserted, replays, tuple(rejected), conflicts)
    for path in taken:
        path.unlink(missing_ok=True)  # only after the commit: a crash here means replays
    return DrainResult(len(files), result[0], result[1], tuple(rejected), result.conflicts)


def _reject(folder: Path, path: Path, reason: str) -> None:
    target = folder / "rejected"
    target.mkdir(exist_ok=True)
    os.replace(path, target / path.name)
    (target / (path.name + ".reason")).write_text(reason + "\n", encoding="utf-8")
