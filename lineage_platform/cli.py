"""The `lineage` command: parses arguments, calls the core, prints. Nothing else lives here.

    lineage demo          # dvc repro, materialize every asset, sync the log, verify it
    lineage verify        # re-check every signature, the Merkle root and every reference
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lineage_platform.config import CodeTarget, Settings
from lineage_platform.errors import ConfigError, LineageError, VerificationError
from lineage_platform.valuation.registry import get_method, known_names

app = typer.Typer(
    help="Signed data and model lineage, Shapley valuation and settlement on Dagster.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Piped output (CI logs, files) gets a fixed width instead of rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


@app.callback()
def _root() -> None:
    """Signed data and model lineage, Shapley valuation and settlement on Dagster."""


@contextmanager
def progress_bar(label: str) -> Iterator[Callable[[int], None]]:
    """A live count on stderr for work that can take seconds; silent when not a terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal,
    ) as bar:
        task = bar.add_task(label, total=None)
        yield lambda n: bar.advance(task, n)


def settings(code: CodeTarget | None = None, new_project: bool = False) -> Settings:
    return Settings.from_env(os.environ, cwd=Path.cwd(), code=code, new_project=new_project)


# The code locations to read, as Dagster's own CLI takes them (`dagster dev -w/-m/-f/-d`).
WORKSPACE_OPT = typer.Option(
    None, "-w", "--workspace", help="a workspace.yaml to read (repeatable); default the project's"
)
MODULE_OPT = typer.Option(
    None, "-m", "--module-name", help="a module holding Definitions (repeatable)"
)
FILE_OPT = typer.Option(
    None, "-f", "--python-file", help="a Python file holding Definitions (repeatable)"
)
WORKDIR_OPT = typer.Option(
    None, "-d", "--working-directory", help="where -m/-f code is imported from (default: cwd)"
)


def code_target(
    workspace: list[Path] | None,
    module: list[str] | None,
    python_file: list[Path] | None,
    working_directory: Path | None,
) -> CodeTarget:
    """-w/-m/-f/-d as absolute paths (relative ones are read from the current folder)."""
    cwd = Path.cwd()
    return CodeTarget(
        workspaces=tuple((cwd / w).resolve() for w in workspace or ()),
        modules=tuple(module or ()),
        files=tuple((cwd / f).resolve() for f in python_file or ()),
        working_directory=(cwd / (working_directory or ".")).resolve(),
    )


@app.command()
def init(
    workspace: list[Path] | None = WORKSPACE_OPT,
    module: list[str] | None = MODULE_OPT,
    python_file: list[Path] | None = FILE_OPT,
    working_directory: Path | None = WORKDIR_OPT,
) -> None:
    """Create the state folder, its signing key and the Dagster instance's home (the state
    folder's own, or $DAGSTER_HOME), in this project or an existing Dagster project of yours;
    lists the code locations the other commands will read (nothing is imported).

    Examples: lineage init | DAGSTER_HOME=~/dagster_home lineage init -m my_project.definitions
    """
    from lineage_platform.dagster.workspace import code_locations, prepare_dagster_home
    from lineage_platform.errors import CodeLocationError

    target = code_target(workspace, module, python_file, working_directory)
    cfg = settings(target, new_project=True)
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    prepare_dagster_home(cfg, create=True)
    ring = keyring(cfg)
    keyid = (ring.current_keyid(passphrase()) if ring.exists() else None) or ring.init(
        passphrase()
    )
    out.print(f"project {cfg.project_dir}", highlight=False)
    out.print(f"state folder {cfg.state_dir} (signing key {keyid[:16]}…)", highlight=False)
    out.print(cfg.describe_instance(), highlight=False)
    try:
        found = code_locations(cfg.project_dir, target)
    except CodeLocationError as exc:
        err.print(f"[yellow]{escape(str(exc))}[/yellow]", highlight=False, soft_wrap=True)
        return
    for location in found:
        out.print(f"code location {location.describe()}", highlight=False)
    if target and not (cfg.project_dir / "workspace.yaml").exists():
        err.print("name the same -w/-m/-f on `lineage sync` and `lineage status`, or add a "
                  "workspace.yaml", highlight=False)


@app.command()
def demo() -> None:
    """Run the whole example end to end on the embedded defaults.

    Example: lineage demo
    """
    from lineage_platform.demo import run_demo

    cfg = settings()
    with out.status("running the demo") as status:
        summary = run_demo(cfg, passphrase(), on_step=lambda msg: status.update(escape(msg)))
    table = Table(title="Materialized assets", title_justify="left")
    table.add_column("asset", no_wrap=True)
    for col in ("kind", "rows", "sha256", "dvc md5", "mlflow run"):
        table.add_column(col, no_wrap=True)
    for m in summary.materialized:
        meta: dict[str, Any] = m.metadata
        table.add_row(
            escape(m.asset),
            str(meta.get("lineage/kind", "")),
            str(meta.get("lineage/rows", "")),
            str(meta.get("lineage/sha256", ""))[:10],
            str(meta.get("lineage/dvc_md5", ""))[:10],
            str(meta.get("lineage/mlflow_run_id", ""))[:10],
        )
    out.print(table)
    if summary.payouts:
        pay = Table(title="Payouts of the settled epoch (minor units)", title_justify="left")
        pay.add_column("account")
        pay.add_column("amount", justify="right")
        for account, amount in sorted(summary.payouts, key=lambda p: (-p[1], p[0])):
            pay.add_row(account, str(amount))
        out.print(pay)
    for line in summary.lines:
        out.print(line, soft_wrap=True, highlight=False)


def _noted(notes: list[str]) -> Callable[[str], None]:
    """Which instance and locations a command read: kept for --json, said on stderr."""

    def note(line: str) -> None:
        notes.append(line)
        colour = "yellow" if " not read" in line else "dim"
        err.print(f"[{colour}]{escape(line)}[/{colour}]", highlight=False, soft_wrap=True)

    return note


