"""The storage protocol every driver implements, and the values it speaks in (no SQL, no driver).

    store = open_store(settings.store_url)             # lineage_platform.stores
    result = store.append_entries(entries, sign_checkpoint, ORIGIN)

A store holds two things: the **log** (signed envelopes in leaf order, a signed checkpoint per
append batch, lookups the sync needs) and the **ledger** (unsigned usage events, settled epochs
with their ledger postings and payouts). Drivers live beside this module, one per backend
(`duckdb.py`, `postgres.py`); a new backend is one new module and one line in `open_store`.
Everything a caller needs is a method here: no caller sees SQL, a connection or a table name.

Guarantees every driver gives (the contract suite in tests/contract/ checks each one):
- every write method is one transaction: it commits entirely or leaves nothing behind;
- appends are idempotent by idempotency key and exactly once under concurrent writers, also
  from several machines (the driver serialises appends to one log);
- a lock or contention wait longer than the store's `lock_timeout_s` raises `StoreBusyError`;
  any other backend failure raises `StoreError` with one line naming the store; a read of a
  store that does not exist yet raises `StoreError` (or, where noted, returns "empty").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, NamedTuple, Protocol, runtime_checkable

import pyarrow as pa

from lineage_platform.log import Checkpoint, SignedCheckpoint, leaf_hash

# Columns of the Arrow tables `entries()` and `read_snapshot()` return, in this order.
LOG_COLUMNS = (
    "idx", "envelope", "leaf_hash", "record_digest", "idem_key", "kind", "asset", "partition",
    "sha256", "keyid", "recorded_at",
)
# Columns (and types) of the usage table `ingest_usage` takes; `event_id` may be null.
USAGE_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("model", pa.string()),
        ("caller", pa.string()),
        ("units", pa.int64()),
        ("fee", pa.int64()),
        ("occurred_at", pa.timestamp("us")),  # UTC, naive
        # Issue 18, both optional (null): the call's input as little-endian float64 bytes
        # (`usage.py` checks it) and the label the model served, as text.
        ("call_input", pa.binary()),
        ("call_output", pa.string()),
    ]
)
# Columns of the table `EpochReads.calls` returns (by event id, byte order).
CALLS_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("model", pa.string()),
        ("fee", pa.int64()),
        ("call_input", pa.binary()),
        ("call_output", pa.string()),
    ]
)
# Columns of an epoch's per-call receipt leaves (`SettlementUnit.write_settlement`), leaf order.
RECEIPTS_SCHEMA = pa.schema([("event_id", pa.string()), ("leaf_hash", pa.binary())])


def usage_table(events: pa.Table) -> pa.Table:
    """`events` with every `USAGE_SCHEMA` column, in order; the call columns null if absent
    (tables built before issue 18 have none)."""
    n = events.num_rows
    columns = [
        events.column(f.name) if f.name in events.column_names else pa.nulls(n, f.type)
        for f in USAGE_SCHEMA
    ]
    return pa.table(columns, names=USAGE_SCHEMA.names).cast(USAGE_SCHEMA)

# Bounds on one usage event (issue 15): an amount past MAX_AMOUNT is refused at ingestion, and an
# ingest that would take an epoch's fees past MAX_EPOCH_FEES is refused whole, so no sum a
# settlement stores (BIGINT in every driver) can overflow. Events stored before these bounds
# existed that break them were moved to the quarantine by the schema upgrade.
MAX_AMOUNT = 10**15
MAX_EPOCH_FEES = 2**63 - 1
# How far ahead of the clock an event may be dated (clock skew between producers).
MAX_SKEW_S = 300

SignCheckpoint = Callable[[Checkpoint], SignedCheckpoint]
# (how many of the log's n entries, what to do with them): see `LogStore.read_snapshot`.
SnapshotHead = tuple[Callable[[int], int], Callable[[pa.Table], object]]


# -- the log's values -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Entry:
    """One signed record ready to append; every column but `envelope` is derived from it."""

    envelope: bytes
    record_digest: str
    idem_key: str
    kind: str
    asset: str
    partition: str | None
    sha256: str
    keyid: str
    recorded_at: str


ENTRY_FIELDS = tuple(f.name for f in fields(Entry))


@dataclass(frozen=True, slots=True)
class EntryColumns:
    """Entries as columns: a large batch appends without building an object per entry.

    `leaf_hash`, when the signer already computed it (beside the envelope, in its worker),
    saves the committing process hashing every envelope again; verify re-derives it anyway.
    """

    envelope: Sequence[bytes]
    record_digest: Sequence[str]
    idem_key: Sequence[str]
    kind: Sequence[str]
    asset: Sequence[str]
    partition: Sequence[str | None]
    sha256: Sequence[str]
    keyid: Sequence[str]
    recorded_at: Sequence[str]
    leaf_hash: Sequence[bytes] | None = None

    def __post_init__(self) -> None:
        lengths = {len(getattr(self, name)) for name in ENTRY_FIELDS}
        if len(lengths | ({len(self.leaf_hash)} if self.leaf_hash is not None else set())) > 1:
            raise ValueError("entry columns differ in length")

    def __len__(self) -> int:
        return len(self.envelope)

    @classmethod
    def of(cls, entries: Sequence[Entry]) -> EntryColumns:
        return cls(*([getattr(e, name) for e in entries] for name in ENTRY_FIELDS))

    def entries(self) -> list[Entry]:
        columns = [getattr(self, name) for name in ENTRY_FIELDS]
        return [Entry(*row) for row in zip(*columns, strict=True)]


@dataclass(frozen=True, slots=True)
class AppendResult:
    indices: tuple[int, ...]  # log index for each entry given, in order (existing ones too)
    appended: int
    skipped: int
    checkpoint: SignedCheckpoint | None


@dataclass(frozen=True, slots=True)
class AppendPlan:
    """Where each entry of a batch lands, the same for every driver: a key already in the log
    keeps its index, a repeat within the batch shares its first's, the rest take the next
    indices in batch order. `fresh` are the positions of the entries to write."""

    batch: EntryColumns
    indices: tuple[int, ...]
    fresh: tuple[int, ...]

    @classmethod
    def of(cls, batch: EntryColumns, known: Mapping[str, int], start: int) -> AppendPlan:
        fresh: list[int] = []
        seen: dict[str, int] = {}
        indices: list[int] = []
        for position, key in enumerate(batch.idem_key):
            if key in known:
                indices.append(known[key])
            elif key in seen:
                indices.append(seen[key])
            else:
                seen[key] = start + len(fresh)
                indices.append(start + len(fresh))
                fresh.append(position)
        return cls(batch, tuple(indices), tuple(fresh))

    @property
    def every(self) -> bool:
        return len(self.fresh) == len(self.batch)

    def column(self, name: str) -> Sequence[Any]:
        """One column of the entries to write, without a copy when all are written."""
        values: Sequence[Any] = getattr(self.batch, name)
        return values if self.every else [values[i] for i in self.fresh]

    def leaves(self) -> list[bytes]:
        """Their leaf hashes: the signers' when they computed them, else hashed here."""
        if self.batch.leaf_hash is None:
            return [leaf_hash(e) for e in self.column("envelope")]
        return list(self.column("leaf_hash"))

    def result(self, checkpoint: SignedCheckpoint | None) -> AppendResult:
        n = len(self.fresh)
        return AppendResult(self.indices, n, len(self.batch) - n, checkpoint)


