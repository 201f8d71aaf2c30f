"""The sync's seam: a source that is not Dagster (events in a JSONL file) through the same core.

Each line of the file is one event, as another orchestrator (or a script) would export it; the
source turns lines into `SourceEvent`s and the core does the rest: records signed once, inputs
resolved to their records' log indices, idempotent re-runs, a cursor that resumes from the log.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lineage_platform.audit import verify_store
from lineage_platform.errors import LineageError, RecordError
from lineage_platform.keys import KeyRing
from lineage_platform.records import AttributionRecord, Contributor, InputRef, RunRef
from lineage_platform.signing import Envelope, SigningKey
from lineage_platform.stores import Store, open_store
from lineage_platform.sync import (
    Cursor,
    InputPointer,
    Lineage,
    Skipped,
    Source,
    SourceEvent,
    SyncResult,
    sync,
)

T0 = 1_790_000_000.0


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class JsonlSource:
    """Events from a JSONL file: {"run", "id", "asset", "partition", "content", "kind",
    "contributors", "inputs": [{"asset", "partition", "content", "run", "id"}]}."""

    orchestrator = "files"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.calls = 0

    def events(self, after: Cursor, limit: int) -> Iterator[SourceEvent | Skipped]:
        self.calls += 1
        rows = [json.loads(line) for line in self.path.read_text().splitlines() if line]
        fresh = sorted(
            (r for r in rows if r["id"] > after.after.get(r["asset"], 0)), key=lambda r: r["id"]
        )
        for r in fresh[:limit]:
            if "content" not in r:  # the exporter could not say what the asset holds
                yield Skipped(r["asset"], r["id"], "no content digest")
                continue
            yield SourceEvent(
                orchestrator=self.orchestrator,
                run_id=r["run"],
                event_id=r["id"],
                asset=r["asset"],
                partition=r.get("partition"),
                sha256=sha(r["content"]),
                kind=r.get("kind", "dataset"),
                timestamp=T0 + r["id"],
                lineage=Lineage(
                    code_version="1",
                    contributors=tuple(Contributor(c) for c in r.get("contributors", [])),
                ),
                inputs=tuple(
                    InputPointer(
                        i["asset"],
                        i.get("partition"),
                        sha(i["content"]),
                        RunRef(self.orchestrator, i["run"], i["id"]) if "id" in i else None,
                    )
                    for i in r.get("inputs", [])
                ),
            )


def write(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("a", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def part(i: int, name: str, content: str) -> dict[str, Any]:
    return {"run": f"r{i}", "id": i, "asset": "parts", "partition": name, "content": content,
            "contributors": [name]}


# Three parts (b and c share content), a table that read all three, a model that read the table
# and a file no one records (content only), then a second table that names its input by content.
FIRST = [
    part(1, "a", "part a"),
    part(2, "b", "same part"),
    part(3, "c", "same part"),
    {"run": "r4", "id": 4, "asset": "table", "content": "table v1", "inputs": [
        {"asset": "parts", "partition": p, "content": c, "run": f"r{i}", "id": i}
        for i, p, c in ((1, "a", "part a"), (2, "b", "same part"), (3, "c", "same part"))
    ]},
    {"run": "r5", "id": 5, "asset": "model", "kind": "model", "content": "model v1", "inputs": [
        {"asset": "table", "content": "table v1", "run": "r4", "id": 4},
        {"asset": "labels.csv", "content": "labels"},
    ]},
]
LATER = [
    part(6, "a", "part a v2"),
    {"run": "r7", "id": 7, "asset": "table", "content": "table v2", "inputs": [
        {"asset": "parts", "partition": "a", "content": "part a v2", "run": "r6", "id": 6},
        {"asset": "parts", "partition": "c", "content": "same part"},  # by content only
    ]},
]


@pytest.fixture
def world(tmp_path: Path) -> tuple[JsonlSource, Store, SigningKey, KeyRing]:
    ring = KeyRing(tmp_path / "keys")
    ring.init(None)
    path = tmp_path / "events.jsonl"
    write(path, FIRST)
    return JsonlSource(path), open_store(tmp_path / "lineage.duckdb"), ring.signer(None), ring


def records(store: Store) -> list[AttributionRecord]:
    rows = store.entries().to_pylist()
    return [AttributionRecord.from_bytes(Envelope.from_json(bytes(r["envelope"])).payload)
            for r in rows]


def test_a_second_source_is_signed_once_with_its_inputs_resolved(
    world: tuple[JsonlSource, Store, SigningKey, KeyRing],
) -> None:
    source, store, signer, ring = world
    assert isinstance(source, Source)
    seen: list[SyncResult] = []
    result = sync(source, store, signer, limit=2, until_caught_up=True, on_batch=seen.append)
    assert (result.read, result.appended, result.skipped, result.has_more) == (5, 5, 0, False)
    assert [b.read for b in seen] == [2, 2, 1] and [b.has_more for b in seen] == [True, True, False]
    assert result.cursor.after == {"parts": 3, "table": 4, "model": 5}
    assert seen[-1].cursor == result.cursor

    logged = records(store)
    assert [r.run for r in logged] == [RunRef("files", f"r{i}", i) for i in range(1, 6)]
    assert result.indices == {f"files:r{i}:{i}": i - 1 for i in range(1, 6)}
    assert [r.idempotency_key() for r in logged] == list(result.indices)
    # b and c share content: each input names its own event's record, not the newest match.
    assert logged[3].inputs == (
        InputRef("parts", sha("part a"), 0),
        InputRef("parts", sha("same part"), 1),
        InputRef("parts", sha("same part"), 2),
    )
    assert logged[4].kind == "model"
    assert logged[4].inputs == (
        InputRef("table", sha("table v1"), 3),
        InputRef("labels.csv", sha("labels"), None),  # recorded nowhere: no index
    )
    assert [c.id for c in logged[0].contributors] == ["a"]
    assert logged[0].recorded_at == "2026-09-21T14:13:21.000000Z"
    verify_store(store, ring.trust())

    # Run again from the beginning (a lost cursor): nothing is signed twice.
    again = sync(source, store, signer, Cursor(), limit=10)
    assert (again.read, again.appended, again.skipped) == (5, 0, 5)
    assert again.indices == result.indices
    assert store.tree_size() == 5


def test_without_a_cursor_it_resumes_from_the_log(
    world: tuple[JsonlSource, Store, SigningKey, KeyRing],
) -> None:
    source, store, signer, ring = world
    sync(source, store, signer, limit=100)
    write(source.path, LATER)
    assert Cursor.of_store(store, "files").after == {"parts": 3, "table": 4, "model": 5}
    assert store.source_cursor("dagster") == {}  # another orchestrator's cursor is its own

    resumed = sync(source, store, signer)  # no cursor: the log's
    assert (resumed.read, resumed.appended, resumed.skipped) == (2, 2, 0)
    assert resumed.cursor.after == {"parts": 6, "table": 7, "model": 5}
    new_part, new_table = records(store)[5:]
    assert new_part.run == RunRef("files", "r6", 6)
    # One input read in this same batch (its record is appended first), one by content only:
    # the newest record of that content in that partition (c's, not b's).
    assert new_table.inputs == (
        InputRef("parts", sha("part a v2"), 5),
        InputRef("parts", sha("same part"), 2),
    )
    # The cursor a sensor stores round-trips.
    assert Cursor.parse(resumed.cursor.serialize()) == resumed.cursor
    nothing = sync(source, store, signer, Cursor.parse(resumed.cursor.serialize()))
    assert (nothing.read, nothing.appended, nothing.has_more) == (0, 0, False)
    verify_store(store, ring.trust())


def test_an_event_the_source_skips_is_not_signed_and_not_read_again(
    world: tuple[JsonlSource, Store, SigningKey, KeyRing],
) -> None:
    source, store, signer, ring = world
    write(source.path, [{"run": "r6", "id": 6, "asset": "report"}, part(7, "d", "part d"),
                        {"run": "r8", "id": 8, "asset": "report"}])
    batches: list[SyncResult] = []
    result = sync(source, store, signer, limit=3, until_caught_up=True, on_batch=batches.append)
    assert [(b.read, b.appended, b.unattributed, b.has_more) for b in batches] == [
        (3, 3, 0, True), (3, 2, 1, True), (2, 1, 1, False)
    ]
    assert (result.read, result.appended, result.unattributed) == (8, 6, 2)
    assert result.cursor.after["report"] == 8  # past the skipped events: not read again
    assert store.tree_size() == 6 and "report" not in {r.asset for r in records(store)}
    again = sync(source, store, signer, result.cursor)
    assert (again.read, again.appended, again.has_more) == (0, 0, False)
    verify_store(store, ring.trust())


def test_a_source_that_yields_a_reader_before_its_input_is_refused(
    world: tuple[JsonlSource, Store, SigningKey, KeyRing],
) -> None:
    source, store, signer, _ = world

    class Backwards:
        orchestrator = "files"

        def events(self, after: Cursor, limit: int) -> list[SourceEvent | Skipped]:
            return list(reversed(list(source.events(after, limit))))

    with pytest.raises(LineageError, match="files:r5:5 came before its input files:r4:4"):
        sync(Backwards(), store, signer)
    assert store.tree_size() == 0


def test_a_bad_event_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="sha256"):
        SourceEvent("files", "r1", 1, "parts", None, "not-a-digest", "dataset", T0)
    with pytest.raises(RecordError, match="kind"):
        SourceEvent("files", "r1", 1, "parts", None, sha("x"), "usage", T0)
    with pytest.raises(RecordError, match="orchestrator"):
        SourceEvent("sha256", "r1", 1, "parts", None, sha("x"), "dataset", T0)
    with pytest.raises(RecordError, match="sha256"):
        InputPointer("parts", None, "ABC")
    with pytest.raises(LineageError, match="unreadable"):
        Cursor.parse("{not json")
