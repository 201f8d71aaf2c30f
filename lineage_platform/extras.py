"""Optional parts of the install: DVC, MLflow, OpenLineage, the report's plots, PostgreSQL,
scikit-learn for per-call attribution.

    mlflow = require("mlflow", extra="mlflow")   # the module, or MissingExtraError:
    # "MLflow is not installed: pip install 'lineage-platform[mlflow]'"

The base install carries only what the core and the Dagster layer use; each integration asks for
its library here, at the moment it is used, so `import lineage_platform` and `lineage --help`
work without any extra and a missing one is one line naming what to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from lineage_platform.errors import MissingExtraError

__all__ = ["EXTRAS", "missing", "require"]

#: extra name -> what it brings (the pyproject's `[project.optional-dependencies]`).
EXTRAS = {
    "dvc": "DVC",
    "mlflow": "MLflow",
    "openlineage": "the OpenLineage client",
    "report": "matplotlib (the report's plots)",
    "ui": "the Dagster webserver",
    "postgres": "psycopg (the PostgreSQL store)",
    "attribution": "scikit-learn (per-call attribution's KD-tree)",
}


def missing(module: str, extra: str) -> MissingExtraError:
    """The one-line error for `module` absent; `raise missing("dvc", "dvc") from exc`."""
    what = EXTRAS.get(extra, module)
    return MissingExtraError(
        f"{what} is not installed (no module {module}): pip install 'lineage-platform[{extra}]'"
    )


def require(module: str, extra: str) -> ModuleType:
    """Import `module`, or raise `MissingExtraError` naming the extra that installs it.

    Example: require("dvc.repo", extra="dvc").Repo
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # the library, or one its extra brings (sklearn for mlflow)
        raise missing(exc.name or module, extra) from exc
