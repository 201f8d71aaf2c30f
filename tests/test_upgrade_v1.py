"""A log written by the code before the redesign (v1 records, schema 4) verifies with today's code.

The fixture (tests/fixtures/v1_log/, see its README) was written by the old code and is never
regenerated: each test works on a copy, so nothing here can change it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lineage_platform.attest import append_records
from lineage_platform.audit import export_bundle, verify_bundle, verify_store
from lineage_platform.errors import VerificationError
from lineage_platform.records import (
    PREDICATE_TYPE,
    PREDICATE_TYPE_V1,
    AttributionRecord,
    Contributor,
    InputRef,
    RunRef,
    utc_timestamp,
)
from lineage_platform.signing import Envelope, SigningKey, TrustStore
from lineage_platform.stores import Store, open_store

FIXTURE = Path(__file__).parent / "fixtures" / "v1_log"
RECORDS = 10  # what the old `lineage demo` logged: 6 parts, datanet, model, valuation, settlement


@pytest.fixture
def old_log(tmp_path: Path) -> Path:
    """A copy of the fixture, so that no test can touch the original."""
    copy = tmp_path / "v1_log"
    shutil.copytree(FIXTURE, copy)
    return copy


def old_trust(folder: Path) -> TrustStore:
    return TrustStore.load(folder / "trusted.json")


def duckdb_url(folder: Path) -> str:
    return f"duckdb://{folder / 'lineage.duckdb'}"


def records_of(store: Store) -> list[AttributionRecord]:
    table, _ = store.read_snapshot()
    envelopes = table.column("envelope").to_pylist()
    return [AttributionRecord.from_bytes(Envelope.from_json(e).payload) for e in envelopes]


def lineage(*args: str, cwd: Path) -> tuple[int, str, str]:
    """The `lineage` command in a subprocess (as an auditor runs it)."""
    done = subprocess.run(
        [sys.executable, "-m", "lineage_platform.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "LINEAGE_HOME": str(cwd / "home"),
             **{k: os.environ[k] for k in ("XDG_CONFIG_HOME", "XDG_STATE_HOME")}},
    )
    return done.returncode, done.stdout, done.stderr


def test_the_old_store_verifies_unchanged(old_log: Path) -> None:
    before = (old_log / "lineage.duckdb").read_bytes()
    store = open_store(duckdb_url(old_log))
    report = verify_store(store, old_trust(old_log))
    assert report.records == RECORDS and report.epochs == 1
    assert report.keyids == old_trust(old_log).keyids()
    records = records_of(store)
    assert {r.version for r in records} == {1}
    assert sum(r.run is not None for r in records) == RECORDS - 1  # all but the settlement
    assert (old_log / "lineage.duckdb").read_bytes() == before  # verify is read-only


def test_the_old_bundle_verifies_with_the_library_and_the_cli(old_log: Path) -> None:
    bundle, keys = old_log / "bundle", old_log / "trusted.json"
    report = verify_bundle(bundle, old_trust(old_log))
    assert report.records == RECORDS
    code, out, err = lineage(
        "verify", "--bundle", str(bundle), "--keys", str(keys), "--json", cwd=old_log
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["ok"] is True and result["records"] == RECORDS
    assert result["root"] == report.root_hex
    # A key the records were not signed with trusts none of them.
    stranger = TrustStore.of(SigningKey.generate())
    with pytest.raises(VerificationError, match="is not trusted"):
        verify_bundle(bundle, stranger)


def test_the_store_and_its_bundle_hold_the_same_bytes(old_log: Path) -> None:
    store = open_store(duckdb_url(old_log))
    out = old_log / "again"
    assert export_bundle(store, old_trust(old_log), out) == RECORDS
    exported = (out / "envelopes.jsonl").read_bytes()
    assert exported == (FIXTURE / "bundle" / "envelopes.jsonl").read_bytes()
    assert (out / "checkpoint.json").read_bytes() == (
        FIXTURE / "bundle" / "checkpoint.json"
    ).read_bytes()


def test_new_v2_records_append_to_the_old_log_and_the_mixed_log_verifies(old_log: Path) -> None:
    store = open_store(duckdb_url(old_log))
    old = records_of(store)
    key = SigningKey.generate()  # the old private key is not kept: a rotated signer
    trust = old_trust(old_log).with_key(key)
    model = next(i for i, r in enumerate(old) if r.kind == "model")
    assert old[model].run is not None
    cursor = store.source_cursor("dagster")
    assert cursor[old[model].asset] == old[model].run.event_id

    # The same Dagster event as a v1 record, now built as v2: the key is the same, so a
    # re-sync of the old log appends nothing and is told the old index.
    again = AttributionRecord(
        kind="model",
        asset=old[model].asset,
        sha256=old[model].sha256,
        recorded_at=utc_timestamp(),
        run=old[model].run,
    )
    assert again.version == 2 and again.idempotency_key() == old[model].idempotency_key()
    assert again.digest() != old[model].digest()
    # A new materialization from the new code, reading the old model by its log index.
    run = RunRef("dagster", "after-the-upgrade", max(cursor.values()) + 4)
    new = AttributionRecord(
        kind="dataset",
        asset="predictions",
        sha256="ab" * 32,
        recorded_at=utc_timestamp(),
        run=run,
        inputs=(InputRef(old[model].asset, old[model].sha256, model),),
        contributors=(Contributor("alice", rows=3, sha256="cd" * 32),),
    )
    result = append_records(store, key, [again, new])
    assert result.indices == (model, RECORDS) and result.appended == 1 and result.skipped == 1

    report = verify_store(store, trust)
    assert report.records == RECORDS + 1 and report.epochs == 1
    assert set(report.keyids) == set(trust.keyids())
    mixed = records_of(store)
    assert [r.version for r in mixed] == [1] * RECORDS + [2]
    assert mixed[:RECORDS] == old and mixed[RECORDS] == new
    assert store.source_cursor("dagster")["predictions"] == run.event_id

    out = old_log / "mixed"
    export_bundle(store, trust, out)
    lines = (out / "envelopes.jsonl").read_bytes().splitlines()
    old_lines = (FIXTURE / "bundle" / "envelopes.jsonl").read_bytes().splitlines()
    assert lines[:RECORDS] == old_lines  # the old records' bytes, exactly
    types = [json.loads(Envelope.from_json(x).payload)["predicateType"] for x in lines]
    assert types == [PREDICATE_TYPE_V1] * RECORDS + [PREDICATE_TYPE]
    assert verify_bundle(out).records == RECORDS + 1
    # Without the new key the new checkpoint (and record) is refused.
    with pytest.raises(VerificationError, match="is not trusted"):
        verify_bundle(out, old_trust(old_log))