@app.command()
def sync(
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    batch_size: int = typer.Option(
        5000, "--batch-size", min=1, help="materializations per committed batch"
    ),
    workspace: list[Path] | None = WORKSPACE_OPT,
    module: list[str] | None = MODULE_OPT,
    python_file: list[Path] | None = FILE_OPT,
    working_directory: Path | None = WORKDIR_OPT,
) -> None:
    """Run the lineage sensor's logic once: sign every unrecorded materialization into the log.

    Reads $DAGSTER_HOME's instance when set (else the state folder's) and every code location
    of the workspace; one that cannot be loaded is named and nothing is signed (exit 2).
    Examples: lineage sync && lineage verify | lineage sync -m my_project.definitions
    """
    from lineage_platform.dagster.sync import sync_project

    cfg = settings(code_target(workspace, module, python_file, working_directory))
    notes: list[str] = []
    with out.status("reading materializations") as status:
        result = sync_project(
            cfg,
            passphrase(),
            on_batch=lambda r: status.update(f"appended {r.appended} of {r.read} in this batch"),
            limit=batch_size,
            notes=_noted(notes),
        )
    if as_json:
        out.print_json(
            data={"read": result.read, "appended": result.appended, "skipped": result.skipped,
                  "unattributed": result.unattributed,
                  "not_attributed": [
                      {"asset": p.asset, "event_id": p.event_id, "reason": p.reason}
                      for p in result.passed
                  ],
                  "dagster_home": str(cfg.dagster_home), "notes": notes}
        )
    else:
        out.print(
            f"sync: {result.appended} records appended, {result.skipped} already recorded, "
            f"{result.read} materializations read"
            + (f", {result.unattributed} not attributed" if result.unattributed else ""),
            highlight=False,
        )
    for p in result.passed:
        err.print(f"[yellow]{escape(p.asset)} event {p.event_id}: {escape(p.reason)}[/yellow]",
                  highlight=False, soft_wrap=True)


def _valuation_run_summary(details: dict[str, Any]) -> tuple[str, str | None]:
    """What a valuation record's run means, per method, from its signed details: the line
    `lineage value` shows and its per-contributor count column (None when there is none).
    Exact Shapley: the coalitions evaluated (no seed, no per-contributor count); KNN: k and
    the rows valued, each contributor's rows credited; sampled methods: seed and samples, each
    contributor's samples. The score is named when it is not accuracy.

        _valuation_run_summary({"method": "exact-shapley", "samples": 16})
    """
    method = str(details.get("method"))
    samples = details.get("samples")
    score = details.get("score")
    scored = score.get("name") if isinstance(score, dict) else None
    by = f", score {scored}" if scored and scored != "accuracy" else ""
    try:
        players = get_method(method).players
    except LineageError:
        players = None
    if method == "exact-shapley":
        return f"{method} (all {samples} coalitions evaluated{by})", None
    if players is not None and players.value == "rows":
        return f"{method} (k {details.get('k')}, {samples} rows valued{by})", "rows credited"
    stopped = details.get("stopped_by")
    return (f"{method} (seed {details.get('seed')}, {samples} samples"
            f"{f', stopped by {stopped}' if stopped else ''}{by})"), "samples"


