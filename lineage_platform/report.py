"""An epoch's report for people: lineage graph, contributor values, payouts, verdict, keys.

    report = build_report(store, KeyRing(settings.keys_dir).trust, epoch=None)  # latest settled
    write_report(report, Path("report.html"))   # one self-contained file; or fmt="pdf"

The HTML has no external reference: its plots are PNGs made by matplotlib (Agg canvas, no pyplot
state) and inlined as base64 `data:` URIs, so the file can be mailed or archived as it is.

The epoch's assets are the records its signed settlement record names, followed through their
`inputs` to the first contributions. Contributor values come from the valuation record each
model was paid on (the newest one when the epoch was settled); a newer valuation, if any, is
named but not used. The verdict is `audit.verify_store` over the whole log; a failure is shown in
the report, never raised.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lineage_platform.errors import ConfigError, LineageError, SettlementError
from lineage_platform.extras import missing

try:  # the plots are the [report] extra
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.text import Text
except ImportError as exc:
    raise missing(exc.name or "matplotlib", "report") from exc

from lineage_platform.records import AttributionRecord, Contributor
from lineage_platform.signing import Envelope, TrustStore
from lineage_platform.stores import SettledEpoch, Store

FORMATS = ("html", "pdf")
#: More partitions of one asset than this are drawn as one node, so the graph stays readable.
MAX_PARTITION_NODES = 12
KIND_COLORS = {
    "dataset": "#dbeafe",
    "model": "#dcfce7",
    "valuation": "#fef3c7",
    "settlement": "#fce7f3",
    "usage-epoch": "#e5e7eb",
}


# -- what the report shows ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GraphNode:
    """One record of the epoch's lineage, or several partitions of one asset drawn as one."""

    key: int  # the (lowest) log index it stands for
    label: str
    kind: str
    indices: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ModelValues:
    model: str
    log_index: int  # the valuation record
    method: str
    samples: int | None
    contributors: tuple[Contributor, ...]
    newer: int | None = None  # a later valuation record of the same model, not paid on


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    text: str  # the verification summary, or the error that stopped it


@dataclass(frozen=True, slots=True)
class KeyRow:
    keyid: str
    public_key: str | None  # base64 raw Ed25519 key when the trust store has it
    records: int  # records in the whole log signed by this key
    in_epoch: int  # records of this epoch's lineage signed by it


@dataclass(frozen=True, slots=True)
class EpochReport:
    epoch: str
    starts_at: str
    ends_at: str
    fees_total: int
    paid_total: int
    root: str
    settlement_index: int
    fees_by_model: dict[str, int]
    policy: dict[str, Any]
    payouts: tuple[tuple[str, int], ...]
    nodes: tuple[GraphNode, ...]
    edges: tuple[tuple[int, int], ...]  # (input node key, consumer node key)
    values: tuple[ModelValues, ...]
    verdict: Verdict
    keys: tuple[KeyRow, ...]
    generated_at: str
    #: Valuations (and dataset contributors) this settlement refused to pay on, one line each,
    #: as its record signs them (issue 15); () for a settlement signed before those rules.
    refusals: tuple[str, ...] = ()


# -- collecting it from the store -----------------------------------------------------------------


def _settled(store: Store, epoch: str | None) -> SettledEpoch:
    found = store.settled_epoch(epoch)
    if found is None and epoch is None:
        raise SettlementError("no settled epoch to report on: run `lineage settle` first")
    if found is None:
        raise SettlementError(f"epoch {epoch} is not settled: nothing to report")
    return found


def _lineage(
    records: dict[int, AttributionRecord], root: int
) -> tuple[list[int], list[tuple[int, int]]]:
    """Every record reachable from `root` through `inputs`, and the input edges between them."""
    seen: set[int] = set()
    edges: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        idx = stack.pop()
        if idx in seen:
            continue
        seen.add(idx)
        for ref in records[idx].inputs:
            if ref.log_index is not None and ref.log_index in records:
                edges.add((ref.log_index, idx))
                stack.append(ref.log_index)
    return sorted(seen), sorted(edges)