class StoredCheckpoint(NamedTuple):
    """One append batch's checkpoint as stored: the signed note and the compact-range frontier."""

    tree_size: int
    checkpoint: bytes  # signed checkpoint JSON (covers size and root)
    frontier: bytes  # derived: the concatenated 32-byte compact-range hashes


class LoggedEnvelope(NamedTuple):
    log_index: int
    envelope: bytes


# -- the ledger's values --------------------------------------------------------------------------
class OpenEpoch(NamedTuple):
    """An epoch with usage and no settlement yet."""

    epoch: str
    events: int
    fees: int


class Payout(NamedTuple):
    epoch: str
    account: str
    amount: int  # integer minor units


class Posting(NamedTuple):
    """One ledger line: `amount` moves from `debit` to `credit`."""

    debit: str
    credit: str
    amount: int


@dataclass(frozen=True, slots=True)
class EpochInputs:
    """What a settlement of one epoch reads from its usage events (verify recomputes it)."""

    fees: dict[str, int]  # fees per model
    events_digest: str  # sha256 hex of the epoch's event lines, see `LedgerStore`
    events: int


@dataclass(frozen=True, slots=True)
class SettledEpoch:
    """The stored summary of one settled epoch; its presence means "settled"."""

    epoch: str
    starts_at: datetime  # UTC, naive; the window is half-open [starts_at, ends_at)
    ends_at: datetime
    fees_total: int
    paid_total: int
    payouts: int  # how many payouts
    root: str  # hex Merkle root over the payout leaves (signed in the record)
    log_index: int  # the settlement record in the log


