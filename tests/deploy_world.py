"""Throwaway PostgreSQL and Redis servers on 127.0.0.1, and the project run against them.

    with postgres_server() as pg: use_instance_config(settings, POSTGRES_YAML, pg.env, monkeypatch)
    with redis_server(tmp_path) as url: ...    # redis://127.0.0.1:PORT/0
    lineage_cli(settings, pg.env, "sync")      # {"read": 9, "appended": 9, "skipped": 0}

Each server starts on a free loopback port and is always stopped. When its binaries are
missing or it cannot start, the test is skipped with the reason printed, so a CI log says which
package was missing (.ci/run installs them).
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from lineage_platform.config import Settings

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
POSTGRES_YAML = DEPLOY / "dagster.postgres.yaml"
BIN = REPO / ".venv" / "bin"
START_S = 30


def skip(reason: str) -> NoReturn:
    print(f"SKIPPED: {reason}", file=sys.stderr)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process's whole group (a warm shutdown), then SIGKILL if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


@dataclass(frozen=True, slots=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str
    db_name: str

    @property
    def env(self) -> dict[str, str]:
        """The variables deploy/dagster.postgres.yaml reads."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.db_name,
        }


def _pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    return Path(dirs[-1]) if dirs and (Path(dirs[-1]) / "pg_ctl").exists() else None


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    """A fresh cluster (password auth over TCP) with one database, stopped and deleted after."""
    bindir = _pg_bin()
    if bindir is None or not (bindir / "initdb").exists():
        skip("PostgreSQL server binaries not found (Debian: apt-get install postgresql)")
    # The server refuses to run as root: run it as the `postgres` system user, in a folder that
    # user can reach (pytest's own tmp folders are private to root).
    as_user: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            skip("running as root and there is no `postgres` user to run the server as")
        if shutil.which("runuser") is None:
            skip("running as root and `runuser` is missing")
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="lineage-pg-"))
    data, sock, log, pwfile = root / "data", root / "sock", root / "server.log", root / "pw"
    password = "lineage-test-pw"
    sock.mkdir()
    pwfile.write_text(password + "\n", encoding="utf-8")
    if owner is not None:
        for path in (root, sock, pwfile):
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, cwd=root, env=env, capture_output=True, text=True, timeout=START_S, check=False
        )

    started = False
    try:
        init = run([
            *as_user, str(bindir / "initdb"), "-D", str(data), "-U", "dagster",
            f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
            "-E", "UTF8", "--no-sync", "--no-instructions",
        ])  # fmt: skip
        if init.returncode != 0:
            skip(f"initdb failed ({init.returncode}): {(init.stderr or init.stdout)[-500:]}")
        for _attempt in range(3):  # another process may take the free port before the server
            port = free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {port} -k {sock} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            start = run([
                *as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log),
                "-w", "-t", str(START_S), "-o", options, "start",
            ])  # fmt: skip
            if start.returncode == 0:
                started = True
                break
        if not started:
            skip(f"PostgreSQL did not start: {start.stderr[-300:]} {_tail(log, 700)}")
        env = {**os.environ, "PGPASSWORD": password}
        created = run([
            str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "dagster",
            "dagster",
        ], env)  # fmt: skip
        assert created.returncode == 0, f"createdb over TCP with the password: {created.stderr}"
        yield Postgres("127.0.0.1", port, "dagster", password, "dagster")
    finally:
        # Also after a start that timed out: the server may still be coming up.
        if (data / "postmaster.pid").exists():
            run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "stop", "-m", "immediate"])
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """redis-server with no persistence; yields its URL, database 0."""
    binary = shutil.which("redis-server")
    if binary is None:
        skip("redis-server not found (Debian: apt-get install redis-server)")
    import redis

    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "redis.log"
    port = free_port()
    args = [
        binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
        "--dir", str(folder), "--logfile", str(log), "--daemonize", "no",
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
        deadline = time.monotonic() + START_S
        while True:
            if proc.poll() is not None:
                skip(f"redis-server exited ({proc.returncode}): {_tail(log, 700)}")
            try:
                if client.ping():
                    break
            except redis.exceptions.ConnectionError:
                pass
            if time.monotonic() > deadline:
                skip(f"redis-server did not answer within {START_S}s: {_tail(log, 700)}")
            time.sleep(0.1)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def use_instance_config(
    settings: Settings, config: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped file as the instance's dagster.yaml, its variables set for this test only."""
    settings.dagster_home.mkdir(parents=True)
    shutil.copy(config, settings.dagster_home / "dagster.yaml")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_HOME", str(settings.dagster_home))


def project_env(settings: Settings, env: dict[str, str]) -> dict[str, str]:
    """A child process's environment: this project's state and `env`, no stray LINEAGE_/DAGSTER_."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LINEAGE_", "DAGSTER_"))}
    clean.update(
        env,
        DAGSTER_HOME=str(settings.dagster_home),
        LINEAGE_HOME=str(settings.state_dir),
        LINEAGE_PROJECT=str(settings.project_dir),
    )
    return clean


def sync_counts(out: dict[str, object]) -> tuple[object, ...]:
    """`lineage sync --json`'s counts: (read, appended, already recorded, not attributed)."""
    return out["read"], out["appended"], out["skipped"], out["unattributed"]


def lineage_cli(settings: Settings, env: dict[str, str], *args: str) -> dict[str, object]:
    """One `lineage ... --json` command on the project, as a user would run it."""
    done = subprocess.run(
        [str(BIN / "lineage"), *args, "--json"],
        cwd=settings.project_dir,
        env=project_env(settings, env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"lineage {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return dict(json.loads(done.stdout))