def _graph(
    records: dict[int, AttributionRecord], indices: Sequence[int], edges: Sequence[tuple[int, int]]
) -> tuple[tuple[GraphNode, ...], tuple[tuple[int, int], ...]]:
    by_asset: dict[str, list[int]] = {}
    for i in indices:
        if records[i].partition is not None and records[i].kind != "settlement":
            by_asset.setdefault(records[i].asset, []).append(i)
    key_of = {i: i for i in indices}
    nodes = []
    collapsed: set[int] = set()
    for asset, parts in by_asset.items():
        if len(parts) > MAX_PARTITION_NODES:
            key = min(parts)
            key_of.update({i: key for i in parts})
            collapsed.update(parts)
            kind = records[key].kind
            nodes.append(GraphNode(key, f"{asset}\n{len(parts)} partitions", kind, tuple(parts)))
    for i in indices:
        if i in collapsed:
            continue
        rec = records[i]
        name = rec.asset if rec.partition is None else f"{rec.asset} [{rec.partition}]"
        nodes.append(GraphNode(i, f"{name}\n#{i} {rec.kind}", rec.kind, (i,)))
    mapped = {(key_of[a], key_of[b]) for a, b in edges if key_of[a] != key_of[b]}
    return tuple(sorted(nodes, key=lambda n: n.key)), tuple(sorted(mapped))


def _values(
    records: dict[int, AttributionRecord], settlement: int
) -> tuple[ModelValues, ...]:
    """Per model the settlement names, the valuation it names beside it (what was paid on)."""
    named = sorted(ref.log_index for ref in records[settlement].inputs
                   if ref.log_index is not None and ref.log_index in records)

    def values_of(model: str, idx: int) -> bool:
        rec = records[idx]
        return rec.kind == "valuation" and any(i.asset == model for i in rec.inputs)

    out = []
    for model in sorted({records[i].asset for i in named if records[i].kind == "model"}):
        paid_on = [i for i in named if values_of(model, i)]
        if not paid_on:
            continue
        idx = paid_on[-1]
        later = [i for i in records if i > idx and values_of(model, i)]
        details = records[idx].details_obj() or {}
        samples = details.get("samples")
        out.append(
            ModelValues(
                model, idx, str(details.get("method", "unknown")),
                samples if isinstance(samples, int) else None, records[idx].contributors,
                max(later) if later else None,
            )
        )
    return tuple(out)


def _verdict(
    store: Store, load_trust: Callable[[], TrustStore]
) -> tuple[Verdict, TrustStore | None]:
    from lineage_platform.audit import verify_store

    trust = None
    try:
        trust = load_trust()
        result = verify_store(store, trust)
    except LineageError as exc:
        return Verdict(False, f"FAILED: {exc}"), trust
    return Verdict(True, result.summary()), trust


