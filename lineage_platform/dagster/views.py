"""What the platform shows on each asset's page: who contributed, what it is worth, what it earned,
and where the platform lags, written from the signed log and the ledger (never by hand).

    for obs in attribution_observations(store, [dg.AssetKey("datanet")]):
        instance.report_runless_asset_event(obs)          # or return them from a sensor tick
    checks = [sensor_lag_check(key, watched=keys), unsettled_fees_check(key)]

Charts are compact SVG images inline in Markdown: the UI shows a Markdown value inline only
when it is under 1,000 characters (a PNG data URI is longer and hides behind "[Show Markdown]").
"""

import base64
import contextlib
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.sax.saxutils import escape

import dagster as dg

from lineage_platform.allocation import contributor_account, owner_account
from lineage_platform.dagster.resources import LineageStoreResource
from lineage_platform.dagster.sync import ORCHESTRATOR, DagsterSource
from lineage_platform.errors import LineageError
from lineage_platform.records import AttributionRecord, Contributor
from lineage_platform.settlement import epoch_bounds, latest_valuation
from lineage_platform.signing import Envelope
from lineage_platform.stores import Store
from lineage_platform.sync import Cursor
from lineage_platform.valuation.result import clip

__all__ = [
    "LAG_CHECK",
    "UNSETTLED_CHECK",
    "attribution_observations",
    "contributors_table",
    "lag_evaluation",
    "lag_result",
    "observations_at",
    "sensor_lag_check",
    "unsettled_evaluation",
    "unsettled_fees_check",
    "values_chart",
]

LAG_CHECK = "sensor_caught_up"
UNSETTLED_CHECK = "fees_settled"
# The UI renders a Markdown value inline only below this many characters.
INLINE_MD = 1000
CHART_BARS = 8
LABEL_CHARS = 20  # a longer contributor id is cut, with an ellipsis, in the chart only
TABLE_ROWS = 100  # contributors shown per table; the log holds them all


def _per_contributor(contributors: Sequence[Contributor]) -> dict[str, dict[str, Any]]:
    """One row per contributor id (a contributor with several parts appears once per part)."""
    out: dict[str, dict[str, Any]] = {}
    for c in contributors:
        row = out.setdefault(c.id, {"rows": None, "weight": None, "value": None, "var": None,
                                    "sha256": c.sha256})
        for name, add in (("rows", c.rows), ("weight", c.weight), ("value", c.value)):
            if add is not None:
                row[name] = (row[name] or 0) + add
        if c.stderr is not None:
            row["var"] = (row["var"] or 0.0) + c.stderr**2
    return out


def contributors_table(record: AttributionRecord) -> dg.MetadataValue:
    """The record's contributors as a table: id, rows, value, share, stderr (largest first).

    Share: of the clipped values for a valuation (what settlement pays on), else of the
    recorded weights, else of the rows.

        meta["contributors"] = contributors_table(record)
    """
    rows = _per_contributor(record.contributors)
    basis = "value" if record.kind == "valuation" else (
        "weight" if any(r["weight"] is not None for r in rows.values()) else "rows")
    amount = {c: clip(r[basis]) if basis == "value" else float(r[basis] or 0)
              for c, r in rows.items()}
    total = math.fsum(amount.values())
    order = sorted(rows, key=lambda c: (-amount[c], c))[:TABLE_ROWS]
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord({
                "contributor": c,
                "rows": rows[c]["rows"],
                "value": None if rows[c]["value"] is None else round(rows[c]["value"], 6),
                "share": round(amount[c] / total, 4) if total else 0.0,
                "stderr": None if rows[c]["var"] is None else round(math.sqrt(rows[c]["var"]), 6),
            })
            for c in order
        ],
        schema=dg.TableSchema(columns=[
            dg.TableColumn("contributor", "string"),
            dg.TableColumn("rows", "int"),
            dg.TableColumn("value", "float", description="signed value (valuation records)"),
            dg.TableColumn("share", "float", description=f"share of the {basis}"),
            dg.TableColumn("stderr", "float"),
        ]),
    )


def values_chart(record: AttributionRecord, title: str = "contributor values") -> dg.MetadataValue:
    """A bar chart of the record's contributor values (clipped at zero: what settlement pays
    on), as an inline SVG image the UI shows in place; the largest bars that fit.

        meta["chart"] = values_chart(valuation_record)
    """
    rows = _per_contributor(record.contributors)
    values = {c: clip(r["value"] if r["value"] is not None else r["weight"] or r["rows"])
              for c, r in rows.items()}
    order = sorted(values, key=lambda c: (-values[c], c))
    for bars in range(min(CHART_BARS, len(order)), 0, -1):
        md = _chart_md(order[:bars], values, title, len(order))
        if len(md) < INLINE_MD:
            return dg.MetadataValue.md(md)
    return dg.MetadataValue.md(f"{title}: no contributors")


