"""Usage and settlement you can try the same day (issue 14), through the CLI as a user runs it:
the documented example files ingest as they are, `lineage usage record --at` puts a call in
yesterday's epoch (within the ingest's bounds), `lineage settle` settles that closed day and then
says when the open epoch closes.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from lineage_platform import attest
from lineage_platform.config import Settings
from lineage_platform.dagster.workspace import load_locations, open_instance
from lineage_platform.keys import KeyRing
from lineage_platform.records import AttributionRecord, utc_timestamp
from lineage_platform.stores import open_store

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "docs" / "examples"

# A plain pipeline: two wards' tables (each a contributor) feed one model, which reads them
# through Dagster's IO manager (so the model's record names the exact input records).
PIPELINE = '''\
import hashlib
import dagster as dg
from lineage_platform.dagster import dataset_metadata, model_metadata


def _ward(context: dg.AssetExecutionContext, rows: list[int], who: str) -> list[int]:
    data = repr(rows).encode()
    context.add_output_metadata(dataset_metadata(
        hashlib.sha256(data).hexdigest(), rows=len(rows),
        contributors=[{"id": who, "rows": len(rows)}]))
    return rows


@dg.asset
def ward_north(context: dg.AssetExecutionContext) -> list[int]:
    """North's rows."""
    return _ward(context, [54, 61, 47], "north")


@dg.asset
def ward_south(context: dg.AssetExecutionContext) -> list[int]:
    """South's rows."""
    return _ward(context, [72, 39], "south")


@dg.asset
def triage_model(
    context: dg.AssetExecutionContext, ward_north: list[int], ward_south: list[int]
) -> float:
    """A model: the mean age."""
    rows = ward_north + ward_south
    model = sum(rows) / len(rows)
    context.add_output_metadata(model_metadata(
        hashlib.sha256(repr(model).encode()).hexdigest(), "run-local", "model-local"))
    return model


defs = dg.Definitions(assets=[ward_north, ward_south, triage_model])
'''


def lineage(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LINEAGE_", "DAGSTER_"))}
    return subprocess.run(
        [sys.executable, "-m", "lineage_platform.cli", *args],
        cwd=project, env=env, capture_output=True, text=True, timeout=180,
    )


def ok(project: Path, *args: str) -> str:
    done = lineage(project, *args)
    assert done.returncode == 0, f"lineage {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture
def trial_project(tmp_path: Path) -> Path:
    """A project whose pipeline was materialized into its own instance and synced."""
    project = tmp_path / "trial"
    project.mkdir()
    (project / "trial_pipeline.py").write_text(PIPELINE, encoding="utf-8")
    (project / "workspace.yaml").write_text(
        "load_from:\n  - python_file: trial_pipeline.py\n", encoding="utf-8"
    )
    ok(project, "init")
    settings = Settings.from_env({}, cwd=project)
    (loaded,) = load_locations(settings)
    assets = [a for a in loaded.defs.assets or [] if isinstance(a, dg.AssetsDefinition)]
    with open_instance(settings) as instance:
        assert dg.materialize(assets, instance=instance).success
    assert json.loads(ok(project, "sync", "--json"))["appended"] == 3
    return project


def test_record_yesterday_then_settle_it_today(trial_project: Path) -> None:
    project = trial_project
    now = datetime.now(UTC)
    yesterday = (now - timedelta(days=1)).strftime("%Y-%m-%d")
    at = f"{yesterday}T12:00:00Z"
    ok(project, "usage", "record", "--model", "triage_model", "--caller", "acme",
       "--fee", "700", "--id", "trial-1", "--at", at)
    ok(project, "usage", "record", "--model", "triage_model", "--caller", "globex",
       "--fee", "301", "--units", "2", "--id", "trial-2", "--at", f"{yesterday}T23:59:59+00:00")

    # The same bounds as the ingest: not after now + 5 min, not before the log's start - 31 days.
    later = (now + timedelta(hours=1)).isoformat()
    done = lineage(project, "usage", "record", "--model", "triage_model", "--caller", "acme",
                   "--fee", "1", "--at", later)
    assert done.returncode == 12 and "(now + 5 min)" in done.stderr, done.stderr
    done = lineage(project, "usage", "record", "--model", "triage_model", "--caller", "acme",
                   "--fee", "1", "--at", (now - timedelta(days=40)).strftime("%Y-%m-%d"))
    assert done.returncode == 12 and "the log's first record - 31 days" in done.stderr
    done = lineage(project, "usage", "record", "--model", "triage_model", "--caller", "acme",
                   "--fee", "1", "--at", "yesterday")
    assert done.returncode == 12 and "not an ISO 8601 time" in done.stderr

    settled = json.loads(ok(project, "settle", "--json"))
    (statement,) = settled["epochs"]
    assert statement["epoch"] == yesterday and not statement["already_settled"]
    assert statement["fees_total"] == 700 + 301
    assert statement["paid_total"] == 700 + 301
    payouts = json.loads(ok(project, "payouts", "--epoch", yesterday, "--json"))
    assert sum(p["amount"] for p in payouts) == 1001
    paid = {p["account"] for p in payouts if p["amount"] > 0}
    assert any("north" in a for a in paid) and any("south" in a for a in paid), paid

    # Nothing left: the answer says when the open epoch closes (00:00 UTC tomorrow) and how long.
    text = ok(project, "settle")
    tomorrow = (now + timedelta(days=1)).strftime("%Y-%m-%d")
    found = re.search(
        rf"nothing to settle: .*the open epoch {now:%Y-%m-%d} closes at {tomorrow} 00:00 UTC "
        r"\(in (\d+) h (\d+) min\)", " ".join(text.split()),
    )
    assert found, text
    left = int(found.group(1)) * 60 + int(found.group(2))
    end = datetime.strptime(tomorrow, "%Y-%m-%d").replace(tzinfo=UTC)
    assert abs(left - (end - now).total_seconds() / 60) <= 3
    assert "--at" in text


@pytest.mark.parametrize("name", ["usage.csv", "usage.jsonl"])
def test_the_documented_example_files_ingest_as_they_are(tmp_path: Path, name: str) -> None:
    """docs/usage.md's example files, byte for byte, against a log whose model record
    (digits_classifier, the main example's model) was signed before the calls they list."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "workspace.yaml").write_text(
        "load_from:\n  - python_module: assets.definitions\n", encoding="utf-8"
    )
    settings = Settings(project, project / ".lineage", "sqlite:///unused")
    ring = KeyRing(settings.keys_dir)
    ring.init(None)
    store = open_store(settings.store_url)
    model = AttributionRecord(
        kind="model", asset="digits_classifier", sha256="ab" * 32,
        recorded_at=utc_timestamp(datetime(2026, 11, 1, tzinfo=UTC)),
    )
    attest.append_records(store, ring.signer(None), [model])

    with (EXAMPLES / "usage.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    by_day: dict[str, int] = {}
    for row in rows:
        day = datetime.fromisoformat(row["occurred_at"]).astimezone(UTC).strftime("%Y-%m-%d")
        by_day[day] = by_day.get(day, 0) + int(row["fee"])

    out = ok(project, "usage", "ingest", str(EXAMPLES / name))
    assert f"ingested {len(rows)} events (0 replays ignored, 0 conflicts, 0 rows refused)" in out
    assert store.usage_count() == len(rows)
    again = ok(project, "usage", "ingest", str(EXAMPLES / name))
    assert f"ingested 0 events ({len(rows)} replays ignored" in again

    settled = json.loads(ok(project, "settle", "--json"))
    assert {s["epoch"]: s["fees_total"] for s in settled["epochs"]} == by_day
