"""Usage events carrying a call's input and served output (issue 18): what is taken, what is
refused (row named), and inputs given by reference to a batch file."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lineage_platform import usage
from lineage_platform.errors import UsageError
from tests.ledger_world import EPOCH, NOW, World, events, make_world


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path / "w")


def base(n: int) -> pa.Table:
    return events(EPOCH, [("m_valued", 10 + i) for i in range(n)])


@pytest.mark.parametrize(
    ("inputs", "outputs", "message"),
    [
        ([[1.0, float("nan")]], ["1"], "input: row 0 has a number that is not finite"),
        ([[1.0, float("inf")]], ["1"], "input: row 0 has a number that is not finite"),
        ([[1.0, None]], ["1"], "input: row 0 has a number that is not finite"),
        ([[]], ["1"], f"input: row 0 must have 1 to {usage.MAX_INPUT_DIM} numbers"),
        ([[0.5] * (usage.MAX_INPUT_DIM + 1)], ["1"], "input: row 0 must have 1 to"),
        ([[1.0]], [None], "output: row 0 is empty (a call with an input needs the label"),
        ([[1.0]], ["a\x07b"], "output: row 0 has control characters"),
        ([[1.0]], ["x" * 257], "output: row 0 is longer than 256 characters"),
    ],
)
def test_bad_inputs_and_outputs_are_refused_naming_the_row(
    inputs: list[list[float | None]], outputs: list[str | None], message: str
) -> None:
    table = base(1).append_column("input", pa.array(inputs, pa.list_(pa.float64())))
    table = table.append_column("output", pa.array(outputs, pa.string()))
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        usage.validate_events(table, now=NOW)


def test_one_length_per_model_within_a_batch() -> None:
    table = base(2).append_column("input", pa.array([[1.0, 2.0], [1.0]], pa.list_(pa.float64())))
    table = table.append_column("output", pa.array(["1", "1"]))
    screened = usage.screen_events(table, now=NOW)
    assert screened.refused == 1
    assert str(screened.refusals[0]) == "input: row 1 has 1 numbers, its model's inputs 2"


def test_integer_inputs_and_numeric_outputs_are_taken_as_float64_and_text() -> None:
    table = base(2).append_column("input", pa.array([[1, 2], None], pa.list_(pa.int64())))
    table = table.append_column("output", pa.array([7, None], pa.int64()))
    got = usage.validate_events(table, now=NOW)
    assert got.column("call_input").to_pylist() == [struct.pack("<2d", 1.0, 2.0), None]
    assert got.column("call_output").to_pylist() == ["7", None]


def test_csv_inputs_are_json_lists_and_refs_name_a_batch_row(world: World, tmp_path: Path) -> None:
    folder = tmp_path / "calls"
    folder.mkdir()
    (folder / "calls.csv").write_text(
        "event_id,model,caller,units,fee,occurred_at,input,output\n"
        f'c-0,m_valued,acme,1,5,{EPOCH}T10:00:00,"[0.25, 2]",3\n'
        f"c-1,m_valued,acme,1,5,{EPOCH}T10:00:01,,\n"
        f'c-2,m_valued,acme,1,5,{EPOCH}T10:00:02,"[1, ""a""]",3\n',
        encoding="utf-8",
    )
    batch = usage.ingest_batch(world.store, [folder / "calls.csv"], strict=False, now=NOW)
    assert batch.ingested.inserted == 2
    assert [str(r) for r in batch.refusals] == [
        f"{folder / 'calls.csv'}: input: row 2 is not a JSON list of numbers"]
    np.save(folder / "batch.npy", np.array([[0.0, 1.0], [2.0, 3.0]]))
    pq.write_table(pa.table({"a": [4.0], "b": [5]}), folder / "batch.parquet")
    refs = pa.table({
        "event_id": ["r-0", "r-1", "r-2", "r-3"], "model": ["m_valued"] * 4,
        "caller": ["acme"] * 4, "units": [1] * 4, "fee": [1] * 4,
        "occurred_at": [f"{EPOCH}T11:00:0{i}" for i in range(4)],
        "input_ref": ["batch.npy#1", "batch.parquet#0", "batch.npy#9", "../x.npy#0"],
        "output": ["1", "1", "1", "1"],
    })
    pq.write_table(refs, folder / "refs.parquet")
    batch = usage.ingest_batch(world.store, [folder / "refs.parquet"], strict=False, now=NOW)
    assert batch.ingested.inserted == 2
    reasons = [str(r).split(": ", 1)[1] for r in batch.refusals]
    assert reasons == ["input_ref: row 2 batch.npy has no row 9",
                       "input_ref: row 3 ../x.npy#0 is not <file beside it>#<row>"]
    with world.store.snapshot() as view:
        calls = {e: b for e, b in zip(view.calls(EPOCH).column("event_id").to_pylist(),
                                      view.calls(EPOCH).column("call_input").to_pylist(),
                                      strict=True)}
    assert calls["r-0"] == struct.pack("<2d", 2.0, 3.0)
    assert calls["r-1"] == struct.pack("<2d", 4.0, 5.0)
    assert calls["c-0"] == struct.pack("<2d", 0.25, 2.0) and calls["c-1"] is None
    # The model now takes inputs of 2 numbers: a later file with 3 is refused at screening.
    longer = refs.slice(0, 1).set_column(6, "input_ref", pa.array(["batch3.npy#0"]))
    np.save(folder / "batch3.npy", np.zeros((1, 3)))
    pq.write_table(longer.set_column(0, "event_id", pa.array(["z-0"])), folder / "z.parquet")
    with pytest.raises(UsageError, match="input: row 0 has 3 numbers, its model's inputs 2"):
        usage.ingest_batch(world.store, [folder / "z.parquet"], now=NOW)
