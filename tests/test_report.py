"""`lineage report`: a self-contained HTML (or PDF) report of a settled epoch that opens in a
browser, with the epoch's lineage, contributor values, payouts, verdict and key ids."""

from __future__ import annotations

import base64
import re
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from lineage_platform import report as reports
from lineage_platform.errors import KeyFileError, SettlementError
from lineage_platform.signing import SigningKey, TrustStore
from tests.export_world import (
    EPOCH,
    ExportWorld,
    add_newer_valuation,
    make_export_world,
)
from tests.storekit import tamper

CHROMIUM = Path("/usr/bin/chromium")
PNG = b"\x89PNG\r\n\x1a\n"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}
URL_ATTRS = {"src", "href", "srcset", "action", "formaction", "poster", "data", "background"}


class Document(HTMLParser):
    """Well-formedness (every element closed in order) and every URL the page would load."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.urls: list[str] = []
        self.tags: Counter[str] = Counter()
        self.doctype = ""
        self.text: list[str] = []

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        self.urls += [v or "" for k, v in attrs if k in URL_ATTRS]
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        self.urls += [v or "" for k, v in attrs if k in URL_ATTRS]

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(text: str) -> Document:
    doc = Document()
    doc.feed(text)
    doc.close()
    return doc


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> ExportWorld:
    return make_export_world(tmp_path_factory.mktemp("report") / "project")


@pytest.fixture(scope="module")
def built(world: ExportWorld) -> reports.EpochReport:
    return reports.build_report(world.store, world.trust)


@pytest.fixture(scope="module")
def html_file(built: reports.EpochReport, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("html") / "report.html"
    reports.write_report(built, out)
    return out


def test_html_is_valid_and_self_contained(html_file: Path) -> None:
    text = html_file.read_text(encoding="utf-8")
    doc = parse(text)
    assert doc.doctype.lower() == "doctype html"
    assert not doc.errors and not doc.stack, (doc.errors, doc.stack)
    assert doc.tags["html"] == doc.tags["head"] == doc.tags["body"] == doc.tags["title"] == 1
    assert doc.tags["img"] >= 2  # the lineage graph and one values chart
    assert doc.urls and all(u.startswith("data:") for u in doc.urls), doc.urls
    for url in doc.urls:
        head, _, data = url.partition(",")
        assert head == "data:image/png;base64"
        assert base64.b64decode(data, validate=True).startswith(PNG)
    # Nothing else that could load: no scripts, stylesheets, frames, fonts or CSS urls.
    for tag in ("script", "link", "iframe", "object", "embed", "base"):
        assert doc.tags[tag] == 0, tag
    assert not re.search(r"url\(|@import", text)


def test_html_shows_payouts_verdict_values_and_keys(
    world: ExportWorld, built: reports.EpochReport, html_file: Path
) -> None:
    doc = parse(html_file.read_text(encoding="utf-8"))
    text = " ".join(" ".join(doc.text).split())
    payouts = [(p.account, p.amount) for p in world.store.payouts(epoch=EPOCH)]
    assert payouts and list(built.payouts) == [(a, int(n)) for a, n in payouts]
    for account, amount in payouts:
        assert f"{account} {amount:,}" in text
    assert f"total {sum(n for _, n in payouts):,}" in text
    assert f"Epoch {EPOCH}" in text
    assert built.verdict.ok and "Verified: OK:" in text
    assert world.key.keyid in text and world.key.public_key.to_b64() in text
    assert built.root in text
    for who in ("alice", "bob"):
        assert re.search(rf"{who} 0\.\d{{4}} 0\.0[45]00 \d+\.\d\d%", text), who
    assert built.refusals == () and "Refused valuations None: every valuation" in text


def test_the_graph_is_the_epochs_lineage(world: ExportWorld, built: reports.EpochReport) -> None:
    i = world.index
    assert built.settlement_index == i["settlement"]
    assert sorted(n.key for n in built.nodes) == sorted(
        i[k] for k in ("part:alice", "part:bob", "datanet", "clf", "clf_valuation", "settlement")
    )  # not "notes": the settlement does not depend on it
    assert set(built.edges) == {
        (i["part:alice"], i["datanet"]), (i["part:bob"], i["datanet"]),
        (i["datanet"], i["clf"]), (i["part:alice"], i["clf_valuation"]),
        (i["part:bob"], i["clf_valuation"]), (i["clf"], i["clf_valuation"]),
        (i["clf"], i["settlement"]), (i["clf_valuation"], i["settlement"]),
    }
    [values] = built.values
    assert (values.model, values.log_index, values.newer) == ("clf", i["clf_valuation"], None)
    assert values.method == "permutation" and values.samples == 500
    assert [(c.id, c.value, c.stderr) for c in values.contributors] == [
        ("alice", 0.61, 0.05), ("bob", 0.22, 0.04)
    ]


def test_many_partitions_are_drawn_as_one_node(
    world: ExportWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reports, "MAX_PARTITION_NODES", 1)
    built = reports.build_report(world.store, world.trust)
    [parts] = [n for n in built.nodes if n.label.startswith("contributions")]
    assert parts.indices == (world.index["part:alice"], world.index["part:bob"])
    assert "2 partitions" in parts.label
    assert (parts.key, world.index["datanet"]) in built.edges
    reports.lineage_figure(built)  # still draws


def test_values_are_those_the_epoch_was_paid_on(tmp_path: Path) -> None:
    world = make_export_world(tmp_path / "project")
    newer = add_newer_valuation(world)
    built = reports.build_report(world.store, world.trust, epoch=EPOCH)
    [values] = built.values
    assert values.log_index == world.index["clf_valuation"] and values.newer == newer
    assert newer not in {n.key for n in built.nodes}
    assert f"newer valuation (record #{newer})" in reports.render_html(built)


@pytest.mark.parametrize("failure", ["untrusted key", "no trust store"])
def test_a_failed_verification_is_reported_not_raised(
    world: ExportWorld, failure: str
) -> None:
    other = SigningKey.generate()

    def load_trust() -> TrustStore:
        if failure == "no trust store":
            raise KeyFileError("no trust store at /nowhere: run `lineage keys init`")
        return TrustStore.of(other)

    built = reports.build_report(world.store, load_trust)
    assert not built.verdict.ok and built.verdict.text.startswith("FAILED: ")
    html = reports.render_html(built)
    assert "Not verified: FAILED: " in html and 'class="verdict fail"' in html
    rows = {k.keyid: k for k in built.keys}
    assert rows[world.key.keyid].public_key is None  # signed the log, not trusted
    assert rows[world.key.keyid].records == world.store.tree_size()
    if failure == "untrusted key":
        assert "signature" in built.verdict.text or "trust" in built.verdict.text
        assert rows[other.keyid].records == 0 and rows[other.keyid].public_key


@pytest.mark.parametrize("record", ["notes", "settlement"])
def test_a_tampered_log_still_gives_a_report_with_the_failure(tmp_path: Path, record: str) -> None:
    world = make_export_world(tmp_path / "project")
    tamper(world.store, "UPDATE log_entries SET envelope = ? WHERE idx = ?",
           [b'{"not": "an envelope"}', world.index[record]])
    built = reports.build_report(world.store, world.trust)
    assert not built.verdict.ok and f"record {world.index[record]}" in built.verdict.text
    assert built.payouts  # the settlement tables are shown as stored
    assert bool(built.nodes) == (record != "settlement")
    doc = parse(reports.render_html(built))
    assert not doc.errors and "Not verified: FAILED:" in " ".join(doc.text)
    if not built.nodes:
        reports.write_report(built, tmp_path / "report.pdf", "pdf")  # a page fewer, still a PDF


def test_epochs_that_cannot_be_reported(world: ExportWorld, tmp_path: Path) -> None:
    with pytest.raises(SettlementError, match="1999-01-01 is not settled"):
        reports.build_report(world.store, world.trust, epoch="1999-01-01")
    unsettled = make_export_world(tmp_path / "unsettled", settled=False)
    with pytest.raises(SettlementError, match="no settled epoch"):
        reports.build_report(unsettled.store, unsettled.trust)


def test_pdf(built: reports.EpochReport, tmp_path: Path) -> None:
    out = tmp_path / "report.pdf"
    reports.write_report(built, out, "pdf")
    data = out.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    # A summary page, the lineage graph and one values chart per model.
    assert len(re.findall(rb"/Type\s*/Page(?![s\w])", data)) == 2 + len(built.values)


def test_cli_report(world: ExportWorld, tmp_path: Path) -> None:
    out = tmp_path / "r" / "report.html"
    done = world.cli("report", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert f"report of epoch {EPOCH} (verified)" in done.stdout
    assert parse(out.read_text(encoding="utf-8")).tags["img"] >= 2
    done = world.cli("report", "--epoch", "1999-01-01", "--out", str(out))
    assert done.returncode == SettlementError.exit_code
    assert done.stderr.strip().splitlines() == [
        "error: epoch 1999-01-01 is not settled: nothing to report"
    ]


def test_report_renders_in_headless_chromium(html_file: Path, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is not installed (apt-get install chromium); report not rendered"
        print(reason)
        pytest.skip(reason)
    shot = tmp_path / "report.png"
    done = subprocess.run(
        [
            str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars",
            "--window-size=1200,1800", f"--screenshot={shot}", html_file.as_uri(),
        ],
        capture_output=True, text=True, timeout=120,
    )
    assert shot.is_file() and shot.stat().st_size > 0, done.stderr[-2000:]
    assert shot.read_bytes().startswith(PNG)
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[:2] == (1800, 1200)
    assert pixels[..., :3].std() > 0.05  # something was drawn, not a blank page
