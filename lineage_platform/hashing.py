"""Content hashes: the subject digest of every record is the SHA-256 of the artifact's bytes.

    sha256_file(Path("data/datanet.parquet"))  # 64 lowercase hex characters
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
