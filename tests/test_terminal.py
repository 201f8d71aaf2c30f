"""`lineage demo` in a real pseudo-terminal: live progress, then the tables a person reads."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lineage_platform.config import Settings

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def test_demo_in_a_terminal_shows_progress_and_tables(
    reproduced_project: Settings, tmp_path: Path
) -> None:
    root = tmp_path / "project"
    shutil.copytree(reproduced_project.project_dir, root, ignore=shutil.ignore_patterns(".lineage"))
    env = {**os.environ, "LINEAGE_PROJECT": str(root), "LINEAGE_HOME": str(root / ".lineage"),
           "COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "lineage_platform.cli", "demo"], cwd=root,
                            env=env, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    raw = b""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            raw += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(leader)
    text = ANSI.sub(b"", raw).decode("utf-8", "replace")
    assert proc.returncode == 0, text[-3000:]
    # Live progress: the status line is redrawn per step while the work runs.
    assert "materializing contributions[alice]" in text
    assert "lineage sync" in text and "lineage settle" in text
    assert "\x1b[" in raw.decode("utf-8", "replace"), "a terminal gets styled output"
    # The tables, drawn with box characters, and the final verdict.
    assert "Materialized assets" in text and "┃ asset" in text
    assert "digits_classifier_valuation" in text
    assert "Payouts of the settled epoch" in text and "contributor:alice" in text
    assert re.search(r"lineage verify: OK: \d+ records", text)
