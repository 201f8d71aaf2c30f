"""The Dagster UI as a person sees it: lineage graph, contributor table, attribution metadata.

Runs `dagster dev` on 127.0.0.1 over a demo'd copy of the project, queries GraphQL for the asset
graph, and drives Debian's chromium with Playwright for the pages; with
LINEAGE_UPDATE_SCREENSHOTS=1 its screenshots replace the ones in docs/img.
Skipped, with the reason printed, only when chromium is not installed (.ci/run installs it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lineage_platform.config import Settings
from tests.conftest import REPO
from tests.deploy_world import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
# LINEAGE_UPDATE_SCREENSHOTS=1 refreshes the docs' pictures; otherwise they go to a temp folder.
SHOTS = REPO / "docs" / "img" if os.environ.get("LINEAGE_UPDATE_SCREENSHOTS") else None

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="chromium not installed (apt-get install chromium)"
)


def _graphql(port: int, query: str) -> dict:  # type: ignore[type-arg]
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


# Until the example code location and the sync path add them (issue 17: with_lineage and the
# sensor), the test wires the platform's settlement asset, friction checks and page views itself:
# a code location extending the example's, and what `lineage settle` and the sync report after
# settling and signing (record_settlement_materialization, attribution_observations).
UI_LOCATION = """\
import dagster as dg

import assets.definitions as example
from lineage_platform.dagster.settlement import settlement, settlement_asset_job
from lineage_platform.dagster.views import sensor_lag_check, unsettled_fees_check

defs = dg.Definitions.merge(example.defs, dg.Definitions(
    assets=[settlement], jobs=[settlement_asset_job],
    asset_checks=[sensor_lag_check("digits_classifier", [a.key for a in example.ASSETS]),
                  unsettled_fees_check()],
))
"""
REPORT_VIEWS = """\
import json, os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

from assets.definitions import ASSETS
from lineage_platform.config import Settings
from lineage_platform.dagster.settlement import SETTLEMENT_KEY, record_settlement_materialization
from lineage_platform.dagster.views import (
    attribution_observations, lag_evaluation, unsettled_evaluation)
from lineage_platform.dagster.workspace import open_instance
from lineage_platform.keys import KeyRing
from lineage_platform.settlement import settle_held
from lineage_platform.stores import open_store

settings = Settings.from_env(os.environ, cwd=Path.cwd())
store = open_store(settings.store_url)
ring = KeyRing(settings.keys_dir)
now = datetime.now(UTC)
epoch = (now - timedelta(days=1)).strftime("%Y-%m-%d")
statements = settle_held(store, ring.signer(None), ring.trust(), settings.project_dir,
                         settings.state_dir, now, epoch)  # what `lineage settle` runs
keys = [a.key for a in ASSETS]
with open_instance(settings) as instance:
    for st in statements:
        record_settlement_materialization(instance, st, store)
    for obs in attribution_observations(store, keys):
        instance.report_runless_asset_event(obs)
    instance.report_runless_asset_event(lag_evaluation(
        instance, store, dg.AssetKey("digits_classifier"), keys, 100, 15))
    instance.report_runless_asset_event(unsettled_evaluation(store, SETTLEMENT_KEY, 6))