@app.command()
def value(
    model: str = typer.Argument(..., help="model asset key, e.g. digits_classifier"),
    method: str | None = typer.Option(
        None, help=f"recompute with {'|'.join(known_names())} (materializes its valuation asset)"
    ),
    seed: int = typer.Option(7, help="seed for the sampling methods"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    workspace: list[Path] | None = WORKSPACE_OPT,
    module: list[str] | None = MODULE_OPT,
    python_file: list[Path] | None = FILE_OPT,
    working_directory: Path | None = WORKDIR_OPT,
) -> None:
    """Contributor values of a model, from its latest signed valuation record; with
    --method, its valuation asset (the one declaring it values MODEL, else the log's, else
    settlement.toml's) is materialized with that method first and signed.

    Examples: lineage value digits_classifier | lineage value digits_classifier --method exact
    """
    from lineage_platform.settlement import latest_valuation, load_policy, valuation_decisions
    from lineage_platform.valuation.result import shares_of

    chosen = get_method(method) if method is not None else None
    cfg = settings(code_target(workspace, module, python_file, working_directory))
    policy = load_policy(cfg.project_dir)
    if chosen is not None:
        from lineage_platform.dagster.sync import sync_project
        from lineage_platform.dagster.valuation import find_valuation
        from lineage_platform.dagster.workspace import (
            load_locations,
            materialize_asset,
            open_instance,
        )

        log = store(cfg)
        logged = latest_valuation(log, model) if log.exists() else None
        defs, key = find_valuation(
            model, [loaded.defs for loaded in load_locations(cfg)],
            logged_asset=logged[1].asset if logged else None,
            registered_asset=policy.valuation_asset(model),
        )
        with out.status(f"valuing {model} with {chosen.name} ({key.to_user_string()})"):
            with open_instance(cfg) as instance:
                materialize_asset(defs, instance, key, {"method": chosen.name, "seed": seed})
            sync_project(cfg, passphrase())
    # The valuation a settlement would pay on (issue 15), and every newer one it would refuse.
    chosen_by_model, refusals = valuation_decisions(store(cfg), policy, [model])
    for refusal in refusals:
        err.print(f"[yellow]{escape(str(refusal))}[/yellow]", highlight=False, soft_wrap=True)
    found = chosen_by_model.get(model)
    if found is None:
        raise LineageError(
            f"no usable signed valuation of {model} in the log: materialize its valuation "
            f"asset ({policy.valuation_asset(model)} is the one settlement.toml pays on)"
        )
    idx, record = found
    details = record.details_obj() or {}
    shares = shares_of({str(i): c.value for i, c in enumerate(record.contributors)})
    run_line, count_column = _valuation_run_summary(details)
    rows = [
        {"contributor": c.id, "value": c.value, "share": shares[str(i)], "stderr": c.stderr,
         **({count_column: c.rows} if count_column else {})}
        for i, c in sorted(enumerate(record.contributors), key=lambda ic: -(ic[1].value or 0.0))
    ]
    if as_json:
        score = details.get("score")
        out.print_json(data={"model": model, "log_index": idx, "method": details.get("method"),
                             "seed": details.get("seed"), "samples": details.get("samples"),
                             "score": score.get("name") if isinstance(score, dict) else None,
                             "run": run_line, "contributors": rows})
        return
    table = Table(title=f"{model}: {run_line}, record {idx}", title_justify="left")
    columns = ["contributor", "value", "share", "stderr", *([count_column] if count_column else [])]
    for col in columns:
        table.add_column(col, justify="left" if col == "contributor" else "right")
    for r in rows:
        stderr = "" if r["stderr"] is None else f"{r['stderr']:.4f}"
        counted = [str(r[count_column])] if count_column else []
        table.add_row(str(r["contributor"]), f"{r['value']:.4f}", f"{r['share']:.1%}", stderr,
                      *counted)
    out.print(table)


@app.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    workspace: list[Path] | None = WORKSPACE_OPT,
    module: list[str] | None = MODULE_OPT,
    python_file: list[Path] | None = FILE_OPT,
    working_directory: Path | None = WORKDIR_OPT,
) -> None:
    """Pressure gauges: sensor backlog and lag, last checkpoint, unsettled fees, lock waits.

    The backlog is read from $DAGSTER_HOME's instance when set (else the state folder's) over
    every code location; one that cannot be loaded is named (exit 2).
    Example: lineage status --json
    """
    import time
    from datetime import UTC, datetime

    from lineage_platform.dagster.sync import project_backlog
    from lineage_platform.status import store_gauges

    cfg = settings(code_target(workspace, module, python_file, working_directory))
    gauges = store_gauges(store(cfg), cfg.spool_dir, datetime.now(UTC))
    notes: list[str] = []
    pending, oldest = project_backlog(cfg, notes=notes.append)
    lag = round(time.time() - oldest, 1) if oldest is not None else 0.0
    the_store = store(cfg)
    held = len(the_store.quarantined()) if the_store.exists() else 0
    refused: tuple[Any, ...] = ()
    if the_store.exists():
        from lineage_platform.settlement import load_policy, valuation_decisions

        refused = valuation_decisions(the_store, load_policy(cfg.project_dir))[1]
    conflicts = len(the_store.usage_conflicts()) if the_store.exists() else 0
    data = {"sensor_backlog": pending, "sensor_lag_s": lag, **gauges.to_json(),
            "usage_quarantined": held, "usage_conflicts": conflicts,
            "valuations_refused": [r.to_json() for r in refused],
            "dagster_home": str(cfg.dagster_home), "notes": notes}
    if as_json:
        out.print_json(data=data)
        return
    table = Table(title="lineage status", title_justify="left", show_header=False)
    table.add_column("gauge")
    table.add_column("value")
    warn = "[yellow]"
    rows = [
        ("dagster instance", escape(cfg.describe_instance().removeprefix("Dagster instance "))),
        *((("code locations" if n.startswith("code locations") else "not read"),
           escape(n.removeprefix("code locations: ")) if n.startswith("code locations")
           else f"{warn}{escape(n)}") for n in notes[1:]),
        ("sensor backlog", f"{warn if pending else ''}{pending} materializations not yet recorded"),
        ("sensor lag", f"{lag:.0f}s (oldest unrecorded event)" if pending else "none"),
        ("log", f"{gauges.log_size} records"),
        ("last checkpoint", f"size {gauges.checkpoint_size}, root "
         f"{(gauges.checkpoint_root or '')[:16]}…, key {(gauges.checkpoint_keyid or '')[:12]}…"
         if gauges.checkpoint_size is not None else "none"),
        ("unsettled closed epochs", (f"{warn}{', '.join(gauges.closed_unsettled_epochs)} "
         f"({gauges.unsettled_fees} pending fees)") if gauges.closed_unsettled_epochs else "none"),
        ("open epoch fees", str(gauges.open_epoch_fees)),
        ("usage events", f"{gauges.usage_event_count} ingested, "
         f"{gauges.spooled_files} spooled files waiting"),
        ("valuations refused", "\n".join(f"{warn}{escape(str(r))}" for r in refused)
         if refused else "none"),
        ("usage quarantine", f"{warn}{held} held (lineage usage quarantine list)"
         if held else "none"),
        ("usage conflicts", f"{warn}{conflicts} (lineage usage conflicts)" if conflicts
         else "none"),
        ("store lock waits (1 h)", f"{gauges.lock_waits_last_hour} "
         f"({gauges.lock_wait_seconds_last_hour:.2f}s)"),
    ]
    for name, val in rows:
        table.add_row(name, val)
    out.print(table)


usage_app = typer.Typer(help="Usage events: metered model calls, fees.", no_args_is_help=True)
app.add_typer(usage_app, name="usage")


def _when(text: str | None) -> Any:
    """`--at`: an ISO 8601 time (UTC when it names no zone); now when not given."""
    from datetime import UTC, datetime

    from lineage_platform.errors import UsageError

    if text is None:
        return datetime.now(UTC)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--at: {text!r} is not an ISO 8601 time (e.g. 2026-11-23T14:05Z)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _conflicted(conflicts: int) -> None:
    """A conflict is loud: the first body stays, the command that met it fails."""
    from lineage_platform.errors import ConflictError

    if conflicts:
        raise ConflictError(
            f"{conflicts} event(s) reuse an id with a different body: the first body is kept; "
            "see `lineage usage conflicts`"
        )


@usage_app.command("record")
def usage_record(
    model: str = typer.Option(..., help="model asset key, e.g. digits_classifier"),
    caller: str = typer.Option(..., help="who called the model"),
    units: str = typer.Option("1", help="metered units (integer)"),
    fee: str = typer.Option(..., help="fee in integer minor units (e.g. cents)"),
    event_id: str | None = typer.Option(None, "--id", help="idempotency key; a replay counts once"),
    at: str | None = typer.Option(
        None, "--at",
        help="when the call happened, ISO 8601 (e.g. 2026-12-02T15:00Z; UTC without a zone); "
             "default now. Bounds: not after now + 5 min, not before the log's first record "
             "- 31 days",
    ),
    spool: bool = typer.Option(
        False, help="append to this producer's spool file (rush hour: no database lock)"
    ),
) -> None:
    """Record one usage event (directly, or through the spool that `lineage usage drain` ingests).

    The same --id again is a quiet no-op when model, caller, units and fee match; with another
    body it is a conflict (exit 16, listed by `lineage usage conflicts`). --at puts the call in
    a past epoch, e.g. yesterday's, which `lineage settle` can settle at once (docs/usage.md).
    Examples: lineage usage record --model digits_classifier --caller acme --fee 75 --id call-1 |
    lineage usage record --model digits_classifier --caller acme --fee 75 --at 2026-12-02T12:00Z
    """
    from lineage_platform import usage

    when = _when(at)
    if spool:
        from lineage_platform.spool import SpoolWriter

        with SpoolWriter(settings().spool_dir) as writer:
            eid = writer.record(
                model, caller, usage.parse_amount(units, "units"), usage.parse_amount(fee, "fee"),
                event_id, when,
            )
        out.print(f"spooled {eid}")
        return
    table = usage.one_event(
        model, caller, usage.parse_amount(units, "units"), usage.parse_amount(fee, "fee"),
        event_id, when,
    )
    result = usage.ingest(store(settings()), usage.validate_events(table))
    _conflicted(result.conflicts)
    out.print("recorded" if result.inserted else "already recorded (replay ignored)")


