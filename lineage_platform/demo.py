"""`lineage demo`: the whole platform end to end on the embedded defaults.

    summary = run_demo(Settings.from_env(os.environ, cwd=Path.cwd()))
    summary.materialized  # one entry per asset (and partition) materialized
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from lineage_platform import usage
from lineage_platform.config import Settings
from lineage_platform.errors import LineageError
from lineage_platform.integrations import dvc
from lineage_platform.settlement import epoch_bounds, epoch_of, load_policy, settle


@dataclass(frozen=True, slots=True)
class DemoSummary:
    materialized: list[Any]
    lines: list[str] = field(default_factory=list)
    payouts: list[tuple[str, int]] = field(default_factory=list)


def run_demo(
    settings: Settings,
    passphrase: bytes | None = None,
    on_step: Callable[[str], None] | None = None,
) -> DemoSummary:
    from lineage_platform.dagster.workspace import (
        load_definitions,
        materialize_all,
        open_instance,
        run_checks,
    )

    step = on_step or (lambda _msg: None)
    summary_payouts: list[tuple[str, int]] = []
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    step("dvc repro")
    ran = dvc.reproduce(settings.project_dir)
    lines = [f"dvc repro: {', '.join(ran) if ran else 'data up to date'}"]
    defs = load_definitions(settings.project_dir, settings.code)
    with open_instance(settings) as instance:
        done = materialize_all(defs, instance, on_step=lambda label: step(f"materializing {label}"))
    lines.append(f"materialized {len(done)} asset events into {settings.dagster_home}")

    from lineage_platform.audit import verify_store
    from lineage_platform.dagster.settlement import record_settled_epochs
    from lineage_platform.dagster.sync import sync_project
    from lineage_platform.keys import KeyRing
    from lineage_platform.stores import open_store

    step("lineage sync")
    synced = sync_project(settings, passphrase)
    lines.append(
        f"lineage sync: {synced.appended} records signed and appended "
        f"({synced.skipped} already in the log)"
    )
    store = open_store(settings.store_url, lock_timeout_s=settings.lock_timeout_s)
    ring = KeyRing(settings.keys_dir)
    now = datetime.now(UTC)
    step("simulating a day of model calls")
    models = sorted(m.asset for m in done if m.metadata.get("lineage/kind") == "model")
    epoch = epoch_of(now - timedelta(days=1))
    inserted, replays = usage.ingest(store, simulated_usage(models, epoch, calls=DEMO_CALLS))
    lines.append(
        f"usage: {inserted} calls recorded for epoch {epoch}"
        + (f" ({replays} replays of an earlier demo ignored)" if replays else "")
    )
    step("lineage settle")
    policy = load_policy(settings.project_dir)
    statements = settle(store, ring.signer(passphrase), policy, now, epoch)
    try:  # as `lineage settle` does: the settled epoch is a `settlement` partition in the UI
        record_settled_epochs(settings, store, statements)
    except LineageError as exc:
        lines.append(f"warning: {exc}")
    for st in statements:
        state = "already settled" if st.already_settled else "settled"
        lines.append(
            f"lineage settle: epoch {st.epoch} {state}: fees {st.fees_total} paid to "
            f"{len(st.payouts)} accounts, statement root {st.root[:16]}… (log index {st.log_index})"
        )
        summary_payouts.extend(st.payouts)
    step("asset checks")
    with open_instance(settings) as instance:
        checks = run_checks(defs, instance)
    failed = sorted(name for name, ok in checks.items() if not ok)
    lines.append(
        f"asset checks: {len(checks) - len(failed)} of {len(checks)} passed"
        + (f" (failed: {', '.join(failed)})" if failed else "")
    )
    step("lineage verify")
    report = verify_store(store, ring.trust())
    lines.append(f"lineage verify: {report.summary()}")
    return DemoSummary(list(done), lines, summary_payouts)


DEMO_CALLS = 480


def simulated_usage(models: list[str], epoch: str, calls: int, seed: int = 7) -> pa.Table:
    """A day of calls spread over the epoch; ids are fixed per epoch, so a re-run replays them."""
    start, _ = epoch_bounds(epoch)
    rng = np.random.default_rng(seed)
    units = rng.integers(1, 10, size=calls)
    seconds = np.sort(rng.integers(0, 86_400, size=calls))
    table = pa.table(
        {
            "event_id": [f"demo-{epoch}-{i:05d}" for i in range(calls)],
            "model": [models[i % len(models)] for i in range(calls)],
            "caller": [f"caller-{int(c):02d}" for c in rng.integers(1, 21, size=calls)],
            "units": pa.array(units, pa.int64()),
            "fee": pa.array(units * 25, pa.int64()),
            "occurred_at": pa.array(
                [start.replace(tzinfo=None) + timedelta(seconds=int(s)) for s in seconds],
                pa.timestamp("us"),
            ),
        }
    )
    return usage.validate_events(table)
