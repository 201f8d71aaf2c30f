"""One error root for everything the platform refuses, so callers and the CLI catch one type.

    try: verify_log(...)
    except LineageError as e: print(e)  # one line, no traceback
"""

from __future__ import annotations


class LineageError(Exception):
    """Root of every error the platform raises on purpose; the message is user-facing."""

    exit_code: int = 1


class ConfigError(LineageError):
    """A setting, file path or policy is missing or invalid."""

    exit_code = 2


class UnknownMethodError(ConfigError):
    """A valuation method name is not registered; the message lists the known names."""


class MissingExtraError(ConfigError):
    """An optional part is not installed; the message names the extra, e.g.
    `pip install 'lineage-platform[mlflow]'` (`lineage_platform.extras.require`)."""


class CodeLocationError(ConfigError):
    """A Dagster code location (workspace.yaml, -m, -f) cannot be loaded; names which and why."""


class RecordError(LineageError):
    """A record or envelope is malformed; the message names the field."""

    exit_code = 3


class SignatureError(LineageError):
    """A signature does not verify, or its key is not trusted."""

    exit_code = 4


class KeyFileError(LineageError):
    """A private or public key file cannot be read, decrypted or written safely."""

    exit_code = 5


class ProofError(LineageError):
    """A Merkle root, inclusion or consistency proof does not hold."""

    exit_code = 6


class VerificationError(LineageError):
    """The stored log, or an exported bundle, fails verification; names the first bad index."""

    exit_code = 7

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class StoreError(LineageError):
    """The store (a DuckDB file or a PostgreSQL database) is missing, unreachable, corrupt or
    refuses an operation."""

    exit_code = 8


class StoreBusyError(StoreError):
    """Another writer (process or machine) held the store for longer than the lock timeout."""

    exit_code = 9


class ValuationError(LineageError):
    """A valuation game, utility or its inputs are invalid (NaN utility, empty players, ...)."""

    exit_code = 10


class AllocationError(LineageError):
    """An allocation policy or amount is invalid (negative, non-integer, shares not summing)."""

    exit_code = 11


class UsageError(LineageError):
    """A usage event is invalid: unknown model, bad amount, malformed file."""

    exit_code = 12


class SettlementError(LineageError):
    """An epoch cannot be settled as asked."""

    exit_code = 13


class TrainingDataError(SettlementError):
    """A per-call settlement cannot find a model's training rows, or their bytes do not hash to
    the sha256 its signed lineage names; says which record and where it looked."""


class IntegrationError(LineageError):
    """DVC, MLflow or Dagster state cannot be read (corrupt dvc.lock, unreachable MLflow store)."""

    exit_code = 14


class IdentifierError(LineageError):
    """A contributor, model or account id has hidden characters or mixes look-alike scripts."""

    exit_code = 15


class ConflictError(UsageError):
    """The same usage event id arrived with a different body: the first is kept, this is listed."""

    exit_code = 16


class ReceiptError(VerificationError):
    """A call receipt does not verify, or cannot be made; names the field that does not hold."""


class RollbackError(VerificationError):
    """The log shrank or forked: it is not consistent with a checkpoint seen before."""


class WitnessError(LineageError):
    """A witness refused a checkpoint, or a witness policy is not met."""

    exit_code = 17


def shown(text: str, limit: int = 48) -> str:
    """Untrusted text (a key name, a keyid) as a message may quote it: on one line, cut short.

    Plain text is kept as it is; anything with control or other non-printable characters is
    escaped the way `repr` does, so a hostile name cannot forge lines on a terminal or in a log.
    """
    escaped = text if text.isprintable() else repr(text)
    return escaped[:limit] + "…" if len(escaped) > limit else escaped
