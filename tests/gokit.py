"""Go's own transparency-log packages as an outside auditor: golang.org/x/mod/sumdb/{note,tlog}.

    check = go_checker(tmp_path_factory)       # builds tests/go/c2sp_check.go once
    check("note", vkey, str(checkpoint_file))  # raises AssertionError with Go's error line

Built offline in GOPATH mode from Debian's golang-go and golang-golang-x-mod-dev (.ci/run
installs both); without them the tests that need Go skip, saying which packages are missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parent / "go" / "c2sp_check.go"
GOPATH = Path("/usr/share/gocode")
MISSING = (
    "Go is not installed (apt-get install golang-go golang-golang-x-mod-dev): "
    "the check with Go's sumdb/note and sumdb/tlog is skipped"
)

_built: dict[str, Path] = {}


def go_checker(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., str]:
    go = shutil.which("go")
    if go is None or not (GOPATH / "src/golang.org/x/mod/sumdb/note/note.go").exists():
        pytest.skip(MISSING)
    if "bin" not in _built:
        work = tmp_path_factory.mktemp("go")
        env = {
            **os.environ,
            "GO111MODULE": "off",  # GOPATH mode: Debian's sources, no module download
            "GOPATH": str(GOPATH),
            "GOCACHE": str(work / "cache"),
            "GOFLAGS": "",
            "GOPROXY": "off",
        }
        shutil.copy(SOURCE, work / SOURCE.name)
        done = subprocess.run(
            [go, "build", "-o", str(work / "c2sp_check"), SOURCE.name],
            cwd=work, env=env, capture_output=True, text=True, timeout=300,
        )
        assert done.returncode == 0, done.stderr
        _built["bin"] = work / "c2sp_check"

    def check(*args: str) -> str:
        done = subprocess.run(
            [str(_built["bin"]), *args], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr
        return done.stdout

    return check


def go_rejects(check: Callable[..., str], *args: str) -> str:
    """Go's error line for a check that must fail."""
    with pytest.raises(AssertionError) as info:
        check(*args)
    return str(info.value)
