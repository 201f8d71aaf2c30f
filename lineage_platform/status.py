"""The pressure gauges an operator looks at first, from the store (the CLI adds the backlog).

    gauges = store_gauges(store, spool_dir, now)
    gauges.unsettled_fees   # fees of closed epochs not settled yet
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from lineage_platform.log import SignedCheckpoint
from lineage_platform.settlement import epoch_bounds
from lineage_platform.stores import Store


@dataclass(frozen=True, slots=True)
class StoreGauges:
    log_size: int
    checkpoint_size: int | None
    checkpoint_root: str | None
    checkpoint_keyid: str | None
    closed_unsettled_epochs: tuple[str, ...]
    unsettled_fees: int
    open_epoch_fees: int
    usage_event_count: int
    spooled_files: int
    lock_waits_last_hour: int
    lock_wait_seconds_last_hour: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def store_gauges(store: Store, spool_dir: Path, now: datetime) -> StoreGauges:
    latest = store.latest_checkpoint() if store.exists() else None
    cp = SignedCheckpoint.from_json(latest) if latest else None
    closed: list[str] = []
    unsettled = open_fees = 0
    for epoch, _, fees in store.open_epochs():
        if epoch_bounds(epoch)[1] <= now:
            closed.append(epoch)
            unsettled += fees
        else:
            open_fees += fees
    waits, waited = store.recent_lock_waits()
    spooled = len(list(spool_dir.glob("*"))) if spool_dir.is_dir() else 0
    return StoreGauges(
        log_size=store.tree_size(),
        checkpoint_size=cp.checkpoint.tree_size if cp else None,
        checkpoint_root=cp.checkpoint.root_hash.hex() if cp else None,
        checkpoint_keyid=cp.keyid if cp else None,
        closed_unsettled_epochs=tuple(closed),
        unsettled_fees=unsettled,
        open_epoch_fees=open_fees,
        usage_event_count=store.usage_count(),
        spooled_files=spooled,
        lock_waits_last_hour=waits,
        lock_wait_seconds_last_hour=round(waited, 3),
    )