class UsageIngest(tuple[int, int]):
    """`(inserted, dropped)` of one ingest; `conflicts` of the dropped rows reused a stored (or
    in-batch) event id with a different body (model, caller, units or fee) and were listed."""

    conflicts: int

    def __new__(cls, inserted: int, dropped: int, conflicts: int = 0) -> UsageIngest:
        self = super().__new__(cls, (inserted, dropped))
        self.conflicts = conflicts
        return self

    @property
    def inserted(self) -> int:
        return self[0]

    @property
    def replays(self) -> int:
        """Exact replays: dropped rows whose body matches the stored event."""
        return self[1] - self.conflicts


class UsageConflict(NamedTuple):
    """A body that arrived under an event id already used by a different body (the kept one)."""

    event_id: str
    model: str
    caller: str
    units: int
    fee: int
    occurred_at: datetime
    kept: str  # the stored body, `model|caller|units|fee`
    seen_at: datetime


class QuarantinedEvent(NamedTuple):
    """A stored usage event that breaks the bounds: settlement skips it until released."""

    event_id: str
    model: str
    caller: str
    units: int
    fee: int
    occurred_at: str  # ISO text as stored: a poison time may be past Python's datetime range
    epoch: str
    reason: str
    state: str  # "held", "released" (back in the usage events) or "dropped" (kept for audit)


class Stray(NamedTuple):
    """A settlement part without its whole: verify names it."""

    what: str  # "record" (a signed settlement record), "payouts", "ledger" or "receipts" (rows)
    epoch: str
    log_index: int | None  # the record's index, for "record"


# -- the protocols --------------------------------------------------------------------------------
@runtime_checkable
class LogStore(Protocol):
    """The append-only log: signed envelopes in leaf order and a signed checkpoint per batch."""

    lock_timeout_s: float
    lock_waits: int  # lock/contention waits this object saw (a store is used by one process)
    lock_wait_s: float

    def describe(self) -> str:
        """Where the store is, for messages (a path, or a URL without its password)."""
        ...

    def exists(self) -> bool:
        """Whether the store holds a log yet (reads of a missing store raise `StoreError`)."""
        ...

    def migrate(self) -> None:
        """Create or upgrade the schema (idempotent; every write method does it too)."""
        ...

    def append_entries(
        self, entries: Sequence[Entry] | EntryColumns, sign_checkpoint: SignCheckpoint, origin: str
    ) -> AppendResult:
        """Append in one transaction with one new signed checkpoint, or do nothing.

        Entries whose idempotency key is already logged (or repeated in the batch) are skipped
        and get the existing index. New entries take the next leaf indices in the order given;
        `sign_checkpoint` is called once, inside the transaction, with the new tree size and
        root (it must not touch the store). Concurrent appenders are serialised: each sees the
        other's entries, so a key is logged once. Nothing new -> no checkpoint (`None`).
        """
        ...

    def indices_for(self, keys: Sequence[str]) -> dict[str, int]:
        """Which idempotency keys are logged, and at which index ({} for a missing store)."""
        ...

    def latest_index(
        self, asset: str, sha256: str | None = None, partition: str | None = None
    ) -> int | None:
        """The newest entry for an asset (and partition, content hash); None if there is none."""
        ...

    def earliest_index(
        self, asset: str, sha256: str | None = None, partition: str | None = None
    ) -> int | None:
        """The oldest entry for an asset (and partition, content hash); None if there is none."""
        ...

    def source_cursor(self, orchestrator: str) -> dict[str, int]:
        """Newest event id per asset among idempotency keys `<orchestrator>:<run>:<event id>`.

        Where a fresh sync from that orchestrator resumes; {} for a missing store.
        """
        ...

    def tree_size(self) -> int:
        """How many entries the log holds (0 for a missing store)."""
        ...

    def latest_checkpoint(self) -> bytes | None:
        """The signed checkpoint JSON of the newest batch, or None for an empty log."""
        ...

    def read_snapshot(
        self, head: SnapshotHead | None = None
    ) -> tuple[pa.Table, list[StoredCheckpoint]]:
        """Every entry (`LOG_COLUMNS`, index order) and every checkpoint (size order) of one
        moment: no append lands between the two reads. Read-only.

        `head` = (how many of the log's n entries, what to do with them): the first entries as
        stored are handed over before the rest is read, so verification overlaps the read. The
        taker must check they are what the full table begins with (an edited store may differ).
        """
        ...

    def read_log(self) -> tuple[pa.Table, list[bytes]]:
        """`read_snapshot()` with the checkpoints' signed JSON only."""
        ...

    def entries(self, start: int = 0, stop: int | None = None) -> pa.Table:
        """Entries with `start <= idx < stop` (`LOG_COLUMNS`, index order). Read-only."""
        ...

    def entries_at(self, indices: Sequence[int]) -> pa.Table:
        """The entries at these indices that exist (`LOG_COLUMNS`, index order). Read-only."""
        ...

    def recent_lock_waits(self, window_s: float = 3600.0) -> tuple[int, float]:
        """(count, total seconds) of lock waits by any process in the last `window_s` seconds."""
        ...