def _label(name: str) -> str:
    return escape(name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…")


def _chart_md(names: Sequence[str], values: dict[str, float], title: str, total: int) -> str:
    top = max((values[n] for n in names), default=0.0) or 1.0
    height = 16 * len(names) + 4
    left = 6 * min(max((len(n) for n in names), default=1), LABEL_CHARS) + 8
    bars = "".join(
        f"<text x='0' y='{16 * i + 14}'>{_label(n)}</text>"
        f"<rect x='{left}' y='{16 * i + 4}' width='{round(200 * values[n] / top)}' height='12'/>"
        for i, n in enumerate(names)
    )
    svg = (f"<svg xmlns='http://www.w3.org/2000/svg' width='{left + 204}' height='{height}' "
           f"font-family='sans-serif' font-size='11' fill='#4f43dd'>{bars}</svg>")
    alt = title if len(names) == total else f"{title} (top {len(names)} of {total})"
    return f"![{alt}](data:image/svg+xml;base64,{base64.b64encode(svg.encode()).decode()})"


# -- observations written after signing -----------------------------------------------------------
def _rows(store: Store, indices: Iterable[int]) -> dict[int, dict[str, Any]]:
    wanted = sorted(set(indices))
    if not wanted:
        return {}
    return {int(r["idx"]): r for r in store.entries_at(wanted).to_pylist()}


def _record(row: dict[str, Any]) -> AttributionRecord:
    return AttributionRecord.from_bytes(Envelope.from_json(bytes(row["envelope"])).payload)


def _inputs_table(record: AttributionRecord, rows: dict[int, dict[str, Any]]) -> dg.MetadataValue:
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord({
                "input": i.asset,
                "log index": i.log_index,
                "kind": rows[i.log_index]["kind"] if i.log_index in rows else None,
                "partition": rows[i.log_index]["partition"] if i.log_index in rows else None,
                "record digest": _short(rows[i.log_index]["record_digest"]) if i.log_index in rows
                else None,
                "sha256": _short(i.sha256),
            })
            for i in record.inputs
        ],
        schema=dg.TableSchema(columns=[
            dg.TableColumn("input", "string"),
            dg.TableColumn("log index", "int"),
            dg.TableColumn("kind", "string"),
            dg.TableColumn("partition", "string"),
            dg.TableColumn("record digest", "string"),
            dg.TableColumn("sha256", "string", description="content the record names"),
        ]),
    )


def _short(digest: str) -> str:
    """A digest cut for a table cell (the record's own page shows it whole)."""
    return f"{digest[:16]}…"


def _lineage_contributors(store: Store, record: AttributionRecord) -> set[str]:
    """Every contributor id the record's inputs reach, at any depth (as settlement pays)."""
    found = {c.id for c in record.contributors}
    seen: set[int] = set()
    frontier = {i.log_index for i in record.inputs if i.log_index is not None}
    while frontier:
        seen |= frontier
        nxt: set[int] = set()
        for row in _rows(store, frontier).values():
            if row["kind"] == "valuation":
                continue
            rec = _record(row)
            found.update(c.id for c in rec.contributors)
            nxt |= {i.log_index for i in rec.inputs if i.log_index is not None}
        frontier = nxt - seen
    return found


def _earned_to_date(store: Store) -> dict[str, tuple[int, int]]:
    """Per account: (paid over every settled epoch, how many epochs paid it). One read of the
    ledger for all models of a batch: a query per contributor costs a store connection each,
    which a tick cannot afford for thousands of contributors."""
    totals: dict[str, int] = {}
    epochs: dict[str, set[str]] = {}
    for p in store.payouts():
        totals[p.account] = totals.get(p.account, 0) + p.amount
        epochs.setdefault(p.account, set()).add(p.epoch)
    return {a: (n, len(epochs[a])) for a, n in totals.items()}


