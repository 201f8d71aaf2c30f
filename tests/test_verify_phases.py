"""`check_records` parses a chunk's envelopes before it checks their signatures (verify's hot
path); it must still name the same first failure, with the same message, as checking each
envelope in turn would: the signature before anything the payload says, the lower index first."""

from __future__ import annotations

import base64
import json
import random

import pytest

from lineage_platform.attest import sign_records
from lineage_platform.errors import VerificationError
from lineage_platform.records import AttributionRecord, Contributor, RunRef
from lineage_platform.signing import SigningKey, TrustStore, sign_envelope
from lineage_platform.verify import PHASE, check_envelope, check_records

KEY = SigningKey.generate()
OTHER = SigningKey.generate()
TRUST = TrustStore.of(KEY)
N = PHASE * 2 + 17  # three phases, the last one short


def record(i: int) -> AttributionRecord:
    return AttributionRecord(
        "dataset",
        "datanet/part",
        sha256=f"{i:064x}",
        recorded_at="2026-11-24T20:00:00.123456Z",
        run=RunRef("dagster", "run-1", i),
        contributors=(Contributor("alice", rows=i),),
    )


GOOD = [entry.envelope for entry in sign_records([record(i) for i in range(N)], KEY)]


def bad_signature(i: int) -> bytes:
    """The envelope's layout kept, one bit of its signature flipped."""
    env = json.loads(GOOD[i])
    sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    sig[7] ^= 1
    env["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    return json.dumps(env, separators=(",", ":")).encode()


def bad_payload(i: int) -> bytes:
    """Signed by the trusted key, but not a canonical record."""
    pretty = json.dumps(json.loads(record(i).to_bytes()), indent=1).encode()
    return sign_envelope(pretty, KEY).to_json()


def untrusted(i: int) -> bytes:
    return sign_envelope(record(i).to_bytes(), OTHER).to_json()


def both(i: int) -> bytes:
    """A payload that is no record, and a signature that does not verify."""
    env = json.loads(bad_payload(i))
    env["signatures"][0]["sig"] = json.loads(bad_signature(i))["signatures"][0]["sig"]
    return json.dumps(env, separators=(",", ":")).encode()


def garbled(i: int) -> bytes:
    return GOOD[i][:-3]


TAMPERS = [bad_signature, bad_payload, untrusted, both, garbled]


def first_failure_in_turn(envelopes: list[bytes]) -> tuple[str, int | None] | None:
    for i, data in enumerate(envelopes):
        try:
            check_envelope(i, data, TRUST)
        except VerificationError as exc:
            return str(exc), exc.index
    return None


def test_an_untampered_chunk_checks_as_each_envelope_does() -> None:
    done = check_records(0, GOOD, None, TRUST)
    assert done.columns is not None
    in_turn = [check_envelope(i, e, TRUST) for i, e in enumerate(GOOD)]
    assert done.columns.leaf_hash == [c.leaf_hash for c in in_turn]
    assert done.columns.idem_key == [f"dagster:run-1:{i}" for i in range(N)]


def test_a_record_with_both_faults_is_named_for_its_signature() -> None:
    envelopes = list(GOOD)
    envelopes[5] = both(5)
    with pytest.raises(VerificationError, match=r"^record 5: signature does not verify") as exc:
        check_records(0, envelopes, None, TRUST)
    assert exc.value.index == 5


@pytest.mark.parametrize("seed", range(12))
def test_the_first_failure_is_the_one_checking_in_turn_names(seed: int) -> None:
    rng = random.Random(seed)
    envelopes = list(GOOD)
    # Faults on both sides of a phase boundary, the later one found first by a parse.
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(N)
        envelopes[i] = rng.choice(TAMPERS)(i)
    expected = first_failure_in_turn(envelopes)
    assert expected is not None
    with pytest.raises(VerificationError) as exc:
        check_records(0, envelopes, None, TRUST)
    assert (str(exc.value), exc.value.index) == expected
    # The same chunk starting later in the log: indices are the log's.
    with pytest.raises(VerificationError) as later:
        check_records(1000, envelopes, None, TRUST)
    assert later.value.index == 1000 + (expected[1] or 0)


def test_a_signature_fault_after_a_parse_fault_in_the_same_phase_is_not_named_first() -> None:
    envelopes = list(GOOD)
    envelopes[PHASE + 3] = bad_payload(PHASE + 3)
    envelopes[PHASE + 9] = bad_signature(PHASE + 9)
    with pytest.raises(VerificationError, match=rf"^record {PHASE + 3}: "):
        check_records(0, envelopes, None, TRUST)
    envelopes[PHASE + 1] = bad_signature(PHASE + 1)
    with pytest.raises(VerificationError, match=rf"^record {PHASE + 1}: signature does not"):
        check_records(0, envelopes, None, TRUST)
