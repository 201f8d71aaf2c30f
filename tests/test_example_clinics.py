"""examples/clinics, the second example: a plain, non-partitioned Dagster project whose
contributors are a column, given lineage, valuation and settlement through the public API."""

from __future__ import annotations

import base64
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

from lineage_platform.dagster import table_sha256
from tests.conftest import REPO

EXAMPLE = REPO / "examples" / "clinics"
CLINIC_TABLES = ("clinic_north", "clinic_south", "clinic_east", "clinic_west")


@pytest.fixture
def forget_clinics() -> Iterator[None]:
    """A test that imports the example's package leaves no trace of it for the next one."""
    yield
    for name in [m for m in sys.modules if m == "clinics" or m.startswith("clinics.")]:
        del sys.modules[name]


@pytest.fixture
def clinics(monkeypatch: pytest.MonkeyPatch, forget_clinics: None) -> ModuleType:
    """The example's package, imported as `dagster dev` would (its folder on sys.path)."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import clinics.data

    return clinics


def test_the_clinics_split_is_held_out_and_west_is_the_bad_source(clinics: ModuleType) -> None:
    data = clinics.data
    tables = {c: data.clinic_rows(c) for c in data.CLINICS}
    holdout = data.holdout_rows()
    assert {c: set(t[data.SOURCE]) for c, t in tables.items()} == {c: {c} for c in tables}
    everyone = pd.concat(tables.values(), ignore_index=True)
    assert len(everyone) + len(holdout) == 442  # the whole bundled study, each patient once
    assert not holdout.merge(everyone[data.FEATURES], on=data.FEATURES).shape[0]

    # Scored with a model other than the example's own (unscaled least squares): each clean
    # clinic alone explains much of the held-out progression (R² above 0.25, where always
    # predicting the mean scores 0); west's reversed scale does far worse than the mean, alone
    # and next to any clean clinic.
    def score(names: tuple[str, ...]) -> float:
        rows = pd.concat([tables[n] for n in names])
        model = LinearRegression().fit(rows[data.FEATURES], rows[data.LABEL])
        return float(r2_score(holdout[data.LABEL], model.predict(holdout[data.FEATURES])))

    clean = ("north", "south", "east")
    assert all(score((c,)) > 0.25 for c in clean)
    assert score(("west",)) < -1.0
    assert all(score((c, "west")) < 0 < score((c,)) for c in clean)
    # The labels are the study's continuous target: a regression, not a classification.
    assert holdout[data.LABEL].nunique() > 50
    assert len({len(t) for t in tables.values()}) == len(tables), "clinic sizes differ"


def test_the_plain_project_materializes_and_dagster_alone_cannot_tell_tables_apart(
    clinics: ModuleType,
) -> None:
    """The issue's starting point: without content hashes Dagster gives four different clinic
    tables one data version (it hashes the code version, not the frame)."""
    from clinics.assets import clinic_tables, cohort, progression_model, progression_report

    plain = [*clinic_tables, cohort, progression_model, progression_report]
    with dg.instance_for_test() as instance:
        result = dg.materialize(plain, instance=instance)
        assert result.success
        versions = {}
        for key in CLINIC_TABLES:
            event = instance.get_latest_materialization_event(dg.AssetKey(key))
            assert event is not None and event.asset_materialization is not None
            versions[key] = event.asset_materialization.tags["dagster/data_version"]
        assert len(set(versions.values())) == 1
        report = instance.get_latest_materialization_event(dg.AssetKey("progression_report"))
        assert report is not None


# --- the whole path, through the public API: Dagster, `lineage_platform`, the `lineage` CLI ---

UNSET = ("DAGSTER_HOME", "LINEAGE_HOME", "LINEAGE_PROJECT", "LINEAGE_STORE_URL",
         "LINEAGE_MLFLOW_URI", "MLFLOW_TRACKING_URI")


def lineage(env: dict[str, str], project: Path, *args: str) -> str:
    """Run `lineage ARGS` as a user does (a subprocess in the project); its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "lineage_platform.cli", *args],
        cwd=project, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, f"lineage {' '.join(args)}: exit {done.returncode}\n" + (
        done.stdout + done.stderr
    )[-3000:]
    return done.stdout + done.stderr


