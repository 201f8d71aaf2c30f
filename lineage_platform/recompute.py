"""Re-run a signed valuation from its signed inputs and compare the values digest (issue 15).

    outcomes = recompute_valuations(store, project_dir, {"digits_classifier_valuation": fn})
    bad = [o for o in outcomes if not o.ok]   # each names its record and says why

A key holder can sign any values; a deterministic method's values are a function of the data,
so re-running it shows whether the data gives them. For each valuation record of a
deterministic method (`DETERMINISTIC`: KNN-Shapley of rows; exact Shapley), the
bytes of every contributor part it read are found by their signed content hash (the part's
own record names its DVC path and md5: the file in the project, else the DVC cache, and either
must hash to the signed sha256), the parts are ordered as the asset ordered them (by the first
record of each content hash, then the part's own record), and the project's recompute function
for that valuation asset (`Recompute`, registered by the code location) runs the method. Its
values digest must equal both the digest the record signs (`details.digest`) and the digest of
the contributor values the record pays on. Sampled methods are listed as not recomputable;
a part whose bytes cannot be found is a failure of that record, never a silent pass.

A recompute function with a `from_record(record)` method reads the record's inputs itself:
`valuation_asset` registers one per valuation asset it builds (`register`), which reads the
content-addressed copies of the tables the run valued and checks them against the signed
digests (lineage_platform.dagster.valuation). A code location's own `valuation_recomputers`
win over registered ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lineage_platform.canonical import canonical_json
from lineage_platform.errors import LineageError
from lineage_platform.hashing import sha256_file
from lineage_platform.records import AttributionRecord
from lineage_platform.signing import Envelope
from lineage_platform.stores import Store

#: Methods whose values are a function of the data: KNN-Shapley is closed form; exact Shapley
#: trains one model per coalition, so it is as deterministic as the project's model factory
#: (the example's lbfgs logistic regression is; a model that is not shows up as a mismatch,
#: never as a pass). The signed seed is passed back to the method.
DETERMINISTIC = ("knn-shapley-rows", "exact-shapley")


class Recompute(Protocol):
    """A valuation asset's method run again: the signed details, each contributor's part file
    (by contributor id) and the order the asset used; returns the result (its `digest()`)."""

    def __call__(
        self, details: Mapping[str, Any], parts: Mapping[str, Path], order: Sequence[str]
    ) -> Any: ...


class RecomputeRecord(Protocol):
    """A valuation asset's method run again from what `record` names (its details, its
    inputs); returns the result (its `digest()`), or raises LineageError saying why not."""

    def from_record(self, record: AttributionRecord) -> Any: ...


#: Recompute functions registered by the factories that build valuation assets, by asset.
REGISTERED: dict[str, Recompute | RecomputeRecord] = {}


def register(asset: str, recompute: Recompute | RecomputeRecord) -> None:
    """Make `recompute` the way `verify --recompute` re-runs `asset`'s valuation records.

        register("model_valuation", recomputer)   # what valuation_asset does
    """
    REGISTERED[asset] = recompute


@dataclass(frozen=True, slots=True)
class Outcome:
    """One valuation record: `ok` True (values match), False (mismatch or data not found),
    None (not recomputable: a sampled method); `line` says which, naming the record."""

    log_index: int
    asset: str
    ok: bool | None
    line: str


def values_digest(values: Mapping[str, float]) -> str:
    """sha256 hex of `{contributor: value}` as canonical JSON (`ValuationResult.digest`)."""
    return hashlib.sha256(canonical_json(dict(values))).hexdigest()


def locate_part(project_dir: Path, part: AttributionRecord, sha256: str) -> tuple[Path | None, str]:
    """A file holding the bytes of `sha256`, from the part's DVC path or the DVC cache."""
    tried: list[Path] = []
    if part.dvc is not None:
        md5 = part.dvc.md5
        tried = [
            project_dir / part.dvc.path,
            project_dir / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:],
            project_dir / ".dvc" / "cache" / md5[:2] / md5[2:],
        ]
    for path in tried:
        if path.is_file() and sha256_file(path) == sha256:
            return path, ""
    where = ", ".join(str(p) for p in tried) or "the record names no DVC path"
    return None, f"looked in {where}"


