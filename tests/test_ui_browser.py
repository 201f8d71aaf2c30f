"""The Dagster UI as a person sees it: lineage graph, contributor table, attribution metadata.

Runs `dagster dev` on 127.0.0.1 over a demo'd copy of the project, queries GraphQL for the asset
graph, and drives Debian's chromium with Playwright for the pages; with
LINEAGE_UPDATE_SCREENSHOTS=1 its screenshots replace the ones in docs/img.
Skipped, with the reason printed, only when chromium is not installed (.ci/run installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
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

        page.goto(f"{base}/assets/datanet?view=events", wait_until="networkidle")
        page.get_by_text("share_of_rows").first.wait_for(timeout=60_000)
        assert page.get_by_text("alice").count() > 0
        assert page.get_by_text("lineage/dvc_md5").count() > 0
        page.screenshot(path=str(shots / "ui-datanet-contributors.png"), full_page=True)

        page.goto(f"{base}/assets/digits_classifier?view=events", wait_until="networkidle")
        page.get_by_text("lineage/mlflow_run_id").first.wait_for(timeout=60_000)
        page.screenshot(path=str(shots / "ui-model.png"), full_page=True)

        page.goto(f"{base}/assets/digits_classifier_valuation?view=events",
                  wait_until="networkidle")
        page.get_by_text("contributor values").first.wait_for(timeout=60_000)
        assert page.get_by_text("erin").count() > 0
        page.screenshot(path=str(shots / "ui-valuation.png"), full_page=True)

        page.goto(f"{base}/assets/digits_classifier?view=checks", wait_until="networkidle")
        page.get_by_text("attribution_recorded").first.wait_for(timeout=60_000)
        page.screenshot(path=str(shots / "ui-checks.png"), full_page=True)
        browser.close()
    assert all((shots / f"ui-{n}.png").stat().st_size > 10_000
               for n in ("lineage", "datanet-contributors", "model", "valuation", "checks"))