class EpochReads(Protocol):
    """Reads of one consistent moment of the ledger and log (what settlement math needs)."""

    def settled(self, epoch: str) -> SettledEpoch | None:
        """The epoch's stored summary, or None if it is not settled."""
        ...

    def payouts(self, epoch: str) -> list[Payout]:
        """The epoch's payouts, by account."""
        ...

    def inputs(self, epoch: str) -> EpochInputs:
        """Fees per model, the digest of the epoch's events and their count.

        The digest is the sha256 of one line per event `id|model|caller|units|fee|epoch_us`
        (epoch_us: microseconds since 1970 of `occurred_at`), sorted by id (byte order) and
        joined by newlines, no final newline. Every driver must produce the same digest.
        """
        ...

    def envelopes(
        self, kinds: Sequence[str], before: int | None = None
    ) -> list[LoggedEnvelope]:
        """Logged envelopes of these record kinds (below index `before`), in index order."""
        ...

    def calls(self, epoch: str) -> pa.Table:
        """The epoch's events as calls (`CALLS_SCHEMA`): id, model, fee and the optional input
        and served output, sorted by event id in byte order (the events digest's order)."""
        ...


class SettlementUnit(EpochReads, Protocol):
    """One transaction that settles one epoch; the driver holds it exclusively (see `settling`).

    Everything read through it is of the same moment, and nothing written through it is seen
    by anyone until the `with` block ends without an exception; an exception rolls it all back.
    """

    epoch: str

    def append(
        self, entries: Sequence[Entry], sign_checkpoint: SignCheckpoint, origin: str
    ) -> AppendResult:
        """`LogStore.append_entries` inside this unit's transaction."""
        ...

    def write_settlement(
        self,
        settled: SettledEpoch,
        ledger: Sequence[Posting],
        payouts: Sequence[Payout],
        receipts: pa.Table | None = None,
    ) -> None:
        """Store the epoch's summary (which marks it settled), its postings (in order), its
        payouts and its per-call receipt leaves (`RECEIPTS_SCHEMA`, in leaf order). Raises
        `StoreError` if the epoch is already settled (the unit checks first)."""
        ...


class LedgerView(EpochReads, Protocol):
    """A read-only view of one moment: for `lineage verify` and account statements."""

    def settled_epochs(self) -> list[SettledEpoch]:
        """Every settled epoch, oldest first."""
        ...

    def ledger(self, epoch: str) -> list[Posting]:
        """The epoch's postings in the order written."""
        ...

    def envelope_at(self, index: int) -> bytes | None:
        ...

    def account_epochs(self, account: str) -> list[SettledEpoch]:
        """The settled epochs with a payout to `account`, oldest first."""
        ...

    def strays(self) -> list[Stray]:
        """Signed settlement records without their matching epoch summary (by index), then
        payout, ledger and receipt rows of epochs with no summary (by part, then epoch)."""
        ...

    def receipt_leaves(self, epoch: str) -> pa.Table:
        """The epoch's per-call receipt leaves (`RECEIPTS_SCHEMA`) in leaf order (empty if none)."""
        ...

    def receipt_epoch(self, event_id: str) -> str | None:
        """The settled epoch holding a receipt for this event id, or None."""
        ...