def _model_view(
    store: Store, record: AttributionRecord, earned_by: dict[str, tuple[int, int]]
) -> dict[str, Any]:
    """A model's latest signed valuation and what each contributor of its lineage has been paid
    to date (`earned_by`: the ledger's payouts per account, over every settled epoch)."""
    meta: dict[str, Any] = {}
    valued = latest_valuation(store, record.asset)
    if valued is not None:
        vidx, val = valued
        method = (val.details_obj() or {}).get("method", "?")
        meta["latest valuation"] = f"record #{vidx} ({method}, {len(val.contributors)} parts)"
        meta["valuation"] = contributors_table(val)
        meta["valuation chart"] = values_chart(val)
    names = _lineage_contributors(store, record) | (
        {c.id for c in valued[1].contributors} if valued is not None else set())
    earned: list[tuple[int, str, str, int]] = []
    for name in sorted(names):
        try:
            account = contributor_account(name)
        except LineageError:
            continue  # a spoofing id is never paid (settlement refuses it)
        total, epochs = earned_by.get(account, (0, 0))
        earned.append((total, name, account, epochs))
    earned.sort(key=lambda r: (-r[0], r[1]))
    meta["earnings to date"] = dg.MetadataValue.table(
        records=[dg.TableRecord({"contributor": n, "account": a, "earned": e, "epochs": k})
                 for e, n, a, k in earned[:TABLE_ROWS]],
        schema=dg.TableSchema(columns=[
            dg.TableColumn("contributor", "string"),
            dg.TableColumn("account", "string"),
            dg.TableColumn("earned", "int", description="integer minor units, all settled "
                           "epochs (a contributor to several models is paid once for all)"),
            dg.TableColumn("epochs", "int"),
        ]),
    )
    with contextlib.suppress(LineageError):  # an asset name no owner account can be made of
        meta["owner earned to date"] = earned_by.get(owner_account(record.asset), (0, 0))[0]
    return meta


def observations_at(store: Store, indices: Iterable[int]) -> list[dg.AssetObservation]:
    """One observation per signed record at these log indices, on its asset (and partition):
    contributors, record facts (log index, digest, key id), its inputs' records, and for a
    model its latest valuation and earnings; for a valuation its chart.

        events = observations_at(store, result.indices.values())
    """
    rows = _rows(store, indices)
    out = []
    earned_by: dict[str, tuple[int, int]] | None = None
    for idx in sorted(rows):
        row = rows[idx]
        if row["kind"] == "settlement":
            continue  # the `settlement` asset's own partition shows it
        record = _record(row)
        inputs = _rows(store, (i.log_index for i in record.inputs if i.log_index is not None))
        meta: dict[str, Any] = {
            "attribution": f"{record.kind} record #{idx} in the log",
            "log index": idx,
            "record digest": str(row["record_digest"]),
            "key id": str(row["keyid"]),
            "content sha256": record.sha256,
        }
        if record.contributors:
            meta["contributors"] = contributors_table(record)
        if record.kind == "valuation":
            meta["contributor values chart"] = values_chart(record)
            details = record.details_obj() or {}
            meta["method"] = str(details.get("method", "?"))
        if record.inputs:
            meta["inputs (signed records)"] = _inputs_table(record, inputs)
        if record.kind == "model":
            earned_by = _earned_to_date(store) if earned_by is None else earned_by
            meta.update(_model_view(store, record, earned_by))
        out.append(dg.AssetObservation(
            asset_key=dg.AssetKey.from_user_string(record.asset),
            partition=record.partition,
            metadata=meta,
        ))
    return out


def attribution_observations(
    store: Store, keys: Iterable[dg.AssetKey | str]
) -> list[dg.AssetObservation]:
    """`observations_at` the newest signed record of each asset: what the sync reports after
    signing, so each asset's page shows its attribution.

        for obs in attribution_observations(store, [dg.AssetKey("digits_classifier")]):
            instance.report_runless_asset_event(obs)
    """
    indices = []
    for raw in keys:
        key = dg.AssetKey.from_coercible(raw)
        idx = store.latest_index(key.to_user_string())
        if idx is not None:
            indices.append(idx)
    return observations_at(store, indices)


# -- friction made visible: checks ---------------------------------------------------------------
def lag_evaluation(
    instance: dg.DagsterInstance,
    store: Store,
    key: dg.AssetKey,
    watched: Sequence[dg.AssetKey],
    max_events: int,
    max_minutes: float,
    now: datetime | None = None,
) -> dg.AssetCheckEvaluation:
    """`sensor_caught_up` on `key`: fails (red) when more than `max_events` materializations of
    `watched` are not in the log yet, or the oldest has waited more than `max_minutes`.

        instance.report_runless_asset_event(lag_evaluation(instance, store, key, keys, 100, 10))
    """
    pending, oldest = DagsterSource(instance, watched).backlog(
        Cursor.of_store(store, ORCHESTRATOR), cap=max(max_events, 0) + 10_000)
    return lag_result(key, pending, oldest, max_events, max_minutes, now)


