"""The spool on a real DuckDB store: what producers write is what `drain` ingests, once."""

from __future__ import annotations

from pathlib import Path

from lineage_platform.attest import append_records
from lineage_platform.records import AttributionRecord, utc_timestamp
from lineage_platform.signing import SigningKey
from lineage_platform.spool import SpoolWriter, drain
from lineage_platform.stores import Store, open_store

MODEL = "spool_model"


def _store(tmp_path: Path) -> Store:
    store = open_store(tmp_path / "lineage.duckdb")
    record = AttributionRecord(
        kind="model", asset=MODEL, sha256="2" * 64, recorded_at=utc_timestamp(), inputs=()
    )
    append_records(store, SigningKey.generate(), [record])
    return store


def test_spooled_events_are_drained_once_and_a_bad_file_is_set_aside(tmp_path: Path) -> None:
    store, spool = _store(tmp_path), tmp_path / "spool"
    with SpoolWriter(spool) as writer:
        for i in range(5):
            writer.record(MODEL, "acme", 1, 7 + i, f"call-{i}")
    with SpoolWriter(spool) as writer:
        writer.record("no_such_model", "acme", 1, 9, "stray")
        writer.record(MODEL, "acme", 1, 9, "call-0")  # a replay, in the rejected file

    first = drain(store, spool)
    assert (first.inserted, first.replays) == (5, 0)
    assert len(first.rejected) == 1 and "no_such_model" in first.rejected[0]
    assert store.usage_count() == 5
    # Nothing is lost: the refused file waits in rejected/ with its reason beside it.
    rejected = spool / "rejected"
    assert len(list(rejected.glob("*.reason"))) == 1
    assert sum(1 for p in rejected.iterdir() if not p.name.endswith(".reason")) == 1

    with SpoolWriter(spool) as writer:
        writer.record(MODEL, "acme", 1, 7, "call-0")  # the same call again
    again = drain(store, spool)
    assert (again.inserted, again.replays, again.rejected) == (0, 1, ())
    assert store.usage_count() == 5


def test_a_torn_last_line_keeps_every_complete_event(tmp_path: Path) -> None:
    store, spool = _store(tmp_path), tmp_path / "spool"
    with SpoolWriter(spool) as writer:
        writer.record(MODEL, "acme", 1, 7, "whole-1")
        writer.record(MODEL, "acme", 1, 7, "whole-2")
    [ready] = sorted(spool.glob("*.ready.jsonl"))
    with ready.open("a", encoding="utf-8") as fh:
        fh.write('{"event_id": "torn", "model": "spool_')
    result = drain(store, spool)
    assert (result.inserted, result.rejected) == (2, ())
    assert store.usage_count() == 2
