"""Helpers for the signed-log tests: records, a project folder, and the `lineage` CLI.

    proj = Project.create(tmp_path / "proj")           # workspace.yaml + a key ring + a store
    append_records(proj.store, proj.signer(), [dataset(0)])
    code, out, err = proj.cli("verify")                 # a real subprocess
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from lineage_platform.keys import KeyRing
from lineage_platform.records import (
    AttributionRecord,
    Contributor,
    InputRef,
    RunRef,
    utc_timestamp,
)
from lineage_platform.signing import SigningKey
from lineage_platform.stores import Store, open_store
from tests.storekit import tamper

REPO = Path(__file__).resolve().parent.parent
# Environment variables that change what the CLI does; tests set them explicitly.
LINEAGE_VARS = (
    "LINEAGE_HOME",
    "LINEAGE_PROJECT",
    "LINEAGE_KEY_PASSPHRASE",
    "LINEAGE_LOCK_TIMEOUT",
    "LINEAGE_DEBUG",
)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def dataset(
    i: int,
    *,
    asset: str | None = None,
    run: str = "run-a",
    inputs: tuple[InputRef, ...] = (),
    partition: str | None = None,
    kind: str = "dataset",
    dagster: bool = True,
) -> AttributionRecord:
    """A record like the sensor writes: one per Dagster materialization (run id, storage id)."""
    name = asset or f"datanet/part_{i}"
    return AttributionRecord(
        kind=kind,
        asset=name,
        sha256=sha(f"{name} content {i}"),
        recorded_at=utc_timestamp(),
        run=RunRef("dagster", run, i) if dagster else None,
        inputs=inputs,
        partition=partition,
        contributors=(Contributor(f"contributor:{i % 3}", rows=10 + i, sha256=sha(f"part {i}")),),
    )


def uses(record: AttributionRecord, index: int) -> InputRef:
    """An input reference to `record`, which the log holds at `index`."""
    return InputRef(record.asset, record.sha256, index)


@dataclass(frozen=True)
class Project:
    """A project folder (workspace.yaml copied from the repo) with its own state folder."""

    root: Path

    @classmethod
    def create(cls, root: Path, passphrase: str | None = None, keys: bool = True) -> Project:
        root.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "workspace.yaml", root / "workspace.yaml")
        project = cls(root)
        if keys:
            project.ring.init(passphrase.encode() if passphrase else None)
        return project

    def copy(self, root: Path) -> Project:
        shutil.copytree(self.root, root)
        return Project(root)

    @property
    def home(self) -> Path:
        return self.root / ".lineage"

    @property
    def db(self) -> Path:
        return self.home / "lineage.duckdb"

    @property
    def store(self) -> Store:
        return open_store(self.db, lock_timeout_s=5)

    @property
    def ring(self) -> KeyRing:
        return KeyRing(self.home / "keys")

    def signer(self, passphrase: str | None = None) -> SigningKey:
        return self.ring.signer(passphrase.encode() if passphrase else None)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in LINEAGE_VARS}
        env.update(LINEAGE_HOME=str(self.home), LINEAGE_PROJECT=str(self.root), **extra)
        return env

    def cli(self, *args: str, **extra: str) -> tuple[int, str, str]:
        """`python -m lineage_platform.cli ARGS` in a subprocess, run from the project folder."""
        done = subprocess.run(
            [sys.executable, "-m", "lineage_platform.cli", *args],
            env=self.env(**extra),
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return done.returncode, done.stdout, done.stderr

    def main(
        self,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        *args: str,
        **extra: str,
    ) -> tuple[int, str, str]:
        """The same, in this process: `lineage_platform.cli.main` with this project's env."""
        from lineage_platform import cli

        for name in LINEAGE_VARS:
            monkeypatch.delenv(name, raising=False)
        for name, value in self.env(**extra).items():
            if name in LINEAGE_VARS:
                monkeypatch.setenv(name, value)
        monkeypatch.setattr(sys, "argv", ["lineage", *args])
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            cli.main()
        out, err = capsys.readouterr()
        code = info.value.code
        return (0 if code is None else int(code)), out, err

    def sql(self, statement: str, params: list[object] | None = None) -> list[tuple[object, ...]]:
        """Edit the database behind the platform's back, as an attacker with file access would."""
        return tamper(self.db, statement, params or [])

    def snapshot(self) -> tuple[object, ...]:
        """Everything the log holds, to compare before and after a failed command."""
        table, checkpoints = self.store.read_log()
        return (table.to_pydict(), checkpoints)