def signed_statements(bundle: Path) -> list[dict[str, Any]]:
    """The in-toto statements of an exported bundle, in log order (DSSE payloads, base64)."""
    lines = (bundle / "envelopes.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(base64.b64decode(json.loads(line)["payload"])) for line in lines]


def exact_shapley(players: list[str], utility: dict[frozenset[str], float]) -> dict[str, float]:
    """Shapley values by the textbook formula over every coalition (four players: 16)."""
    n = len(players)
    out = {}
    for p in players:
        others = [q for q in players if q != p]
        out[p] = sum(
            math.factorial(len(s)) * math.factorial(n - len(s) - 1) / math.factorial(n)
            * (utility[frozenset(s) | {p}] - utility[frozenset(s)])
            for r in range(n) for s in itertools.combinations(others, r)
        )
    return out


@pytest.mark.slow
def test_clinics_materialize_sync_value_use_settle_verify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forget_clinics: None
) -> None:
    project = tmp_path / "clinics"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", ".lineage"))
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env.update(LINEAGE_PROJECT=str(project), LINEAGE_HOME=str(tmp_path / "state"),
               DAGSTER_HOME=str(home))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in UNSET:
        if name not in env:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.syspath_prepend(str(project))
    lineage(env, project, "init")

    # Materialize everything, as `dagster dev`'s "Materialize all" does, into the user's instance.
    from clinics.assets import make_model
    from clinics.data import CLINICS, FEATURES, LABEL, clinic_rows, holdout_rows
    from clinics.definitions import defs

    with dg.DagsterInstance.from_config(str(home)) as instance:
        job = defs.resolve_implicit_global_asset_job_def()
        run = job.execute_in_process(instance=instance, raise_on_error=False)
        made = {e.asset_key.to_user_string() for e in run.get_asset_materialization_events()}
    assert made == {*CLINIC_TABLES, "cohort", "progression_model", "progression_report",
                    "progression_model_valuation"}

    # Sign: every asset but the report, which the translator leaves out.
    synced = _json_of(lineage(env, project, "sync", "--json"))
    assert synced["appended"] == 7
    assert [p["asset"] for p in synced["not_attributed"]] == ["progression_report"]

    lineage(env, project, "export", "--out", str(tmp_path / "bundle"))
    statements = signed_statements(tmp_path / "bundle")
    by_asset = {s["subject"][0]["name"]: s for s in statements}
    assert "progression_report" not in by_asset
    digests = {t: by_asset[t]["subject"][0]["digest"]["sha256"] for t in CLINIC_TABLES}
    # Each clinic table is signed under the hash of its own content, so all four differ.
    assert digests == {
        f"clinic_{c}": table_sha256(pa.Table.from_pandas(clinic_rows(c))) for c in CLINICS
    }
    assert len(set(digests.values())) == 4
    cohort_record = by_asset["cohort"]["predicate"]
    assert cohort_record["kind"] == "dataset"
    assert {c["id"]: c["rows"] for c in cohort_record["contributors"]} == {
        c: len(clinic_rows(c)) for c in CLINICS
    }
    assert by_asset["progression_model"]["predicate"]["kind"] == "model"
    assert by_asset["progression_model_valuation"]["predicate"]["kind"] == "valuation"

    # Value: exact Shapley over the four clinics by R², computed here again by the textbook
    # formula with scikit-learn's r2_score; u(∅) = 0, the R² of always predicting the mean.
    valued = _json_of(lineage(env, project, "value", "progression_model", "--json"))
    assert (valued["method"], valued["score"]) == ("exact-shapley", "r2")
    values = {c["contributor"]: c["value"] for c in valued["contributors"]}
    holdout = holdout_rows()
    utility = {frozenset(): 0.0}
    for r in range(1, len(CLINICS) + 1):
        for s in itertools.combinations(CLINICS, r):
            rows = pd.concat([clinic_rows(c) for c in s])
            model = make_model().fit(rows[FEATURES], rows[LABEL])
            utility[frozenset(s)] = float(r2_score(holdout[LABEL],
                                                   model.predict(holdout[FEATURES])))
    expected = exact_shapley(list(CLINICS), utility)
    assert values == pytest.approx(expected, abs=1e-9)
    gain = utility[frozenset(CLINICS)] - utility[frozenset()]
    assert math.fsum(values.values()) == pytest.approx(gain, abs=1e-9)  # efficiency
    assert values["west"] < 0 < min(values["north"], values["south"], values["east"])

    # Use: two calls yesterday (a closed epoch), in the documented CSV format (docs/usage.md).
    day = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    calls = tmp_path / "calls.csv"
    calls.write_text(
        "event_id,model,caller,units,fee,occurred_at\n"
        f"call-1,progression_model,acme-insurance,1,1250,{day}T09:30:00Z\n"
        f"call-2,progression_model,city-hospital,3,750,{day}T15:10:00Z\n",
        encoding="utf-8",
    )
    lineage(env, project, "usage", "ingest", str(calls))
    settled = _json_of(lineage(env, project, "settle", "--json"))["epochs"]
    assert [(e["epoch"], e["fees_total"], e["paid_total"]) for e in settled] == [
        (day, 2000, 2000)
    ]
    paid = {p["account"]: p["amount"] for p in _json_of(lineage(env, project, "payouts", "--json"))}
    assert sum(paid.values()) == 2000  # exactly the fees, in integer minor units
    # The default policy: 5 % protocol, 15 % the model's owner, 80 % data by positive value.
    assert paid["protocol"] == 100 and paid["owner:progression_model"] == 300
    positive = {c: v for c, v in expected.items() if v > 0}
    for clinic, v in positive.items():
        assert abs(paid[f"contributor:{clinic}"] - 1600 * v / sum(positive.values())) < 1
    assert paid.get("contributor:west", 0) == 0

    assert "OK" in lineage(env, project, "verify")
    # The exact valuation re-run from the kept copies of the cohort and holdout it read.
    assert "recomputed with exact-shapley from its signed inputs: values match" in lineage(
        env, project, "verify", "--recompute"
    )


def _json_of(output: str) -> Any:
    """The JSON document a `--json` command printed (stderr notes may follow it)."""
    start = min(i for i in (output.find("{"), output.find("[")) if i >= 0)
    return json.JSONDecoder().raw_decode(output[start:])[0]
