"""Real processes for the fault tests: `lineage` subprocesses, SIGKILL at random points, one-line
errors, and how many trials to run.

    proc = spawn(["sync", "--json"], env)                 # python -m lineage_platform.cli
    line = observe(proc, db, kill_after_open=0.3)          # SIGKILL its process group 0.3 s
    line.killed, line.opened, line.closed                  # after its first transaction began

`make test` runs the short form (LINEAGE_FAULT_TRIALS=3, a 500-event backlog); `make soak` sets
LINEAGE_FAULT_TRIALS=20 and LINEAGE_FAULT_BACKLOG=5000. LINEAGE_FAULT_SEED replays one run's
random kill points.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TRIALS = int(os.environ.get("LINEAGE_FAULT_TRIALS") or 3)
BACKLOG = int(os.environ.get("LINEAGE_FAULT_BACKLOG") or 500)
SEED = int(os.environ.get("LINEAGE_FAULT_SEED") or random.randrange(2**32))

# A code location with the example's asset keys and nothing to import but Dagster, so a `lineage
# sync` subprocess starts in about two seconds.
CODE_LOCATION = '''\
import dagster as dg

parts = dg.StaticPartitionsDefinition(["p0", "p1", "p2", "p3"])


@dg.asset(partitions_def=parts)
def contributions() -> None:
    """A contributor's part."""


@dg.asset(deps=[contributions])
def datanet() -> None:
    """The union of the parts."""


@dg.asset(deps=[datanet])
def digits_classifier() -> None:
    """The model."""


defs = dg.Definitions(assets=[contributions, datanet, digits_classifier])
'''
ASSET_NAMES = ["contributions", "datanet", "digits_classifier"]


def code_location(root: Path) -> Path:
    """A project folder whose workspace.yaml loads CODE_LOCATION."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "workspace.yaml").write_text(
        "load_from:\n  - python_module:\n      module_name: fault_defs\n"
        "      working_directory: .\n",
        encoding="utf-8",
    )
    (root / "fault_defs.py").write_text(CODE_LOCATION, encoding="utf-8")
    return root


def fast_scratch() -> Path:
    """A folder in memory when the system has one (/dev/shm): Dagster commits every event it
    stores, which costs half again as much on a disk. Delete it when done."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="lineage-faults-", dir=base))


def cli_env(project: Path, state: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without LINEAGE_*/DAGSTER_* settings, pointed at one project."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LINEAGE_", "DAGSTER_"))}
    env.update(
        LINEAGE_PROJECT=str(project),
        LINEAGE_HOME=str(state),
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        **extra,
    )
    return env


def spawn(args: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen[str]:
    """`python -m lineage_platform.cli ARGS` in its own session, so a kill takes its children."""
    return subprocess.Popen(
        [sys.executable, "-m", "lineage_platform.cli", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def run(
    args: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lineage_platform.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line(done: subprocess.CompletedProcess[str], code: int | None = None) -> str:
    """The command failed with one line on stderr (no traceback); that line."""
    assert done.returncode != 0, done.stdout
    if code is not None:
        assert done.returncode == code, (done.returncode, done.stderr)
    text = done.stderr.strip()
    assert "Traceback" not in text and text.count("\n") == 0, text
    assert text.startswith("error: "), text
    return text


def holds_open(pid: int, path: Path) -> bool:
    """Whether process `pid` has `path` (or its DuckDB WAL) open right now (Linux /proc)."""
    wanted = {str(path), f"{path}.wal"}
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                return True
        except OSError:
            continue
    return False


PROC = Path("/proc/self/fd").is_dir()


@dataclass
class Timeline:
    """When a process held the DuckDB file open (its transactions), as seen from outside."""

    started: float
    opened: list[float] = field(default_factory=list)
    closed: list[float] = field(default_factory=list)
    killed: bool = False
    stdout: str = ""
    stderr: str = ""

    @property
    def write_span(self) -> float | None:
        """From its first transaction's start to its last one's end."""
        if not self.opened or not self.closed:
            return None
        return self.closed[-1] - self.opened[0]


def observe(
    proc: subprocess.Popen[str],
    path: Path,
    kill_after_open: float | None = None,
    kill_after_start: float | None = None,
    timeout: float = 300,
) -> Timeline:
    """Watch `proc` open and close `path` until it exits, or SIGKILL its process group
    `kill_after_open` seconds after its first transaction began (or `kill_after_start` seconds
    after it was started). Polls /proc every millisecond; drains its output at the end."""
    path = path.parent.resolve() / path.name
    line = Timeline(time.monotonic())
    held = False
    deadline = line.started + timeout
    while proc.poll() is None:
        now = time.monotonic()
        if now > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"{proc.args} still running after {timeout}s")
        due = (kill_after_start is not None and now - line.started >= kill_after_start) or (
            kill_after_open is not None and line.opened and now - line.opened[0] >= kill_after_open
        )
        if due:
            os.killpg(proc.pid, signal.SIGKILL)
            line.killed = True
            break
        if holds_open(proc.pid, path) != held:
            held = not held
            (line.opened if held else line.closed).append(now)
        time.sleep(0.001)
    line.stdout, line.stderr = proc.communicate(timeout=60)
    if line.killed:
        assert proc.returncode == -signal.SIGKILL, proc.returncode
    elif held:
        line.closed.append(time.monotonic())
    return line