@usage_app.command("ingest")
def usage_ingest(
    files: list[Path] = typer.Argument(..., help="Parquet, CSV, JSON lines or Arrow files"),
    strict: bool = typer.Option(
        False, "--strict", help="refuse the whole batch if any row is refused"
    ),
) -> None:
    """Bulk-ingest usage events in one transaction (a replayed event counts once).

    Rows out of bounds are refused one line each and the rest is stored (exit 12); with
    --strict nothing is stored. A malformed file refuses the whole batch.
    Example: lineage usage ingest calls-2026-11-23.parquet
    """
    from lineage_platform import usage
    from lineage_platform.errors import UsageError

    with out.status(f"ingesting {len(files)} file(s)"):
        batch = usage.ingest_batch(store(settings()), files, strict=strict)
    result = batch.ingested
    out.print(f"ingested {result.inserted} events ({result.replays} replays ignored, "
              f"{result.conflicts} conflicts, {batch.refused} rows refused)")
    shown_rows = batch.refusals[:50]
    for refusal in shown_rows:
        err.print(f"[yellow]refused[/yellow] {escape(str(refusal))}", soft_wrap=True,
                  highlight=False)
    if batch.refused > len(shown_rows):
        err.print(f"… and {batch.refused - len(shown_rows)} more rows refused", highlight=False)
    _conflicted(result.conflicts)
    if batch.refused:
        raise UsageError(f"{batch.refused} row(s) refused; the other rows are stored")


@usage_app.command("drain")
def usage_drain() -> None:
    """Ingest every pending spool file in one bulk transaction (bad files go to rejected/).

    Example: lineage usage drain
    """
    from lineage_platform.spool import drain

    cfg = settings()
    result = drain(store(cfg), cfg.spool_dir)
    out.print(f"drained {result.files} files: {result.inserted} events ingested, "
              f"{result.replays} replays ignored, {len(result.rejected)} files rejected")
    for line in result.rejected:
        err.print(f"[yellow]rejected[/yellow] {escape(line)}", soft_wrap=True)
    _conflicted(result.conflicts)


