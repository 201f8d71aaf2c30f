"""`lineage verify --recompute` (issue 15): a deterministic valuation is re-run from the data its
signed inputs name, so a key holder cannot pay on values the data does not give."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from lineage_platform.attest import append_records
from lineage_platform.config import Settings
from lineage_platform.dagster.workspace import load_recomputers
from lineage_platform.keys import KeyRing
from lineage_platform.recompute import recompute_valuations, values_digest
from lineage_platform.records import AttributionRecord, RunRef, details_json
from lineage_platform.signing import Envelope
from lineage_platform.stores import open_store

KEPT = ("LINEAGE_VERIFIER_STATE", "LINEAGE_USER_CONFIG")  # per test, see conftest


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEAGE_") or k in KEPT}
    env["LINEAGE_HOME"] = str(settings.state_dir)
    env["LINEAGE_PROJECT"] = str(settings.project_dir)
    return subprocess.run(
        [sys.executable, "-m", "lineage_platform.cli", *args], cwd=settings.project_dir,
        env=env, capture_output=True, text=True, timeout=600,
    )


def _forge(settings: Settings) -> tuple[int, int]:
    """(the demo's valuation record, a copy with one value moved, re-signed with the log's key
    under a new run event: self-consistent, efficient, and not what the data gives)."""
    store = open_store(settings.store_url)
    with store.snapshot() as view:
        [(idx, raw)] = view.envelopes(("valuation",))
    record = AttributionRecord.from_bytes(Envelope.from_json(raw).payload)
    values = {c.id: float(c.value or 0.0) for c in record.contributors}
    values["alice"] += 0.01
    values["erin"] -= 0.01  # the sum (the signed gain) is unchanged
    digest = values_digest(values)
    details = record.details_obj() or {}
    details.update(values=values, digest=f"sha256:{digest}")
    assert record.run is not None
    forged = dataclasses.replace(
        record,
        sha256=digest,
        data_version=digest,
        run=RunRef(record.run.orchestrator, record.run.run_id, record.run.event_id + 1000),
        contributors=tuple(dataclasses.replace(c, value=values[c.id])
                           for c in record.contributors),
        details=details_json(details),
    )
    key = KeyRing(settings.keys_dir).signer(None)
    return idx, append_records(store, key, [forged]).indices[0]


def test_verify_recompute_confirms_the_demo_and_names_a_re_signed_value(
    project_copy: Callable[[], Settings], tmp_path: Path
) -> None:
    settings = project_copy()
    demo = _cli(settings, "demo")
    assert demo.returncode == 0, demo.stderr[-3000:]

    ok = _cli(settings, "verify", "--recompute")
    assert ok.returncode == 0, ok.stderr
    assert "(digits_classifier_valuation): recomputed with knn-shapley-rows from 6 parts: " \
        "values match" in " ".join(ok.stdout.split())

    # The bytes come from the DVC cache when the work tree's copy is gone.
    (settings.project_dir / "data/parts/alice.parquet").unlink()
    cached = _cli(settings, "verify", "--recompute")
    assert cached.returncode == 0 and "values match" in cached.stdout, cached.stdout

    idx, forged = _forge(settings)
    bad = _cli(settings, "verify", "--recompute")
    assert bad.returncode == 7, bad.stderr
    text = " ".join((bad.stdout + bad.stderr).split())
    assert f"valuation record {idx} (digits_classifier_valuation): recomputed" in text
    assert f"valuation record {forged} (digits_classifier_valuation): the data gives values " \
        "digest sha256:" in text
    assert f"1 valuation record(s) not confirmed by their data: valuation record {forged} " in text
    assert "Traceback" not in bad.stderr

    # Data that cannot be found is said per record, never a silent pass.
    nowhere = tmp_path / "elsewhere"
    nowhere.mkdir()
    outcomes = recompute_valuations(
        open_store(settings.store_url), nowhere, load_recomputers(settings.project_dir)
    )
    assert [(o.log_index, o.ok) for o in outcomes] == [(idx, False), (forged, False)]
    for o in outcomes:
        assert f"valuation record {o.log_index} (digits_classifier_valuation): the data of " \
            "record 0 (contributions[alice], sha256 " in o.line
        assert "was not found (looked in " in o.line
