"""Rush hour in miniature: producers, CLI calls, the sensor and a settlement at once."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))  # spawned workers import the scenario by name

import rush_hour  # noqa: E402


def test_every_event_counted_once_while_sensor_and_settlement_run(tmp_path: Path) -> None:
    r = rush_hour.run(producers=4, events=300, cli_events=2, backlog=120, tmp=tmp_path)
    assert r["cli_failures"] == 0
    assert r["counted"] == r["expected"] == 4 * 300 + 2 + 1000
    assert r["distinct"] == r["counted"], "an event was counted twice"
    assert r["settled_epochs"] == 1
    assert r["log_records"] == 120 + 2 + 1  # backlog, the two setup records, one settlement