def build_report(
    store: Store,
    load_trust: Callable[[], TrustStore],
    epoch: str | None = None,
    now: datetime | None = None,
) -> EpochReport:
    """Everything the report shows; only a missing or unsettled epoch raises."""
    settled = _settled(store, epoch)
    e, settlement = settled.epoch, settled.log_index
    table, _ = store.read_log()
    cols = table.to_pydict()
    records: dict[int, AttributionRecord] = {}
    signer: dict[int, str] = {}
    for idx, raw, keyid in zip(cols["idx"], cols["envelope"], cols["keyid"], strict=True):
        signer[int(idx)] = str(keyid)
        try:
            records[int(idx)] = AttributionRecord.from_bytes(
                Envelope.from_json(bytes(raw)).payload
            )
        except LineageError:
            continue  # left out of the graph; the verdict names it
    readable = settlement in records  # if not, the verdict says why; payouts still show
    indices, edges = _lineage(records, settlement) if readable else ([], [])
    nodes, node_edges = _graph(records, indices, edges)
    details = (records[settlement].details_obj() if readable else None) or {}
    payouts = [(p.account, p.amount) for p in store.payouts(epoch=e)]
    verdict, trust = _verdict(store, load_trust)
    keyids = sorted(set(signer.values()) | set(trust.keyids() if trust is not None else ()))
    keys = tuple(
        KeyRow(
            k,
            trust.get(k).to_b64() if trust is not None and k in trust else None,
            sum(1 for s in signer.values() if s == k),
            sum(1 for i in indices if signer.get(i) == k),
        )
        for k in keyids
    )
    fees_by_model = details.get("fees_by_model")
    policy = details.get("policy")
    return EpochReport(
        epoch=str(e),
        starts_at=_iso(settled.starts_at),
        ends_at=_iso(settled.ends_at),
        fees_total=settled.fees_total,
        paid_total=settled.paid_total,
        root=settled.root,
        settlement_index=settlement,
        fees_by_model=dict(fees_by_model) if isinstance(fees_by_model, dict) else {},
        policy=dict(policy) if isinstance(policy, dict) else {},
        payouts=tuple((str(a), int(n)) for a, n in payouts),
        nodes=nodes,
        edges=node_edges,
        values=_values(records, settlement) if readable else (),
        verdict=verdict,
        keys=keys,
        refusals=_refusals(details),
        generated_at=(now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    )


def _refusals(details: dict[str, Any]) -> tuple[str, ...]:
    """The settlement's signed `valuation_refusals` as the lines `lineage settle` printed."""
    found = details.get("valuation_refusals")
    if not isinstance(found, list):
        return ()
    return tuple(
        f"{r.get('kind', 'valuation')} record {r.get('log_index')} of {r.get('model')} "
        f"refused: {r.get('reason')}"
        for r in found
        if isinstance(r, dict)
    )


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")  # stored naive, in UTC
    return str(value)


# -- figures (matplotlib, Agg canvas, no pyplot) --------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _layers(nodes: Sequence[GraphNode], edges: Sequence[tuple[int, int]]) -> dict[int, int]:
    """Longest path from a source; inputs always precede their consumers in the log."""
    inputs: dict[int, list[int]] = {}
    for a, b in edges:
        inputs.setdefault(b, []).append(a)
    depth: dict[int, int] = {}
    for node in sorted(nodes, key=lambda n: n.key):
        depth[node.key] = 1 + max((depth[a] for a in inputs.get(node.key, ()) if a in depth),
                                  default=-1)
    return depth


def lineage_figure(report: EpochReport) -> Figure:
    depth = _layers(report.nodes, report.edges)
    columns: dict[int, list[GraphNode]] = {}
    for node in report.nodes:
        columns.setdefault(depth[node.key], []).append(node)
    tallest = max((len(c) for c in columns.values()), default=1)
    fig = _figure(max(6.0, 2.1 * len(columns)), max(2.8, 0.7 * tallest + 1.0))
    ax = fig.add_subplot()
    ax.set_axis_off()
    pos: dict[int, tuple[float, float]] = {}
    for x, column in columns.items():
        column.sort(key=lambda n: (n.label, n.key))
        for rank, node in enumerate(column):
            pos[node.key] = (float(x), (len(column) - 1) / 2 - rank)
    boxes: dict[int, Text] = {}
    for node in report.nodes:
        px, py = pos[node.key]
        boxes[node.key] = ax.text(
            px, py, node.label, ha="center", va="center", fontsize=8.5, zorder=3,
            bbox={"boxstyle": "round,pad=0.35", "fc": KIND_COLORS.get(node.kind, "#ffffff"),
                  "ec": "#374151", "lw": 0.8},
        )
    for a, b in report.edges:
        # An edge skipping a column bends away from the nodes between, dashed to tell it apart.
        skips = depth[b] - depth[a] > 1
        rad = (-0.2 if pos[a][1] >= pos[b][1] else 0.2) if skips else 0.0
        ax.annotate(
            "", xy=pos[b], xytext=pos[a], zorder=2,
            arrowprops={"arrowstyle": "-|>", "color": "#9ca3af" if skips else "#4b5563",
                        "lw": 0.8, "ls": "--" if skips else "-", "shrinkA": 2, "shrinkB": 2,
                        "connectionstyle": f"arc3,rad={rad}",
                        "patchA": boxes[a].get_bbox_patch(), "patchB": boxes[b].get_bbox_patch()},
        )
    kinds = sorted({n.kind for n in report.nodes})
    ax.legend(
        handles=[Patch(fc=KIND_COLORS.get(k, "#ffffff"), ec="#374151", label=k) for k in kinds],
        loc="upper right", fontsize=8, frameon=False, ncols=len(kinds),
        bbox_to_anchor=(1.0, 1.08),
    )
    ax.set_xlim(-0.6, max(len(columns) - 0.4, 0.6))
    ax.set_ylim(-tallest / 2 - 0.1, tallest / 2 + 0.1)
    ax.set_title(f"Lineage of epoch {report.epoch} (record #{report.settlement_index})",
                 fontsize=10, loc="left")
    return fig


def values_figure(values: ModelValues) -> Figure:
    people = sorted(values.contributors, key=lambda c: (-(c.value or 0.0), c.id))
    fig = _figure(7.0, max(2.2, 0.38 * len(people) + 1.2))
    ax = fig.add_subplot()
    ys = list(range(len(people)))
    vals = [c.value or 0.0 for c in people]
    errs = [c.stderr or 0.0 for c in people]
    colors = ["#2563eb" if v >= 0 else "#dc2626" for v in vals]
    ax.barh(ys, vals, xerr=errs, color=colors, capsize=4,
            error_kw={"ecolor": "#111827", "lw": 1.0})
    ax.set_yticks(ys, [c.id for c in people], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0.0, color="#374151", lw=0.8)
    ax.set_xlabel("value (error bars: ±1 standard error)", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.set_title(f"{values.model}: {values.method}, valuation record #{values.log_index}",
                 fontsize=10, loc="left")
    return fig


# -- HTML -----------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#111827;
max-width:1100px;margin:2em auto;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid
#e5e7eb;padding-bottom:.2em}table{border-collapse:collapse;margin:.6em 0}
th,td{border:1px solid #d1d5db;padding:.3em .7em;text-align:left}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
code{font:12px ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
.verdict{padding:.7em 1em;border-radius:6px;font-weight:600}
.ok{background:#dcfce7;border:1px solid #16a34a}.fail{background:#fee2e2;border:1px solid #dc2626}
.meta td:first-child{color:#4b5563}img{max-width:100%;height:auto}.note{color:#4b5563}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _img(fig: Figure, alt: str) -> str:
    data = base64.b64encode(_png(fig)).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int]) -> str:
    def cell(tag: str, i: int, text: str) -> str:
        cls = ' class="num"' if i in numeric else ""
        return f"<{tag}{cls}>{text}</{tag}>"

    out = ["<table><thead><tr>", *(cell("th", i, _e(h)) for i, h in enumerate(head)),
           "</tr></thead><tbody>"]
    for row in rows:
        out += ["<tr>", *(cell("td", i, t) for i, t in enumerate(row)), "</tr>"]
    out.append("</tbody></table>")
    return "".join(out)


def render_html(report: EpochReport) -> str:
    r = report
    paid = r.paid_total or 1
    meta = [  # (label, HTML-safe value)
        ("window", _e(f"{r.starts_at} to {r.ends_at} (half-open)")),
        ("fees", f"{r.fees_total:,} minor units"),
        ("paid", f"{r.paid_total:,} minor units to {len(r.payouts)} accounts"),
        ("settlement record", f"#{r.settlement_index}"),
        ("payout Merkle root", f"<code>{_e(r.root)}</code>"),
        ("fees by model", _e(", ".join(f"{m}: {n:,}" for m, n in sorted(r.fees_by_model.items()))
                             or "none")),
        ("policy", _e(", ".join(f"{k} {v}" for k, v in sorted(r.policy.items())) or "unknown")),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Lineage report: epoch {_e(r.epoch)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Epoch {_e(r.epoch)}</h1>",
        f'<p class="note">Generated {_e(r.generated_at)} by lineage_platform.</p>',
        '<table class="meta">',
        *(f"<tr><td>{_e(k)}</td><td>{v}</td></tr>" for k, v in meta),
        "</table>",
        '<h2 id="verification">Verification</h2>',
        f'<p class="verdict {"ok" if r.verdict.ok else "fail"}">'
        f'{"Verified" if r.verdict.ok else "Not verified"}: {_e(r.verdict.text)}</p>',
        '<h2 id="payouts">Payouts</h2>',
        _table(
            ("account", "amount (minor units)", "share of paid"),
            [(_e(a), f"{n:,}", f"{n / paid:.2%}") for a, n in r.payouts]
            + [("<strong>total</strong>", f"<strong>{r.paid_total:,}</strong>",
                "100.00%" if r.payouts else "")],
            {1, 2},
        ),
        '<h2 id="lineage">Lineage</h2>',
        f'<p class="note">{len(r.nodes)} records from the signed log; an arrow points from an '
        "input to the record that used it.</p>"
        if r.nodes else '<p class="note">The settlement record cannot be read (see above).</p>',
        _img(lineage_figure(r), f"lineage graph of epoch {r.epoch}") if r.nodes else "",
        '<h2 id="values">Contributor values</h2>',
    ]
    if not r.values:
        parts.append('<p class="note">No model of this epoch was paid on a valuation record.</p>')
    for v in r.values:
        samples = f", {v.samples:,} samples" if v.samples is not None else ""
        newer = (f" A newer valuation (record #{v.newer}) exists; this epoch was paid on "
                 f"#{v.log_index}." if v.newer is not None else "")
        parts += [
            f"<h3>{_e(v.model)}</h3>",
            f'<p class="note">{_e(v.method)}{_e(samples)}, valuation record '
            f"#{v.log_index}.{_e(newer)}</p>",
            _img(values_figure(v), f"contributor values of {v.model}"),
            '<p class="note">Every standard error is 0: the method is exact or closed-form.</p>'
            if all(not c.stderr for c in v.contributors) else "",
            _table(
                ("contributor", "value", "stderr", "share"),
                [(_e(c.id), _num(c.value), _num(c.stderr),
                  "" if c.weight is None else f"{c.weight:.2%}")
                 for c in sorted(v.contributors, key=lambda c: (-(c.value or 0.0), c.id))],
                {1, 2, 3},
            ),
        ]
    parts += [
        '<h2 id="refused">Refused valuations</h2>',
        '<p class="note">None: every valuation this settlement could have used passed the '
        "rules.</p>" if not r.refusals else
        f'<p class="verdict fail">{len(r.refusals)} refused and not paid on (the data part '
        "followed the lineage instead):</p><ul>"
        + "".join(f"<li>{_e(line)}</li>" for line in r.refusals) + "</ul>",
        '<h2 id="keys">Signing keys</h2>',
        _table(
            ("key id", "public key (base64)", "records in log", "records in this epoch"),
            [(f"<code>{_e(k.keyid)}</code>",
              f"<code>{_e(k.public_key)}</code>" if k.public_key else "not in the trust store",
              str(k.records), str(k.in_epoch)) for k in r.keys],
            {2, 3},
        ),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.4f}"


# -- PDF ------------------------------------------------------------------------------------------


def _text_page(lines: Sequence[str]) -> Figure:
    fig = _figure(8.27, 11.69)  # A4 portrait
    fig.text(0.06, 0.96, "\n".join(lines), va="top", ha="left", fontsize=9, family="monospace",
             wrap=True)
    return fig


def write_pdf(report: EpochReport, out: Path) -> None:
    from matplotlib.backends.backend_pdf import PdfPages

    r = report
    lines = [
        f"Epoch {r.epoch}: {r.starts_at} to {r.ends_at}",
        f"generated {r.generated_at}",
        "",
        f"{'Verified' if r.verdict.ok else 'NOT VERIFIED'}: {r.verdict.text}",
        "",
        f"fees {r.fees_total}, paid {r.paid_total}, settlement record #{r.settlement_index}",
        f"payout root {r.root}",
        "",
        "Payouts (minor units)",
        *(f"  {a:<40} {n:>14,}" for a, n in r.payouts),
        "",
        "Refused valuations",
        *((f"  {line}" for line in r.refusals) if r.refusals else ("  none",)),
        "",
        "Signing keys",
        *(f"  {k.keyid}  ({k.records} records, {k.in_epoch} in this epoch)" for k in r.keys),
    ]
    with PdfPages(out, metadata={"Title": f"Lineage report: epoch {r.epoch}"}) as pdf:
        pdf.savefig(_text_page(lines))
        if r.nodes:
            pdf.savefig(lineage_figure(r))
        for v in r.values:
            pdf.savefig(values_figure(v))


def write_report(report: EpochReport, out: Path, fmt: str = "html") -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"report format {fmt!r}: expected one of {', '.join(FORMATS)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "pdf":
        write_pdf(report, out)
    else:
        out.write_text(render_html(report), encoding="utf-8")