print(json.dumps({"epoch": epoch, "settled": [s.epoch for s in statements]}))
"""


PROJECT: list[tuple[Path, dict[str, str]]] = []  # the demo'd copy the `ui` fixture serves


def wire_views(root: Path, env: dict[str, str]) -> None:
    (root / "assets" / "ui_definitions.py").write_text(UI_LOCATION, encoding="utf-8")
    (root / "report_views.py").write_text(REPORT_VIEWS, encoding="utf-8")
    done = subprocess.run([sys.executable, "report_views.py"], cwd=root, capture_output=True,
                          text=True, timeout=300, env={**env, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr[-3000:]
    (root / "workspace.yaml").write_text(
        (root / "workspace.yaml").read_text().replace("assets.definitions", "assets.ui_definitions")
    )


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory, reproduced_project: Settings) -> Iterator[int]:
    root = tmp_path_factory.mktemp("ui") / "project"
    shutil.copytree(reproduced_project.project_dir, root,
                    ignore=shutil.ignore_patterns(".lineage", "__pycache__"))
    env = {**os.environ, "LINEAGE_PROJECT": str(root), "LINEAGE_HOME": str(root / ".lineage"),
           "DAGSTER_HOME": str(root / ".lineage" / "dagster")}
    demo = subprocess.run([sys.executable, "-m", "lineage_platform.cli", "demo"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stderr[-3000:]
    wire_views(root, env)
    PROJECT.append((root, env))
    port = free_port()
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.Popen(
        [str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,  # DESIGN §8: signal the whole group, not just the parent
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                nodes = _graphql(port, "{ assetNodes { assetKey { path } } }")
                if nodes.get("data", {}).get("assetNodes"):
                    break
            except OSError:
                pass
            assert proc.poll() is None, "dagster dev exited"
            assert time.monotonic() < deadline, "dagster dev did not serve the asset graph"
            time.sleep(2)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_graphql_asset_graph_is_contributions_datanet_model(ui: int) -> None:
    data = _graphql(ui, "{ assetNodes { assetKey { path } dependencyKeys { path } } }")
    deps = {
        "/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]}
        for n in data["data"]["assetNodes"]
    }
    assert deps["datanet"] == {"contributions"}
    assert deps["digits_classifier"] == {"datanet"}
    assert "digits_classifier" in deps["digits_classifier_valuation"]


def test_pages_show_lineage_contributors_and_attribution(ui: int, tmp_path: Path) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    shots = SHOTS or tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{ui}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})

        page.goto(f"{base}/asset-groups/datanet", wait_until="networkidle")
        skip = page.get_by_role("button", name="Skip")  # the first-visit newsletter dialog
        try:
            skip.wait_for(timeout=5_000)
            skip.click()
        except PlaywrightTimeout:
            pass
        page.goto(
            f"{base}/assets/digits_classifier_valuation?view=lineage&lineageScope=upstream"
            "&lineageDepth=5",
            wait_until="networkidle",
        )
        page.get_by_text("contributions").first.wait_for(timeout=60_000)
        page.wait_for_timeout(1500)  # the graph lays itself out after the data arrives
        page.screenshot(path=str(shots / "ui-lineage.png"))

        # Overview: the latest materialization's metadata (Events opens on the newest event,
        # which is the platform's observation)
        page.goto(f"{base}/assets/datanet", wait_until="networkidle")
        page.get_by_text("share_of_rows").first.wait_for(timeout=60_000)
        assert page.get_by_text("alice").count() > 0
        assert page.get_by_text("lineage/dvc_md5").count() > 0
        page.screenshot(path=str(shots / "ui-datanet-contributors.png"), full_page=True)

        page.goto(f"{base}/assets/digits_classifier", wait_until="networkidle")
        page.get_by_text("lineage/mlflow_run_id").first.wait_for(timeout=60_000)
        page.screenshot(path=str(shots / "ui-model.png"), full_page=True)

        page.goto(f"{base}/assets/digits_classifier_valuation", wait_until="networkidle")
        page.get_by_text("contributor values").first.wait_for(timeout=60_000)
        assert page.get_by_text("erin").count() > 0
        page.screenshot(path=str(shots / "ui-valuation.png"), full_page=True)

        page.goto(f"{base}/assets/digits_classifier?view=checks", wait_until="networkidle")
        page.get_by_text("attribution_recorded").first.wait_for(timeout=60_000)
        page.get_by_text("sensor_caught_up").first.wait_for(timeout=60_000)  # the lag check
        page.screenshot(path=str(shots / "ui-checks.png"), full_page=True)
        browser.close()
    assert all((shots / f"ui-{n}.png").stat().st_size > 10_000
               for n in ("lineage", "datanet-contributors", "model", "valuation", "checks"))


def _payouts(root_env: tuple[Path, dict[str, str]], epoch: str) -> list[dict[str, object]]:
    root, env = root_env
    done = subprocess.run([sys.executable, "-m", "lineage_platform.cli", "payouts", "--epoch",
                           epoch, "--json"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    rows: list[dict[str, object]] = json.loads(done.stdout)
    return rows


def _row_with(page, text: str) -> str:  # type: ignore[no-untyped-def]
    """The text of the first innermost table row with a cell that is exactly `text`."""
    cell = page.locator("td", has_text=re.compile(f"^\\s*{re.escape(text)}\\s*$"))
    row = page.locator("tr:not(:has(tr))").filter(has=cell).first
    row.wait_for(timeout=30_000)
    return str(row.inner_text())


def test_pages_show_payouts_earnings_and_the_valuation_chart(ui: int, tmp_path: Path) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    shots = SHOTS or tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{ui}"
    epoch = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    payouts = _payouts(PROJECT[0], epoch)
    assert payouts, "the demo settled nothing"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.goto(f"{base}/asset-groups/datanet", wait_until="networkidle")
        skip = page.get_by_role("button", name="Skip")  # the first-visit newsletter dialog
        try:
            skip.wait_for(timeout=5_000)
            skip.click()
        except PlaywrightTimeout:
            pass

        # the settled epoch: its partition shows every payout of `lineage payouts`
        page.goto(f"{base}/assets/settlement?view=partitions&partition={epoch}",
                  wait_until="networkidle")
        page.get_by_text("statement_root").first.wait_for(timeout=60_000)
        for row in payouts:
            assert row["epoch"] == epoch
            cells = _row_with(page, str(row["account"]))
            assert str(row["amount"]) in cells.split(), (row, cells)
        page.screenshot(path=str(shots / "ui-settlement.png"), full_page=True)

        # the model: each contributor of its lineage and what the ledger paid them
        page.goto(f"{base}/assets/digits_classifier?view=events", wait_until="networkidle")
        page.get_by_text("earnings to date").first.wait_for(timeout=60_000)
        earned = {str(r["account"]).removeprefix("contributor:"): r["amount"]
                  for r in payouts if str(r["account"]).startswith("contributor:")}
        assert earned
        for name, amount in earned.items():
            cells = _row_with(page, f"contributor:{name}")
            assert name in cells and str(amount) in cells.split(), (name, amount, cells)
        page.screenshot(path=str(shots / "ui-model-earnings.png"), full_page=True)

        # the valuation: its chart is an image on the page, not behind [Show Markdown]
        page.goto(f"{base}/assets/digits_classifier_valuation?view=events",
                  wait_until="networkidle")
        chart = page.locator("img[alt^='contributor values']").first
        chart.wait_for(timeout=60_000)
        assert str(chart.get_attribute("src")).startswith("data:image/svg+xml;base64,")
        assert chart.evaluate("img => img.naturalWidth") > 0
        page.screenshot(path=str(shots / "ui-valuation-chart.png"), full_page=True)
        browser.close()
