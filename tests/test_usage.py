"""Usage events: bulk formats, refused amounts and ids, unknown models, replays, late events."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from lineage_platform import usage
from lineage_platform.allocation import Policy
from lineage_platform.errors import UsageError
from lineage_platform.settlement import settle
from lineage_platform.stores import Posting
from tests.ledger_world import EPOCH, NOW, World, events, make_world
from tests.storekit import dump, rows


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("usage-world"))


@pytest.fixture
def world(template: World, tmp_path: Path) -> World:
    return template.clone(tmp_path / "project")


CALLS = [("m_lineage", 10_000), ("m_valued", 1_000), ("m_zero", 100)]


def write(table: pa.Table, path: Path) -> Path:
    """The same events as Parquet, CSV, JSON lines or Arrow IPC, by suffix."""
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    elif path.suffix == ".csv":
        pcsv.write_csv(table, path)
    elif path.suffix == ".arrow":
        feather.write_feather(table, path)
    else:
        rows = table.to_pylist()
        with path.open("w") as fh:
            for row in rows:
                if isinstance(row.get("occurred_at"), datetime):
                    row["occurred_at"] = row["occurred_at"].isoformat()
                fh.write(json.dumps(row) + "\n")
    return path


def stored(world: World) -> list[tuple[object, ...]]:
    return rows(
        world.store,
        "SELECT event_id, model, caller, units, fee, occurred_at, epoch FROM usage_events "
        "ORDER BY event_id",
    )


def ledger(world: World, epoch: str) -> list[Posting]:
    with world.store.snapshot() as view:
        return view.ledger(epoch)


# ------------------------------------------------------------------ bulk formats


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl", ".arrow"])
def test_bulk_ingest_every_format(world: World, tmp_path: Path, suffix: str) -> None:
    path = write(events(EPOCH, CALLS), tmp_path / f"calls{suffix}")
    assert usage.ingest_files(world.store, [path]) == (3, 0)
    assert stored(world) == [
        ("e-0", "m_lineage", "acme", 1, 10_000, datetime(2026, 1, 5, 12, 0, 0), EPOCH),
        ("e-1", "m_valued", "acme", 1, 1_000, datetime(2026, 1, 5, 12, 0, 1), EPOCH),
        ("e-2", "m_zero", "acme", 1, 100, datetime(2026, 1, 5, 12, 0, 2), EPOCH),
    ]
    # The same file again is a replay of every event.
    assert usage.ingest_files(world.store, [path]) == (0, 3)
    assert world.count() == 3


def test_zoned_timestamps_land_in_their_utc_day(world: World) -> None:
    # 01:30 at UTC+02:00 on the 6th is 23:30 UTC on the 5th.
    zone = pa.timestamp("us", tz="+02:00")
    table = events(EPOCH, [("m_valued", 5)]).set_column(
        5, "occurred_at", pa.array([datetime(2026, 1, 5, 23, 30, tzinfo=UTC)], zone)
    )
    usage.ingest(world.store, usage.validate_events(table))
    assert stored(world)[0][5:] == (datetime(2026, 1, 5, 23, 30), EPOCH)


def test_events_without_time_or_id_get_now_and_a_content_key(world: World) -> None:
    table = pa.table({"model": ["m_valued"], "caller": ["acme"], "units": [2], "fee": [30]})
    now = datetime(2026, 1, 6, 8, tzinfo=UTC)
    assert usage.ingest(world.store, usage.validate_events(table, now=now)) == (1, 0)
    [(event_id, *_, occurred, epoch)] = stored(world)
    assert str(event_id).startswith("sha256:") and occurred == datetime(2026, 1, 6, 8)
    assert epoch == "2026-01-06"
    assert usage.ingest(world.store, usage.validate_events(table, now=now)) == (0, 1)


# ------------------------------------------------------------------ refused input


def amounts(fee: pa.Array, units: pa.Array | None = None) -> pa.Table:
    n = len(fee)
    return pa.table(
        {
            "model": ["m_valued"] * n,
            "caller": ["acme"] * n,
            "units": units if units is not None else pa.array([1] * n, pa.int64()),
            "fee": fee,
        }
    )


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (amounts(pa.array([5.0, 1.5])), r"fee: double values are refused"),
        (amounts(pa.array([5, -3], pa.int64())), r"fee: row 1 is negative"),
        (amounts(pa.array([5, None], pa.int64())), r"fee: row 1 is empty"),
        (amounts(pa.array([5, 2**63], pa.uint64())), r"fee: row 1 exceeds 2\^63-1"),
        (amounts(pa.array([1.0, 2.0**64])), r"fee: row 1 exceeds 2\^63-1"),
        (amounts(pa.array(["5", "7"])), r"fee: expected integers, got string"),
        (amounts(pa.array([True])), r"fee: expected integers, got bool"),
        (amounts(pa.array([5]), pa.array([0.5])), r"units: double values are refused"),
        (amounts(pa.array([5]), pa.array([-1])), r"units: row 0 is negative"),
    ],
)
def test_bad_amounts_are_refused(table: pa.Table, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        usage.validate_events(table)


CSV = "event_id,model,caller,units,fee\n"
JSON = '{"event_id":"e1","model":"m_valued","caller":"a","units":1,"fee":%s}\n'


@pytest.mark.parametrize(
    ("text", "suffix", "message"),
    [
        (CSV + "e1,m_valued,acme,1,1.5\n", ".csv", "fee: double values"),
        (CSV + "e1,m_valued,acme,1,-3\n", ".csv", "fee: row 0 is negative"),
        (CSV + "e1,m_valued,acme,1,1e3\n", ".csv", "fee: double values"),
        (CSV + "e1,m_valued,acme,1,\n", ".csv", "fee: row 0 is empty"),
        (
            CSV + "e1,m_valued,acme,1,5\ne2,m_valued,acme,1,9223372036854775808\n",
            ".csv",
            r"fee: row 1 exceeds 2\^63-1",
        ),
        (JSON % "null", ".jsonl", "fee: row 0 is empty"),
        (JSON % "2.5", ".jsonl", "fee: double values"),
        (JSON % "18446744073709551616", ".jsonl", r"fee: row 0 exceeds 2\^63-1"),
        (CSV[:-1] + ",zone\ne,m_valued,a,1,5,eu\n", ".csv", r"unknown column\(s\) zone"),
        ("model,caller,units,fee\nm_valued,a,1,5\n", ".csv", "needs an event_id or occurred_at"),
        ("event_id,model,caller,fee\ne,m_valued,a,5\n", ".csv", r"missing column\(s\) units"),
        ("not a table", ".xlsx", "unknown format"),
        ("[1, 2]", ".jsonl", "unreadable"),
    ],
)
def test_bad_files_are_refused_and_nothing_is_stored(
    world: World, tmp_path: Path, text: str, suffix: str, message: str
) -> None:
    good = write(events(EPOCH, CALLS), tmp_path / "good.parquet")
    bad = tmp_path / f"bad{suffix}"
    bad.write_text(text)
    with pytest.raises(UsageError, match=message) as info:
        usage.ingest_files(world.store, [good, bad])
    assert str(info.value).startswith(f"{bad}:")  # the message names the file
    assert world.count() == 0  # all files or none: good.parquet was not stored either


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("event_id", "call\x00-1"),
        ("event_id", "call\n1"),
        ("model", "m_valued\x1b[31m"),
        ("caller", "acme\r"),
        ("caller", "\x7f"),
        ("caller", ""),
    ],
)
def test_control_characters_and_empty_names_are_refused(
    world: World, column: str, value: str
) -> None:
    table = events(EPOCH, [("m_valued", 5), ("m_valued", 6)])
    table = table.set_column(
        table.column_names.index(column), column, pa.array([table.column(column)[0].as_py(), value])
    )
    with pytest.raises(UsageError, match=rf"{column}: row 1 "):
        usage.ingest(world.store, usage.validate_events(table))
    assert world.count() == 0


def test_unknown_model_is_refused_and_nothing_is_stored(world: World) -> None:
    usage.ingest(world.store, usage.validate_events(events(EPOCH, CALLS, prefix="first")))
    before = dump(world.store)
    mixed = events(EPOCH, [("m_valued", 5), ("gpt-unknown", 7), ("raw_a", 9)])
    with pytest.raises(UsageError) as info:
        usage.ingest(world.store, usage.validate_events(mixed))
    # a dataset is not a model: only signed model records can be metered
    assert str(info.value) == (
        "unknown model(s): gpt-unknown, raw_a (no signed model record in the log)"
    )
    assert dump(world.store) == before and world.count() == 3


@pytest.mark.parametrize(
    "text", ["1.5", "-3", "1e3", "", " 7", "+7", "0x10", "٣", "9223372036854775808"]
)
def test_cli_amounts_must_be_plain_integers(text: str) -> None:
    with pytest.raises(UsageError, match="fee: "):
        usage.parse_amount(text, "fee")


def test_cli_amounts_accept_digits_up_to_int64() -> None:
    assert usage.parse_amount("0", "fee") == 0
    assert usage.parse_amount("0075", "fee") == 75
    assert usage.parse_amount(str(2**63 - 1), "fee") == 2**63 - 1


# ------------------------------------------------------------------ replays


def test_replays_within_a_file_count_once_and_the_choice_is_stable(world: World) -> None:
    # Same id twice in one file with different content: the earliest wins, whatever the row order.
    table = events(EPOCH, [("m_valued", 5), ("m_valued", 6), ("m_zero", 7)])
    table = table.set_column(0, "event_id", pa.array(["dup", "dup", "solo"]))
    assert usage.ingest(world.store, usage.validate_events(table.take([2, 1, 0]))) == (2, 1)
    assert [(r[0], r[4]) for r in stored(world)] == [("dup", 5), ("solo", 7)]


def test_replays_across_files_count_once(world: World, tmp_path: Path) -> None:
    first = write(events(EPOCH, CALLS), tmp_path / "a.parquet")
    # b.csv replays e-1 and e-2 and adds e-3, e-4
    more = events(EPOCH, [*CALLS, ("m_valued", 11), ("m_valued", 12)]).slice(1)
    second = write(more, tmp_path / "b.csv")
    assert usage.ingest_files(world.store, [first, second]) == (5, 2)
    assert usage.ingest_files(world.store, [second, first]) == (0, 7)
    assert [r[0] for r in stored(world)] == ["e-0", "e-1", "e-2", "e-3", "e-4"]


def test_empty_ids_in_csv_mean_no_id(world: World, tmp_path: Path) -> None:
    path = tmp_path / "calls.csv"
    path.write_text(
        "event_id,model,caller,units,fee\n"
        ",m_valued,a,1,5\n,m_valued,b,1,5\nx,m_valued,a,1,5\n,m_valued,a,1,5\n"
    )
    # a blank id is keyed by content, so the last row repeats the first; it is not a third id ""
    assert usage.ingest_files(world.store, [path]) == (3, 1)
    ids = [str(r[0]) for r in stored(world)]
    assert ids[-1] == "x" and all(i.startswith("sha256:") for i in ids[:2])


def test_identical_events_without_ids_count_once(world: World) -> None:
    table = events(EPOCH, [("m_valued", 5), ("m_valued", 6)]).drop_columns(["event_id"])
    doubled = pa.concat_tables([table, table])
    assert usage.ingest(world.store, usage.validate_events(doubled)) == (2, 2)
    assert usage.ingest(world.store, usage.validate_events(table)) == (0, 2)


# ------------------------------------------------------------------ late events


def test_late_events_for_a_settled_epoch_go_to_the_next_open_one(world: World) -> None:
    usage.ingest(world.store, usage.validate_events(events(EPOCH, CALLS)))
    [first] = settle(world.store, world.key, Policy.default(), NOW)
    settled = ledger(world, EPOCH)
    late = pa.concat_tables(
        [
            events(EPOCH, [("m_valued", 40)], prefix="late", hour=23),  # the settled day
            events("2026-01-02", [("m_valued", 50)], prefix="older"),  # before it
            events("2026-01-09", [("m_valued", 60)], prefix="future"),  # still open
        ]
    )
    assert usage.ingest(world.store, usage.validate_events(late)) == (3, 0)
    epochs = {str(r[0]): str(r[6]) for r in stored(world)}
    assert epochs["late-0"] == epochs["older-0"] == "2026-01-06"
    assert epochs["future-0"] == "2026-01-09"
    assert world.store.open_epochs() == [("2026-01-06", 2, 90), ("2026-01-09", 1, 60)]

    statements = settle(world.store, world.key, Policy.default(), NOW)
    assert [s.epoch for s in statements] == ["2026-01-06"]  # 2026-01-09 is not closed at NOW
    assert statements[0].fees_total == 90
    assert ledger(world, EPOCH) == settled and settled
    again = settle(world.store, world.key, Policy.default(), NOW, EPOCH)
    assert again[0].root == first.root and again[0].already_settled


# ------------------------------------------------------------------ the CLI


def test_cli_usage_record(world: World) -> None:
    args = ["usage", "record", "--model", "m_valued", "--caller", "acme", "--fee", "75"]
    done = world.cli(*args, "--id", "call-1", check=True)
    assert done.stdout == "recorded\n"
    done = world.cli(*args, "--id", "call-1", check=True)  # an exact replay: quiet, rc 0
    assert done.stdout == "already recorded (replay ignored)\n"
    done = world.cli(*args, "--id", "call-1", "--units", "3")  # another body: a conflict
    assert done.returncode == 16 and done.stderr.startswith("error: 1 event(s) reuse an id")
    assert done.stderr.count("\n") == 1
    assert rows(world.store, "SELECT event_id, units, fee FROM usage_events") == [
        ("call-1", 1, 75)
    ]
    [conflict] = world.store.usage_conflicts()
    assert (conflict.event_id, conflict.units, conflict.kept) == ("call-1", 3, "m_valued|acme|1|75")
    now = datetime.now(UTC)
    days = {now.strftime("%Y-%m-%d"), (now - timedelta(minutes=1)).strftime("%Y-%m-%d")}
    assert rows(world.store, "SELECT epoch FROM usage_events")[0][0] in days


def test_cli_usage_record_refuses_bad_input_with_one_line(world: World) -> None:
    base = {"--model": "m_valued", "--caller": "acme", "--fee": "75", "--units": "1"}
    cases = [
        ({"--fee": "1.5"}, "fee: '1.5' is not a non-negative integer"),
        ({"--fee": "-3"}, "fee: '-3' is not a non-negative integer"),
        ({"--units": "1e3"}, "units: '1e3' is not a non-negative integer"),
        ({"--model": "nope"}, "unknown model(s): nope (no signed model record in the log)"),
        ({"--caller": "ac\x1bme"}, "caller: row 0 is empty or has control characters"),
        ({"--id": "x\ty"}, "event_id: row 0 has control characters"),
    ]
    procs = []
    for change, _ in cases:
        argv: list[str] = []
        for flag, value in {**base, **change}.items():
            argv += [flag, value]
        procs.append(
            subprocess.Popen(
                [*world.cli_argv("usage", "record"), *argv],
                env=world.env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc, (_, message) in zip(procs, cases, strict=True):
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 12, stderr
        assert stdout == "" and stderr.startswith(f"error: {message}")
        assert stderr.count("\n") == 1 and stderr.endswith("\n")  # one line, no traceback
    assert world.count() == 0