@usage_app.command("conflicts")
def usage_conflicts(
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Event ids that arrived again with a different body (the first body is the one kept).

    Example: lineage usage conflicts --json
    """
    rows = store(settings()).usage_conflicts()
    if as_json:
        out.print_json(data=[{**c._asdict(), "occurred_at": c.occurred_at.isoformat(),
                              "seen_at": c.seen_at.isoformat()} for c in rows])
        return
    table = Table(title=f"Usage conflicts ({len(rows)})", title_justify="left")
    for col in ("event id", "refused body (model|caller|units|fee)", "kept body", "seen at"):
        table.add_column(col)
    for c in rows:
        table.add_row(escape(c.event_id), escape(f"{c.model}|{c.caller}|{c.units}|{c.fee}"),
                      escape(c.kept), f"{c.seen_at:%Y-%m-%d %H:%M:%S}")
    out.print(table)


quarantine_app = typer.Typer(
    help="Stored usage events that break the bounds: settlement skips them.",
    no_args_is_help=True,
)
usage_app.add_typer(quarantine_app, name="quarantine")


@quarantine_app.command("list")
def quarantine_list(
    show_all: bool = typer.Option(False, "--all", help="also released and dropped events"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Quarantined usage events and why (held ones unless --all).

    Example: lineage usage quarantine list
    """
    rows = store(settings()).quarantined(None if show_all else "held")
    if as_json:
        out.print_json(data=[q._asdict() for q in rows])
        return
    table = Table(title=f"Quarantined usage events ({len(rows)})", title_justify="left")
    for col in ("event id", "model", "fee", "units", "occurred at", "why", "state"):
        table.add_column(col)
    for q in rows:
        table.add_row(escape(q.event_id), escape(q.model), str(q.fee), str(q.units),
                      str(q.occurred_at), escape(q.reason), q.state)
    out.print(table)


@quarantine_app.command("release")
def quarantine_release(event_id: str = typer.Argument(..., help="the event id")) -> None:
    """Put a held event back among the usage events, if it now passes the bounds.

    Example: lineage usage quarantine release call-17
    """
    from datetime import UTC, datetime

    event = store(settings()).release_quarantined(event_id, datetime.now(UTC))
    out.print(f"released {escape(event.event_id)} (fee {event.fee})", highlight=False)


@quarantine_app.command("drop")
def quarantine_drop(event_id: str = typer.Argument(..., help="the event id")) -> None:
    """Drop a held event for good; it stays listed as dropped (`list --all`) for an audit.

    Example: lineage usage quarantine drop call-17
    """
    event = store(settings()).drop_quarantined(event_id)
    out.print(f"dropped {escape(event.event_id)} (fee {event.fee}); kept in the quarantine "
              "list as dropped", highlight=False)


@app.command()
def settle(
    epoch: str | None = typer.Option(None, help="settle up to this epoch (YYYY-MM-DD)"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Settle every closed epoch's fees into the ledger, exactly once, with a signed statement;
    each settled epoch is then shown as its `settlement` partition in Dagster ($DAGSTER_HOME).

    Examples: lineage settle | lineage settle --epoch 2026-11-23 --json
    """
    from datetime import UTC, datetime

    from lineage_platform.dagster.settlement import record_settled_epochs
    from lineage_platform.settlement import settle_held

    cfg = settings()
    now = datetime.now(UTC)
    with out.status("settling") as status:
        statements = settle_held(
            store(cfg), keyring(cfg).signer(passphrase()), keyring(cfg).trust(),
            cfg.project_dir, cfg.state_dir, now, epoch,
            on_epoch=lambda e: status.update(f"settling {e}"),
        )
        status.update("recording the settled epochs in Dagster")
        try:
            record_settled_epochs(cfg, store(cfg), statements)
        except LineageError as exc:  # the money is settled: say so, do not fail
            err.print(f"[yellow]warning: {escape(str(exc))}[/yellow]", highlight=False,
                      soft_wrap=True)
    held = store(cfg).quarantined()
    open_epoch, closes = _open_epoch(now)
    if as_json:
        extra = {"quarantined": len(held)} if held else {}
        out.print_json(data={"epochs": [s.to_json() for s in statements], **extra,
                             "open_epoch": open_epoch, "closes_at": closes.isoformat()})
        return
    if not statements:
        minutes = max(int((closes - now).total_seconds() // 60), 0)
        out.print(
            f"nothing to settle: no closed epoch has unsettled usage; the open epoch "
            f"{open_epoch} closes at {closes:%Y-%m-%d %H:%M} UTC (in {minutes // 60} h "
            f"{minutes % 60} min). To try settlement today, record usage in a closed epoch: "
            "lineage usage record ... --at <yesterday> (docs/usage.md)",
            highlight=False, soft_wrap=True,
        )
    for s in statements:
        state = "already settled" if s.already_settled else "settled"
        out.print(
            f"epoch {s.epoch} {state}: fees {s.fees_total}, paid {s.paid_total} to "
            f"{len(s.payouts)} accounts, root {s.root[:16]}…, log index {s.log_index}",
            highlight=False,
        )
        for refusal in s.refusals:
            err.print(f"[yellow]{escape(refusal)}[/yellow]", highlight=False, soft_wrap=True)
    if held:
        err.print(f"[yellow]{len(held)} usage event(s) in quarantine, not settled[/yellow] "
                  "(lineage usage quarantine list)", highlight=False)


def _open_epoch(now: Any) -> tuple[str, Any]:
    """The epoch `now` is in and when it closes: epochs are UTC days, closing at 00:00 UTC."""
    from lineage_platform.settlement import epoch_bounds, epoch_of

    epoch = epoch_of(now)
    return epoch, epoch_bounds(epoch)[1]


@app.command()
def payouts(
    epoch: str | None = typer.Option(None, help="only this epoch"),
    account: str | None = typer.Option(None, help="only this account"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """List settled payouts per account and epoch.

    Example: lineage payouts --epoch 2026-11-23
    """
    rows = store(settings()).payouts(epoch=epoch or None, account=account or None)
    if as_json:
        out.print_json(data=[{"epoch": e, "account": a, "amount": int(n)} for e, a, n in rows])
        return
    table = Table(title="Payouts (minor units)", title_justify="left")
    for col in ("epoch", "account", "amount"):
        table.add_column(col, justify="right" if col == "amount" else "left")
    for e, a, n in rows:
        table.add_row(e, a, str(n))
    out.print(table)


@app.command()
def statement(
    account: str = typer.Argument(..., help="e.g. contributor:alice"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """An account's payout history, each with its inclusion proof against the signed root.

    Example: lineage statement contributor:alice
    """
    from lineage_platform.settlement import account_statement

    proofs = account_statement(store(settings()), account)
    if as_json:
        out.print_json(data=[p.to_json() for p in proofs])
        return
    table = Table(title=f"Statement for {account}", title_justify="left")
    for col in ("epoch", "amount", "settlement record", "root", "proof"):
        table.add_column(col)
    for p in proofs:
        table.add_row(p.epoch, str(p.amount), str(p.log_index), p.root[:16] + "…",
                      f"{len(p.proof)} hashes, verified")
    out.print(table)


@app.command()
def receipt(
    event_id: str = typer.Argument(..., help="the usage event id of a call settled per call"),
    as_json: bool = typer.Option(
        False, "--json", help="the receipt as JSON (what `lineage verify --receipt` reads)"
    ),
) -> None:
    """A settled call's receipt: fee, data share, contributors credited and their amounts, the
    method, and its Merkle proof in the epoch's signed statement.

    Example: lineage receipt call-17 --json > call-17.json && lineage verify --receipt call-17.json
    """
    from lineage_platform.receipt import call_receipt

    cfg = settings()
    found = call_receipt(store(cfg), event_id, cfg.project_dir)
    if as_json:
        out.print_json(data=found.to_json())
        return
    for line in found.lines():
        out.print(escape(line), highlight=False, soft_wrap=True)


def _verify_receipt(path: Path, pinned: Any) -> None:
    """`verify --receipt`: offline, with the public keys alone (--keys, else the pinned ones)."""
    import json

    from lineage_platform.errors import ReceiptError
    from lineage_platform.receipt import verify_receipt

    try:
        obj = json.loads(read_file(path))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReceiptError(f"{path}: not a JSON receipt ({exc})") from exc
    trust = pinned if pinned is not None else verifier_trust(settings(), None)[0]
    verify_receipt(obj, trust)
    out.print(f"receipt of call {escape(str(obj.get('event_id')))} ({escape(str(obj.get('epoch')))}"
              f"): verified against the signed statement", highlight=False, soft_wrap=True)


keys_app = typer.Typer(help="Signing keys: create, rotate, show.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def keyring(cfg: Settings) -> Any:
    from lineage_platform.keys import KeyRing

    return KeyRing(cfg.keys_dir)


def passphrase() -> bytes | None:
    from lineage_platform.signing import passphrase_from_env

    return passphrase_from_env()


def store(cfg: Settings) -> Any:
    from lineage_platform.stores import open_store

    return open_store(cfg.store_url, lock_timeout_s=cfg.lock_timeout_s)


@keys_app.command("init")
def keys_init() -> None:
    """Create the signing key (encrypted when LINEAGE_KEY_PASSPHRASE is set); re-runnable.

    Example: LINEAGE_KEY_PASSPHRASE=… lineage keys init
    """
    from lineage_platform.keys import pin_user_trust

    ring = keyring(settings())
    keyid = ring.init(passphrase())
    # Verifiers on this machine trust the key from the user's config, not only from the state
    # folder next to the data (which whoever rewrites the data can rewrite too).
    path = pin_user_trust(ring.trust().get(keyid))
    out.print(f"public key pinned in {path}", highlight=False, soft_wrap=True)
    out.print(f"signing key {keyid}", highlight=False)


@keys_app.command("rotate")
def keys_rotate(
    keep_retired: bool = typer.Option(
        False, "--keep-retired", help="keep the old private key (encrypted) under keys/retired/"
    ),
) -> None:
    """Sign with a new key from now on: a key-transition record signed by the old key names
    the new one; the old key is retired from that record on (it stays trusted for what it
    signed before) and its private key is destroyed unless --keep-retired.

    Example: lineage keys rotate
    """
    from lineage_platform.keys import pin_user_trust, rotate_in_log

    cfg = settings()
    ring = keyring(cfg)
    old, new, index = rotate_in_log(ring, store(cfg), passphrase(), keep_retired)
    pin_user_trust(ring.trust().get(new))
    kept = "kept encrypted" if keep_retired else "private key destroyed"
    out.print(f"rotated: {old[:16]}… retired at record {index} ({kept}), {new} now signs")


@keys_app.command("show")
def keys_show(
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """List trusted public keys; the current signer is marked.

    Example: lineage keys show --json
    """
    ring = keyring(settings())
    trust = ring.trust()
    current = ring.current_keyid(passphrase())  # public information: no passphrase needed
    rows = [
        {"keyid": k, "public_key": trust.get(k, "keys").to_b64(), "current": k == current}
        for k in sorted(trust.keyids())
    ]
    if as_json:
        out.print_json(data=rows)
        return
    table = Table(title="Trusted keys", title_justify="left")
    for col in ("keyid", "public key (base64)", "signs now"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        table.add_row(r["keyid"], r["public_key"], "yes" if r["current"] else "")
    out.print(table)


@app.command()
def verify(
    bundle: Path | None = typer.Option(None, help="verify an exported folder instead, offline"),
    tiles: Path | None = typer.Option(
        None, help="verify a C2SP tlog-tiles folder (lineage export --format tiles) instead"
    ),
    keys: Path | None = typer.Option(
        None, help="trust only these public keys ({keyid: base64}, like keys.json)"
    ),
    since: Path | None = typer.Option(
        None, help="an earlier checkpoint (note or JSON) the log must have grown from"
    ),
    witnesses: Path | None = typer.Option(
        None, help="a witness policy (witnesses.toml) the log's checkpoint must meet"
    ),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    recompute: bool = typer.Option(
        False, "--recompute",
        help="also re-run each deterministic valuation from its signed inputs and compare its "
             "values digest (the project's data or DVC cache supplies the bytes)",
    ),
    receipt_file: Path | None = typer.Option(
        None, "--receipt", help="verify one call receipt (lineage receipt --json) offline instead"
    ),
) -> None:
    """Re-check every signature, parse, reference, checkpoint and the Merkle root (read-only).

    A bundle's own keys.json proves only that its signer was consistent: pin the keys you
    already trust with --keys. The newest checkpoint verified is remembered outside the state
    folder ($LINEAGE_VERIFIER_STATE, else ~/.local/state/lineage/known); the next run demands
    that the log grew from it. Examples: lineage verify | lineage verify --bundle export/
    --keys pinned.json --since checkpoint-2026-11-23
    """
    from lineage_platform import audit, known
    from lineage_platform import keys as keyrings
    from lineage_platform.log import SignedCheckpoint
    from lineage_platform.signing import TrustStore

    pinned = TrustStore.load(keys) if keys is not None else None
    if receipt_file is not None:
        _verify_receipt(receipt_file, pinned)
        return
    memory = known.KnownLogs.from_env()
    witnessed = ""
    trust_note = ""
    with progress_bar("verifying records") as advance:
        if tiles is not None:
            from lineage_platform.tiles import read_tiles
            from lineage_platform.verify import LogView, verify_log

            # Outside a project folder there is no key ring: pass --keys.
            trust, trust_note = verifier_trust(settings(), pinned) if pinned is None else (
                pinned, ""
            )
            signed, envelopes = read_tiles(tiles, trust)
            view = LogView(envelopes=envelopes, checkpoints=[signed.to_json()])
            report = verify_log(view, trust, progress=advance)
            keyrings.check_retired_keys(keyrings.lifecycle_of_envelopes(envelopes), [signed])
            pin = SignedCheckpoint.parse(read_file(since), trust) if since else None
            seen = known.check_bundle(memory, signed.to_json(), envelopes, trust, since=pin)
        elif bundle is not None:
            view, bundled = audit.read_bundle(bundle)
            trust = pinned or bundled
            if pinned is None:
                trust_note = f"keys: trusting the bundle's own {audit.KEYS} (pin yours: --keys)"
            report = audit.verify_bundle(bundle, pinned, progress=advance)
            keyrings.check_retired_keys(
                keyrings.lifecycle_of_envelopes(view.envelopes),
                [SignedCheckpoint.parse(view.checkpoints[-1], trust)],
            )
            pin = SignedCheckpoint.parse(read_file(since), trust) if since else None
            seen = known.check_bundle(
                memory, view.checkpoints[-1], view.envelopes, trust, since=pin
            )
        else:
            cfg = settings()
            trust, trust_note = verifier_trust(cfg, pinned)
            log = store(cfg)
            report = audit.verify_store(log, trust, progress=advance, project_dir=cfg.project_dir)
            table, checkpoints = log.read_log()
            keyrings.check_retired_keys(
                keyrings.lifecycle_of_table(table),
                [SignedCheckpoint.from_json(c) for c in checkpoints],
            )
            pin = SignedCheckpoint.parse(read_file(since), trust) if since else None
            seen = known.check_store(
                memory, log, trust, since=pin, verified_root=bytes.fromhex(report.root_hex),
                table=table,
            )
            policy = witness_policy(cfg, witnesses)
            if policy is not None:
                from lineage_platform.witness import require_policy

                witnessed = require_policy(log, trust, policy, cfg.state_dir)
    recomputed = _recompute(bundle is None and tiles is None, recompute)
    if as_json:
        out.print_json(
            data={
                "ok": True,
                "records": report.records,
                "checkpoints": report.checkpoints,
                "root": report.root_hex,
                "keyids": list(report.keyids),
                "seen_before": seen.before.tree_size if seen.before is not None else None,
                "witnessed": witnessed or None,
                "trust": trust_note or None,
                **({"recomputed": [{"log_index": o.log_index, "ok": o.ok, "line": o.line}
                                   for o in recomputed]} if recompute else {}),
            }
        )
    else:
        out.print(report.summary(), highlight=False)
        out.print(seen.describe(), highlight=False)
        for line in (witnessed, trust_note):
            if line:
                out.print(line, highlight=False, soft_wrap=True)
        for o in recomputed:
            colour = {True: "green", False: "red", None: "yellow"}[o.ok]
            out.print(f"[{colour}]{escape(o.line)}[/{colour}]", highlight=False, soft_wrap=True)
    failed = [o for o in recomputed if o.ok is False]
    if failed:
        raise VerificationError(
            f"--recompute: {len(failed)} valuation record(s) not confirmed by their data: "
            + "; ".join(o.line for o in failed)
        )


def _recompute(on_store: bool, wanted: bool) -> list[Any]:
    """`verify --recompute`: every valuation record re-run (see `lineage_platform.recompute`)."""
    if not wanted:
        return []
    if not on_store:
        raise ConfigError("--recompute re-runs valuations from a project's data: use it "
                          "without --bundle or --tiles")
    from lineage_platform.dagster.workspace import load_recomputers
    from lineage_platform.recompute import recompute_valuations

    cfg = settings()
    return recompute_valuations(store(cfg), cfg.project_dir, load_recomputers(cfg.project_dir))


def verifier_trust(cfg: Settings, pinned: Any) -> tuple[Any, str]:
    """--keys, else the keys pinned in the user's config, else (said so) the state folder's."""
    from lineage_platform.keys import user_trust, user_trust_path

    if pinned is not None:
        return pinned, ""
    ring = keyring(cfg)
    mine = user_trust()
    if mine is None:
        return ring.trust(), (
            f"keys: trusting keys found only next to the data ({ring.trust_path}); pin them "
            "on this machine (lineage keys init) or pass --keys"
        )
    beside = set(ring.trust().keyids()) if ring.trust_path.exists() else set()
    unpinned = sorted(beside - set(mine.keyids()))
    if unpinned:
        return mine, (
            f"keys: trusting the {len(mine)} key(s) pinned in {user_trust_path()}; not "
            f"{', '.join(k[:12] + '…' for k in unpinned)} found next to the data"
        )
    return mine, ""


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc


class ExportFormat(StrEnum):
    bundle = "bundle"
    openlineage = "openlineage"
    tiles = "tiles"


@app.command()
def export(
    out_dir: Path = typer.Option(
        ..., "--out", help="bundle: folder to write to; openlineage: the .jsonl file"
    ),
    fmt: ExportFormat = typer.Option(
        ExportFormat.bundle, "--format",
        help="bundle (offline verification), openlineage, or tiles (C2SP tlog-tiles)",
    ),
) -> None:
    """Write envelopes.jsonl, checkpoint.json and keys.json for offline verification, every
    recorded materialization as OpenLineage RunEvents (JSON lines) for Marquez or DataHub, or
    the log as C2SP tlog-tiles (static files; re-exporting writes only what is new).

    Examples: lineage export --out bundle/ && lineage verify --bundle bundle/ |
    lineage export --format openlineage --out events.jsonl |
    lineage export --format tiles --out tiles/ && lineage verify --tiles tiles/
    """
    cfg = settings()
    if fmt is ExportFormat.tiles:
        from lineage_platform.tiles import export_tiles

        with progress_bar("writing tiles") as advance:
            done = export_tiles(store(cfg), keyring(cfg).trust(), out_dir, progress=advance)
        out.print(done.describe(), highlight=False)
        return
    if fmt is ExportFormat.openlineage:
        from lineage_platform.integrations.openlineage import export_openlineage

        n = export_openlineage(store(cfg), out_dir)
        out.print(f"exported {n} OpenLineage run events to {out_dir}")
        return
    from lineage_platform import audit

    n = audit.export_bundle(store(cfg), keyring(cfg).trust(), out_dir)
    out.print(f"exported {n} envelopes to {out_dir}")


class ReportFormat(StrEnum):
    html = "html"
    pdf = "pdf"


@app.command()
def report(
    out_file: Path = typer.Option(..., "--out", help="file to write, e.g. report.html"),
    epoch: str | None = typer.Option(None, help="settled epoch (YYYY-MM-DD); default the latest"),
    fmt: ReportFormat = typer.Option(
        ReportFormat.html, "--format", help="html (self-contained) or pdf"
    ),
) -> None:
    """An epoch's report: lineage graph, contributor values, payouts, verification, key ids.

    Examples: lineage report --out report.html | lineage report --format pdf --out report.pdf
    """
    from lineage_platform import report as reports

    cfg = settings()
    with out.status("verifying the log and drawing the report"):
        built = reports.build_report(store(cfg), keyring(cfg).trust, epoch)
        reports.write_report(built, out_file, fmt.value)
    verdict = "verified" if built.verdict.ok else "NOT verified"
    out.print(f"report of epoch {built.epoch} ({verdict}) written to {out_file}", highlight=False)


witness_app = typer.Typer(
    help="Witnesses (C2SP tlog-witness): cosign a log's checkpoints only as it grows.",
    no_args_is_help=True,
)
app.add_typer(witness_app, name="witness")


@witness_app.command("init")
def witness_init(
    folder: Path = typer.Argument(..., help="the witness's own folder (key and state)"),
    name: str = typer.Option(..., help="the witness's key name, e.g. witness.example.org/w1"),
) -> None:
    """Create a witness (re-runnable) and print its cosignature verifier key for policies.

    Example: lineage witness init /srv/witness --name witness.example.org/w1
    """
    from lineage_platform.witness import Witness, witness_passphrase

    w = Witness.init(folder, name, witness_passphrase())
    out.print(w.verifier.vkey(), highlight=False, soft_wrap=True)


@witness_app.command("follow")
def witness_follow(
    folder: Path = typer.Argument(..., help="the witness's folder"),
    vkey: str = typer.Argument(..., help="the log's key, from `lineage checkpoint --vkey`"),
) -> None:
    """Cosign checkpoints of the log this verifier key names (its origin).

    Example: lineage witness follow /srv/witness "$(lineage checkpoint --vkey)"
    """
    from lineage_platform.witness import Witness, witness_passphrase

    verifier = Witness.open(folder, witness_passphrase()).follow(vkey)
    out.print(f"following log {verifier.name} (key {verifier.key_hash.hex()})", highlight=False)


@witness_app.command("serve")
def witness_serve(
    folder: Path = typer.Argument(..., help="the witness's folder"),
    port: int = typer.Option(7380, help="TCP port (0: any free port, printed)"),
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
) -> None:
    """Answer POST /add-checkpoint (tlog-witness) until interrupted.

    Example: lineage witness serve /srv/witness --port 7380
    """
    from lineage_platform.witness import Witness, make_server, witness_passphrase

    server = make_server(Witness.open(folder, witness_passphrase()), host, port)
    bound_host, bound_port = server.server_address[:2]
    print(f"witness listening on http://{bound_host!s}:{bound_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@witness_app.command("add")
def witness_add(
    folder: Path = typer.Argument(..., help="the witness's folder"),
    request: Path = typer.Argument(..., help="an add-checkpoint request body (file exchange)"),
) -> None:
    """The same check as the HTTP endpoint, on a request file: prints the cosignature lines.

    Example: lineage witness add /srv/witness request.txt >> checkpoint
    """
    from lineage_platform.witness import Witness, WitnessRefusal, witness_passphrase

    try:
        lines = Witness.open(folder, witness_passphrase()).add_checkpoint(read_file(request))
    except WitnessRefusal as exc:
        from lineage_platform.errors import WitnessError

        raise WitnessError(f"refused ({exc.status}): {exc}") from exc
    sys.stdout.write(lines.decode("utf-8"))


@witness_app.command("publish")
def witness_publish() -> None:
    """Ask the witnesses of the project's witnesses.toml to cosign the latest checkpoint, and
    keep it in the state folder when the policy is met (verify and settle then accept it).

    Example: lineage sync && lineage witness publish
    """
    from lineage_platform import witness

    cfg = settings()
    policy = witness_policy(cfg, None)
    if policy is None:
        raise ConfigError(f"no {witness.POLICY_FILE} in {cfg.project_dir}: no witnesses to ask")
    published = witness.publish(store(cfg), keyring(cfg).trust(), policy, cfg.state_dir)
    out.print(published.describe(), highlight=False)


def witness_policy(cfg: Settings, explicit: Path | None) -> Any:
    from lineage_platform.witness import find_policy

    return find_policy(cfg.project_dir, explicit)


@app.command()
def checkpoint(
    vkey: bool = typer.Option(False, "--vkey", help="print the log's note verifier key instead"),
) -> None:
    """Print the latest checkpoint as a C2SP signed note (what Go's sumdb/note and witnesses
    read), or with --vkey the verifier key `<origin>+<hash>+<key>` to check it with.

    Example: lineage checkpoint > checkpoint && lineage checkpoint --vkey
    """
    from lineage_platform.log import SignedCheckpoint
    from lineage_platform.note import NoteVerifier

    cfg = settings()
    raw = store(cfg).latest_checkpoint()
    if raw is None:
        raise LineageError("the log is empty: no checkpoint yet")
    trust = keyring(cfg).trust()
    signed = SignedCheckpoint.parse(raw, trust)
    public = trust.get(signed.keyid, signed.checkpoint.describe())
    text = (
        NoteVerifier(signed.checkpoint.origin, public).vkey() + "\n"
        if vkey
        else signed.to_note(public).decode("utf-8")
    )
    sys.stdout.write(text)


@app.command()
def prove(index: int = typer.Argument(..., help="log index of the record")) -> None:
    """Print an RFC 9162 inclusion proof of one record against the latest signed checkpoint.

    Example: lineage prove 3
    """
    from lineage_platform.tiles import prove as prove_from_tiles

    cfg = settings()
    # From a tile cache in the state folder that only ever hashes what was appended since.
    proof = prove_from_tiles(store(cfg), keyring(cfg).trust(), index, cfg.state_dir / "tiles")
    out.print_json(data=proof.to_json())


INTERNAL_ERROR = 70  # EX_SOFTWARE: a bug, not a refusal


def _save_traceback() -> str:
    """The current exception's traceback in a file of its own; its path, or why not."""
    import tempfile
    import time

    text = traceback.format_exc()
    folders = [Path(os.environ.get("LINEAGE_HOME") or Path.cwd() / ".lineage") / "crashes",
               Path(tempfile.gettempdir())]
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"traceback-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.txt"
            path.write_text(text, encoding="utf-8")
            return str(path)
        except OSError:
            continue
    return "not saved: no writable folder"


def main() -> None:
    """Entry point: every LineageError becomes one red line and its class's exit code; any other
    exception one "internal error" line, its traceback saved to a file (exit 70)."""
    try:
        app()  # typer prints its own usage errors and exits 2
    except LineageError as exc:
        if os.environ.get("LINEAGE_DEBUG"):
            traceback.print_exc()
        err.print(f"[red]error:[/red] {escape(_one_line(str(exc)))}", highlight=False,
                  soft_wrap=True)
        sys.exit(exc.exit_code)
    except Exception as exc:  # the boundary: a bug must not print 150 lines at a user
        if os.environ.get("LINEAGE_DEBUG"):
            traceback.print_exc()
        saved = _save_traceback()
        what = _one_line(f"{type(exc).__name__}: {exc}")[:300]
        err.print(f"[red]internal error:[/red] {escape(what)} (traceback saved to "
                  f"{escape(saved)})", highlight=False, soft_wrap=True)
        sys.exit(INTERNAL_ERROR)


def _one_line(text: str) -> str:
    return " ".join(text.splitlines()) or "(no message)"


if __name__ == "__main__":
    main()
