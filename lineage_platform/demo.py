"""`lineage demo`: the whole platform end to end on the embedded defaults.

    summary = run_demo(Settings.from_env(os.environ, cwd=Path.cwd()))
    summary.materialized  # one entry per asset (and partition) materialized
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from lineage_platform.config import Settings
from lineage_platform.integrations import dvc


@dataclass(frozen=True, slots=True)
class DemoSummary:
    materialized: list[object]
    lines: list[str] = field(default_factory=list)


def run_demo(
    settings: Settings,
    passphrase: bytes | None = None,
    on_step: Callable[[str], None] | None = None,
) -> DemoSummary:
    from lineage_platform.dagster.workspace import load_definitions, materialize_all, open_instance

    step = on_step or (lambda _msg: None)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    step("dvc repro")
    ran = dvc.reproduce(settings.project_dir)
    lines = [f"dvc repro: {', '.join(ran) if ran else 'data up to date'}"]
    defs = load_definitions(settings.project_dir)
    with open_instance(settings) as instance:
        done = materialize_all(defs, instance, on_step=lambda label: step(f"materializing {label}"))
    lines.append(f"materialized {len(done)} asset events into {settings.dagster_home}")

    from lineage_platform.audit import verify_store
    from lineage_platform.dagster.sync import sync_project
    from lineage_platform.keys import KeyRing
    from lineage_platform.store import Store

    step("lineage sync")
    synced = sync_project(settings, passphrase)
    lines.append(
        f"lineage sync: {synced.appended} records signed and appended "
        f"({synced.skipped} already in the log)"
    )
    step("lineage verify")
    store = Store(settings.duckdb_path, lock_timeout_s=settings.lock_timeout_s)
    report = verify_store(store, KeyRing(settings.keys_dir).trust())
    lines.append(f"lineage verify: {report.summary()}")
    return DemoSummary(list(done), lines)
