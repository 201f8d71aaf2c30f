"""Merkle log: hand-built trees, RFC 6962/9162 vectors, every proof, tampering, checkpoints."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lineage_platform.errors import ProofError, RecordError, SignatureError
from lineage_platform.log import (
    EMPTY_ROOT,
    Checkpoint,
    CompactRange,
    SignedCheckpoint,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    microbenchmark,
    node_hash,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)
from lineage_platform.signing import SigningKey, TrustStore


def leaves_of(n: int, salt: bytes = b"") -> list[bytes]:
    return [leaf_hash(salt + i.to_bytes(4, "big")) for i in range(n)]


def roots_of(leaves: list[bytes]) -> list[bytes]:
    """roots[n] = root of the first n leaves, via the compact range."""
    cr = CompactRange()
    roots = [cr.root()]
    for leaf in leaves:
        cr.append(leaf)
        roots.append(cr.root())
    return roots


def flip(h: bytes, bit: int) -> bytes:
    b = bytearray(h)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


# --- hashing --------------------------------------------------------------------------------------


def test_hash_prefixes() -> None:
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()
    assert node_hash(a, b) != node_hash(b, a)


def test_hand_worked_trees_0_to_9() -> None:
    l0, l1, l2, l3, l4, l5, l6, l7, l8 = leaves_of(9)
    n = node_hash
    expected = [
        EMPTY_ROOT,
        l0,
        n(l0, l1),
        n(n(l0, l1), l2),
        n(n(l0, l1), n(l2, l3)),
        n(n(n(l0, l1), n(l2, l3)), l4),
        n(n(n(l0, l1), n(l2, l3)), n(l4, l5)),
        n(n(n(l0, l1), n(l2, l3)), n(n(l4, l5), l6)),
        n(n(n(l0, l1), n(l2, l3)), n(n(l4, l5), n(l6, l7))),
        n(n(n(n(l0, l1), n(l2, l3)), n(n(l4, l5), n(l6, l7))), l8),
    ]
    leaves = [l0, l1, l2, l3, l4, l5, l6, l7, l8]
    for size, root in enumerate(expected):
        assert root_from_leaves(leaves[:size]) == root, size
        cr = CompactRange()
        cr.extend(leaves[:size])
        assert cr.root() == root, size
        assert cr.size == size


# Certificate Transparency reference data (RFC 6962 test vectors, as used by transparency-dev).
CT_DATA = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
CT_CONSISTENCY = [
    (
        2,
        8,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CT_LEAVES = [leaf_hash(d) for d in CT_DATA]


def test_ct_reference_roots() -> None:
    for size in range(len(CT_ROOTS)):
        assert root_from_leaves(CT_LEAVES[:size]).hex() == CT_ROOTS[size]


@pytest.mark.parametrize(("index", "size", "proof"), CT_INCLUSION)
def test_ct_reference_inclusion(index: int, size: int, proof: list[str]) -> None:
    assert [p.hex() for p in inclusion_proof(CT_LEAVES, index, size)] == proof
    root = bytes.fromhex(CT_ROOTS[size])
    verify_inclusion(CT_LEAVES[index], index, size, [bytes.fromhex(p) for p in proof], root)


@pytest.mark.parametrize(("old", "new", "proof"), CT_CONSISTENCY)
def test_ct_reference_consistency(old: int, new: int, proof: list[str]) -> None:
    assert [p.hex() for p in consistency_proof(CT_LEAVES, old, new)] == proof
    old_root, new_root = bytes.fromhex(CT_ROOTS[old]), bytes.fromhex(CT_ROOTS[new])
    verify_consistency(old, new, old_root, new_root, [bytes.fromhex(p) for p in proof])


# --- compact range --------------------------------------------------------------------------------


def test_compact_range_matches_root_for_every_size_to_300() -> None:
    leaves = leaves_of(300)
    cr = CompactRange()
    assert cr.root() == EMPTY_ROOT
    for size in range(1, 301):
        cr.append(leaves[size - 1])
        assert cr.root() == root_from_leaves(leaves[:size]), size
        assert len(cr.to_hashes()) == size.bit_count()
        restored = CompactRange.from_hashes(size, cr.to_hashes())
        assert restored == cr and restored.root() == cr.root()


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 70), max_size=6))
def test_compact_range_batches_restore_and_continue(batches: list[int]) -> None:
    """`extend` hashes whole subtrees at once: the frontier must be the leaf-by-leaf one."""
    leaves = leaves_of(sum(batches), b"batch")
    cr = CompactRange()
    one_by_one = CompactRange()
    done = 0
    for n in batches:
        cr = CompactRange.from_hashes(cr.size, cr.to_hashes())  # as the store persists it
        cr.extend(leaves[done : done + n])
        for leaf in leaves[done : done + n]:
            one_by_one.append(leaf)
        done += n
        assert cr.size == done
        assert cr.root() == root_from_leaves(leaves[:done])
        assert cr == one_by_one


def test_compact_range_extend_names_the_bad_leaf() -> None:
    cr = CompactRange()
    cr.extend(leaves_of(5))
    with pytest.raises(ProofError, match="leaf 7"):
        cr.extend([*leaves_of(2), b"x" * 31])
    assert cr.size == 5  # nothing was added


def test_compact_range_rejects_bad_state() -> None:
    with pytest.raises(ProofError, match="needs 2 hashes, got 1"):
        CompactRange.from_hashes(3, [EMPTY_ROOT])
    with pytest.raises(ProofError, match="non-negative"):
        CompactRange.from_hashes(-1, [])
    with pytest.raises(ProofError, match="32-byte hash"):
        CompactRange.from_hashes(1, [b"short"])
    with pytest.raises(ProofError, match="leaf 0"):
        CompactRange().append(b"x" * 31)
    a = CompactRange()
    b = a.copy()
    a.append(EMPTY_ROOT)
    assert b.size == 0 and a != b


def test_root_from_leaves_validates_hashes() -> None:
    with pytest.raises(ProofError, match="leaf 1"):
        root_from_leaves([EMPTY_ROOT, b"abc"])


# --- proofs: exhaustive small trees ---------------------------------------------------------------

SMALL = leaves_of(33, b"small")
SMALL_ROOTS = roots_of(SMALL)


def test_all_inclusion_proofs_up_to_33_verify_and_pin_their_position() -> None:
    for size in range(1, 34):
        for index in range(size):
            proof = inclusion_proof(SMALL, index, size)
            verify_inclusion(SMALL[index], index, size, proof, SMALL_ROOTS[size])
            if size <= 9:
                for other in range(size):
                    if other != index:
                        with pytest.raises(ProofError):
                            verify_inclusion(SMALL[index], other, size, proof, SMALL_ROOTS[size])
                for other_size in range(index + 1, 12):
                    if other_size != size:
                        with pytest.raises(ProofError):
                            verify_inclusion(
                                SMALL[index], index, other_size, proof, SMALL_ROOTS[other_size]
                            )


def test_all_consistency_proofs_up_to_33_verify() -> None:
    for new in range(0, 34):
        for old in range(0, new + 1):
            proof = consistency_proof(SMALL, old, new)
            verify_consistency(old, new, SMALL_ROOTS[old], SMALL_ROOTS[new], proof)
            if 0 < old < new <= 9:
                for other_old in range(1, new):
                    if other_old != old:
                        with pytest.raises(ProofError):
                            verify_consistency(
                                other_old, new, SMALL_ROOTS[other_old], SMALL_ROOTS[new], proof
                            )


def test_every_bit_flip_in_small_proofs_is_caught() -> None:
    for size in range(1, 10):
        root = SMALL_ROOTS[size]
        for index in range(size):
            proof = inclusion_proof(SMALL, index, size)
            for bit in range(256):
                with pytest.raises(ProofError):
                    verify_inclusion(flip(SMALL[index], bit), index, size, proof, root)
                with pytest.raises(ProofError):
                    verify_inclusion(SMALL[index], index, size, proof, flip(root, bit))
                for k in range(len(proof)):
                    bad = [*proof[:k], flip(proof[k], bit), *proof[k + 1 :]]
                    with pytest.raises(ProofError):
                        verify_inclusion(SMALL[index], index, size, bad, root)
        for old in range(1, size):
            proof = consistency_proof(SMALL, old, size)
            for bit in range(0, 256, 7):
                with pytest.raises(ProofError):
                    verify_consistency(old, size, flip(SMALL_ROOTS[old], bit), root, proof)
                with pytest.raises(ProofError):
                    verify_consistency(old, size, SMALL_ROOTS[old], flip(root, bit), proof)
                for k in range(len(proof)):
                    bad = [*proof[:k], flip(proof[k], bit), *proof[k + 1 :]]
                    with pytest.raises(ProofError):
                        verify_consistency(old, size, SMALL_ROOTS[old], root, bad)


def test_proof_edge_cases() -> None:
    root5 = SMALL_ROOTS[5]
    proof = inclusion_proof(SMALL, 2, 5)
    with pytest.raises(ProofError, match="index out of range"):
        verify_inclusion(SMALL[2], 5, 5, proof, root5)
    with pytest.raises(ProofError, match="index out of range"):
        verify_inclusion(SMALL[2], -1, 5, proof, root5)
    with pytest.raises(ProofError, match="too short"):
        verify_inclusion(SMALL[2], 2, 5, proof[:-1], root5)
    with pytest.raises(ProofError, match="too long"):
        verify_inclusion(SMALL[2], 2, 5, [*proof, EMPTY_ROOT], root5)
    with pytest.raises(ProofError, match="32-byte hash"):
        verify_inclusion(SMALL[2], 2, 5, [proof[0][:31], *proof[1:]], root5)
    with pytest.raises(ProofError, match="not in a tree of size 5"):
        inclusion_proof(SMALL, 5, 5)
    with pytest.raises(ProofError, match="exceeds the 33 leaves"):
        inclusion_proof(SMALL, 0, 34)
    with pytest.raises(ProofError, match="old 6 <= new 5"):
        consistency_proof(SMALL, 6, 5)
    with pytest.raises(ProofError, match="exceeds"):
        consistency_proof(SMALL, 1, 34)
    assert inclusion_proof(SMALL, 0, 1) == []
    verify_inclusion(SMALL[0], 0, 1, [], SMALL[0])

    # Degenerate consistency cases.
    r4 = SMALL_ROOTS[4]
    verify_consistency(4, 4, r4, r4, [])
    verify_consistency(0, 8, EMPTY_ROOT, SMALL_ROOTS[8], [])
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    with pytest.raises(ProofError, match="roots differ"):
        verify_consistency(4, 4, r4, SMALL_ROOTS[5], [])
    with pytest.raises(ProofError, match="must be empty"):
        verify_consistency(4, 4, r4, r4, [r4])
    with pytest.raises(ProofError, match="empty-tree root"):
        verify_consistency(0, 8, SMALL_ROOTS[1], SMALL_ROOTS[8], [])
    with pytest.raises(ProofError, match="must be empty"):
        verify_consistency(0, 8, EMPTY_ROOT, SMALL_ROOTS[8], [EMPTY_ROOT])
    with pytest.raises(ProofError, match="out of order"):
        verify_consistency(8, 6, SMALL_ROOTS[8], SMALL_ROOTS[6], [])
    with pytest.raises(ProofError, match="proof is empty"):
        verify_consistency(6, 8, SMALL_ROOTS[6], SMALL_ROOTS[8], [])
    proof = consistency_proof(SMALL, 6, 8)
    with pytest.raises(ProofError):
        verify_consistency(6, 8, SMALL_ROOTS[6], SMALL_ROOTS[8], proof[:-1])
    with pytest.raises(ProofError, match="too long"):
        verify_consistency(6, 8, SMALL_ROOTS[6], SMALL_ROOTS[8], [*proof, EMPTY_ROOT])
    if len(proof) >= 2:
        swapped = [proof[1], proof[0], *proof[2:]]
        with pytest.raises(ProofError):
            verify_consistency(6, 8, SMALL_ROOTS[6], SMALL_ROOTS[8], swapped)


# --- proofs: random trees -------------------------------------------------------------------------

BIG = leaves_of(200, b"big")
BIG_ROOTS = roots_of(BIG)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_random_inclusion_proofs(data: st.DataObject) -> None:
    size = data.draw(st.integers(1, 200), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    root = BIG_ROOTS[size]
    proof = inclusion_proof(BIG, index, size)
    verify_inclusion(BIG[index], index, size, proof, root)

    bit = data.draw(st.integers(0, 255), label="bit")
    with pytest.raises(ProofError):
        verify_inclusion(flip(BIG[index], bit), index, size, proof, root)
    with pytest.raises(ProofError):
        verify_inclusion(BIG[index], index, size, proof, flip(root, bit))
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1), label="element")
        bad = [*proof[:k], flip(proof[k], bit), *proof[k + 1 :]]
        with pytest.raises(ProofError):
            verify_inclusion(BIG[index], index, size, bad, root)
    if size > 1:
        wrong = data.draw(st.integers(0, size - 1).filter(lambda i: i != index), label="wrong")
        with pytest.raises(ProofError):
            verify_inclusion(BIG[index], wrong, size, proof, root)
    other = data.draw(st.integers(index + 1, 200).filter(lambda s: s != size), label="size2")
    with pytest.raises(ProofError):
        verify_inclusion(BIG[index], index, other, proof, BIG_ROOTS[other])


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_random_consistency_proofs(data: st.DataObject) -> None:
    new = data.draw(st.integers(2, 200), label="new")
    old = data.draw(st.integers(1, new - 1), label="old")
    proof = consistency_proof(BIG, old, new)
    verify_consistency(old, new, BIG_ROOTS[old], BIG_ROOTS[new], proof)

    bit = data.draw(st.integers(0, 255), label="bit")
    with pytest.raises(ProofError):
        verify_consistency(old, new, flip(BIG_ROOTS[old], bit), BIG_ROOTS[new], proof)
    with pytest.raises(ProofError):
        verify_consistency(old, new, BIG_ROOTS[old], flip(BIG_ROOTS[new], bit), proof)
    k = data.draw(st.integers(0, len(proof) - 1), label="element")
    bad = [*proof[:k], flip(proof[k], bit), *proof[k + 1 :]]
    with pytest.raises(ProofError):
        verify_consistency(old, new, BIG_ROOTS[old], BIG_ROOTS[new], bad)
    wrong_old = data.draw(st.integers(1, new - 1).filter(lambda m: m != old), label="old2")
    if wrong_old != old:
        with pytest.raises(ProofError):
            verify_consistency(wrong_old, new, BIG_ROOTS[wrong_old], BIG_ROOTS[new], proof)
    # A different history (one leaf changed before `old`) is never consistent.
    changed = data.draw(st.integers(0, old - 1), label="changed")
    forked = list(BIG[:new])
    forked[changed] = leaf_hash(b"forged")
    with pytest.raises(ProofError):
        verify_consistency(old, new, root_from_leaves(forked[:old]), BIG_ROOTS[new], proof)
    with pytest.raises(ProofError):
        verify_consistency(old, new, BIG_ROOTS[old], root_from_leaves(forked), proof)


def test_large_tree_is_fast_enough() -> None:
    leaves = leaves_of(100_000, b"large")
    root = root_from_leaves(leaves)
    cr = CompactRange()
    cr.extend(leaves)
    assert cr.root() == root
    index = 77_777
    verify_inclusion(
        leaves[index], index, len(leaves), inclusion_proof(leaves, index, 100_000), root
    )
    old = 65_537
    verify_consistency(
        old, 100_000, root_from_leaves(leaves[:old]), root, consistency_proof(leaves, old, 100_000)
    )


# --- checkpoints ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


def test_checkpoint_body_is_a_c2sp_note_body() -> None:
    root = bytes(range(32))
    cp = Checkpoint("example.com/log", 7, root)
    assert cp.body() == b"example.com/log\n7\n" + base64.b64encode(root) + b"\n"
    with_time = Checkpoint("example.com/log", 7, root, "2026-11-24T20:00:00Z")
    assert with_time.body() == cp.body() + b"time 2026-11-24T20:00:00Z\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", 1, EMPTY_ROOT), "checkpoint.origin: expected a non-empty string"),
        (("a\nb", 1, EMPTY_ROOT), "checkpoint.origin: must not contain"),
        (("a b", 1, EMPTY_ROOT), "checkpoint.origin: must not contain"),
        (("o", -1, EMPTY_ROOT), "checkpoint.tree_size"),
        (("o", True, EMPTY_ROOT), "checkpoint.tree_size"),
        (("o", 1, b"short"), "checkpoint.root_hash"),
        (("o", 1, EMPTY_ROOT, "yesterday"), "checkpoint.timestamp"),
    ],
)
def test_checkpoint_validation(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(RecordError, match=message):
        Checkpoint(*args)  # type: ignore[arg-type]


def test_checkpoint_sign_verify_and_json(key: SigningKey) -> None:
    cp = Checkpoint("lineage-platform.local/log", 3, SMALL_ROOTS[3])
    signed = SignedCheckpoint.sign(cp, key)
    signed.verify(TrustStore.of(key))
    data = signed.to_json()
    obj = json.loads(data)
    assert data == json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    assert obj == {
        "origin": cp.origin,
        "tree_size": 3,
        "root_hash": SMALL_ROOTS[3].hex(),
        "keyid": key.keyid,
        "signature": base64.b64encode(signed.signature).decode(),
    }
    assert SignedCheckpoint.from_json(data) == signed
    key.public_key.verify(signed.signature, cp.body(), "raw note body")  # plain Ed25519 over body
    timed = SignedCheckpoint.sign(
        Checkpoint(cp.origin, 3, cp.root_hash, "2026-01-01T00:00:00Z"), key
    )
    assert SignedCheckpoint.from_json(timed.to_json()) == timed
    timed.verify(TrustStore.of(key))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda o: o.update(tree_size=o["tree_size"] + 1),
        lambda o: o.update(root_hash=EMPTY_ROOT.hex()),
        lambda o: o.update(origin="other.example/log"),
        lambda o: o.update(timestamp="2026-01-01T00:00:00Z"),
        lambda o: o.update(signature=base64.b64encode(b"\x00" * 64).decode()),
    ],
)
def test_checkpoint_tampering_is_caught(
    key: SigningKey, tamper: Callable[[dict[str, object]], None]
) -> None:
    signed = SignedCheckpoint.sign(Checkpoint("log.example/a", 5, SMALL_ROOTS[5]), key)
    obj = json.loads(signed.to_json())
    tamper(obj)
    forged = SignedCheckpoint.from_json(json.dumps(obj).encode())
    with pytest.raises(SignatureError, match=r"checkpoint .* does not verify"):
        forged.verify(TrustStore.of(key))


def test_checkpoint_untrusted_key(key: SigningKey) -> None:
    signed = SignedCheckpoint.sign(Checkpoint("log.example/a", 5, SMALL_ROOTS[5]), key)
    with pytest.raises(
        SignatureError, match=r"checkpoint log.example/a size 5: key .* is not trusted"
    ):
        signed.verify(TrustStore.of(SigningKey.generate()))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda o: o.pop("keyid"), "checkpoint.keyid: missing"),
        (lambda o: o.update(extra=1), "checkpoint.extra: unknown key"),
        (lambda o: o.update(root_hash="AB" * 32), "checkpoint.root_hash: expected 64 lowercase"),
        (lambda o: o.update(tree_size="5"), "checkpoint.tree_size"),
        (lambda o: o.update(signature="%%"), "checkpoint.signature: not valid base64"),
        (lambda o: o.update(signature="AAAA"), "signature: expected 64 bytes"),
        (lambda o: o.update(keyid=""), "keyid: expected a non-empty string"),
    ],
)
def test_checkpoint_from_json_is_strict(
    key: SigningKey, edit: Callable[[dict[str, object]], None], message: str
) -> None:
    obj = json.loads(SignedCheckpoint.sign(Checkpoint("o", 1, SMALL_ROOTS[1]), key).to_json())
    edit(obj)
    with pytest.raises(RecordError, match=message):
        SignedCheckpoint.from_json(json.dumps(obj).encode())
    with pytest.raises(RecordError, match="malformed JSON"):
        SignedCheckpoint.from_json(b"{")
    with pytest.raises(RecordError, match="expected a JSON object"):
        SignedCheckpoint.from_json(b"[]")


def test_microbenchmark_reports_every_step() -> None:
    result = microbenchmark(50)
    assert set(result) >= {"to_bytes_us", "sign_envelope_us", "append_total_us"}
    assert all(v > 0 for v in result.values())