@runtime_checkable
class LedgerStore(Protocol):
    """Usage events and settled epochs (DESIGN §6)."""

    def known_models(self) -> set[str]:
        """Assets with a logged `model` record (empty for a missing store)."""
        ...

    def ingest_usage(self, events: pa.Table) -> UsageIngest:
        """Insert validated events (`USAGE_SCHEMA`) in one transaction: (inserted, dropped).

        An event without an id is keyed `sha256:<hex>` of `model|caller|units|fee|epoch_us`, so
        replaying it is a no-op too. Within one batch the first of several events sharing a key
        wins (ordered by time, then content, never by row order); a stored key wins over any
        new event. Each event's epoch is its UTC day (`YYYY-MM-DD`), fixed here; an event whose
        day is already settled goes to the day after the last settled epoch (settled epochs form
        a prefix of time), never into a settled one.

        Returns a `UsageIngest`. A dropped row whose body (model, caller, units, fee; not the
        time, which a retrying producer restamps) differs from the kept one is a conflict: it
        is counted and listed in `usage_conflicts` (once per distinct body). A batch that would
        take any epoch's fees past `MAX_EPOCH_FEES` is refused whole (`UsageError`).
        """
        ...

    def usage_count(self) -> int:
        """How many usage events are stored (0 for a missing store)."""
        ...

    def input_dimensions(self) -> dict[str, tuple[int, int]]:
        """Per model, the (smallest, largest) length in bytes of its stored call inputs (models
        without inputs are absent; {} for a missing store): ingestion keeps one dimension."""
        ...

    def usage_conflicts(self) -> list[UsageConflict]:
        """Every conflicting body seen (once per distinct body), by event id ([] if missing)."""
        ...

    def quarantined(self, state: str | None = "held") -> list[QuarantinedEvent]:
        """Quarantined events in this state (None: all), by event id ([] for a missing store)."""
        ...

    def release_quarantined(self, event_id: str, now: datetime) -> QuarantinedEvent:
        """Put a held event back among the usage events (epoch fixed as at ingestion).

        Refused (`UsageError`) if it is not held, still breaks `MAX_AMOUNT` or is dated after
        `now` + `MAX_SKEW_S` (UTC, naive), its id is stored again meanwhile, or its epoch's fees
        would pass `MAX_EPOCH_FEES`.
        """
        ...

    def drop_quarantined(self, event_id: str) -> QuarantinedEvent:
        """Mark a held event dropped: it stays listed (state "dropped") for an audit to see."""
        ...

    def open_epochs(self) -> list[OpenEpoch]:
        """Every epoch with events and no settlement, oldest first ([] for a missing store)."""
        ...

    def settling(self, epoch: str) -> AbstractContextManager[SettlementUnit]:
        """One exclusive transaction for settling `epoch`: commit on a clean exit.

        Two units never run at once on one store (for any epochs, from any machine), and no
        append runs beside a unit (the unit appends its record to the log): the other waits
        (up to `lock_timeout_s`, then `StoreBusyError`) and then sees what the first
        committed, which is what makes a settlement exactly once.
        """
        ...

    def snapshot(self) -> AbstractContextManager[LedgerView]:
        """A read-only view of one moment (`StoreError` for a missing store)."""
        ...

    def settled_epoch(self, epoch: str | None = None) -> SettledEpoch | None:
        """That epoch's summary (the newest settled one if None), or None. Read-only;
        `StoreError` for a missing store."""
        ...

    def payouts(self, epoch: str | None = None, account: str | None = None) -> list[Payout]:
        """Settled payouts, optionally of one epoch and/or account: by epoch, then amount
        (largest first), then account. Read-only; `StoreError` for a missing store."""
        ...


@runtime_checkable
class Store(LogStore, LedgerStore, Protocol):
    """A log and its ledger in one backend: what `open_store` returns."""


def iter_protocol_methods() -> Iterator[str]:
    """The public method names of `Store` (the contract suite checks each driver has them)."""
    for cls in (LogStore, LedgerStore):
        for name, value in vars(cls).items():
            if callable(value) and not name.startswith("_"):
                yield name