def lag_result(
    key: dg.AssetKey,
    pending: int,
    oldest: float | None,
    max_events: int,
    max_minutes: float,
    now: datetime | None = None,
    capped: bool = False,
) -> dg.AssetCheckEvaluation:
    """`sensor_caught_up` on `key` for a backlog already read: `pending` unsigned
    materializations (at least that many when `capped`), the oldest at timestamp `oldest`.
    What the sensor's tick reports, from the backlog it read after signing.

        ev = lag_result(key, *source.backlog(cursor), max_events=100, max_minutes=15)
    """
    moment = (now or datetime.now(UTC)).timestamp()
    waited = (moment - oldest) / 60 if oldest is not None else 0.0
    late = pending > max_events or waited > max_minutes
    shown = f"{pending}+" if capped else str(pending)
    return dg.AssetCheckEvaluation(
        asset_key=key,
        check_name=LAG_CHECK,
        passed=not late,
        metadata={
            "not yet in the log": shown if capped else pending,
            "oldest waiting (minutes)": round(waited, 1),
            "limits": f"{max_events} events, {max_minutes:g} minutes",
            "reason": (f"the lineage sensor lags: {shown} materializations unsigned, the "
                       f"oldest for {waited:.1f} min" if late else "caught up"),
        },
    )


def sensor_lag_check(
    key: dg.AssetKey | str,
    watched: Sequence[dg.AssetKey | str],
    max_events: int = 100,
    max_minutes: float = 15.0,
) -> dg.AssetChecksDefinition:
    """A check on `key` that is red while the lineage sensor lags behind `watched` assets.

        checks = [sensor_lag_check("digits_classifier", watched=keys, max_events=50)]
    """
    target = dg.AssetKey.from_coercible(key)
    keys = [dg.AssetKey.from_coercible(k) for k in watched]

    @dg.asset_check(
        asset=target,
        name=LAG_CHECK,
        description=f"Red when over {max_events} materializations (or any older than "
        f"{max_minutes:g} min) are not signed into the log yet.",
    )
    def _check(
        context: dg.AssetCheckExecutionContext, lineage_store: LineageStoreResource
    ) -> dg.AssetCheckResult:
        ev = lag_evaluation(context.instance, lineage_store.store(), target, keys, max_events,
                            max_minutes)
        return dg.AssetCheckResult(passed=ev.passed, metadata=ev.metadata)

    return _check


def unsettled_evaluation(
    store: Store, key: dg.AssetKey, grace_hours: float, now: datetime | None = None
) -> dg.AssetCheckEvaluation:
    """`fees_settled` on `key`: fails (red) when an epoch closed more than `grace_hours` ago
    still has unsettled fees.

        instance.report_runless_asset_event(unsettled_evaluation(store, key, 6))
    """
    moment = now or datetime.now(UTC)
    late = [e for e in store.open_epochs()
            if epoch_bounds(e.epoch)[1] + timedelta(hours=grace_hours) <= moment]
    return dg.AssetCheckEvaluation(
        asset_key=key,
        check_name=UNSETTLED_CHECK,
        passed=not late,
        metadata={
            "unsettled closed epochs": ", ".join(e.epoch for e in late) or "none",
            "unsettled fees (minor units)": sum(e.fees for e in late),
            "grace after an epoch closes (hours)": grace_hours,
        },
    )


def unsettled_fees_check(
    key: dg.AssetKey | str = "settlement", grace_hours: float = 6.0
) -> dg.AssetChecksDefinition:
    """A check on `key` (default: the `settlement` asset) that is red while fees stay unsettled
    more than `grace_hours` after their epoch closed.

        checks = [unsettled_fees_check()]
    """
    target = dg.AssetKey.from_coercible(key)

    @dg.asset_check(
        asset=target,
        name=UNSETTLED_CHECK,
        description=f"Red when a closed epoch's fees are unsettled {grace_hours:g} h after it "
        "closed.",
    )
    def _check(lineage_store: LineageStoreResource) -> dg.AssetCheckResult:
        ev = unsettled_evaluation(lineage_store.store(), target, grace_hours)
        return dg.AssetCheckResult(passed=ev.passed, metadata=ev.metadata)

    return _check
