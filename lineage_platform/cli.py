"""The `lineage` command: parses arguments, calls the core, prints. Nothing else lives here.

    lineage demo          # dvc repro, materialize every asset, sync the log, verify it
    lineage verify        # re-check every signature, the Merkle root and every reference
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lineage_platform.config import Settings
from lineage_platform.errors import LineageError

app = typer.Typer(
    help="Signed data and model lineage, Shapley valuation and settlement on Dagster.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Signed data and model lineage, Shapley valuation and settlement on Dagster."""


def settings() -> Settings:
    return Settings.from_env(os.environ, cwd=Path.cwd())


@app.command()
def init() -> None:
    """Create the state folder: the Dagster instance's home and the signing key.

    Example: lineage init
    """
    from lineage_platform.dagster.workspace import prepare_dagster_home

    cfg = settings()
    home = prepare_dagster_home(cfg)
    out.print(f"state folder {cfg.state_dir} (DAGSTER_HOME={home})")


@app.command()
def demo() -> None:
    """Run the whole example end to end on the embedded defaults.

    Example: lineage demo
    """
    from lineage_platform.demo import run_demo

    cfg = settings()
    with out.status("running the demo") as status:
        summary = run_demo(cfg, on_step=lambda msg: status.update(msg))
    table = Table(title="Materialized assets", title_justify="left")
    table.add_column("asset", no_wrap=True, min_width=22)
    for col in ("kind", "rows", "sha256", "dvc md5", "mlflow run"):
        table.add_column(col, no_wrap=True)
    for m in summary.materialized:
        meta: dict[str, Any] = m.metadata
        table.add_row(
            escape(m.asset),
            str(meta.get("lineage/kind", "")),
            str(meta.get("lineage/rows", "")),
            str(meta.get("lineage/sha256", ""))[:12],
            str(meta.get("lineage/dvc_md5", ""))[:12],
            str(meta.get("lineage/mlflow_run_id", "")),
        )
    out.print(table)
    for line in summary.lines:
        out.print(line)


def main() -> None:
    """Entry point: every LineageError becomes one red line and its class's exit code."""
    try:
        app()  # typer prints its own usage errors and exits 2
    except LineageError as exc:
        if os.environ.get("LINEAGE_DEBUG"):
            traceback.print_exc()
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