def _records(store: Store) -> dict[int, AttributionRecord]:
    with store.snapshot() as view:
        envelopes = view.envelopes(("dataset", "valuation"))
    out: dict[int, AttributionRecord] = {}
    for idx, raw in envelopes:
        out[int(idx)] = AttributionRecord.from_bytes(Envelope.from_json(raw).payload)
    return out


def recompute_one(
    idx: int,
    record: AttributionRecord,
    records: Mapping[int, AttributionRecord],
    project_dir: Path,
    recompute: Recompute | RecomputeRecord | None,
) -> Outcome:
    name = f"valuation record {idx} ({record.asset})"

    def outcome(ok: bool | None, why: str) -> Outcome:
        return Outcome(idx, record.asset, ok, f"{name}: {why}")

    details = record.details_obj() or {}
    method = details.get("method")
    if method not in DETERMINISTIC:
        return outcome(None, f"not recomputed: method {method!r} samples (not deterministic)")
    if recompute is None:
        made_by_factory = "inputs" in details
        return outcome(False, "cannot be recomputed: the code location registers no recompute "
                              f"function for {record.asset}" + (
                                  " (no valuation_asset in the loaded code locations builds it)"
                                  if made_by_factory else ""))
    if hasattr(recompute, "from_record"):
        try:
            again = str(recompute.from_record(record).digest())
        except LineageError as exc:
            return outcome(False, f"cannot be recomputed: {exc}")
        return _compared(outcome, record, details, again, "its signed inputs")
    parts: dict[str, Path] = {}
    first: dict[str, tuple[int, int]] = {}
    for inp in record.inputs:
        part = records.get(inp.log_index) if inp.log_index is not None else None
        if part is None or part.kind != "dataset" or part.partition is None:
            continue  # the model record, or an input that is not a contributor's part
        found, looked = locate_part(project_dir, part, inp.sha256)
        if found is None:
            return outcome(False, f"the data of record {inp.log_index} ({part.asset}"
                                  f"[{part.partition}], sha256 {inp.sha256[:12]}…) was not "
                                  f"found ({looked})")
        parts[part.partition] = found
        earliest = min(i for i, r in records.items()
                       if r.asset == part.asset and r.sha256 == inp.sha256)
        first[part.partition] = (earliest, int(inp.log_index or 0))
    if not parts:
        return outcome(False, "cannot be recomputed: it names no contributor part among its inputs")
    order = sorted(parts, key=lambda c: first[c])
    try:
        result = recompute(details, parts, order)
        again = str(result.digest())
    except LineageError as exc:
        return outcome(False, f"cannot be recomputed: {exc}")
    return _compared(outcome, record, details, again, f"{len(parts)} parts")


def _compared(
    outcome: Callable[[bool | None, str], Outcome],
    record: AttributionRecord,
    details: Mapping[str, Any],
    again: str,
    source: str,
) -> Outcome:
    """The recomputed values digest against the signed one and the values the record pays."""
    method = details.get("method")
    signed = str(details.get("digest", "")).removeprefix("sha256:")
    paid = values_digest({c.id: c.value for c in record.contributors if c.value is not None})
    if again != signed:
        return outcome(False, f"the data gives values digest sha256:{again[:16]}…, the record "
                              f"signs sha256:{signed[:16]}…")
    if paid != again:
        return outcome(False, f"its contributor values (digest sha256:{paid[:16]}…) are not the "
                              f"values the data gives (sha256:{again[:16]}…)")
    return outcome(True, f"recomputed with {method} from {source}: values match "
                         f"(sha256:{again[:16]}…)")


def recompute_valuations(
    store: Store, project_dir: Path, recomputers: Mapping[str, Recompute]
) -> list[Outcome]:
    """One outcome per valuation record in the log, oldest first."""
    records = _records(store)
    chosen: dict[str, Recompute | RecomputeRecord] = {**REGISTERED, **recomputers}
    return [
        recompute_one(idx, rec, records, project_dir, chosen.get(rec.asset))
        for idx, rec in sorted(records.items())
        if rec.kind == "valuation"
    ]
